//! Shared fixtures: the in-process sim with the add-on's CRDs, an interceptor, test backends
//! exposed through selectorless Services and hand-made EndpointSlices, and an HTTP client.

#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_add_on_interceptor::{Config, Interceptor};
use http_add_on_sim::{Sim, SimConfig};
use http_add_on_types::crd::{HTTPScaledObject, InterceptorRoute};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

/// A file of `tests/fixtures/tls/` (a throw-away test CA and the certificates it issued).
pub fn tls_fixture(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(path)
}

/// A TLS client trusting only the fixture CA, offering `alpn`.
pub fn tls_connector(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_fixture("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Hang guard for one read or one wait.
pub const TIMEOUT: Duration = http_add_on_testkit::wait::DEADLINE;

pub use http_add_on_testkit::cluster::install_crds;
pub use http_add_on_testkit::wait::eventually;
pub use http_add_on_testkit::{TestBackend, init_tracing};

/// A sim with the CRDs and a synced interceptor.
pub struct World {
    pub sim: Sim,
    pub client: kube::Client,
    pub interceptor: Interceptor,
    pub http: Client<HttpConnector, Full<Bytes>>,
}

pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

impl World {
    pub async fn start() -> Self {
        Self::with_config(Config::for_tests()).await
    }

    pub async fn with_config(config: Config) -> Self {
        init_tracing();
        let sim = Sim::start(SimConfig::apiserver_only())
            .await
            .expect("sim starts");
        let client = sim.client();
        install_crds(&client).await;
        let interceptor = Interceptor::start(config, client.clone())
            .await
            .expect("interceptor starts");
        tokio::time::timeout(TIMEOUT, interceptor.wait_synced())
            .await
            .expect("route table syncs");
        Self {
            sim,
            client,
            interceptor,
            http: http_client(),
        }
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.interceptor.proxy_addr())
    }

    /// GET through the proxy with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(Request::get(self.proxy_url(path)).header("host", host))
            .await
    }

    pub async fn send(&self, req: http::request::Builder) -> Reply {
        let response = self
            .http
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("request reaches the proxy");
        Reply::read(response).await
    }

    pub async fn queue(&self) -> http_add_on_types::queue::QueueCounts {
        let url: http::Uri = format!("http://{}/queue", self.interceptor.admin_addr())
            .parse()
            .unwrap();
        // A pooled admin connection may have just been closed by the server's header read
        // timeout (short in some tests): one retry on a fresh connection.
        let response = match self.http.get(url.clone()).await {
            Ok(response) => response,
            Err(_) => self.http.get(url).await.expect("admin answers /queue"),
        };
        let reply = Reply::read(response).await;
        assert_eq!(reply.status, StatusCode::OK);
        serde_json::from_slice(&reply.body).expect("queue JSON")
    }

    /// The interceptor's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let url = format!(
            "http://{}/metrics",
            self.interceptor.metrics_addr().expect("metrics enabled")
        );
        let response = self
            .http
            .get(url.parse().unwrap())
            .await
            .expect("metrics answer");
        Reply::read(response).await.text()
    }

    /// Waits until `route` reports `concurrency` on `/queue`.
    pub async fn wait_concurrency(&self, route: &str, concurrency: i64) {
        eventually(&format!("{route} concurrency {concurrency}"), || async {
            let queue = self.queue().await;
            (queue.get(route).map(|c| c.concurrency) == Some(concurrency)).then_some(())
        })
        .await;
    }

    /// Waits until `host` + `path` routes somewhere (not the 404 of an unknown route).
    pub async fn wait_routed(&self, host: &str, path: &str) -> Reply {
        eventually(&format!("a route for {host}{path}"), || async {
            let reply = self.get(host, path).await;
            (!(reply.status == StatusCode::NOT_FOUND && reply.text().starts_with("no route")))
                .then_some(reply)
        })
        .await
    }

    pub async fn apply_hso(&self, value: Value) {
        let hso: HTTPScaledObject = serde_json::from_value(value).expect("valid HTTPScaledObject");
        apply(
            &Api::<HTTPScaledObject>::default_namespaced(self.client.clone()),
            &hso,
        )
        .await;
    }

    pub async fn apply_ir(&self, value: Value) {
        let ir: InterceptorRoute = serde_json::from_value(value).expect("valid InterceptorRoute");
        apply(
            &Api::<InterceptorRoute>::default_namespaced(self.client.clone()),
            &ir,
        )
        .await;
    }

    /// A selectorless Service `name` with one port (`port_name`, 80) and one EndpointSlice per
    /// backend (each slice carries its backend's port number).
    pub async fn expose(&self, name: &str, port_name: &str, backends: &[&TestBackend]) {
        self.expose_with(name, port_name, None, backends).await;
    }

    pub async fn expose_with(
        &self,
        name: &str,
        port_name: &str,
        app_protocol: Option<&str>,
        backends: &[&TestBackend],
    ) {
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        self.expose_addrs(name, port_name, app_protocol, &addrs)
            .await;
    }

    /// Like [`World::expose_with`], for backends given by address.
    pub async fn expose_addrs(
        &self,
        name: &str,
        port_name: &str,
        app_protocol: Option<&str>,
        addrs: &[SocketAddr],
    ) {
        let mut port = json!({ "name": port_name, "port": 80 });
        if let Some(p) = app_protocol {
            port["appProtocol"] = json!(p);
        }
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name },
            "spec": { "ports": [port] }
        }))
        .unwrap();
        apply(
            &Api::<Service>::default_namespaced(self.client.clone()),
            &svc,
        )
        .await;
        for (i, addr) in addrs.iter().enumerate() {
            self.set_slice(name, &format!("{name}-{i}"), port_name, *addr, true)
                .await;
        }
    }

    /// Creates or replaces the EndpointSlice `slice` of Service `service` with one endpoint.
    pub async fn set_slice(
        &self,
        service: &str,
        slice: &str,
        port_name: &str,
        addr: SocketAddr,
        ready: bool,
    ) {
        let es: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": slice, "labels": { "kubernetes.io/service-name": service } },
            "addressType": "IPv4",
            "ports": [{ "name": port_name, "port": addr.port(), "protocol": "TCP" }],
            "endpoints": [{ "addresses": [addr.ip().to_string()], "conditions": { "ready": ready } }]
        }))
        .unwrap();
        apply(
            &Api::<EndpointSlice>::default_namespaced(self.client.clone()),
            &es,
        )
        .await;
    }

    pub async fn delete_slice(&self, slice: &str) {
        Api::<EndpointSlice>::default_namespaced(self.client.clone())
            .delete(slice, &DeleteParams::default())
            .await
            .expect("slice deleted");
    }
}

/// Server-side apply of `obj`.
pub async fn apply<K>(api: &Api<K>, obj: &K)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().expect("named");
    api.patch(
        &name,
        &PatchParams::apply("interceptor-tests").force(),
        &Patch::Apply(obj),
    )
    .await
    .expect("apply succeeds");
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(response: Response<Incoming>) -> Self {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTPScaledObject routing `hosts` (and optional path prefixes) to `service` port `port`.
pub fn hso(name: &str, hosts: &[&str], paths: &[&str], service: &str, port: Value) -> Value {
    let hso = http_add_on_testkit::build::http_scaled_object(name)
        .hosts(hosts)
        .path_prefixes(paths)
        .target(name)
        .service(service);
    match port {
        Value::String(port_name) => hso.port_name(&port_name),
        other => hso.port(
            other
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .expect("a port number"),
        ),
    }
    .json()
}

/// A client connector that dials `0` (the proxy) whatever authority a request names, as
/// `curl --connect-to` does: requests can then carry the routing host in their URI
/// (`http://app.test/x`), from which the HTTP/1.1 client derives `Host` and the HTTP/2 client
/// `:authority` — each protocol's own way of naming the host, as real clients send it.
///
/// `tonic::codegen::Service` is `tower_service::Service` (the trait hyper-util's connectors
/// implement), re-exported by a crate already in the build through `http-add-on-types`.
#[derive(Clone, Copy, Debug)]
pub struct DialProxy(pub SocketAddr);

impl tonic::codegen::Service<http::Uri> for DialProxy {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}
