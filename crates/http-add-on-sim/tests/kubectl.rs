//! Smoke test of the simulated API server with the machine's real `kubectl`, without extra flags.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use http_add_on_sim::{Sim, SimConfig};
use http_add_on_testkit::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: echo
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, default: 3}
              port: {type: integer, maximum: 65535}
"#;

const GADGET: &str = r#"
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1}
spec: {port: 80}
"#;

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(sim: &Sim) -> Self {
        let kubeconfig = sim.kubeconfig_path().to_path_buf();
        // A private discovery cache: ports are reused across test runs.
        let cache = kubeconfig
            .parent()
            .expect("kubeconfig has a directory")
            .join("kube-cache");
        Self { kubeconfig, cache }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .kill_on_drop(true);
        cmd
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = match self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("`kubectl` is required for this test but was not found on PATH")
            }
            Err(e) => panic!("running kubectl: {e}"),
        };
        let mut input = child.stdin.take().expect("piped stdin");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("writing kubectl's stdin");
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes within a minute")
            .expect("kubectl runs");
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "").await
    }

    /// Runs and expects success, returning stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.ok,
            "kubectl {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    async fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_with_stdin(args, stdin).await;
        assert!(
            out.ok,
            "kubectl {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }
}

async fn replicas(sim: &Sim) -> Option<i32> {
    Api::<Deployment>::default_namespaced(sim.client())
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
}

#[tokio::test]
async fn kubectl_works_without_extra_flags() {
    let sim = Sim::start(SimConfig::apiserver_only()).await.unwrap();
    let k = Kubectl::new(&sim);

    let resources = k.ok(&["api-resources"]).await;
    assert!(
        resources.lines().any(|l| l.starts_with("scaledobjects")
            && l.contains(" so ")
            && l.contains("keda.sh/v1alpha1")),
        "{resources}"
    );
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("deployments") && l.contains("apps/v1")),
        "{resources}"
    );

    // Generators that send protobuf (decoded for namespaces, configmaps, secrets, deployments
    // and services).
    k.ok(&["create", "namespace", "extra"]).await;
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "extra",
        "--from-literal=a=b",
    ])
    .await;
    k.ok(&[
        "create",
        "deployment",
        "gen",
        "--image=echo",
        "--port=8080",
        "--replicas=0",
    ])
    .await;
    k.ok(&["create", "service", "clusterip", "gen", "--tcp=80:8080"])
        .await;
    let generated = Api::<Deployment>::default_namespaced(sim.client())
        .get("gen")
        .await
        .unwrap();
    let spec = generated.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("echo"));
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);
    let svc: Value =
        serde_json::from_str(&k.ok(&["get", "service", "gen", "-o", "json"]).await).unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    let data = k
        .ok(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "extra",
            "-o",
            "jsonpath={.data.a}",
        ])
        .await;
    assert_eq!(data, "b");

    let created = k.ok_stdin(&["create", "-f", "-"], APP).await;
    assert!(
        created.contains("deployment.apps/web created") && created.contains("service/web created"),
        "{created}"
    );
    let table = k.ok(&["get", "deployments"]).await;
    assert!(
        table.starts_with("NAME") && table.contains("web"),
        "{table}"
    );
    let svc: Value =
        serde_json::from_str(&k.ok(&["get", "service", "web", "-o", "json"]).await).unwrap();
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("127.")
    );
    let yaml = k.ok(&["get", "deploy", "web", "-o", "yaml"]).await;
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("name: web"),
        "{yaml}"
    );

    // Client-side apply (strategic merge patch for built-ins) of a changed manifest.
    let changed = APP.replace("replicas: 1", "replicas: 2");
    let applied = k.ok_stdin(&["apply", "-f", "-"], &changed).await;
    assert!(
        applied.contains("deployment.apps/web configured"),
        "{applied}"
    );
    assert_eq!(replicas(&sim).await, Some(2));
    // Server-side apply.
    let ssa = k
        .ok_stdin(
            &["apply", "--server-side", "-f", "-"],
            &APP.replace("replicas: 1", "replicas: 3"),
        )
        .await;
    assert!(ssa.contains("serverside-applied"), "{ssa}");
    assert_eq!(replicas(&sim).await, Some(3));

    k.ok(&["scale", "deployment", "web", "--replicas=0"]).await;
    assert_eq!(replicas(&sim).await, Some(0));
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ])
    .await;
    assert_eq!(replicas(&sim).await, Some(4));
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ])
    .await;
    assert_eq!(replicas(&sim).await, Some(5));
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"echo:2"}]}}}}"#,
    ])
    .await;
    let d = Api::<Deployment>::default_namespaced(sim.client())
        .get("web")
        .await
        .unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        (containers.len(), containers[0].image.as_deref()),
        (1, Some("echo:2"))
    );

    // CRDs applied by kubectl are served immediately, with schema defaults and validation.
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], CRD)
        .await;
    k.ok_stdin(&["apply", "-f", "-"], GADGET).await;
    let gadget: Value =
        serde_json::from_str(&k.ok(&["get", "gd", "g1", "-o", "json"]).await).unwrap();
    assert_eq!(gadget["spec"]["size"], 3);
    let rejected = k
        .run_with_stdin(
            &["apply", "-f", "-"],
            &GADGET.replace("g1", "g2").replace("80", "70000"),
        )
        .await;
    assert!(
        !rejected.ok && rejected.stderr.contains("spec.port"),
        "{}",
        rejected.stderr
    );
    assert!(k.ok(&["get", "gadgets"]).await.contains("g1"));

    let deleted = k.ok_stdin(&["delete", "-f", "-"], APP).await;
    assert!(
        deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    let missing = k.run(&["get", "deployment", "web"]).await;
    assert!(
        !missing.ok && missing.stderr.contains("NotFound"),
        "{}",
        missing.stderr
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_get_watch_streams_changes() {
    let sim = Sim::start(SimConfig::apiserver_only()).await.unwrap();
    let k = Kubectl::new(&sim);
    let mut child = k
        .command(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("`kubectl` is required for this test but could not be started");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let api: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "watched"}})).unwrap();
    // kubectl may start watching after the create, and then prints the object from its initial
    // list instead of a watch event; either way the line must appear.
    api.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("watched") {
                return true;
            }
        }
        false
    })
    .await
    .expect("kubectl get -w prints the object");
    assert!(seen);
    child.kill().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_explain_reads_the_schemas_from_openapi_v3() {
    let cluster = Cluster::apiserver_only().await;
    let k = Kubectl::new(&cluster.sim);

    let explained = k
        .ok(&["explain", "httpscaledobject.spec.scaleTargetRef"])
        .await;
    for line in [
        "GROUP:      http.keda.sh",
        "KIND:       HTTPScaledObject",
        "VERSION:    v1alpha1",
        "FIELD: scaleTargetRef <Object>",
    ] {
        assert!(explained.contains(line), "{line:?} in:\n{explained}");
    }
    assert!(
        explained
            .lines()
            .any(|l| l.trim_start().starts_with("service") && l.contains("-required-")),
        "{explained}"
    );
    let route = k.ok(&["explain", "interceptorroute.spec"]).await;
    assert!(route.contains("KIND:       InterceptorRoute"), "{route}");

    // Built-in types too, from k8s-openapi's schemas.
    let replicas = k.ok(&["explain", "deployment.spec.replicas"]).await;
    assert!(replicas.contains("FIELD: replicas <integer>"), "{replicas}");
    let ports = k.ok(&["explain", "pods.spec.containers.ports"]).await;
    assert!(ports.contains("<[]ContainerPort>"), "{ports}");
}

#[tokio::test]
async fn kubectl_auth_asks_the_review_apis() {
    let sim = Sim::start(SimConfig {
        auth: http_add_on_sim::apiserver::reviews::AuthConfig {
            deny: vec!["kubernetes-admin:delete:secrets".parse().unwrap()],
            ..Default::default()
        },
        ..SimConfig::apiserver_only()
    })
    .await
    .unwrap();
    let k = Kubectl::new(&sim);
    assert_eq!(
        k.ok(&["auth", "can-i", "list", "secrets"]).await.trim(),
        "yes"
    );
    let denied = k.run(&["auth", "can-i", "delete", "secrets"]).await;
    assert!(
        !denied.ok && denied.stdout.starts_with("no"),
        "{}",
        denied.stdout
    );
    let whoami = k.ok(&["auth", "whoami"]).await;
    assert!(whoami.contains("kubernetes-admin"), "{whoami}");
}

#[tokio::test]
async fn kubectl_rollout_history_and_undo_use_the_replica_sets() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let k = Kubectl::new(&sim);
    k.ok_stdin(&["apply", "-f", "-"], APP).await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    // As on Kubernetes, the change-cause goes to the ReplicaSet current when it is annotated.
    k.ok(&["set", "image", "deployment/web", "app=echo:2"])
        .await;
    k.ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=image echo:2",
    ])
    .await;
    let status = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");

    let history = k.ok(&["rollout", "history", "deployment/web"]).await;
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [vec!["1", "<none>"], vec!["2", "image", "echo:2"]],
        "{history}"
    );
    let first = k
        .ok(&["rollout", "history", "deployment/web", "--revision=1"])
        .await;
    assert!(first.contains("Image:\techo\n"), "{first}");

    let undone = k.ok(&["rollout", "undo", "deployment/web"]).await;
    assert!(undone.contains("rolled back"), "{undone}");
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let image = k
        .ok(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "echo");
    let history = k.ok(&["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        revisions,
        ["2", "3"],
        "revision 1 came back as 3:\n{history}"
    );
    // Undo to an explicit revision, and the ReplicaSets as kubectl lists them.
    k.ok(&["rollout", "undo", "deployment/web", "--to-revision=2"])
        .await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let sets = k
        .ok(&[
            "get",
            "replicasets",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.replicas}/{.spec.template.spec.containers[0].image} {end}",
        ])
        .await;
    let mut sets: Vec<&str> = sets.split_whitespace().collect();
    sets.sort_unstable();
    assert_eq!(sets, ["0/echo", "1/echo:2"]);
    sim.shutdown().await;
}
