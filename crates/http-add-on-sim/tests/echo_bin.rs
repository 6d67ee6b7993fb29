//! The `echo` binary (the e2e sample app image) as a process: configured by environment
//! variables, it serves the sim's pod app on loopback.

use std::net::{SocketAddr, TcpListener};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Bound on every wait of these tests.
const DEADLINE: Duration = Duration::from_secs(30);
/// Attempts when the picked port is taken by someone else meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A running `echo` process, killed on drop.
struct Echo {
    child: Child,
    address: SocketAddr,
    /// When the process was spawned.
    spawned: Instant,
    /// When it printed that it listens.
    ready: Instant,
    /// Whether its port accepted a connection right after the spawn.
    accepting_at_spawn: bool,
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `echo` on a free loopback port with only `env` set (plus the address).
fn spawn(env: &[(&str, &str)], port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_echo"))
        .env_clear()
        .env("LISTEN_ADDRESS", "127.0.0.1")
        .env("PORT", port.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the echo binary")
}

/// Waits (bounded) for the line announcing the listener; `None` when stdout closes first.
async fn wait_listening(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<SocketAddr> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("echo did not print `echo listening` in time")
            .expect("reading echo's stdout")?;
        if let Some(address) = line.strip_prefix("echo listening ") {
            return Some(address.trim().parse().expect("a socket address"));
        }
    }
}

/// Exit status and stderr of a process that is expected to stop by itself.
async fn wait_exit(mut child: Child) -> (ExitStatus, String) {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        tokio::time::timeout(DEADLINE, pipe.read_to_string(&mut stderr))
            .await
            .expect("echo's stderr did not close in time")
            .expect("reading echo's stderr");
    }
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("echo did not exit in time")
        .expect("waiting for echo");
    (status, stderr)
}

impl Echo {
    /// Starts `echo` with `env` and waits until it listens, retrying when the port was taken.
    async fn start(env: &[(&str, &str)]) -> Self {
        for _ in 0..PORT_ATTEMPTS {
            let spawned = Instant::now();
            let port = free_port();
            let mut child = spawn(env, port);
            let accepting_at_spawn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            if let Some(address) = wait_listening(&mut lines).await {
                let ready = Instant::now();
                // Keep draining stdout so that the process never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Self {
                    child,
                    address,
                    spawned,
                    ready,
                    accepting_at_spawn,
                };
            }
            let (status, stderr) = wait_exit(child).await;
            assert!(
                stderr.contains("Address already in use"),
                "echo stopped before listening ({status}): {stderr}"
            );
        }
        panic!("no free port after {PORT_ATTEMPTS} attempts");
    }

    /// GETs `path`; returns the status and the JSON body (`Null` when not JSON).
    async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri = format!("http://{}{path}", self.address).parse().unwrap();
        let response = tokio::time::timeout(DEADLINE, client.get(uri))
            .await
            .expect("echo did not answer in time")
            .expect("requesting echo");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}

/// Exit status and stderr of `echo` run with `env`, which must stop it before it listens.
async fn run_to_exit(env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = spawn(env, free_port());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        wait_listening(&mut lines).await,
        None,
        "echo must not listen"
    );
    wait_exit(child).await
}

#[tokio::test]
async fn echoes_the_pod_identity_from_the_environment() {
    // Empty delays are what the downward API gives for annotations the pod does not have.
    let echo = Echo::start(&[
        ("POD_NAME", "app-7d9f-xk2p1"),
        ("POD_NAMESPACE", "shop"),
        ("POD_IP", "10.244.0.17"),
        ("ECHO_STARTUP_DELAY", ""),
        ("ECHO_RESPONSE_DELAY", ""),
    ])
    .await;
    let (status, body) = echo.get("/some/path?x=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pod"], "app-7d9f-xk2p1");
    assert_eq!(body["namespace"], "shop");
    assert_eq!(body["podIp"], "10.244.0.17");
    assert_eq!(body["path"], "/some/path");
    assert_eq!(body["query"], "x=1");
    assert_eq!(body["host"], echo.address.to_string());
}

#[tokio::test]
async fn status_and_delay_paths() {
    let echo = Echo::start(&[("POD_NAME", "app-1")]).await;
    assert_eq!(echo.get("/status/418").await.0, StatusCode::IM_A_TEAPOT);
    assert_eq!(echo.get("/status/abc").await.0, StatusCode::BAD_REQUEST);
    let started = Instant::now();
    let (status, body) = echo.get("/delay/200ms").await;
    assert_eq!((status, &body["pod"]), (StatusCode::OK, &"app-1".into()));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn the_response_delay_is_added_to_every_response() {
    let echo = Echo::start(&[("ECHO_RESPONSE_DELAY", "300ms")]).await;
    let started = Instant::now();
    let (status, body) = echo.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["pod"], "unknown", "no POD_NAME nor HOSTNAME set");
}

#[tokio::test]
async fn the_startup_delay_passes_before_it_listens() {
    let delay = Duration::from_millis(700);
    let echo = Echo::start(&[("ECHO_STARTUP_DELAY", "700ms")]).await;
    assert!(
        !echo.accepting_at_spawn,
        "accepting before the start-up delay"
    );
    assert!(
        echo.ready - echo.spawned >= delay,
        "listening after {:?}, before the start-up delay",
        echo.ready - echo.spawned
    );
    assert_eq!(echo.get("/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_bad_value_stops_it_naming_the_variable() {
    for (name, value) in [("ECHO_RESPONSE_DELAY", "abc"), ("PORT", "http")] {
        let (status, stderr) = run_to_exit(&[(name, value)]).await;
        assert!(!status.success(), "{name}={value}: exited with {status}");
        assert!(stderr.contains(name), "{name}={value}: stderr {stderr:?}");
    }
}

#[tokio::test]
async fn sigterm_stops_it_cleanly() {
    let mut echo = Echo::start(&[]).await;
    assert_eq!(echo.get("/").await.0, StatusCode::OK);
    let pid = echo.child.id().expect("echo is running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(kill.success());
    let status = tokio::time::timeout(DEADLINE, echo.child.wait())
        .await
        .expect("echo did not stop in time")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
