//! Discovery of the interceptor pods: the ready endpoints of the admin Service's EndpointSlices,
//! followed with a watch (pods come and go without polling).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::time::Duration;

use kube::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Admin addresses of the ready interceptor pods.
pub type Endpoints = BTreeSet<SocketAddr>;

/// The ready admin addresses listed by `slices`. The port is the slice's only port, else its
/// port numbered `default_port` or named `admin`, else `default_port`.
pub fn ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    default_port: u16,
) -> Endpoints {
    let mut out = Endpoints::new();
    for slice in slices {
        let port = slice_port(slice, default_port);
        for endpoint in &slice.endpoints {
            // Kubernetes: an unset `ready` means ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            // Consumers use the first address (the others are fungible).
            if let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

fn slice_port(slice: &EndpointSlice, default_port: u16) -> u16 {
    let ports: Vec<_> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.port.and_then(|n| u16::try_from(n).ok())?,
                p.name.as_deref(),
            ))
        })
        .collect();
    match ports.as_slice() {
        [(port, _)] => *port,
        _ => ports
            .iter()
            .find(|(port, _)| *port == default_port)
            .or_else(|| ports.iter().find(|(_, name)| *name == Some("admin")))
            .map_or(default_port, |(port, _)| *port),
    }
}

/// Watches the EndpointSlices of `service` in `namespace` and publishes the ready admin
/// addresses into `tx` until every receiver is gone. Watch errors are retried with backoff;
/// the last known set stays published meanwhile (an API server restart changes nothing).
pub async fn watch_endpoints(
    client: kube::Client,
    namespace: String,
    service: String,
    default_port: u16,
    tx: watch::Sender<Endpoints>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let mut events = watcher(api, config)
        .backoff(WatchBackoff::default())
        .boxed();
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, EndpointSlice>> = None;
    let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tx.closed() => return,
        };
        match event {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, %namespace, %service, "watching interceptor EndpointSlices");
                continue;
            }
            Some(Ok(watcher::Event::Apply(slice))) => {
                slices.insert(name(&slice), slice);
            }
            Some(Ok(watcher::Event::Delete(slice))) => {
                slices.remove(&name(&slice));
            }
            Some(Ok(watcher::Event::Init)) => {
                relist = Some(BTreeMap::new());
                continue;
            }
            Some(Ok(watcher::Event::InitApply(slice))) => {
                relist.get_or_insert_default().insert(name(&slice), slice);
                continue;
            }
            Some(Ok(watcher::Event::InitDone)) => {
                slices = relist.take().unwrap_or_default();
            }
        }
        let endpoints = ready_endpoints(slices.values(), default_port);
        tx.send_if_modified(|current| {
            if *current == endpoints {
                return false;
            }
            tracing::info!(interceptors = ?endpoints, "interceptor endpoints changed");
            *current = endpoints;
            true
        });
    }
}

/// Retry delays of the scaler's watches: 100 ms doubling to 2 s, with a little jitter, reset
/// by the first successful event. Shorter than kube's default (800 ms → 30 s) so that pods and
/// routes are followed again within seconds of an API server coming back.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    /// First delay.
    pub const MIN: Duration = Duration::from_millis(100);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(2);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 25 % jitter from the clock's sub-second nanos: enough to spread reconnects.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let quarter = (delay.as_nanos() / 4).max(1) as u32;
        Some(delay + Duration::from_nanos(u64::from(nanos % quarter)))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn lists_ready_addresses_with_the_slice_port() {
        let s = slice(
            json!([{"name": "admin", "port": 9191}]),
            json!([
                {"addresses": ["127.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.3"]},
                {"addresses": ["127.0.0.4"], "conditions": {"ready": false}},
                {"addresses": ["not-an-ip"]},
            ]),
        );
        let got: Vec<String> = ready_endpoints([&s], 9090)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["127.0.0.2:9191", "127.0.0.3:9191"]);
    }

    #[test]
    fn backoff_grows_to_its_limit_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = b.by_ref().take(7).collect();
        assert!(delays[0] >= WatchBackoff::MIN && delays[0] < WatchBackoff::MIN * 2);
        assert!(delays[6] >= WatchBackoff::MAX && delays[6] <= WatchBackoff::MAX * 5 / 4);
        b.reset();
        assert!(b.next().unwrap() < WatchBackoff::MIN * 2);
    }

    #[test]
    fn picks_the_admin_port_among_several() {
        let eps = json!([{"addresses": ["127.0.0.2"]}]);
        let by_number = slice(json!([{"port": 8080}, {"port": 9090}]), eps.clone());
        let by_name = slice(
            json!([{"name": "proxy", "port": 8080}, {"name": "admin", "port": 9191}]),
            eps.clone(),
        );
        let none = slice(json!([]), eps);
        let port = |s: &EndpointSlice| ready_endpoints([s], 9090).first().unwrap().port();
        assert_eq!(port(&by_number), 9090);
        assert_eq!(port(&by_name), 9191);
        assert_eq!(port(&none), 9090);
    }
}
