//! Start-up settings with effects beyond the proxy: the binary refuses a missing or bad
//! variable naming it, the route table is rebuilt every resync period without any change, and
//! `PROFILING_BIND_ADDRESS` serves the debug endpoint.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TIMEOUT, World};
use http::StatusCode;
use http_add_on_interceptor::Config;
use http_add_on_interceptor::counts::Counts;
use http_add_on_interceptor::metrics::Metrics;
use http_add_on_interceptor::routes::{self, SyncTargets, Table};
use http_add_on_sim::{Sim, SimConfig};
use http_add_on_testkit::process;
use tokio::sync::{Notify, watch};

/// Runs the `interceptor` binary with only `env` (no kubeconfig: a good configuration stops at
/// connecting to the API server); returns whether it succeeded and its stderr.
fn run_binary(env: &[(&str, &str)]) -> (bool, String) {
    let exit = process::run_with_only(env!("CARGO_BIN_EXE_interceptor"), env);
    (exit.success, exit.stderr)
}

const PORTS: [(&str, &str); 2] = [
    ("KEDA_HTTP_PROXY_PORT", "8080"),
    ("KEDA_HTTP_ADMIN_PORT", "9090"),
];

#[test]
fn the_binary_names_a_missing_port_or_a_bad_variable() {
    for missing in ["KEDA_HTTP_PROXY_PORT", "KEDA_HTTP_ADMIN_PORT"] {
        let env: Vec<_> = PORTS.into_iter().filter(|(k, _)| *k != missing).collect();
        let (ok, stderr) = run_binary(&env);
        assert!(!ok, "starts without {missing}");
        assert!(
            stderr.contains(missing) && stderr.contains("required"),
            "{missing}: {stderr}"
        );
    }
    for (name, value) in [
        ("PROFILING_BIND_ADDRESS", "6060"),
        (
            "KEDA_HTTP_SCALER_CONFIG_MAP_INFORMER_RSYNC_PERIOD",
            "1 hour",
        ),
    ] {
        let mut env = PORTS.to_vec();
        env.push((name, value));
        let (ok, stderr) = run_binary(&env);
        assert!(!ok, "{name}={value} must fail");
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    // With both ports the configuration is good: it gets as far as the API server.
    let (ok, stderr) = run_binary(&PORTS);
    assert!(!ok);
    assert!(!stderr.contains("invalid configuration"), "{stderr}");
    assert!(stderr.contains("Kubernetes API"), "{stderr}");
}

/// Waits for one `table_changed` notification, with a deadline.
async fn next_rebuild(changed: &Notify) {
    tokio::time::timeout(TIMEOUT, changed.notified())
        .await
        .expect("the route table is rebuilt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_table_is_rebuilt_every_resync_period() {
    let sim = Sim::start(SimConfig::apiserver_only())
        .await
        .expect("sim starts");
    common::install_crds(&sim.client()).await;
    let config = Config {
        resync_period: Some(Duration::from_millis(50)),
        ..Config::for_tests()
    };
    let targets = SyncTargets {
        counts: Arc::new(Counts::new(Arc::new(Metrics::new()))),
        table: Arc::new(Table::default()),
        synced: Arc::new(AtomicBool::new(false)),
        synced_notify: Arc::new(Notify::new()),
        table_changed: Arc::new(Notify::new()),
    };
    let (stop, stopped) = watch::channel(false);
    let changed = targets.table_changed.clone();
    // Registered before the task starts, so the first (initial) rebuild is not missed.
    let first = changed.notified();
    tokio::pin!(first);
    first.as_mut().enable();
    let task = tokio::spawn(routes::run_sync(
        sim.client(),
        config,
        targets.clone(),
        stopped,
    ));
    tokio::time::timeout(TIMEOUT, first)
        .await
        .expect("initial build");
    assert!(targets.synced.load(Ordering::Acquire));
    // Nothing changes in the cluster, yet the table is rebuilt, again and again.
    let before = targets.table.load_full();
    next_rebuild(&changed).await;
    next_rebuild(&changed).await;
    assert!(
        !Arc::ptr_eq(&before, &targets.table.load_full()),
        "a resync stores a new table"
    );
    let _ = stop.send(true);
    tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("the sync task stops")
        .expect("the sync task does not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiling_bind_address_serves_the_debug_endpoint() {
    let w = World::with_config(Config {
        profiling_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::for_tests()
    })
    .await;
    let addr = w.interceptor.profiling_addr().expect("debug endpoint on");
    let get = |path: &str| {
        let url = format!("http://{addr}{path}").parse().unwrap();
        let client = w.http.clone();
        async move { common::Reply::read(client.get(url).await.unwrap()).await }
    };
    let stats = get("/debug/stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    let text = stats.text();
    for series in [
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "tokio_workers ",
        "tokio_alive_tasks ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(series)),
            "{series}in\n{text}"
        );
    }
    let pprof = get("/debug/pprof/profile").await;
    assert_eq!(pprof.status, StatusCode::NOT_IMPLEMENTED);
    assert!(pprof.text().contains("pprof"), "{}", pprof.text());
}
