//! The TLS proxy listener: HTTPS over HTTP/1.1 and HTTP/2 (ALPN), certificates chosen by SNI
//! from the cert store, `X-Forwarded-Proto: https`, and clear start-up errors for bad files.
//!
//! `tests/fixtures/tls/` holds a throw-away test CA (`ca.crt`, its key discarded) and two leaf
//! certificates it issued: `default.crt` for `tls.test` and `store/sni.crt` for `*.sni.test`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use common::{TestBackend, World, hso};
use http::{Request, StatusCode, Version};
use http_add_on_interceptor::config::TlsConfig;
use http_add_on_interceptor::{Config, Interceptor};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

fn fixture(path: &str) -> PathBuf {
    common::tls_fixture(path)
}

fn tls_config() -> TlsConfig {
    TlsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        certstore_paths: vec![fixture("store")],
        ..TlsConfig::with_files(fixture("default.crt"), fixture("default.key"))
    }
}

fn connector(alpn: &[&[u8]]) -> TlsConnector {
    common::tls_connector(alpn)
}

/// GETs `/` from `addr` over TLS with SNI `host`; returns the status, the HTTP version, the echo
/// body and the DNS names of the certificate the server presented.
async fn https_get(
    addr: SocketAddr,
    host: &str,
    alpn: &[&[u8]],
) -> (StatusCode, Version, Value, Vec<String>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let tls = connector(alpn)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the presented certificate");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let names = webpki::EndEntityCert::try_from(&leaf)
        .unwrap()
        .valid_dns_names()
        .map(str::to_owned)
        .collect();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let request = Request::get(format!("https://{host}/"))
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(request).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut request = request;
        *request.uri_mut() = "/".parse().unwrap();
        send.send_request(request).await.unwrap()
    };
    let (status, version) = (response.status(), response.version());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, version, json, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_http2_with_certificates_chosen_by_sni() {
    let w = World::with_config(Config {
        tls: Some(tls_config()),
        ..Config::for_tests()
    })
    .await;
    let addr = w.interceptor.tls_addr().expect("TLS listener");
    let backend = TestBackend::start("a").await;
    // A plain backend: `appProtocol: http` keeps requests from the TLS listener plain.
    w.expose_with("svc", "http", Some("http"), &[&backend])
        .await;
    w.apply_hso(hso(
        "app",
        &["tls.test", "app.sni.test"],
        &[],
        "svc",
        json!(80),
    ))
    .await;
    w.wait_routed("tls.test", "/").await;

    let (status, version, echo, names) = https_get(addr, "tls.test", &[b"http/1.1"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(names, ["tls.test"]);
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["headers"]["host"], "tls.test");

    let (status, version, echo, names) =
        https_get(addr, "app.sni.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(
        names,
        ["*.sni.test"],
        "the cert store's certificate matches the SNI name"
    );
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // Plain HTTP on the proxy port still says http.
    let plain = w.get("tls.test", "/").await;
    assert_eq!(plain.json()["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_certificates_stop_the_start_naming_the_file() {
    let sim = http_add_on_sim::Sim::start(http_add_on_sim::SimConfig::apiserver_only())
        .await
        .unwrap();
    for (cert, key) in [
        (fixture("missing.crt"), fixture("default.key")),
        (fixture("default.crt"), fixture("store/sni.key")),
        (fixture("default.key"), fixture("default.key")),
    ] {
        let config = Config {
            tls: Some(TlsConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..TlsConfig::with_files(cert.clone(), key.clone())
            }),
            ..Config::for_tests()
        };
        let error = Interceptor::start(config, sim.client())
            .await
            .expect_err("bad certificate files are a start-up error")
            .to_string();
        let named = [&cert, &key]
            .iter()
            .any(|p| error.contains(&p.display().to_string()));
        assert!(named, "{} / {}: {error}", cert.display(), key.display());
    }
}

/// A backend answering every request with a fixed response whose header name case only the
/// fast path keeps (hyper lower-cases header names).
async fn raw_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        buf.drain(..end + 4);
                        let proto = if head.contains("x-forwarded-proto: https") {
                            "https"
                        } else {
                            "http"
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nX-Raw-Case: kept\r\ncontent-length: {}\r\n\r\n{proto}",
                            proto.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http1_takes_the_fast_path_with_keep_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::with_config(Config {
        tls: Some(tls_config()),
        ..Config::for_tests()
    })
    .await;
    let addr = w.interceptor.tls_addr().expect("TLS listener");
    let backend = raw_backend().await;
    // A plain backend: `appProtocol: http` keeps requests from the TLS listener plain.
    w.expose_addrs("raw", "http", Some("http"), &[backend])
        .await;
    w.apply_hso(hso("raw", &["tls.test"], &[], "raw", json!(80)))
        .await;
    w.wait_routed("tls.test", "/").await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector(&[b"http/1.1"])
        .connect(ServerName::try_from("tls.test").unwrap(), tcp)
        .await
        .unwrap();
    for _ in 0..2 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: tls.test\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\nhttps") {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(common::TIMEOUT, tls.read(&mut chunk))
                .await
                .expect("a response in time")
                .unwrap();
            assert!(
                n > 0,
                "connection closed: {}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("X-Raw-Case: kept\r\n"),
            "served by the fast path: {text}"
        );
    }
}
