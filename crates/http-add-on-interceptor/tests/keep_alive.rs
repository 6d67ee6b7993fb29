//! One HTTP/1.1 client connection across a cold start and the requests after it, and
//! `Connection`-named headers in both directions, with hand-written bytes on both sides: a raw
//! TCP client and a raw backend, so header-name case and exact header lists are visible.

mod common;

use std::net::SocketAddr;

use common::{TIMEOUT, World, hso};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `Connection` list and the headers it names, sent by the backend on `/connection`.
const NAMES: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

/// A raw HTTP/1.1 backend (requests without bodies, keep-alive). It answers every request with
/// `200`, a mixed-case `X-Mixed-Case: 1` header and the request head as the body; `/connection`
/// also sends `Connection: a, …, j`, the headers `a` … `j`, and `X-Kept: 1`.
async fn raw_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    let mut extra = String::new();
                    if head.starts_with(b"GET /connection ") {
                        extra.push_str(&format!("Connection: {}\r\n", NAMES.join(", ")));
                        for name in NAMES {
                            extra.push_str(&format!("{name}: 1\r\n"));
                        }
                        extra.push_str("X-Kept: 1\r\n");
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Mixed-Case: 1\r\n{extra}\r\n",
                        head.len()
                    );
                    let mut out = response.into_bytes();
                    out.extend_from_slice(&head);
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// One response read from `stream`: head and `Content-Length` body (the backend frames every
/// response so; the interceptor's own synthetic ones too), leftovers kept in `pending`.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().unwrap())
                })
                .unwrap_or_else(|| panic!("a Content-Length: {head:?}"));
            if pending.len() >= end + 4 + length {
                let body =
                    String::from_utf8_lossy(&pending[end + 4..end + 4 + length]).into_owned();
                pending.drain(..end + 4 + length);
                return (head, body);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("the proxy answers in time")
            .unwrap();
        assert!(
            n > 0,
            "the proxy closed the connection; so far: {pending:?}"
        );
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: ka.test\r\n\r\n").into_bytes()
}

/// The header lines of `head` (after the status or request line).
fn header_lines(head: &str) -> Vec<&str> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect()
}

fn has_header(head: &str, name: &str) -> bool {
    header_lines(head).iter().any(|line| {
        line.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
    })
}

/// The HTTP/1.1 codec relays response heads byte for byte, hyper lower-cases header names:
/// the case of `X-Mixed-Case` tells which one served each response. A cold start must not
/// move the connection to another codec (until a543341 it moved to hyper for good: at 331a9ee
/// all four responses here lost the case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_case_is_kept_on_every_response_of_a_connection_that_began_cold() {
    let w = World::start().await;
    let (addr, _backend) = raw_backend().await;
    w.expose_addrs("ka", "http", None, &[]).await;
    w.set_slice("ka", "ka-0", "http", addr, false).await;
    w.apply_hso(hso("ka", &["ka.test"], &[], "ka", json!(80)))
        .await;
    // A fresh connection whose first request is held for the cold start. `/queue` lists a
    // route a moment before the table requests are routed by has it: a 404 of an unknown
    // route (not counted) means try again on a new connection.
    let (mut client, mut pending) = common::eventually("a held request", || async {
        let mut client = TcpStream::connect(w.interceptor.proxy_addr())
            .await
            .unwrap();
        let mut pending = Vec::new();
        client.write_all(&get("/cold")).await.unwrap();
        tokio::select! {
            () = w.wait_concurrency("default/ka", 1) => Some((client, pending)),
            (head, body) = read_response(&mut client, &mut pending) => {
                assert!(
                    head.starts_with("HTTP/1.1 404 ") && body.starts_with("no route"),
                    "answered instead of held: {head}{body}"
                );
                None
            }
        }
    })
    .await;
    w.set_slice("ka", "ka-0", "http", addr, true).await;
    let mut heads = Vec::new();
    let (head, body) = read_response(&mut client, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    assert!(body.starts_with("GET /cold HTTP/1.1\r\n"), "{body:?}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-keda-http-cold-start: true\r\n"),
        "{head:?}"
    );
    heads.push(("/cold", head));
    for path in ["/warm-1", "/warm-2", "/warm-3"] {
        client.write_all(&get(path)).await.unwrap();
        let (head, body) = read_response(&mut client, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{path}: {head:?}");
        assert!(
            body.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{path}: {body:?}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("x-keda-http-cold-start: false\r\n"),
            "{path}: {head:?}"
        );
        heads.push((path, head));
    }
    // Checked after all four, so a failure lists every response that lost the case.
    let lost: Vec<_> = heads
        .iter()
        .filter(|(_, head)| !header_lines(head).contains(&"X-Mixed-Case: 1"))
        .collect();
    assert!(
        lost.is_empty(),
        "header name case lost on {} of 4 responses: {lost:#?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_connection_named_headers_are_dropped_both_ways() {
    let w = World::start().await;
    let (addr, _backend) = raw_backend().await;
    w.expose_addrs("ka", "http", None, &[addr]).await;
    w.apply_hso(hso("ka", &["ka.test"], &[], "ka", json!(80)))
        .await;
    w.wait_routed("ka.test", "/").await;

    let mut client = TcpStream::connect(w.interceptor.proxy_addr())
        .await
        .unwrap();
    let mut pending = Vec::new();

    // Backend → client: a response whose `Connection` names ten of its headers.
    client.write_all(&get("/connection")).await.unwrap();
    let (head, _) = read_response(&mut client, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    assert!(
        has_header(&head, "x-kept"),
        "unnamed headers pass: {head:?}"
    );
    let leaked: Vec<_> = NAMES.iter().filter(|n| has_header(&head, n)).collect();
    assert!(leaked.is_empty(), "{leaked:?} reached the client: {head:?}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: a"),
        "the backend's Connection list is not relayed: {head:?}"
    );

    // Client → backend: a request whose `Connection` names ten of its headers.
    let mut request = format!(
        "GET /named HTTP/1.1\r\nHost: ka.test\r\nConnection: {}\r\n",
        NAMES.join(", ")
    );
    for name in NAMES {
        request.push_str(&format!("{name}: 1\r\n"));
    }
    request.push_str("X-Kept: 1\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let (head, echoed) = read_response(&mut client, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    assert!(
        echoed.starts_with("GET /named HTTP/1.1\r\n"),
        "the backend's view: {echoed:?}"
    );
    assert!(
        has_header(&echoed, "x-kept"),
        "unnamed headers pass: {echoed:?}"
    );
    let leaked: Vec<_> = NAMES.iter().filter(|n| has_header(&echoed, n)).collect();
    assert!(
        leaked.is_empty(),
        "{leaked:?} reached the backend: {echoed:?}"
    );
    assert!(
        !echoed.to_ascii_lowercase().contains("connection: a"),
        "the client's Connection list is not forwarded: {echoed:?}"
    );
}
