//! The Service proxy (kube-proxy's job): a TCP listener on `clusterIP:port` for every Service
//! port, forwarding each connection to a ready endpoint of the Service, round robin.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

use super::informer::{Change, Informer};
use super::{Error, SERVICE_NAME_LABEL, kubelet};

/// How long to wait for an endpoint to accept a connection before trying the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to keep retrying a bind that fails (e.g. the previous listener is still closing).
const BIND_RETRY_FOR: Duration = Duration::from_secs(2);

/// One proxied Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frontend {
    namespace: String,
    service: String,
    /// The Service port's name ("" when unnamed); EndpointSlice ports are matched by it.
    port_name: String,
    addr: SocketAddr,
}

/// The listeners of every Service.
struct Proxy {
    slices: Store<EndpointSlice>,
    listeners: HashMap<(String, String), Vec<(Frontend, AbortHandle)>>,
    tasks: JoinSet<()>,
}

/// Runs the proxy until its informers stop.
pub(crate) async fn run(
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
) -> Result<(), Error> {
    let mut changes = services.subscribe();
    services.ready().await?;
    slices.ready().await?;
    let mut proxy = Proxy {
        slices: slices.store().clone(),
        listeners: HashMap::new(),
        tasks: JoinSet::new(),
    };
    proxy.resync(services.store());
    loop {
        tokio::select! {
            change = changes.next() => match change.ok_or_else(|| Error::InformerStopped("Service".into()))? {
                Change::Applied(service) => proxy.sync(key_of(&service), Some(&service)),
                Change::Deleted(service) => proxy.sync(key_of(&service), None),
                Change::Resync => proxy.resync(services.store()),
            },
            Some(_) = proxy.tasks.join_next(), if !proxy.tasks.is_empty() => {}
        }
    }
}

impl Proxy {
    /// Brings the listeners of one Service in line with its spec (`None`: deleted).
    fn sync(&mut self, key: (String, String), service: Option<&Service>) {
        let wanted = service.map(frontends_of).unwrap_or_default();
        let mut kept = Vec::new();
        for (frontend, handle) in self.listeners.remove(&key).unwrap_or_default() {
            if wanted.contains(&frontend) {
                kept.push((frontend, handle));
            } else {
                handle.abort();
            }
        }
        for frontend in wanted {
            if !kept.iter().any(|(existing, _)| *existing == frontend) {
                let handle = self
                    .tasks
                    .spawn(serve(frontend.clone(), self.slices.clone()));
                kept.push((frontend, handle));
            }
        }
        if !kept.is_empty() {
            self.listeners.insert(key, kept);
        }
    }

    /// Syncs every Service, including those deleted while the watch was down.
    fn resync(&mut self, services: &Store<Service>) {
        let all = services.state();
        let vanished: Vec<(String, String)> = self
            .listeners
            .keys()
            .filter(|key| !all.iter().any(|service| key_of(service) == **key))
            .cloned()
            .collect();
        for key in vanished {
            self.sync(key, None);
        }
        for service in &all {
            self.sync(key_of(service), Some(service));
        }
    }
}

fn key_of(service: &Service) -> (String, String) {
    (service.namespace().unwrap_or_default(), service.name_any())
}

/// The listeners a Service needs: one per TCP port, on its cluster IP (none when headless).
fn frontends_of(service: &Service) -> Vec<Frontend> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        return Vec::new();
    };
    spec.ports
        .iter()
        .flatten()
        .filter(|port| {
            port.protocol
                .as_deref()
                .is_none_or(|protocol| protocol == "TCP")
        })
        .filter_map(|port| {
            Some(Frontend {
                namespace: service.namespace().unwrap_or_default(),
                service: service.name_any(),
                port_name: port.name.clone().unwrap_or_default(),
                addr: SocketAddr::new(ip, u16::try_from(port.port).ok()?),
            })
        })
        .collect()
}

async fn serve(frontend: Frontend, slices: Store<EndpointSlice>) {
    let Some(listener) = bind(frontend.addr).await else {
        return;
    };
    tracing::debug!(service = %frontend.service, addr = %frontend.addr, "service proxy listening");
    let next = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let backends = ready_endpoints(&slices.state(), &frontend);
                let start = next.fetch_add(1, Ordering::Relaxed);
                connections.spawn(forward(client, backends, start));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn bind(addr: SocketAddr) -> Option<TcpListener> {
    let deadline = tokio::time::Instant::now() + BIND_RETRY_FOR;
    let mut delay = Duration::from_millis(10);
    loop {
        match kubelet::listen(addr) {
            Ok(listener) => return Some(listener),
            Err(error)
                if error.kind() == io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(error) => {
                tracing::warn!(%addr, %error, "service proxy cannot listen");
                return None;
            }
        }
    }
}

/// Forwards one connection to the first endpoint, from `start` round robin, that accepts it.
async fn forward(mut client: TcpStream, backends: Vec<SocketAddr>, start: usize) {
    let _ = client.set_nodelay(true);
    for offset in 0..backends.len() {
        let backend = backends[(start + offset) % backends.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(%backend, %error, "endpoint refused a proxied connection")
            }
            Err(_) => {
                tracing::debug!(%backend, "endpoint did not accept a proxied connection in time")
            }
        }
    }
    // No ready endpoint (or none reachable): dropping the connection closes it.
}

/// The ready endpoints of a Service port, from all its EndpointSlices (managed or hand-made),
/// sorted so that round robin is stable.
fn ready_endpoints(slices: &[Arc<EndpointSlice>], frontend: &Frontend) -> Vec<SocketAddr> {
    let mut endpoints: Vec<SocketAddr> = slices
        .iter()
        .filter(|slice| slice.namespace().as_deref() == Some(frontend.namespace.as_str()))
        .filter(|slice| slice.labels().get(SERVICE_NAME_LABEL) == Some(&frontend.service))
        .filter(|slice| slice.address_type == "IPv4")
        .filter_map(|slice| {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|port| port.name.as_deref().unwrap_or_default() == frontend.port_name)?
                .port
                .and_then(|port| u16::try_from(port).ok())?;
            Some((slice, port))
        })
        .flat_map(|(slice, port)| {
            slice
                .endpoints
                .iter()
                // Kubernetes: a missing `ready` means unknown, which consumers treat as ready.
                .filter(|endpoint| {
                    endpoint
                        .conditions
                        .as_ref()
                        .and_then(|conditions| conditions.ready)
                        != Some(false)
                })
                .flat_map(|endpoint| &endpoint.addresses)
                .filter_map(move |address| Some(SocketAddr::new(address.parse().ok()?, port)))
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn slice(
        service: &str,
        port_name: Option<&str>,
        port: i32,
        endpoints: &[(&str, Option<bool>)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-x")),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_owned(),
                    service.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![(*ip).to_owned()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: port_name.map(str::to_owned),
                port: Some(port),
                ..EndpointPort::default()
            }]),
        })
    }

    #[test]
    fn picks_ready_endpoints_of_the_matching_port() {
        let frontend = Frontend {
            namespace: "ns".into(),
            service: "web".into(),
            port_name: String::new(),
            addr: "127.128.0.1:80".parse().unwrap(),
        };
        let slices = [
            slice(
                "web",
                None,
                8080,
                &[
                    ("127.64.0.2", Some(true)),
                    ("127.64.0.3", Some(false)),
                    ("127.64.0.1", None),
                ],
            ),
            slice("web", Some("other"), 9090, &[("127.64.0.9", Some(true))]),
            slice("api", None, 8080, &[("127.64.0.8", Some(true))]),
        ];
        let endpoints = ready_endpoints(&slices, &frontend);
        assert_eq!(
            endpoints,
            [
                "127.64.0.1:8080".parse().unwrap(),
                "127.64.0.2:8080".parse::<SocketAddr>().unwrap()
            ]
        );
    }
}
