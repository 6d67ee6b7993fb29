//! Metric names exactly as upstream's scaler spells them, so existing ScaledObjects and
//! dashboards keep working.

use std::fmt::Write;

/// Scaler metadata key naming an HTTPScaledObject in the ScaledObject's namespace.
pub const HTTP_SCALED_OBJECT_KEY: &str = "httpScaledObject";
/// Scaler metadata key naming an InterceptorRoute in the ScaledObject's namespace.
pub const INTERCEPTOR_ROUTE_KEY: &str = "interceptorRoute";
/// Scaler metadata key of the ScaledObject that scales the interceptor itself.
pub const INTERCEPTOR_TARGET_PENDING_REQUESTS_KEY: &str = "interceptorTargetPendingRequests";

/// Escapes every character outside `[-.0-9A-Za-z]` as `_` followed by the upper-case hex of its
/// UTF-8 bytes, zero-padded to four digits (Go's `fmt.Sprintf("_%04X", string)`), so `/` becomes
/// `_002F` and `é` becomes `_C3A9`.
pub fn escape_metric_name(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            out.push(c);
            continue;
        }
        let mut buf = [0u8; 4];
        let mut hex = String::with_capacity(8);
        for byte in c.encode_utf8(&mut buf).bytes() {
            let _ = write!(hex, "{byte:02X}");
        }
        let _ = write!(out, "_{hex:0>4}");
    }
    out
}

/// The metric of an HTTPScaledObject (and of the interceptor's own ScaledObject):
/// `http-<namespace>/<name>`, escaped.
pub fn http_scaled_object_metric(namespace: &str, name: &str) -> String {
    escape_metric_name(&format!("http-{namespace}/{name}"))
}

/// The concurrency metric of an InterceptorRoute: `http_<name>_concurrency`.
pub fn concurrency_metric(route_name: &str) -> String {
    format!("http_{route_name}_concurrency")
}

/// The request-rate metric of an InterceptorRoute: `http_<name>_rate`.
pub fn rate_metric(route_name: &str) -> String {
    format!("http_{route_name}_rate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_upstream() {
        assert_eq!(
            http_scaled_object_metric("default", "app"),
            "http-default_002Fapp"
        );
        assert_eq!(escape_metric_name("a-b.C9"), "a-b.C9");
        assert_eq!(escape_metric_name("a_b c"), "a_005Fb_0020c");
        assert_eq!(escape_metric_name("é"), "_C3A9");
        assert_eq!(escape_metric_name("€"), "_E282AC");
        assert_eq!(escape_metric_name("\u{1F600}"), "_F09F9880");
        assert_eq!(escape_metric_name("\0"), "_0000");
        assert_eq!(escape_metric_name(""), "");
    }

    #[test]
    fn escaped_names_are_safe() {
        for input in [
            "with/slashes",
            "name with spaces",
            "x\u{e9}\u{e8}",
            "\u{0}\u{7f}",
        ] {
            let escaped = escape_metric_name(input);
            assert!(
                escaped
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
                "{escaped}"
            );
        }
    }

    #[test]
    fn interceptor_route_names() {
        assert_eq!(concurrency_metric("my-app"), "http_my-app_concurrency");
        assert_eq!(rate_metric("my-app"), "http_my-app_rate");
    }
}
