//! Activation latency, run by `cargo xtask bench activation`: the time from a request arriving
//! at an interceptor for a route with 0 replicas (the request is held) to a `StreamIsActive`
//! client (KEDA's role) receiving `true`.
//!
//! Two set-ups on the in-process simulated API server with a real interceptor and the scaler:
//! - `push`: the interceptor pushes counts (`/queue/stream`) and `StreamIsActive` answers the
//!   moment a route becomes active (this project's design);
//! - `poll`: the upstream design as the baseline: the scaler polls `/queue` every 500 ms (the
//!   interceptor's stream is hidden behind a shim answering 404) and `StreamIsActive` only
//!   answers every 200 ms.
//!
//! Usage: `bench_activation [--trials N] [--mode push|poll|both]` (defaults: 200, both).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_add_on_scaler::Config;
use http_add_on_scaler::naming::HTTP_SCALED_OBJECT_KEY;
use http_add_on_sim::{Sim, SimConfig};
use http_add_on_types::crd::{HTTPScaledObject, generated_crds};
use http_add_on_types::proto::externalscaler::ScaledObjectRef;
use http_add_on_types::proto::externalscaler::external_scaler_client::ExternalScalerClient;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

const ADMIN_NAMESPACE: &str = "keda";
const ADMIN_SERVICE: &str = "interceptor-admin";
const NAMESPACE: &str = "default";
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Push,
    Poll,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::Push => "push stream + StreamIsActive on change",
            Mode::Poll => "polling baseline: 500ms tick + 200ms stream interval",
        }
    }

    /// Routes measured in parallel: one for push (nothing to overlap), several for the slow
    /// baseline so it finishes in reasonable time (its latency is set by timers, not load).
    fn routes(self) -> usize {
        match self {
            Mode::Push => 1,
            Mode::Poll => 8,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut trials = 200usize;
    let mut modes = vec![Mode::Push, Mode::Poll];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trials" => {
                trials = args
                    .next()
                    .context("--trials needs a number")?
                    .parse()
                    .context("--trials needs a number")?;
            }
            "--mode" => {
                modes = match args.next().as_deref() {
                    Some("push") => vec![Mode::Push],
                    Some("poll") => vec![Mode::Poll],
                    Some("both") => vec![Mode::Push, Mode::Poll],
                    other => bail!("--mode must be push, poll or both, not {other:?}"),
                };
            }
            other => bail!("unknown argument {other:?} (use --trials N, --mode push|poll|both)"),
        }
    }
    if trials == 0 {
        bail!("--trials must be at least 1");
    }
    println!("activation latency: request at an interceptor (0 replicas) -> StreamIsActive true");
    for mode in modes {
        let samples = measure(mode, trials).await?;
        report(mode, &samples);
    }
    Ok(())
}

fn report(mode: Mode, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let pick = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = sorted.iter().map(|d| ms(*d)).sum::<f64>() / sorted.len() as f64;
    println!(
        "{:<5} ({}): trials={} p50={:.2}ms p99={:.2}ms mean={:.2}ms min={:.2}ms max={:.2}ms",
        format!("{mode:?}").to_lowercase(),
        mode.describe(),
        sorted.len(),
        ms(pick(0.50)),
        ms(pick(0.99)),
        mean,
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
}

async fn measure(mode: Mode, trials: usize) -> anyhow::Result<Vec<Duration>> {
    let sim = Sim::start(SimConfig::apiserver_only()).await?;
    sim.create_namespace(ADMIN_NAMESPACE).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    for (_, crd) in generated_crds() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let mut interceptor_config = http_add_on_interceptor::Config::for_tests();
    interceptor_config.drain_timeout = Duration::from_millis(1);
    let interceptor =
        http_add_on_interceptor::Interceptor::start(interceptor_config, sim.client()).await?;
    interceptor.wait_synced().await;

    let routes = mode.routes().min(trials);
    for r in 0..routes {
        create_route(&sim, r).await?;
    }
    let admin = match mode {
        Mode::Push => interceptor.admin_addr(),
        Mode::Poll => start_poll_only_shim(interceptor.admin_addr()).await?,
    };
    create_admin_endpoint(&sim, admin).await?;

    let mut config = Config::local(ADMIN_NAMESPACE, ADMIN_SERVICE);
    config.queue_tick = Duration::from_millis(500);
    config.stream_interval = Duration::from_millis(200);
    config.push_activation = mode == Mode::Push;
    let scaler = http_add_on_scaler::start(config, sim.client()).await?;
    let keda = ExternalScalerClient::connect(format!("http://{}", scaler.grpc_addr())).await?;

    // Ready: the interceptor routes every host and the scaler knows every route.
    let deadline = Instant::now() + STEP_TIMEOUT;
    for r in 0..routes {
        let key = format!("{NAMESPACE}/{}", route_name(r));
        while !interceptor.counts().snapshot().contains_key(&key)
            || keda.clone().is_active(sor(r)).await.is_err()
        {
            if Instant::now() > deadline {
                bail!("route {key} did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let proxy = interceptor.proxy_addr();
    let mut workers = tokio::task::JoinSet::new();
    for r in 0..routes {
        let n = trials / routes + usize::from(r < trials % routes);
        let keda = keda.clone();
        workers.spawn(async move { run_trials(mode, keda, proxy, r, n).await });
    }
    let mut samples = Vec::with_capacity(trials);
    while let Some(result) = workers.join_next().await {
        samples.extend(result.context("trial worker panicked")??);
    }
    let _ = scaler.shutdown().await;
    interceptor.shutdown().await;
    sim.shutdown().await;
    Ok(samples)
}

async fn run_trials(
    mode: Mode,
    keda: ExternalScalerClient<Channel>,
    proxy: SocketAddr,
    route: usize,
    trials: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut stream = keda
        .clone()
        .stream_is_active(sor(route))
        .await?
        .into_inner();
    let host = format!("{}.test", route_name(route));
    let mut rng = Rng::seeded(route as u64);
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        wait_for(&mut stream, false).await?;
        if mode == Mode::Poll {
            // Land anywhere in the polling cycle, as real traffic does.
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        }
        let mut conn = TcpStream::connect(proxy).await?;
        conn.set_nodelay(true)?;
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let sent = Instant::now();
        conn.write_all(request.as_bytes()).await?;
        wait_for(&mut stream, true).await?;
        samples.push(sent.elapsed());
        // The client gives up: the interceptor counts the request out, the route goes idle.
        drop(conn);
    }
    Ok(samples)
}

async fn wait_for(
    stream: &mut tonic::Streaming<http_add_on_types::proto::externalscaler::IsActiveResponse>,
    want: bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("StreamIsActive did not say {want} in time"))??
            .context("StreamIsActive ended")?;
        if message.result == want {
            return Ok(());
        }
    }
}

fn route_name(r: usize) -> String {
    format!("bench-{r}")
}

fn sor(r: usize) -> ScaledObjectRef {
    ScaledObjectRef {
        name: route_name(r),
        namespace: NAMESPACE.to_owned(),
        scaler_metadata: [(HTTP_SCALED_OBJECT_KEY.to_owned(), route_name(r))].into(),
    }
}

async fn create_route(sim: &Sim, r: usize) -> anyhow::Result<()> {
    let name = route_name(r);
    let object: HTTPScaledObject = serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "hosts": [format!("{name}.test")],
            "scaleTargetRef": {"name": name, "kind": "Deployment", "apiVersion": "apps/v1", "service": name, "port": 8080},
            "replicas": {"min": 0, "max": 10},
        },
    }))?;
    Api::<HTTPScaledObject>::namespaced(sim.client(), NAMESPACE)
        .create(&PostParams::default(), &object)
        .await?;
    // The app's Service has no endpoints: 0 replicas, so requests are held.
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 8080, "targetPort": 8080}]},
    }))?;
    Api::<Service>::namespaced(sim.client(), NAMESPACE)
        .create(&PostParams::default(), &service)
        .await?;
    Ok(())
}

async fn create_admin_endpoint(sim: &Sim, admin: SocketAddr) -> anyhow::Result<()> {
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {
            "name": ADMIN_SERVICE,
            "labels": {"kubernetes.io/service-name": ADMIN_SERVICE},
        },
        "addressType": "IPv4",
        "ports": [{"name": "admin", "port": admin.port()}],
        "endpoints": [{"addresses": [admin.ip().to_string()], "conditions": {"ready": true}}],
    }))?;
    Api::<EndpointSlice>::namespaced(sim.client(), ADMIN_NAMESPACE)
        .create(&PostParams::default(), &slice)
        .await?;
    Ok(())
}

/// An admin port in front of the interceptor's that hides the push stream (404), as an
/// upstream interceptor would: the scaler falls back to polling `/queue`.
async fn start_poll_only_shim(admin: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        Ok::<_, Infallible>(shim_response(admin, req.uri().path()).await)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn shim_response(admin: SocketAddr, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = if path == http_add_on_types::queue::QUEUE_STREAM_PATH {
        (StatusCode::NOT_FOUND, Bytes::from_static(b"not found"))
    } else {
        match forward(admin, path).await {
            Ok(v) => v,
            Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())),
        }
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

async fn forward(admin: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(admin).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", admin.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// xorshift64: spreads the baseline's requests over the polling cycle, reproducibly.
struct Rng(u64);

impl Rng {
    fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
