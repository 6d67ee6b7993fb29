//! A running interceptor's `/metrics` has every interceptor series of upstream 0.16
//! (`compat/metrics.tsv`) with its type, labels and buckets, plus `target_info` and Go's
//! `process_*` series.

mod common;

use common::{TestBackend, World, eventually, hso};
use http::StatusCode;
use http_add_on_interceptor::Config;
use http_add_on_types::compat::{check_metrics, go_process_rows, metric_rows};
use serde_json::json;

const METRICS_TSV: &str = include_str!("../../../compat/metrics.tsv");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_series_is_served() {
    let mut config = Config::for_tests();
    config.max_pending_requests = Some(1);
    let w = World::with_config(config).await;
    let a = TestBackend::start("a").await;
    w.expose("svc", "http", &[&a]).await;
    // A cold route holding its one pending request rejects the next.
    w.expose("cold", "http", &[]).await;
    w.apply_hso(hso("cold", &["cold.test"], &[], "cold", json!(80)))
        .await;
    let held = eventually("a held request", || async {
        let http = w.http.clone();
        let url = w.proxy_url("/");
        let mut held = tokio::spawn(async move {
            let req = http::Request::get(url)
                .header("host", "cold.test")
                .body(Default::default())
                .unwrap();
            http.request(req).await.map(|r| r.status())
        });
        tokio::select! {
            () = w.wait_concurrency("default/cold", 1) => Some(held),
            status = &mut held => {
                assert_eq!(status.unwrap().unwrap(), StatusCode::NOT_FOUND, "held or not routed yet");
                None
            }
        }
    })
    .await;
    let rejected = w.get("cold.test", "/").await;
    assert_eq!(rejected.status, StatusCode::SERVICE_UNAVAILABLE);
    held.abort();
    w.apply_hso(hso("app", &["m.test"], &[], "svc", json!(80)))
        .await;
    w.wait_routed("m.test", "/").await;
    assert_eq!(w.get("m.test", "/").await.status, StatusCode::OK);
    let purge = w
        .send(
            http::Request::builder()
                .method(http::Method::from_bytes(b"PURGE").unwrap())
                .uri(w.proxy_url("/"))
                .header("host", "m.test"),
        )
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    let text = w.metrics_text().await;

    let rows = metric_rows(METRICS_TSV, "interceptor");
    assert_eq!(rows.len(), 4, "interceptor rows of metrics.tsv: {rows:?}");
    let failures = check_metrics(&text, &rows);
    assert!(failures.is_empty(), "{failures:#?}\n{text}");
    let failures = check_metrics(&text, &go_process_rows("interceptor"));
    assert!(failures.is_empty(), "{failures:#?}\n{text}");
    assert!(
        text.contains(r#"target_info{service_name="keda-http-interceptor"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"interceptor_request_count_total{code="200",method="_OTHER",route_name="app",route_namespace="default"} 1"#),
        "{text}"
    );
}
