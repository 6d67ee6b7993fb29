//! KEDA HTTP Add-on interceptor: the reverse proxy that counts, holds and forwards requests.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), http_add_on_interceptor::Error> {
//! use http_add_on_interceptor::{Config, Interceptor};
//! let interceptor = Interceptor::start(Config::for_tests(), client).await?;
//! interceptor.wait_synced().await;
//! let proxy = interceptor.proxy_addr(); // also admin_addr()
//! let metrics = interceptor.metrics_addr(); // None with OTEL_PROM_EXPORTER_ENABLED=false
//! interceptor.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod backend_tls;
pub mod backends;
pub mod check;
pub mod config;
pub mod counts;
#[cfg(test)]
mod differential;
mod h1;
pub mod h2;
pub mod headers;
mod idle;
mod io;
mod limit;
pub mod metrics;
pub mod request;
pub mod routes;
mod tls;
pub mod tls_policy;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use config::Config;

use admin::Admin;
use counts::Counts;
use h2::Hyper;
use metrics::Metrics;
use request::Policy;
use routes::Table;

/// Errors starting the interceptor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The OpenTelemetry exporters could not start.
    #[error(transparent)]
    Telemetry(#[from] http_add_on_types::telemetry::TelemetryError),
    /// TLS to backends could not be set up (e.g. an unreadable `KEDA_HTTP_TLS_CA_DIRS`).
    #[error(transparent)]
    BackendTls(#[from] backend_tls::BackendTlsError),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running interceptor.
pub struct Interceptor {
    config: Config,
    proxy_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    profiling_addr: Option<SocketAddr>,
    check_addr: Option<SocketAddr>,
    counts: Arc<Counts>,
    synced: Arc<AtomicBool>,
    synced_notify: Arc<Notify>,
    draining: Arc<AtomicBool>,
    /// Stops accepting on the proxy port and starts graceful connection shutdown.
    stop_proxy: watch::Sender<bool>,
    /// Stops everything else (admin, metrics, watches, push streams).
    stop_all: watch::Sender<bool>,
    /// Every proxy connection holds a receiver; all dropped = drained.
    proxy_conns: watch::Sender<()>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The OpenTelemetry exporters, flushed at shutdown.
    telemetry: std::sync::Mutex<Option<http_add_on_types::telemetry::Telemetry>>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("proxy", &self.proxy_addr)
            .field("admin", &self.admin_addr)
            .field("metrics", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, what: &'static str, addr: SocketAddr) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|source| Error::Bind { what, addr, source })
}

impl Interceptor {
    /// Binds the listeners (proxy, admin, metrics unless `metrics_enabled` is off, TLS proxy
    /// and debug endpoint when configured), starts the watches and serves. Returns once
    /// listening; the proxy answers 404 until the route table has synced (see
    /// [`Interceptor::wait_synced`]).
    pub async fn start(config: Config, client: kube::Client) -> Result<Self> {
        config.backend_tls.prepare(&config.tls_policy)?;
        let proxy_listener = bind("proxy", config.proxy_listen).await?;
        let admin_listener = bind("admin", config.admin_listen).await?;
        let metrics_listener = if config.metrics_enabled {
            Some(bind("metrics", config.metrics_listen).await?)
        } else {
            None
        };
        let profiling_listener = match config.profiling_listen {
            Some(addr) => Some((bind("profiling", addr).await?, addr)),
            None => None,
        };
        let profiling_addr = profiling_listener
            .as_ref()
            .map(|(listener, addr)| local_addr(listener, "profiling", *addr))
            .transpose()?;
        let proxy_addr = local_addr(&proxy_listener, "proxy", config.proxy_listen)?;
        let admin_addr = local_addr(&admin_listener, "admin", config.admin_listen)?;
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|listener| local_addr(listener, "metrics", config.metrics_listen))
            .transpose()?;
        let tls = match &config.tls {
            Some(tls) => {
                let (server, resolver) = tls::server_config(tls, &config.tls_policy)?;
                let listener = bind("TLS proxy", tls.listen).await?;
                let addr = local_addr(&listener, "TLS proxy", tls.listen)?;
                Some((listener, addr, server, resolver))
            }
            None => None,
        };
        let tls_addr = tls.as_ref().map(|(_, addr, _, _)| *addr);
        let check = match config.check_listen {
            Some(addr) => {
                let listener = bind("check", addr).await?;
                Some((local_addr(&listener, "check", addr)?, listener))
            }
            None => None,
        };
        let check_addr = check.as_ref().map(|(addr, _)| *addr);

        let metrics = Arc::new(Metrics::new());
        // The request policy samples (`Sampling::decide`) before it makes a span: the SDK
        // records every span it is asked for.
        let telemetry = http_add_on_types::telemetry::Telemetry::start(
            metrics::SERVICE_NAME,
            &http_add_on_types::telemetry::OtelConfig {
                sampling: http_add_on_types::telemetry::Sampling::AlwaysOn,
                ..config.otel.clone()
            },
            Some({
                let metrics = metrics.clone();
                Arc::new(move || metrics.encode())
            }),
        )?;
        let counts = Arc::new(Counts::new(metrics.clone()));
        let table = Arc::new(Table::default());
        let synced = Arc::new(AtomicBool::new(false));
        let synced_notify = Arc::new(Notify::new());
        let table_changed = Arc::new(Notify::new());
        let draining = Arc::new(AtomicBool::new(false));
        let (stop_proxy, _) = watch::channel(false);
        let (stop_all, _) = watch::channel(false);
        let (proxy_conns, _) = watch::channel(());
        let (other_conns, _) = watch::channel(());

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(routes::run_sync(
            client,
            config.clone(),
            routes::SyncTargets {
                counts: counts.clone(),
                table: table.clone(),
                synced: synced.clone(),
                synced_notify: synced_notify.clone(),
                table_changed: table_changed.clone(),
            },
            stop_all.subscribe(),
        )));

        let mut proxy_builder = auto::Builder::new(TokioExecutor::new());
        proxy_builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes)
            .max_headers(256)
            .keep_alive(true);
        proxy_builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        let policy = Policy::new(
            config.clone(),
            table,
            table_changed,
            metrics.clone(),
            draining.clone(),
        )
        .with_tracer(telemetry.tracer());
        let proxy = Arc::new(Hyper::new(Arc::new(policy)));
        let proxy_builder = Arc::new(proxy_builder);
        if let Some((listener, _, server, resolver)) = tls {
            tasks.push(tokio::spawn(serve_tls(
                listener,
                tokio_rustls::TlsAcceptor::from(server),
                proxy.clone(),
                proxy_builder.clone(),
                config.header_read_timeout,
                stop_proxy.subscribe(),
                stop_all.subscribe(),
                proxy_conns.subscribe(),
            )));
            tasks.push(tokio::spawn(tls::watch_files(
                resolver,
                stop_all.subscribe(),
            )));
        }
        if let Some((_, listener)) = check {
            tasks.push(tokio::spawn(check::serve(
                listener,
                proxy.policy().clone(),
                stop_proxy.subscribe(),
                stop_all.subscribe(),
                proxy_conns.subscribe(),
            )));
        }
        tasks.push(tokio::spawn(serve_proxy(
            proxy_listener,
            proxy,
            proxy_builder,
            stop_proxy.subscribe(),
            stop_all.subscribe(),
            proxy_conns.subscribe(),
        )));

        let admin = Arc::new(Admin {
            counts: counts.clone(),
            metrics,
            synced: synced.clone(),
            draining: draining.clone(),
            stream_interval: config.queue_stream_interval,
            stop: stop_all.subscribe(),
        });
        let mut admin_builder = auto::Builder::new(TokioExecutor::new());
        admin_builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout);
        let admin_builder = Arc::new(admin_builder.http1_only());
        if let Some((listener, _)) = profiling_listener {
            tasks.push(tokio::spawn(serve(
                "profiling",
                listener,
                admin_builder.clone(),
                |_| service_fn(Admin::handle_debug),
                stop_all.subscribe(),
                stop_all.subscribe(),
                other_conns.subscribe(),
            )));
        }
        let admin_for_admin = admin.clone();
        tasks.push(tokio::spawn(serve(
            "admin",
            admin_listener,
            admin_builder.clone(),
            move |_| {
                let admin = admin_for_admin.clone();
                service_fn(move |req| admin.clone().handle(req))
            },
            stop_all.subscribe(),
            stop_all.subscribe(),
            other_conns.subscribe(),
        )));
        if let Some(metrics_listener) = metrics_listener {
            tasks.push(tokio::spawn(serve(
                "metrics",
                metrics_listener,
                admin_builder,
                move |_| {
                    let admin = admin.clone();
                    service_fn(move |req| admin.clone().handle_metrics(req))
                },
                stop_all.subscribe(),
                stop_all.subscribe(),
                other_conns.subscribe(),
            )));
        }
        tracing::info!(%proxy_addr, tls = ?tls_addr, %admin_addr, metrics = ?metrics_addr, profiling = ?profiling_addr, check = ?check_addr, "interceptor listening");
        Ok(Self {
            config,
            proxy_addr,
            tls_addr,
            admin_addr,
            metrics_addr,
            profiling_addr,
            check_addr,
            counts,
            synced,
            synced_notify,
            draining,
            stop_proxy,
            stop_all,
            proxy_conns,
            tasks: std::sync::Mutex::new(tasks),
            telemetry: std::sync::Mutex::new(Some(telemetry)),
        })
    }

    /// The bound proxy address.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// The bound TLS proxy address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The bound admin address (`/queue`, `/queue/stream`, `/livez`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound Prometheus address (`/metrics`); `None` when the endpoint is off
    /// (`OTEL_PROM_EXPORTER_ENABLED=false`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The bound debug endpoint address (`/debug/stats`); `None` unless
    /// `PROFILING_BIND_ADDRESS` is set.
    pub fn profiling_addr(&self) -> Option<SocketAddr> {
        self.profiling_addr
    }

    /// The bound check address (admission checks of an ingress); `None` unless
    /// `KEDA_HTTP_CHECK_PORT` is set.
    pub fn check_addr(&self) -> Option<SocketAddr> {
        self.check_addr
    }

    /// Current counts (what `/queue` serves).
    pub fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }

    /// Whether the route table has synced once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Waits until the route table has synced once.
    pub async fn wait_synced(&self) {
        loop {
            let notified = self.synced_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }

    /// Turns `/readyz` to 503 (the first step of [`Interceptor::shutdown`]).
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Graceful shutdown: `/readyz` 503 → shutdown delay → stop accepting → drain in-flight
    /// requests up to the drain timeout → stop everything. Later calls return at once.
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if tasks.is_empty() {
            return;
        }
        self.begin_draining();
        tracing::info!(delay = ?self.config.shutdown_delay, "shutting down: readiness is now 503");
        tokio::time::sleep(self.config.shutdown_delay).await;
        let _ = self.stop_proxy.send(true);
        let drained =
            tokio::time::timeout(self.config.drain_timeout, self.proxy_conns.closed()).await;
        if drained.is_err() {
            tracing::warn!(timeout = ?self.config.drain_timeout, "drain timeout: closing remaining connections");
        }
        let _ = self.stop_all.send(true);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        let telemetry = self
            .telemetry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(telemetry) = telemetry {
            telemetry.shutdown().await;
        }
        tracing::info!("interceptor stopped");
    }
}

impl Drop for Interceptor {
    fn drop(&mut self) {
        let _ = self.stop_proxy.send(true);
        let _ = self.stop_all.send(true);
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            task.abort();
        }
    }
}

/// Starts the interceptor and runs it until `signal` resolves, then shuts down gracefully.
pub async fn run(
    config: Config,
    client: kube::Client,
    signal: impl Future<Output = ()>,
) -> Result<()> {
    let interceptor = Interceptor::start(config, client).await?;
    signal.await;
    interceptor.shutdown().await;
    Ok(())
}

/// Accepts connections until `stop`, serving each with `make(remote)`; every connection task
/// holds a `conns` receiver until it ends, and shuts down gracefully on `stop`.
async fn serve<M, S, B>(
    what: &'static str,
    listener: TcpListener,
    builder: Arc<auto::Builder<TokioExecutor>>,
    make: M,
    mut stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    conns: watch::Receiver<()>,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Some((stream, remote)) = accept(&listener, &mut stop, what).await else {
            break;
        };
        let service = make(remote);
        let builder = builder.clone();
        let (stop, force) = (stop.clone(), force.clone());
        let token = conns.clone();
        tokio::spawn(async move {
            let _token = token;
            drive(
                what,
                remote,
                &builder,
                TokioIo::new(stream),
                service,
                stop,
                force,
                None,
            )
            .await;
        });
    }
    drop(listener);
}

/// How the HTTP/2 connection preface starts (RFC 9113 §3.4); the HTTP/1.1 codec stops at its
/// version, so this much of it is what it hands off.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2";

/// Accepts proxy connections until `stop`: each is served by the HTTP/1.1 codec, and handed
/// (with the bytes already read) to the HTTP/2 codec when it starts with the HTTP/2 preface,
/// or to hyper for a request the HTTP/1.1 codec leaves to it (see [`h1`]).
async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Hyper>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    conns: watch::Receiver<()>,
) {
    loop {
        let Some((stream, remote)) = accept(&listener, &mut stop, "proxy").await else {
            break;
        };
        let Some(open) = proxy.policy().connections.open() else {
            drop(stream);
            continue;
        };
        let (proxy, builder) = (proxy.clone(), builder.clone());
        let (mut stop, mut force) = (stop.clone(), force.clone());
        let token = conns.clone();
        let stream = io::SendTimeout::new(stream, proxy.policy().config.send_timeout);
        tokio::spawn(async move {
            let _token = token;
            let _open = open;
            let outcome = tokio::select! {
                outcome = h1::serve(proxy.policy(), stream, remote, false, &mut stop) => outcome,
                _ = stopped(&mut force) => return,
            };
            if let h1::Outcome::HandOff { stream, buffered } = outcome {
                let idle = proxy.policy().config.idle_timeout;
                if buffered.starts_with(H2_PREFACE_START) {
                    let io = h1::Prefixed::new(buffered, stream);
                    let conn = h2::H2Conn {
                        remote,
                        tls: false,
                        idle,
                    };
                    h2::serve_h2(proxy, io, conn, stop, force).await;
                    return;
                }
                let (service, activity) = proxy_service(proxy, remote, false);
                let io = TokioIo::new(h1::Prefixed::new(buffered, stream));
                let idle = idle.map(|limit| (activity, limit));
                drive("proxy", remote, &builder, io, service, stop, force, idle).await;
            }
        });
    }
    drop(listener);
}

/// Accepts TLS proxy connections until `stop`; after its handshake (which must finish within
/// `handshake_timeout`) each is served by the HTTP/1.1 codec, or by the HTTP/2 one for h2 by
/// ALPN.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    proxy: Arc<Hyper>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    conns: watch::Receiver<()>,
) {
    loop {
        let Some((stream, remote)) = accept(&listener, &mut stop, "TLS proxy").await else {
            break;
        };
        let Some(open) = proxy.policy().connections.open() else {
            drop(stream);
            continue;
        };
        let (proxy, builder, acceptor) = (proxy.clone(), builder.clone(), acceptor.clone());
        let (stop, force) = (stop.clone(), force.clone());
        let token = conns.clone();
        tokio::spawn(async move {
            let _token = token;
            let _open = open;
            let stream = io::SendTimeout::new(stream, proxy.policy().config.send_timeout);
            let stream =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
            // HTTP/1.1 takes the HTTP/1.1 codec like plain connections; h2 (by ALPN) the
            // HTTP/2 one.
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                let conn = h2::H2Conn {
                    remote,
                    tls: true,
                    idle: proxy.policy().config.idle_timeout,
                };
                h2::serve_h2(proxy, stream, conn, stop, force).await;
                return;
            }
            let (stream, buffered) = {
                let mut fast_stop = stop.clone();
                let mut fast_force = force.clone();
                let outcome = tokio::select! {
                    outcome = h1::serve(proxy.policy(), stream, remote, true, &mut fast_stop) => outcome,
                    _ = stopped(&mut fast_force) => return,
                };
                match outcome {
                    h1::Outcome::Done => return,
                    h1::Outcome::HandOff { stream, buffered } => (stream, buffered),
                }
            };
            let idle = proxy.policy().config.idle_timeout;
            let (service, activity) = proxy_service(proxy, remote, true);
            let io = TokioIo::new(h1::Prefixed::new(buffered, stream));
            let idle = idle.map(|limit| (activity, limit));
            drive(
                "TLS proxy",
                remote,
                &builder,
                io,
                service,
                stop,
                force,
                idle,
            )
            .await;
        });
    }
    drop(listener);
}

/// The proxy's hyper service for one connection from `remote` (received over TLS when
/// `tls`), and the connection's activity, which its idle timeout watches: a request is busy
/// until its response body is finished or dropped.
// The service's type can only be named through `impl` (its future is an async block).
#[allow(clippy::type_complexity)]
fn proxy_service(
    proxy: Arc<Hyper>,
    remote: SocketAddr,
    tls: bool,
) -> (
    impl hyper::service::Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<h2::ProxyBody>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<hyper::Response<h2::ProxyBody>, std::convert::Infallible>>
                 + Send
                 + 'static,
    > + Send
    + 'static,
    Arc<idle::Activity>,
) {
    let activity = Arc::new(idle::Activity::default());
    let tracked = activity.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let active = tracked.start();
        let mut req = req.map(h2::InBody::Hyper);
        if tls {
            req.extensions_mut().insert(h2::ViaTls);
        }
        let proxy = proxy.clone();
        async move {
            let mut response = proxy.handle(remote, req).await?;
            response.body_mut().hold(active);
            Ok(response)
        }
    });
    (service, activity)
}

/// The next accepted connection (with `TCP_NODELAY` set), or `None` once `stop` fires.
async fn accept(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    what: &'static str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            _ = stopped(stop) => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, remote));
                }
                Err(error) => {
                    tracing::warn!(what, %error, "accept failed");
                    // Typically EMFILE: give the process a moment to free descriptors.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Serves one connection with hyper until it ends; on `stop`, or when `idle` says it had no
/// request in flight for its limit, it shuts down gracefully; on `force` it is dropped.
#[allow(clippy::too_many_arguments)]
async fn drive<I, S, B>(
    what: &'static str,
    remote: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut stop: watch::Receiver<bool>,
    mut force: watch::Receiver<bool>,
    idle: Option<(Arc<idle::Activity>, Duration)>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle_wait = async {
        match &idle {
            Some((activity, limit)) => activity.idle_for(*limit).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = idle_wait => {
            tracing::debug!(what, %remote, "idle timeout");
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                _ = stopped(&mut force) => Ok(()),
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                _ = stopped(&mut force) => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(what, %remote, %error, "connection ended with an error");
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
