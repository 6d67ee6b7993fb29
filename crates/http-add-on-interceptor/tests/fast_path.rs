//! The HTTP/1.1 codec against a scripted raw backend: response framings relayed byte for
//! byte, upstream connection reuse and stale-connection retry, pipelining, `Connection: close`,
//! client aborts, and the hand-off to hyper in the middle of a connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TIMEOUT, World, eventually, hso};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A backend speaking raw HTTP/1.1 from a script keyed by path.
struct RawBackend {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Requests currently held by `/hold`.
    held: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the backend sends for `path` (and whether it closes the connection afterwards).
fn script(method: &str, path: &str, head: &str, body: &[u8]) -> (Vec<u8>, bool) {
    let ok = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-path: {path}\r\nX-Raw-Case: kept\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    match path {
        // The request body, back.
        "/upload" => (ok(&String::from_utf8_lossy(body)), false),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\ntrailer: x-sum\r\n\r\n\
              5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/eof" => (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec(),
            true,
        ),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\nx-path: /no-content\r\n\r\n".to_vec(), false),
        "/early-hints" => {
            let mut out = b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n".to_vec();
            out.extend_from_slice(&ok("after hints"));
            (out, false)
        }
        // Closes after answering without saying so: the pooled connection goes stale.
        "/drop-after" => (ok("dropped"), true),
        "/close" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec(),
            true,
        ),
        "/hop" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-private\r\nx-private: 1\r\nkeep-alive: timeout=5\r\nx-public: 1\r\n\r\nok"
                .to_vec(),
            false,
        ),
        _ if method == "HEAD" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-path: head\r\n\r\n".to_vec(),
            false,
        ),
        // Echo the request head as the body.
        _ => (ok(head), false),
    }
}

impl RawBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (release, release_rx) = watch::channel(false);
        let (accepted2, held2) = (accepted.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = accepted2.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_raw(stream, id, held2.clone(), release_rx.clone()));
            }
        });
        Self {
            addr,
            accepted,
            held,
            release,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_raw(
    mut stream: TcpStream,
    id: usize,
    held: Arc<AtomicUsize>,
    mut release: watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    loop {
        let (method, path, head, len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = request.parse(&buf) {
                let header = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let chunked = header("transfer-encoding").is_some();
                let body_len = header("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                // A chunked body (only short test bodies): up to the last chunk's end.
                let body_len = if chunked {
                    // The last chunk ("0", at the start or after a CRLF), then its trailers
                    // up to the empty line (only short test bodies, so no false matches).
                    let body = &buf[len..];
                    let zero = if body.starts_with(b"0\r\n") {
                        Some(0)
                    } else {
                        body.windows(5)
                            .position(|w| w == b"\r\n0\r\n")
                            .map(|p| p + 2)
                    };
                    let end = zero.and_then(|z| {
                        let rest = &body[z + 3..];
                        if rest.starts_with(b"\r\n") {
                            Some(z + 5)
                        } else {
                            rest.windows(4)
                                .position(|w| w == b"\r\n\r\n")
                                .map(|p| z + 3 + p + 4)
                        }
                    });
                    match end {
                        Some(at) => at,
                        None => {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        }
                    }
                } else {
                    body_len
                };
                let head = String::from_utf8_lossy(&buf[..len]).into_owned();
                break (
                    request.method.unwrap_or("").to_owned(),
                    request.path.unwrap_or("").to_owned(),
                    head,
                    len,
                    body_len,
                );
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < len + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len + body_len).skip(len).collect();
        if path == "/ws" {
            // Switch protocols, then echo every byte back until the client closes.
            let head = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
            if stream.write_all(head).await.is_err() {
                return;
            }
            if !buf.is_empty() && stream.write_all(&buf).await.is_err() {
                return;
            }
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        if path == "/hold" {
            held.fetch_add(1, Ordering::SeqCst);
            let _ = release.wait_for(|r| *r).await;
            held.fetch_sub(1, Ordering::SeqCst);
        }
        let (response, close) = if path.starts_with("/conn") {
            // Which connection the request came on.
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: 4\r\nx-conn: {id}\r\n\r\nconn");
            (text.into_bytes(), false)
        } else {
            script(&method, &path, &head, &body)
        };
        if stream.write_all(&response).await.is_err() || close {
            return;
        }
    }
}

/// A world routing `raw.test` to a fresh raw backend.
async fn setup() -> (World, RawBackend) {
    let w = World::start().await;
    let backend = RawBackend::start().await;
    w.expose_addrs("raw", "http", None, &[backend.addr]).await;
    w.apply_hso(hso("raw", &["raw.test"], &[], "raw", json!(80)))
        .await;
    w.wait_routed("raw.test", "/").await;
    (w, backend)
}

/// Reads one response from `stream` (head + framed body), returning it as text.
async fn read_response(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    head_request: bool,
) -> String {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = response.parse(pending) {
            let code = response.code.unwrap_or(0);
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let total = if head_request || (100..200).contains(&code) || code == 204 {
                Some(len)
            } else if let Some(n) = header("content-length") {
                Some(len + n.parse::<usize>().unwrap())
            } else if header("transfer-encoding").is_some() {
                let text = String::from_utf8_lossy(pending);
                text.find("\r\n0\r\n")
                    .and_then(|zero| text[zero + 5..].find("\r\n\r\n").map(|e| zero + 5 + e + 4))
                    .or_else(|| text[len..].starts_with("0\r\n\r\n").then_some(len + 5))
            } else {
                None
            };
            if let Some(total) = total
                && pending.len() >= total
            {
                let text = String::from_utf8_lossy(&pending[..total]).into_owned();
                pending.drain(..total);
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("the proxy answers in time")
            .unwrap();
        if n == 0 {
            // Until-close body: everything left is the response.
            let text = String::from_utf8_lossy(pending).into_owned();
            pending.clear();
            return text;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

async fn connect(w: &World) -> TcpStream {
    TcpStream::connect(w.interceptor.proxy_addr())
        .await
        .unwrap()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: raw.test\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_every_response_framing_on_one_connection() {
    let (w, backend) = setup().await;
    // The set-up may have used a connection of the general path; count from here.
    let base = backend.accepted();
    let mut client = connect(&w).await;
    let mut pending = Vec::new();
    client.write_all(&get("/chunked")).await.unwrap();
    let chunked = read_response(&mut client, &mut pending, false).await;
    assert!(chunked.starts_with("HTTP/1.1 200 OK\r\n"), "{chunked:?}");
    assert!(
        chunked.contains("transfer-encoding: chunked\r\n"),
        "{chunked:?}"
    );
    assert!(
        !chunked.contains("content-length"),
        "a length next to chunked framing is dropped: {chunked:?}"
    );
    assert!(
        chunked.contains("x-keda-http-cold-start: false\r\n"),
        "{chunked:?}"
    );
    assert!(
        chunked.ends_with("\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n"),
        "chunks and trailers are relayed verbatim: {chunked:?}"
    );

    client.write_all(&get("/no-content")).await.unwrap();
    let no_content = read_response(&mut client, &mut pending, false).await;
    assert!(
        no_content.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{no_content:?}"
    );

    client
        .write_all(b"HEAD / HTTP/1.1\r\nHost: raw.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut client, &mut pending, true).await;
    assert!(head.contains("content-length: 5\r\n"), "{head:?}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "no body after a HEAD response: {head:?}"
    );

    client.write_all(&get("/early-hints")).await.unwrap();
    let hints = read_response(&mut client, &mut pending, false).await;
    assert!(
        hints.starts_with("HTTP/1.1 103 Early Hints\r\n"),
        "{hints:?}"
    );
    let after = read_response(&mut client, &mut pending, false).await;
    assert!(after.ends_with("after hints"), "{after:?}");

    client.write_all(&get("/hop")).await.unwrap();
    let hop = read_response(&mut client, &mut pending, false).await;
    assert!(hop.contains("x-public: 1\r\n"), "{hop:?}");
    for gone in ["x-private", "keep-alive", "connection: x-private"] {
        assert!(!hop.contains(gone), "{gone} must be stripped: {hop:?}");
    }

    // All of that went over one upstream connection (the pooled one, or one new).
    assert!(
        backend.accepted() - base <= 1,
        "{} new",
        backend.accepted() - base
    );

    // A body without length ends with the upstream connection; the client's closes too.
    client.write_all(&get("/eof")).await.unwrap();
    let eof = read_response(&mut client, &mut pending, false).await;
    assert!(eof.contains("connection: close\r\n"), "{eof:?}");
    assert!(eof.ends_with("\r\n\r\nuntil the end"), "{eof:?}");
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, client.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_close_is_honoured() {
    let (w, _backend) = setup().await;
    let mut client = connect(&w).await;
    let mut requests = get("/first");
    requests.extend_from_slice(&get("/second"));
    requests
        .extend_from_slice(b"GET /third HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n");
    client.write_all(&requests).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, client.read_to_end(&mut out))
        .await
        .expect("the proxy closes after the request asking for it")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let order: Vec<usize> = ["x-path: /first", "x-path: /second", "x-path: /third"]
        .iter()
        .map(|p| {
            text.find(p)
                .unwrap_or_else(|| panic!("{p} missing: {text}"))
        })
        .collect();
    assert!(order.is_sorted(), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3);
    assert!(text.contains("connection: close\r\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_connection_named_headers() {
    let (w, _backend) = setup().await;
    let mut client = connect(&w).await;
    let mut pending = Vec::new();
    client
        .write_all(
            b"GET /echo?q=1 HTTP/1.1\r\nHost: raw.test\r\nConnection: keep-alive, X-Secret\r\n\
              X-Secret: 1\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\
              X-Kept: yes\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    let reply = read_response(&mut client, &mut pending, false).await;
    let (_, echoed) = reply.split_once("\r\n\r\n").unwrap();
    let echoed = echoed.to_ascii_lowercase();
    assert!(echoed.starts_with("get /echo?q=1 http/1.1\r\n"), "{echoed}");
    assert!(echoed.contains("host: raw.test\r\n"), "{echoed}");
    assert!(echoed.contains("x-kept: yes\r\n"), "{echoed}");
    assert!(
        echoed.contains("x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\n"),
        "{echoed}"
    );
    assert!(echoed.contains("x-forwarded-proto: http\r\n"), "{echoed}");
    assert!(
        echoed.contains("x-forwarded-host: raw.test\r\n"),
        "{echoed}"
    );
    for gone in ["x-secret", "connection:", "te:"] {
        assert!(!echoed.contains(gone), "{gone} must be stripped: {echoed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_are_retried_and_closing_ones_not_reused() {
    let (w, backend) = setup().await;
    let base = backend.accepted();
    for i in 1..=5 {
        // The backend closes each connection after answering, without announcing it, so the
        // next request finds its pooled connection stale (or already known closed).
        let reply = w.get("raw.test", "/drop-after").await;
        assert_eq!(
            reply.status,
            http::StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "dropped");
    }
    // One new connection per request, except for a first one that found a pooled one.
    let new = backend.accepted() - base;
    assert!((4..=5).contains(&new), "{new} new connections");
    let before = backend.accepted();
    for _ in 0..3 {
        assert_eq!(w.get("raw.test", "/close").await.text(), "ok");
    }
    assert_eq!(
        backend.accepted(),
        before + 3,
        "announced closes are never reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_by_the_codec_and_the_connection_stays_on_it() {
    let (w, _backend) = setup().await;
    let mut client = connect(&w).await;
    let mut pending = Vec::new();
    client.write_all(&get("/fast")).await.unwrap();
    let fast = read_response(&mut client, &mut pending, false).await;
    assert!(fast.contains("x-path: /fast"), "{fast:?}");
    // The codec relays header names as sent; hyper's server would lower-case them.
    assert!(fast.contains("X-Raw-Case: kept\r\n"), "{fast:?}");
    // The body follows only after `100 Continue`, which the codec sends itself.
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let continued = read_response(&mut client, &mut pending, true).await;
    assert!(
        continued.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{continued:?}"
    );
    client.write_all(b"hello").await.unwrap();
    let upload = read_response(&mut client, &mut pending, false).await;
    assert!(upload.starts_with("HTTP/1.1 200 OK\r\n"), "{upload:?}");
    assert!(upload.contains("X-Raw-Case: kept\r\n"), "{upload:?}");
    client.write_all(&get("/after")).await.unwrap();
    let after = read_response(&mut client, &mut pending, false).await;
    assert!(after.contains("x-path: /after"), "{after:?}");
    assert!(after.contains("X-Raw-Case: kept\r\n"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_handed_to_hyper_keeps_working() {
    let (w, _backend) = setup().await;
    let mut client = connect(&w).await;
    let mut pending = Vec::new();
    client.write_all(&get("/fast")).await.unwrap();
    let fast = read_response(&mut client, &mut pending, false).await;
    assert!(fast.contains("X-Raw-Case: kept\r\n"), "{fast:?}");
    // A repeated (agreeing) Content-Length is a shape the codec leaves to hyper's server,
    // which serves the rest of the connection.
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .unwrap();
    let upload = read_response(&mut client, &mut pending, false).await;
    assert!(upload.starts_with("HTTP/1.1 200 OK\r\n"), "{upload:?}");
    assert!(upload.contains("x-raw-case: kept\r\n"), "{upload:?}");
    client.write_all(&get("/after")).await.unwrap();
    let after = read_response(&mut client, &mut pending, false).await;
    assert!(after.contains("x-path: /after"), "{after:?}");
    assert!(after.contains("x-raw-case: kept\r\n"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abort_while_waiting_counts_the_request_out() {
    let (w, backend) = setup().await;
    let mut client = connect(&w).await;
    client.write_all(&get("/hold")).await.unwrap();
    w.wait_concurrency("default/raw", 1).await;
    eventually("the backend holds the request", || async {
        (backend.held.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    drop(client);
    w.wait_concurrency("default/raw", 0).await;
    let _ = backend.release.send(true);
}

/// Sends a WebSocket-style upgrade on `client`, checks the `101`, and that bytes echo through.
async fn upgrade_and_echo(client: &mut TcpStream) -> String {
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: raw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let mut pending = Vec::new();
    let head = read_response(client, &mut pending, true).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket\r\n"),
        "{head:?}"
    );
    for message in ["ping", "second message"] {
        client.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(TIMEOUT, client.read_exact(&mut echoed))
            .await
            .expect("the echo arrives")
            .unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_are_tunnelled_and_counted_until_closed() {
    let (w, _backend) = setup().await;
    let mut client = connect(&w).await;
    let head = upgrade_and_echo(&mut client).await;
    assert!(
        head.contains("x-keda-http-cold-start: false\r\n"),
        "{head:?}"
    );
    w.wait_concurrency("default/raw", 1).await;
    drop(client);
    w.wait_concurrency("default/raw", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_held_for_a_cold_start_is_tunnelled_too() {
    let (w, backend) = setup().await;
    // Make the backend not ready, and wait until the interceptor holds requests for it.
    w.set_slice("raw", "raw-0", "http", backend.addr, false)
        .await;
    eventually("the route is cold", || async {
        let probe = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            w.get("raw.test", "/probe"),
        )
        .await;
        probe.is_err().then_some(())
    })
    .await;
    w.wait_concurrency("default/raw", 0).await;

    let mut client = connect(&w).await;
    let upgrade = tokio::spawn(async move {
        let head = upgrade_and_echo(&mut client).await;
        (head, client)
    });
    w.wait_concurrency("default/raw", 1).await;
    w.set_slice("raw", "raw-0", "http", backend.addr, true)
        .await;
    let (head, client) = tokio::time::timeout(TIMEOUT, upgrade)
        .await
        .expect("the held upgrade is answered")
        .unwrap();
    assert!(
        head.contains("x-keda-http-cold-start: true\r\n"),
        "{head:?}"
    );
    // Still counted while the tunnel is open.
    w.wait_concurrency("default/raw", 1).await;
    drop(client);
    w.wait_concurrency("default/raw", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_request_bodies_stay_on_the_fast_path_and_large_ones_stream() {
    let (w, _backend) = setup().await;
    let mut client = connect(&w).await;
    let mut pending = Vec::new();
    // A small body arrives with its head.
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let small = read_response(&mut client, &mut pending, false).await;
    assert!(small.contains("X-Raw-Case: kept\r\n"), "{small:?}");
    assert!(small.ends_with("\r\n\r\nhello"), "{small:?}");

    // A small body sent after its head is waited for, and still relayed by the fast path.
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    client.write_all(b"later").await.unwrap();
    let later = read_response(&mut client, &mut pending, false).await;
    assert!(later.contains("X-Raw-Case: kept\r\n"), "{later:?}");
    assert!(later.ends_with("\r\n\r\nlater"), "{later:?}");

    // A larger one (over 64 KiB) streams in pieces, the head first: the general path relays
    // it full duplex (and lower-cases header names, which tells the paths apart).
    let body: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    client
        .write_all(
            format!(
                "PUT /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    for piece in body.as_bytes().chunks(64 * 1024) {
        client.write_all(piece).await.unwrap();
    }
    let large = read_response(&mut client, &mut pending, false).await;
    assert!(large.contains("x-raw-case: kept\r\n"), "{large:?}");
    assert!(large.ends_with(&body), "the whole body arrives in order");

    // The connection is still in step: a next request is answered normally.
    client.write_all(&get("/next")).await.unwrap();
    let next = read_response(&mut client, &mut pending, false).await;
    assert!(next.contains("x-path: /next"), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_are_relayed_verbatim() {
    let (w, _backend) = setup().await;
    let mut client = connect(&w).await;
    let mut pending = Vec::new();
    // Whole in the first read.
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let small = read_response(&mut client, &mut pending, false).await;
    assert!(small.contains("X-Raw-Case: kept\r\n"), "{small:?}");
    assert!(
        small.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{small:?}"
    );

    // Streamed: the head, then chunks written one by one, with an extension and a trailer.
    client
        .write_all(b"PUT /upload HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let pieces: [&[u8]; 4] = [
        b"3;ext=1\r\nabc\r\n",
        b"4\r\ndefg",
        b"\r\n0\r\n",
        b"x-sum: 7\r\n\r\n",
    ];
    for piece in pieces {
        client.write_all(piece).await.unwrap();
    }
    let streamed = read_response(&mut client, &mut pending, false).await;
    assert!(streamed.contains("X-Raw-Case: kept\r\n"), "{streamed:?}");
    assert!(
        streamed.ends_with("\r\n\r\n3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n"),
        "{streamed:?}"
    );

    // Still in step.
    client.write_all(&get("/next")).await.unwrap();
    let next = read_response(&mut client, &mut pending, false).await;
    assert!(next.contains("x-path: /next"), "{next:?}");

    // Both framings at once (a smuggling shape) is left to the general path, which rejects it
    // or picks one; either way the answer is not the fast path's.
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let both = read_response(&mut client, &mut pending, false).await;
    assert!(!both.contains("X-Raw-Case"), "{both:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_in_the_middle_of_its_body_is_counted_out() {
    let (w, backend) = setup().await;
    // A small body is read whole before the request is forwarded (or counted): a client that
    // leaves half-way reaches nothing.
    let mut client = connect(&w).await;
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 1000\r\n\r\npartial",
        )
        .await
        .unwrap();
    drop(client);
    // A large one streams: it is in flight while it arrives, and counted out when the client
    // leaves half-way.
    let mut client = connect(&w).await;
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&[b'x'; 100_000]).await.unwrap();
    w.wait_concurrency("default/raw", 1).await;
    drop(client);
    w.wait_concurrency("default/raw", 0).await;
    // The backend never got a whole request, and the proxy keeps serving.
    assert_eq!(w.get("raw.test", "/ok").await.status, http::StatusCode::OK);
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_codecs_share_one_upstream_pool() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let (w, backend) = setup().await;
    // HTTP/2 routes by :authority, here the proxy's address.
    w.apply_hso(hso("raw-ip", &["127.0.0.1"], &[], "raw", json!(80)))
        .await;
    w.wait_routed("127.0.0.1", "/").await;
    // One HTTP/1.1 request leaves its upstream connection idle in the pool.
    let mut client = connect(&w).await;
    let mut pending = Vec::new();
    client.write_all(&get("/conn")).await.unwrap();
    let first = read_response(&mut client, &mut pending, false).await;
    let conn_of = |response: &str| {
        response
            .lines()
            .find_map(|l| l.strip_prefix("x-conn: "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no x-conn in {response:?}"))
    };
    let pooled = conn_of(&first);

    // An h2c request goes out over HTTP/1.1 on that same connection: one pool for both codecs
    // (nothing else uses it meanwhile, so which connection it takes is certain).
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(format!("http://{}/conn", w.interceptor.proxy_addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = h2.request(req).await.expect("h2c to the proxy");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(
        response.headers()["x-conn"].to_str().unwrap(),
        pooled,
        "the h2c request took the HTTP/1.1 codec's pooled connection"
    );
    response.into_body().collect().await.expect("body");

    // And gives it back as its response completes, before the client can see the end of it:
    // twenty requests in a row all take that one connection.
    let base = backend.accepted();
    for i in 0..20 {
        let req = http::Request::get(format!("http://{}/conn", w.interceptor.proxy_addr()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = h2.request(req).await.expect("h2c to the proxy");
        assert_eq!(
            response.headers()["x-conn"].to_str().unwrap(),
            pooled,
            "request {i} took the pooled connection"
        );
        response.into_body().collect().await.expect("body");
    }
    assert_eq!(backend.accepted(), base, "no new upstream connection");
}
