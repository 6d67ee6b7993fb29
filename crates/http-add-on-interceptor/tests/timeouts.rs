//! Full-duplex relaying and the client-side timeouts: a 64 MiB upload to an echoing backend
//! completes on both listeners; a silent or idle connection, a stalled request body and a
//! client that never reads are each cut off after their timeout, and `/queue` returns to 0.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::{TIMEOUT, World, hso};
use http_add_on_interceptor::Config;
use http_add_on_interceptor::config::TlsConfig;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;

const MIB: usize = 1 << 20;

/// A hyper backend: `/echo` streams the request body back as it arrives (full duplex),
/// `/big` answers 64 MiB, anything else a short `ok`.
async fn echo_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                        let body = match req.uri().path() {
                            "/echo" => req.into_body().boxed(),
                            "/big" => Full::new(Bytes::from(vec![b'b'; 64 * MIB]))
                                .map_err(|never: Infallible| match never {})
                                .boxed(),
                            _ => Full::new(Bytes::from_static(b"ok"))
                                .map_err(|never: Infallible| match never {})
                                .boxed(),
                        };
                        Ok::<_, Infallible>(http::Response::new(body))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

fn fixture(path: &str) -> PathBuf {
    common::tls_fixture(path)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Bed {
    w: World,
    _backend: tokio::task::JoinHandle<()>,
}

impl Bed {
    async fn start(config: Config) -> Self {
        let config = Config {
            tls: Some(TlsConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..TlsConfig::with_files(fixture("default.crt"), fixture("default.key"))
            }),
            ..config
        };
        let w = World::with_config(config).await;
        let (addr, backend) = echo_backend().await;
        // `appProtocol: http`: requests from the TLS listener reach the echo in plain text.
        w.expose_addrs("echo", "http", Some("http"), &[addr]).await;
        w.apply_hso(hso("echo", &["echo.test"], &[], "echo", json!(80)))
            .await;
        w.wait_routed("echo.test", "/").await;
        Self {
            w,
            _backend: backend,
        }
    }

    async fn connect(&self, tls: bool) -> Box<dyn Io> {
        let tcp_addr = if tls {
            self.w.interceptor.tls_addr().unwrap()
        } else {
            self.w.interceptor.proxy_addr()
        };
        let tcp = TcpStream::connect(tcp_addr).await.unwrap();
        if !tls {
            return Box::new(tcp);
        }
        let connector = common::tls_connector(&[]);
        let stream = connector
            .connect(ServerName::try_from("tls.test").unwrap(), tcp)
            .await
            .expect("TLS handshake");
        Box::new(stream)
    }

    async fn settled(&self) {
        self.w.wait_concurrency("default/echo", 0).await;
    }
}

/// Reads until the interceptor closes the connection (within [`TIMEOUT`]); returns the bytes.
async fn read_to_close(stream: &mut Box<dyn Io>) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        let mut chunk = [0u8; 16384];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the interceptor closes the connection after its timeout");
    out
}

fn short_timeouts() -> Config {
    Config {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Some(Duration::from_millis(300)),
        request_body_timeout: Some(Duration::from_millis(300)),
        send_timeout: Some(Duration::from_millis(300)),
        ..Config::for_tests()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_upload_to_an_echoing_backend_completes_full_duplex() {
    let bed = Bed::start(Config::for_tests()).await;
    for tls in [false, true] {
        let io = TokioIo::new(bed.connect(tls).await);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let chunks = futures::stream::iter(
            (0..64).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'u'; MIB])))),
        );
        let request = http::Request::post("/echo")
            .header("host", "echo.test")
            .header("content-length", (64 * MIB).to_string())
            .body(StreamBody::new(chunks))
            .unwrap();
        let response = tokio::time::timeout(TIMEOUT, async {
            let response = send.send_request(request).await.expect("a response");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("the whole echo");
            (status, body.to_bytes())
        })
        .await
        .expect("the upload completes in time");
        assert_eq!(response.0, http::StatusCode::OK, "tls: {tls}");
        assert_eq!(response.1.len(), 64 * MIB, "tls: {tls}");
        assert!(response.1.iter().all(|&b| b == b'u'), "tls: {tls}");
    }
    bed.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed() {
    let bed = Bed::start(short_timeouts()).await;
    for tls in [false, true] {
        // Never sends a byte: closed by the header read timeout, counted from the start.
        let mut silent = bed.connect(tls).await;
        assert!(read_to_close(&mut silent).await.is_empty(), "tls: {tls}");

        // Idle after a response (fast path): closed by the idle timeout.
        let mut idle = bed.connect(tls).await;
        idle.write_all(b"GET / HTTP/1.1\r\nHost: echo.test\r\n\r\n")
            .await
            .unwrap();
        let answered = String::from_utf8(read_to_close(&mut idle).await).unwrap();
        assert!(
            answered.starts_with("HTTP/1.1 200 OK\r\n"),
            "tls: {tls}: {answered}"
        );
        assert!(answered.ends_with("\r\n\r\nok"), "tls: {tls}: {answered}");

        // A head that starts and never ends: 408, then closed.
        let mut partial = bed.connect(tls).await;
        partial
            .write_all(b"GET / HTTP/1.1\r\nHost: ec")
            .await
            .unwrap();
        let answered = String::from_utf8(read_to_close(&mut partial).await).unwrap();
        assert!(
            answered.starts_with("HTTP/1.1 408 "),
            "tls: {tls}: {answered}"
        );
    }
    bed.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_bodies_time_out_and_are_counted_out() {
    let bed = Bed::start(short_timeouts()).await;
    for tls in [false, true] {
        // A small body (read whole before forwarding) that stops: 408, nothing forwarded.
        let mut small = bed.connect(tls).await;
        small
            .write_all(b"POST /echo HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let answered = String::from_utf8(read_to_close(&mut small).await).unwrap();
        assert!(
            answered.starts_with("HTTP/1.1 408 "),
            "tls: {tls}: {answered}"
        );

        // A large body (streamed while it arrives, counted in flight) that stops half-way.
        let mut large = bed.connect(tls).await;
        large
            .write_all(b"POST /echo HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 1000000\r\n\r\n")
            .await
            .unwrap();
        large.write_all(&[b'x'; 100_000]).await.unwrap();
        bed.w.wait_concurrency("default/echo", 1).await;
        let _ = read_to_close(&mut large).await;
        bed.settled().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_and_counted_out() {
    let bed = Bed::start(short_timeouts()).await;
    for tls in [false, true] {
        let mut client = bed.connect(tls).await;
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: echo.test\r\n\r\n")
            .await
            .unwrap();
        // The 64 MiB response fills the socket buffers; the send timeout then gives up.
        bed.w.wait_concurrency("default/echo", 1).await;
        bed.settled().await;
        drop(client);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_busy_ones_are_not() {
    let bed = Bed::start(short_timeouts()).await;
    let tcp = TcpStream::connect(bed.w.interceptor.proxy_addr())
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    // A request that lasts several idle timeouts (its body paced slower than the idle limit
    // in total, faster than the body timeout per piece) keeps the connection open.
    let pieces = Box::pin(futures::stream::unfold(0u32, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"p"))),
            i + 1,
        ))
    }));
    let request = http::Request::post("http://echo.test/echo")
        .body(StreamBody::new(pieces))
        .unwrap();
    let response = send.send_request(request).await.expect("a response");
    let body = response.into_body().collect().await.expect("the echo");
    assert_eq!(body.to_bytes().as_ref(), b"pppppppppp");
    // Then idle: the interceptor closes the connection.
    tokio::time::timeout(TIMEOUT, conn)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
    bed.settled().await;
}
