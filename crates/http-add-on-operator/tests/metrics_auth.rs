//! The operator's metrics server as upstream's (controller-runtime's secure serving) against
//! the simulated API server, whose TokenReview and SubjectAccessReview answer from static
//! tokens and denials: HTTPS with a self-signed certificate or the pair of a directory, bearer
//! tokens checked (401 without a valid one, 403 when the review denies `get` on `/metrics`),
//! plain HTTP and no checks when turned off, and upstream's flags on the real binary.
//!
//! The helpers live here (not in `common`) so the fixtures can move to a shared crate later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_add_on_operator::tls::{CERT_FILE, KEY_FILE, SelfSigned};
use http_add_on_operator::{Config, MetricsServing, Operator};
use http_add_on_sim::apiserver::reviews::{AccessRule, AuthConfig, UserInfo};
use http_add_on_sim::{Sim, SimConfig};
use http_add_on_types::crd::generated_crds;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types};

/// How long anything may take.
const DEADLINE: Duration = Duration::from_secs(20);
/// A token the simulated cluster authenticates as Prometheus' service account.
const READER_TOKEN: &str = "prometheus-token";
/// A token of a user the simulated cluster denies `get` on `/metrics`.
const DENIED_TOKEN: &str = "intruder-token";
const DENIED_USER: &str = "system:serviceaccount:apps:intruder";

/// A simulated API server (no controllers) with the add-on's CRDs, the two static tokens and
/// the denial of [`DENIED_USER`].
async fn cluster() -> Sim {
    let mut tokens = BTreeMap::new();
    tokens.insert(
        READER_TOKEN.to_owned(),
        UserInfo::new("system:serviceaccount:monitoring:prometheus", &[]),
    );
    tokens.insert(DENIED_TOKEN.to_owned(), UserInfo::new(DENIED_USER, &[]));
    let sim = Sim::start(SimConfig {
        auth: AuthConfig {
            tokens,
            deny: vec![AccessRule {
                user: DENIED_USER.to_owned(),
                verb: "get".to_owned(),
                resource: "/metrics".to_owned(),
            }],
        },
        ..SimConfig::apiserver_only()
    })
    .await
    .expect("sim starts");
    sim.create_namespace("keda")
        .await
        .expect("namespace created");
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    for (_, crd) in generated_crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD is accepted");
    }
    sim
}

/// An in-process operator whose metrics server serves as `serving`, with one reconciliation
/// recorded (so a scrape has a [`SAMPLE`] to show).
async fn operator(sim: &Sim, serving: MetricsServing) -> Operator {
    let mut config = Config::new("keda-add-ons-http-external-scaler");
    config.health_address = "127.0.0.1:0".parse().unwrap();
    config.metrics_address = "127.0.0.1:0".parse().unwrap();
    config.metrics_serving = serving;
    let op = Operator::start(sim.client(), config)
        .await
        .expect("operator starts");
    op.metrics()
        .reconciled("httpscaledobject", true, Duration::from_millis(1));
    op
}

/// Accepts any server certificate (checking only the handshake signatures), as a scraper with
/// `insecureSkipVerify` does for the self-signed certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &pki_types::CertificateDer<'_>,
        _: &[pki_types::CertificateDer<'_>],
        _: &pki_types::ServerName<'_>,
        _: &[u8],
        _: pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a scrape connects.
enum Transport {
    /// Plain HTTP.
    Plain,
    /// HTTPS accepting any certificate.
    Insecure,
    /// HTTPS trusting only `root`, for the name `localhost`.
    Trusting(pki_types::CertificateDer<'static>),
}

fn client_config(transport: &Transport) -> Option<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let config = match transport {
        Transport::Plain => return None,
        Transport::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Transport::Trusting(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root.clone()).expect("root is a certificate");
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Some(Arc::new(config))
}

/// Sends one `GET path` with `token` (as a bearer token) and reads the whole response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A peer closing without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {raw:?}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Scrapes `/metrics` at `addr` over `transport`; an error when the connection or the TLS
/// handshake fails.
async fn scrape(
    addr: SocketAddr,
    transport: &Transport,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        match client_config(transport) {
            None => exchange(tcp, "/metrics", token).await,
            Some(config) => {
                let name = pki_types::ServerName::try_from("localhost").expect("a DNS name");
                let tls = TlsConnector::from(config).connect(name, tcp).await?;
                exchange(tls, "/metrics", token).await
            }
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .map_err(|_| std::io::Error::other("scrape timed out"))?
}

/// The sample [`operator`] records, as the metrics text has it.
const SAMPLE: &str =
    r#"controller_runtime_reconcile_total{controller="httpscaledobject",result="success"} 1"#;

/// The operator's metrics in the OpenMetrics text format, with [`SAMPLE`].
fn assert_metrics(body: &str) {
    assert!(
        body.contains(SAMPLE) && body.trim_end().ends_with("# EOF"),
        "not the operator's metrics: {body}"
    );
}

#[tokio::test]
async fn https_with_a_valid_token_serves_metrics_and_refuses_others() {
    let sim = cluster().await;
    let op = operator(&sim, MetricsServing::secure()).await;
    let addr = op.metrics_addr();

    let (code, body) = scrape(addr, &Transport::Insecure, Some(READER_TOKEN))
        .await
        .expect("HTTPS scrape");
    assert_eq!(code, 200, "{body}");
    assert_metrics(&body);

    let (code, body) = scrape(addr, &Transport::Insecure, None).await.unwrap();
    assert_eq!((code, body.as_str()), (401, "Unauthorized"));
    let (code, _) = scrape(addr, &Transport::Insecure, Some("not-a-token"))
        .await
        .unwrap();
    assert_eq!(code, 401);

    let (code, body) = scrape(addr, &Transport::Insecure, Some(DENIED_TOKEN))
        .await
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(DENIED_USER), "{body}");
    assert!(!body.contains("controller_runtime"), "{body}");

    // The secure server speaks no plain HTTP.
    let plain = scrape(addr, &Transport::Plain, Some(READER_TOKEN)).await;
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP reached the metrics: {plain:?}"
    );
    op.shutdown().await;
}

#[tokio::test]
async fn a_service_account_token_from_a_token_request_is_accepted() {
    let sim = cluster().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(sim.client(), "keda");
    let account: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "scraper"}
    }))
    .unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {"audiences": []}
    }))
    .unwrap();
    let issued = accounts
        .create_token_request("scraper", &PostParams::default(), &request)
        .await
        .expect("token issued");
    let token = issued.status.expect("token status").token;

    let op = operator(&sim, MetricsServing::secure()).await;
    let (code, body) = scrape(op.metrics_addr(), &Transport::Insecure, Some(&token))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_metrics(&body);
    op.shutdown().await;
}

#[tokio::test]
async fn plain_http_when_not_secure_still_checks_tokens() {
    let sim = cluster().await;
    let op = operator(
        &sim,
        MetricsServing {
            secure: false,
            ..MetricsServing::secure()
        },
    )
    .await;
    let addr = op.metrics_addr();
    let (code, body) = scrape(addr, &Transport::Plain, Some(READER_TOKEN))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_metrics(&body);
    assert_eq!(scrape(addr, &Transport::Plain, None).await.unwrap().0, 401);
    assert_eq!(
        scrape(addr, &Transport::Plain, Some(DENIED_TOKEN))
            .await
            .unwrap()
            .0,
        403
    );
    assert!(
        scrape(addr, &Transport::Insecure, Some(READER_TOKEN))
            .await
            .is_err(),
        "a TLS handshake with the plain server must fail"
    );
    op.shutdown().await;
}

#[tokio::test]
async fn without_auth_no_token_is_needed() {
    let sim = cluster().await;
    let op = operator(
        &sim,
        MetricsServing {
            auth: false,
            ..MetricsServing::secure()
        },
    )
    .await;
    let (code, body) = scrape(op.metrics_addr(), &Transport::Insecure, None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_metrics(&body);
    op.shutdown().await;

    let op = operator(&sim, MetricsServing::plain()).await;
    let (code, body) = scrape(op.metrics_addr(), &Transport::Plain, Some(DENIED_TOKEN))
        .await
        .unwrap();
    assert_eq!(code, 200, "a token is not even looked at: {body}");
    op.shutdown().await;
}

/// A fresh temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "operator-metrics-{name}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_certificate_of_cert_dir_is_served_and_reloaded() {
    let sim = cluster().await;
    let dir = temp_dir("certs");
    let first = SelfSigned::generate().unwrap();
    std::fs::write(dir.join(CERT_FILE), first.cert_pem()).unwrap();
    std::fs::write(dir.join(KEY_FILE), first.key_pem()).unwrap();
    let op = operator(
        &sim,
        MetricsServing {
            cert_dir: Some(dir.clone()),
            ..MetricsServing::secure()
        },
    )
    .await;
    let addr = op.metrics_addr();
    let trusting_first = Transport::Trusting(first.cert.clone());
    let (code, _) = scrape(addr, &trusting_first, Some(READER_TOKEN))
        .await
        .expect("the served certificate is the directory's");
    assert_eq!(code, 200);
    let other = SelfSigned::generate().unwrap();
    let trusting_other = Transport::Trusting(other.cert.clone());
    assert!(
        scrape(addr, &trusting_other, Some(READER_TOKEN))
            .await
            .is_err(),
        "a client trusting another certificate must fail the handshake"
    );

    // A renewed pair (a rotated Secret) is served from the next handshake on.
    std::fs::write(dir.join(KEY_FILE), other.key_pem()).unwrap();
    std::fs::write(dir.join(CERT_FILE), other.cert_pem()).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if scrape(addr, &trusting_other, Some(READER_TOKEN))
            .await
            .is_ok_and(|(code, _)| code == 200)
        {
            break;
        }
        // File times can be coarse: touch the files again until the change is seen.
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(dir.join(KEY_FILE), other.key_pem()).unwrap();
        std::fs::write(dir.join(CERT_FILE), other.cert_pem()).unwrap();
    }
    op.shutdown().await;

    // A directory without the pair is a startup error naming the file.
    let empty = temp_dir("empty");
    let mut config = Config::new("scaler");
    config.health_address = "127.0.0.1:0".parse().unwrap();
    config.metrics_address = "127.0.0.1:0".parse().unwrap();
    config.metrics_serving.secure = true;
    config.metrics_serving.cert_dir = Some(empty.clone());
    let err = Operator::start(sim.client(), config).await.unwrap_err();
    assert!(err.to_string().contains(CERT_FILE), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_takes_upstreams_flags_over_the_environment() {
    let sim = cluster().await;
    let (metrics, health) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_operator"))
        .args([
            format!("--metrics-bind-address=127.0.0.1:{metrics}"),
            format!("--health-probe-bind-address=127.0.0.1:{health}"),
            "--metrics-secure".to_owned(),
            "--zap-log-level=info".to_owned(),
        ])
        .env("KUBECONFIG", sim.kubeconfig_path())
        .env(
            "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
            "keda-add-ons-http-external-scaler",
        )
        .env("KEDA_HTTP_OPERATOR_NAMESPACE", "keda")
        .env("KEDA_HTTP_OPERATOR_LEADER_ELECTION", "false")
        // The flag wins over the variable.
        .env("KEDA_HTTP_OPERATOR_METRICS_SECURE", "false")
        .kill_on_drop(true)
        .spawn()
        .expect("the operator binary starts");
    let addr: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (code, body) = loop {
        match scrape(addr, &Transport::Insecure, Some(READER_TOKEN)).await {
            Ok(answer) => break answer,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the binary's metrics never answered over HTTPS: {error}"
                );
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("the operator exited: {status}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(code, 200, "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert_eq!(
        scrape(addr, &Transport::Insecure, None).await.unwrap().0,
        401,
        "auth is on by default"
    );
    child.kill().await.unwrap();

    // A flag it does not know is a startup error naming it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("--metrics-secret=true")
        .env("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "scaler")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-secret"), "{stderr}");
}
