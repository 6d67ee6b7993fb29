//! Every scaler variable of upstream 0.16 (`compat/env.tsv`) is read with upstream's default.

use std::collections::BTreeMap;

use http_add_on_scaler::Config;
use http_add_on_scaler::config::KNOWN_VARIABLES;
use http_add_on_types::compat::{EnvCheck, env_rows};
use http_add_on_types::config::{ConfigError, Env};

const ENV_TSV: &str = include_str!("../../../compat/env.tsv");

fn parse(env: &Env<BTreeMap<String, String>>) -> Result<String, ConfigError> {
    Config::from_env(env).map(|c| format!("{c:?}"))
}

#[test]
fn every_upstream_variable_with_its_default() {
    let rows = env_rows(ENV_TSV, "scaler");
    assert!(rows.len() >= 14, "scaler rows of env.tsv: {rows:?}");
    let check = EnvCheck {
        parse: &parse,
        required: &[
            ("KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE", "keda"),
            (
                "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE",
                "keda-add-ons-http-interceptor-admin",
            ),
            (
                "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT",
                "keda-add-ons-http-interceptor",
            ),
            ("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT", "9090"),
        ],
        alternatives: &[
            ("KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE", "other"),
            ("KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE", "other"),
            ("KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT", "other"),
            ("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT", "9091"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("PROFILING_BIND_ADDRESS", ":6060"),
        ],
        contexts: &[],
        known: Some(KNOWN_VARIABLES),
    };
    let failures = check.run(&rows);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn unknown_addon_variables_are_reported() {
    let env = Env::new(BTreeMap::from([
        ("KEDA_HTTP_SCALER_PORT", "8080"),
        ("KEDA_HTTP_SCALER_PROT", "8080"),
        ("KEDAHTTP_SCALER_PORT", "8080"),
        ("HOME", "/root"),
    ]));
    assert_eq!(
        env.unknown(KNOWN_VARIABLES),
        ["KEDAHTTP_SCALER_PORT", "KEDA_HTTP_SCALER_PROT"]
    );
}
