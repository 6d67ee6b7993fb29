//! The EndpointSlice controller: keeps the EndpointSlices of every Service that has a selector.
//! Slices of selectorless Services are the user's (tests register outside processes that way).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::informer::{Change, Informer};
use super::{Error, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, podutil, random};

/// Delay before retrying a reconcile that failed.
const RETRY_DELAY: Duration = Duration::from_millis(250);

/// `(namespace, name)` of a Service.
type Key = (String, String);

struct Controller {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    /// What we last wrote per slice `(namespace, name)`, with the resourceVersion the write
    /// returned: while the cache still shows an older version, the write is in flight and is
    /// not repeated.
    written: HashMap<Key, (EndpointSlice, Option<u64>)>,
}

/// Runs the controller until its informers stop.
pub(crate) async fn run(
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    slices: Informer<EndpointSlice>,
) -> Result<(), Error> {
    let mut service_changes = services.subscribe();
    let mut pod_changes = pods.subscribe();
    let mut slice_changes = slices.subscribe();
    services.ready().await?;
    pods.ready().await?;
    slices.ready().await?;
    let mut controller = Controller {
        client,
        services: services.store().clone(),
        pods: pods.store().clone(),
        slices: slices.store().clone(),
        written: HashMap::new(),
    };
    let mut dirty = controller.all_keys();
    let mut retries: HashMap<Key, Instant> = HashMap::new();
    loop {
        for key in std::mem::take(&mut dirty) {
            retries.remove(&key);
            if let Err(error) = controller.reconcile(&key).await {
                tracing::warn!(namespace = %key.0, service = %key.1, %error, "EndpointSlice reconcile failed, retrying");
                retries.insert(key, Instant::now() + RETRY_DELAY);
            }
        }
        let next_retry = retries.values().min().copied();
        tokio::select! {
            change = service_changes.next() => {
                controller.on_service_change(change.ok_or_else(|| Error::InformerStopped("Service".into()))?, &mut dirty);
            }
            change = pod_changes.next() => {
                controller.on_pod_change(change.ok_or_else(|| Error::InformerStopped("Pod".into()))?, &mut dirty);
            }
            change = slice_changes.next() => {
                controller.on_slice_change(change.ok_or_else(|| Error::InformerStopped("EndpointSlice".into()))?, &mut dirty);
            }
            () = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => {
                let now = Instant::now();
                retries.retain(|key, at| if *at <= now { dirty.insert(key.clone()); false } else { true });
            }
        }
        while let Some(change) = service_changes.try_next() {
            controller.on_service_change(change, &mut dirty);
        }
        while let Some(change) = pod_changes.try_next() {
            controller.on_pod_change(change, &mut dirty);
        }
        while let Some(change) = slice_changes.try_next() {
            controller.on_slice_change(change, &mut dirty);
        }
    }
}

impl Controller {
    /// Every Service, plus every Service a managed slice still points at.
    fn all_keys(&self) -> BTreeSet<Key> {
        let services = self
            .services
            .state()
            .into_iter()
            .map(|service| key_of(service.as_ref()));
        let slices = self
            .slices
            .state()
            .into_iter()
            .filter_map(|slice| managed_service_of(&slice));
        services.chain(slices).collect()
    }

    fn on_service_change(&self, change: Change<Service>, dirty: &mut BTreeSet<Key>) {
        match change {
            Change::Applied(service) | Change::Deleted(service) => {
                dirty.insert(key_of(service.as_ref()));
            }
            Change::Resync => dirty.extend(self.all_keys()),
        }
    }

    fn on_pod_change(&self, change: Change<Pod>, dirty: &mut BTreeSet<Key>) {
        match change {
            Change::Applied(pod) | Change::Deleted(pod) => {
                let namespace = pod.namespace().unwrap_or_default();
                let services = self.services.state();
                let in_namespace = services
                    .iter()
                    .filter(|service| service.namespace().as_deref() == Some(&namespace));
                dirty.extend(
                    in_namespace
                        .filter(|service| selector_of(service).is_some())
                        .map(|service| key_of(service.as_ref())),
                );
            }
            Change::Resync => dirty.extend(self.all_keys()),
        }
    }

    fn on_slice_change(&mut self, change: Change<EndpointSlice>, dirty: &mut BTreeSet<Key>) {
        match change {
            Change::Applied(slice) => dirty.extend(managed_service_of(&slice)),
            Change::Deleted(slice) => {
                self.written.remove(&key_of(slice.as_ref()));
                dirty.extend(managed_service_of(&slice));
            }
            Change::Resync => {
                self.written.clear();
                dirty.extend(self.all_keys());
            }
        }
    }

    async fn reconcile(&mut self, key: &Key) -> Result<(), kube::Error> {
        let (namespace, name) = key;
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), namespace);
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .state()
            .into_iter()
            .filter(|slice| managed_service_of(slice).as_ref() == Some(key))
            .collect();
        let service = self.services.get(&ObjectRef::new(name).within(namespace));
        let desired = match &service {
            Some(service)
                if selector_of(service).is_some()
                    && service.metadata.deletion_timestamp.is_none() =>
            {
                let pods: Vec<Arc<Pod>> = self
                    .pods
                    .state()
                    .into_iter()
                    .filter(|pod| pod.namespace().as_deref() == Some(namespace.as_str()))
                    .collect();
                desired_slices(service, &pods)
            }
            // Deleted or selectorless: the managed slices go.
            _ => Vec::new(),
        };

        tracing::trace!(%namespace, service = %name, desired = desired.len(), existing = existing.len(), "reconciling EndpointSlices");
        for slice in &desired {
            let slice_key = (namespace.clone(), slice.name_any());
            let cached = existing.iter().find(|old| old.name_any() == slice_key.1);
            if cached.is_some_and(|old| same_content(old, slice))
                || self.write_in_flight(&slice_key, slice, cached.map(AsRef::as_ref))
            {
                continue;
            }
            tracing::debug!(slice = %slice_key.1, endpoints = slice.endpoints.len(), "writing EndpointSlice");
            let written = match cached {
                Some(_) => patch_slice(&api, slice).await?,
                None => match api.create(&PostParams::default(), slice).await {
                    Ok(created) => created,
                    // Our cache is behind: the slice exists already.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        patch_slice(&api, slice).await?
                    }
                    Err(error) => return Err(error),
                },
            };
            self.written
                .insert(slice_key, (slice.clone(), resource_version(&written)));
        }
        for old in &existing {
            let old_name = old.name_any();
            if !desired.iter().any(|slice| slice.name_any() == old_name) {
                self.written.remove(&(namespace.clone(), old_name.clone()));
                match api.delete(&old_name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }
}

impl Controller {
    /// Whether `desired` was already written and the cache has just not caught up yet.
    fn write_in_flight(
        &self,
        key: &Key,
        desired: &EndpointSlice,
        cached: Option<&EndpointSlice>,
    ) -> bool {
        let Some((written, Some(written_version))) = self.written.get(key) else {
            return false;
        };
        if !same_content(written, desired) {
            return false;
        }
        match cached {
            None => true,
            Some(cached) => resource_version(cached)
                .is_some_and(|cached_version| cached_version < *written_version),
        }
    }
}

/// The resourceVersion as a number, when the API server uses numbers (ours and etcd's do).
fn resource_version(slice: &EndpointSlice) -> Option<u64> {
    slice.resource_version()?.parse().ok()
}

async fn patch_slice(
    api: &Api<EndpointSlice>,
    slice: &EndpointSlice,
) -> Result<EndpointSlice, kube::Error> {
    let patch = json!({
        "metadata": { "labels": slice.metadata.labels, "ownerReferences": slice.metadata.owner_references },
        "addressType": slice.address_type,
        "endpoints": slice.endpoints,
        "ports": slice.ports,
    });
    match api
        .patch(
            &slice.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(patched) => Ok(patched),
        // Deleted meanwhile (e.g. by a user): create it again.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            api.create(&PostParams::default(), slice).await
        }
        Err(error) => Err(error),
    }
}

fn same_content(old: &EndpointSlice, new: &EndpointSlice) -> bool {
    let labels_present = new
        .labels()
        .iter()
        .all(|(key, value)| old.labels().get(key) == Some(value));
    labels_present
        && old.address_type == new.address_type
        && old.endpoints == new.endpoints
        && old.ports.as_deref().unwrap_or_default() == new.ports.as_deref().unwrap_or_default()
}

fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The Service a slice belongs to, if this controller manages it.
fn managed_service_of(slice: &EndpointSlice) -> Option<Key> {
    let labels = slice.labels();
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    Some((
        slice.namespace().unwrap_or_default(),
        labels.get(SERVICE_NAME_LABEL)?.clone(),
    ))
}

/// The Service's selector; an empty selector selects nothing, as in Kubernetes.
fn selector_of(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|selector| !selector.is_empty())
}

/// The slices a Service with a selector should have, given the pods of its namespace: one per
/// distinct set of resolved ports (usually one), or one empty slice when no pod matches.
pub(crate) fn desired_slices(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSlice> {
    let Some(selector) = selector_of(service) else {
        return Vec::new();
    };
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let service_ports = spec.ports.unwrap_or_default();

    let mut selected: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|pod| {
            selector
                .iter()
                .all(|(key, value)| pod.labels().get(key) == Some(value))
        })
        .filter(|pod| podutil::pod_ip(pod).is_some() && !podutil::is_terminal(pod))
        .collect();
    selected.sort_by_key(|pod| pod.name_any());

    let mut groups: BTreeMap<Vec<PortKey>, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in selected {
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|port| {
                let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
                let number = match port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port))
                {
                    IntOrString::Int(number) => Some(number),
                    IntOrString::String(name) => podutil::named_port(pod, &name, &protocol),
                }?;
                Some(EndpointPort {
                    name: Some(port.name.clone().unwrap_or_default()),
                    port: Some(number),
                    protocol: Some(protocol),
                    app_protocol: port.app_protocol.clone(),
                })
            })
            .collect();
        let ready = podutil::is_ready(pod);
        let terminating = podutil::is_terminating(pod);
        let endpoint = Endpoint {
            addresses: vec![podutil::pod_ip(pod).unwrap_or_default().to_owned()],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (ready && !terminating)),
                serving: Some(publish_not_ready || ready),
                terminating: Some(terminating),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.uid(),
                ..ObjectReference::default()
            }),
            node_name: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
            ..Endpoint::default()
        };
        let key = ports.iter().map(port_key).collect();
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    if groups.is_empty() {
        // No endpoints: one empty slice that still lists the ports (named target ports unresolved).
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .map(|port| EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: match port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port))
                {
                    IntOrString::Int(number) => Some(number),
                    IntOrString::String(_) => None,
                },
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            })
            .collect();
        groups.insert(Vec::new(), (ports, Vec::new()));
    }

    let service_name = service.name_any();
    let uid = service.uid().unwrap_or_default();
    groups
        .into_values()
        .enumerate()
        .map(|(index, (ports, endpoints))| {
            // The first slice keeps a stable name, so scaling from and to zero updates it in place.
            let seed = if index == 0 {
                uid.clone()
            } else {
                format!("{uid}/{ports:?}")
            };
            let suffix = random::safe_encode(random::fnv1a32(seed.as_bytes()));
            let suffix = &suffix[suffix.len().saturating_sub(5)..];
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{service_name}-{suffix}")),
                    namespace: service.namespace(),
                    labels: Some(BTreeMap::from([
                        (SERVICE_NAME_LABEL.to_owned(), service_name.clone()),
                        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                    ])),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Service".into(),
                        name: service_name.clone(),
                        uid: uid.clone(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(ports),
            }
        })
        .collect()
}

/// A sortable identity of an [`EndpointPort`].
type PortKey = (Option<String>, Option<i32>, Option<String>, Option<String>);

fn port_key(port: &EndpointPort) -> PortKey {
    (
        port.name.clone(),
        port.port,
        port.protocol.clone(),
        port.app_protocol.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn service(target_port: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target_port),
                    app_protocol: Some("http".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, container_port: (&str, i32)) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("{name}-uid")),
                labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(container_port.0.into()),
                        container_port: container_port.1,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    #[test]
    fn resolves_named_target_ports_and_readiness() {
        let pods = [
            pod("a", "127.64.0.1", true, ("web", 8080)),
            pod("b", "127.64.0.2", false, ("web", 8080)),
        ];
        let slices = desired_slices(&service(IntOrString::String("web".into())), &pods);
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert!(slice.name_any().starts_with("web-"));
        assert_eq!(
            slice.labels().get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        let port = &slice.ports.as_ref().unwrap()[0];
        assert_eq!(
            (
                port.name.as_deref(),
                port.port,
                port.app_protocol.as_deref()
            ),
            (Some("http"), Some(8080), Some("http"))
        );
        let ready: Vec<_> = slice
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready,
                )
            })
            .collect();
        assert_eq!(
            ready,
            [("127.64.0.1", Some(true)), ("127.64.0.2", Some(false))]
        );
    }

    #[test]
    fn pods_resolving_ports_differently_get_separate_slices() {
        let pods = [
            pod("a", "127.64.0.1", true, ("web", 8080)),
            pod("b", "127.64.0.2", true, ("web", 9090)),
        ];
        let slices = desired_slices(&service(IntOrString::String("web".into())), &pods);
        assert_eq!(slices.len(), 2);
        assert_ne!(slices[0].name_any(), slices[1].name_any());
    }

    #[test]
    fn no_pods_gives_one_empty_slice_with_the_same_name() {
        let svc = service(IntOrString::Int(8080));
        let empty = desired_slices(&svc, &[]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].endpoints.is_empty());
        assert_eq!(empty[0].ports.as_ref().unwrap()[0].port, Some(8080));
        let full = desired_slices(&svc, &[pod("a", "127.64.0.1", true, ("web", 8080))]);
        assert_eq!(full[0].name_any(), empty[0].name_any());
    }

    #[test]
    fn selectorless_services_are_not_managed() {
        let mut svc = service(IntOrString::Int(8080));
        svc.spec.as_mut().unwrap().selector = None;
        assert!(desired_slices(&svc, &[pod("a", "127.64.0.1", true, ("web", 8080))]).is_empty());
    }
}
