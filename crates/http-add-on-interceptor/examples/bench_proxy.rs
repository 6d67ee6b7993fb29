//! Helper of `cargo xtask bench proxy`: a minimal HTTP/1.1 backend, the cluster set-up for the
//! interceptor, and a keep-alive load generator (closed loop for throughput, open loop at a
//! fixed rate for latency, corrected for coordinated omission) speaking HTTP/1.1, h2c (prior
//! knowledge, `--streams` concurrent streams per connection) or HTTPS/1.1 (trusting only the
//! CA in `--ca`, server name = `--host`).
//!
//! ```text
//! bench_proxy backend --listen 127.0.0.1:0            # prints "listening <addr>"
//! bench_proxy setup --kubeconfig PATH --backend ADDR --host bench.test [--name bench] [--not-ready]
//! bench_proxy load --target ADDR --host bench.test --connections 64 --seconds 5 [--rate 2000]
//!                  [--protocol http1|h2c|https] [--streams 4] [--ca ca.crt]
//! bench_proxy probe --target ADDR --host bench.test [--protocol ...] [--ca ca.crt]  # one request
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response};
use http_add_on_types::crd::HTTPScaledObject;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn required(args: &[String], name: &str) -> anyhow::Result<String> {
    arg(args, name).with_context(|| format!("missing {name}"))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = arg(&args, "--threads").map_or(Ok(1), |t| t.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("backend") => runtime.block_on(backend(&required(&args, "--listen")?)),
        Some("setup") => runtime.block_on(setup(&args)),
        Some("load") => runtime.block_on(load(&args)),
        Some("probe") => runtime.block_on(probe(&args)),
        _ => bail!("usage: bench_proxy backend|setup|load|probe ..."),
    }
}

/// Accept queue of the backend's listener (Linux caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 8192;

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello world"))))
}

async fn backend(listen: &str) -> anyhow::Result<()> {
    let addr: SocketAddr = listen.parse()?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(addr)?;
    // A released cold burst opens thousands of connections at once; tokio's default backlog
    // (1024) would drop the excess SYNs and time the backend's accept queue, not the proxy.
    let listener = socket.listen(BACKLOG)?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello))
                .await;
        });
    }
}

/// The CRDs, and a route for `--host` to `--backend`: a Service `--name` (default `bench`), its
/// EndpointSlice `<name>-1` (the endpoint not ready with `--not-ready`: a cold route) and an
/// HTTPScaledObject `<name>`, all in the kubeconfig's namespace; the Service port's
/// `appProtocol` is `--app-protocol` when given.
async fn setup(args: &[String]) -> anyhow::Result<()> {
    let kubeconfig = required(args, "--kubeconfig")?;
    let backend: SocketAddr = required(args, "--backend")?.parse()?;
    let host = required(args, "--host")?;
    let name = arg(args, "--name").unwrap_or_else(|| "bench".into());
    let ready = !args.iter().any(|a| a == "--not-ready");
    let mut port = json!({ "name": "http", "port": 80 });
    if let Some(app_protocol) = arg(args, "--app-protocol") {
        port["appProtocol"] = json!(app_protocol);
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = kube::Client::try_from(config)?;
    let pp = PatchParams::apply("bench").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in http_add_on_types::crd::generated_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &pp, &Patch::Apply(&crd)).await?;
    }
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": name },
        "spec": { "ports": [port] }
    }))?;
    Api::<Service>::default_namespaced(client.clone())
        .patch(&name, &pp, &Patch::Apply(&svc))
        .await?;
    let slice_name = format!("{name}-1");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": slice_name, "labels": { "kubernetes.io/service-name": name } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": backend.port() }],
        "endpoints": [{ "addresses": [backend.ip().to_string()], "conditions": { "ready": ready } }]
    }))?;
    Api::<EndpointSlice>::default_namespaced(client.clone())
        .patch(&slice_name, &pp, &Patch::Apply(&slice))
        .await?;
    // The CRD may need a moment to be served after registration.
    let hso: HTTPScaledObject = serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": { "name": name },
        "spec": { "hosts": [host], "scaleTargetRef": { "name": name, "service": name, "port": 80 } }
    }))?;
    let api = Api::<HTTPScaledObject>::default_namespaced(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match api.patch(&name, &pp, &Patch::Apply(&hso)).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying HTTPScaledObject apply: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("ok");
    Ok(())
}

/// Longest wait for one connection set-up or one request and its response; a stuck proxy
/// counts errors instead of stalling the run past its end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the load generator speaks to the target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1 over TCP.
    Http1,
    /// HTTP/2 over TCP with prior knowledge.
    H2c,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    Https,
}

struct Shared {
    target: SocketAddr,
    protocol: Protocol,
    /// The TLS client of `Protocol::Https`.
    tls: Option<TlsConnector>,
    host: String,
    path: String,
    /// `http://host/path`: HTTP/2 carries the authority in the URI, not in a `Host` header.
    uri: http::Uri,
    errors: AtomicU64,
}

impl Shared {
    fn from_args(args: &[String]) -> anyhow::Result<Self> {
        let protocol = match arg(args, "--protocol").as_deref() {
            None | Some("http1") => Protocol::Http1,
            Some("h2c") => Protocol::H2c,
            Some("https") => Protocol::Https,
            Some(other) => bail!("unknown --protocol {other} (http1, h2c or https)"),
        };
        let host = arg(args, "--host").unwrap_or_else(|| "bench.test".into());
        let path = arg(args, "--path").unwrap_or_else(|| "/".into());
        let tls = match protocol {
            Protocol::Https => Some(tls_connector(&required(args, "--ca")?)?),
            _ => None,
        };
        Ok(Self {
            target: required(args, "--target")?.parse()?,
            protocol,
            tls,
            uri: format!("http://{host}{path}").parse()?,
            host,
            path,
            errors: AtomicU64::new(0),
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let request = match self.protocol {
            Protocol::H2c => Request::get(self.uri.clone()),
            Protocol::Http1 | Protocol::Https => {
                Request::get(self.path.as_str()).header("host", self.host.as_str())
            }
        };
        request.body(Empty::new()).expect("a valid request")
    }
}

/// A TLS client trusting only the certificates in `ca` (PEM), offering ALPN `http/1.1`.
fn tls_connector(ca: &str) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {ca}"))? {
        roots.add(cert.with_context(|| format!("reading {ca}"))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One client connection; an HTTP/2 one may be shared by several workers (clones of its
/// sender).
enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// Sends one request and reads its whole response; whether it was a success.
    async fn exchange(&mut self, request: Request<Empty<Bytes>>) -> bool {
        let response = match self {
            Sender::Http1(s) => s.send_request(request).await,
            Sender::Http2(s) => s.send_request(request).await,
        };
        match response {
            Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
            Err(_) => false,
        }
    }
}

async fn connect(shared: &Shared) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(shared.target).await?;
    stream.set_nodelay(true)?;
    match shared.protocol {
        Protocol::Http1 => {
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(Sender::Http1(sender))
        }
        Protocol::H2c => {
            let (sender, conn) =
                http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(Sender::Http2(sender))
        }
        Protocol::Https => {
            let tls = shared.tls.as_ref().context("no TLS client")?;
            let name = ServerName::try_from(shared.host.clone())?;
            let stream = tls.connect(name, stream).await?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(Sender::Http1(sender))
        }
    }
}

async fn connect_timeout(shared: &Shared) -> anyhow::Result<Sender> {
    tokio::time::timeout(REQUEST_TIMEOUT, connect(shared))
        .await
        .context("connecting timed out")?
}

/// One worker's loop (a connection, or a stream of a shared HTTP/2 connection); with `rate`,
/// request `i` of worker `index` is due at `start + (index + i * workers) / rate` and its
/// latency counts from then.
async fn worker(
    shared: Arc<Shared>,
    mut sender: Option<Sender>,
    index: usize,
    workers: usize,
    rate: Option<f64>,
    start: Instant,
    end: Instant,
) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut i: u64 = 0;
    loop {
        let due = rate.map(|r| {
            start + Duration::from_secs_f64((index as f64 + (i as f64) * workers as f64) / r)
        });
        // With a schedule, latency counts from the due time when this worker fell behind
        // (queueing is part of the latency) and from the actual send when it had to sleep
        // (the timer's millisecond granularity is not).
        let mut behind = false;
        if let Some(due) = due {
            if due >= end {
                break;
            }
            if Instant::now() < due {
                tokio::time::sleep_until(due).await;
            } else {
                behind = true;
            }
        }
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        i += 1;
        if sender.is_none() {
            match connect_timeout(&shared).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let ok = tokio::time::timeout(REQUEST_TIMEOUT, s.exchange(shared.request()))
            .await
            .unwrap_or(false);
        if !ok {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            sender = None;
            continue;
        }
        let from = match due {
            Some(due) if behind => due,
            _ => sent,
        };
        latencies.push(u32::try_from(from.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    latencies
}

/// Runs `connections` × `streams` workers (streams only for h2c; HTTP/1.1 has one request at
/// a time per connection) from `start` to `end`; every latency in microseconds.
async fn run_workers(
    shared: &Arc<Shared>,
    connections: usize,
    streams: usize,
    rate: Option<f64>,
    start: Instant,
    end: Instant,
) -> anyhow::Result<Vec<u32>> {
    let streams = if shared.protocol == Protocol::H2c {
        streams.max(1)
    } else {
        1
    };
    let workers = connections * streams;
    let mut tasks = Vec::with_capacity(workers);
    for c in 0..connections {
        // The streams of one HTTP/2 connection share it; a worker whose request fails opens
        // its own connection.
        let connection = if streams > 1 {
            match connect_timeout(shared).await {
                Ok(Sender::Http2(s)) => Some(s),
                Ok(Sender::Http1(_)) => None,
                Err(_) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        } else {
            None
        };
        for s in 0..streams {
            let index = c * streams + s;
            tasks.push(tokio::spawn(worker(
                shared.clone(),
                connection.clone().map(Sender::Http2),
                index,
                workers,
                rate,
                start,
                end,
            )));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok(all)
}

async fn load(args: &[String]) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::from_args(args)?);
    let connections: usize = arg(args, "--connections").map_or(Ok(64), |v| v.parse())?;
    let streams: usize = arg(args, "--streams").map_or(Ok(1), |v| v.parse())?;
    let seconds: f64 = arg(args, "--seconds").map_or(Ok(5.0), |v| v.parse())?;
    let rate: Option<f64> = arg(args, "--rate").map(|v| v.parse()).transpose()?;
    // Warm-up: open the connections and fill the proxy's upstream pool.
    {
        let start = Instant::now();
        let end = start + Duration::from_millis(500);
        run_workers(&shared, connections, streams, None, start, end).await?;
        shared.errors.store(0, Ordering::Relaxed);
    }
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + Duration::from_secs_f64(seconds);
    let mut all = run_workers(&shared, connections, streams, rate, start, end).await?;
    let elapsed = start.elapsed().as_secs_f64().min(seconds.max(0.001) + 1.0);
    all.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.is_empty() {
            return 0;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[idx.min(all.len() - 1)]
    };
    let out = json!({
        "requests": all.len(),
        "errors": shared.errors.load(Ordering::Relaxed),
        "seconds": elapsed,
        "rps": all.len() as f64 / seconds,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": all.last().copied().unwrap_or(0),
    });
    println!("{out}");
    Ok(())
}

/// One request on a new connection: succeeds when the answer is a 2xx within the timeout.
async fn probe(args: &[String]) -> anyhow::Result<()> {
    let shared = Shared::from_args(args)?;
    let mut sender = connect_timeout(&shared).await?;
    let ok = tokio::time::timeout(REQUEST_TIMEOUT, sender.exchange(shared.request()))
        .await
        .unwrap_or(false);
    if !ok {
        bail!("no 2xx answer from {}", shared.target);
    }
    println!("ok");
    Ok(())
}
