//! The interceptor's variables against upstream 0.16 (`compat/env.tsv`): each is read with
//! upstream's default, except the ones listed in [`NOT_YET_CONFORMING`], which the test
//! proves are still missing or different (so the list shrinks as they are fixed).

use std::collections::{BTreeMap, BTreeSet};

use http_add_on_interceptor::Config;
use http_add_on_types::compat::{EnvCheck, env_rows};
use http_add_on_types::config::{ConfigError, Env};

const ENV_TSV: &str = include_str!("../../../compat/env.tsv");

/// Upstream variables the interceptor does not read yet, or reads with another default or
/// precedence. Remove a name once it conforms: the test fails while it is listed but passes.
const NOT_YET_CONFORMING: &[&str] = &[
    // Not read.
];

fn parse(env: &Env<BTreeMap<String, String>>) -> Result<String, ConfigError> {
    Config::from_env(env).map(|c| format!("{c:?}"))
}

#[test]
fn every_upstream_variable_with_its_default() {
    let rows = env_rows(ENV_TSV, "interceptor");
    assert!(rows.len() >= 35, "interceptor rows of env.tsv: {rows:?}");
    let tls = ("KEDA_HTTP_PROXY_TLS_ENABLED", "true");
    let check = EnvCheck {
        parse: &parse,
        required: &[
            ("KEDA_HTTP_PROXY_PORT", "8080"),
            ("KEDA_HTTP_ADMIN_PORT", "9090"),
        ],
        alternatives: &[
            ("KEDA_HTTP_PROXY_PORT", "8081"),
            ("KEDA_HTTP_ADMIN_PORT", "9091"),
            ("KEDA_HTTP_WATCH_NAMESPACE", "apps"),
            ("KEDA_HTTP_PROXY_TLS_CERT_PATH", "/tls/a.crt"),
            ("KEDA_HTTP_PROXY_TLS_KEY_PATH", "/tls/a.key"),
            ("KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS", "/store"),
            ("KEDA_HTTP_TLS_CA_DIRS", "/ca"),
            ("KEDA_HTTP_TLS_CIPHER_SUITES", "TLS_AES_128_GCM_SHA256"),
            ("KEDA_HTTP_TLS_CURVE_PREFERENCES", "X25519"),
            ("KEDA_HTTP_TLS_MAX_VERSION", "1.3"),
            ("KEDA_HTTP_TLS_MIN_VERSION", "1.3"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("PROFILING_BIND_ADDRESS", ":6060"),
        ],
        contexts: &[
            ("KEDA_HTTP_PROXY_TLS_CERT_PATH", tls.0, tls.1),
            ("KEDA_HTTP_PROXY_TLS_KEY_PATH", tls.0, tls.1),
            ("KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS", tls.0, tls.1),
            ("KEDA_HTTP_PROXY_TLS_PORT", tls.0, tls.1),
        ],
        // Every upstream variable must also be known, so that setting it logs no warning.
        known: Some(http_add_on_interceptor::config::KNOWN_VARIABLES),
    };
    let failures = check.run(&rows);
    let failing: BTreeSet<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
    let listed: BTreeSet<&str> = NOT_YET_CONFORMING.iter().copied().collect();
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|(n, _)| !listed.contains(n.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "not conforming: {unexpected:#?}");
    let fixed: Vec<_> = listed.difference(&failing).collect();
    assert!(
        fixed.is_empty(),
        "now conforming, remove from NOT_YET_CONFORMING: {fixed:?}"
    );
}
