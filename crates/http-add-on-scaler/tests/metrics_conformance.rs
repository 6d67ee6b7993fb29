//! A running scaler's `/metrics` has every scaler series of upstream 0.16
//! (`compat/metrics.tsv`) with its type, labels and buckets, plus `target_info` and Go's
//! `process_*` series.

mod support;

use http_add_on_types::compat::{check_metrics, go_process_rows, metric_rows};
use support::{Cluster, eventually};

const METRICS_TSV: &str = include_str!("../../../compat/metrics.tsv");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_series_is_served() {
    let cluster = Cluster::start(1, |_| {}).await;
    let rows = metric_rows(METRICS_TSV, "scaler");
    assert_eq!(rows.len(), 4, "scaler rows of metrics.tsv: {rows:?}");
    // The listed interceptor is fetched from once: endpoints 1, the fetch timed.
    let text = eventually("one interceptor fetched", || async {
        let text = cluster.scrape().await;
        (text.contains("scaler_pinger_endpoints 1")
            && text.contains("scaler_pinger_fetch_duration_seconds_count 1"))
        .then_some(text)
    })
    .await;
    let failures = check_metrics(&text, &rows);
    assert!(failures.is_empty(), "{failures:#?}\n{text}");
    let failures = check_metrics(&text, &go_process_rows("scaler"));
    assert!(failures.is_empty(), "{failures:#?}\n{text}");
    assert!(
        text.contains("target_info{service_name=\"keda-http-external-scaler\"} 1"),
        "{text}"
    );
    assert!(text.contains("scaler_pinger_unreachable_pods 0"), "{text}");
    // Our own series stay.
    assert!(
        text.contains("keda_http_scaler_connected_interceptors 1"),
        "{text}"
    );
}
