//! Upstream's command-line flags. The Go operator takes controller-runtime's flags
//! (`--metrics-bind-address=:8443`, `--leader-elect`, ...) where we read environment variables;
//! a Deployment written for upstream that passes them keeps working: each flag sets the
//! variable of the same setting, and wins over it. Go's flag syntax: one or two dashes,
//! `-name=value` or `-name value`, a boolean flag alone means `true`.

use std::collections::BTreeMap;

use http_add_on_types::config::EnvSource;

use crate::config::{
    ENV_HEALTH_ADDRESS, ENV_LEADER_ELECTION, ENV_METRICS_ADDRESS, ENV_METRICS_AUTH,
    ENV_METRICS_CERT_DIR, ENV_METRICS_SECURE,
};

/// A flag that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flag {flag}: {reason}")]
pub struct FlagError {
    /// The flag as given.
    pub flag: String,
    /// What is wrong.
    pub reason: String,
}

/// Upstream's flags we honour: name, the variable it sets, whether it is boolean.
const FLAGS: [(&str, &str, bool); 6] = [
    ("metrics-bind-address", ENV_METRICS_ADDRESS, false),
    ("health-probe-bind-address", ENV_HEALTH_ADDRESS, false),
    ("leader-elect", ENV_LEADER_ELECTION, true),
    ("metrics-secure", ENV_METRICS_SECURE, true),
    ("metrics-auth", ENV_METRICS_AUTH, true),
    ("metrics-cert-dir", ENV_METRICS_CERT_DIR, false),
];

/// Upstream's flags that have no counterpart here (zap's logging flags: logging is set with
/// `RUST_LOG`/`LOG_FORMAT`; Go's pprof): accepted with a warning.
fn ignored(name: &str) -> bool {
    name.starts_with("zap-") || name == "profiling-bind-address"
}

/// A Go listen address (`:8443` = every interface) as a socket address.
fn go_address(value: &str) -> String {
    match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_owned(),
    }
}

/// The variables `args` (without the program name) set; errors name the flag.
pub fn parse<I: IntoIterator<Item = String>>(
    args: I,
) -> Result<BTreeMap<String, String>, FlagError> {
    let mut out = BTreeMap::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let error = |reason: &str| FlagError {
            flag: arg.clone(),
            reason: reason.to_owned(),
        };
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty() && !b.starts_with('-'))
        else {
            return Err(error("not a flag (the operator takes no arguments)"));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        if ignored(name) {
            if inline.is_none() && !name.ends_with("devel") {
                // zap's and pprof's flags all take a value.
                args.next();
            }
            tracing::warn!(flag = %arg, "upstream flag without effect in this operator; ignored");
            continue;
        }
        let Some((_, variable, boolean)) = FLAGS.iter().find(|(n, _, _)| *n == name) else {
            return Err(error("unknown flag"));
        };
        let value = match (inline, boolean) {
            (Some(value), _) => value,
            (None, true) => "true".to_owned(),
            (None, false) => args.next().ok_or_else(|| error("needs a value"))?,
        };
        let value = if *boolean {
            match value.to_ascii_lowercase().as_str() {
                "1" | "t" | "true" => "true".to_owned(),
                "0" | "f" | "false" => "false".to_owned(),
                _ => return Err(error("expected true or false")),
            }
        } else if variable.ends_with("_ADDRESS") {
            go_address(&value)
        } else {
            value
        };
        out.insert((*variable).to_owned(), value);
    }
    Ok(out)
}

/// Variables set by flags over another source (the process environment).
#[derive(Debug, Clone)]
pub struct WithFlags<S> {
    flags: BTreeMap<String, String>,
    inner: S,
}

impl<S> WithFlags<S> {
    /// `flags` (from [`parse`]) over `inner`.
    pub fn new(flags: BTreeMap<String, String>, inner: S) -> Self {
        Self { flags, inner }
    }
}

impl<S: EnvSource> EnvSource for WithFlags<S> {
    fn var(&self, name: &str) -> Option<String> {
        self.flags
            .get(name)
            .cloned()
            .or_else(|| self.inner.var(name))
    }

    fn names(&self) -> Vec<String> {
        let mut names = self.inner.names();
        names.extend(self.flags.keys().cloned());
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn upstream_flags_set_their_variables() {
        let vars = parse(args(&[
            "--metrics-bind-address=:8443",
            "-health-probe-bind-address",
            "127.0.0.1:8081",
            "--leader-elect",
            "--metrics-secure=false",
            "--metrics-auth=F",
            "--metrics-cert-dir",
            "/certs",
            "--zap-log-level=info",
            "--zap-encoder",
            "console",
        ]))
        .unwrap();
        assert_eq!(
            vars,
            BTreeMap::from(
                [
                    (ENV_METRICS_ADDRESS, "0.0.0.0:8443"),
                    (ENV_HEALTH_ADDRESS, "127.0.0.1:8081"),
                    (ENV_LEADER_ELECTION, "true"),
                    (ENV_METRICS_SECURE, "false"),
                    (ENV_METRICS_AUTH, "false"),
                    (ENV_METRICS_CERT_DIR, "/certs"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
            )
        );
    }

    #[test]
    fn bad_flags_are_named() {
        for (given, flag) in [
            (&["--metrics-secure=maybe"][..], "--metrics-secure=maybe"),
            (&["--nope"], "--nope"),
            (&["positional"], "positional"),
            (&["--metrics-cert-dir"], "--metrics-cert-dir"),
        ] {
            let err = parse(args(given)).unwrap_err();
            assert_eq!(err.flag, flag, "{err}");
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let env = BTreeMap::from([
            (ENV_METRICS_SECURE.to_owned(), "true".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ]);
        let flags = parse(args(&["--metrics-secure=false"])).unwrap();
        let layered = WithFlags::new(flags, env);
        assert_eq!(layered.var(ENV_METRICS_SECURE).as_deref(), Some("false"));
        assert_eq!(layered.var("OTHER").as_deref(), Some("x"));
        assert_eq!(
            layered.names(),
            ["KEDA_HTTP_OPERATOR_METRICS_SECURE", "OTHER"]
        );
    }
}
