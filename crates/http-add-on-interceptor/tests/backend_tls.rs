//! TLS to backends: requests from the TLS listener and to `appProtocol: https` ports go out
//! over HTTPS with SNI = the Service host, verified against the system's roots plus
//! `KEDA_HTTP_TLS_CA_DIRS` (or not at all with skip-verify); `appProtocol: h2` backends get
//! HTTP/2 over TLS (gRPC); a failed handshake is a 502 naming the cause; the TLS policy
//! (versions, suites, curves) applies to the listener and to backends.
//!
//! Certificates are made here with rcgen: a test CA and leaf certificates it signs.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::{DialProxy, Reply, World, hso};
use http::{Request, Response, StatusCode};
use http_add_on_interceptor::Config;
use http_add_on_interceptor::backend_tls::BackendTlsConfig;
use http_add_on_interceptor::config::TlsConfig;
use http_add_on_interceptor::tls_policy::{TlsPolicy, TlsVersion};
use http_add_on_types::config::Env;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, SupportedProtocolVersion};

/// A test CA and what it signs.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and its key.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Ca {
    /// A CA whose name is `name`.
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Self { issuer }
    }

    /// A server certificate for `name`.
    fn leaf(&self, name: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// A fresh directory holding this CA's certificate (and a file that is not PEM, which is
    /// skipped), for `KEDA_HTTP_TLS_CA_DIRS`.
    fn dir(&self, test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "http-add-on-backend-ca-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), self.issuer.pem()).unwrap();
        std::fs::write(dir.join("README"), "not a certificate").unwrap();
        dir
    }
}

/// The Service host of Service `svc` in the tests' namespace: the name sent and verified.
fn service_host(svc: &str) -> String {
    format!("{svc}.default.svc")
}

/// An HTTPS backend: answers every request with JSON naming the SNI name, the ALPN protocol,
/// the HTTP version, the path and the Host; counts its TLS connections.
struct TlsBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl TlsBackend {
    async fn start(
        leaf: Leaf,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, count) = (acceptor.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let (_, session) = tls.get_ref();
                    let name = session.server_name().unwrap_or("").to_owned();
                    let alpn = session
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        // An upgrade is accepted and the upgraded connection echoes.
                        let upgrade = req.headers().contains_key("upgrade").then(|| {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = on.await {
                                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                                    let _ = tokio::io::copy(&mut r, &mut w).await;
                                }
                            });
                        });
                        let body = json!({
                            "sni": name,
                            "alpn": alpn,
                            "version": format!("{:?}", req.version()),
                            "path": req.uri().path(),
                            "host": req.headers().get("host").and_then(|v| v.to_str().ok()),
                            "forwarded_proto": req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()),
                        });
                        async move {
                            let mut response =
                                Response::new(Full::new(Bytes::from(body.to_string())));
                            if upgrade.is_some() {
                                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                                response
                                    .headers_mut()
                                    .insert("connection", "upgrade".parse().unwrap());
                                response
                                    .headers_mut()
                                    .insert("upgrade", "echo".parse().unwrap());
                                *response.body_mut() = Full::new(Bytes::new());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, connections }
    }

    /// HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2 and 1.3.
    async fn any(leaf: Leaf) -> Self {
        Self::start(
            leaf,
            rustls::ALL_VERSIONS,
            &[b"h2".as_slice(), b"http/1.1".as_slice()],
        )
        .await
    }
}

/// The TLS listener (fixture certificate for `tls.test`) with `backend_tls` and `policy`.
fn config(backend_tls: BackendTlsConfig, policy: TlsPolicy) -> Config {
    Config {
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..TlsConfig::with_files(
                common::tls_fixture("default.crt"),
                common::tls_fixture("default.key"),
            )
        }),
        tls_policy: policy,
        backend_tls,
        ..Config::for_tests()
    }
}

/// Routes `host` to Service `svc` (port 80, `app_protocol`) whose one endpoint is `addr`.
async fn route(w: &World, svc: &str, host: &str, app_protocol: Option<&str>, addr: SocketAddr) {
    w.expose_addrs(svc, "http", app_protocol, &[addr]).await;
    w.apply_hso(hso(svc, &[host], &[], svc, json!(80))).await;
}

/// A TLS connection to the interceptor's TLS listener (SNI `tls.test`) offering `versions`.
async fn tls_listener_conn(
    w: &World,
    versions: &[&'static SupportedProtocolVersion],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    for cert in CertificateDer::pem_file_iter(common::tls_fixture("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(w.interceptor.tls_addr().expect("TLS listener")).await?;
    tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("tls.test").unwrap(), tcp)
        .await
}

/// GET `path` with `Host: host` through the TLS listener, on a new connection.
async fn https_get(w: &World, host: &str, path: &str) -> Reply {
    let tls = tls_listener_conn(w, rustls::ALL_VERSIONS)
        .await
        .expect("TLS handshake with the listener");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    Reply::read(send.send_request(request).await.unwrap()).await
}

/// Waits until `host` routes through the TLS listener (any answer but the unknown-route 404).
async fn wait_routed_tls(w: &World, host: &str) -> Reply {
    common::eventually(
        &format!("a route for {host} on the TLS listener"),
        || async {
            let reply = https_get(w, host, "/").await;
            (!(reply.status == StatusCode::NOT_FOUND && reply.text().starts_with("no route")))
                .then_some(reply)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_forwards_over_https_trusting_the_ca_dirs_and_pools_connections() {
    let ca = Ca::new("backend TLS test CA");
    let backend = TlsBackend::any(ca.leaf(&service_host("secure"))).await;
    let trust = BackendTlsConfig::new(false, vec![ca.dir("trusted")]);
    let w = World::with_config(config(trust, TlsPolicy::default())).await;
    route(&w, "secure", "secure.test", None, backend.addr).await;

    let reply = wait_routed_tls(&w, "secure.test").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(
        echo["sni"],
        service_host("secure"),
        "SNI = the Service host"
    );
    assert_eq!(echo["alpn"], "http/1.1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["host"], "secure.test", "Host is kept");
    assert_eq!(echo["forwarded_proto"], "https");

    // Later requests (new client connections, so the pool is what is shared) reuse the
    // pooled TLS connection.
    let before = backend.connections.load(Ordering::SeqCst);
    for _ in 0..3 {
        let reply = https_get(&w, "secure.test", "/again").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["path"], "/again");
    }
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        before,
        "no new TLS connection: the pooled one is reused"
    );

    // The plain listener keeps plain HTTP for the same route: the backend speaks only TLS,
    // so that request fails, which shows the TLS was the listener's doing.
    let plain = w.get("secure.test", "/").await;
    assert_eq!(plain.status, StatusCode::BAD_GATEWAY, "{}", plain.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_backend_is_a_502_naming_the_unknown_ca() {
    let ca = Ca::new("backend TLS test CA");
    let backend = TlsBackend::any(ca.leaf(&service_host("untrusted"))).await;
    // Trust another CA only.
    let other = Ca::new("another test CA");
    let trust = BackendTlsConfig::new(false, vec![other.dir("untrusted")]);
    let w = World::with_config(config(trust, TlsPolicy::default())).await;
    route(&w, "untrusted", "untrusted.test", None, backend.addr).await;

    let reply = wait_routed_tls(&w, "untrusted.test").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let text = reply.text();
    assert!(
        text.contains("TLS") && text.contains("unknown CA"),
        "{text}"
    );
    assert!(text.contains(&service_host("untrusted")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_verify_accepts_any_certificate() {
    let ca = Ca::new("backend TLS test CA");
    // Neither trusted nor for the right name.
    let backend = TlsBackend::any(ca.leaf("somewhere.else")).await;
    let w = World::with_config(config(
        BackendTlsConfig::new(true, Vec::new()),
        TlsPolicy::default(),
    ))
    .await;
    route(&w, "anycert", "anycert.test", None, backend.addr).await;
    let reply = wait_routed_tls(&w, "anycert.test").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["sni"], service_host("anycert"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_a_502_naming_the_mismatch() {
    let ca = Ca::new("backend TLS test CA");
    let backend = TlsBackend::any(ca.leaf(&service_host("someone-else"))).await;
    let trust = BackendTlsConfig::new(false, vec![ca.dir("mismatch")]);
    let w = World::with_config(config(trust, TlsPolicy::default())).await;
    route(&w, "mismatch", "mismatch.test", None, backend.addr).await;
    let reply = wait_routed_tls(&w, "mismatch.test").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let text = reply.text();
    assert!(
        text.contains("TLS")
            && text.contains("name mismatch")
            && text.contains(&service_host("mismatch")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_protocol_https_goes_over_tls_from_the_plain_listener_over_both_protocols() {
    let ca = Ca::new("backend TLS test CA");
    let backend = TlsBackend::any(ca.leaf(&service_host("https-port"))).await;
    let trust = BackendTlsConfig::new(false, vec![ca.dir("https-port")]);
    let w = World::with_config(Config {
        backend_tls: trust,
        ..Config::for_tests()
    })
    .await;
    route(&w, "https-port", "port.test", Some("https"), backend.addr).await;
    let reply = w.wait_routed("port.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["sni"], service_host("https-port"));
    assert_eq!(echo["alpn"], "http/1.1");
    assert_eq!(
        echo["forwarded_proto"], "http",
        "the client's side was plain"
    );

    // The same over h2c from the client (the hyper codec's HTTP/1.1-over-TLS client).
    let h2c = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(DialProxy(w.interceptor.proxy_addr()));
    let response = h2c
        .request(
            Request::get("http://port.test/h2c")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/h2c");
    assert_eq!(reply.json()["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_from_the_tls_listener_is_tunnelled_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("backend TLS test CA");
    let backend = TlsBackend::any(ca.leaf(&service_host("upgrade"))).await;
    let trust = BackendTlsConfig::new(false, vec![ca.dir("upgrade")]);
    let w = World::with_config(config(trust, TlsPolicy::default())).await;
    route(&w, "upgrade", "up.test", None, backend.addr).await;
    wait_routed_tls(&w, "up.test").await;

    let mut tls = tls_listener_conn(&w, rustls::ALL_VERSIONS).await.unwrap();
    tls.write_all(
        b"GET /ws HTTP/1.1\r\nHost: up.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tls.read(&mut byte).await.unwrap(), 1, "the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"ping over two TLS hops").await.unwrap();
    let mut echoed = [0u8; 22];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping over two TLS hops");
}

/// A gRPC server (tonic's health service) over TLS with ALPN `h2`.
async fn grpc_tls_backend(leaf: Leaf) -> SocketAddr {
    struct Tls(tokio_rustls::server::TlsStream<TcpStream>);
    impl tonic::transport::server::Connected for Tls {
        type ConnectInfo = ();
        fn connect_info(&self) -> Self::ConnectInfo {}
    }
    impl tokio::io::AsyncRead for Tls {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }
    impl tokio::io::AsyncWrite for Tls {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain, leaf.key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Tls>>(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(Tls(tls))).await;
                }
            });
        }
    });
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_backend_over_tls_is_reached_with_app_protocol_h2() {
    let ca = Ca::new("backend TLS test CA");
    let addr = grpc_tls_backend(ca.leaf(&service_host("grpc-tls"))).await;
    let trust = BackendTlsConfig::new(false, vec![ca.dir("grpc")]);
    let w = World::with_config(Config {
        backend_tls: trust,
        ..Config::for_tests()
    })
    .await;
    route(&w, "grpc-tls", "grpc.test", Some("h2"), addr).await;
    let channel = tonic::transport::Endpoint::from_static("http://grpc.test")
        .connect_with_connector(DialProxy(w.interceptor.proxy_addr()))
        .await
        .expect("gRPC channel to the interceptor");
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = common::eventually("the gRPC health check through the interceptor", || {
        let mut client = client.clone();
        async move {
            client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()
                .map(|r| r.into_inner().status)
        }
    })
    .await;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // A second call goes over the same HTTP/2 TLS connection.
    let again = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a second call");
    assert_eq!(again.into_inner().status, status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls_1_2_on_the_listener_and_at_backends() {
    let ca = Ca::new("backend TLS test CA");
    let tls12_backend = TlsBackend::start(
        ca.leaf(&service_host("old-tls")),
        &[&rustls::version::TLS12],
        &[b"http/1.1".as_slice()],
    )
    .await;
    let policy = TlsPolicy {
        min_version: Some(TlsVersion::Tls13),
        ..TlsPolicy::default()
    };
    let trust = BackendTlsConfig::new(false, vec![ca.dir("old-tls")]);
    let w = World::with_config(config(trust, policy)).await;
    route(&w, "old-tls", "old.test", None, tls12_backend.addr).await;

    // The listener: a TLS 1.2-only client is refused, a TLS 1.3 one is served.
    let refused = tls_listener_conn(&w, &[&rustls::version::TLS12]).await;
    assert!(refused.is_err(), "a TLS 1.2-only client must be refused");
    let reply = wait_routed_tls(&w, "old.test").await;

    // The backend: TLS 1.2 only, so the handshake fails on the protocol version.
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let text = reply.text();
    assert!(
        text.contains("TLS") && text.contains("protocol version"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_policy_values_and_unreadable_ca_dirs_stop_the_start() {
    for (name, value) in [
        ("KEDA_HTTP_TLS_MIN_VERSION", "1.0"),
        ("KEDA_HTTP_TLS_MAX_VERSION", "2"),
        ("KEDA_HTTP_TLS_CIPHER_SUITES", "TLS_RSA_WITH_RC4_128_SHA"),
        ("KEDA_HTTP_TLS_CURVE_PREFERENCES", "CurveP521"),
        ("KEDA_HTTP_TLS_SKIP_VERIFY", "sure"),
        ("KEDA_HTTP_PROXY_TLS_SKIP_VERIFY", "maybe"),
    ] {
        let env = Env::new(std::collections::BTreeMap::from([
            ("KEDA_HTTP_PROXY_PORT", "8080"),
            ("KEDA_HTTP_ADMIN_PORT", "9090"),
            (name, value),
        ]));
        let err = Config::from_env(&env).expect_err(name).to_string();
        assert!(err.contains(name) && err.contains(value), "{err}");
    }

    let sim = http_add_on_sim::Sim::start(http_add_on_sim::SimConfig::apiserver_only())
        .await
        .unwrap();
    let missing = PathBuf::from("/nonexistent/backend-ca");
    let started = http_add_on_interceptor::Interceptor::start(
        Config {
            backend_tls: BackendTlsConfig::new(false, vec![missing.clone()]),
            ..Config::for_tests()
        },
        sim.client(),
    )
    .await;
    let err = started.expect_err("an unreadable CA dir").to_string();
    assert!(
        err.contains("KEDA_HTTP_TLS_CA_DIRS") && err.contains(&missing.display().to_string()),
        "{err}"
    );
}
