//! Helper of `cargo xtask bench cold-burst`: holds a burst of h2c requests at the interceptor
//! for a cold route, then marks the route's endpoint ready and times the release. Driven by
//! lines on stdin, it reports on stdout:
//!
//! ```text
//! bench_cold_burst --target ADDR --admin ADDR --kubeconfig PATH --host cold.test \
//!     --route default/cold --slice cold-1 --warm-host warm.test --requests 10000
//! ```
//!
//! 1. Waits until the admin port's `/queue` lists `--route` and a request to `--warm-host` over
//!    h2c is answered (so the interceptor's HTTP/2 path is resident before xtask measures the
//!    idle RSS); prints `routes known`.
//! 2. On the line `burst`: sends `--requests` GETs to `--host`, [`STREAMS`] streams on each
//!    h2c connection (the interceptor's limit per connection), and prints `held <n>` once
//!    `/queue` counts all of them in flight.
//! 3. On the line `release`: sets `conditions.ready` on every endpoint of the EndpointSlice
//!    `--slice` (a replace through the API) and prints one JSON line: the requests answered
//!    2xx, the failed ones, and the milliseconds from sending the replace to the API's answer,
//!    to the first and to the last held request answered.
//!
//! Every wait has a deadline; loopback only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use h2::client::SendRequest;
use http::Request;
use http_add_on_types::queue::{QueueCount, QueueCounts};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Concurrent streams per h2c connection: the interceptor's `MAX_CONCURRENT_STREAMS`.
const STREAMS: usize = 200;
/// Longest wait for the routes, for the burst to be held and for its answers.
const WAIT: Duration = Duration::from_secs(60);

/// The command line.
struct Options {
    target: SocketAddr,
    admin: SocketAddr,
    kubeconfig: String,
    host: String,
    route: String,
    slice: String,
    warm_host: String,
    requests: usize,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let name = flag
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument {flag}"))?
                .to_owned();
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            values.insert(name, value);
        }
        fn take<T: FromStr>(values: &HashMap<String, String>, name: &str) -> anyhow::Result<T>
        where
            T::Err: std::error::Error + Send + Sync + 'static,
        {
            let value = values
                .get(name)
                .with_context(|| format!("missing --{name}"))?;
            value.parse().with_context(|| format!("--{name} {value}"))
        }
        Ok(Self {
            target: take(&values, "target")?,
            admin: take(&values, "admin")?,
            kubeconfig: take(&values, "kubeconfig")?,
            host: take(&values, "host")?,
            route: take(&values, "route")?,
            slice: take(&values, "slice")?,
            warm_host: take(&values, "warm-host")?,
            requests: take(&values, "requests")?,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

/// Lines of stdin, read on a thread (the runtime has no async stdin).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.blocking_send(line.trim().to_owned()).is_err() {
                break;
            }
        }
    });
    rx
}

async fn expect_line(lines: &mut mpsc::Receiver<String>, want: &str) -> anyhow::Result<()> {
    match lines.recv().await {
        Some(line) if line == want => Ok(()),
        Some(line) => bail!("expected {want:?} on stdin, got {line:?}"),
        None => bail!("stdin closed before {want:?}"),
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let mut lines = stdin_lines();
    wait_queue(&options, "the route listed on /queue", |_| true).await?;
    let mut warm = h2c(options.target).await?;
    let answered = exchange(&mut warm, &options.warm_host).await;
    if answered.is_none() {
        bail!("{} was not answered 2xx over h2c", options.warm_host);
    }
    println!("routes known");

    expect_line(&mut lines, "burst").await?;
    let mut held = JoinSet::new();
    let mut connections = Vec::new();
    for _ in 0..options.requests.div_ceil(STREAMS) {
        connections.push(h2c(options.target).await?);
    }
    for i in 0..options.requests {
        let mut connection = connections[i / STREAMS].clone();
        let host = options.host.clone();
        held.spawn(async move { exchange(&mut connection, &host).await });
    }
    let all = options.requests as u64;
    let target = i64::try_from(all)?;
    wait_queue(&options, "the whole burst held", |count| {
        count.concurrency >= target
    })
    .await?;
    println!("held {all}");

    expect_line(&mut lines, "release").await?;
    let slices: Api<EndpointSlice> = Api::default_namespaced(client(&options.kubeconfig).await?);
    let mut slice = slices.get(&options.slice).await?;
    for endpoint in &mut slice.endpoints {
        endpoint.conditions.get_or_insert_default().ready = Some(true);
    }
    let released = Instant::now();
    slices
        .replace(&options.slice, &PostParams::default(), &slice)
        .await?;
    let api_ms = ms(released, Instant::now());
    let (mut ok, mut first, mut last) = (0u64, None::<Instant>, None::<Instant>);
    let deadline = released + WAIT;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, held.join_next()).await {
        if let Ok(Some(at)) = joined {
            ok += 1;
            first = Some(first.map_or(at, |f| f.min(at)));
            last = Some(last.map_or(at, |l| l.max(at)));
        }
    }
    println!(
        "{}",
        json!({
            "answered": ok,
            "failed": all - ok,
            "api_ms": api_ms,
            "first_ms": first.map(|at| ms(released, at)),
            "last_ms": last.map(|at| ms(released, at)),
        })
    );
    Ok(())
}

fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

async fn client(kubeconfig: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(kube::Client::try_from(config)?)
}

/// An h2c (prior knowledge) connection to `target`, driven by a task of its own.
async fn h2c(target: SocketAddr) -> anyhow::Result<SendRequest<Bytes>> {
    let tcp = TcpStream::connect(target).await?;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// One GET of `/` for `host` on its own stream; when its whole answer was a 2xx.
async fn exchange(connection: &mut SendRequest<Bytes>, host: &str) -> Option<Instant> {
    let ready = connection.clone().ready().await.ok()?;
    *connection = ready;
    let request = Request::get(format!("http://{host}/")).body(()).ok()?;
    let (response, _) = connection.send_request(request, true).ok()?;
    let response = response.await.ok()?;
    let success = response.status().is_success();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    success.then(Instant::now)
}

/// The admin port's `/queue`.
async fn queue(admin: SocketAddr) -> anyhow::Result<QueueCounts> {
    let tcp = TcpStream::connect(admin).await?;
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = Request::get("/queue")
        .header("host", admin.to_string())
        .body(Empty::<Bytes>::new())?;
    let body = send
        .send_request(request)
        .await?
        .collect()
        .await?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Polls `/queue` until the route's counts satisfy `done`, within [`WAIT`].
async fn wait_queue(
    options: &Options,
    what: &str,
    done: impl Fn(&QueueCount) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut seen = None;
    loop {
        if let Ok(counts) = queue(options.admin).await {
            match counts.get(&options.route) {
                Some(count) if done(count) => return Ok(()),
                count => seen = count.copied(),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "waited {WAIT:?} for {what}; last count of {}: {seen:?}",
                options.route
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
