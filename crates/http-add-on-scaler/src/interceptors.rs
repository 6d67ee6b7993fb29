//! Counts from the interceptors: one task per interceptor pod holds its push stream
//! (`/queue/stream`), falls back to polling `/queue` when the stream is not offered, and
//! reconnects with backoff. A supervisor starts and stops tasks as pods come and go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_add_on_types::queue::{QUEUE_STREAM_PATH, QueueCounts, QueueUpdate};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::counts::{Counts, PodId};
use crate::discovery::Endpoints;
use crate::metrics::Metrics;

/// Path of the upstream-compatible polling endpoint.
pub const QUEUE_PATH: &str = "/queue";
/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A stream silent this long is dead (the interceptor sends a heartbeat every second).
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Limit for connecting and for one poll.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/queue` body or stream line accepted.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Why fetching counts from an interceptor failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// TCP connect failed.
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    /// Connect, request or a stream read did not finish in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// HTTP-level failure.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// Reading the body failed or it was too large.
    #[error("reading the body: {0}")]
    Body(String),
    /// The interceptor answered with an unexpected status.
    #[error("unexpected status {0}")]
    Status(StatusCode),
    /// The body was not the expected JSON.
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The interceptor closed the stream.
    #[error("stream ended")]
    StreamEnded,
}

/// Shared state of the fetchers.
#[derive(Clone, Debug)]
pub struct Fetchers {
    /// Where counts go.
    pub counts: Arc<Counts>,
    /// Instruments.
    pub metrics: Arc<Metrics>,
    /// Polling interval for interceptors without the stream.
    pub tick: Duration,
}

impl Fetchers {
    /// Follows `endpoints`: a fetch task per listed pod; a pod that leaves the list has its task
    /// stopped and its counts dropped. Returns when the sender is gone.
    pub async fn supervise(self, mut endpoints: watch::Receiver<Endpoints>) {
        let mut tasks: HashMap<PodId, JoinHandle<()>> = HashMap::new();
        loop {
            let listed = endpoints.borrow_and_update().clone();
            tasks.retain(|pod, task| {
                if listed.contains(pod) {
                    return true;
                }
                task.abort();
                self.counts.remove_pod(*pod);
                tracing::info!(interceptor = %pod, "interceptor left the admin Service");
                false
            });
            for pod in listed {
                tasks.entry(pod).or_insert_with(|| {
                    self.counts.add_pod(pod);
                    tracing::info!(interceptor = %pod, "following interceptor");
                    tokio::spawn(self.clone().follow(pod))
                });
            }
            if endpoints.changed().await.is_err() {
                break;
            }
        }
        for (pod, task) in tasks {
            task.abort();
            self.counts.remove_pod(pod);
        }
    }

    /// Fetches counts from one pod forever: the stream, else polling, reconnecting with backoff.
    pub async fn follow(self, pod: PodId) {
        let mut connected = Connected::new(pod, self.clone());
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        loop {
            if !first {
                self.metrics.stream_reconnects.inc();
            }
            first = false;
            let result = match self.stream(pod, &mut connected).await {
                Ok(StreamOutcome::NotOffered) => {
                    tracing::debug!(interceptor = %pod, "no push stream, polling /queue");
                    self.poll(pod, &mut connected).await
                }
                Err(error) => Err(error),
            };
            let delivered = connected.delivered;
            connected.set(false);
            connected.delivered = false;
            if let Err(error) = result {
                self.metrics.fetch_errors.inc();
                self.metrics.pinger_fetch_errors.inc();
                tracing::debug!(interceptor = %pod, %error, "fetching counts failed");
            }
            // A session that delivered data was healthy: start the backoff over.
            if delivered {
                backoff = BACKOFF_MIN;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn stream(
        &self,
        pod: PodId,
        connected: &mut Connected,
    ) -> Result<StreamOutcome, FetchError> {
        let started = Instant::now();
        let mut first_snapshot = true;
        let mut sender = connect(pod).await?;
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            sender.send_request(get(pod, QUEUE_STREAM_PATH)),
        )
        .await
        .map_err(|_| FetchError::Timeout("waiting for the stream's headers"))??;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(StreamOutcome::NotOffered),
            other => return Err(FetchError::Status(other)),
        }
        let mut body = response.into_body();
        let mut buffer = BytesMut::new();
        loop {
            let frame = tokio::time::timeout(STREAM_IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| FetchError::Timeout("waiting for a stream line"))?;
            let Some(frame) = frame else {
                return Err(FetchError::StreamEnded);
            };
            let Ok(data) = frame?.into_data() else {
                continue; // trailers carry nothing for us
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line = buffer.split_to(end + 1);
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                // Heartbeats (`{}`) are empty changes: applying them records fresh data.
                let update: QueueUpdate = serde_json::from_slice(line)?;
                if update.snapshot {
                    connected.set(true);
                    if first_snapshot {
                        first_snapshot = false;
                        self.metrics
                            .pinger_fetch_duration
                            .observe(started.elapsed().as_secs_f64());
                    }
                }
                self.counts.apply(pod, &update, Instant::now());
                connected.delivered = true;
            }
            if buffer.len() > MAX_BODY_BYTES {
                return Err(FetchError::Body("stream line too long".to_owned()));
            }
        }
    }

    /// Polls `/queue` every tick until a poll fails.
    async fn poll(&self, pod: PodId, connected: &mut Connected) -> Result<(), FetchError> {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
        loop {
            interval.tick().await;
            let started = Instant::now();
            let mut s = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => connect(pod).await?,
            };
            let counts = tokio::time::timeout(REQUEST_TIMEOUT, fetch_queue(&mut s, pod))
                .await
                .map_err(|_| FetchError::Timeout("polling /queue"))??;
            self.metrics
                .pinger_fetch_duration
                .observe(started.elapsed().as_secs_f64());
            let update = QueueUpdate {
                snapshot: true,
                counts,
            };
            self.counts.apply(pod, &update, Instant::now());
            connected.set(true);
            connected.delivered = true;
            sender = Some(s);
        }
    }
}

enum StreamOutcome {
    NotOffered,
}

/// Tracks whether a pod counts as connected, keeping the gauge and the aggregator in step
/// (also when the task is aborted).
struct Connected {
    pod: PodId,
    fetchers: Fetchers,
    live: bool,
    delivered: bool,
}

impl Connected {
    fn new(pod: PodId, fetchers: Fetchers) -> Self {
        Self {
            pod,
            fetchers,
            live: false,
            delivered: false,
        }
    }

    /// Records a transition; repeated failures do not refresh the pod's last-data time.
    fn set(&mut self, live: bool) {
        if live == self.live {
            return;
        }
        if live {
            self.fetchers.metrics.connected_interceptors.inc();
        } else {
            self.fetchers.metrics.connected_interceptors.dec();
        }
        self.live = live;
        self.fetchers
            .counts
            .set_live(self.pod, live, Instant::now());
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if self.live {
            self.fetchers.metrics.connected_interceptors.dec();
        }
    }
}

fn get(pod: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = path
        .parse()
        .unwrap_or_else(|_| hyper::Uri::from_static("/"));
    if let Ok(host) = pod.to_string().parse() {
        request.headers_mut().insert(hyper::header::HOST, host);
    }
    request
}

#[tracing::instrument(name = "connect to interceptor", skip_all, fields(%pod))]
async fn connect(pod: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, FetchError> {
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(pod))
        .await
        .map_err(|_| FetchError::Timeout("connecting"))?
        .map_err(FetchError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; errors surface on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

#[tracing::instrument(name = "fetch /queue", skip_all, fields(%pod))]
async fn fetch_queue(
    sender: &mut SendRequest<Empty<Bytes>>,
    pod: SocketAddr,
) -> Result<QueueCounts, FetchError> {
    sender.ready().await?;
    let response = sender.send_request(get(pod, QUEUE_PATH)).await?;
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| FetchError::Body(e.to_string()))?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}
