//! The whole system on the simulated cluster, as separate processes: `http-add-on-sim`, then the
//! operator, the scaler and the interceptors configured only through the environment variables
//! the Helm chart sets, registered as endpoints of their Services like pods would be.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::http::HttpClient;
use crate::testbed::{ClusterControl, Testbed};
use crate::wait;

/// Namespace the add-on runs in, as with the Helm chart's default.
pub const ADDON_NAMESPACE: &str = "keda";
/// Service of the interceptors' proxy port.
pub const PROXY_SERVICE: &str = "keda-add-ons-http-interceptor-proxy";
/// Service of the interceptors' admin port (the scaler discovers interceptors through it).
pub const ADMIN_SERVICE: &str = "keda-add-ons-http-interceptor-admin";
/// Service of the external scaler (the ScaledObjects' `scalerAddress`).
pub const SCALER_SERVICE: &str = "keda-add-ons-http-external-scaler";
/// Interceptor Deployment name (scaler env).
pub const INTERCEPTOR_DEPLOYMENT: &str = "keda-add-ons-http-interceptor";
/// Service ports, as in the chart.
const PROXY_PORT: i32 = 8080;
/// The proxy Service's `check` port (`interceptor.check.port` when `interceptor.check.enabled`).
pub const CHECK_PORT: i32 = 8090;
const ADMIN_PORT: i32 = 9090;
const SCALER_PORT: i32 = 9090;

/// Options of [`SimSystem::start`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Directory holding the built binaries (`target/debug`).
    pub bin_dir: PathBuf,
    /// Directory with the CRD YAML to apply (`charts/keda-http-add-on/files/crds`).
    pub crd_dir: PathBuf,
    /// Where logs and the kubeconfig go.
    pub work_dir: PathBuf,
    /// Interceptor replicas.
    pub interceptors: usize,
}

/// A component process and its log file.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &BTreeMap<String, String>,
        work_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = work_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it first: cargo build --bins)",
                    bin.display()
                )
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<_> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "----- {} ({}) -----\n{}\n",
            self.name,
            self.log.display(),
            all[start..].join("\n")
        )
    }
}

/// One interceptor replica's ports.
#[derive(Debug, Clone, Copy)]
pub struct InterceptorPorts {
    /// Proxy port.
    pub proxy: u16,
    /// Admin port.
    pub admin: u16,
    /// Prometheus port.
    pub metrics: u16,
    /// Check port (admission checks of an ingress, issue #17).
    pub check: u16,
}

/// The running system.
pub struct SimSystem {
    /// Kubeconfig of the simulated cluster.
    pub kubeconfig: PathBuf,
    /// API server URL.
    pub api_url: String,
    /// Client for the simulated cluster.
    pub client: kube::Client,
    /// ClusterIP address of the interceptor proxy Service (what clients dial).
    pub proxy: SocketAddr,
    /// Ports of each interceptor replica.
    pub interceptor_ports: Vec<InterceptorPorts>,
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    processes: Mutex<Vec<Process>>,
    interceptors: Mutex<Vec<Option<Process>>>,
    interceptor_ports: Vec<InterceptorPorts>,
}

/// A free TCP port on loopback (bound then released; the component binds it right after).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl SimSystem {
    /// Starts the simulated cluster and every component, and waits until all are ready.
    pub async fn start(opts: SimOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.work_dir)?;
        let kubeconfig = opts.work_dir.join("kubeconfig");
        let (sim, api_url) = start_sim(&opts, &kubeconfig).await?;
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        apply_crds(&client, &opts.crd_dir).await?;
        create_addon_namespace(&client).await?;

        let common = |extra: &[(&str, String)]| {
            let mut env =
                BTreeMap::from([("KUBECONFIG".to_owned(), kubeconfig.display().to_string())]);
            env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env
        };
        let mut processes = vec![sim];

        // Scaler.
        let scaler_port = free_port()?;
        let scaler_env = common(&[
            ("KEDA_HTTP_SCALER_PORT", scaler_port.to_string()),
            (
                "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE",
                ADDON_NAMESPACE.into(),
            ),
            (
                "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE",
                ADMIN_SERVICE.into(),
            ),
            (
                "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT",
                INTERCEPTOR_DEPLOYMENT.into(),
            ),
            ("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT", ADMIN_PORT.to_string()),
            ("KEDA_HTTP_SCALER_STREAM_INTERVAL_MS", "200".into()),
            ("KEDA_HTTP_QUEUE_TICK_DURATION", "500ms".into()),
            ("OTEL_PROM_EXPORTER_PORT", free_port()?.to_string()),
        ]);
        processes.push(Process::spawn(
            "scaler",
            &opts.bin_dir.join("scaler"),
            &[],
            &scaler_env,
            &opts.work_dir,
        )?);

        // Operator.
        let operator_health = free_port()?;
        let operator_env = common(&[
            (
                "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
                SCALER_SERVICE.into(),
            ),
            (
                "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT",
                SCALER_PORT.to_string(),
            ),
            ("KEDA_HTTP_OPERATOR_NAMESPACE", ADDON_NAMESPACE.into()),
            ("KEDA_HTTP_OPERATOR_WATCH_NAMESPACE", String::new()),
            (
                "KEDA_HTTP_OPERATOR_HEALTH_ADDRESS",
                format!("127.0.0.1:{operator_health}"),
            ),
            (
                "KEDA_HTTP_OPERATOR_METRICS_ADDRESS",
                format!("127.0.0.1:{}", free_port()?),
            ),
            ("POD_NAME", "keda-add-ons-http-operator-0".into()),
        ]);
        processes.push(Process::spawn(
            "operator",
            &opts.bin_dir.join("operator"),
            &[],
            &operator_env,
            &opts.work_dir,
        )?);

        // Interceptors.
        let mut interceptors = Vec::new();
        let mut interceptor_ports = Vec::new();
        for i in 0..opts.interceptors {
            let ports = InterceptorPorts {
                proxy: free_port()?,
                admin: free_port()?,
                metrics: free_port()?,
                check: free_port()?,
            };
            let env = common(&[
                ("KEDA_HTTP_PROXY_PORT", ports.proxy.to_string()),
                ("KEDA_HTTP_ADMIN_PORT", ports.admin.to_string()),
                ("OTEL_PROM_EXPORTER_PORT", ports.metrics.to_string()),
                ("KEDA_HTTP_CHECK_PORT", ports.check.to_string()),
                ("KEDA_HTTP_WATCH_NAMESPACE", String::new()),
                ("KEDA_HTTP_CONNECT_TIMEOUT", "500ms".into()),
                ("KEDA_HTTP_SHUTDOWN_DELAY", "2s".into()),
                ("KEDA_HTTP_DRAIN_TIMEOUT", "20s".into()),
            ]);
            interceptors.push(Some(Process::spawn(
                &format!("interceptor-{i}"),
                &opts.bin_dir.join("interceptor"),
                &[],
                &env,
                &opts.work_dir,
            )?));
            interceptor_ports.push(ports);
        }

        let inner = Arc::new(Inner {
            client: client.clone(),
            processes: Mutex::new(processes),
            interceptors: Mutex::new(interceptors),
            interceptor_ports: interceptor_ports.clone(),
        });
        let started = async {
            register_services(&client, scaler_port, &interceptor_ports).await?;
            wait_ready(operator_health, scaler_port, &interceptor_ports).await?;
            let proxy = service_address(&client, PROXY_SERVICE, PROXY_PORT).await?;
            anyhow::Ok(proxy)
        }
        .await;
        let proxy = match started {
            Ok(proxy) => proxy,
            Err(e) => {
                let logs = inner.logs();
                bail!("{e:#}\n{logs}");
            }
        };
        Ok(Self {
            kubeconfig,
            api_url,
            client,
            proxy,
            interceptor_ports,
            inner,
        })
    }

    /// The testbed scenarios run against.
    pub fn testbed(&self) -> Testbed {
        Testbed {
            client: self.client.clone(),
            proxy: self.proxy,
            control: self.inner.clone(),
        }
    }

    /// Recent component logs.
    pub fn logs(&self) -> String {
        self.inner.logs()
    }

    /// Stops every process (SIGKILL after a short grace period).
    pub async fn shutdown(self) {
        let mut all: Vec<Process> = self
            .inner
            .interceptors
            .lock()
            .unwrap()
            .drain(..)
            .flatten()
            .collect();
        all.extend(self.inner.processes.lock().unwrap().drain(..).rev());
        for mut process in all {
            terminate(&mut process.child, Duration::from_secs(3)).await;
        }
    }
}

impl Inner {
    fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.processes.lock().unwrap().iter() {
            out.push_str(&p.tail(40));
        }
        for p in self.interceptors.lock().unwrap().iter().flatten() {
            out.push_str(&p.tail(40));
        }
        out
    }
}

impl ClusterControl for Inner {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn interceptor_count(&self) -> usize {
        self.interceptor_ports.len()
    }

    fn terminate_interceptor(&self, index: usize) -> BoxFuture<'_, anyhow::Result<String>> {
        async move {
            // Like the kubelet: the endpoint turns not-ready (terminating) first, then SIGTERM.
            set_interceptor_endpoint_ready(&self.client, index, false).await?;
            let process = self
                .interceptors
                .lock()
                .unwrap()
                .get_mut(index)
                .and_then(Option::take);
            let Some(mut process) = process else {
                bail!("interceptor {index} is not running")
            };
            let pid = process.child.id().context("interceptor already exited")?;
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
            if !status.success() {
                bail!("kill -TERM {pid} failed");
            }
            let exit = tokio::time::timeout(Duration::from_secs(60), process.child.wait())
                .await
                .context("interceptor did not exit within 60s of SIGTERM")??;
            Ok(exit.to_string())
        }
        .boxed()
    }

    fn interceptor_admins(&self) -> Vec<SocketAddr> {
        let running = self.interceptors.lock().unwrap();
        self.interceptor_ports
            .iter()
            .zip(running.iter())
            .filter(|(_, p)| p.is_some())
            .map(|(ports, _)| SocketAddr::from((Ipv4Addr::LOCALHOST, ports.admin)))
            .collect()
    }

    fn component_logs(&self) -> String {
        self.logs()
    }
}

async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn start_sim(opts: &SimOptions, kubeconfig: &Path) -> anyhow::Result<(Process, String)> {
    let log = opts.work_dir.join("sim.log");
    let mut child = Command::new(opts.bin_dir.join("http-add-on-sim"))
        .args(["up", "--kubeconfig"])
        .arg(kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting http-add-on-sim (build it first: cargo build --bins)")?;
    let stdout = child.stdout.take().context("sim stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("ready") {
                return anyhow::Ok(line);
            }
        }
        bail!(
            "http-add-on-sim exited before it was ready (log: {})",
            log.display()
        )
    })
    .await
    .context("http-add-on-sim did not print `ready` within 30s")??;
    // Keep draining stdout so the sim never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = ready
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_default()
        .trim_end_matches([',', ')'])
        .to_owned();
    Ok((
        Process {
            name: "sim".into(),
            child,
            log,
        },
        url,
    ))
}

async fn apply_crds(client: &kube::Client, dir: &Path) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply(crate::app::FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
        names.push(name);
    }
    if names.is_empty() {
        bail!("no CRD files in {}", dir.display());
    }
    for name in names {
        wait::until(
            &format!("CRD {name} to be established"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

fn selectorless_service(name: &str, ports: &[(&str, i32)]) -> serde_json::Value {
    let ports: Vec<_> = ports
        .iter()
        .map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ADDON_NAMESPACE},
        "spec": {"ports": ports}
    })
}

fn endpoint_slice(
    service: &str,
    slice: &str,
    port_name: &str,
    port: u16,
    ready: bool,
) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": slice, "namespace": ADDON_NAMESPACE,
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "http-add-on-e2e"}
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready, "serving": ready, "terminating": !ready}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
    })
}

/// Creates the add-on's namespace, as `helm install --create-namespace` does: the components
/// write there (the operator's Lease, the Services), and nothing can be created in a namespace
/// that does not exist.
async fn create_addon_namespace(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            ADDON_NAMESPACE,
            &PatchParams::apply(crate::app::FIELD_MANAGER).force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ADDON_NAMESPACE}})),
        )
        .await
        .with_context(|| format!("creating namespace {ADDON_NAMESPACE}"))?;
    Ok(())
}

async fn register_services(
    client: &kube::Client,
    scaler_port: u16,
    interceptors: &[InterceptorPorts],
) -> anyhow::Result<()> {
    let pp = PatchParams::apply(crate::app::FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(client.clone(), ADDON_NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ADDON_NAMESPACE);
    for (name, ports) in [
        (
            PROXY_SERVICE,
            &[("proxy", PROXY_PORT), ("check", CHECK_PORT)][..],
        ),
        (ADMIN_SERVICE, &[("admin", ADMIN_PORT)]),
        (SCALER_SERVICE, &[("grpc", SCALER_PORT)]),
    ] {
        services
            .patch(name, &pp, &Patch::Apply(selectorless_service(name, ports)))
            .await
            .with_context(|| format!("creating Service {name}"))?;
    }
    let slice = endpoint_slice(SCALER_SERVICE, "scaler-0", "grpc", scaler_port, true);
    slices.patch("scaler-0", &pp, &Patch::Apply(slice)).await?;
    for (i, ports) in interceptors.iter().enumerate() {
        // One slice per replica: each process listens on its own loopback port, as each pod
        // would have its own IP.
        for (service, name, port_name, port) in [
            (
                PROXY_SERVICE,
                format!("{PROXY_SERVICE}-{i}"),
                "proxy",
                ports.proxy,
            ),
            (PROXY_SERVICE, check_slice(i), "check", ports.check),
            (
                ADMIN_SERVICE,
                format!("{ADMIN_SERVICE}-{i}"),
                "admin",
                ports.admin,
            ),
        ] {
            slices
                .patch(
                    &name,
                    &pp,
                    &Patch::Apply(endpoint_slice(service, &name, port_name, port, true)),
                )
                .await?;
        }
    }
    Ok(())
}

/// The EndpointSlice of interceptor `index`'s check port (a slice per port and replica).
fn check_slice(index: usize) -> String {
    format!("{PROXY_SERVICE}-check-{index}")
}

async fn set_interceptor_endpoint_ready(
    client: &kube::Client,
    index: usize,
    ready: bool,
) -> anyhow::Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ADDON_NAMESPACE);
    let pp = PatchParams::apply(crate::app::FIELD_MANAGER).force();
    // Ports are unknown here; read them back from the current slices.
    for (service, name) in [
        (PROXY_SERVICE, format!("{PROXY_SERVICE}-{index}")),
        (PROXY_SERVICE, check_slice(index)),
        (ADMIN_SERVICE, format!("{ADMIN_SERVICE}-{index}")),
    ] {
        let current = slices.get(&name).await?;
        let port = current
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.port)
            .unwrap_or_default();
        let port_name = current
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.name.clone())
            .unwrap_or_default();
        slices
            .patch(
                &name,
                &pp,
                &Patch::Apply(endpoint_slice(
                    service,
                    &name,
                    &port_name,
                    port as u16,
                    ready,
                )),
            )
            .await?;
    }
    Ok(())
}

async fn service_address(
    client: &kube::Client,
    name: &str,
    port: i32,
) -> anyhow::Result<SocketAddr> {
    let services: Api<Service> = Api::namespaced(client.clone(), ADDON_NAMESPACE);
    let ip = wait::until(
        &format!("a ClusterIP for {name}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let svc = services.get(name).await?;
            Ok(svc
                .spec
                .and_then(|s| s.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None"))
        },
    )
    .await?;
    Ok(SocketAddr::new(ip.parse()?, port as u16))
}

async fn wait_ready(
    operator_health: u16,
    scaler_port: u16,
    interceptors: &[InterceptorPorts],
) -> anyhow::Result<()> {
    let http = HttpClient::new(Duration::from_secs(2));
    let local = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(60);
    let every = Duration::from_millis(100);
    for ports in interceptors {
        wait::until("an interceptor's /readyz", timeout, every, || async {
            let reply = http
                .get(local(ports.admin), "localhost", "/readyz", &[])
                .await?;
            Ok(reply.status.is_success().then_some(()))
        })
        .await?;
    }
    wait::until("the operator's /readyz", timeout, every, || async {
        let reply = http
            .get(local(operator_health), "localhost", "/readyz", &[])
            .await?;
        Ok(reply.status.is_success().then_some(()))
    })
    .await?;
    wait::until("the scaler's gRPC port", timeout, every, || async {
        Ok(tokio::net::TcpStream::connect(local(scaler_port))
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    Ok(())
}

/// Deletes an object, ignoring "not found" (cleanup helper).
pub async fn delete_ignore_missing<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
