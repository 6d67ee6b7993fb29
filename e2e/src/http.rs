//! A small HTTP client for scenarios: requests to the interceptor with a chosen `Host`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Header the interceptor sets on every proxied response.
pub const COLD_START_HEADER: &str = "x-keda-http-cold-start";

/// A response, read whole (scenario responses are small).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (the sim's echo app describes the request it got).
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of `X-KEDA-HTTP-Cold-Start`, if present.
    pub fn cold_start(&self) -> Option<bool> {
        self.headers
            .get(COLD_START_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v == "true")
    }

    /// The pod that answered, from the echo app's JSON.
    pub fn pod(&self) -> Option<String> {
        self.json().ok()?.get("pod")?.as_str().map(str::to_owned)
    }
}

/// Pooled HTTP/1.1 client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl HttpClient {
    /// A client whose requests fail after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { inner, timeout }
    }

    /// `GET http://<addr><path>` with `Host: <host>` and extra headers.
    pub async fn get(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        self.send("GET", addr, host, path, headers, Bytes::new())
            .await
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &self,
        method: &str,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(http::header::HOST, host);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body))?;
        let exchange = async {
            let response = self.inner.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .with_context(|| format!("{method} {host}{path} timed out after {:?}", self.timeout))?
            .with_context(|| format!("{method} {host}{path} via {addr}"))
    }
}
