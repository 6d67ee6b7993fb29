//! Helper of `cargo xtask bench proxy`: a minimal backend, the cluster set-up for the
//! interceptor, and a keep-alive HTTP/1.1 load generator (closed loop for throughput, open loop
//! at a fixed rate for latency, corrected for coordinated omission).
//!
//! ```text
//! bench_proxy backend --listen 127.0.0.1:0            # prints "listening <addr>"
//! bench_proxy setup --kubeconfig PATH --backend ADDR --host bench.test
//! bench_proxy load --target ADDR --host bench.test --connections 64 --seconds 5 [--rate 2000]
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
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

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
        _ => bail!("usage: bench_proxy backend|setup|load ..."),
    }
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello world"))))
}

async fn backend(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
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

async fn setup(args: &[String]) -> anyhow::Result<()> {
    let kubeconfig = required(args, "--kubeconfig")?;
    let backend: SocketAddr = required(args, "--backend")?.parse()?;
    let host = required(args, "--host")?;
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
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "bench" },
        "spec": { "ports": [{ "name": "http", "port": 80 }] }
    }))?;
    Api::<Service>::default_namespaced(client.clone())
        .patch("bench", &pp, &Patch::Apply(&svc))
        .await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "bench-1", "labels": { "kubernetes.io/service-name": "bench" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": backend.port() }],
        "endpoints": [{ "addresses": [backend.ip().to_string()], "conditions": { "ready": true } }]
    }))?;
    Api::<EndpointSlice>::default_namespaced(client.clone())
        .patch("bench-1", &pp, &Patch::Apply(&slice))
        .await?;
    // The CRD may need a moment to be served after registration.
    let hso: HTTPScaledObject = serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": { "name": "bench" },
        "spec": { "hosts": [host], "scaleTargetRef": { "name": "bench", "service": "bench", "port": 80 } }
    }))?;
    let api = Api::<HTTPScaledObject>::default_namespaced(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match api.patch("bench", &pp, &Patch::Apply(&hso)).await {
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

struct Shared {
    target: SocketAddr,
    host: String,
    path: String,
    errors: AtomicU64,
}

async fn connect(
    shared: &Shared,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(shared.target).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One connection's loop; with `rate`, request `i` of this connection is due at
/// `start + (index + i * connections) / rate` and its latency counts from then.
async fn worker(
    shared: Arc<Shared>,
    index: usize,
    connections: usize,
    rate: Option<f64>,
    start: Instant,
    end: Instant,
) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut sender = None;
    let mut i: u64 = 0;
    loop {
        let due = rate.map(|r| {
            start + Duration::from_secs_f64((index as f64 + (i as f64) * connections as f64) / r)
        });
        // With a schedule, latency counts from the due time when this connection fell behind
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
            match connect(&shared).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = Request::get(shared.path.as_str())
            .header("host", shared.host.as_str())
            .body(Empty::new())
            .expect("a valid request");
        let ok = match s.send_request(req).await {
            Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
            Err(_) => false,
        };
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

async fn load(args: &[String]) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        target: required(args, "--target")?.parse()?,
        host: arg(args, "--host").unwrap_or_else(|| "bench.test".into()),
        path: arg(args, "--path").unwrap_or_else(|| "/".into()),
        errors: AtomicU64::new(0),
    });
    let connections: usize = arg(args, "--connections").map_or(Ok(64), |v| v.parse())?;
    let seconds: f64 = arg(args, "--seconds").map_or(Ok(5.0), |v| v.parse())?;
    let rate: Option<f64> = arg(args, "--rate").map(|v| v.parse()).transpose()?;
    // Warm-up: open the connections and fill the proxy's upstream pool.
    {
        let start = Instant::now();
        let end = start + Duration::from_millis(500);
        let tasks: Vec<_> = (0..connections)
            .map(|i| tokio::spawn(worker(shared.clone(), i, connections, None, start, end)))
            .collect();
        for t in tasks {
            t.await?;
        }
        shared.errors.store(0, Ordering::Relaxed);
    }
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(worker(shared.clone(), i, connections, rate, start, end)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
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
