//! An ingress on the data path that asks the add-on only to count and to wake (issue #17): a
//! real nginx with `auth_request` to the interceptors' check port, proxying to the pod the
//! check names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use http_add_on_types::queue::QueueCounts;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::json;

use super::{check, wait_route_known};
use crate::app::{self, App};
use crate::http::HttpClient;
use crate::load::{Load, Target};
use crate::runner::Scenario;
use crate::sim::{ADDON_NAMESPACE, CHECK_PORT, PROXY_SERVICE};
use crate::testbed::Testbed;
use crate::wait;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "check-through-nginx",
        timeout: Duration::from_secs(150),
        exclusive: false,
        run: |tb, ns| check_through_nginx(tb, ns).boxed(),
    }]
}

/// The nginx binary: `E2E_NGINX` (set by `cargo xtask e2e`, which installs it when missing),
/// else one on `PATH` or in `/usr/sbin`; `Err` says why there is none.
fn nginx_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("E2E_NGINX") {
        return Ok(path.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            std::env::var("E2E_NGINX_MISSING")
                .unwrap_or_else(|_| "nginx is not installed (cargo xtask e2e installs it)".into())
        })
}

/// nginx in front of the app, the way the README shows it: `auth_request` to the check port
/// (held while the app is cold), then straight to the endpoint the check named. The check's
/// cold-start answer comes back as `X-Keda-Check-Cold-Start`; the app sees `X-E2E-Via`.
fn nginx_conf(dir: &std::path::Path, listen: u16, check: SocketAddr) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         \x20 access_log {d}/access.log;\n\
         \x20 client_body_temp_path {d}/cbt; proxy_temp_path {d}/pt;\n\
         \x20 fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{listen};\n\
         \x20   location = /_keda_check {{\n\
         \x20     internal;\n\
         \x20     proxy_pass http://{check};\n\
         \x20     proxy_pass_request_body off;\n\
         \x20     proxy_set_header Content-Length \"\";\n\
         \x20     proxy_set_header X-Original-Host $host;\n\
         \x20     proxy_set_header X-Original-Method $request_method;\n\
         \x20     proxy_set_header X-Original-URI $request_uri;\n\
         \x20     proxy_read_timeout 120s;\n\
         \x20   }}\n\
         \x20   location / {{\n\
         \x20     auth_request /_keda_check;\n\
         \x20     auth_request_set $keda_endpoint $upstream_http_x_keda_http_endpoint;\n\
         \x20     auth_request_set $keda_cold $upstream_http_x_keda_http_cold_start;\n\
         \x20     add_header X-Keda-Check-Cold-Start $keda_cold always;\n\
         \x20     proxy_set_header Host $host;\n\
         \x20     proxy_set_header X-E2E-Via nginx;\n\
         \x20     proxy_pass http://$keda_endpoint;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        d = dir.display(),
    )
}

/// The interceptors' check port: the proxy Service's `check` port.
async fn check_address(tb: &Testbed) -> anyhow::Result<SocketAddr> {
    let services: Api<Service> = Api::namespaced(tb.client.clone(), ADDON_NAMESPACE);
    let spec = services
        .get(PROXY_SERVICE)
        .await?
        .spec
        .context("proxy Service without spec")?;
    let ip = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("proxy Service without a ClusterIP")?;
    let port = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("check"))
        .map_or(CHECK_PORT, |p| p.port);
    Ok(SocketAddr::new(ip.parse()?, u16::try_from(port)?))
}

/// RequestCount of `key` summed over every interceptor's `/queue`.
async fn request_count(tb: &Testbed, key: &str) -> anyhow::Result<u64> {
    let http = HttpClient::new(Duration::from_secs(5));
    let mut total = 0;
    for admin in tb.control.interceptor_admins() {
        let reply = http.get(admin, "localhost", "/queue", &[]).await?;
        let counts: QueueCounts = serde_json::from_slice(&reply.body)?;
        total += counts.get(key).map_or(0, |c| c.request_count);
    }
    Ok(total)
}

/// App at zero behind nginx + check: the first request is held by the check while the app
/// scales up, then reaches the pod directly (not through the interceptor's proxy port); a
/// request rate through nginx scales the app out; after silence it goes back to zero.
async fn check_through_nginx(tb: Testbed, ns: String) -> anyhow::Result<()> {
    if tb.control.kind() != "sim" {
        println!(
            "SKIP check-through-nginx: nginx runs next to the suite and must reach pod addresses, \
             which only the simulated cluster offers"
        );
        return Ok(());
    }
    let nginx = match nginx_binary() {
        Ok(nginx) => nginx,
        Err(reason) => {
            println!("SKIP check-through-nginx: {reason}");
            return Ok(());
        }
    };
    let app = App::new(&ns, "app").startup_delay("500ms");
    app.deploy(&tb).await?;
    let host = format!("{ns}.test");
    let key = format!("{ns}/app");
    // Checks see arrivals, not how long requests run: scale by request rate.
    let spec = json!({
        "scalingMetric": {"requestRate": {"targetValue": 10, "window": "10s", "granularity": "1s"}},
        "replicas": {"min": 0, "max": 4}, "scaledownPeriod": 3
    });
    app::apply_http_scaled_object(&tb, app::http_scaled_object(&app, &[&host], spec)).await?;
    wait_route_known(&tb, &key).await?;

    let dir = std::env::temp_dir().join(format!("e2e-nginx-{ns}"));
    std::fs::create_dir_all(&dir)?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, listen, check_address(&tb).await?))?;
    let mut server = tokio::process::Command::new(&nginx)
        // No `-e` (nginx 1.19.5+): before reading the configuration an older nginx only warns
        // that it cannot open its compiled-in error log.
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", nginx.display()))?;
    let front = SocketAddr::from(([127, 0, 0, 1], listen));
    let started = wait::until(
        "nginx to listen",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let exited = server.try_wait();
            let log = dir.join("error.log");
            async move {
                if let Some(status) = exited? {
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    anyhow::bail!("nginx exited ({status}): {log}");
                }
                Ok(tokio::net::TcpStream::connect(front).await.ok().map(|_| ()))
            }
        },
    )
    .await;
    let outcome = match started {
        Ok(()) => through_nginx(&tb, &ns, &host, &key, front).await,
        Err(e) => Err(e),
    };
    let _ = server.start_kill();
    let _ = server.wait().await;
    outcome.with_context(|| {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        let tail: Vec<_> = log.lines().rev().take(20).collect();
        format!(
            "nginx error log ({}), last lines:\n{}",
            dir.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}

async fn through_nginx(
    tb: &Testbed,
    ns: &str,
    host: &str,
    key: &str,
    front: SocketAddr,
) -> anyhow::Result<()> {
    let (desired, _) = app::replicas(tb, ns, "app").await?;
    check(desired == 0, || {
        format!("the app starts at zero, not {desired}")
    })?;
    let counted_before = request_count(tb, key).await?;

    // Cold: the check holds nginx's subrequest while the app scales from zero.
    let http = HttpClient::new(Duration::from_secs(90));
    let first = {
        let (http, host) = (http.clone(), host.to_owned());
        tokio::spawn(async move { http.get(front, &host, "/hello?x=1", &[]).await })
    };
    app::wait_replicas(
        tb,
        ns,
        "app",
        "the app to scale up for the held request",
        Duration::from_secs(60),
        |r| r >= 1,
    )
    .await?;
    let reply = first.await??;
    check(reply.status.is_success(), || {
        format!("the held request: {} {}", reply.status, reply.text())
    })?;
    check(
        reply
            .headers
            .get("x-keda-check-cold-start")
            .map(|v| v.as_bytes())
            == Some(b"true"),
        || {
            format!(
                "the check held the request for a cold start: {:?}",
                reply.headers
            )
        },
    )?;
    // The pod's view: nginx sent it (its header), the interceptor's proxy did not (it would
    // have added X-Forwarded-For and its cold-start header).
    let echo = reply.json()?;
    check(echo["path"] == "/hello", || format!("the pod saw {echo}"))?;
    let seen = &echo["headers"];
    check(seen["x-e2e-via"] == "nginx", || {
        format!("the pod got the request from nginx: {seen}")
    })?;
    check(seen.get("x-forwarded-for").is_none(), || {
        format!("the request did not pass the interceptor's proxy port: {seen}")
    })?;
    check(reply.cold_start().is_none(), || {
        "the app's response did not pass the interceptor's proxy port".into()
    })?;
    check(reply.pod().is_some(), || format!("a pod answered: {echo}"))?;

    // A request rate through nginx scales the app out.
    let target = Target {
        proxy: front,
        host: host.to_owned(),
        path: "/".into(),
    };
    let load = Load::start(target, 4, Duration::from_millis(50), 1_000_000);
    let reached = app::wait_replicas(
        tb,
        ns,
        "app",
        "2+ replicas from the request rate through nginx",
        Duration::from_secs(60),
        |r| r >= 2,
    )
    .await;
    let report = load.stop().await;
    let reached = reached?;
    check(reached <= 4, || format!("scaled to {reached}, above max 4"))?;
    check(report.failed() == 0, || {
        format!(
            "{} of {} requests through nginx failed: {:?}",
            report.failed(),
            report.total(),
            report.errors
        )
    })?;
    // Each request was counted once, by its check: none reached the proxy port as well.
    let counted = request_count(tb, key).await? - counted_before;
    let sent = 1 + report.total();
    check(counted == sent, || {
        format!("{counted} requests counted for {sent} sent through nginx")
    })?;

    app::wait_replicas(
        tb,
        ns,
        "app",
        "scale back to 0 after silence",
        Duration::from_secs(60),
        |r| r == 0,
    )
    .await?;
    Ok(())
}
