//! Conformance checks against upstream's tables in `compat/` (test data copied from
//! `../shared/upstream/`): each component's tests feed its config parser through
//! [`EnvCheck`] to prove every upstream variable is read with upstream's default.

use std::collections::BTreeMap;

use crate::config::{ConfigError, Env};

/// What `compat/env.tsv` says a variable defaults to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvDefault {
    /// `_(required)_`: no default, the component refuses to start without it.
    Required,
    /// `_(unset)_`: no value unless set.
    Unset,
    /// A deprecated alias that defaults to (and means) another variable.
    Alias(String),
    /// A literal default (`""` for the empty string).
    Value(String),
}

/// One row of `compat/env.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRow {
    /// `interceptor`, `scaler` or `operator`.
    pub component: String,
    /// The variable.
    pub name: String,
    /// Its default.
    pub default: EnvDefault,
}

/// The rows of `tsv` (the text of `compat/env.tsv`) for `component`.
pub fn env_rows(tsv: &str, component: &str) -> Vec<EnvRow> {
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let (c, name, default) = (cols.next()?, cols.next()?, cols.next().unwrap_or(""));
            (c == component).then(|| EnvRow {
                component: c.to_owned(),
                name: name.to_owned(),
                default: match default {
                    "_(required)_" => EnvDefault::Required,
                    "_(unset)_" => EnvDefault::Unset,
                    "\"\"" => EnvDefault::Value(String::new()),
                    d if is_variable_name(d) => EnvDefault::Alias(d.to_owned()),
                    d => EnvDefault::Value(d.to_owned()),
                },
            })
        })
        .collect()
}

fn is_variable_name(s: &str) -> bool {
    s.contains('_')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A component's config parser: a config (as its `Debug` text, so two parses compare) or the
/// error naming the bad variable.
pub type Parser<'a> = &'a dyn Fn(&Env<BTreeMap<String, String>>) -> Result<String, ConfigError>;

/// Checks one component's parser against its rows of `compat/env.tsv`.
pub struct EnvCheck<'a> {
    /// The parser under test.
    pub parse: Parser<'a>,
    /// A value for every required variable (the base every check starts from).
    pub required: &'a [(&'a str, &'a str)],
    /// A valid non-default value for variables where one cannot be derived from the default
    /// (empty or unset defaults, names, paths).
    pub alternatives: &'a [(&'a str, &'a str)],
    /// `(variable, other, value)`: `variable` is only read when `other` is `value`.
    pub contexts: &'a [(&'a str, &'a str, &'a str)],
    /// The component's list of known variables, when it has one: every row must be in it.
    pub known: Option<&'a [&'a str]>,
}

impl EnvCheck<'_> {
    /// Every mismatch as `(variable, what is wrong)`; empty when the parser conforms.
    pub fn run(&self, rows: &[EnvRow]) -> Vec<(String, String)> {
        let mut failures = Vec::new();
        for row in rows {
            if let Err(why) = self.check(row) {
                failures.push((row.name.clone(), why));
            }
        }
        failures
    }

    fn base(&self, name: &str) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = self
            .required
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (var, other, value) in self.contexts {
            if *var == name {
                map.insert((*other).to_owned(), (*value).to_owned());
            }
        }
        map
    }

    fn parse_with(&self, name: &str, extra: &[(&str, &str)]) -> Result<String, ConfigError> {
        let mut map = self.base(name);
        for (k, v) in extra {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        (self.parse)(&Env::new(map))
    }

    /// A valid value of `name` other than its default.
    fn alternative(&self, name: &str, default: Option<&str>) -> Result<String, String> {
        if let Some((_, v)) = self.alternatives.iter().find(|(k, _)| *k == name) {
            return Ok((*v).to_owned());
        }
        let default = default.unwrap_or("");
        if let Ok(n) = default.parse::<u64>() {
            return Ok((n + 1).to_string());
        }
        match default {
            "true" => return Ok("false".to_owned()),
            "false" => return Ok("true".to_owned()),
            _ => {}
        }
        if crate::duration::parse_duration(default).is_ok() {
            return Ok(if default == "7s" { "9s" } else { "7s" }.to_owned());
        }
        Err(format!(
            "no alternative value to test that it is read (default {default:?}); add one"
        ))
    }

    fn check(&self, row: &EnvRow) -> Result<(), String> {
        let name = row.name.as_str();
        if let Some(known) = self.known
            && !known.contains(&name)
        {
            return Err("not in the component's list of known variables".to_owned());
        }
        let base = self
            .parse_with(name, &[])
            .map_err(|e| format!("the base config does not parse: {e}"))?;
        let read = |value: &str| -> Result<String, String> {
            self.parse_with(name, &[(name, value)])
                .map_err(|e| format!("{name}={value:?} is rejected: {e}"))
        };
        match &row.default {
            EnvDefault::Required => {
                let mut map = self.base(name);
                map.remove(name);
                match (self.parse)(&Env::new(map)) {
                    Err(e) if e.to_string().contains(name) => {}
                    Err(e) => return Err(format!("unset gives an error not naming it: {e}")),
                    Ok(_) => return Err("required upstream, but starts without it".to_owned()),
                }
                let other = self.alternative(name, None)?;
                if read(&other)? == base {
                    return Err(format!("{name}={other:?} changes nothing: not read"));
                }
            }
            EnvDefault::Unset => {
                let other = self.alternative(name, None)?;
                if read(&other)? == base {
                    return Err(format!("{name}={other:?} changes nothing: not read"));
                }
            }
            EnvDefault::Value(default) => {
                if read(default)? != base {
                    return Err(format!(
                        "setting upstream's default {default:?} differs from leaving it unset"
                    ));
                }
                let other = self.alternative(name, Some(default))?;
                if read(&other)? == base {
                    return Err(format!("{name}={other:?} changes nothing: not read"));
                }
            }
            EnvDefault::Alias(current) => {
                let value = self.alternative(current, None).or_else(|_| {
                    self.alternative(name, None)
                        .or_else(|_| Ok::<_, String>("7s".to_owned()))
                })?;
                let via_alias = read(&value)?;
                let via_current = self
                    .parse_with(name, &[(current, &value)])
                    .map_err(|e| format!("{current}={value:?} is rejected: {e}"))?;
                if via_alias != via_current {
                    return Err(format!("does not mean the same as {current}"));
                }
                let both = self
                    .parse_with(name, &[(name, &value), (current, "1s")])
                    .map_err(|e| format!("{name} and {current} together are rejected: {e}"))?;
                if both != via_current {
                    return Err(format!("does not win over {current} when both are set"));
                }
            }
        }
        Ok(())
    }
}

/// One row of `compat/metrics.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// `interceptor` or `scaler`.
    pub component: String,
    /// The series name as scraped (counters with `_total`).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// Label names (without `le`).
    pub labels: Vec<String>,
    /// Histogram bucket bounds (without `+Inf`).
    pub buckets: Vec<f64>,
}

/// Rows for Go's `process_*` series ([`crate::process::GO_PROCESS_SERIES`]) as `component`
/// serves them: upstream serves them beside its own, `metrics.tsv` lists only the add-on's.
/// Read from `/proc`, so none off Linux.
pub fn go_process_rows(component: &str) -> Vec<MetricRow> {
    if !cfg!(target_os = "linux") {
        return Vec::new();
    }
    crate::process::GO_PROCESS_SERIES
        .iter()
        .map(|(name, kind)| MetricRow {
            component: component.to_owned(),
            name: (*name).to_owned(),
            kind: (*kind).to_owned(),
            labels: Vec::new(),
            buckets: Vec::new(),
        })
        .collect()
}

/// The rows of `tsv` (the text of `compat/metrics.tsv`) for `component`.
pub fn metric_rows(tsv: &str, component: &str) -> Vec<MetricRow> {
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            (cols.first() == Some(&component)).then(|| MetricRow {
                component: cols[0].to_owned(),
                name: cols.get(1).copied().unwrap_or("").to_owned(),
                kind: cols.get(2).copied().unwrap_or("").to_owned(),
                labels: list(cols.get(3).copied().unwrap_or("")),
                buckets: list(cols.get(4).copied().unwrap_or(""))
                    .iter()
                    .filter_map(|b| b.parse().ok())
                    .collect(),
            })
        })
        .collect()
}

/// A sample line of a text exposition: name, labels (name, value) and value.
fn parse_sample(line: &str) -> Option<(String, Vec<(String, String)>)> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line.split_whitespace().next()?, ""),
    };
    let mut labels = Vec::new();
    if !rest.is_empty() {
        let mut chars = rest.chars();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let key = key.trim_start_matches(',').trim().to_owned();
            if key.is_empty() || key.starts_with('}') {
                break;
            }
            if chars.next() != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => {
                        escaped = false;
                        value.push(c);
                    }
                }
            }
            labels.push((key, value));
        }
    }
    Some((name.to_owned(), labels))
}

/// Every way `text` (a Prometheus or OpenMetrics exposition) differs from `rows`: a series
/// missing, of another type, with other label names or other buckets.
pub fn check_metrics(text: &str, rows: &[MetricRow]) -> Vec<String> {
    let mut failures = Vec::new();
    let samples: Vec<(String, Vec<(String, String)>)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .collect();
    for row in rows {
        let family = match row.kind.as_str() {
            "counter" => row.name.strip_suffix("_total").unwrap_or(&row.name),
            _ => &row.name,
        };
        let type_line = format!("# TYPE {family} {}", row.kind);
        if !text.lines().any(|l| l.trim_end() == type_line) {
            failures.push(format!("{}: no line {type_line:?}", row.name));
            continue;
        }
        let names: Vec<String> = match row.kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            _ => vec![row.name.clone()],
        };
        let of_row: Vec<_> = samples.iter().filter(|(n, _)| names.contains(n)).collect();
        if of_row.is_empty() {
            failures.push(format!("{}: no samples", row.name));
            continue;
        }
        let mut want: Vec<&str> = row.labels.iter().map(String::as_str).collect();
        want.sort_unstable();
        for (name, labels) in &of_row {
            let mut got: Vec<&str> = labels
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| *k != "le")
                .collect();
            got.sort_unstable();
            if got != want {
                failures.push(format!("{name}: labels {got:?}, upstream {want:?}"));
                break;
            }
        }
        if row.kind == "histogram" {
            let bucket = format!("{family}_bucket");
            let mut bounds: Vec<f64> = of_row
                .iter()
                .filter(|(n, _)| *n == bucket)
                .flat_map(|(_, labels)| labels.iter())
                .filter(|(k, _)| k == "le")
                .filter_map(|(_, v)| v.parse::<f64>().ok())
                .filter(|b| b.is_finite())
                .collect();
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            let same = bounds.len() == row.buckets.len()
                && bounds
                    .iter()
                    .zip(&row.buckets)
                    .all(|(a, b)| (a - b).abs() < 1e-9);
            if !same {
                failures.push(format!(
                    "{}: buckets {bounds:?}, upstream {:?}",
                    row.name, row.buckets
                ));
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSV: &str = "# where it came from\ncomponent\tvariable\tdefault\n\
        a\tA_PORT\t_(required)_\na\tA_TICK\t500ms\na\tA_NS\t\"\"\na\tA_OLD_TICK\tA_TICK\n\
        a\tA_LEASE\t_(unset)_\nb\tB_X\t1\n";

    #[test]
    fn rows_of_one_component() {
        let rows = env_rows(TSV, "a");
        let defaults: Vec<_> = rows.iter().map(|r| (r.name.as_str(), &r.default)).collect();
        assert_eq!(
            defaults,
            [
                ("A_PORT", &EnvDefault::Required),
                ("A_TICK", &EnvDefault::Value("500ms".into())),
                ("A_NS", &EnvDefault::Value(String::new())),
                ("A_OLD_TICK", &EnvDefault::Alias("A_TICK".into())),
                ("A_LEASE", &EnvDefault::Unset),
            ]
        );
    }

    /// A parser that reads `A_TICK` with default `tick_default`, lets `A_OLD_TICK` win when
    /// `alias_wins`, and ignores `A_LEASE`.
    fn parser(
        tick_default: &'static str,
        alias_wins: bool,
    ) -> impl Fn(&Env<BTreeMap<String, String>>) -> Result<String, ConfigError> {
        move |env| {
            let port: u16 = env
                .required("A_PORT")?
                .parse()
                .map_err(|_| ConfigError::Invalid {
                    name: "A_PORT".into(),
                    value: String::new(),
                    reason: String::new(),
                })?;
            let default = crate::duration::parse_duration(tick_default).unwrap();
            let tick = if alias_wins {
                env.duration_deprecated("A_TICK", "A_OLD_TICK", default)?
            } else {
                env.duration_any(&["A_TICK", "A_OLD_TICK"], default)?
            };
            Ok(format!("{port} {tick:?} {:?}", env.string("A_NS")))
        }
    }

    fn failures(tick_default: &'static str, alias_wins: bool) -> Vec<String> {
        let parse = parser(tick_default, alias_wins);
        let check = EnvCheck {
            parse: &parse,
            required: &[("A_PORT", "80")],
            alternatives: &[("A_NS", "apps"), ("A_LEASE", "15s"), ("A_PORT", "81")],
            contexts: &[],
            known: None,
        };
        check
            .run(&env_rows(TSV, "a"))
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn finds_wrong_defaults_alias_precedence_and_unread_variables() {
        assert_eq!(failures("500ms", true), ["A_LEASE"]);
        assert_eq!(failures("1s", true), ["A_TICK", "A_LEASE"]);
        assert_eq!(failures("500ms", false), ["A_OLD_TICK", "A_LEASE"]);
    }

    #[test]
    fn metrics_checked_for_type_labels_and_buckets() {
        let tsv = "# source\ncomponent\tname\ttype\tlabels\tbuckets\n\
            s\tx_total\tcounter\tcode,method\t\n\
            s\th_seconds\thistogram\t\t0.1,1\n\
            s\tg\tgauge\t\t\n";
        let rows = metric_rows(tsv, "s");
        assert_eq!(rows.len(), 3);
        let good = "# TYPE x counter\nx_total{method=\"GET\",code=\"200\"} 1\n\
            # TYPE h_seconds histogram\nh_seconds_bucket{le=\"0.1\"} 0\n\
            h_seconds_bucket{le=\"1.0\"} 0\nh_seconds_bucket{le=\"+Inf\"} 0\n\
            h_seconds_sum 0\nh_seconds_count 0\n# TYPE g gauge\ng 2\n";
        assert_eq!(check_metrics(good, &rows), Vec::<String>::new());
        let bad = good
            .replace("method=\"GET\",", "")
            .replace("le=\"0.1\"", "le=\"0.2\"")
            .replace("# TYPE g gauge", "# TYPE g counter");
        let failures = check_metrics(&bad, &rows);
        assert_eq!(failures.len(), 3, "{failures:?}");
    }
}
