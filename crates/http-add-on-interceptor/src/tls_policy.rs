//! The TLS policy of the TLS listener and of connections to backends: the allowed versions,
//! cipher suites and key-exchange groups, named as upstream (Go's `crypto/tls` names) and
//! mapped to rustls's ring provider. A name rustls cannot honour is a start-up error naming
//! the variable and the value.

use std::sync::Arc;

use http_add_on_types::config::{ConfigError, Env, EnvSource};
use tokio_rustls::rustls::crypto::{CryptoProvider, SupportedKxGroup, ring};
use tokio_rustls::rustls::{self, SupportedCipherSuite, SupportedProtocolVersion};

/// `KEDA_HTTP_TLS_MIN_VERSION` (deprecated: `KEDA_HTTP_PROXY_TLS_MIN_VERSION`).
pub const MIN_VERSION: &str = "KEDA_HTTP_TLS_MIN_VERSION";
/// `KEDA_HTTP_TLS_MAX_VERSION` (deprecated: `KEDA_HTTP_PROXY_TLS_MAX_VERSION`).
pub const MAX_VERSION: &str = "KEDA_HTTP_TLS_MAX_VERSION";
/// `KEDA_HTTP_TLS_CIPHER_SUITES` (deprecated: `KEDA_HTTP_PROXY_TLS_CIPHER_SUITES`).
pub const CIPHER_SUITES: &str = "KEDA_HTTP_TLS_CIPHER_SUITES";
/// `KEDA_HTTP_TLS_CURVE_PREFERENCES` (deprecated: `KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES`).
pub const CURVE_PREFERENCES: &str = "KEDA_HTTP_TLS_CURVE_PREFERENCES";

/// A TLS protocol version rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (`1.2`).
    Tls12,
    /// TLS 1.3 (`1.3`).
    Tls13,
}

impl TlsVersion {
    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            Self::Tls12 => &rustls::version::TLS12,
            Self::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// The TLS policy; empty fields keep rustls's defaults (TLS 1.2 and 1.3, every suite and
/// group of the ring provider, X25519 first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Lowest version allowed.
    pub min_version: Option<TlsVersion>,
    /// Highest version allowed.
    pub max_version: Option<TlsVersion>,
    /// Allowed cipher suites by Go name, in order of preference. A version none of whose
    /// suites is listed keeps its default suites (Go does the same for TLS 1.3, whose suites
    /// it does not let one choose).
    pub cipher_suites: Vec<&'static str>,
    /// Key-exchange groups by Go name, in order of preference.
    pub curve_preferences: Vec<&'static str>,
}

/// Go's cipher suite names (with Go's short aliases) and the ring provider's suite for each.
fn cipher_suite(name: &str) -> Option<(&'static str, SupportedCipherSuite)> {
    use ring::cipher_suite as s;
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => ("TLS_AES_128_GCM_SHA256", s::TLS13_AES_128_GCM_SHA256),
        "TLS_AES_256_GCM_SHA384" => ("TLS_AES_256_GCM_SHA384", s::TLS13_AES_256_GCM_SHA384),
        "TLS_CHACHA20_POLY1305_SHA256" => (
            "TLS_CHACHA20_POLY1305_SHA256",
            s::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            s::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            s::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            s::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            s::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            s::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            s::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        _ => return None,
    })
}

/// Go's curve names and the ring provider's group for each.
fn curve(name: &str) -> Option<(&'static str, &'static dyn SupportedKxGroup)> {
    use ring::kx_group as k;
    Some(match name {
        "X25519" => ("X25519", k::X25519),
        "CurveP256" => ("CurveP256", k::SECP256R1),
        "CurveP384" => ("CurveP384", k::SECP384R1),
        _ => return None,
    })
}

const SUITE_NAMES: &str = "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, \
    TLS_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, \
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, \
    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256";

const CURVE_NAMES: &str = "X25519, CurveP256, CurveP384";

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// The variable that is read: `deprecated` while it is set (it wins, as upstream), else
/// `current`; and its value.
fn read<S: EnvSource>(env: &Env<S>, current: &'static str) -> Option<(String, String)> {
    let deprecated = current.replacen("KEDA_HTTP_TLS_", "KEDA_HTTP_PROXY_TLS_", 1);
    match env.string(&deprecated) {
        Some(value) => {
            tracing::warn!(
                variable = deprecated,
                replacement = current,
                "deprecated environment variable (it takes precedence while set)"
            );
            Some((deprecated, value))
        }
        None => env
            .string(current)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (current.to_owned(), v)),
    }
}

fn version<S: EnvSource>(
    env: &Env<S>,
    current: &'static str,
) -> Result<Option<TlsVersion>, ConfigError> {
    let Some((name, value)) = read(env, current) else {
        return Ok(None);
    };
    match value.trim() {
        "1.2" => Ok(Some(TlsVersion::Tls12)),
        "1.3" => Ok(Some(TlsVersion::Tls13)),
        "1.0" | "1.1" => Err(invalid(
            &name,
            &value,
            "rustls implements TLS 1.2 and 1.3 only (use 1.2 or 1.3)",
        )),
        _ => Err(invalid(&name, &value, "expected 1.2 or 1.3")),
    }
}

/// The comma-separated names of `current`, each mapped by `known`.
fn names<S: EnvSource, T>(
    env: &Env<S>,
    current: &'static str,
    known: impl Fn(&str) -> Option<(&'static str, T)>,
    what: &str,
    all: &str,
) -> Result<Vec<&'static str>, ConfigError> {
    let Some((name, value)) = read(env, current) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((canonical, _)) = known(item) else {
            return Err(invalid(
                &name,
                &value,
                format!("{item:?} is not a {what} rustls (ring) implements; known: {all}"),
            ));
        };
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

impl TlsPolicy {
    /// Reads `KEDA_HTTP_TLS_{MIN,MAX}_VERSION`, `KEDA_HTTP_TLS_CIPHER_SUITES` and
    /// `KEDA_HTTP_TLS_CURVE_PREFERENCES` (and their deprecated `KEDA_HTTP_PROXY_TLS_*`
    /// spellings, which win while set, as upstream); a bad value names the variable.
    pub fn from_env<S: EnvSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let min_version = version(env, MIN_VERSION)?;
        let max_version = version(env, MAX_VERSION)?;
        if let (Some(min), Some(max)) = (min_version, max_version)
            && min > max
        {
            let shown = |v| match v {
                TlsVersion::Tls12 => "1.2",
                TlsVersion::Tls13 => "1.3",
            };
            return Err(invalid(
                MIN_VERSION,
                shown(min),
                format!("is above {MAX_VERSION}={}", shown(max)),
            ));
        }
        Ok(Self {
            min_version,
            max_version,
            cipher_suites: names(
                env,
                CIPHER_SUITES,
                cipher_suite,
                "cipher suite",
                SUITE_NAMES,
            )?,
            curve_preferences: names(env, CURVE_PREFERENCES, curve, "curve", CURVE_NAMES)?,
        })
    }

    /// The versions allowed, for rustls's config builders.
    pub fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let min = self.min_version.unwrap_or(TlsVersion::Tls12);
        let max = self.max_version.unwrap_or(TlsVersion::Tls13);
        [TlsVersion::Tls12, TlsVersion::Tls13]
            .into_iter()
            .filter(|v| (min..=max).contains(v))
            .map(TlsVersion::rustls)
            .collect()
    }

    /// The ring provider restricted to the policy's suites and groups.
    pub fn provider(&self) -> CryptoProvider {
        let mut provider = ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let listed: Vec<SupportedCipherSuite> = self
                .cipher_suites
                .iter()
                .filter_map(|name| cipher_suite(name).map(|(_, suite)| suite))
                .collect();
            let lists = |v: &SupportedProtocolVersion| {
                listed.iter().any(|s| s.version().version == v.version)
            };
            let (tls12, tls13) = (
                lists(&rustls::version::TLS12),
                lists(&rustls::version::TLS13),
            );
            let defaults = std::mem::take(&mut provider.cipher_suites);
            // Listed suites first, in the listed order; then the defaults of a version
            // that has none listed.
            provider.cipher_suites = listed;
            provider
                .cipher_suites
                .extend(defaults.into_iter().filter(|s| {
                    let tls13_suite = s.version().version == rustls::version::TLS13.version;
                    if tls13_suite { !tls13 } else { !tls12 }
                }));
        }
        if !self.curve_preferences.is_empty() {
            provider.kx_groups = self
                .curve_preferences
                .iter()
                .filter_map(|name| curve(name).map(|(_, group)| group))
                .collect();
        }
        provider
    }

    /// [`TlsPolicy::provider`] in an `Arc`, as the config builders take it.
    pub fn shared_provider(&self) -> Arc<CryptoProvider> {
        Arc::new(self.provider())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn read(pairs: &[(&'static str, &'static str)]) -> Result<TlsPolicy, ConfigError> {
        TlsPolicy::from_env(&Env::new(pairs.iter().copied().collect::<BTreeMap<_, _>>()))
    }

    #[test]
    fn go_names_map_to_rustls() {
        let policy = read(&[
            (MIN_VERSION, "1.3"),
            (
                CIPHER_SUITES,
                "TLS_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            ),
            (CURVE_PREFERENCES, "CurveP384,X25519"),
        ])
        .unwrap();
        assert_eq!(policy.versions().len(), 1);
        assert_eq!(
            policy.cipher_suites,
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        let provider = policy.provider();
        // The listed TLS 1.3 suite alone for 1.3, the listed 1.2 one alone for 1.2.
        let suites: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            suites,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        let groups: Vec<String> = provider
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["secp384r1", "X25519"]);

        // Only TLS 1.2 suites listed: TLS 1.3 keeps its defaults, as in Go.
        let tls12_only = read(&[(CIPHER_SUITES, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")])
            .unwrap()
            .provider();
        assert_eq!(tls12_only.cipher_suites.len(), 1 + 3);
        assert_eq!(read(&[]).unwrap(), TlsPolicy::default());
        assert_eq!(TlsPolicy::default().versions().len(), 2);
    }

    #[test]
    fn names_rustls_cannot_honour_stop_the_start() {
        for (name, value, says) in [
            (MIN_VERSION, "1.1", "TLS 1.2 and 1.3 only"),
            (MAX_VERSION, "TLS13", "expected 1.2 or 1.3"),
            (
                CIPHER_SUITES,
                "TLS_RSA_WITH_AES_128_CBC_SHA",
                "not a cipher suite rustls",
            ),
            (CURVE_PREFERENCES, "CurveP521", "not a curve rustls"),
            (CURVE_PREFERENCES, "X25519MLKEM768", "not a curve rustls"),
        ] {
            let err = read(&[(name, value)]).expect_err(value).to_string();
            assert!(
                err.contains(name) && err.contains(value) && err.contains(says),
                "{err}"
            );
        }
        let err = read(&[(MIN_VERSION, "1.3"), (MAX_VERSION, "1.2")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(MIN_VERSION) && err.contains(MAX_VERSION),
            "{err}"
        );
        // A TLS 1.3 suite alone under TLS 1.2 at most: TLS 1.2 keeps its default suites.
        let policy = read(&[
            (MAX_VERSION, "1.2"),
            (CIPHER_SUITES, "TLS_AES_128_GCM_SHA256"),
        ])
        .unwrap();
        assert_eq!(policy.provider().cipher_suites.len(), 1 + 6);
    }

    #[test]
    fn deprecated_spellings_win_while_set() {
        let policy = read(&[
            (MIN_VERSION, "1.2"),
            ("KEDA_HTTP_PROXY_TLS_MIN_VERSION", "1.3"),
        ])
        .unwrap();
        assert_eq!(policy.min_version, Some(TlsVersion::Tls13));
        let err = read(&[("KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES", "P-256")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES"),
            "{err}"
        );
    }
}
