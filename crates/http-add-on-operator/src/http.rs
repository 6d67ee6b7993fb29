//! The health probe (`/healthz`, `/readyz`) and metrics (`/metrics`) servers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What a server answers.
#[derive(Clone)]
pub enum Endpoints {
    /// `/healthz` and `/readyz`: 200 while the process runs.
    Health,
    /// `/metrics`: the Prometheus text format.
    Metrics(Arc<Metrics>),
}

fn respond(endpoints: &Endpoints, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (endpoints, path) {
        (Endpoints::Health, "/healthz" | "/readyz") => {
            (StatusCode::OK, "text/plain; charset=utf-8", "ok".to_owned())
        }
        (Endpoints::Metrics(m), "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Serves `endpoints` on `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, endpoints: Endpoints) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            };
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = respond(&endpoints, req.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "probe/metrics connection ended with an error");
                }
            });
        }
    })
}

/// Binds `address`, naming `what` in the error.
pub async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(address)
        .await
        .map_err(|source| crate::Error::Bind {
            what,
            address,
            source,
        })
}
