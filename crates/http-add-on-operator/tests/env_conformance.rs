//! Every operator variable of upstream 0.16 (`compat/env.tsv`) is read with upstream's default.

use std::collections::BTreeMap;

use http_add_on_operator::Config;
use http_add_on_operator::config::KNOWN_VARIABLES;
use http_add_on_types::compat::{EnvCheck, env_rows};
use http_add_on_types::config::{ConfigError, Env};

const ENV_TSV: &str = include_str!("../../../compat/env.tsv");

fn parse(env: &Env<BTreeMap<String, String>>) -> Result<String, ConfigError> {
    let mut config = Config::from_env(env)?;
    // The identity carries a random suffix; it is not configuration.
    if let Some(le) = &mut config.leader_election {
        le.identity = "operator-0".to_owned();
    }
    Ok(format!("{config:?}"))
}

#[test]
fn every_upstream_variable_with_its_default() {
    let rows = env_rows(ENV_TSV, "operator");
    assert!(rows.len() >= 7, "operator rows of env.tsv: {rows:?}");
    let check = EnvCheck {
        parse: &parse,
        required: &[("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "scaler")],
        alternatives: &[
            ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "other"),
            ("KEDA_HTTP_OPERATOR_NAMESPACE", "other"),
            ("KEDA_HTTP_OPERATOR_WATCH_NAMESPACE", "apps"),
            ("KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION", "20s"),
            ("KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE", "12s"),
            ("KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", "3s"),
        ],
        contexts: &[],
        known: Some(KNOWN_VARIABLES),
    };
    let failures = check.run(&rows);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn deprecated_scaler_variables_are_known_and_win() {
    for name in [
        "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
        "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT",
    ] {
        assert!(KNOWN_VARIABLES.contains(&name), "{name}");
    }
    let env = Env::new(BTreeMap::from([
        ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "new"),
        ("KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "old"),
        ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT", "1"),
        ("KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT", "2"),
        ("KEDA_HTTP_OPERATOR_NAMESPACE", "ns"),
        // Our former names of the lease settings are no longer read.
        ("KEDA_HTTP_OPERATOR_LEASE_DURATION", "20s"),
    ]));
    let config = Config::from_env(&env).expect("valid");
    assert_eq!(config.scaler_address(), "old.ns:2");
    assert_eq!(
        env.unknown(KNOWN_VARIABLES),
        ["KEDA_HTTP_OPERATOR_LEASE_DURATION"]
    );
}
