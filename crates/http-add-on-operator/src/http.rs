//! The health probe (`/healthz`, `/readyz`) and metrics (`/metrics`) servers. The metrics
//! server can serve HTTPS ([`crate::tls`]) and require an authorized bearer token
//! ([`crate::auth`]), as controller-runtime's secure metrics serving does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::auth::Authorizer;
use crate::metrics::Metrics;

/// What a server answers.
#[derive(Clone)]
pub enum Endpoints {
    /// `/healthz` and `/readyz`: 200 while the process runs.
    Health,
    /// `/metrics`: the Prometheus text format, to every client or (with an [`Authorizer`]) to
    /// those whose bearer token may `get` `/metrics`.
    Metrics(Arc<Metrics>, Option<Arc<Authorizer>>),
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Longest wait for a client to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const PLAIN: &str = "text/plain; charset=utf-8";

async fn respond(endpoints: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (endpoints, path) {
        (Endpoints::Health, "/healthz" | "/readyz") => text(StatusCode::OK, PLAIN, "ok".to_owned()),
        (Endpoints::Metrics(m, auth), "/metrics") => {
            if let Some(auth) = auth
                && let Err(refusal) = auth.check(req.method().as_str(), path, req.headers()).await
            {
                return text(refusal.status, PLAIN, refusal.reason);
            }
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                m.encode(),
            )
        }
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found".to_owned()),
    }
}

async fn serve_connection<S>(stream: S, endpoints: Endpoints)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let endpoints = endpoints.clone();
        async move { Ok::<_, Infallible>(respond(&endpoints, &req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    if let Err(error) = conn.await {
        tracing::debug!(%error, "probe/metrics connection ended with an error");
    }
}

/// Serves `endpoints` on `listener` (over TLS with `tls`) until the returned task is aborted.
pub fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tls.map(TlsAcceptor::from);
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
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => serve_connection(stream, endpoints).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => serve_connection(stream, endpoints).await,
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
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
