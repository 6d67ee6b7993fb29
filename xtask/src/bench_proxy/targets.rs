//! The proxies under test, each started for one protocol in front of the same HTTP/1.1
//! backend: the interceptor, nginx and HAProxy, plus the certificate their TLS listeners serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::procs::{Proc, free_port, output_within, pinned};
use super::{Bench, HOST, Protocol, clients};

/// What a row measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The backend itself, no proxy (HTTP/1.1 only: the backend speaks nothing else).
    Direct,
    /// The interceptor with one Tokio worker thread, pinned to the proxy core.
    InterceptorOneThread,
    /// The interceptor with its default worker threads, not pinned.
    InterceptorDefault,
    /// [`Target::InterceptorOneThread`] exporting traces over OTLP http/protobuf with a 1%
    /// sampler. The collector is the bench backend (it answers every POST 200, like a
    /// collector taking the batch): the batching, encoding and sending are the interceptor's
    /// and counted in its CPU; receiving them costs the backend's core, as a collector would.
    InterceptorTraced,
    Nginx,
    Haproxy,
}

impl Target {
    pub(super) fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::InterceptorOneThread => "interceptor (1 thread)",
            Target::InterceptorDefault => "interceptor (default)",
            Target::InterceptorTraced => "interceptor, tracing on, sampler 1%",
            Target::Nginx => "nginx (1 worker)",
            Target::Haproxy => "haproxy (1 thread)",
        }
    }
}

/// A started target: where to send requests and the process to measure.
pub(super) struct Running {
    pub(super) addr: SocketAddr,
    /// `None` for the direct row (the backend is not what is measured).
    pub(super) proc: Option<Proc>,
}

impl Running {
    pub(super) fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }
}

/// The certificate of the TLS listeners: `cert`/`key` issued for `bench.test` by a throw-away
/// CA (`ca`); `pem` is cert and key in one file (HAProxy's `crt`).
pub(super) struct Certs {
    pub(super) ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    pem: PathBuf,
}

/// Makes a CA and a certificate for `bench.test` (ECDSA P-256) with the openssl CLI in `dir`.
pub(super) fn make_certs(openssl: &Path, dir: &Path) -> anyhow::Result<Certs> {
    std::fs::create_dir_all(dir)?;
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = bench-proxy\n\
             [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = DNS:{HOST}\n"
        ),
    )?;
    let certs = Certs {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        pem: dir.join("tls.pem"),
    };
    let (ca_key, csr) = (dir.join("ca.key"), dir.join("tls.csr"));
    let openssl_run = |what: &str, args: &mut dyn FnMut(&mut Command)| -> anyhow::Result<()> {
        let mut cmd = Command::new(openssl);
        args(&mut cmd);
        let out = output_within(cmd, Duration::from_secs(30), "openssl")?;
        if !out.status.success() {
            bail!(
                "openssl ({what}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    const EC_KEY: [&str; 5] = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl_run("the CA", &mut |c| {
        c.args(["req", "-x509", "-config"]).arg(&cnf);
        c.args([
            "-extensions",
            "ca",
            "-days",
            "2",
            "-subj",
            "/CN=bench-proxy CA",
        ]);
        c.args(EC_KEY)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&certs.ca);
    })?;
    openssl_run("the certificate request", &mut |c| {
        c.args(["req", "-new", "-config"]).arg(&cnf);
        c.args(["-subj", &format!("/CN={HOST}")]);
        c.args(EC_KEY)
            .arg("-keyout")
            .arg(&certs.key)
            .arg("-out")
            .arg(&csr);
    })?;
    openssl_run("signing the certificate", &mut |c| {
        c.args(["x509", "-req", "-in"]).arg(&csr);
        c.arg("-CA").arg(&certs.ca).arg("-CAkey").arg(&ca_key);
        c.args(["-set_serial", "1", "-days", "2", "-extfile"])
            .arg(&cnf);
        c.args(["-extensions", "leaf", "-out"]).arg(&certs.cert);
    })?;
    let pem = std::fs::read_to_string(&certs.cert)? + &std::fs::read_to_string(&certs.key)?;
    std::fs::write(&certs.pem, pem)?;
    Ok(certs)
}

/// What an installed nginx can do.
pub(super) struct NginxBuild {
    /// 1.25.1 and later enable HTTP/2 with `http2 on;` (`listen … http2` is deprecated).
    http2_directive: bool,
    http2: bool,
    ssl: bool,
}

/// Reads version and modules from `nginx -V`.
pub(super) fn nginx_build(nginx: &Path) -> NginxBuild {
    let out = Command::new(nginx)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    parse_nginx_build(&out)
}

fn parse_nginx_build(out: &str) -> NginxBuild {
    let version: Vec<u32> = out
        .split_once("nginx/")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(""))
        .unwrap_or("")
        .split('.')
        .map_while(|n| n.parse().ok())
        .collect();
    NginxBuild {
        http2_directive: version.as_slice() >= [1, 25, 1].as_slice(),
        http2: out.contains("--with-http_v2_module"),
        ssl: out.contains("--with-http_ssl_module"),
    }
}

/// Whether `target` can be run for `protocol`; `Err` says why not.
pub(super) fn available(bench: &Bench, target: Target, protocol: Protocol) -> Result<(), String> {
    let certs = || {
        bench
            .certs
            .as_ref()
            .map(|_| ())
            .map_err(|reason| format!("no certificate: {reason}"))
    };
    match (target, protocol) {
        (Target::Direct | Target::InterceptorDefault, Protocol::H2c | Protocol::Https) => {
            Err("HTTP/1.1 only".into())
        }
        (Target::InterceptorTraced, Protocol::Https) => Err("HTTP/1.1 and h2c only".into()),
        (Target::Nginx, _) => {
            let (_, build) = bench.nginx.as_ref().map_err(String::clone)?;
            match protocol {
                Protocol::H2c if !build.http2 => Err("nginx built without http_v2_module".into()),
                Protocol::Https if !build.ssl => Err("nginx built without http_ssl_module".into()),
                Protocol::Https => certs(),
                _ => Ok(()),
            }
        }
        (Target::Haproxy, _) => {
            bench.haproxy.as_ref().map_err(String::clone)?;
            match protocol {
                Protocol::Https => certs(),
                _ => Ok(()),
            }
        }
        (_, Protocol::Https) => certs(),
        _ => Ok(()),
    }
}

/// Starts `target` for `protocol` and waits until it answers a request through to the backend.
pub(super) fn start(bench: &Bench, target: Target, protocol: Protocol) -> anyhow::Result<Running> {
    let mut running = match target {
        Target::Direct => Running {
            addr: bench.backend,
            proc: None,
        },
        Target::InterceptorOneThread | Target::InterceptorDefault | Target::InterceptorTraced => {
            interceptor(bench, target, protocol)?
        }
        Target::Nginx => nginx(bench, protocol)?,
        Target::Haproxy => haproxy(bench, protocol)?,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if clients::probe(bench, running.addr, protocol) {
            return Ok(running);
        }
        if let Some(status) = running.proc.as_mut().and_then(Proc::exited) {
            bail!("{} exited ({status})", target.name());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer 200 on {} within 30s",
                target.name(),
                running.addr
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The release interceptor (pinned to `core`) for the cluster of `kubeconfig`, serving the
/// proxy on `proxy` and the admin port on `admin` (loopback ports), with its default worker
/// threads.
pub(crate) fn interceptor_command(
    release: &Path,
    kubeconfig: &Path,
    core: Option<u32>,
    proxy: u16,
    admin: u16,
) -> anyhow::Result<Command> {
    let mut cmd = pinned(&release.join("interceptor"), core);
    cmd.env("KUBECONFIG", kubeconfig)
        .env("KEDA_HTTP_PROXY_PORT", proxy.to_string())
        .env("KEDA_HTTP_ADMIN_PORT", admin.to_string())
        .env("OTEL_PROM_EXPORTER_PORT", free_port()?.to_string())
        .env("KEDA_HTTP_SHUTDOWN_DELAY", "0s")
        // wrk sends the IP address as SNI, which rustls warns about on every handshake.
        .env("RUST_LOG", "warn,rustls=error")
        .env_remove("TOKIO_WORKER_THREADS")
        .stdout(Stdio::null());
    Ok(cmd)
}

fn interceptor(bench: &Bench, target: Target, protocol: Protocol) -> anyhow::Result<Running> {
    let one_thread = matches!(
        target,
        Target::InterceptorOneThread | Target::InterceptorTraced
    );
    let proxy = free_port()?;
    let mut cmd = interceptor_command(
        &bench.release,
        &bench.kubeconfig,
        if one_thread { bench.proxy_core } else { None },
        proxy,
        free_port()?,
    )?;
    if one_thread {
        cmd.env("TOKIO_WORKER_THREADS", "1");
    }
    if target == Target::InterceptorTraced {
        cmd.env("OTEL_EXPORTER_OTLP_TRACES_ENABLED", "true")
            .env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            .env(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("http://{}/v1/traces", bench.backend),
            )
            .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
            .env("OTEL_TRACES_SAMPLER_ARG", "0.01");
    }
    // Plain HTTP/1.1 and h2c (prior knowledge) share the proxy port.
    let mut addr = localhost(proxy);
    if protocol == Protocol::Https {
        let certs = bench.certs.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
        let tls = free_port()?;
        cmd.env("KEDA_HTTP_PROXY_TLS_ENABLED", "true")
            .env("KEDA_HTTP_PROXY_TLS_PORT", tls.to_string())
            .env("KEDA_HTTP_PROXY_TLS_CERT_PATH", &certs.cert)
            .env("KEDA_HTTP_PROXY_TLS_KEY_PATH", &certs.key);
        addr = localhost(tls);
    }
    Ok(Running {
        addr,
        proc: Some(Proc::spawn(target.name(), cmd)?),
    })
}

fn nginx(bench: &Bench, protocol: Protocol) -> anyhow::Result<Running> {
    let (nginx, build) = bench.nginx.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
    let port = free_port()?;
    let listen = match protocol {
        Protocol::Http1 => format!("listen 127.0.0.1:{port};"),
        Protocol::H2c if build.http2_directive => format!("listen 127.0.0.1:{port}; http2 on;"),
        Protocol::H2c => format!("listen 127.0.0.1:{port} http2;"),
        Protocol::Https => {
            let certs = bench.certs.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
            format!(
                "listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {};",
                certs.cert.display(),
                certs.key.display()
            )
        }
    };
    let ndir = bench.dir.join(format!("nginx-{}", protocol.slug()));
    std::fs::create_dir_all(ndir.join("logs"))?;
    let conf = ndir.join("nginx.conf");
    // keepalive_requests also bounds the requests of an HTTP/2 connection (1000 by default).
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {pid};\nerror_log stderr warn;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n  client_body_temp_path {d}/cbt; proxy_temp_path {d}/pt;\n  fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;\n\
             \x20 upstream be {{ server {backend}; keepalive 128; keepalive_requests 10000000; }}\n\
             \x20 server {{ {listen} location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; }} }}\n}}\n",
            pid = ndir.join("nginx.pid").display(),
            d = ndir.display(),
            backend = bench.backend,
        ),
    )?;
    let mut cmd = pinned(nginx, bench.proxy_core);
    cmd.arg("-p")
        .arg(&ndir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null());
    Ok(Running {
        addr: localhost(port),
        proc: Some(Proc::spawn("nginx", cmd)?),
    })
}

fn haproxy(bench: &Bench, protocol: Protocol) -> anyhow::Result<Running> {
    let haproxy = bench.haproxy.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
    let port = free_port()?;
    let bind = match protocol {
        Protocol::Http1 => format!("bind 127.0.0.1:{port}"),
        Protocol::H2c => format!("bind 127.0.0.1:{port} proto h2"),
        Protocol::Https => {
            let certs = bench.certs.as_ref().map_err(|r| anyhow::anyhow!("{r}"))?;
            format!("bind 127.0.0.1:{port} ssl crt {}", certs.pem.display())
        }
    };
    let conf = bench.dir.join(format!("haproxy-{}.cfg", protocol.slug()));
    std::fs::write(
        &conf,
        format!(
            "global\n  nbthread 1\n  maxconn 4096\n\
             defaults\n  mode http\n  option http-keep-alive\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\n  option forwardfor\n\
             frontend fe\n  {bind}\n  http-request set-header X-Forwarded-Proto {scheme}\n  http-request set-header X-Forwarded-Host %[req.hdr(host)]\n  default_backend be\n\
             backend be\n  server s1 {backend}\n",
            backend = bench.backend,
            scheme = if protocol == Protocol::Https { "https" } else { "http" },
        ),
    )
    .context("writing the HAProxy configuration")?;
    let mut cmd = pinned(haproxy, bench.proxy_core);
    cmd.arg("-db").arg("-f").arg(&conf).stdout(Stdio::null());
    Ok(Running {
        addr: localhost(port),
        proc: Some(Proc::spawn("haproxy", cmd)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_versions_and_modules() {
        let old = parse_nginx_build(
            "nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.9\nconfigure arguments: \
             --with-http_ssl_module --with-http_v2_module",
        );
        assert!(!old.http2_directive && old.http2 && old.ssl);
        let new = parse_nginx_build("nginx version: nginx/1.26.3\nconfigure arguments: --x");
        assert!(new.http2_directive && !new.http2 && !new.ssl);
        assert!(parse_nginx_build("nginx version: nginx/1.25.1").http2_directive);
        assert!(!parse_nginx_build("nginx version: nginx/1.25.0").http2_directive);
    }
}
