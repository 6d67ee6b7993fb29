//! The kubelet: runs every Pod as the built-in echo app on its own loopback IP, reports the
//! pod's IP and readiness, and stops the app gracefully when the Pod is deleted.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::echo::{self, PodIdentity};
use super::informer::{Change, Informer};
use super::{
    Error, POD_FINALIZER, RESPONSE_DELAY_ANNOTATION, STARTUP_DELAY_ANNOTATION, podutil, random,
};
use http_add_on_types::duration::parse_duration;

/// Port the app listens on when the pod declares none.
const DEFAULT_PORT: u16 = 8080;
/// How many pod IPs to try before giving up on binding (collisions are rare in a /10).
const BIND_ATTEMPTS: usize = 32;
/// How long a stopping pod waits for the EndpointSlices to stop listing it as ready.
const ENDPOINT_REMOVAL_TIMEOUT: Duration = Duration::from_secs(2);
/// `terminationGracePeriodSeconds` when the pod spec leaves it out.
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// What the kubelet wants a pod's app to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Desired {
    /// Keep running.
    Run,
    /// The Pod is being deleted: drain, then release the finalizer.
    Terminate,
    /// The Pod object no longer exists: drain and stop.
    Gone,
}

struct Kubelet {
    client: Client,
    slices: Informer<EndpointSlice>,
    /// Running pod apps by pod UID.
    running: HashMap<String, watch::Sender<Desired>>,
    /// Pods whose finalizer is being released without an app having run.
    releasing: HashSet<String>,
    tasks: JoinSet<()>,
}

/// Runs the kubelet until its informers stop.
pub(crate) async fn run(
    client: Client,
    pods: Informer<Pod>,
    slices: Informer<EndpointSlice>,
) -> Result<(), Error> {
    let mut changes = pods.subscribe();
    pods.ready().await?;
    slices.ready().await?;
    let mut kubelet = Kubelet {
        client,
        slices,
        running: HashMap::new(),
        releasing: HashSet::new(),
        tasks: JoinSet::new(),
    };
    kubelet.resync(&pods);
    loop {
        tokio::select! {
            change = changes.next() => match change.ok_or_else(|| Error::InformerStopped("Pod".into()))? {
                Change::Applied(pod) => kubelet.observe(&pod),
                Change::Deleted(pod) => kubelet.forget(&pod.uid().unwrap_or_default()),
                Change::Resync => kubelet.resync(&pods),
            },
            Some(_) = kubelet.tasks.join_next(), if !kubelet.tasks.is_empty() => {
                kubelet.running.retain(|_, desired| !desired.is_closed());
            }
        }
    }
}

impl Kubelet {
    fn resync(&mut self, pods: &Informer<Pod>) {
        let current = pods.store().state();
        let uids: HashSet<String> = current.iter().filter_map(|pod| pod.uid()).collect();
        let vanished: Vec<String> = self
            .running
            .keys()
            .filter(|uid| !uids.contains(*uid))
            .cloned()
            .collect();
        for uid in vanished {
            self.forget(&uid);
        }
        for pod in current {
            self.observe(&pod);
        }
    }

    fn observe(&mut self, pod: &Arc<Pod>) {
        let Some(uid) = pod.uid() else { return };
        if podutil::is_terminating(pod) {
            if let Some(desired) = self.running.get(&uid) {
                desired.send_if_modified(|desired| {
                    let running = *desired == Desired::Run;
                    if running {
                        *desired = Desired::Terminate;
                    }
                    running
                });
            } else if pod.finalizers().iter().any(|f| f == POD_FINALIZER)
                && self.releasing.insert(uid)
            {
                let client = self.client.clone();
                let pod = Arc::clone(pod);
                self.tasks
                    .spawn(async move { release_finalizer(&client, &pod).await });
            }
            return;
        }
        if podutil::is_terminal(pod) || self.running.contains_key(&uid) {
            return;
        }
        let (desired, receiver) = watch::channel(Desired::Run);
        self.running.insert(uid, desired);
        let runtime = PodRuntime {
            client: self.client.clone(),
            pod: Arc::clone(pod),
            slices: self.slices.clone(),
        };
        self.tasks.spawn(runtime.run(receiver));
    }

    fn forget(&mut self, uid: &str) {
        self.releasing.remove(uid);
        if let Some(desired) = self.running.get(uid) {
            desired.send_replace(Desired::Gone);
        }
    }
}

/// One pod's app, from start to graceful stop.
struct PodRuntime {
    client: Client,
    pod: Arc<Pod>,
    slices: Informer<EndpointSlice>,
}

impl PodRuntime {
    async fn run(self, mut desired: watch::Receiver<Desired>) {
        let name = self.pod.name_any();
        let namespace = self.pod.namespace().unwrap_or_default();
        let api = Api::<Pod>::namespaced(self.client.clone(), &namespace);
        let startup_delay = annotation_duration(&self.pod, STARTUP_DELAY_ANNOTATION);
        let response_delay = annotation_duration(&self.pod, RESPONSE_DELAY_ANNOTATION);
        let mut ports = podutil::container_ports(&self.pod);
        if ports.is_empty() {
            ports.push(DEFAULT_PORT);
        }
        let started_at = Time(jiff::Timestamp::now());

        if !self.pod.finalizers().iter().any(|f| f == POD_FINALIZER) {
            let mut finalizers = self.pod.finalizers().to_vec();
            finalizers.push(POD_FINALIZER.to_owned());
            let patch = json!({ "metadata": { "finalizers": finalizers } });
            if let Err(error) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::debug!(pod = %name, %error, "adding the kubelet finalizer failed");
            }
        }

        // The sandbox gets its IP at once; the app listens (and turns Ready) after its startup delay.
        let mut ip = random::pod_ip();
        self.patch_status(&api, &name, ip, &started_at, ContainerState::Creating)
            .await;
        let stopped_early = tokio::select! {
            () = tokio::time::sleep(startup_delay) => None,
            outcome = stop_requested(&mut desired) => Some(outcome),
        };
        if let Some(outcome) = stopped_early {
            if outcome == Desired::Terminate {
                release_finalizer(&self.client, &self.pod).await;
            }
            return;
        }

        let listeners = match bind_ports(ip, &ports).await {
            Ok((bound_ip, listeners)) => {
                ip = bound_ip;
                listeners
            }
            Err(error) => {
                // Like a crash-looping container: never Ready, visible in the pod's status.
                tracing::warn!(pod = %name, %error, "pod app cannot listen");
                self.patch_status(
                    &api,
                    &name,
                    ip,
                    &started_at,
                    ContainerState::Crashing(error.to_string()),
                )
                .await;
                let outcome = stop_requested(&mut desired).await;
                if outcome == Desired::Terminate {
                    release_finalizer(&self.client, &self.pod).await;
                }
                return;
            }
        };
        let identity = Arc::new(PodIdentity {
            name: name.clone(),
            namespace: namespace.clone(),
            ip: ip.to_string(),
            response_delay,
            in_flight: watch::channel(0).0,
        });
        let (drain, drain_receiver) = watch::channel(false);
        let mut servers = JoinSet::new();
        for listener in listeners {
            servers.spawn(echo::serve(
                listener,
                Arc::clone(&identity),
                drain_receiver.clone(),
            ));
        }
        self.patch_status(&api, &name, ip, &started_at, ContainerState::Ready)
            .await;
        tracing::debug!(pod = %name, %ip, ?ports, "pod app ready");

        let outcome = stop_requested(&mut desired).await;
        // Graceful stop: not ready first, so no new traffic is sent here; then drain; then release.
        if outcome == Desired::Terminate {
            self.patch_status(&api, &name, ip, &started_at, ContainerState::Stopping)
                .await;
        }
        self.wait_until_not_ready_in_slices().await;
        drain.send_replace(true);
        let grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds)
            .map_or(DEFAULT_GRACE_PERIOD, |seconds| {
                Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
            });
        let drained = tokio::time::timeout(grace, async {
            while servers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::debug!(pod = %name, "grace period over, stopping the app");
        }
        drop(servers);
        if outcome == Desired::Terminate {
            release_finalizer(&self.client, &self.pod).await;
        }
        tracing::debug!(pod = %name, "pod app stopped");
    }

    /// Waits (bounded) until no EndpointSlice lists this pod as ready, so that proxies stop
    /// sending it new connections before it drains.
    async fn wait_until_not_ready_in_slices(&self) {
        let Some(uid) = self.pod.uid() else { return };
        let deadline = Instant::now() + ENDPOINT_REMOVAL_TIMEOUT;
        let mut changes = self.slices.subscribe();
        loop {
            if !listed_as_ready(&self.slices.store().state(), &uid) {
                return;
            }
            tokio::select! {
                change = changes.next() => if change.is_none() { return },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(pod = %self.pod.name_any(), "EndpointSlices still list the pod as ready, stopping anyway");
                    return;
                }
            }
        }
    }

    async fn patch_status(
        &self,
        api: &Api<Pod>,
        name: &str,
        ip: Ipv4Addr,
        started_at: &Time,
        state: ContainerState,
    ) {
        let patch = json!({ "status": pod_status(&self.pod, ip, started_at, &state) });
        if let Err(error) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::debug!(pod = %name, %error, "updating pod status failed");
        }
    }
}

/// Waits until the kubelet wants the app stopped, and says why (the kubelet gone counts as `Gone`).
async fn stop_requested(desired: &mut watch::Receiver<Desired>) -> Desired {
    desired
        .wait_for(|desired| *desired != Desired::Run)
        .await
        .map(|desired| *desired)
        .unwrap_or(Desired::Gone)
}

/// Where a pod's containers are in their life.
#[derive(Debug)]
enum ContainerState {
    /// Before the app listens (startup delay).
    Creating,
    /// Listening and Ready.
    Ready,
    /// Could not listen; never turns Ready.
    Crashing(String),
    /// Being deleted: not Ready any more, still draining.
    Stopping,
}

fn pod_status(pod: &Pod, ip: Ipv4Addr, started_at: &Time, state: &ContainerState) -> Value {
    let now = Time(jiff::Timestamp::now());
    let ready = matches!(state, ContainerState::Ready);
    let running = matches!(state, ContainerState::Ready | ContainerState::Stopping);
    let phase = if running { "Running" } else { "Pending" };
    let condition = |type_: &str, status: bool| json!({ "type": type_, "status": if status { "True" } else { "False" }, "lastTransitionTime": now });
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|container| {
            let image = container.image.clone().unwrap_or_default();
            let container_state = match state {
                ContainerState::Creating => json!({ "waiting": { "reason": "ContainerCreating" } }),
                ContainerState::Crashing(message) => {
                    json!({ "waiting": { "reason": "CrashLoopBackOff", "message": message } })
                }
                ContainerState::Ready | ContainerState::Stopping => json!({ "running": { "startedAt": started_at } }),
            };
            json!({
                "name": container.name,
                "image": image,
                "imageID": format!("sim://{image}"),
                "containerID": format!("sim://{}/{}", pod.uid().unwrap_or_default(), container.name),
                "ready": ready,
                "started": running,
                "restartCount": 0,
                "state": container_state,
            })
        })
        .collect();
    json!({
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{ "ip": "127.0.0.1" }],
        "podIP": ip.to_string(),
        "podIPs": [{ "ip": ip.to_string() }],
        "startTime": started_at,
        "qosClass": "BestEffort",
        "conditions": [
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "containerStatuses": containers,
    })
}

/// Whether any EndpointSlice lists the pod with this UID as ready.
fn listed_as_ready(slices: &[Arc<EndpointSlice>], uid: &str) -> bool {
    slices
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .any(|endpoint| {
            endpoint
                .target_ref
                .as_ref()
                .and_then(|target| target.uid.as_deref())
                == Some(uid)
                && endpoint
                    .conditions
                    .as_ref()
                    .and_then(|conditions| conditions.ready)
                    != Some(false)
        })
}

fn annotation_duration(pod: &Pod, annotation: &str) -> Duration {
    match pod.annotations().get(annotation) {
        None => Duration::ZERO,
        Some(value) => parse_duration(value).unwrap_or_else(|error| {
            tracing::warn!(pod = %pod.name_any(), %annotation, %error, "ignoring invalid annotation");
            Duration::ZERO
        }),
    }
}

/// Binds every port on one pod IP, starting with `preferred`; another IP is drawn when one of
/// the addresses is taken (several simulated clusters share the host's loopback range).
async fn bind_ports(
    preferred: Ipv4Addr,
    ports: &[u16],
) -> io::Result<(Ipv4Addr, Vec<TcpListener>)> {
    let mut ip = preferred;
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        match ports
            .iter()
            .map(|port| listen(SocketAddr::from((ip, *port))))
            .collect::<io::Result<Vec<_>>>()
        {
            Ok(listeners) => return Ok((ip, listeners)),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(error);
                ip = random::pod_ip();
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// A listening socket on `addr` (SO_REUSEADDR, so a restarted listener is not blocked by
/// connections in TIME_WAIT).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Removes the kubelet's finalizer so the API server can finish deleting the pod.
async fn release_finalizer(client: &Client, pod: &Pod) {
    let name = pod.name_any();
    let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    for _ in 0..5 {
        let current = match api.get_opt(&name).await {
            Ok(Some(current)) if current.uid() == pod.uid() => current,
            Ok(_) => return,
            Err(error) => {
                tracing::debug!(pod = %name, %error, "reading the pod to release its finalizer failed");
                return;
            }
        };
        if !current.finalizers().iter().any(|f| f == POD_FINALIZER) {
            return;
        }
        let rest: Vec<&String> = current
            .finalizers()
            .iter()
            .filter(|f| *f != POD_FINALIZER)
            .collect();
        let patch = json!({ "metadata": { "finalizers": rest, "resourceVersion": current.resource_version() } });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(kube::Error::Api(status)) if status.code == 404 => return,
            Err(error) => {
                tracing::debug!(pod = %name, %error, "releasing the pod's finalizer failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_all_ports_on_one_ip_and_moves_on_when_taken() {
        // Ports free on every interface right now (fixed ones could be taken on a busy host).
        let holders = [(); 2].map(|()| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
        let ports = holders.each_ref().map(|l| l.local_addr().unwrap().port());
        drop(holders);
        let (ip, listeners) = bind_ports(random::pod_ip(), &ports).await.unwrap();
        assert_eq!(listeners.len(), 2);
        assert!(
            listeners
                .iter()
                .all(|listener| listener.local_addr().unwrap().ip() == ip)
        );
        // The same IP is taken now: binding again must pick another one.
        let (other, _listeners) = bind_ports(ip, &ports[..1]).await.unwrap();
        assert_ne!(other, ip);
    }

    #[test]
    fn status_reports_readiness() {
        let pod = Pod::default();
        let started = Time(jiff::Timestamp::now());
        let ip = Ipv4Addr::new(127, 64, 1, 2);
        let ready = pod_status(&pod, ip, &started, &ContainerState::Ready);
        assert_eq!(ready["phase"], "Running");
        assert_eq!(ready["podIP"], "127.64.1.2");
        assert_eq!(ready["conditions"][3]["type"], "Ready");
        assert_eq!(ready["conditions"][3]["status"], "True");
        let creating = pod_status(&pod, ip, &started, &ContainerState::Creating);
        assert_eq!(creating["phase"], "Pending");
        assert_eq!(creating["conditions"][3]["status"], "False");
    }
}
