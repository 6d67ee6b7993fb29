//! Certificates of the TLS proxy listener: a default chain plus chains from certificate store
//! directories chosen by the client's SNI name, reloaded when their files change (Kubernetes
//! updates mounted Secrets in place, e.g. when cert-manager renews them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::TlsConfig;
use crate::tls_policy::TlsPolicy;

/// How often the certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// Why the certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("TLS certificate {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS settings were rejected.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The loaded certificates.
#[derive(Debug)]
struct Certs {
    default: Arc<CertifiedKey>,
    /// Lower-case DNS names (`*.example.com` for wildcards) → chain.
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// Every file read, with its modification time, to notice changes.
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
}

/// Chooses the certificate for each handshake.
#[derive(Debug)]
pub(crate) struct Resolver {
    certs: ArcSwap<Certs>,
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let Some(name) = hello.server_name() else {
            return Some(certs.default.clone());
        };
        let name = name.to_ascii_lowercase();
        let wildcard = name
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        certs
            .by_name
            .get(&name)
            .or_else(|| wildcard.and_then(|w| certs.by_name.get(&w)))
            .or(Some(&certs.default))
            .cloned()
    }
}

/// The rustls server configuration of the TLS listener (ALPN `h2`, `http/1.1`; versions,
/// suites and groups of `policy`) and its resolver, or an error naming the file that failed.
pub(crate) fn server_config(
    config: &TlsConfig,
    policy: &TlsPolicy,
) -> Result<(Arc<rustls::ServerConfig>, Arc<Resolver>), TlsError> {
    let provider = policy.shared_provider();
    let certs = load(config, &provider)?;
    let resolver = Arc::new(Resolver {
        certs: ArcSwap::from_pointee(certs),
        config: config.clone(),
        provider: provider.clone(),
    });
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&policy.versions())?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(server), resolver))
}

/// Reloads the certificates whenever their files change, until `stop`; a failed reload keeps
/// the previous certificates and is logged.
pub(crate) async fn watch_files(resolver: Arc<Resolver>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(RELOAD_CHECK) => {}
        }
        reload_if_changed(&resolver);
    }
}

/// Reloads the certificates if any file was changed, added or removed; whether new ones are in
/// use. A failed load keeps the previous certificates (and is logged).
fn reload_if_changed(resolver: &Resolver) -> bool {
    let changed = {
        let certs = resolver.certs.load();
        certs
            .stamps
            .iter()
            .any(|(path, stamp)| modified(path) != *stamp)
            || store_files(&resolver.config).len() + 2 != certs.stamps.len()
    };
    if !changed {
        return false;
    }
    match load(&resolver.config, &resolver.provider) {
        Ok(certs) => {
            tracing::info!(names = certs.by_name.len(), "TLS certificates reloaded");
            resolver.certs.store(Arc::new(certs));
            true
        }
        Err(error) => {
            tracing::warn!(%error, "TLS certificates changed but could not be reloaded; keeping the previous ones");
            false
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The `<name>.crt` / `<name>.key` pairs (also `.pem` for the chain) of the cert store.
fn store_files(config: &TlsConfig) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in &config.certstore_paths {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("crt" | "pem" | "key")
                )
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn load(config: &TlsConfig, provider: &CryptoProvider) -> Result<Certs, TlsError> {
    let default = Arc::new(load_pair(&config.cert_path, &config.key_path, provider)?);
    let mut stamps = vec![
        (config.cert_path.clone(), modified(&config.cert_path)),
        (config.key_path.clone(), modified(&config.key_path)),
    ];
    let mut by_name = HashMap::new();
    for file in store_files(config) {
        stamps.push((file.clone(), modified(&file)));
        if file.extension().and_then(|e| e.to_str()) == Some("key") {
            continue;
        }
        let key = file.with_extension("key");
        if !key.exists() {
            tracing::warn!(cert = %file.display(), "no matching .key file; skipped");
            continue;
        }
        let pair = Arc::new(load_pair(&file, &key, provider)?);
        for name in dns_names(&pair)? {
            by_name.entry(name).or_insert_with(|| pair.clone());
        }
    }
    Ok(Certs {
        default,
        by_name,
        stamps,
    })
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert, e))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no PEM certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| file_error(key, e))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| file_error(key, e))?;
    Ok(pair)
}

/// The DNS names (lower case) of the leaf certificate of `pair`.
fn dns_names(pair: &CertifiedKey) -> Result<Vec<String>, TlsError> {
    let leaf = pair.end_entity_cert().map_err(TlsError::Config)?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(cert
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(path)
    }

    fn names(resolver: &Resolver) -> Vec<String> {
        let mut names: Vec<String> = resolver.certs.load().by_name.keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn cert_store_changes_are_picked_up_and_bad_files_keep_the_old_ones() {
        let store =
            std::env::temp_dir().join(format!("http-add-on-tls-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).unwrap();
        let config = TlsConfig {
            certstore_paths: vec![store.clone()],
            ..TlsConfig::with_files(fixture("default.crt"), fixture("default.key"))
        };
        let (_, resolver) = server_config(&config, &TlsPolicy::default()).unwrap();
        assert!(names(&resolver).is_empty());
        assert!(!reload_if_changed(&resolver), "nothing changed yet");

        // A pair added to the store is served after the next check.
        std::fs::copy(fixture("store/sni.crt"), store.join("app.crt")).unwrap();
        std::fs::copy(fixture("store/sni.key"), store.join("app.key")).unwrap();
        assert!(reload_if_changed(&resolver));
        assert_eq!(names(&resolver), ["*.sni.test"]);

        // A broken pair makes the reload fail: the certificates in use stay.
        std::fs::write(store.join("broken.crt"), "not a certificate").unwrap();
        std::fs::copy(fixture("store/sni.key"), store.join("broken.key")).unwrap();
        assert!(!reload_if_changed(&resolver));
        assert_eq!(names(&resolver), ["*.sni.test"]);

        // Fixed by removing it: the store is read again.
        std::fs::remove_file(store.join("broken.crt")).unwrap();
        std::fs::remove_file(store.join("broken.key")).unwrap();
        std::fs::remove_file(store.join("app.crt")).unwrap();
        std::fs::remove_file(store.join("app.key")).unwrap();
        assert!(reload_if_changed(&resolver));
        assert!(names(&resolver).is_empty());
        let _ = std::fs::remove_dir_all(&store);
    }
}
