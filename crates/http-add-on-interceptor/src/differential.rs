//! Differential fuzzing of the relay's request rules against a strict reference parser:
//! hyper's HTTP/1.1 server. For generated request bytes (valid, lenient and malicious framing),
//! every message the relay would forward byte for byte must be a message hyper reads the same
//! way — same target, same body length, same boundary to the next message. Where the relay
//! declines (hands off to the general path, or rejects), hyper itself decides, so the two paths
//! can never disagree about where a message ends.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::h1::framing::{ChunkedScanner, Fed, Framing};
use crate::h1::parse_request;
use crate::h1::rules::{BodyFraming, inspect_request};

/// A message as one parser framed it: its target and the length of its decoded body.
type Message = (String, u64);

/// Appended to every input: a request both parsers must find right after the input.
const SENTINEL: &[u8] = b"GET /sentinel HTTP/1.1\r\nHost: s.test\r\n\r\n";

/// The messages the relay forwards from `input`, in order, until it would decline.
fn relay_messages(input: &[u8]) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let next = parse_request(rest, |status, request| {
            let Ok(httparse::Status::Complete(head_len)) = status else {
                return None;
            };
            let (Some(method), Some(path), Some(1)) =
                (request.method, request.path, request.version)
            else {
                return None;
            };
            let head = inspect_request(method, path, request.headers).ok()?;
            let body = &rest[head_len..];
            let (end, body_len) = match head.body {
                BodyFraming::None => (0, 0),
                BodyFraming::Length(n) => {
                    let mut framing = Framing::Length(n);
                    match framing.feed(body) {
                        Ok(Fed::End(end)) => (end, n),
                        _ => return None,
                    }
                }
                BodyFraming::Chunked => {
                    let mut scanner = ChunkedScanner::default();
                    match scanner.scan(body) {
                        Ok(Fed::End(end)) => (end, scanner.data_len()),
                        _ => return None,
                    }
                }
            };
            // After `Connection: close` or an upgrade the relay reads no further request.
            let last = head.close || head.upgrade.is_some();
            Some((head_len + end, (path.to_owned(), body_len), last))
        });
        let Some((len, message, last)) = next else {
            break;
        };
        messages.push(message);
        if last {
            break;
        }
        rest = &rest[len..];
    }
    messages
}

/// The messages hyper's server reads from `input` (each with its body read whole): waits
/// until it has read `want` of them, or stopped on an error or at the end of the input.
fn hyper_messages(input: &[u8], want: usize) -> Vec<Message> {
    if want == 0 {
        return Vec::new();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let seen = seen_tx.clone();
                async move {
                    let target = req.uri().to_string();
                    if let Ok(body) = req.into_body().collect().await {
                        let _ = seen.send((target, body.to_bytes().len() as u64));
                    }
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                }
            });
        let serve = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let (mut read, mut write) = tokio::io::split(client);
        let input = input.to_vec();
        // The input stays open (no EOF): hyper stops reading pipelined requests at EOF.
        let _writer = tokio::spawn(async move {
            let _ = write.write_all(&input).await;
            std::future::pending::<()>().await;
            drop(write);
        });
        let _reader = tokio::spawn(async move {
            let mut sink = vec![0; 1 << 16];
            while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let mut seen = Vec::new();
        let collect = async {
            while seen.len() < want {
                match seen_rx.recv().await {
                    Some(message) => seen.push(message),
                    None => break,
                }
            }
        };
        // A disagreement shows as hyper waiting for bytes that never come: bounded.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            tokio::select! {
                () = collect => {}
                _ = serve => {}
            }
        })
        .await;
        while let Ok(message) = seen_rx.try_recv() {
            seen.push(message);
        }
        seen
    })
}

/// Asserts the relay forwards only what hyper reads identically; returns how many messages
/// the relay forwarded.
fn check(input: &[u8]) -> usize {
    let full = [input, SENTINEL].concat();
    let relay = relay_messages(&full);
    let reference = hyper_messages(&full, relay.len());
    assert!(
        relay.len() <= reference.len() && reference[..relay.len()] == relay[..],
        "the relay frames {:?} differently from hyper:\n relay: {relay:?}\n hyper: {reference:?}",
        String::from_utf8_lossy(input)
    );
    relay.len()
}

#[test]
fn known_shapes_agree_with_hyper() {
    // Valid requests: the relay forwards them and the sentinel after them.
    for valid in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        b"POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nt: 1\r\n\r\n",
    ] {
        assert_eq!(check(valid), 2, "{}", String::from_utf8_lossy(valid));
    }
    // Smuggling shapes: the relay forwards none of them byte for byte.
    for smuggling in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 3\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\n\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: a\rb\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        assert_eq!(
            relay_messages(&[smuggling, SENTINEL].concat()).len(),
            0,
            "{}",
            String::from_utf8_lossy(smuggling)
        );
        check(smuggling);
    }
}

/// One header line of a generated request: names and values around framing and Host.
fn header_line() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "Host",
        "host",
        "Content-Length",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "X-Other",
        "Content-Length ",
        " Host",
    ]);
    let value = prop::sample::select(vec![
        "a.test",
        "5",
        "0",
        "05",
        "+5",
        "5, 5",
        "-1",
        "0x5",
        "",
        "chunked",
        "Chunked",
        "chunked, chunked",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "content-length",
        "transfer-encoding",
        "close",
        "keep-alive, x-other",
        "a.test, b.test",
    ]);
    (name, value, any::<bool>()).prop_map(|(name, value, pad)| {
        if pad {
            format!("{name}: {value} ")
        } else {
            format!("{name}:{value}")
        }
    })
}

/// One chunk of a generated chunked body, with lenient variants of every delimiter.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let data = prop::collection::vec(prop::sample::select(b"abc\r\n0;".to_vec()), 0..8);
    let size_form = 0u8..7;
    let ending = prop::sample::select(vec!["\r\n", "\n", "\r", ""]);
    (data, size_form, ending.clone(), ending).prop_map(|(data, form, size_end, data_end)| {
        let size = match form {
            0 => format!("{:x}", data.len()),
            1 => format!("{:X};ext=1", data.len()),
            2 => format!("{:x} ", data.len()),
            3 => format!("0{:x}", data.len()),
            4 => format!("{:x} 1", data.len()),
            5 => format!("{:x};a\nb", data.len()),
            _ => format!("{:x}", data.len() + 1),
        };
        [
            size.as_bytes(),
            size_end.as_bytes(),
            &data,
            data_end.as_bytes(),
        ]
        .concat()
    })
}

/// The end of a generated chunked body: the last chunk, trailers and the final line.
fn last_chunk() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        &b"0\r\n\r\n"[..],
        b"0\n\n",
        b"0\r\n\n",
        b"0\r\nx-t: 1\r\n\r\n",
        b"0\r\nx-t: 1\n\r\n",
        b"0\r\nx-t: a\rb\r\n\r\n",
        b"0\r\n x-t: 1\r\n\r\n",
        b"0;e\r\n\r\n",
        b"",
    ])
    .prop_map(<[u8]>::to_vec)
}

/// A generated request: a framing (none, `Content-Length` near the body's true length,
/// `Transfer-Encoding` variants over a generated chunked body, or both), a few more header
/// lines from the pool, and lenient line ends now and then.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST"]);
    let line_end = prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n"]);
    let extra = prop::collection::vec(header_line(), 0..3);
    let raw_body = prop::collection::vec(prop::sample::select(b"ab0\r\n".to_vec()), 0..12);
    let chunked_body = (prop::collection::vec(chunk(), 0..3), last_chunk())
        .prop_map(|(chunks, last)| [chunks.concat(), last].concat());
    let length_form = 0u8..6;
    let coding = prop::sample::select(vec![
        "chunked",
        "chunked",
        "Chunked",
        " chunked",
        "gzip, chunked",
        "chunked, chunked",
    ]);
    let framing = 0u8..4;
    (
        method,
        line_end,
        extra,
        any::<bool>(),
        framing,
        length_form,
        coding,
        raw_body,
        chunked_body,
    )
        .prop_map(
            |(method, eol, extra, host_first, framing, form, coding, raw, chunked)| {
                let mut head = format!("{method} / HTTP/1.1{eol}");
                if host_first {
                    head.push_str(&format!("Host: a.test{eol}"));
                }
                let body = if framing >= 2 { chunked } else { raw };
                let len = body.len();
                let length = match form {
                    0 | 1 => len.to_string(),
                    2 => (len + 1).to_string(),
                    3 => len.saturating_sub(1).to_string(),
                    4 => format!("+{len}"),
                    _ => format!("{len}, {len}"),
                };
                if framing == 1 || framing == 3 {
                    head.push_str(&format!("Content-Length: {length}{eol}"));
                }
                if framing >= 2 {
                    head.push_str(&format!("Transfer-Encoding: {coding}{eol}"));
                }
                for line in extra {
                    head.push_str(&line);
                    head.push_str(eol);
                }
                if !host_first {
                    head.push_str(&format!("Host: a.test{eol}"));
                }
                head.push_str(eol);
                [head.into_bytes(), body].concat()
            },
        )
}

/// Generated requests: whatever the relay forwards, hyper reads the same way. The run is
/// bounded (a few thousand cases, well under a second) and must forward a fair share of them,
/// so the property is not met vacuously by declining everything.
#[test]
fn the_relay_never_frames_a_request_differently_from_hyper() {
    use proptest::test_runner::{Config, TestRunner};
    let cases = 3000;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let forwarded = std::cell::Cell::new(0u32);
    let result = runner.run(&request(), |input| {
        if check(&input) > 0 {
            forwarded.set(forwarded.get() + 1);
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    assert!(
        forwarded.get() * 10 >= cases,
        "only {} of {cases} generated requests were forwarded: the generator needs fixing",
        forwarded.get()
    );
}
