//! `cargo xtask demo`: the whole system on the simulated cluster, a sample app scaled by its
//! traffic, and a live view of replicas, in-flight requests, rate and latency.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_add_on_types::queue::QueueCounts;
use serde_json::json;

use crate::app::{self, App};
use crate::http::HttpClient;
use crate::sim::SimSystem;
use crate::testbed::Testbed;

/// Namespace and name of the sample app.
const NAMESPACE: &str = "demo";
const APP: &str = "hello";
const HOST: &str = "hello.demo.test";

/// Live counters shared by the traffic workers and the view.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    cold_starts: AtomicU64,
    /// Latencies of the requests completed since the view last looked.
    recent: Mutex<Vec<Duration>>,
    first_cold_start: Mutex<Option<Duration>>,
}

/// Traffic workers whose count the script changes.
struct Traffic {
    wanted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(tb: &Testbed, stats: Arc<Stats>, max_workers: usize) -> Self {
        let wanted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let http = HttpClient::new(Duration::from_secs(60));
        let tasks = (0..max_workers)
            .map(|index| {
                let (wanted, stop, stats, http, proxy) = (
                    wanted.clone(),
                    stop.clone(),
                    stats.clone(),
                    http.clone(),
                    tb.proxy,
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if index >= wanted.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                        let started = Instant::now();
                        match http.get(proxy, HOST, "/", &[]).await {
                            Ok(reply) if reply.status.is_success() => {
                                let took = started.elapsed();
                                stats.ok.fetch_add(1, Ordering::Relaxed);
                                if reply.cold_start() == Some(true) {
                                    stats.cold_starts.fetch_add(1, Ordering::Relaxed);
                                    stats.first_cold_start.lock().unwrap().get_or_insert(took);
                                }
                                stats.recent.lock().unwrap().push(took);
                            }
                            _ => {
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // About 20 requests per second per worker.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .collect();
        Self {
            wanted,
            stop,
            tasks,
        }
    }

    fn set_workers(&self, n: usize) {
        self.wanted.store(n, Ordering::Relaxed);
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One frame of the view.
struct Frame {
    phase: &'static str,
    desired: i32,
    ready: i32,
    in_flight: i64,
    rate: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    cold_starts: u64,
    sent: u64,
    failed: u64,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
}

fn render(
    frame: &Frame,
    elapsed: Duration,
    tty: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if tty {
        let bar = "█".repeat(frame.ready.max(0) as usize)
            + &"░".repeat((frame.desired - frame.ready).max(0) as usize);
        write!(out, "\x1b[8A\x1b[J")?;
        writeln!(
            out,
            "  t={:>5.1}s  phase: {}",
            elapsed.as_secs_f64(),
            frame.phase
        )?;
        writeln!(
            out,
            "  replicas   desired {:>2}  ready {:>2}  {bar}",
            frame.desired, frame.ready
        )?;
        writeln!(out, "  in-flight  {:>4}", frame.in_flight)?;
        writeln!(out, "  rate       {:>6.1} req/s", frame.rate)?;
        writeln!(
            out,
            "  latency    p50 {:>9}  p99 {:>9}",
            ms(frame.p50),
            ms(frame.p99)
        )?;
        writeln!(out, "  cold starts {:>3}", frame.cold_starts)?;
        writeln!(
            out,
            "  requests   sent {:>6}  failed {:>4}",
            frame.sent, frame.failed
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "t={:.1}s phase={} desired={} ready={} in_flight={} rate={:.1}/s p50={} p99={} cold_starts={} sent={} failed={}",
            elapsed.as_secs_f64(),
            frame.phase,
            frame.desired,
            frame.ready,
            frame.in_flight,
            frame.rate,
            ms(frame.p50),
            ms(frame.p99),
            frame.cold_starts,
            frame.sent,
            frame.failed
        )?;
    }
    out.flush()
}

async fn in_flight(http: &HttpClient, admins: &[std::net::SocketAddr]) -> i64 {
    let mut total = 0;
    for admin in admins {
        if let Ok(reply) = http.get(*admin, "localhost", "/queue", &[]).await
            && let Ok(counts) = serde_json::from_slice::<QueueCounts>(&reply.body)
        {
            total += counts
                .get(&format!("{NAMESPACE}/{APP}"))
                .map_or(0, |c| c.concurrency);
        }
    }
    total
}

/// Runs the demo on an already started system; returns (sent, failed).
pub async fn run(system: &SimSystem, keep: bool) -> anyhow::Result<(u64, u64)> {
    let tb = system.testbed();
    app::create_namespace(&tb, NAMESPACE).await?;
    let hello = App::new(NAMESPACE, APP)
        .startup_delay("1s")
        .response_delay("100ms");
    hello.deploy(&tb).await?;
    let spec = json!({
        "scalingMetric": {"concurrency": {"targetValue": 2}},
        "replicas": {"min": 0, "max": 5},
        "scaledownPeriod": 5
    });
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&hello, &[HOST], spec)).await?;
    crate::scenarios::wait_route_known(&tb, &format!("{NAMESPACE}/{APP}")).await?;
    println!(
        "sample app `{APP}` deployed in namespace `{NAMESPACE}` at 0 replicas; HTTPScaledObject: min 0, max 5, concurrency target 2, scaledownPeriod 5s"
    );

    let tty = std::io::stdout().is_terminal();
    if tty {
        print!("{}", "\n".repeat(8));
    }
    let stats = Arc::new(Stats::default());
    let traffic = Traffic::start(&tb, stats.clone(), 12);
    // The script: (phase, workers, how long; None = until the app is back at zero).
    let script: [(&'static str, usize, Option<Duration>); 5] = [
        ("first request from zero", 1, Some(Duration::from_secs(5))),
        ("burst", 12, Some(Duration::from_secs(15))),
        ("steady load", 3, Some(Duration::from_secs(12))),
        ("silence (scaling back to zero)", 0, None),
        ("done", 0, Some(Duration::ZERO)),
    ];
    let http = HttpClient::new(Duration::from_secs(2));
    let admins = tb.control.interceptor_admins();
    let started = Instant::now();
    let mut last_ok = 0;
    let mut last_tick = Instant::now();
    let mut stdout = std::io::stdout();
    for (phase, workers, length) in script {
        traffic.set_workers(workers);
        let phase_started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(if tty { 250 } else { 1000 })).await;
            let (desired, ready) = app::replicas(&tb, NAMESPACE, APP).await.unwrap_or((0, 0));
            let ok = stats.ok.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (ok - last_ok) as f64 / now.duration_since(last_tick).as_secs_f64();
            (last_ok, last_tick) = (ok, now);
            let mut recent = std::mem::take(&mut *stats.recent.lock().unwrap());
            recent.sort_unstable();
            let q = |q: f64| {
                (!recent.is_empty())
                    .then(|| recent[((recent.len() - 1) as f64 * q).round() as usize])
            };
            let frame = Frame {
                phase,
                desired,
                ready,
                in_flight: in_flight(&http, &admins).await,
                rate,
                p50: q(0.5),
                p99: q(0.99),
                cold_starts: stats.cold_starts.load(Ordering::Relaxed),
                sent: stats.sent.load(Ordering::Relaxed),
                failed: stats.failed.load(Ordering::Relaxed),
            };
            render(&frame, started.elapsed(), tty, &mut stdout)?;
            let over = match length {
                Some(length) => phase_started.elapsed() >= length,
                None => desired == 0 || phase_started.elapsed() > Duration::from_secs(60),
            };
            if over {
                break;
            }
        }
    }
    traffic.stop().await;
    let sent = stats.sent.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let cold = *stats.first_cold_start.lock().unwrap();
    println!(
        "\nsummary: {sent} requests sent, {failed} failed; first cold start answered in {} (the app takes 1s to start)",
        ms(cold)
    );
    if keep {
        println!("\nthe system keeps running (Ctrl-C to stop):");
        println!(
            "  kubectl --kubeconfig {} get deploy,pods,httpscaledobjects,scaledobjects -A",
            system.kubeconfig.display()
        );
        println!("  curl -H 'Host: {HOST}' http://{}/", tb.proxy);
        tokio::signal::ctrl_c().await?;
    }
    Ok((sent, failed))
}
