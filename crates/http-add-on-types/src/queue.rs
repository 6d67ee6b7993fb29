//! Queue counts: the upstream-compatible `/queue` JSON of the interceptor's admin port.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counts of one route.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCount {
    /// Requests in flight now, including requests held during a cold start.
    #[serde(rename = "Concurrency")]
    pub concurrency: i64,
    /// Requests received since the interceptor started (monotonic).
    #[serde(rename = "RequestCount", default)]
    pub request_count: u64,
}

/// `/queue` body: route key (`<namespace>/<name>`) → counts.
pub type QueueCounts = BTreeMap<String, QueueCount>;

/// Path of the interceptor's push stream of counts on its admin port.
pub const QUEUE_STREAM_PATH: &str = "/queue/stream";

/// One line of the push stream at [`QUEUE_STREAM_PATH`]: newline-delimited JSON over a chunked
/// HTTP/1.1 response. The first line after connecting is a snapshot of every route; later lines
/// carry only routes whose counts changed; an empty non-snapshot line is a heartbeat.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueUpdate {
    /// `true`: `counts` is the full table and routes absent from it have gone.
    #[serde(default)]
    pub snapshot: bool,
    /// Counts of the routes this line reports.
    #[serde(default)]
    pub counts: QueueCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_upstream_shape() {
        let mut counts = QueueCounts::new();
        counts.insert(
            "default/app".into(),
            QueueCount {
                concurrency: 3,
                request_count: 42,
            },
        );
        let json = serde_json::to_string(&counts).unwrap();
        assert_eq!(
            json,
            r#"{"default/app":{"Concurrency":3,"RequestCount":42}}"#
        );
        let back: QueueCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, counts);
        // Older interceptors send no RequestCount.
        let old: QueueCounts = serde_json::from_str(r#"{"a/b":{"Concurrency":1}}"#).unwrap();
        assert_eq!(old["a/b"].request_count, 0);
    }

    #[test]
    fn stream_lines_round_trip() {
        let update = QueueUpdate {
            snapshot: true,
            counts: [(
                "ns/a".to_owned(),
                QueueCount {
                    concurrency: 1,
                    request_count: 9,
                },
            )]
            .into(),
        };
        let line = serde_json::to_string(&update).unwrap();
        assert_eq!(
            line,
            r#"{"snapshot":true,"counts":{"ns/a":{"Concurrency":1,"RequestCount":9}}}"#
        );
        assert_eq!(serde_json::from_str::<QueueUpdate>(&line).unwrap(), update);
        let heartbeat: QueueUpdate = serde_json::from_str("{}").unwrap();
        assert!(!heartbeat.snapshot && heartbeat.counts.is_empty());
    }
}
