//! Bounded load: a fixed number of workers sending requests until a stop signal or a count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::http::HttpClient;

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Responses by status code; transport errors under 0.
    pub by_status: BTreeMap<u16, u64>,
    /// A few transport errors, for the failure message.
    pub errors: Vec<String>,
    /// Latencies of successful requests, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// Requests sent.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Requests answered 2xx.
    pub fn ok(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(code, _)| (200..300).contains(*code))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests not answered 2xx.
    pub fn failed(&self) -> u64 {
        self.total() - self.ok()
    }

    /// The `q` quantile (0..=1) of successful latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        Some(self.latencies[index])
    }

    fn merge(&mut self, other: LoadReport) {
        for (code, n) in other.by_status {
            *self.by_status.entry(code).or_default() += n;
        }
        if self.errors.len() < 5 {
            self.errors.extend(other.errors.into_iter().take(5));
        }
        self.latencies.extend(other.latencies);
    }
}

/// A request target: proxy address, Host header and path.
#[derive(Debug, Clone)]
pub struct Target {
    /// Interceptor proxy address.
    pub proxy: SocketAddr,
    /// `Host` header.
    pub host: String,
    /// Request path.
    pub path: String,
}

/// A running load; stop it with [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    workers: JoinSet<LoadReport>,
}

impl Load {
    /// Starts `workers` closed-loop workers against `target`, each pausing `pause` between
    /// requests, until stopped or `max_requests` were sent in total.
    pub fn start(target: Target, workers: usize, pause: Duration, max_requests: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let client = HttpClient::new(Duration::from_secs(60));
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let (stop, sent, client, target) =
                (stop.clone(), sent.clone(), client.clone(), target.clone());
            set.spawn(async move {
                let mut report = LoadReport::default();
                while !stop.load(Ordering::Relaxed)
                    && sent.fetch_add(1, Ordering::Relaxed) < max_requests
                {
                    let started = Instant::now();
                    match client
                        .get(target.proxy, &target.host, &target.path, &[])
                        .await
                    {
                        Ok(reply) => {
                            *report.by_status.entry(reply.status.as_u16()).or_default() += 1;
                            if reply.status.is_success() {
                                report.latencies.push(started.elapsed());
                            } else if report.errors.len() < 5 {
                                report.errors.push(format!(
                                    "{}: {}",
                                    reply.status,
                                    reply.text().trim()
                                ));
                            }
                        }
                        Err(e) => {
                            *report.by_status.entry(0).or_default() += 1;
                            if report.errors.len() < 5 {
                                report.errors.push(format!("{e:#}"));
                            }
                        }
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                report
            });
        }
        Self {
            stop,
            sent,
            workers: set,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the workers (in-flight requests finish) and returns what they saw.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await
    }

    /// Waits until the workers end by themselves (the request budget is spent).
    pub async fn finish(&mut self) -> LoadReport {
        let mut total = LoadReport::default();
        while let Some(result) = self.workers.join_next().await {
            match result {
                Ok(report) => total.merge(report),
                Err(e) => total.errors.push(format!("load worker panicked: {e}")),
            }
        }
        total.latencies.sort_unstable();
        total
    }
}
