//! HTTP/1.1 message rules the relay applies to a parsed request head before anything is
//! forwarded (RFC 9110 §7.2, §7.6.1; RFC 9112 §3.2, §6): which requests it may relay byte for
//! byte, which get an error at once, and which it leaves to hyper's HTTP/1.1 server.

/// A request head the relay must not forward as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer with this status and message, then close the connection (its framing can no
    /// longer be trusted, or the request is unservable).
    Reject(u16, &'static str),
    /// Valid, but the relay leaves it to hyper's HTTP/1.1 server (other codings, `Expect`, …).
    General,
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the relay learnt from a request head it may forward.
#[derive(Debug)]
pub(crate) struct RequestHead<'a> {
    /// The `Host` value (exactly one, a valid `host[:port]`).
    pub host: &'a str,
    /// The body's framing.
    pub body: BodyFraming,
    /// `Connection: close`.
    pub close: bool,
    /// The protocol asked for by `Upgrade`, when `Connection` names `upgrade`.
    pub upgrade: Option<&'a [u8]>,
    /// `Connection` names further headers (other than `close`, `keep-alive`, `upgrade`).
    pub connection_names_headers: bool,
    /// `X-Forwarded-For` is present.
    pub forwarded_for: bool,
    /// `X-Forwarded-Proto` is present.
    pub forwarded_proto: bool,
    /// `X-Forwarded-Host` is present.
    pub forwarded_host: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

pub(crate) fn is(name: &str, lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower)
}

/// Comma-separated tokens of a header value, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only, no sign, no list (RFC 9110 §8.6).
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Headers a `Connection` header may never remove: the message's framing and its `Host`
/// (RFC 9110 §7.6.1). Dropping them would let the next hop frame the message differently.
pub(crate) fn is_protected(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"host")
}

/// Whether a `Connection` header among `headers` names `name` (and `name` may be removed).
pub(crate) fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    !is_protected(name.as_bytes())
        && headers
            .iter()
            .filter(|h| is(h.name, "connection"))
            .flat_map(|h| tokens(h.value))
            .any(|token| token.eq_ignore_ascii_case(name.as_bytes()))
}

/// A valid `Host` value: `uri-host [ ":" port ]` (RFC 9110 §7.2) — a reg-name or an IP
/// literal, no list, no whitespace, no userinfo.
pub(crate) fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return false;
    }
    let (host, port) = if value[0] == b'[' {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &value[end + 1..] {
            [] => (&value[..=end], None),
            [b':', port @ ..] => (&value[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let reg_name_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host.iter().all(|&b| {
                b.is_ascii_alphanumeric() || b"-._~!$&'()*+;=".contains(&b) || b == b'%'
            })
            && !host.contains(&b','));
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    reg_name_ok && port_ok
}

/// Checks a parsed HTTP/1.1 request head: what the relay may forward, what is refused.
pub(crate) fn inspect_request<'a>(
    method: &str,
    target: &str,
    headers: &'a [httparse::Header<'a>],
) -> Result<RequestHead<'a>, Verdict> {
    if method == "CONNECT" {
        return Err(Verdict::Reject(
            405,
            "CONNECT is not supported by this proxy",
        ));
    }
    if !target.starts_with('/') {
        // Absolute-form (routed by its authority), `OPTIONS *` and invalid targets: the general
        // path decides (and answers 400 for an invalid one).
        return Err(Verdict::General);
    }
    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut upgrade: Option<&[u8]> = None;
    let mut head = RequestHead {
        host: "",
        body: BodyFraming::None,
        close: false,
        upgrade: None,
        connection_names_headers: false,
        forwarded_for: false,
        forwarded_proto: false,
        forwarded_host: false,
        expect_continue: false,
    };
    let mut connection_upgrade = false;
    for h in headers {
        let name = h.name;
        if is(name, "host") {
            if host.is_some() {
                return Err(Verdict::Reject(400, "more than one Host header"));
            }
            host = Some(h.value);
        } else if is(name, "content-length") {
            // Repeated or invalid lengths: hyper answers (400, or one agreed value).
            match (content_length(h.value), length) {
                (Some(n), None) => length = Some(n),
                _ => return Err(Verdict::General),
            }
        } else if is(name, "transfer-encoding") {
            // Only a single plain `chunked`; other codings go to hyper.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Verdict::General);
            }
            chunked = true;
        } else if is(name, "expect") {
            // Only the one expectation HTTP/1.1 defines (RFC 9110 §10.1.1), once.
            if head.expect_continue || !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(Verdict::General);
            }
            head.expect_continue = true;
        } else if is(name, "upgrade") {
            if upgrade.is_some() {
                return Err(Verdict::General);
            }
            upgrade = Some(h.value);
        } else if is(name, "connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    connection_upgrade = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    head.connection_names_headers = true;
                }
            }
        } else if is(name, "x-forwarded-for") {
            head.forwarded_for = true;
        } else if is(name, "x-forwarded-proto") {
            head.forwarded_proto = true;
        } else if is(name, "x-forwarded-host") {
            head.forwarded_host = true;
        }
    }
    let Some(host) = host else {
        return Err(Verdict::Reject(400, "missing Host header"));
    };
    if !valid_host(host) {
        return Err(Verdict::Reject(400, "invalid Host header"));
    }
    // Both framings at once is how requests are smuggled: hyper refuses it.
    if chunked && length.is_some() {
        return Err(Verdict::General);
    }
    head.body = match (chunked, length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    // `Upgrade` counts only when `Connection` names it (RFC 9110 §7.8).
    head.upgrade = upgrade.filter(|_| connection_upgrade);
    if head.upgrade.is_some() && head.body != BodyFraming::None {
        return Err(Verdict::General);
    }
    head.host =
        std::str::from_utf8(host).map_err(|_| Verdict::Reject(400, "invalid Host header"))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(head: &str) -> Result<(String, BodyFraming), Verdict> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let full = format!("{head}\r\n\r\n");
        request.parse(full.as_bytes()).expect("parses");
        inspect_request(
            request.method.unwrap(),
            request.path.unwrap(),
            request.headers,
        )
        .map(|h| (h.host.to_owned(), h.body))
    }

    #[test]
    fn request_head_rules() {
        use BodyFraming::*;
        use Verdict::*;
        type Expected = Result<(&'static str, BodyFraming), Verdict>;
        let cases: &[(&str, Expected)] = &[
            ("GET / HTTP/1.1\r\nHost: a.test", Ok(("a.test", None))),
            (
                "GET / HTTP/1.1\r\nHost: a.test:8080",
                Ok(("a.test:8080", None)),
            ),
            ("GET / HTTP/1.1\r\nHost: [::1]:80", Ok(("[::1]:80", None))),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5",
                Ok(("a", Length(5))),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0",
                Ok(("a", None)),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
                Ok(("a", Chunked)),
            ),
            ("GET / HTTP/1.1", Err(Reject(400, "missing Host header"))),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b",
                Err(Reject(400, "more than one Host header")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a, b",
                Err(Reject(400, "invalid Host header")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a b",
                Err(Reject(400, "invalid Host header")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: u@a",
                Err(Reject(400, "invalid Host header")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a:http",
                Err(Reject(400, "invalid Host header")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: ",
                Err(Reject(400, "invalid Host header")),
            ),
            (
                "CONNECT a:443 HTTP/1.1\r\nHost: a:443",
                Err(Reject(405, "CONNECT is not supported by this proxy")),
            ),
            ("GET http://a/ HTTP/1.1\r\nHost: a", Err(General)),
            ("GET a HTTP/1.1\r\nHost: a", Err(General)),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5",
                Err(General),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5",
                Err(General),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5",
                Err(General),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked",
                Err(General),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3",
                Err(General),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                Err(General),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1",
                Ok(("a", Length(1))),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1",
                Err(General),
            ),
        ];
        for (head, expected) in cases {
            let expected = expected.map(|(h, b)| (h.to_owned(), b));
            assert_eq!(inspect(head), expected, "{}", head.escape_debug());
        }
    }

    #[test]
    fn connection_never_removes_framing_or_host() {
        let mut storage = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut storage);
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: content-length, host, transfer-encoding, x-a\r\nConnection: X-B\r\nx-a: 1\r\nx-b: 2\r\n\r\n";
        request.parse(raw).unwrap();
        let headers = request.headers;
        for protected in [
            "content-length",
            "Content-Length",
            "host",
            "transfer-encoding",
        ] {
            assert!(!named_by_connection(headers, protected), "{protected}");
        }
        assert!(named_by_connection(headers, "x-a"));
        assert!(named_by_connection(headers, "X-b"));
        assert!(!named_by_connection(headers, "x-c"));
        let head = inspect_request("POST", "/", headers).unwrap();
        assert_eq!(head.body, BodyFraming::Length(3));
        assert!(head.connection_names_headers);
    }
}
