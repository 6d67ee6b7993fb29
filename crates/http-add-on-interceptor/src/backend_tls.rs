//! TLS to backends: the client configurations (trust = the system's roots plus every PEM
//! certificate in `KEDA_HTTP_TLS_CA_DIRS`, or no verification with `KEDA_HTTP_TLS_SKIP_VERIFY`;
//! versions, suites and groups from the [`TlsPolicy`]), the connection type both codecs pool
//! ([`BackendStream`], plain or TLS), and the handshake, whose failure says why (unknown CA,
//! name mismatch, protocol version, …) in the 502 and in a warning.
//!
//! Which requests go out over TLS is decided by [`crate::backends::BackendState::wire`].

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http_add_on_types::config::{ConfigError, Env, EnvSource};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::config::Config;
use crate::tls_policy::TlsPolicy;

/// `KEDA_HTTP_TLS_CA_DIRS`: comma-separated directories of PEM CA certificates.
pub const CA_DIRS: &str = "KEDA_HTTP_TLS_CA_DIRS";
/// `KEDA_HTTP_TLS_SKIP_VERIFY`: do not verify backends' certificates.
pub const SKIP_VERIFY: &str = "KEDA_HTTP_TLS_SKIP_VERIFY";
/// Upstream's older spelling of [`SKIP_VERIFY`]; it wins while set, as upstream.
pub const SKIP_VERIFY_DEPRECATED: &str = "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY";

/// Longest TLS handshake with a backend (Go's `TLSHandshakeTimeout` default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the interceptor trusts backends' certificates. The client configurations are built
/// once ([`BackendTlsConfig::prepare`], at start) and shared by every clone.
#[derive(Clone, Default)]
pub struct BackendTlsConfig {
    /// Accept any certificate (`KEDA_HTTP_TLS_SKIP_VERIFY`, alias
    /// `KEDA_HTTP_PROXY_TLS_SKIP_VERIFY`, false).
    pub skip_verify: bool,
    /// Directories whose PEM certificates are trusted besides the system's roots
    /// (`KEDA_HTTP_TLS_CA_DIRS`, comma-separated, empty).
    pub ca_dirs: Vec<PathBuf>,
    clients: Arc<OnceLock<Clients>>,
}

impl std::fmt::Debug for BackendTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTlsConfig")
            .field("skip_verify", &self.skip_verify)
            .field("ca_dirs", &self.ca_dirs)
            .finish()
    }
}

impl PartialEq for BackendTlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.skip_verify == other.skip_verify && self.ca_dirs == other.ca_dirs
    }
}

impl Eq for BackendTlsConfig {}

/// Why the backend TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    /// A CA directory or file could not be read.
    #[error("{CA_DIRS}: {path}: {reason}")]
    CaFile {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls rejected the settings.
    #[error("TLS to backends: {0}")]
    Config(#[from] rustls::Error),
}

/// The client configurations: HTTP/1.1 over TLS (ALPN `http/1.1`) and HTTP/2 over TLS
/// (ALPN `h2`).
#[derive(Debug)]
pub(crate) struct Clients {
    pub http1: Arc<ClientConfig>,
    pub h2: Arc<ClientConfig>,
}

impl BackendTlsConfig {
    /// Settings with these values.
    pub fn new(skip_verify: bool, ca_dirs: Vec<PathBuf>) -> Self {
        Self {
            skip_verify,
            ca_dirs,
            clients: Arc::default(),
        }
    }

    /// Reads `KEDA_HTTP_TLS_SKIP_VERIFY` (or `KEDA_HTTP_PROXY_TLS_SKIP_VERIFY`, which wins
    /// while set) and `KEDA_HTTP_TLS_CA_DIRS`.
    pub fn from_env<S: EnvSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let skip_verify = if env.string(SKIP_VERIFY_DEPRECATED).is_some() {
            tracing::warn!(
                variable = SKIP_VERIFY_DEPRECATED,
                replacement = SKIP_VERIFY,
                "deprecated environment variable (it takes precedence while set)"
            );
            env.bool(SKIP_VERIFY_DEPRECATED, false)?
        } else {
            env.bool(SKIP_VERIFY, false)?
        };
        let ca_dirs = env
            .string(CA_DIRS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(Self::new(skip_verify, ca_dirs))
    }

    /// Builds the client configurations under `policy` (once; later calls do nothing),
    /// reading the CA directories; logs a warning when verification is off.
    pub fn prepare(&self, policy: &TlsPolicy) -> Result<(), BackendTlsError> {
        if self.clients.get().is_some() {
            return Ok(());
        }
        let clients = build(policy, self.skip_verify, &self.ca_dirs)?;
        if self.skip_verify {
            tracing::warn!(
                "{SKIP_VERIFY} is on: certificates of HTTPS backends are not verified, so \
                 anyone on the path to a backend can read and change its traffic"
            );
        }
        let _ = self.clients.set(clients);
        Ok(())
    }

    /// The client configurations (built now, without the CA directories if they fail to
    /// load, when [`BackendTlsConfig::prepare`] was not called).
    pub(crate) fn clients(&self, policy: &TlsPolicy) -> &Clients {
        self.clients
            .get_or_init(|| match build(policy, self.skip_verify, &self.ca_dirs) {
                Ok(clients) => clients,
                Err(error) => {
                    tracing::warn!(%error, "TLS to backends: CA directories skipped");
                    build(policy, self.skip_verify, &[]).unwrap_or_else(|error| {
                        panic!("TLS to backends without CA directories: {error}")
                    })
                }
            })
    }
}

impl Config {
    /// The TLS client configurations for backends under this configuration's policy.
    pub(crate) fn backend_clients(&self) -> &Clients {
        self.backend_tls.clients(&self.tls_policy)
    }
}

fn build(
    policy: &TlsPolicy,
    skip_verify: bool,
    ca_dirs: &[PathBuf],
) -> Result<Clients, BackendTlsError> {
    let provider = policy.shared_provider();
    let verifier: Arc<dyn ServerCertVerifier> = if skip_verify {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let roots = roots(ca_dirs)?;
        if roots.is_empty() {
            tracing::warn!(
                "TLS to backends: no trusted CA certificate (none in the system, none in \
                 {CA_DIRS}); every HTTPS backend will fail as unknown CA"
            );
            Arc::new(NoRoots(provider.clone()))
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?
        }
    };
    let config = |alpn: &[u8]| -> Result<Arc<ClientConfig>, rustls::Error> {
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&policy.versions())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    };
    Ok(Clients {
        http1: config(b"http/1.1")?,
        h2: config(b"h2")?,
    })
}

/// The system's roots plus every PEM certificate in the files of `dirs`.
fn roots(dirs: &[PathBuf]) -> Result<RootCertStore, BackendTlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "reading the system's CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system CA certificates");
    for dir in dirs {
        let ca_error = |path: &Path, reason: String| BackendTlsError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| ca_error(dir, e.to_string()))?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            // Hidden entries are a mounted volume's bookkeeping (`..data`, `..2024_…`).
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
                    && p.is_file()
            })
            .collect();
        files.sort();
        for file in files {
            let certs = CertificateDer::pem_file_iter(&file)
                .map_err(|e| ca_error(&file, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_error(&file, e.to_string()))?;
            if certs.is_empty() {
                tracing::debug!(file = %file.display(), "no PEM certificate; skipped");
                continue;
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ca_error(&file, format!("not a CA certificate: {e}")))?;
            }
        }
    }
    Ok(roots)
}

/// Accepts any certificate (`KEDA_HTTP_TLS_SKIP_VERIFY`); the handshake's signatures are
/// still checked, so the connection is encrypted, only not authenticated.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Trusts nothing: no CA certificate was found anywhere.
#[derive(Debug)]
struct NoRoots(Arc<CryptoProvider>);

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        NoVerification(self.0.clone()).verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        NoVerification(self.0.clone()).verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to a backend, plain or TLS; both codecs pool it.
#[derive(Debug)]
pub enum BackendStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether it is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// The protocol the backend chose by ALPN, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS side of a connection to make: the client configuration and the name to send
/// (SNI) and verify.
#[derive(Clone, Copy)]
pub(crate) struct TlsTarget<'a> {
    pub config: &'a Arc<ClientConfig>,
    pub name: &'a ServerName<'static>,
}

/// Why a connection to a backend could not be made.
pub(crate) enum ConnectError {
    /// TCP failed (nothing was sent): another endpoint may be tried.
    Tcp(io::Error),
    /// The TLS handshake failed: the request is answered 502 with this.
    Tls(TlsFailure),
}

/// A failed TLS handshake with a backend and its cause, as the 502 and the log say it.
#[derive(Debug, Clone)]
pub(crate) struct TlsFailure {
    addr: SocketAddr,
    name: String,
    cause: String,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TLS handshake with backend {} ({}) failed: {}",
            self.addr, self.name, self.cause
        )
    }
}

/// A TCP connection to `addr` within `timeout`, with a TLS handshake on it for `tls`.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<TlsTarget<'_>>,
) -> Result<BackendStream, ConnectError> {
    let tcp = crate::h1::connect(addr, timeout)
        .await
        .map_err(ConnectError::Tcp)?;
    let Some(target) = tls else {
        return Ok(BackendStream::Plain(tcp));
    };
    let connector = TlsConnector::from(target.config.clone());
    let handshake = connector.connect(target.name.clone(), tcp);
    let cause = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => return Ok(BackendStream::Tls(Box::new(stream))),
        Ok(Err(error)) => cause(&error, target),
        Err(_) => format!(
            "timed out after {}s without the backend's answer",
            HANDSHAKE_TIMEOUT.as_secs()
        ),
    };
    let failure = TlsFailure {
        addr,
        name: target.name.to_str().into_owned(),
        cause,
    };
    tracing::warn!(backend = %failure.addr, server_name = failure.name, cause = failure.cause, "TLS handshake with a backend failed");
    Err(ConnectError::Tls(failure))
}

/// What a failed handshake's error says, in the words an operator needs.
fn cause(error: &io::Error, target: TlsTarget<'_>) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => {
                "the backend closed the connection during the handshake".to_owned()
            }
            _ => error.to_string(),
        };
    };
    let name = target.name.to_str();
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "unknown CA: the backend's certificate is not signed by a CA the interceptor \
             trusts (the system's roots and KEDA_HTTP_TLS_CA_DIRS)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("name mismatch: the backend's certificate is not valid for {name}"),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the backend's certificate has expired".to_owned(),
        rustls::Error::InvalidCertificate(other) => {
            format!("the backend's certificate is invalid: {other:?}")
        }
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) => protocol_version(),
        rustls::Error::PeerIncompatible(why) => {
            let why = format!("{why:?}");
            if why.contains("Tls1") || why.contains("Version") {
                protocol_version()
            } else {
                format!(
                    "no parameters in common ({why}; see KEDA_HTTP_TLS_CIPHER_SUITES and \
                     KEDA_HTTP_TLS_CURVE_PREFERENCES)"
                )
            }
        }
        rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity,
        ) => "the backend refused the handshake: no cipher suite or curve in common (see \
              KEDA_HTTP_TLS_CIPHER_SUITES and KEDA_HTTP_TLS_CURVE_PREFERENCES)"
            .to_owned(),
        rustls::Error::NoApplicationProtocol
        | rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol) => {
            let offered: Vec<String> = target
                .config
                .alpn_protocols
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            format!(
                "no application protocol in common (offered by ALPN: {})",
                offered.join(", ")
            )
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the backend did not answer with TLS (a plain HTTP port? then its Service port's \
             appProtocol should be http)"
                .to_owned()
        }
        other => other.to_string(),
    }
}

fn protocol_version() -> String {
    "protocol version: the backend speaks none of the TLS versions allowed (see \
     KEDA_HTTP_TLS_MIN_VERSION and KEDA_HTTP_TLS_MAX_VERSION)"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn skip_verify_and_ca_dirs_are_read_with_the_older_spelling_winning() {
        let read = |pairs: &[(&'static str, &'static str)]| {
            BackendTlsConfig::from_env(&Env::new(pairs.iter().copied().collect::<BTreeMap<_, _>>()))
        };
        assert_eq!(read(&[]).unwrap(), BackendTlsConfig::default());
        let c = read(&[(SKIP_VERIFY, "true"), (CA_DIRS, "/a, /b,")]).unwrap();
        assert!(c.skip_verify);
        assert_eq!(c.ca_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        let c = read(&[(SKIP_VERIFY, "true"), (SKIP_VERIFY_DEPRECATED, "false")]).unwrap();
        assert!(!c.skip_verify);
        let err = read(&[(SKIP_VERIFY_DEPRECATED, "yes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(SKIP_VERIFY_DEPRECATED), "{err}");
    }

    #[test]
    fn an_unreadable_ca_dir_names_the_variable_and_the_dir() {
        let config = BackendTlsConfig::new(false, vec![PathBuf::from("/nonexistent/ca-dir")]);
        let err = config
            .prepare(&TlsPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(CA_DIRS) && err.contains("/nonexistent/ca-dir"),
            "{err}"
        );
    }
}
