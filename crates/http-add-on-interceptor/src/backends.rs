//! Backends: a Service port and its ready endpoints, kept current by the EndpointSlice watch.
//!
//! A request picks the ready endpoint with the fewest outstanding requests (ties rotate); a
//! request for a backend without ready endpoints waits on [`Backend::wait_ready`], which is
//! woken by the watch (never polls).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::backend_tls::BackendStream;

/// `appProtocol` of a Service port whose backends speak HTTP/2 without TLS.
pub const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";
/// `appProtocol` of a Service port whose backends speak HTTP/1.1 over TLS.
pub const HTTPS_APP_PROTOCOL: &str = "https";
/// `appProtocol` of a Service port whose backends speak HTTP/2 over TLS (gRPC over TLS): the
/// ALPN name of HTTP/2 over TLS, offered alone.
pub const H2_APP_PROTOCOL: &str = "h2";
/// `appProtocol` of a Service port whose backends speak plain HTTP/1.1, also for requests
/// that arrived on the TLS listener.
pub const HTTP_APP_PROTOCOL: &str = "http";

/// What a Service port's `appProtocol` says about its backends' wire protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppProtocol {
    /// Unset or another value: HTTP/1.1, over TLS when the request arrived over TLS.
    #[default]
    Unset,
    /// `http`: plain HTTP/1.1 always.
    Http,
    /// `https`: HTTP/1.1 over TLS always.
    Https,
    /// `kubernetes.io/h2c`: HTTP/2 without TLS (prior knowledge) always.
    H2c,
    /// `h2`: HTTP/2 over TLS (ALPN `h2`) always.
    H2,
}

impl AppProtocol {
    /// The protocol an `appProtocol` value names (case-insensitive).
    pub fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case(H2C_APP_PROTOCOL) {
            Self::H2c
        } else if value.eq_ignore_ascii_case(H2_APP_PROTOCOL) {
            Self::H2
        } else if value.eq_ignore_ascii_case(HTTPS_APP_PROTOCOL) {
            Self::Https
        } else if value.eq_ignore_ascii_case(HTTP_APP_PROTOCOL) {
            Self::Http
        } else {
            Self::Unset
        }
    }
}

/// What goes out to a backend for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1 over TCP.
    Http1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    Https,
    /// HTTP/2 over TCP, prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

impl Wire {
    /// Whether the connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Https | Self::H2)
    }

    /// Whether the request goes out as HTTP/2.
    pub fn http2(self) -> bool {
        matches!(self, Self::H2c | Self::H2)
    }
}

/// How a route names its Service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// The Service port number.
    Number(i32),
    /// The Service port name.
    Name(String),
}

/// A Service port: what a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub service: String,
    /// The port.
    pub port: PortRef,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.port {
            PortRef::Number(n) => write!(f, "{}/{}:{n}", self.namespace, self.service),
            PortRef::Name(n) => write!(f, "{}/{}:{n}", self.namespace, self.service),
        }
    }
}

/// One address requests can be sent to, with its outstanding-request count.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    authority: Authority,
    outstanding: AtomicUsize,
    /// Idle keep-alive connections (both codecs' HTTP/1.1, plain or TLS), with when each
    /// became idle.
    idle: Mutex<Vec<(BackendStream, Instant, IdleSlot)>>,
}

/// The limit on idle pooled connections over all upstreams (`KEDA_HTTP_MAX_IDLE_CONNS`).
#[derive(Debug)]
pub struct IdleBudget {
    idle: AtomicUsize,
    max: usize,
}

/// One pooled connection's share of the [`IdleBudget`], given back when dropped.
#[derive(Debug)]
struct IdleSlot(Arc<IdleBudget>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.idle.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IdleBudget {
    /// At most `max` idle connections in all (0 = no limit, as Go's `MaxIdleConns`).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            idle: AtomicUsize::new(0),
            max,
        })
    }

    /// Idle connections pooled now, over all upstreams.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    fn take_slot(self: &Arc<Self>) -> Option<IdleSlot> {
        let taken = self
            .idle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (self.max == 0 || n < self.max).then_some(n + 1)
            });
        taken.ok().map(|_| IdleSlot(self.clone()))
    }
}

impl Upstream {
    /// An upstream at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_authority(addr, addr.to_string())
    }

    fn with_authority(addr: SocketAddr, authority: String) -> Self {
        Self {
            addr,
            authority: authority
                .parse()
                .unwrap_or_else(|_| Authority::from_static("invalid")),
            outstanding: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The address dialled.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` for the outbound URI.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Requests currently sent to this upstream and not yet finished.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// The most recently pooled idle connection, TLS or not as `tls` says, that still looks
    /// open (no pending data or EOF) and has been idle for at most `max_idle` (`None` = no
    /// limit), if any. Older ones are closed.
    pub fn take_idle(
        &self,
        now: Instant,
        max_idle: Option<Duration>,
        tls: bool,
    ) -> Option<BackendStream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(max_idle) = max_idle {
            // Oldest first: drop every connection idle for too long.
            let expired = idle
                .iter()
                .take_while(|(_, since, _)| now.saturating_duration_since(*since) > max_idle)
                .count();
            idle.drain(..expired);
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut at = idle.len();
        while at > 0 {
            at -= 1;
            if idle[at].0.is_tls() != tls {
                continue;
            }
            let (stream, _, _slot) = idle.remove(at);
            // An idle connection is readable only when the peer closed it (or misbehaved;
            // for TLS, a close_notify). Readiness comes from the event loop, so this check
            // costs no system call.
            if stream.tcp().poll_read_ready(&mut cx).is_pending() {
                return Some(stream);
            }
            tracing::debug!(upstream = %self.addr, "dropping an idle connection that became readable");
        }
        None
    }

    /// Returns a connection, idle since `now`, to the pool, keeping at most `max` here and
    /// within `budget` over all upstreams (beyond either, it is closed).
    pub fn put_idle(
        &self,
        stream: BackendStream,
        now: Instant,
        max: usize,
        budget: &Arc<IdleBudget>,
    ) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < max
            && let Some(slot) = budget.take_slot()
        {
            idle.push((stream, now, slot));
        }
    }

    /// Counts a request to this upstream until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.clone())
    }
}

/// One request outstanding on an [`Upstream`].
#[derive(Debug)]
pub struct Outstanding(Arc<Upstream>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What is known about a backend right now.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Ready pod endpoints.
    pub endpoints: Vec<Arc<Upstream>>,
    /// The Service address (`clusterIP:port`, or the DNS name for headless Services).
    pub service: Option<Arc<Upstream>>,
    /// What its Service port's `appProtocol` says.
    pub protocol: AppProtocol,
}

impl BackendState {
    /// What goes out for a request that arrived over TLS (`via_tls`) or not: the port's
    /// `appProtocol` decides when it names a protocol; otherwise HTTP/1.1, over TLS when the
    /// request came over TLS (as upstream).
    pub fn wire(&self, via_tls: bool) -> Wire {
        match self.protocol {
            AppProtocol::Http => Wire::Http1,
            AppProtocol::Https => Wire::Https,
            AppProtocol::H2c => Wire::H2c,
            AppProtocol::H2 => Wire::H2,
            AppProtocol::Unset if via_tls => Wire::Https,
            AppProtocol::Unset => Wire::Http1,
        }
    }
}

/// A Service port with its current state.
#[derive(Debug)]
pub struct Backend {
    key: BackendKey,
    state: ArcSwap<BackendState>,
    ready: Notify,
    cursor: AtomicUsize,
    /// The Service host (`<svc>.<ns>.svc`): the TLS server name sent and verified.
    server_name: ServerName<'static>,
}

/// How a wait for a ready endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// An endpoint is ready.
    Ready,
    /// The timeout passed first.
    TimedOut,
}

impl Backend {
    /// A backend with no endpoints yet.
    pub fn new(key: BackendKey) -> Self {
        let host = format!("{}.{}.svc", key.service, key.namespace);
        Self {
            server_name: ServerName::try_from(host)
                .unwrap_or_else(|_| ServerName::try_from("invalid.svc").expect("a DNS name")),
            key,
            state: ArcSwap::from_pointee(BackendState::default()),
            ready: Notify::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Its Service port.
    pub fn key(&self) -> &BackendKey {
        &self.key
    }

    /// The current state.
    pub fn state(&self) -> Arc<BackendState> {
        self.state.load_full()
    }

    /// Whether its Service port speaks HTTP/2 (`appProtocol: kubernetes.io/h2c` or `h2`).
    pub fn speaks_http2(&self) -> bool {
        matches!(
            self.state.load().protocol,
            AppProtocol::H2c | AppProtocol::H2
        )
    }

    /// What goes out for a request that arrived over TLS or not ([`BackendState::wire`]).
    pub fn wire(&self, via_tls: bool) -> Wire {
        self.state.load().wire(via_tls)
    }

    /// The TLS server name of its backends: the Service host `<svc>.<ns>.svc`, whether pods
    /// or the Service address are dialled.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Whether a ready endpoint exists.
    pub fn has_ready(&self) -> bool {
        !self.state.load().endpoints.is_empty()
    }

    /// Replaces the state, keeping outstanding counts of endpoints that stay, and wakes
    /// requests waiting for a ready endpoint.
    pub fn set_state(&self, mut next: BackendState) {
        let old = self.state.load();
        if !old.endpoints.is_empty() {
            let by_addr: HashMap<SocketAddr, &Arc<Upstream>> =
                old.endpoints.iter().map(|u| (u.addr, u)).collect();
            for endpoint in &mut next.endpoints {
                if let Some(existing) = by_addr.get(&endpoint.addr) {
                    *endpoint = Arc::clone(existing);
                }
            }
        }
        if let (Some(old), Some(new)) = (&old.service, &next.service)
            && old.addr == new.addr
            && old.authority == new.authority
        {
            next.service = Some(old.clone());
        }
        let wake = !next.endpoints.is_empty();
        self.state.store(Arc::new(next));
        if wake {
            self.ready.notify_waiters();
        }
    }

    /// Waits until a ready endpoint exists or `timeout` passes (`None` waits without limit).
    pub async fn wait_ready(&self, timeout: Option<Duration>) -> Readiness {
        let wait = async {
            loop {
                let notified = self.ready.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.has_ready() {
                    return Readiness::Ready;
                }
                notified.await;
            }
        };
        match timeout {
            None => wait.await,
            Some(limit) => tokio::time::timeout(limit, wait)
                .await
                .unwrap_or(Readiness::TimedOut),
        }
    }

    /// The endpoint with the fewest outstanding requests, skipping `exclude`; ties rotate.
    pub fn pick_endpoint(&self, exclude: &[SocketAddr]) -> Option<Arc<Upstream>> {
        let state = self.state.load();
        pick_least_outstanding(&state.endpoints, &self.cursor, exclude).cloned()
    }
}

/// Least-outstanding choice among `endpoints`, starting the scan at a rotating position so
/// equal loads spread evenly.
pub fn pick_least_outstanding<'a>(
    endpoints: &'a [Arc<Upstream>],
    cursor: &AtomicUsize,
    exclude: &[SocketAddr],
) -> Option<&'a Arc<Upstream>> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let start = cursor.fetch_add(1, Ordering::Relaxed) % n;
    let mut best: Option<&Arc<Upstream>> = None;
    for i in 0..n {
        let candidate = &endpoints[(start + i) % n];
        if exclude.contains(&candidate.addr) {
            continue;
        }
        if best.is_none_or(|b| candidate.outstanding() < b.outstanding()) {
            best = Some(candidate);
        }
    }
    best
}

/// The state of `key` from its Service and the Service's EndpointSlices.
pub fn resolve(
    key: &BackendKey,
    service: Option<&Service>,
    slices: &[&EndpointSlice],
) -> BackendState {
    let service_ports = service
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let service_port = service_ports.iter().find(|p| match &key.port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    });
    // The endpoint port carries the Service port's name ("" when unnamed).
    let port_name: &str = match (&key.port, service_port) {
        (_, Some(p)) => p.name.as_deref().unwrap_or(""),
        (PortRef::Name(name), None) => name,
        (PortRef::Number(_), None) => "",
    };
    // The Service port's appProtocol, else the one the EndpointSlices carry.
    let mut protocol = service_port
        .and_then(|p| p.app_protocol.as_deref())
        .map(AppProtocol::parse)
        .unwrap_or_default();

    let mut endpoints = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
        else {
            continue;
        };
        let Some(number) = port.port.and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        if protocol == AppProtocol::Unset
            && let Some(named) = port.app_protocol.as_deref()
        {
            protocol = AppProtocol::parse(named);
        }
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let addr = SocketAddr::new(ip, number);
            if !endpoints.iter().any(|u: &Arc<Upstream>| u.addr == addr) {
                endpoints.push(Arc::new(Upstream::new(addr)));
            }
        }
    }
    endpoints.sort_by_key(|u| u.addr);

    let service_upstream = service.zip(service_port).and_then(|(svc, port)| {
        let number = u16::try_from(port.port).ok()?;
        let cluster_ip = svc.spec.as_ref()?.cluster_ip.as_deref().unwrap_or("None");
        match cluster_ip.parse::<IpAddr>() {
            Ok(ip) => Some(Arc::new(Upstream::new(SocketAddr::new(ip, number)))),
            // Headless: dial the DNS name; the address is only a placeholder for pooling.
            Err(_) => Some(Arc::new(Upstream::with_authority(
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), number),
                format!(
                    "{}.{}.svc.cluster.local:{number}",
                    key.service, key.namespace
                ),
            ))),
        }
    });
    BackendState {
        endpoints,
        service: service_upstream,
        protocol,
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    fn plain(stream: TcpStream) -> BackendStream {
        BackendStream::Plain(stream)
    }

    fn upstreams(n: u8) -> Vec<Arc<Upstream>> {
        (0..n)
            .map(|i| Arc::new(Upstream::new(SocketAddr::from(([127, 0, 0, i + 1], 80)))))
            .collect()
    }

    #[tokio::test]
    async fn idle_connections_expire_and_closed_ones_are_skipped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Upstream::new(addr);
        let connect = || async {
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            (client, server)
        };
        let t0 = Instant::now();
        let max_idle = Some(Duration::from_secs(90));
        let budget = IdleBudget::new(0);

        let (old, _old_server) = connect().await;
        upstream.put_idle(plain(old), t0, 10, &budget);
        let (fresh, _fresh_server) = connect().await;
        let fresh_port = fresh.local_addr().unwrap().port();
        let fresh = plain(fresh);
        upstream.put_idle(fresh, t0 + Duration::from_secs(60), 10, &budget);
        // At t0 + 100s the first is past 90s of idleness and is closed; the second is reused.
        let taken = upstream
            .take_idle(t0 + Duration::from_secs(100), max_idle, false)
            .expect("the fresher connection");
        assert_eq!(taken.tcp().local_addr().unwrap().port(), fresh_port);
        assert!(
            upstream
                .take_idle(t0 + Duration::from_secs(100), None, false)
                .is_none()
        );

        // A connection its peer closed is skipped.
        let (closing, closing_server) = connect().await;
        drop(closing_server);
        closing.readable().await.unwrap();
        upstream.put_idle(plain(closing), t0, 10, &budget);
        assert!(upstream.take_idle(t0, max_idle, false).is_none());

        // At most `max` are kept.
        let (a, _a_server) = connect().await;
        let (b, _b_server) = connect().await;
        upstream.put_idle(plain(a), t0, 1, &budget);
        upstream.put_idle(plain(b), t0, 1, &budget);
        assert!(
            upstream.take_idle(t0, None, true).is_none(),
            "no TLS one pooled"
        );
        assert!(upstream.take_idle(t0, None, false).is_some());
        assert!(upstream.take_idle(t0, None, false).is_none());
        assert_eq!(budget.idle(), 0, "every slot given back");
    }

    #[tokio::test]
    async fn idle_connections_are_limited_over_all_upstreams() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = (Upstream::new(addr), Upstream::new(addr));
        let budget = IdleBudget::new(2);
        let mut servers = Vec::new();
        let t0 = Instant::now();
        for upstream in [&a, &b, &a] {
            let client = TcpStream::connect(addr).await.unwrap();
            servers.push(listener.accept().await.unwrap().0);
            upstream.put_idle(plain(client), t0, 10, &budget);
        }
        assert_eq!(budget.idle(), 2, "the third one is closed");
        assert!(a.take_idle(t0, None, false).is_some());
        assert!(a.take_idle(t0, None, false).is_none());
        assert_eq!(budget.idle(), 1);
        drop(b);
        assert_eq!(budget.idle(), 0, "a dropped upstream gives its slots back");
    }

    #[test]
    fn least_outstanding_prefers_the_idlest_and_rotates_ties() {
        let eps = upstreams(3);
        let cursor = AtomicUsize::new(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            seen.insert(pick_least_outstanding(&eps, &cursor, &[]).unwrap().addr());
        }
        assert_eq!(seen.len(), 3, "ties rotate over all endpoints");
        let _busy0 = eps[0].begin();
        let _busy1 = eps[1].begin();
        for _ in 0..5 {
            assert_eq!(
                pick_least_outstanding(&eps, &cursor, &[]).unwrap().addr(),
                eps[2].addr()
            );
        }
        let _busy2 = eps[2].begin();
        let _busy2b = eps[2].begin();
        let pick = pick_least_outstanding(&eps, &cursor, &[eps[0].addr()]).unwrap();
        assert_eq!(pick.addr(), eps[1].addr(), "excluded endpoints are skipped");
        assert!(pick_least_outstanding(&[], &cursor, &[]).is_none());
    }

    #[test]
    fn outstanding_counts_survive_state_updates() {
        let backend = Backend::new(BackendKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port: PortRef::Number(80),
        });
        let eps = upstreams(2);
        backend.set_state(BackendState {
            endpoints: eps.clone(),
            ..Default::default()
        });
        let _busy = eps[0].begin();
        backend.set_state(BackendState {
            endpoints: upstreams(3),
            ..Default::default()
        });
        let state = backend.state();
        assert_eq!(state.endpoints[0].outstanding(), 1);
        assert_eq!(state.endpoints.len(), 3);
    }

    #[test]
    fn app_protocols_say_what_goes_out_from_each_listener() {
        let wire = |app: &str, via_tls: bool| {
            BackendState {
                protocol: AppProtocol::parse(app),
                ..Default::default()
            }
            .wire(via_tls)
        };
        for (app, plain, tls) in [
            ("", Wire::Http1, Wire::Https),
            ("kubernetes.io/ws", Wire::Http1, Wire::Https),
            ("http", Wire::Http1, Wire::Http1),
            ("https", Wire::Https, Wire::Https),
            ("kubernetes.io/h2c", Wire::H2c, Wire::H2c),
            ("h2", Wire::H2, Wire::H2),
        ] {
            assert_eq!((wire(app, false), wire(app, true)), (plain, tls), "{app:?}");
        }
        let backend = Backend::new(BackendKey {
            namespace: "shop".into(),
            service: "cart".into(),
            port: PortRef::Number(443),
        });
        assert_eq!(backend.server_name().to_str(), "cart.shop.svc");
    }

    #[test]
    fn resolves_named_ports_readiness_and_h2c() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "svc", "namespace": "ns"},
            "spec": {"clusterIP": "127.128.0.9", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "grpc", "port": 81, "appProtocol": "kubernetes.io/h2c"}
            ]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "svc-1", "namespace": "ns"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9000}],
            "endpoints": [
                {"addresses": ["127.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["127.0.0.4"]}
            ]
        }))
        .unwrap();
        let key = |port| BackendKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port,
        };
        let by_number = resolve(&key(PortRef::Number(80)), Some(&service), &[&slice]);
        let addrs: Vec<String> = by_number
            .endpoints
            .iter()
            .map(|u| u.addr().to_string())
            .collect();
        assert_eq!(addrs, ["127.0.0.2:8080", "127.0.0.4:8080"]);
        assert_eq!(by_number.protocol, AppProtocol::Unset);
        assert_eq!(by_number.wire(false), Wire::Http1);
        assert_eq!(
            by_number.wire(true),
            Wire::Https,
            "TLS in, TLS out, as upstream"
        );
        assert_eq!(
            by_number.service.unwrap().addr().to_string(),
            "127.128.0.9:80"
        );
        let by_name = resolve(
            &key(PortRef::Name("grpc".into())),
            Some(&service),
            &[&slice],
        );
        assert_eq!(by_name.endpoints[0].addr().to_string(), "127.0.0.2:9000");
        assert_eq!(by_name.protocol, AppProtocol::H2c);
        assert_eq!(by_name.wire(true), Wire::H2c);
        let missing = resolve(&key(PortRef::Number(99)), Some(&service), &[&slice]);
        assert!(missing.endpoints.is_empty() && missing.service.is_none());
    }
}
