//! The HTTP/1.1 codec's response side: a backend's response head is checked (framing,
//! status) and rewritten for the client (hop-by-hop headers dropped, cold-start header set).

use super::exchange::{Exchange, Failure, bad_gateway};
use super::framing::Framing;
use super::request::{MAX_HEADERS, MAX_HEADERS_SLOW, push_header};
use super::rules::{is, is_protected, named_by_connection, tokens};
use crate::headers::is_hop_by_hop;

/// Largest response head accepted from a backend.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What a complete response head means for the exchange.
pub(super) enum HeadOut {
    /// A `1xx` (other than `101`): passed on, then the next head.
    Informational { len: usize },
    /// `101 Switching Protocols` to an upgrade request: relayed as is, then a tunnel.
    Switching { len: usize },
    /// The final head, rewritten into `out`.
    Final {
        len: usize,
        code: u16,
        framing: Framing,
        /// The upstream connection may be pooled after the body.
        reusable: bool,
        /// The client connection closes after the body.
        close: bool,
    },
}

/// Parses a response head (on the stack, again on the heap when it has many header lines)
/// and hands the result to `then`.
pub(crate) fn parse_response<T>(
    buf: &[u8],
    then: impl FnOnce(
        Result<httparse::Status<usize>, httparse::Error>,
        &httparse::Response<'_, '_>,
    ) -> T,
) -> T {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS_SLOW];
            let mut response = httparse::Response::new(&mut headers);
            let status = response.parse(buf);
            then(status, &response)
        }
        status => then(status, &response),
    }
}

/// What a final response head says about its framing and connection.
#[derive(Debug)]
pub(crate) struct ResponseFacts {
    /// How the body is framed.
    pub framing: Framing,
    /// The upstream connection may be pooled after the body (HTTP/1.1, no `close`).
    pub reusable: bool,
    /// `Transfer-Encoding` is present (a `Content-Length` beside it is dropped).
    pub transfer_encoding: bool,
    /// `Connection` names headers to drop.
    pub connection_names_headers: bool,
}

/// Reads the framing of a final response (status 200–999) to a request that was `HEAD` or
/// not (RFC 9112 §6.3); an invalid or disagreeing `Content-Length` is refused.
pub(crate) fn inspect_response(
    response: &httparse::Response<'_, '_>,
    head_request: bool,
) -> Result<ResponseFacts, &'static str> {
    let code = response.code.unwrap_or(0);
    let mut reusable = response.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut connection_names_headers = false;
    for h in response.headers.iter() {
        if is(h.name, "connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    reusable = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !is_protected(token) {
                    connection_names_headers = true;
                }
            }
        } else if is(h.name, "transfer-encoding") {
            transfer_encoding = true;
            // The final coding is the last token of the last line.
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if is(h.name, "content-length") {
            match (super::rules::content_length(h.value), content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err("backend sent an invalid Content-Length"),
            }
        }
    }
    let framing = if head_request || code == 204 || code == 304 {
        Framing::Empty
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked(Default::default())
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(ResponseFacts {
        framing,
        reusable,
        transfer_encoding,
        connection_names_headers,
    })
}

/// Writes the client's version of a final response head to `out`: hop-by-hop headers and the
/// ones `Connection` names dropped, a `Content-Length` beside `Transfer-Encoding` dropped, the
/// backend's cold-start header replaced by ours when `cold` is given, `connection: close`
/// when `close`.
pub(super) fn write_response_head(
    out: &mut Vec<u8>,
    response: &httparse::Response<'_, '_>,
    facts: &ResponseFacts,
    cold: Option<bool>,
    close: bool,
) {
    let code = response.code.unwrap_or(0);
    out.clear();
    {
        // `code` is within 200..=999 here: three digits.
        let digits = [
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(&digits);
        out.push(b' ');
        out.extend_from_slice(response.reason.unwrap_or_default().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for h in response.headers.iter() {
        let name = h.name;
        if is_hop_by_hop(name)
            || (cold.is_some() && is(name, "x-keda-http-cold-start"))
            // With Transfer-Encoding the length is the chunks' (RFC 9112 §6.3): a
            // Content-Length next to it must not reach the client.
            || (facts.transfer_encoding && is(name, "content-length"))
            || (facts.connection_names_headers && named_by_connection(response.headers, name))
        {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    match cold {
        Some(true) => out.extend_from_slice(b"x-keda-http-cold-start: true\r\n"),
        Some(false) => out.extend_from_slice(b"x-keda-http-cold-start: false\r\n"),
        None => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Checks a complete response head and writes the client's version of it to `out`.
pub(super) fn response_head(
    out: &mut Vec<u8>,
    exchange: &Exchange<'_>,
    response: &httparse::Response<'_, '_>,
    len: usize,
) -> Result<HeadOut, Failure> {
    let request = exchange.request;
    let code = response.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        return Ok(HeadOut::Informational { len });
    }
    if code == 101 && request.upgrade {
        return Ok(HeadOut::Switching { len });
    }
    if code == 101 || !(200..=999).contains(&code) {
        return Err(bad_gateway(format!(
            "backend answered with status {code}, which this proxy does not relay"
        )));
    }
    let facts =
        inspect_response(response, request.head).map_err(|why| bad_gateway(why.to_owned()))?;
    let close = request.client_close
        || matches!(facts.framing, Framing::UntilClose)
        || exchange.policy.draining();
    let cold = exchange
        .policy
        .config
        .enable_cold_start_header
        .then_some(exchange.cold);
    write_response_head(out, response, &facts, cold, close);
    Ok(HeadOut::Final {
        len,
        code,
        framing: facts.framing,
        reusable: facts.reusable,
        close,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `head` (without the blank line) parsed as a response, handed to `then`.
    fn with_response<T>(head: &str, then: impl FnOnce(&httparse::Response<'_, '_>) -> T) -> T {
        let full = format!("{head}\r\n\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        assert!(
            matches!(
                response.parse(full.as_bytes()),
                Ok(httparse::Status::Complete(_))
            ),
            "{head:?} parses"
        );
        then(&response)
    }

    /// The framing (as text) and reusability a head gets, or why it is refused.
    type Facts = Result<(String, bool), &'static str>;

    fn facts(head: &str, head_request: bool) -> Facts {
        with_response(head, |r| {
            inspect_response(r, head_request).map(|f| {
                let framing = match f.framing {
                    Framing::Empty => "empty".to_owned(),
                    Framing::Length(n) => format!("length {n}"),
                    Framing::Chunked(_) => "chunked".to_owned(),
                    Framing::UntilClose => "until close".to_owned(),
                };
                (framing, f.reusable)
            })
        })
    }

    #[test]
    fn response_framing_rules() {
        let ok = |framing: &str, reusable| Ok((framing.to_owned(), reusable));
        let cases: &[(&str, bool, Facts)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5",
                false,
                ok("length 5", true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0",
                false,
                ok("empty", true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5",
                false,
                ok("length 5", true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
                false,
                Err("backend sent an invalid Content-Length"),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5",
                false,
                Err("backend sent an invalid Content-Length"),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1",
                false,
                Err("backend sent an invalid Content-Length"),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
                false,
                ok("chunked", true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
                false,
                ok("chunked", true),
            ),
            // Not chunked last: the body runs until the backend closes.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip",
                false,
                ok("until close", true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3",
                false,
                ok("chunked", true),
            ),
            ("HTTP/1.1 200 OK", false, ok("until close", true)),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5",
                true,
                ok("empty", true),
            ),
            ("HTTP/1.1 204 No Content", false, ok("empty", true)),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9",
                false,
                ok("empty", true),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1",
                false,
                ok("length 1", false),
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1",
                false,
                ok("length 1", false),
            ),
        ];
        for (head, head_request, expected) in cases {
            assert_eq!(
                &facts(head, *head_request),
                expected,
                "{}",
                head.escape_debug()
            );
        }
    }

    /// Header lines drawn from names that matter to the rules, with `Connection` lists that
    /// name them (any number of tokens).
    fn header_line() -> impl Strategy<Value = (String, String)> {
        let names = prop::sample::select(vec![
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-authenticate",
            "host",
            "x-a",
            "x-b",
            "X-C",
            "x-keda-http-cold-start",
        ]);
        (names, prop::collection::vec(0usize..8, 0..12)).prop_map(|(name, picks)| {
            let tokens = [
                "close",
                "x-a",
                "X-B",
                "x-c",
                "content-length",
                "keep-alive",
                "te",
                "host",
            ];
            let value = match name {
                "content-length" => "5".to_owned(),
                "transfer-encoding" => "chunked".to_owned(),
                _ => picks
                    .iter()
                    .map(|&i| tokens[i])
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            (
                name.to_owned(),
                if value.is_empty() {
                    "v".to_owned()
                } else {
                    value
                },
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Whatever the backend sends, the client's head keeps no hop-by-hop header, none
        /// that `Connection` named (but never the framing or `Host`), no `Content-Length`
        /// beside `Transfer-Encoding`, and exactly one cold-start header.
        #[test]
        fn rewritten_response_heads_keep_only_end_to_end_headers(
            lines in prop::collection::vec(header_line(), 0..10),
            cold in any::<bool>(),
            close in any::<bool>(),
        ) {
            let head = std::iter::once("HTTP/1.1 200 OK".to_owned())
                .chain(lines.iter().map(|(n, v)| format!("{n}: {v}")))
                .collect::<Vec<_>>()
                .join("\r\n");
            let mut out = Vec::new();
            let written = with_response(&head, |response| {
                let facts = inspect_response(response, false).ok()?;
                write_response_head(&mut out, response, &facts, Some(cold), close);
                Some(facts.transfer_encoding)
            });
            let Some(had_te) = written else { return Ok(()) };
            let named: Vec<String> = lines
                .iter()
                .filter(|(n, _)| n == "connection")
                .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
                .filter(|t| !["content-length", "transfer-encoding", "host", "close", "keep-alive"].contains(&t.as_str()))
                .collect();
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            prop_assert!(matches!(parsed.parse(&out), Ok(httparse::Status::Complete(_))));
            let mut cold_headers = 0;
            let mut close_headers = 0;
            for h in parsed.headers.iter() {
                let name = h.name.to_ascii_lowercase();
                prop_assert!(
                    !is_hop_by_hop(&name) || (name == "connection" && h.value == b"close"),
                    "hop-by-hop {name} kept"
                );
                prop_assert!(!named.contains(&name), "{name} was named by Connection");
                prop_assert!(!(had_te && name == "content-length"), "Content-Length beside Transfer-Encoding");
                if name == "x-keda-http-cold-start" {
                    cold_headers += 1;
                    prop_assert_eq!(h.value, if cold { &b"true"[..] } else { &b"false"[..] });
                }
                if name == "connection" {
                    close_headers += 1;
                }
            }
            prop_assert_eq!(cold_headers, 1);
            prop_assert_eq!(close_headers, usize::from(close));
            // What the rules keep, they keep: framing headers and Host pass.
            for (n, _) in &lines {
                if n == "transfer-encoding" || n == "host" {
                    prop_assert!(parsed.headers.iter().any(|h| h.name.eq_ignore_ascii_case(n)), "{n} dropped");
                }
            }
        }
    }
}
