//! The HTTP/1.1 codec's response side: a backend's response head is checked (framing,
//! status) and rewritten for the client (hop-by-hop headers dropped, cold-start header set).

use super::exchange::{Exchange, Failure, bad_gateway};
use super::framing::Framing;
use super::request::{MAX_HEADERS, MAX_HEADERS_SLOW, push_header};
use super::rules::{is, is_protected, named_by_connection, tokens};
use crate::headers::is_hop_by_hop;

/// Largest response head accepted from a backend.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

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
pub(super) fn parse_response<T>(
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
    let mut upstream_keep_alive = response.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut connection_names_headers = false;
    for h in response.headers.iter() {
        if is(h.name, "connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    upstream_keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !is_protected(token) {
                    connection_names_headers = true;
                }
            }
        } else if is(h.name, "transfer-encoding") {
            transfer_encoding = true;
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if is(h.name, "content-length") {
            match (super::rules::content_length(h.value), content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => {
                    return Err(bad_gateway(
                        "backend sent an invalid Content-Length".to_owned(),
                    ));
                }
            }
        }
    }
    let framing = if request.head || code == 204 || code == 304 {
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
    let close = request.client_close
        || matches!(framing, Framing::UntilClose)
        || exchange.policy.draining();
    let cold_header = exchange.policy.config.enable_cold_start_header;

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
            || (cold_header && is(name, "x-keda-http-cold-start"))
            // With Transfer-Encoding the length is the chunks' (RFC 9112 §6.3): a
            // Content-Length next to it must not reach the client.
            || (transfer_encoding && is(name, "content-length"))
            || (connection_names_headers && named_by_connection(response.headers, name))
        {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    if cold_header {
        out.extend_from_slice(if exchange.cold {
            b"x-keda-http-cold-start: true\r\n"
        } else {
            b"x-keda-http-cold-start: false\r\n"
        });
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(HeadOut::Final {
        len,
        code,
        framing,
        reusable: upstream_keep_alive,
        close,
    })
}
