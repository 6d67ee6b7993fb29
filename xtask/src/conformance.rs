//! `cargo xtask conformance`: kube-rs's own cluster tests against a fresh simulated cluster.
//!
//! The `#[ignore]`d tests of the `kube`, `kube-client` and `kube-runtime` crates are the ones
//! kube-rs runs against a real cluster in its CI. Their sources are the ones cargo downloaded
//! for this workspace (the versions in Cargo.lock); they are copied to
//! `target/conformance/kube-<version>/` (the registry is never touched) and built there as a
//! small workspace of their own, with the versions of kube's published Cargo.lock and a target
//! dir of its own (so this build never waits on the workspace's lock). They run with
//! `-- --ignored` and `KUBECONFIG` pointing at a new `http-add-on-sim up` per crate. The result
//! is one table row per test; tests that need real containers are listed as not applicable
//! with the reason, and any applicable failure fails the command.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{cargo, workspace_root};

/// The crates whose cluster tests run, with the features that compile all of them in.
const SUITES: [Suite; 3] = [
    Suite {
        package: "kube",
        // As kube's own comment says: `cargo test -p kube --lib --features=runtime,derive`.
        features: &["runtime", "derive"],
        dev_kube_features: None,
    },
    Suite {
        package: "kube-client",
        features: &["config", "rustls-tls", "ws", "kubelet-debug"],
        dev_kube_features: Some(&["derive", "client", "ws"]),
    },
    Suite {
        package: "kube-runtime",
        features: &[],
        dev_kube_features: Some(&["derive", "client", "runtime"]),
    },
];

/// Tests a simulator cannot serve: they need a container runtime behind the API. Each is
/// still compiled; it is skipped at run time and listed with the reason.
const NOT_APPLICABLE: &[(&str, &str, &str)] = &[
    (
        "kube-client",
        "test::pod_can_exec_and_write_to_stdin",
        "exec and attach into a running busybox shell (SPDY/websocket streams of a real process)",
    ),
    (
        "kube-client",
        "test::pod_can_exec_and_write_to_stdin_from_node_proxy",
        "kubelet debug API on https://localhost:10250, exec into a real process",
    ),
    (
        "kube-client",
        "test::can_get_pod_logs_and_evict",
        "asserts the log lines a real `sh -c 'echo kube $i'` process writes",
    ),
];

/// How long one crate's tests may run before the rest count as timed out.
const SUITE_DEADLINE: Duration = Duration::from_secs(300);
/// How long the simulator may take to print `ready`.
const SIM_DEADLINE: Duration = Duration::from_secs(30);

struct Suite {
    package: &'static str,
    features: &'static [&'static str],
    /// kube-rs's own manifest has a path dev-dependency on `kube`, which publishing strips;
    /// the copy gets it back with these features.
    dev_kube_features: Option<&'static [&'static str]>,
}

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(String),
    NotApplicable(&'static str),
}

struct Row {
    package: &'static str,
    test: String,
    outcome: Outcome,
}

pub(crate) fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let sources = kube_sources(&root)?;
    let version = sources
        .get("kube")
        .map(|(version, _)| version.clone())
        .context("`kube` is not a dependency in Cargo.lock")?;
    let scratch = root.join(format!("target/conformance/kube-{version}"));
    prepare_scratch(&root, &scratch, &sources)?;
    let openssl = has_system_openssl();
    let executables = build_tests(&scratch, openssl)?;
    cargo(&["build", "-p", "http-add-on-sim", "--bin", "http-add-on-sim"])?;
    let sim_bin = root.join("target/debug/http-add-on-sim");

    let mut rows = Vec::new();
    for suite in &SUITES {
        let exe = executables
            .get(suite.package)
            .with_context(|| format!("no test executable for {}", suite.package))?;
        rows.extend(run_suite(suite, exe, &sim_bin, &scratch)?);
    }
    if !openssl {
        rows.push(Row {
            package: "kube-client",
            test: "test::custom_client_openssl_tls_configuration".to_owned(),
            outcome: Outcome::NotApplicable(
                "not built: no system OpenSSL here (`pkg-config openssl`)",
            ),
        });
    }
    print_table(&version, &rows);
    let failed = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    if failed > 0 {
        bail!("{failed} applicable kube-rs {version} cluster tests failed on the simulator");
    }
    Ok(())
}

/// Version and source directory of kube, kube-client and kube-runtime, from `cargo metadata`.
fn kube_sources(root: &Path) -> anyhow::Result<BTreeMap<String, (String, PathBuf)>> {
    let out = crate::cargo_command()
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let mut found = BTreeMap::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        if !SUITES.iter().any(|s| s.package == name) {
            continue;
        }
        let version = package["version"].as_str().unwrap_or_default().to_owned();
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest
            .parent()
            .with_context(|| format!("manifest path of {name}"))?
            .to_path_buf();
        found.insert(name.to_owned(), (version, dir));
    }
    for suite in &SUITES {
        if !found.contains_key(suite.package) {
            bail!("{} is not in cargo metadata's packages", suite.package);
        }
    }
    Ok(found)
}

/// Copies the crates once (an unchanged copy keeps its build incremental) and writes the
/// scratch workspace manifest.
fn prepare_scratch(
    root: &Path,
    scratch: &Path,
    sources: &BTreeMap<String, (String, PathBuf)>,
) -> anyhow::Result<()> {
    fs::create_dir_all(scratch)?;
    for suite in &SUITES {
        let (_, source) = &sources[suite.package];
        let dest = scratch.join(suite.package);
        let stamp = dest.join(".copied-from");
        let origin = source.display().to_string();
        if fs::read_to_string(&stamp).ok().as_deref() != Some(origin.as_str()) {
            if dest.exists() {
                fs::remove_dir_all(&dest)?;
            }
            copy_dir(source, &dest)
                .with_context(|| format!("copying {} to {}", source.display(), dest.display()))?;
            let manifest = dest.join("Cargo.toml");
            // A member's own `resolver` only earns a warning in a workspace.
            let mut text: String = fs::read_to_string(&manifest)?
                .lines()
                .filter(|l| !l.starts_with("resolver ="))
                .map(|l| format!("{l}\n"))
                .collect();
            if let Some(features) = suite.dev_kube_features {
                let list: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
                text.push_str(&format!(
                    "\n[dev-dependencies.kube]\npath = \"../kube\"\nfeatures = [{}]\n",
                    list.join(", ")
                ));
            }
            fs::write(&manifest, text)?;
            fs::write(&stamp, &origin)?;
        }
    }
    let members: Vec<String> = SUITES
        .iter()
        .map(|s| format!("\"{}\"", s.package))
        .collect();
    let manifest = format!(
        "# Written by `cargo xtask conformance`.\n[workspace]\nmembers = [{}]\nresolver = \"2\"\n\n\
         [patch.crates-io]\nkube-client = {{ path = \"kube-client\" }}\n\
         kube-runtime = {{ path = \"kube-runtime\" }}\n",
        members.join(", ")
    );
    write_if_changed(&scratch.join("Cargo.toml"), &manifest)?;
    let lock = scratch.join("Cargo.lock");
    if !lock.exists() {
        // Start from the versions kube-rs released with (the lock file in the `kube` crate),
        // so a new release of some test dependency cannot change the run; else from ours.
        let (_, kube) = &sources["kube"];
        let seed = [kube.join("Cargo.lock"), root.join("Cargo.lock")]
            .into_iter()
            .find(|p| p.exists())
            .context("no Cargo.lock to start from")?;
        fs::copy(&seed, &lock)
            .with_context(|| format!("seeding Cargo.lock from {}", seed.display()))?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn write_if_changed(path: &Path, contents: &str) -> anyhow::Result<()> {
    if fs::read_to_string(path).ok().as_deref() != Some(contents) {
        fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn has_system_openssl() -> bool {
    Command::new("pkg-config")
        .args(["--exists", "openssl"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds the three lib test executables; returns package name → executable.
fn build_tests(scratch: &Path, openssl: bool) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut features = Vec::new();
    for suite in &SUITES {
        features.extend(
            suite
                .features
                .iter()
                .map(|f| format!("{}/{f}", suite.package)),
        );
    }
    if openssl {
        features.push("kube-client/openssl-tls".to_owned());
    }
    let mut cmd = crate::cargo_command();
    cmd.args(["test", "--lib", "--no-run", "--message-format", "json"]);
    for suite in &SUITES {
        cmd.args(["-p", suite.package]);
    }
    cmd.arg("--features")
        .arg(features.join(","))
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        .current_dir(scratch)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!(
        "$ cargo test --lib --no-run --features {} (in {})",
        features.join(","),
        scratch.display()
    );
    let out = cmd
        .output()
        .with_context(|| format!("could not run {cargo}"))?;
    if !out.status.success() {
        bail!("building kube-rs's tests failed ({})", out.status);
    }
    let mut executables = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        if let Some(suite) = SUITES.iter().find(|s| s.package.replace('-', "_") == name) {
            executables.insert(suite.package.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(executables)
}

/// A simulator process that is killed when dropped.
struct Sim {
    child: Child,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(sim_bin: &Path, dir: &Path, package: &str) -> anyhow::Result<(Sim, PathBuf)> {
    let kubeconfig = dir.join(format!("{package}.kubeconfig"));
    let log = fs::File::create(dir.join(format!("{package}.sim.log")))?;
    let mut child = Command::new(sim_bin)
        .args(["up", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", sim_bin.display()))?;
    let stdout = child.stdout.take().context("sim stdout")?;
    let sim = Sim { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(SIM_DEADLINE).with_context(|| {
        format!("http-add-on-sim did not print `ready` within {SIM_DEADLINE:?}")
    })?;
    Ok((sim, kubeconfig))
}

fn run_suite(
    suite: &Suite,
    exe: &Path,
    sim_bin: &Path,
    scratch: &Path,
) -> anyhow::Result<Vec<Row>> {
    let logs = scratch.join("logs");
    fs::create_dir_all(&logs)?;
    let (_sim, kubeconfig) = start_sim(sim_bin, &logs, suite.package)?;
    let not_applicable: Vec<_> = NOT_APPLICABLE
        .iter()
        .filter(|(package, _, _)| *package == suite.package)
        .collect();
    let mut cmd = Command::new(exe);
    // One test at a time: they share one cluster, as they would in kube-rs's CI job.
    cmd.args(["--ignored", "--exact", "--test-threads", "1"]);
    for (_, test, _) in &not_applicable {
        cmd.args(["--skip", test]);
    }
    eprintln!(
        "$ {} --ignored (KUBECONFIG={})",
        suite.package,
        kubeconfig.display()
    );
    let mut child = cmd
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_BACKTRACE", "0")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .current_dir(scratch.join(suite.package))
        .stdout(Stdio::piped())
        .stderr(fs::File::create(
            logs.join(format!("{}.stderr.log", suite.package)),
        )?)
        .spawn()
        .with_context(|| format!("running {}", exe.display()))?;
    let mut stdout = child.stdout.take().context("test stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let (output, timed_out) = match rx.recv_timeout(SUITE_DEADLINE) {
        Ok(text) => (text, false),
        Err(_) => {
            let _ = child.kill();
            (rx.recv().unwrap_or_default(), true)
        }
    };
    let _ = child.wait();
    fs::write(logs.join(format!("{}.stdout.log", suite.package)), &output)?;

    let mut rows: Vec<Row> = parse_libtest(&output, timed_out)
        .into_iter()
        .map(|(test, outcome)| Row {
            package: suite.package,
            test,
            outcome,
        })
        .collect();
    rows.extend(not_applicable.iter().map(|(package, test, why)| Row {
        package,
        test: (*test).to_owned(),
        outcome: Outcome::NotApplicable(why),
    }));
    Ok(rows)
}

/// Per-test outcomes from libtest's plain output: `test NAME ... ok|FAILED` lines, and the
/// first lines of each failure's `---- NAME stdout ----` section as the reason. A test that
/// started but printed no result (the run was killed) fails with "did not finish".
fn parse_libtest(output: &str, timed_out: bool) -> Vec<(String, Outcome)> {
    let mut results: Vec<(String, Outcome)> = Vec::new();
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("test ") {
            // With one test thread, a test that never ends leaves `test NAME ... ` behind.
            let rest = format!("{} ", rest.trim_end());
            if let Some((name, result)) = rest.split_once(" ... ") {
                let outcome = match result.trim() {
                    "ok" => Outcome::Passed,
                    "ignored" => continue,
                    "" if timed_out => {
                        Outcome::Failed(format!("did not finish within {SUITE_DEADLINE:?}"))
                    }
                    "" => Outcome::Failed("did not finish".to_owned()),
                    _ => Outcome::Failed(String::new()),
                };
                results.push((name.to_owned(), outcome));
                continue;
            }
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            section = Some(name.to_owned());
            continue;
        }
        if line == "failures:" || line.starts_with("test result:") {
            section = None;
            continue;
        }
        if let Some(name) = &section {
            let text = line.trim();
            if !text.is_empty() && !text.starts_with("note: run with `RUST_BACKTRACE") {
                reasons
                    .entry(name.clone())
                    .or_default()
                    .push(text.to_owned());
            }
        }
    }
    for (name, outcome) in &mut results {
        if let Outcome::Failed(why) = outcome
            && why.is_empty()
        {
            *why = reasons
                .get(name)
                .map(|lines| summarise(lines))
                .unwrap_or_else(|| "failed (no output)".to_owned());
        }
    }
    results
}

/// A failure's reason on one line: the panic message (not the "panicked at" location) or the
/// returned error.
fn summarise(lines: &[String]) -> String {
    // `Error: Api(Status { .., code: 404, message: "..", .. })` → `API 404: ..`.
    let status =
        regex::Regex::new(r#"^Error: Api\(Status \{.*?code: (\d+), message: "((?:[^"\\]|\\.)*)""#)
            .expect("valid regex");
    let text: Vec<String> = lines
        .iter()
        .filter(|l| !(l.starts_with("thread '") && l.contains("panicked at")))
        .take(3)
        .map(|l| match status.captures(l) {
            Some(c) => format!("API {}: {}", &c[1], c[2].replace("\\\"", "\"")),
            None => l.clone(),
        })
        .collect();
    let mut text = text.join(" / ");
    if text.chars().count() > 220 {
        text = text.chars().take(217).collect::<String>() + "...";
    }
    text
}

fn print_table(version: &str, rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.package.len() + 2 + r.test.len())
        .max()
        .unwrap_or(0);
    println!("\nkube-rs {version} cluster tests on http-add-on-sim\n");
    println!("{:<width$}  {:<6}  reason", "test", "result");
    println!("{}", "-".repeat(width + 40));
    let (mut passed, mut failed, mut na) = (0, 0, 0);
    for row in rows {
        let name = format!("{}::{}", row.package, row.test);
        let (result, reason) = match &row.outcome {
            Outcome::Passed => {
                passed += 1;
                ("pass", "")
            }
            Outcome::Failed(why) => {
                failed += 1;
                ("FAIL", why.as_str())
            }
            Outcome::NotApplicable(why) => {
                na += 1;
                ("n.a.", *why)
            }
        };
        println!("{name:<width$}  {result:<6}  {reason}");
    }
    println!(
        "\n{passed} passed, {failed} failed, {na} not applicable (need real containers or tools)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_output_gives_outcomes_and_reasons() {
        let output = "\nrunning 3 tests\n\
            test a::ok_one ... ok\n\
            test a::bad_one ... FAILED\n\
            test a::panics ... FAILED\n\
            \nfailures:\n\n\
            ---- a::bad_one stdout ----\n\
            Error: Api(Status { status: Some(Failure), code: 404, message: \"services \\\"kubernetes\\\" not found\", reason: \"NotFound\" })\n\n\
            ---- a::panics stdout ----\n\n\
            thread 'a::panics' (42) panicked at src/lib.rs:1:1:\n\
            should have API groups\n\
            note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\
            \nfailures:\n    a::bad_one\n    a::panics\n\n\
            test result: FAILED. 1 passed; 2 failed; 0 ignored\n";
        assert_eq!(
            parse_libtest(output, false),
            vec![
                ("a::ok_one".to_owned(), Outcome::Passed),
                (
                    "a::bad_one".to_owned(),
                    Outcome::Failed(r#"API 404: services "kubernetes" not found"#.to_owned())
                ),
                (
                    "a::panics".to_owned(),
                    Outcome::Failed("should have API groups".to_owned())
                ),
            ]
        );
    }

    #[test]
    fn a_test_cut_off_by_the_deadline_fails() {
        let output = "running 2 tests\ntest a::quick ... ok\ntest a::hangs ...";
        let results = parse_libtest(output, true);
        assert_eq!(results[0], ("a::quick".to_owned(), Outcome::Passed));
        assert!(
            matches!(&results[1], (name, Outcome::Failed(why)) if name == "a::hangs" && why.contains("did not finish")),
            "{results:?}"
        );
    }

    #[test]
    fn every_not_applicable_test_names_a_suite_and_a_reason() {
        for (package, test, why) in NOT_APPLICABLE {
            assert!(SUITES.iter().any(|s| s.package == *package), "{package}");
            assert!(test.contains("::") && !why.is_empty(), "{test}");
        }
    }
}
