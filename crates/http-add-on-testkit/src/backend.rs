//! One loopback HTTP backend for every crate's tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A small HTTP backend on a loopback address.
///
/// Answers with a JSON echo (`backend`, `host`, `path`, `headers`, `version`). `/hold…` waits
/// until [`TestBackend::release`]; `/sleep/<ms>` answers after that many milliseconds;
/// `/status/<code>` answers with that code.
pub struct TestBackend {
    /// The name it answers with (`backend` in the JSON, `x-backend` header).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicUsize>,
    /// Requests waiting on `/hold…` now.
    pub held: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    /// An HTTP/1.1 backend on an ephemeral loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, false).await
    }

    /// An h2c (prior knowledge) backend on an ephemeral loopback port.
    pub async fn start_h2c(name: &str) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, true).await
    }

    /// A backend on `addr` (a loopback address), HTTP/1.1 or h2c.
    pub async fn start_on(addr: SocketAddr, name: &str, h2c: bool) -> Self {
        let listener = TcpListener::bind(addr).await.expect("backend binds");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (release, release_rx) = watch::channel(false);
        let state = (name.to_owned(), hits.clone(), held.clone(), release_rx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| respond(state.clone(), req));
                    let io = TokioIo::new(stream);
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if h2c {
                        builder = builder.http2_only();
                    } else {
                        builder = builder.http1_only();
                    }
                    let _ = builder.serve_connection(io, service).await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            hits,
            held,
            release,
            task,
        }
    }

    /// Lets every held request (now and later) finish.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

type BackendState = (
    String,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    watch::Receiver<bool>,
);

async fn respond(
    state: BackendState,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (name, hits, held, mut release) = state;
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let mut status = StatusCode::OK;
    if path.starts_with("/hold") {
        held.fetch_add(1, Ordering::SeqCst);
        let _ = release.wait_for(|r| *r).await;
        held.fetch_sub(1, Ordering::SeqCst);
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    } else if let Some(code) = path.strip_prefix("/status/") {
        status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
    }
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let version = format!("{:?}", req.version());
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = json!({
        "backend": name,
        "path": path,
        "headers": headers,
        "version": version,
        "bodyLen": body_bytes.len(),
    });
    // `/big/<n>`: n bytes of body instead of the JSON (which is then in `x-body-len`).
    let body = match path.strip_prefix("/big/").and_then(|n| n.parse().ok()) {
        Some(n) => Bytes::from(
            (0..n)
                .map(|i: usize| b'a' + (i % 26) as u8)
                .collect::<Vec<_>>(),
        ),
        None => Bytes::from(body.to_string()),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("connection", http::HeaderValue::from_static("keep-alive"));
    response.headers_mut().insert(
        "x-body-len",
        http::HeaderValue::from_str(&body_bytes.len().to_string()).unwrap(),
    );
    response
        .headers_mut()
        .insert("x-backend", http::HeaderValue::from_str(&name).unwrap());
    Ok(response)
}
