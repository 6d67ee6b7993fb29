//! Cluster DNS for Service addresses: `<svc>.<ns>[.svc[.cluster.local]]:<port>` → `clusterIP:port`.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

use super::SERVICE_NAME_LABEL;

/// Why a service address could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The address is not `<svc>.<ns>[.svc[.cluster.local]]:<port>` (nor `ip:port`).
    #[error("{0:?} is not a service address (<svc>.<ns>[.svc[.cluster.local]]:<port>)")]
    InvalidAddress(String),
    /// No such Service.
    #[error("service {namespace}/{name} not found")]
    NotFound {
        /// Namespace looked in.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// The Service has no cluster IP yet, or is headless without a ready endpoint.
    #[error("service {namespace}/{name} has no address")]
    NoAddress {
        /// Namespace of the Service.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// The API server call failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
}

/// A parsed service address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Already an IP address.
    Ip(SocketAddr),
    /// A Service's DNS name.
    Service {
        name: String,
        namespace: String,
        port: u16,
    },
}

fn parse(address: &str) -> Result<Target, ResolveError> {
    let invalid = || ResolveError::InvalidAddress(address.to_owned());
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(Target::Ip(addr));
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target::Ip(SocketAddr::new(ip, port)));
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    match labels.as_slice() {
        [name, namespace]
        | [name, namespace, "svc"]
        | [name, namespace, "svc", "cluster", "local"]
            if !name.is_empty() && !namespace.is_empty() =>
        {
            Ok(Target::Service {
                name: (*name).to_owned(),
                namespace: (*namespace).to_owned(),
                port,
            })
        }
        _ => Err(invalid()),
    }
}

/// Resolves `<svc>.<ns>:<port>`, `<svc>.<ns>.svc:<port>` or `<svc>.<ns>.svc.cluster.local:<port>`
/// to `clusterIP:port`, where the Service proxy listens (a literal `ip:port` is returned as is).
/// A headless Service resolves to one of its ready endpoints' IPs with the same port, as its DNS
/// name would.
pub async fn resolve_service(
    client: &kube::Client,
    address: &str,
) -> Result<SocketAddr, ResolveError> {
    let (name, namespace, port) = match parse(address)? {
        Target::Ip(addr) => return Ok(addr),
        Target::Service {
            name,
            namespace,
            port,
        } => (name, namespace, port),
    };
    let service = Api::<Service>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await?
        .ok_or_else(|| ResolveError::NotFound {
            namespace: namespace.clone(),
            name: name.clone(),
        })?;
    let no_address = || ResolveError::NoAddress {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.as_deref())
        .unwrap_or_default();
    if let Ok(ip) = cluster_ip.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if cluster_ip != "None" {
        return Err(no_address());
    }
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")))
        .await?;
    slices
        .items
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter(|endpoint| {
            endpoint
                .conditions
                .as_ref()
                .and_then(|conditions| conditions.ready)
                != Some(false)
        })
        .flat_map(|endpoint| &endpoint.addresses)
        .find_map(|address| address.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .ok_or_else(no_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, namespace: &str, port: u16) -> Target {
        Target::Service {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }

    #[test]
    fn parses_service_addresses() {
        assert_eq!(
            parse("scaler.keda:9090").unwrap(),
            service("scaler", "keda", 9090)
        );
        assert_eq!(
            parse("scaler.keda.svc:9090").unwrap(),
            service("scaler", "keda", 9090)
        );
        assert_eq!(
            parse("scaler.keda.svc.cluster.local:9090").unwrap(),
            service("scaler", "keda", 9090)
        );
        assert_eq!(
            parse("scaler.keda.svc.cluster.local.:9090").unwrap(),
            service("scaler", "keda", 9090)
        );
        assert_eq!(
            parse("127.0.0.1:80").unwrap(),
            Target::Ip("127.0.0.1:80".parse().unwrap())
        );
    }

    #[test]
    fn rejects_other_addresses() {
        for bad in [
            "scaler:9090",
            "scaler.keda",
            "scaler.keda:http",
            "a.b.c:1",
            "a.b.svc.other.local:1",
            ".keda:1",
        ] {
            assert!(
                matches!(parse(bad), Err(ResolveError::InvalidAddress(_))),
                "{bad:?}"
            );
        }
    }
}
