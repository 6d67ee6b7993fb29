//! Header handling of forwarded requests and responses.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-KEDA-HTTP-Cold-Start`: whether the request waited for the backend to start.
pub static COLD_START: HeaderName = HeaderName::from_static("x-keda-http-cold-start");

/// Headers that apply to one connection only and are never forwarded (RFC 9110 §7.6.1), apart
/// from `Transfer-Encoding`, which the HTTP/1.1 codec reframes and [`strip_hop_by_hop`] drops.
/// Both codecs use this one list.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Whether `name` is a hop-by-hop header (see [`HOP_BY_HOP`]), in any case.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Removes hop-by-hop headers: `Connection` and every header it names (but never
/// `Content-Length`, `Transfer-Encoding` or `Host`), the rest of [`HOP_BY_HOP`] and
/// `Transfer-Encoding`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the (few) names is cheaper than a lookup each.
    let any = headers.keys().any(|name| {
        let name = name.as_str();
        name == "transfer-encoding" || HOP_BY_HOP.contains(&name)
    });
    if !any {
        return;
    }
    // Headers named by Connection are rare; only then allocate the list. Every Connection
    // line counts, not just the first.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| crate::h1::rules::tokens(value.as_bytes()))
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            // Never the message's framing or Host (RFC 9110 §7.6.1).
            .filter(|name| !crate::h1::rules::is_protected(name.as_str().as_bytes()))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP.iter().chain(&["transfer-encoding"]) {
        if headers.contains_key(*name) {
            headers.remove(*name);
        }
    }
}

/// The protocol a request or response asks to switch to: its `Upgrade` header, when
/// `Connection` names `upgrade` (RFC 9110 §7.8).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<&HeaderValue> {
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if connection_upgrade {
        headers.get(header::UPGRADE)
    } else {
        None
    }
}

/// Sets `Connection: upgrade` and `Upgrade: protocol` (after hop-by-hop headers were stripped).
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Appends the client address to `X-Forwarded-For` (merging earlier values into one line) and
/// sets `X-Forwarded-Proto` (`http` or `https`, as received) and `X-Forwarded-Host` when absent.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    let mut ip_buf = [0u8; 64];
    let ip = format_ip(client, &mut ip_buf);
    let value = match headers.get_all(&X_FORWARDED_FOR).iter().count() {
        0 => HeaderValue::from_str(ip).ok(),
        _ => {
            let mut joined = Vec::with_capacity(64);
            for v in headers.get_all(&X_FORWARDED_FOR) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
    };
    if let Some(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if let Some(host) = host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
}

/// Replaces the client's W3C trace headers with those of the request's own `span`.
pub(crate) fn set_trace(headers: &mut HeaderMap, span: &crate::request::ServerSpan) {
    for name in crate::request::trace::TRACE_HEADERS {
        headers.remove(name);
    }
    span.inject(|name, value| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    });
}

fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "app.example.com"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept"]);
    }

    #[test]
    fn connection_cannot_remove_framing_or_host() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "content-length, host, x-a"),
            ("connection", "transfer-encoding"),
            ("content-length", "3"),
            ("host", "app.example.com"),
            ("x-a", "1"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host"]);
    }

    #[test]
    fn upgrade_needs_connection_to_name_it() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
        strip_hop_by_hop(&mut h);
        set_upgrade(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn forwarded_headers_append_and_preserve() {
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("app.example.com");
        add_forwarded(&mut h, "127.0.0.9".parse().unwrap(), Some(&host), false);
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example.com");

        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(
            &X_FORWARDED_HOST,
            HeaderValue::from_static("outer.example.com"),
        );
        add_forwarded(&mut h, "::1".parse().unwrap(), Some(&host), true);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, ::1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "outer.example.com");
    }
}
