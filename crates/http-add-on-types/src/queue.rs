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
}
