//! HTTPS for the metrics server, as controller-runtime's secure serving: the certificate pair
//! `tls.crt`/`tls.key` of a directory (re-read when the files change, like controller-runtime's
//! certificate watcher), or without one a self-signed certificate made at start.
//!
//! The self-signed certificate is an ECDSA P-256 X.509 v3 certificate for `localhost`,
//! `127.0.0.1` and `::1`, valid for a year, written in DER by hand with `ring` doing the key
//! generation and signing; that keeps a certificate generator (and its date/ASN.1
//! dependencies) out of the operator for the one certificate it needs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// File name of the certificate (chain) in a certificate directory (controller-runtime's).
pub const CERT_FILE: &str = "tls.crt";
/// File name of the private key in a certificate directory.
pub const KEY_FILE: &str = "tls.key";

/// A TLS setup problem, naming the file when one is involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or used.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate and its private key, both DER.
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The PKCS#8 private key (DER).
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl SelfSigned {
    /// A new self-signed certificate for `localhost`, `127.0.0.1` and `::1`, valid from an hour
    /// ago for a year.
    pub fn generate() -> Result<Self, TlsError> {
        let rng = SystemRandom::new();
        let fail = |what: &str| TlsError::Generate(what.to_owned());
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| fail("key generation failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| fail("the generated key does not load"))?;
        let mut serial = [0u8; 16];
        rng.fill(&mut serial)
            .map_err(|_| fail("no random serial"))?;
        serial[0] &= 0x7f; // positive
        serial[0] |= 0x40; // and without a leading zero byte to strip
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tbs = der::tbs_certificate(
            &serial,
            now - 3600,
            now + 365 * 86_400,
            pair.public_key().as_ref(),
        );
        let signature = pair.sign(&rng, &tbs).map_err(|_| fail("signing failed"))?;
        let cert = der::certificate(&tbs, signature.as_ref());
        Ok(Self {
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()),
        })
    }

    /// The certificate as PEM (what `tls.crt` holds).
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", self.cert.as_ref())
    }

    /// The private key as PEM (what `tls.key` holds).
    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", self.key.secret_pkcs8_der())
    }
}

/// The rustls server configuration of the metrics server (ALPN `http/1.1`): the pair in
/// `cert_dir`, or a fresh self-signed certificate.
pub fn server_config(cert_dir: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver: Arc<dyn ResolvesServerCert> = match cert_dir {
        Some(dir) => Arc::new(DirResolver::new(dir, provider.clone())?),
        None => {
            let own = SelfSigned::generate()?;
            let key = provider
                .key_provider
                .load_private_key(PrivateKeyDer::Pkcs8(own.key))?;
            Arc::new(Fixed(Arc::new(CertifiedKey::new(vec![own.cert], key))))
        }
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// One certificate for every handshake.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The pair of a directory, re-read at the next handshake after either file changed (a
/// renewed Secret); a pair that no longer loads keeps the previous one in use.
#[derive(Debug)]
struct DirResolver {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Stamps, Arc<CertifiedKey>)>,
}

/// Modification times of the certificate and the key file.
type Stamps = (Option<SystemTime>, Option<SystemTime>);

impl DirResolver {
    fn new(dir: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let stamps = (modified(&cert), modified(&key));
        let pair = load_pair(&cert, &key, &provider)?;
        Ok(Self {
            cert,
            key,
            provider,
            current: Mutex::new((stamps, Arc::new(pair))),
        })
    }
}

impl ResolvesServerCert for DirResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != stamps {
            current.0 = stamps;
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    tracing::info!(cert = %self.cert.display(), "metrics certificate reloaded");
                    current.1 = Arc::new(pair);
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics certificate changed but does not load; keeping the previous one");
                }
            }
        }
        Some(current.1.clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
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

/// `bytes` as a PEM block with `label`.
fn pem(label: &str, bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Just enough DER for one self-signed certificate.
mod der {
    /// ecdsa-with-SHA256 (1.2.840.10045.4.3.2).
    const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    /// id-ecPublicKey (1.2.840.10045.2.1).
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// prime256v1 (1.2.840.10045.3.1.7).
    const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// commonName (2.5.4.3).
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    /// subjectAltName (2.5.29.17).
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    /// extKeyUsage (2.5.29.37).
    const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    /// id-kp-serverAuth (1.3.6.1.5.5.7.3.1).
    const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

    /// One TLV.
    pub(super) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    fn oid(id: &[u8]) -> Vec<u8> {
        tlv(0x06, id)
    }

    /// A BIT STRING without unused bits.
    fn bits(content: &[u8]) -> Vec<u8> {
        tlv(0x03, &[&[0u8][..], content].concat())
    }

    /// UTCTime until 2049, GeneralizedTime after (RFC 5280 4.1.2.5).
    fn time(unix: i64) -> Vec<u8> {
        let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let hms = format!("{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60);
        if (1950..2050).contains(&y) {
            tlv(0x17, format!("{:02}{m:02}{d:02}{hms}", y % 100).as_bytes())
        } else {
            tlv(0x18, format!("{y:04}{m:02}{d:02}{hms}").as_bytes())
        }
    }

    /// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
    pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    fn name() -> Vec<u8> {
        let cn = seq(&[oid(COMMON_NAME), tlv(0x0c, b"http-add-on-operator")]);
        seq(&[tlv(0x31, &cn)])
    }

    /// The to-be-signed part for an uncompressed P-256 `public_key`.
    pub(super) fn tbs_certificate(
        serial: &[u8],
        not_before: i64,
        not_after: i64,
        public_key: &[u8],
    ) -> Vec<u8> {
        let algorithm = seq(&[oid(ECDSA_WITH_SHA256)]);
        let spki = seq(&[
            seq(&[oid(EC_PUBLIC_KEY), oid(PRIME256V1)]),
            bits(public_key),
        ]);
        let alt_names = seq(&[
            tlv(0x82, b"localhost"),
            tlv(0x87, &[127, 0, 0, 1]),
            tlv(0x87, &std::net::Ipv6Addr::LOCALHOST.octets()),
        ]);
        let extensions = seq(&[
            seq(&[oid(SUBJECT_ALT_NAME), tlv(0x04, &alt_names)]),
            seq(&[oid(EXT_KEY_USAGE), tlv(0x04, &seq(&[oid(SERVER_AUTH)]))]),
        ]);
        seq(&[
            tlv(0xa0, &tlv(0x02, &[2])), // v3
            tlv(0x02, serial),
            algorithm,
            name(),
            seq(&[time(not_before), time(not_after)]),
            name(),
            spki,
            tlv(0xa3, &extensions),
        ])
    }

    /// The signed certificate.
    pub(super) fn certificate(tbs: &[u8], signature: &[u8]) -> Vec<u8> {
        seq(&[
            tbs.to_vec(),
            seq(&[oid(ECDSA_WITH_SHA256)]),
            bits(signature),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_lengths_encode() {
        assert_eq!(der::civil_from_days(0), (1970, 1, 1));
        assert_eq!(der::civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(der::tlv(4, &[1; 3]), [4, 3, 1, 1, 1]);
        assert_eq!(&der::tlv(4, &[0; 300])[..4], [4, 0x82, 1, 44]);
    }

    #[test]
    fn the_self_signed_certificate_is_valid_for_localhost() {
        let own = SelfSigned::generate().unwrap();
        let cert = webpki::EndEntityCert::try_from(&own.cert).expect("parses as X.509");
        let names: Vec<&str> = cert.valid_dns_names().collect();
        assert_eq!(names, ["localhost"]);
        // It loads back from its PEM, and the key matches the certificate.
        let dir = std::env::temp_dir().join(format!("operator-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CERT_FILE), own.cert_pem()).unwrap();
        std::fs::write(dir.join(KEY_FILE), own.key_pem()).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        load_pair(&dir.join(CERT_FILE), &dir.join(KEY_FILE), &provider).unwrap();
        assert!(server_config(Some(&dir)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = server_config(Some(Path::new("/nonexistent"))).unwrap_err();
        assert!(missing.to_string().contains("tls.crt"), "{missing}");
    }
}
