//! Typed configuration from environment variables, readable from the process or from a map so
//! tests can drive it. Every error names the variable.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::parse_duration;

/// A bad or missing configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("environment variable {name} is required but not set")]
    Missing {
        /// The variable.
        name: String,
    },
    /// A variable is set to something that does not parse.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// Where variables come from.
pub trait EnvSource {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
    /// The names of every set variable (to find unknown ones).
    fn names(&self) -> Vec<String>;
}

/// Prefixes of the add-on's own variables; a set variable with one of them that no component
/// reads is reported by [`Env::warn_unknown`].
pub const ADDON_PREFIXES: [&str; 2] = ["KEDA_HTTP_", "KEDAHTTP_"];

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn names(&self) -> Vec<String> {
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

impl EnvSource for BTreeMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| (*v).to_owned())
    }

    fn names(&self) -> Vec<String> {
        self.keys().map(|k| (*k).to_owned()).collect()
    }
}

/// Typed reads over an [`EnvSource`]; empty values count as unset, like upstream's envconfig.
#[derive(Debug, Clone, Default)]
pub struct Env<S = ProcessEnv> {
    source: S,
}

impl Env<ProcessEnv> {
    /// Reads the process environment.
    pub fn process() -> Self {
        Self { source: ProcessEnv }
    }
}

impl<S: EnvSource> Env<S> {
    /// Reads from `source`.
    pub fn new(source: S) -> Self {
        Self { source }
    }

    /// The non-empty value of `name`.
    pub fn string(&self, name: &str) -> Option<String> {
        self.source
            .var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`, or an error naming it when unset.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.string(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })
    }

    /// `name` parsed with `FromStr`, or `default` when unset.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.string(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name: name.to_owned(),
                reason: e.to_string(),
                value,
            }),
        }
    }

    /// A Go-syntax duration (`500ms`, `1m30s`), or `default` when unset.
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.duration_opt(name)
            .map(|value| value.unwrap_or(default))
    }

    /// A Go-syntax duration, or `None` when unset.
    pub fn duration_opt(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(name) {
            None => Ok(None),
            Some(value) => parse_duration(&value)
                .map(Some)
                .map_err(|e| ConfigError::Invalid {
                    name: name.to_owned(),
                    reason: e.to_string(),
                    value,
                }),
        }
    }

    /// The first set variable of `names` (a current name followed by deprecated aliases) as a
    /// duration, or `default`. Using an alias logs a deprecation warning.
    pub fn duration_any(&self, names: &[&str], default: Duration) -> Result<Duration, ConfigError> {
        for (i, name) in names.iter().enumerate() {
            if let Some(d) = self.duration_opt(name)? {
                if i > 0 {
                    tracing::warn!(
                        variable = name,
                        replacement = names[0],
                        "deprecated environment variable"
                    );
                }
                return Ok(d);
            }
        }
        Ok(default)
    }

    /// The set variables with an add-on prefix ([`ADDON_PREFIXES`]) that are not in `known`,
    /// sorted.
    pub fn unknown(&self, known: &[&str]) -> Vec<String> {
        let mut unknown: Vec<String> = self
            .source
            .names()
            .into_iter()
            .filter(|n| ADDON_PREFIXES.iter().any(|p| n.starts_with(p)))
            .filter(|n| !known.contains(&n.as_str()))
            .collect();
        unknown.sort();
        unknown.dedup();
        unknown
    }

    /// Logs one warning per set add-on variable that is not in `known`, naming it; returns
    /// them.
    pub fn warn_unknown(&self, known: &[&str]) -> Vec<String> {
        let unknown = self.unknown(known);
        for name in &unknown {
            tracing::warn!(variable = %name, "unknown environment variable, ignored");
        }
        unknown
    }

    /// `deprecated` when set (it wins, as upstream), else `current`, both non-empty strings.
    /// Using the deprecated name logs a warning.
    pub fn string_deprecated(&self, current: &str, deprecated: &str) -> Option<String> {
        match self.string(deprecated) {
            Some(v) => {
                deprecation_warning(deprecated, current);
                Some(v)
            }
            None => self.string(current),
        }
    }

    /// `deprecated` parsed when set (it wins, as upstream), else `current`, else `default`.
    pub fn parse_deprecated<T>(
        &self,
        current: &str,
        deprecated: &str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        if self.string(deprecated).is_some() {
            deprecation_warning(deprecated, current);
            return self.parse(deprecated, default);
        }
        self.parse(current, default)
    }

    /// A duration from `deprecated` when set (it wins, as upstream), else `current`, else
    /// `default`.
    pub fn duration_deprecated(
        &self,
        current: &str,
        deprecated: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        if let Some(d) = self.duration_opt(deprecated)? {
            deprecation_warning(deprecated, current);
            return Ok(d);
        }
        self.duration(current, default)
    }

    /// A boolean in Go's `strconv.ParseBool` syntax (`1`, `t`, `true`, `0`, `f`, `false`, any
    /// case), or `default` when unset.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.string(name) {
            None => Ok(default),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "1" | "t" | "true" => Ok(true),
                "0" | "f" | "false" => Ok(false),
                _ => Err(ConfigError::Invalid {
                    name: name.to_owned(),
                    value,
                    reason: "expected true or false".to_owned(),
                }),
            },
        }
    }
}

fn deprecation_warning(deprecated: &str, current: &str) {
    tracing::warn!(
        variable = deprecated,
        replacement = current,
        "deprecated environment variable (it takes precedence while set)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> Env<BTreeMap<&'static str, &'static str>> {
        Env::new(pairs.iter().copied().collect())
    }

    #[test]
    fn typed_reads_and_defaults() {
        let e = env(&[
            ("PORT", "8080"),
            ("T", "1m30s"),
            ("B", "TRUE"),
            ("EMPTY", ""),
        ]);
        assert_eq!(e.parse::<u16>("PORT", 1), Ok(8080));
        assert_eq!(e.parse::<u16>("UNSET", 1), Ok(1));
        assert_eq!(e.duration("T", Duration::ZERO), Ok(Duration::from_secs(90)));
        assert_eq!(e.bool("B", false), Ok(true));
        assert_eq!(e.bool("EMPTY", true), Ok(true));
        assert_eq!(e.string("EMPTY"), None);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = env(&[("PORT", "http"), ("T", "5 minutes"), ("B", "yes")]);
        for err in [
            e.parse::<u16>("PORT", 1).unwrap_err(),
            e.duration("T", Duration::ZERO).unwrap_err(),
            e.bool("B", false).unwrap_err(),
            e.required("NEEDED").unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(
                ["PORT", "T", "B", "NEEDED"]
                    .iter()
                    .any(|n| text.contains(&format!("variable {n}"))),
                "{text}"
            );
        }
    }

    #[test]
    fn aliases_in_order() {
        let e = env(&[("OLD", "5s"), ("NEW", "7s")]);
        assert_eq!(
            e.duration_any(&["NEW", "OLD"], Duration::ZERO),
            Ok(Duration::from_secs(7))
        );
        let e = env(&[("OLD", "5s")]);
        assert_eq!(
            e.duration_any(&["NEW", "OLD"], Duration::ZERO),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            e.duration_any(&["X", "Y"], Duration::from_secs(1)),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn deprecated_names_win_when_set() {
        let e = env(&[("OLD", "5s"), ("NEW", "7s"), ("OLDP", "1"), ("NEWP", "2")]);
        assert_eq!(
            e.duration_deprecated("NEW", "OLD", Duration::ZERO),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(e.parse_deprecated("NEWP", "OLDP", 0u16), Ok(1));
        assert_eq!(e.string_deprecated("NEWP", "OLDP").as_deref(), Some("1"));
        let e = env(&[("NEW", "7s"), ("NEWP", "2")]);
        assert_eq!(
            e.duration_deprecated("NEW", "OLD", Duration::ZERO),
            Ok(Duration::from_secs(7))
        );
        assert_eq!(e.parse_deprecated("NEWP", "OLDP", 0u16), Ok(2));
        assert_eq!(
            e.duration_deprecated("X", "Y", Duration::from_secs(1)),
            Ok(Duration::from_secs(1))
        );
        let err = env(&[("OLD", "soon")])
            .duration_deprecated("NEW", "OLD", Duration::ZERO)
            .unwrap_err();
        assert!(err.to_string().contains("OLD"), "{err}");
    }

    #[test]
    fn unknown_addon_variables_are_named() {
        let e = env(&[
            ("KEDA_HTTP_KNOWN", "1"),
            ("KEDA_HTTP_TYPO", "1"),
            ("KEDAHTTP_OLD", "1"),
            ("KEDA_OTHER", "1"),
            ("PATH", "/bin"),
        ]);
        assert_eq!(
            e.unknown(&["KEDA_HTTP_KNOWN"]),
            ["KEDAHTTP_OLD", "KEDA_HTTP_TYPO"]
        );
        assert_eq!(
            e.warn_unknown(&["KEDA_HTTP_KNOWN", "KEDA_HTTP_TYPO", "KEDAHTTP_OLD"]),
            Vec::<String>::new()
        );
    }
}
