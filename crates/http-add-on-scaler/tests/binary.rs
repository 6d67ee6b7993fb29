//! The `scaler` binary's start-up: a bad configuration is a non-zero exit naming the variable.

use std::process::Command;

fn run(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scaler"));
    cmd.env_clear().env("RUST_LOG", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("scaler runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: [(&str, &str); 4] = [
    ("KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE", "keda"),
    ("KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE", "admin"),
    ("KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT", "interceptor"),
    ("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT", "9090"),
];

#[test]
fn an_unknown_addon_variable_is_one_warning_naming_it() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scaler"));
    // No kubeconfig: the scaler stops after reading its configuration.
    cmd.env_clear()
        .env("RUST_LOG", "warn")
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    for (k, v) in BASE {
        cmd.env(k, v);
    }
    cmd.env("KEDA_HTTP_SCALER_TYPO", "1");
    let out = cmd.output().expect("scaler runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("KEDA_HTTP_SCALER_TYPO"))
        .count();
    assert_eq!(warnings, 1, "{stderr}");
    assert!(!stderr.contains("KEDA_HTTP_SCALER_PORT"), "{stderr}");
}

#[test]
fn bad_environment_variables_are_named() {
    let base = BASE;
    for (name, value) in [
        ("KEDA_HTTP_SCALER_PORT", "not-a-port"),
        ("KEDA_HTTP_QUEUE_TICK_DURATION", "5 minutes"),
        ("KEDA_HTTP_SCALER_STREAM_INTERVAL_MS", "-3"),
        ("OTEL_PROM_EXPORTER_PORT", "99999"),
        ("OTEL_PROM_EXPORTER_ENABLED", "no"),
        ("PROFILING_BIND_ADDRESS", "6060"),
    ] {
        let mut env = base.to_vec();
        env.push((name, value));
        let (ok, stderr) = run(&env);
        assert!(!ok, "{name}={value} must fail");
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    let (ok, stderr) = run(&base[..1]);
    assert!(!ok);
    assert!(
        stderr.contains("KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE"),
        "{stderr}"
    );
}
