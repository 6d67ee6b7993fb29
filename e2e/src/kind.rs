//! The testbed on a real cluster (kind in CI) where the Helm chart is installed: `cargo xtask e2e
//! --cluster kind` creates the cluster, installs KEDA and the chart, then runs the suite here.
//!
//! - The kube client comes from the default kubeconfig (`KUBECONFIG` or `~/.kube/config`).
//! - Clients reach the interceptors through a NodePort Service over the interceptor pods, at the
//!   node's InternalIP: kube-proxy then balances and drops terminating pods exactly as for the
//!   chart's proxy Service, which a `kubectl port-forward` (pinned to one pod) would not. On
//!   Linux the kind node's IP is routable from the host; that is where CI runs.
//! - Each interceptor pod's admin port is reached through its own `kubectl port-forward` child
//!   process, killed on drop.
//! - Terminating an interceptor deletes its pod with the default grace period and watches it
//!   until it is gone, reporting the container's exit code as the kubelet recorded it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::sim::{ADDON_NAMESPACE, PROXY_SERVICE, delete_ignore_missing};
use crate::testbed::{ClusterControl, Testbed};
use crate::wait;

/// Label selector of the interceptor pods the chart creates.
pub const INTERCEPTOR_SELECTOR: &str =
    "app.kubernetes.io/name=http-add-on,app.kubernetes.io/component=interceptor";
/// Label selector of every add-on pod.
pub const ADDON_SELECTOR: &str = "app.kubernetes.io/part-of=keda-add-ons-http";
/// The NodePort Service the suite adds next to the chart's proxy Service.
pub const NODE_PORT_SERVICE: &str = "e2e-interceptor-proxy-nodeport";

/// Options of [`start`].
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// Namespace the chart is installed in.
    pub namespace: String,
    /// Ready interceptor pods to wait for (the chart was installed with this many replicas).
    pub interceptors: usize,
    /// How long to wait for the add-on to be ready.
    pub ready_timeout: Duration,
}

impl Default for KindOptions {
    fn default() -> Self {
        Self {
            namespace: ADDON_NAMESPACE.to_owned(),
            interceptors: 2,
            ready_timeout: Duration::from_secs(180),
        }
    }
}

/// Keeps the port-forwards alive; dropping it (or [`KindHandle::shutdown`]) ends them.
pub struct KindHandle {
    inner: Arc<Inner>,
}

impl KindHandle {
    /// Stops the port-forwards and removes the NodePort Service.
    pub async fn shutdown(self) {
        self.inner.forwards.lock().unwrap().clear();
        let services: Api<Service> = Api::namespaced(self.inner.client.clone(), &self.inner.ns);
        let _ = delete_ignore_missing(&services, NODE_PORT_SERVICE).await;
    }

    /// Recent logs of the add-on's pods.
    pub fn logs(&self) -> String {
        self.inner.component_logs()
    }
}

/// One interceptor pod and the local end of its admin port-forward.
struct Forward {
    pod: String,
    admin: SocketAddr,
    _child: Child,
}

struct Inner {
    client: kube::Client,
    ns: String,
    /// Interceptor pods at start, by index (what `terminate_interceptor` addresses).
    pods: Vec<String>,
    /// Live admin port-forwards (a terminated pod's is removed).
    forwards: Mutex<Vec<Forward>>,
}

/// Connects to the cluster of the default kubeconfig, waits for the add-on, and sets up access.
pub async fn start(opts: KindOptions) -> anyhow::Result<(Testbed, KindHandle)> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster of the default kubeconfig")?;
    let ns = opts.namespace.clone();
    let pods = wait_interceptors_ready(&client, &ns, opts.interceptors, opts.ready_timeout).await?;

    let mut forwards = Vec::new();
    for pod in &pods {
        let admin = admin_port(&client, &ns, pod).await?;
        let (child, local) = port_forward(&ns, &format!("pod/{pod}"), admin).await?;
        forwards.push(Forward {
            pod: pod.clone(),
            admin: local,
            _child: child,
        });
    }
    let proxy = node_port_proxy(&client, &ns).await?;
    let inner = Arc::new(Inner {
        client: client.clone(),
        ns,
        pods,
        forwards: Mutex::new(forwards),
    });
    let testbed = Testbed {
        client,
        proxy,
        control: inner.clone(),
    };
    Ok((testbed, KindHandle { inner }))
}

/// Waits until `count` interceptor pods are ready; returns their names, oldest first.
async fn wait_interceptors_ready(
    client: &kube::Client,
    ns: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(INTERCEPTOR_SELECTOR);
    wait::until(
        &format!("{count} ready interceptor pods in {ns}"),
        timeout,
        Duration::from_secs(1),
        || async {
            let mut ready: Vec<Pod> = api
                .list(&lp)
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .collect();
            ready.sort_by_key(|p| p.metadata.creation_timestamp.clone());
            Ok((ready.len() >= count)
                .then(|| ready.into_iter().filter_map(|p| p.metadata.name).collect()))
        },
    )
    .await
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The container port named `admin` of `pod`.
async fn admin_port(client: &kube::Client, ns: &str, pod: &str) -> anyhow::Result<u16> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = api.get(pod).await?;
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("admin"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .context("the interceptor pod has no container port named `admin`")
}

/// Starts `kubectl port-forward <target> :<port>` on loopback; returns the child and the local
/// address kubectl chose.
async fn port_forward(ns: &str, target: &str, port: u16) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = Command::new("kubectl")
        .args(["port-forward", "--namespace", ns, "--address", "127.0.0.1"])
        .arg(target)
        .arg(format!(":{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting `kubectl port-forward` (is kubectl installed?)")?;
    let stdout = child.stdout.take().context("port-forward stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let local = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            // "Forwarding from 127.0.0.1:41234 -> 9090"
            if let Some(addr) = line
                .strip_prefix("Forwarding from ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                return anyhow::Ok(addr);
            }
        }
        bail!("kubectl port-forward {target} exited before forwarding")
    })
    .await
    .with_context(|| format!("kubectl port-forward {target} did not start within 30s"))??;
    // Keep reading so kubectl never blocks on a full pipe ("Handling connection for ...").
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, local))
}

/// The NodePort Service over the pods of `selector`, to their `target_port`, on `port`.
pub fn node_port_service(
    ns: &str,
    selector: &BTreeMap<String, String>,
    port: i32,
    target_port: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NODE_PORT_SERVICE, "namespace": ns},
        "spec": {
            "type": "NodePort",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": target_port, "protocol": "TCP"}]
        }
    })
}

/// Creates a NodePort Service over the interceptor pods' proxy port and returns
/// `<node InternalIP>:<nodePort>`.
async fn node_port_proxy(client: &kube::Client, ns: &str) -> anyhow::Result<SocketAddr> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let proxy = services
        .get(PROXY_SERVICE)
        .await
        .with_context(|| format!("reading the chart's Service {ns}/{PROXY_SERVICE}"))?;
    let spec = proxy.spec.context("the proxy Service has no spec")?;
    let selector: BTreeMap<String, String> = spec.selector.unwrap_or_default();
    let port = spec
        .ports
        .and_then(|p| p.into_iter().next())
        .context("the proxy Service has no port")?;
    let target_port = serde_json::to_value(&port.target_port)?;
    let node_port: Service =
        serde_json::from_value(node_port_service(ns, &selector, port.port, target_port))?;
    let applied = services
        .patch(
            NODE_PORT_SERVICE,
            &PatchParams::apply(crate::app::FIELD_MANAGER).force(),
            &Patch::Apply(&node_port),
        )
        .await
        .context("creating the NodePort Service")?;
    let node_port = applied
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.into_iter().next())
        .and_then(|p| p.node_port)
        .context("the NodePort Service got no nodePort")?;
    let nodes: Api<Node> = Api::all(client.clone());
    let ip: IpAddr = nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .find(|a| a.type_ == "InternalIP")
        .context("no node has an InternalIP")?
        .address
        .parse()
        .context("parsing the node's InternalIP")?;
    let addr = SocketAddr::new(ip, u16::try_from(node_port)?);
    // The Service must route before scenarios start.
    wait::until(
        &format!("the NodePort {addr} to accept connections"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())) },
    )
    .await?;
    Ok(addr)
}

impl Inner {
    /// Waits for pod `name` to be deleted; returns its container's exit code when observed.
    async fn watch_until_gone(&self, name: &str) -> anyhow::Result<Option<i32>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(api, config).boxed();
        let mut exit_code = None;
        let mut seen = false;
        loop {
            match events.next().await {
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    seen = true;
                    exit_code = exit_code.or_else(|| terminated_exit_code(&pod));
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    return Ok(exit_code.or_else(|| terminated_exit_code(&pod)));
                }
                Some(Ok(watcher::Event::Init)) => seen = false,
                // The pod was already gone when the watch (re)listed.
                Some(Ok(watcher::Event::InitDone)) if !seen => return Ok(exit_code),
                Some(Ok(watcher::Event::InitDone)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => bail!("the watch on pod {name} ended"),
            }
        }
    }
}

fn terminated_exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}

impl ClusterControl for Inner {
    fn kind(&self) -> &'static str {
        "kind"
    }

    fn interceptor_count(&self) -> usize {
        self.pods.len()
    }

    fn terminate_interceptor(&self, index: usize) -> BoxFuture<'_, anyhow::Result<String>> {
        async move {
            let name = self
                .pods
                .get(index)
                .with_context(|| format!("there is no interceptor {index}"))?
                .clone();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
            // Kubernetes takes the pod out of the endpoints, then sends SIGTERM, and kills it
            // after the chart's terminationGracePeriodSeconds.
            api.delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting interceptor pod {name}"))?;
            let exit = tokio::time::timeout(Duration::from_secs(120), self.watch_until_gone(&name))
                .await
                .with_context(|| {
                    format!("interceptor pod {name} still exists 120s after its deletion")
                })??;
            self.forwards.lock().unwrap().retain(|f| f.pod != name);
            Ok(match exit {
                Some(code) => format!("exit status: {code}"),
                None => "exit status: unknown (the pod was gone before the kubelet reported it)"
                    .to_owned(),
            })
        }
        .boxed()
    }

    fn interceptor_admins(&self) -> Vec<SocketAddr> {
        self.forwards
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.admin)
            .collect()
    }

    fn component_logs(&self) -> String {
        let output = std::process::Command::new("kubectl")
            .args([
                "logs",
                "--namespace",
                &self.ns,
                "--selector",
                ADDON_SELECTOR,
            ])
            .args([
                "--all-containers",
                "--prefix",
                "--tail=60",
                "--max-log-requests=20",
            ])
            .output();
        match output {
            Ok(out) => format!(
                "----- kubectl logs -n {} -l {ADDON_SELECTOR} -----\n{}{}",
                self.ns,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(kubectl logs failed: {e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn exit_code_comes_from_the_terminated_state() {
        let p = pod(json!({"containerStatuses": [{
            "name": "interceptor", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0}}
        }]}));
        assert_eq!(terminated_exit_code(&p), Some(0));
        let running = pod(json!({"containerStatuses": [{
            "name": "interceptor", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}
        }]}));
        assert_eq!(terminated_exit_code(&running), None);
    }

    #[test]
    fn readiness_reads_the_ready_condition() {
        assert!(is_ready(&pod(
            json!({"conditions": [{"type": "Ready", "status": "True"}]})
        )));
        assert!(!is_ready(&pod(
            json!({"conditions": [{"type": "Ready", "status": "False"}]})
        )));
        assert!(!is_ready(&pod(json!({}))));
    }
}
