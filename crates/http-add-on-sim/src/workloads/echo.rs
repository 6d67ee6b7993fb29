//! The built-in HTTP app every simulated pod runs: it echoes a JSON description of the request
//! and understands `/status/<code>` and `/delay/<duration>`.
//!
//! The same app runs on real clusters as the `echo` binary (`src/bin/echo.rs`, the e2e suite's
//! sample app image), through [`PodIdentity`] and [`serve`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use http_add_on_types::duration::parse_duration;

/// Request bodies larger than this are not echoed (the request is still answered).
const MAX_ECHOED_BODY: usize = 1 << 20;

/// What the app knows about the pod it runs in.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod IP the app listens on.
    pub ip: String,
    /// Added before every response (`sim.http.keda.sh/response-delay`).
    pub response_delay: Duration,
    /// Number of requests being handled right now.
    pub in_flight: watch::Sender<usize>,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a watch::Sender<usize>);

impl<'a> InFlight<'a> {
    fn start(counter: &'a watch::Sender<usize>) -> Self {
        counter.send_modify(|count| *count += 1);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

/// The JSON body of every response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Echo<'a> {
    pod: &'a str,
    namespace: &'a str,
    pod_ip: &'a str,
    method: &'a str,
    protocol: String,
    host: String,
    path: &'a str,
    query: &'a str,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Handles one request.
async fn handle(
    pod: Arc<PodIdentity>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _in_flight = InFlight::start(&pod.in_flight);
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_ECHOED_BODY).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let path = parts.uri.path();
    let (status, extra_delay) = if let Some(code) = path.strip_prefix("/status/") {
        match code
            .trim_end_matches('/')
            .parse::<u16>()
            .ok()
            .filter(|code| (200..=599).contains(code))
        {
            Some(code) => (
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                Duration::ZERO,
            ),
            None => (StatusCode::BAD_REQUEST, Duration::ZERO),
        }
    } else if let Some(duration) = path.strip_prefix("/delay/") {
        match parse_duration(duration.trim_end_matches('/')) {
            Ok(delay) => (StatusCode::OK, delay),
            Err(_) => (StatusCode::BAD_REQUEST, Duration::ZERO),
        }
    } else {
        (StatusCode::OK, Duration::ZERO)
    };
    let delay = extra_delay + pod.response_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let host = parts
        .uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .map(|host| String::from_utf8_lossy(host.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let echo = Echo {
        pod: &pod.name,
        namespace: &pod.namespace,
        pod_ip: &pod.ip,
        method: parts.method.as_str(),
        protocol: format!("{:?}", parts.version),
        host,
        path,
        query: parts.uri.query().unwrap_or_default(),
        headers,
        body,
    };
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Bytes::new()
    } else {
        serde_json::to_vec(&echo)
            .map(Bytes::from)
            .unwrap_or_default()
    };
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-sim-pod", pod.name.as_str())
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(response)
}

/// Serves the app on `listener` until `drain` turns true, then drains gracefully: requests in
/// flight finish (HTTP/1 connections close after their current response, HTTP/2 ones get a
/// GOAWAY), and only then does the listener close. Connections that arrive while draining (from
/// a client whose endpoint list lags) are still served one request each. Returns when every
/// connection is closed.
pub async fn serve(listener: TcpListener, pod: Arc<PodIdentity>, mut drain: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connections accepted before the drain: told to shut down gracefully when it starts.
    let mut established = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((stream, peer)) = accepted_stream(accepted) else { continue };
                let mut drain = drain.clone();
                let connection = serve_connection(&builder, stream, peer, &pod, None);
                established.spawn(connection(Box::pin(async move { draining(&mut drain).await })));
            }
            Some(_) = established.join_next(), if !established.is_empty() => {}
            () = draining(&mut drain) => break,
        }
    }
    // Draining: keep the listener open until the requests in flight are done.
    let (close, closing) = watch::channel(false);
    let mut late = JoinSet::new();
    while !established.is_empty() {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((stream, peer)) = accepted_stream(accepted) else { continue };
                let first_request = Arc::new(Notify::new());
                let mut closing = closing.clone();
                let connection = serve_connection(&builder, stream, peer, &pod, Some(Arc::clone(&first_request)));
                // Shut down once the first request is being handled (or when the listener closes).
                late.spawn(connection(Box::pin(async move {
                    tokio::select! {
                        () = first_request.notified() => {}
                        () = draining(&mut closing) => {}
                    }
                })));
            }
            Some(_) = established.join_next() => {}
            Some(_) = late.join_next(), if !late.is_empty() => {}
        }
    }
    drop(listener);
    close.send_replace(true);
    while late.join_next().await.is_some() {}
}

/// The accepted stream, with Nagle off; accept errors are logged and skipped.
fn accepted_stream(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer))
        }
        Err(error) => {
            tracing::debug!(%error, "accept failed");
            None
        }
    }
}

/// A future that shuts a connection down gracefully when it resolves.
type ShutdownSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Prepares one connection (HTTP/1.1 or h2c): the returned closure takes the signal upon which
/// the connection shuts down gracefully. `first_request` is notified when a request arrives.
fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    pod: &Arc<PodIdentity>,
    first_request: Option<Arc<Notify>>,
) -> impl FnOnce(ShutdownSignal) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    let pod = Arc::clone(pod);
    let service = service_fn(move |request| {
        if let Some(first_request) = &first_request {
            first_request.notify_one();
        }
        handle(Arc::clone(&pod), request)
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    move |shutdown: ShutdownSignal| {
        Box::pin(async move {
            let mut connection = std::pin::pin!(connection);
            // Biased: bytes already received are read before a shutdown is noticed, so a
            // request that reached the app is served rather than cut off.
            tokio::select! {
                biased;
                result = connection.as_mut() => log_connection_end(peer, result),
                () = shutdown => {
                    connection.as_mut().graceful_shutdown();
                    log_connection_end(peer, connection.await);
                }
            }
        })
    }
}

/// Resolves once the drain signal is on (or its sender is gone).
async fn draining(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|draining| *draining).await;
}

fn log_connection_end(
    peer: SocketAddr,
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
) {
    if let Err(error) = result {
        tracing::trace!(%peer, %error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;

    async fn start() -> (
        SocketAddr,
        Arc<PodIdentity>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (drain_tx, drain_rx) = watch::channel(false);
        let pod = Arc::new(PodIdentity {
            name: "app-abc-xyz12".into(),
            namespace: "default".into(),
            ip: "127.0.0.1".into(),
            response_delay: Duration::ZERO,
            in_flight: watch::channel(0).0,
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&pod), drain_rx));
        (addr, pod, drain_tx, server)
    }

    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
        request(addr, path, false).await
    }

    async fn request(addr: SocketAddr, path: &str, http2: bool) -> (StatusCode, serde_json::Value) {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Empty<Bytes>>();
        let response = client
            .get(format!("http://{addr}{path}").parse().unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn echoes_the_request() {
        let (addr, _pod, _drain, _server) = start().await;
        let (status, echo) = get(addr, "/some/path?x=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo["pod"], "app-abc-xyz12");
        assert_eq!(echo["namespace"], "default");
        assert_eq!(echo["path"], "/some/path");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(echo["method"], "GET");
        assert_eq!(echo["host"], addr.to_string());
    }

    #[tokio::test]
    async fn status_and_delay_paths() {
        let (addr, _pod, _drain, _server) = start().await;
        assert_eq!(
            get(addr, "/status/503").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(addr, "/status/abc").await.0, StatusCode::BAD_REQUEST);
        let started = tokio::time::Instant::now();
        assert_eq!(get(addr, "/delay/100ms").await.0, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn drain_finishes_in_flight_requests() {
        let (addr, pod, drain, server) = start().await;
        let in_flight = tokio::spawn(get(addr, "/delay/300ms"));
        let mut count = pod.in_flight.subscribe();
        tokio::time::timeout(Duration::from_secs(5), count.wait_for(|count| *count == 1))
            .await
            .unwrap()
            .unwrap();
        drain.send_replace(true);
        // While a request is in flight the listener stays open, and a late client is served.
        assert_eq!(get(addr, "/late").await.0, StatusCode::OK);
        assert_eq!(in_flight.await.unwrap().0, StatusCode::OK);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener must be closed after draining"
        );
    }

    #[tokio::test]
    async fn drain_finishes_in_flight_h2_requests() {
        let (addr, pod, drain, server) = start().await;
        let in_flight = tokio::spawn(request(addr, "/delay/300ms", true));
        let mut count = pod.in_flight.subscribe();
        tokio::time::timeout(Duration::from_secs(5), count.wait_for(|count| *count == 1))
            .await
            .unwrap()
            .unwrap();
        drain.send_replace(true);
        let (status, echo) = in_flight.await.unwrap();
        assert_eq!(
            (status, echo["protocol"].as_str()),
            (StatusCode::OK, Some("HTTP/2.0"))
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
