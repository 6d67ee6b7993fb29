//! Request smuggling and framing: every case is raw bytes sent to the running interceptor, on
//! the plain and on the TLS listener, with a raw recording backend behind it. Each asserts what
//! the client gets back AND the exact bytes the backend received — so no request may appear at
//! the backend that the client did not send as one (RFC 9110 §7.6.1, RFC 9112 §6–7).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{TIMEOUT, World, hso};
use http::StatusCode;
use http_add_on_interceptor::Config;
use http_add_on_interceptor::config::TlsConfig;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;

/// A backend that records every byte it receives and answers each request it reads (framed
/// leniently, as a naive backend would: by `Content-Length`, or to the first `0\r\n\r\n` when
/// chunked) with `seen <method> <path>`, or a scripted response for `/resp/…`.
struct Recorder {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn scripted(path: &str) -> Option<Vec<u8>> {
    Some(match path {
        "/resp/connection-cl" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nfirst".to_vec()
        }
        "/resp/connection-te" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n5\r\nfirst\r\n0\r\n\r\n".to_vec(),
        "/resp/many-headers" => {
            let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..100 {
                out.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
            }
            out.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            out
        }
        "/resp/bad-chunk" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec()
        }
        "/resp/plus-length" => b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok".to_vec(),
        _ => return None,
    })
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (received2, requests2) = (received.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(record(stream, received2.clone(), requests2.clone()));
            }
        });
        Self {
            addr,
            received,
            requests,
            task,
        }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn record(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<u8>>>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let header = |name: &str| {
                        request
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                    };
                    let body_end = if header("transfer-encoding").is_some() {
                        find(&buf[len..], b"0\r\n\r\n").map(|at| len + at + 5)
                    } else {
                        let n: usize = header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        (buf.len() >= len + n).then_some(len + n)
                    };
                    body_end.map(|end| {
                        (
                            end,
                            format!(
                                "{} {}",
                                request.method.unwrap_or(""),
                                request.path.unwrap_or("")
                            ),
                        )
                    })
                }
                _ => None,
            }
        };
        match parsed {
            Some((end, line)) => {
                buf.drain(..end);
                requests.lock().unwrap().push(line.clone());
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                let response = scripted(&path).unwrap_or_else(|| {
                    let body = format!("seen {line}");
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                });
                if stream.write_all(&response).await.is_err() {
                    return;
                }
            }
            None => {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        received.lock().unwrap().extend_from_slice(&chunk[..n]);
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn fixture(path: &str) -> PathBuf {
    common::tls_fixture(path)
}

/// Which listener a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Plain,
    Tls,
}

impl Listener {
    fn proto(self) -> &'static str {
        match self {
            Self::Plain => "http",
            Self::Tls => "https",
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An interceptor with both listeners, routing `s.test` to a fresh recorder.
struct Bed {
    w: World,
    backend: Recorder,
}

impl Bed {
    async fn start() -> Self {
        let config = Config {
            tls: Some(TlsConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..TlsConfig::with_files(fixture("default.crt"), fixture("default.key"))
            }),
            ..Config::for_tests()
        };
        let w = World::with_config(config).await;
        let backend = Recorder::start().await;
        // `appProtocol: http`: requests from the TLS listener reach the recorder in plain text.
        w.expose_addrs("rec", "http", Some("http"), &[backend.addr])
            .await;
        w.apply_hso(hso("rec", &["s.test"], &[], "rec", json!(80)))
            .await;
        w.wait_routed("s.test", "/").await;
        // The route wait reached the backend: start each case from a clean record.
        backend.received.lock().unwrap().clear();
        backend.requests.lock().unwrap().clear();
        Self { w, backend }
    }

    async fn connect(&self, listener: Listener) -> Pin<Box<dyn Io>> {
        match listener {
            Listener::Plain => Box::pin(
                TcpStream::connect(self.w.interceptor.proxy_addr())
                    .await
                    .unwrap(),
            ),
            Listener::Tls => {
                let connector = common::tls_connector(&[]);
                let tcp = TcpStream::connect(self.w.interceptor.tls_addr().unwrap())
                    .await
                    .unwrap();
                let tls = connector
                    .connect(ServerName::try_from("tls.test").unwrap(), tcp)
                    .await
                    .expect("TLS handshake");
                Box::pin(tls)
            }
        }
    }

    /// Sends `bytes` on a new connection and reads `want` responses (fewer if the proxy
    /// closes first); returns them and whether the proxy closed the connection after them.
    async fn exchange(
        &self,
        listener: Listener,
        bytes: &[u8],
        want: usize,
    ) -> (Vec<Response>, bool) {
        let mut stream = self.connect(listener).await;
        stream.write_all(bytes).await.unwrap();
        let mut reader = Reader::default();
        let mut responses = Vec::new();
        while responses.len() < want {
            match reader.next(&mut stream).await {
                Some(response) => responses.push(response),
                None => return (responses, true),
            }
        }
        // Closed after them? Only cases that expect a close ask (`want` = all they expect).
        let closed = reader
            .closed_within(&mut stream, std::time::Duration::from_millis(300))
            .await;
        (responses, closed)
    }

    async fn settled(&self) {
        self.w.wait_concurrency("default/rec", 0).await;
    }
}

/// A response read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// The next whole response, or `None` when the connection closes first.
    async fn next(&mut self, stream: &mut Pin<Box<dyn Io>>) -> Option<Response> {
        loop {
            if let Some(response) = self.parse() {
                return Some(response);
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("the proxy answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn parse(&mut self) -> Option<Response> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = response.parse(&self.buf) else {
            return None;
        };
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let (body, end) = if header("transfer-encoding").is_some() {
            // Decode chunks (strictly enough for the proxy's own output).
            let mut at = len;
            let mut body = Vec::new();
            loop {
                let line_end = find(&self.buf[at..], b"\r\n")? + at;
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[at..line_end])
                        .ok()?
                        .split(';')
                        .next()?,
                    16,
                )
                .ok()?;
                at = line_end + 2;
                if size == 0 {
                    let end = find(&self.buf[at..], b"\r\n")? + at + 2;
                    break (body, end);
                }
                if self.buf.len() < at + size + 2 {
                    return None;
                }
                body.extend_from_slice(&self.buf[at..at + size]);
                at += size + 2;
            }
        } else {
            let n: usize = header("content-length")?.trim().parse().ok()?;
            if self.buf.len() < len + n {
                return None;
            }
            (self.buf[len..len + n].to_vec(), len + n)
        };
        let parsed = Response {
            status: response.code.unwrap_or(0),
            head: String::from_utf8_lossy(&self.buf[..len]).into_owned(),
            body,
        };
        self.buf.drain(..end);
        Some(parsed)
    }

    /// Whether the peer closes within `limit` (with nothing more sent).
    async fn closed_within(
        &mut self,
        stream: &mut Pin<Box<dyn Io>>,
        limit: std::time::Duration,
    ) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!(
                "unexpected bytes after the responses: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(_) => false,
        }
    }
}

const LISTENERS: [Listener; 2] = [Listener::Plain, Listener::Tls];

/// The head the proxy forwards for a request with `lines` (after the request line).
fn forwarded(request_line: &str, lines: &str, listener: Listener) -> String {
    format!(
        "{request_line}\r\n{lines}X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: {}\r\nX-Forwarded-Host: s.test\r\n\r\n",
        listener.proto()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_framing_so_no_request_is_smuggled() {
    let bed = Bed::start().await;
    for listener in LISTENERS {
        // Content-Length named in Connection: the body stays a body.
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: s.test\r\n\r\n";
        let attack = format!(
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: {}\r\nConnection: content-length\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let (responses, _) = bed.exchange(listener, attack.as_bytes(), 1).await;
        assert_eq!(responses[0].text(), "seen POST /", "{listener:?}");
        // A victim on another connection gets its own response, over the pooled connection.
        let (victim, _) = bed
            .exchange(
                listener,
                b"GET /victim HTTP/1.1\r\nHost: s.test\r\nCookie: secret\r\n\r\n",
                1,
            )
            .await;
        assert_eq!(victim[0].text(), "seen GET /victim", "{listener:?}");
        assert_eq!(
            bed.backend.requests(),
            ["POST /", "GET /victim"],
            "{listener:?}"
        );
        assert_eq!(
            bed.backend.received(),
            forwarded(
                "POST / HTTP/1.1",
                &format!("Host: s.test\r\nContent-Length: {}\r\n", smuggled.len()),
                listener
            ) + smuggled
                + &forwarded(
                    "GET /victim HTTP/1.1",
                    "Host: s.test\r\nCookie: secret\r\n",
                    listener
                ),
            "{listener:?}"
        );
        bed.backend.received.lock().unwrap().clear();
        bed.backend.requests.lock().unwrap().clear();

        // Transfer-Encoding named in Connection: the chunks stay chunks.
        let chunk = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
        let attack = format!(
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n{chunk}"
        );
        let (responses, _) = bed.exchange(listener, attack.as_bytes(), 1).await;
        assert_eq!(responses[0].text(), "seen POST /", "{listener:?}");
        assert_eq!(bed.backend.requests(), ["POST /"], "{listener:?}");
        assert_eq!(
            bed.backend.received(),
            forwarded(
                "POST / HTTP/1.1",
                "Host: s.test\r\nTransfer-Encoding: chunked\r\n",
                listener
            ) + &chunk,
            "{listener:?}"
        );
        bed.backend.received.lock().unwrap().clear();
        bed.backend.requests.lock().unwrap().clear();

        // Host named in Connection: Host still goes upstream.
        let (responses, _) = bed
            .exchange(
                listener,
                b"GET /h HTTP/1.1\r\nHost: s.test\r\nConnection: host\r\n\r\n",
                1,
            )
            .await;
        assert_eq!(responses[0].text(), "seen GET /h", "{listener:?}");
        assert_eq!(
            bed.backend.received(),
            forwarded("GET /h HTTP/1.1", "Host: s.test\r\n", listener),
            "{listener:?}"
        );
        bed.backend.received.lock().unwrap().clear();
        bed.backend.requests.lock().unwrap().clear();
    }
    bed.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_framing_and_bad_targets_are_refused_before_anything_is_forwarded() {
    let bed = Bed::start().await;
    let chunked = "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: Vec<(String, u16)> = vec![
        (format!("{chunked}3\nabc\r\n0\r\n\r\n"), 400),
        (format!("{chunked}3;a=b\nc\r\nabc\r\n0\r\n\r\n"), 400),
        (format!("{chunked}3 3\r\nabc\r\n0\r\n\r\n"), 400),
        (format!("{chunked}0\n\n"), 400),
        (format!("{chunked}0\r\nx-t: a\rb\r\n\r\n"), 400),
        (format!("{chunked}3\r\nabc\n0\r\n\r\n"), 400),
        (
            "GET / HTTP/1.1\r\nHost: s.test\r\nHost: other.test\r\n\r\n".into(),
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: s.test, other.test\r\n\r\n".into(),
            400,
        ),
        ("GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("GET a HTTP/1.1\r\nHost: s.test\r\n\r\n".into(), 400),
        (
            "GET http://other.test/ HTTP/1.1\r\nHost: s.test\r\n\r\n".into(),
            400,
        ),
        (
            "CONNECT s.test:443 HTTP/1.1\r\nHost: s.test:443\r\n\r\n".into(),
            405,
        ),
        (
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
                .into(),
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
                .into(),
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: +3\r\n\r\nabc".into(),
            400,
        ),
    ];
    for listener in LISTENERS {
        for (request, status) in &cases {
            // A request after the bad one must never be read from the same connection.
            let bytes = format!("{request}GET /after HTTP/1.1\r\nHost: s.test\r\n\r\n");
            let (responses, closed) = bed.exchange(listener, bytes.as_bytes(), 2).await;
            let what = format!("{listener:?} {}", request.escape_debug());
            assert_eq!(responses.len(), 1, "{what}: {responses:?}");
            assert_eq!(responses[0].status, *status, "{what}: {responses:?}");
            assert!(closed, "{what}: the connection closes");
            assert_eq!(
                bed.backend.received(),
                "",
                "{what}: nothing reaches the backend"
            );
        }
    }
    bed.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_framings_are_framed_by_the_chunks_alone_and_the_connection_closes() {
    let bed = Bed::start().await;
    for listener in LISTENERS {
        // RFC 9112 §6.1: Transfer-Encoding wins, the length is dropped before forwarding, and
        // the connection closes after the response, so `/after` is never read.
        let bytes = b"POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: s.test\r\n\r\n";
        let (responses, closed) = bed.exchange(listener, bytes, 2).await;
        assert_eq!(responses.len(), 1, "{listener:?}: {responses:?}");
        assert_eq!(responses[0].text(), "seen POST /", "{listener:?}");
        assert!(closed, "{listener:?}");
        assert_eq!(bed.backend.requests(), ["POST /"], "{listener:?}");
        let received = bed.backend.received().to_ascii_lowercase();
        assert!(
            !received.contains("content-length"),
            "{listener:?}: {received}"
        );
        assert!(
            received.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            "{listener:?}: {received}"
        );
        bed.backend.received.lock().unwrap().clear();
        bed.backend.requests.lock().unwrap().clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_route_by_their_authority() {
    let bed = Bed::start().await;
    for listener in LISTENERS {
        let (responses, _) = bed
            .exchange(
                listener,
                b"GET http://s.test/abs HTTP/1.1\r\nHost: s.test\r\n\r\n",
                1,
            )
            .await;
        assert_eq!(responses[0].status, 200, "{listener:?}: {responses:?}");
        assert_eq!(responses[0].text(), "seen GET /abs", "{listener:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_responses_keep_their_framing() {
    let bed = Bed::start().await;
    for listener in LISTENERS {
        // Connection naming the response's framing headers: they stay, so the next response on
        // the kept-alive connection is not glued onto this one's body.
        for path in ["/resp/connection-cl", "/resp/connection-te"] {
            let bytes = format!(
                "GET {path} HTTP/1.1\r\nHost: s.test\r\n\r\nGET /next HTTP/1.1\r\nHost: s.test\r\n\r\n"
            );
            let (responses, _) = bed.exchange(listener, bytes.as_bytes(), 2).await;
            assert_eq!(responses.len(), 2, "{listener:?} {path}: {responses:?}");
            assert_eq!(responses[0].text(), "first", "{listener:?} {path}");
            assert_eq!(responses[1].text(), "seen GET /next", "{listener:?} {path}");
        }
        // More than 64 header lines are relayed.
        let (responses, _) = bed
            .exchange(
                listener,
                b"GET /resp/many-headers HTTP/1.1\r\nHost: s.test\r\n\r\n",
                1,
            )
            .await;
        assert_eq!(responses[0].status, 200, "{listener:?}");
        assert!(responses[0].head.contains("x-h99: 99\r\n"), "{listener:?}");
        // A malformed first chunk and a signed length are a clean 502.
        for path in ["/resp/bad-chunk", "/resp/plus-length"] {
            let bytes = format!("GET {path} HTTP/1.1\r\nHost: s.test\r\n\r\n");
            let (responses, _) = bed.exchange(listener, bytes.as_bytes(), 1).await;
            assert_eq!(responses.len(), 1, "{listener:?} {path}");
            assert_eq!(
                responses[0].status, 502,
                "{listener:?} {path}: {responses:?}"
            );
        }
    }
    bed.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_must_be_single_and_agree_with_the_authority() {
    let bed = Bed::start().await;
    let tcp = TcpStream::connect(bed.w.interceptor.proxy_addr())
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut status = |uri: &'static str, hosts: &'static [&'static str]| {
        let mut request = http::Request::get(uri);
        for host in hosts {
            request = request.header("host", *host);
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let sent = send.send_request(request);
        async move {
            let response = sent.await.expect("response");
            let status = response.status();
            let _ = response.into_body().collect().await;
            status
        }
    };
    assert_eq!(status("http://s.test/ok", &[]).await, StatusCode::OK);
    assert_eq!(
        status("http://s.test/ok", &["s.test"]).await,
        StatusCode::OK
    );
    assert_eq!(
        status("http://s.test/x", &["s.test", "other.test"]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status("http://s.test/x", &["other.test"]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(bed.backend.requests(), ["GET /ok", "GET /ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_streamed_body_on_the_general_path_is_a_400() {
    let bed = Bed::start().await;
    for listener in LISTENERS {
        // Too large to be read whole first: the general path streams it, so its head is
        // forwarded before the bad chunk arrives; the client still gets a 400, not a 502.
        let mut stream = bed.connect(listener).await;
        let mut first =
            b"POST /big HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        first.extend_from_slice(format!("{:x}\r\n", 70_000).as_bytes());
        first.extend_from_slice(&[b'x'; 70_000]);
        stream.write_all(&first).await.unwrap();
        common::eventually("the head reaches the backend", || async {
            bed.backend.received().contains("POST /big").then_some(())
        })
        .await;
        stream.write_all(b"\r\nzz\r\n").await.unwrap();
        let mut reader = Reader::default();
        let response = reader.next(&mut stream).await.expect("a response");
        assert_eq!(response.status, 400, "{listener:?}: {response:?}");
        assert!(
            response.text().starts_with("malformed request body"),
            "{listener:?}: {}",
            response.text()
        );
        bed.backend.received.lock().unwrap().clear();
    }
    bed.settled().await;
}
