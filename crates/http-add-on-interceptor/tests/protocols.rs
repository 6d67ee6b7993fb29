//! One request policy behind two protocol front-ends: every case here runs over HTTP/1.1 and
//! over HTTP/2 (h2c with prior knowledge on the plain proxy port), each on a fresh interceptor,
//! with real clients (hyper-util's legacy client, `http2_only` for h2c). Each case asserts its
//! expectations per protocol and records what the client saw (status, body, cold-start header,
//! content type) at every step; [`on_both`] then requires the two transcripts to be identical.
//!
//! A case is an `async fn(Proto) -> Transcript`; its `#[tokio::test]` is `on_both(case)`. The
//! one HTTP/1.1-only case, upgrades, is at the end with the reason. Request bodies are the same
//! bytes on both protocols, but not always the same headers: hyper's h2 client adds
//! `content-length: 0` to an empty POST, its HTTP/1.1 client does not, and backends echo
//! what they received, so cases that POST send a non-empty body.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{DialProxy, Reply, TIMEOUT, TestBackend, World, eventually, hso};
use http::{Request, StatusCode};
use http_add_on_interceptor::Config;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (no `Upgrade: h2c` dance).
    H2c,
}

impl Proto {
    fn client(self, proxy: std::net::SocketAddr) -> Client<DialProxy, Full<Bytes>> {
        let mut builder = Client::builder(TokioExecutor::new());
        if self == Proto::H2c {
            builder.http2_only(true);
        }
        builder.build(DialProxy(proxy))
    }

    fn version(self) -> http::Version {
        match self {
            Proto::Http1 => http::Version::HTTP_11,
            Proto::H2c => http::Version::HTTP_2,
        }
    }
}

/// What a client saw of one response: what both protocols must agree on.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    body: String,
    cold_start: Option<String>,
    content_type: Option<String>,
}

/// The steps of one case, in order.
#[derive(Debug, Default)]
struct Transcript(Vec<(&'static str, Seen)>);

impl Transcript {
    fn saw(&mut self, step: &'static str, reply: &Reply) {
        let header = |name| reply.header(name).map(str::to_owned);
        self.0.push((
            step,
            Seen {
                status: reply.status,
                body: reply.text(),
                cold_start: header("x-keda-http-cold-start"),
                content_type: header("content-type"),
            },
        ));
    }
}

/// Runs `case` over HTTP/1.1, then over h2c, and requires both to have seen the same.
async fn on_both<F, Fut>(case: F)
where
    F: Fn(Proto) -> Fut,
    Fut: Future<Output = Transcript>,
{
    let h1 = case(Proto::Http1).await;
    let h2 = case(Proto::H2c).await;
    let steps = |t: &Transcript| t.0.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    assert_eq!(steps(&h1), steps(&h2), "both protocols ran the same steps");
    assert!(!h1.0.is_empty(), "the case recorded its steps");
    for ((step, h1), (_, h2)) in h1.0.iter().zip(&h2.0) {
        assert_eq!(
            h1, h2,
            "step {step:?}: HTTP/1.1 (left) and h2c (right) differ"
        );
    }
}

/// An interceptor, and a client of it speaking `proto`.
struct Bed {
    w: World,
    proto: Proto,
    http: Client<DialProxy, Full<Bytes>>,
}

impl Bed {
    async fn start(proto: Proto) -> Self {
        Self::with_config(proto, Config::for_tests()).await
    }

    async fn with_config(proto: Proto, config: Config) -> Self {
        let w = World::with_config(config).await;
        let http = proto.client(w.interceptor.proxy_addr());
        Self { w, proto, http }
    }

    /// A request for `host` + `path`: `Host` in HTTP/1.1, `:authority` in HTTP/2.
    fn request(&self, host: &str, path: &str) -> http::request::Builder {
        Request::get(format!("http://{host}{path}"))
    }

    async fn send(&self, req: http::request::Builder) -> Reply {
        self.send_body(req, "").await
    }

    async fn send_body(&self, req: http::request::Builder, body: &'static str) -> Reply {
        let req = req
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let proto = self.proto;
        let response = self
            .http
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{proto:?}: the proxy answers: {e:?}"));
        assert_eq!(
            response.version(),
            proto.version(),
            "the client spoke {proto:?}"
        );
        Reply::read(response).await
    }

    async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(self.request(host, path)).await
    }

    fn spawn_get(&self, host: &str, path: &str) -> tokio::task::JoinHandle<Reply> {
        let http = self.http.clone();
        let req = self
            .request(host, path)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let proto = self.proto;
        tokio::spawn(async move {
            let response = http
                .request(req)
                .await
                .unwrap_or_else(|e| panic!("{proto:?}: the proxy answers: {e:?}"));
            Reply::read(response).await
        })
    }

    async fn request_count(&self, route: &str) -> u64 {
        self.w.queue().await[route].request_count
    }

    /// GET until the route is in the table requests are routed by (`/queue` lists a route a
    /// moment before that table has it): a 404 of an unknown route is neither counted nor
    /// forwarded, so retrying it changes nothing the case observes.
    async fn get_routed(&self, host: &str, path: &str) -> Reply {
        eventually(&format!("a route for {host}{path}"), || async {
            let reply = self.get(host, path).await;
            (!no_route(&reply)).then_some(reply)
        })
        .await
    }

    /// Sends a GET that a cold route holds (retrying 404s of a route not in the table yet)
    /// and returns it once `route` counts it in flight.
    async fn spawn_held(
        &self,
        host: &str,
        path: &str,
        route: &str,
    ) -> tokio::task::JoinHandle<Reply> {
        let proto = self.proto;
        eventually(&format!("a held request for {host}{path}"), || async {
            let mut request = self.spawn_get(host, path);
            tokio::select! {
                () = self.w.wait_concurrency(route, 1) => Some(request),
                reply = &mut request => {
                    let reply = reply.unwrap();
                    assert!(no_route(&reply), "{proto:?}: answered instead of held: {reply:?}");
                    None
                }
            }
        })
        .await
    }
}

fn no_route(reply: &Reply) -> bool {
    reply.status == StatusCode::NOT_FOUND && reply.text().starts_with("no route")
}

async fn admin_status(bed: &Bed, path: &str) -> StatusCode {
    let url = format!("http://{}{path}", bed.w.interceptor.admin_addr());
    common::http_client()
        .get(url.parse().unwrap())
        .await
        .expect("admin answers")
        .status()
}

fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Routing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_and_answers_404_for_unknown_hosts() {
    on_both(routing).await;
}

/// `TOKIO_WORKER_THREADS=1` runs the binary on tokio's current-thread scheduler: the same
/// cases hold there (routing, counting, a cold start), everything on one thread.
#[tokio::test(flavor = "current_thread")]
async fn one_worker_routes_counts_and_holds_cold_starts_on_both_protocols() {
    on_both(routing).await;
    on_both(counting).await;
    on_both(cold_start).await;
}

async fn routing(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    bed.w.expose("svc-a", "http", &[&a]).await;
    bed.w.expose("svc-b", "http", &[&b]).await;
    bed.w
        .apply_hso(hso("site", &["app.test"], &[], "svc-a", json!(80)))
        .await;
    bed.w
        .apply_hso(hso("api", &["app.test"], &["/api"], "svc-b", json!(80)))
        .await;
    // `/api` routes to the site until the table has the longer prefix too.
    eventually("both routes", || async {
        (bed.w.get("app.test", "/api").await.header("x-backend") == Some("b")).then_some(())
    })
    .await;
    let mut t = Transcript::default();

    let site = bed.get("app.test", "/index.html").await;
    assert_eq!(site.status, StatusCode::OK, "{proto:?}: {}", site.text());
    assert_eq!(site.json()["backend"], "a", "{proto:?}: host match");
    assert_eq!(site.json()["path"], "/index.html", "{proto:?}");
    assert_eq!(site.json()["headers"]["host"], "app.test", "{proto:?}");
    assert_eq!(site.header("x-keda-http-cold-start"), Some("false"));
    t.saw("host match", &site);

    let api = bed.get("app.test", "/api/v1?q=1").await;
    assert_eq!(api.json()["backend"], "b", "{proto:?}: longest path prefix");
    assert_eq!(api.json()["path"], "/api/v1", "{proto:?}");
    t.saw("path match", &api);

    let port = bed.get("APP.test:8080", "/").await;
    assert_eq!(
        port.json()["backend"],
        "a",
        "{proto:?}: case and port ignored"
    );
    t.saw("host case and port", &port);

    let missing = bed.get("nowhere.test", "/some/path").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{proto:?}");
    let text = missing.text();
    assert!(
        text.starts_with("no route")
            && text.contains("nowhere.test")
            && text.contains("/some/path"),
        "{proto:?}: the 404 names the cause: {text:?}"
    );
    assert_eq!(
        missing.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{proto:?}"
    );
    t.saw("unknown host", &missing);
    t
}

// ---------------------------------------------------------------------------------------------
// Counting

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_each_request_once_and_returns_to_zero() {
    on_both(counting).await;
}

async fn counting(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let a = TestBackend::start("a").await;
    bed.w.expose("svc", "http", &[&a]).await;
    bed.w
        .apply_hso(hso("app", &["count.test"], &[], "svc", json!(80)))
        .await;
    bed.w.wait_routed("count.test", "/").await;
    bed.w.wait_concurrency("default/app", 0).await;
    let before = bed.request_count("default/app").await;
    let mut t = Transcript::default();

    for step in ["first", "second", "third"] {
        let reply = bed.get("count.test", "/counted").await;
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}: {}", reply.text());
        t.saw(step, &reply);
    }
    assert_eq!(
        bed.request_count("default/app").await,
        before + 3,
        "{proto:?}: RequestCount +1 per request"
    );
    bed.w.wait_concurrency("default/app", 0).await;

    // In flight while held at the backend, counted once, back to 0 when done.
    let held = bed.spawn_get("count.test", "/hold");
    bed.w.wait_concurrency("default/app", 1).await;
    assert_eq!(
        bed.request_count("default/app").await,
        before + 4,
        "{proto:?}"
    );
    a.release();
    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
    t.saw("held", &reply);
    bed.w.wait_concurrency("default/app", 0).await;
    assert_eq!(
        bed.request_count("default/app").await,
        before + 4,
        "{proto:?}"
    );
    assert_eq!(
        a.hits() as u64,
        before + 4,
        "{proto:?}: each forwarded once"
    );
    t
}

// ---------------------------------------------------------------------------------------------
// Cold start

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_holds_until_an_endpoint_is_ready() {
    on_both(cold_start).await;
}

async fn cold_start(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let a = TestBackend::start("a").await;
    bed.w.expose("svc", "http", &[]).await;
    bed.w.set_slice("svc", "svc-0", "http", a.addr, false).await;
    bed.w
        .apply_hso(hso("app", &["cold.test"], &[], "svc", json!(80)))
        .await;
    let mut t = Transcript::default();

    let request = bed.spawn_held("cold.test", "/first", "default/app").await;
    assert_eq!(a.hits(), 0, "{proto:?}: held, nothing forwarded yet");
    assert!(!request.is_finished(), "{proto:?}: still held");
    bed.w.set_slice("svc", "svc-0", "http", a.addr, true).await;
    let cold = tokio::time::timeout(TIMEOUT, request)
        .await
        .expect("woken by the ready endpoint")
        .unwrap();
    assert_eq!(cold.status, StatusCode::OK, "{proto:?}: {}", cold.text());
    assert_eq!(cold.json()["path"], "/first", "{proto:?}");
    assert_eq!(
        cold.header("x-keda-http-cold-start"),
        Some("true"),
        "{proto:?}"
    );
    t.saw("cold", &cold);

    let warm = bed.get("cold.test", "/second").await;
    assert_eq!(warm.status, StatusCode::OK, "{proto:?}");
    assert_eq!(
        warm.header("x-keda-http-cold-start"),
        Some("false"),
        "{proto:?}"
    );
    t.saw("warm", &warm);
    bed.w.wait_concurrency("default/app", 0).await;
    assert_eq!(bed.request_count("default/app").await, 2, "{proto:?}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_the_flow_control_windows_go_both_ways() {
    on_both(large_bodies).await;
}

/// Request and response bodies of 3 MiB, three times HTTP/2's stream and connection windows:
/// both arrive whole and in order, and the request settles.
async fn large_bodies(proto: Proto) -> Transcript {
    const LEN: usize = 3 * 1024 * 1024;
    let bed = Bed::start(proto).await;
    let a = TestBackend::start("a").await;
    bed.w.expose("svc", "http", &[]).await;
    bed.w.set_slice("svc", "svc-0", "http", a.addr, true).await;
    bed.w
        .apply_hso(hso("app", &["big.test"], &[], "svc", json!(80)))
        .await;
    bed.get_routed("big.test", "/").await;
    let mut t = Transcript::default();

    let req = bed
        .request("big.test", &format!("/big/{LEN}"))
        .method("POST")
        .body(Full::new(Bytes::from(vec![b'u'; LEN])))
        .unwrap();
    let response = bed.http.request(req).await.expect("the proxy answers");
    assert_eq!(response.version(), proto.version(), "{proto:?}");
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
    assert_eq!(
        reply.header("x-body-len"),
        Some(LEN.to_string().as_str()),
        "{proto:?}: the backend got the whole request body"
    );
    assert_eq!(reply.body.len(), LEN, "{proto:?}: the whole response body");
    let in_order = reply
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == b'a' + (i % 26) as u8);
    assert!(in_order, "{proto:?}: the response body arrives in order");
    t.0.push((
        "large",
        Seen {
            status: reply.status,
            body: format!("{} bytes", reply.body.len()),
            cold_start: reply.header("x-keda-http-cold-start").map(str::to_owned),
            content_type: reply.header("content-type").map(str::to_owned),
        },
    ));
    bed.w.wait_concurrency("default/app", 0).await;
    assert_eq!(bed.request_count("default/app").await, 2, "{proto:?}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_giving_up_on_a_held_request_releases_it() {
    on_both(given_up).await;
}

/// The client drops a held request (HTTP/2: the stream is reset; HTTP/1.1: the connection
/// closes): the hold ends, the request stops counting as in flight, nothing is forwarded.
async fn given_up(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let a = TestBackend::start("a").await;
    bed.w.expose("svc", "http", &[]).await;
    bed.w.set_slice("svc", "svc-0", "http", a.addr, false).await;
    bed.w
        .apply_hso(hso("app", &["gone.test"], &[], "svc", json!(80)))
        .await;
    let mut t = Transcript::default();

    let request = bed.spawn_held("gone.test", "/gone", "default/app").await;
    request.abort();
    assert!(request.await.is_err(), "{proto:?}: the client gave up");
    bed.w.wait_concurrency("default/app", 0).await;
    // The next request is held too and released by readiness: sent after the endpoint turned
    // ready instead, it would be held or not depending on when the interceptor saw it, and
    // the two protocols' transcripts (its cold-start header) would differ by chance.
    let next = bed.spawn_held("gone.test", "/next", "default/app").await;
    bed.w.set_slice("svc", "svc-0", "http", a.addr, true).await;
    let next = tokio::time::timeout(TIMEOUT, next)
        .await
        .expect("woken by the ready endpoint")
        .unwrap();
    assert_eq!(next.status, StatusCode::OK, "{proto:?}: {}", next.text());
    assert_eq!(next.json()["path"], "/next", "{proto:?}");
    assert_eq!(
        next.header("x-keda-http-cold-start"),
        Some("true"),
        "{proto:?}"
    );
    t.saw("next", &next);
    assert_eq!(
        a.hits(),
        1,
        "{proto:?}: the given-up request never reached the backend"
    );
    bed.w.wait_concurrency("default/app", 0).await;
    t
}

// ---------------------------------------------------------------------------------------------
// Readiness timeout and fallbacks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_answers_504() {
    on_both(readiness_timeout).await;
}

async fn readiness_timeout(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    bed.w.expose("cold", "http", &[]).await;
    bed.w
        .apply_ir(json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": { "name": "timeout" },
            "spec": {
                "target": { "service": "cold", "port": 80 },
                "rules": [{ "hosts": ["timeout.test"] }],
                "scalingMetric": { "concurrency": { "targetValue": 100 } },
                "timeouts": { "readiness": "200ms" }
            }
        }))
        .await;
    let mut t = Transcript::default();

    let started = Instant::now();
    let reply = bed.get_routed("timeout.test", "/").await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{proto:?}: {}",
        reply.text()
    );
    assert!(
        reply.text().contains("ready endpoint"),
        "{proto:?}: {}",
        reply.text()
    );
    assert_eq!(
        reply.header("x-keda-http-cold-start"),
        Some("true"),
        "{proto:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{proto:?}: waited"
    );
    t.saw("readiness timeout", &reply);
    bed.w.wait_concurrency("default/timeout", 0).await;
    assert_eq!(bed.request_count("default/timeout").await, 1, "{proto:?}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_services_answer_after_the_readiness_timeout() {
    on_both(fallback).await;
}

async fn fallback(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let fb = TestBackend::start("fallback").await;
    bed.w.expose("cold", "http", &[]).await;
    bed.w.expose("fb", "http", &[&fb]).await;
    // The fallback Service's endpoints are known once a direct route to it answers.
    bed.w
        .apply_hso(hso("direct", &["direct.test"], &[], "fb", json!(80)))
        .await;
    assert_eq!(
        bed.w.wait_routed("direct.test", "/").await.status,
        StatusCode::OK
    );
    bed.w
        .apply_ir(json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": { "name": "with-fallback" },
            "spec": {
                "target": { "service": "cold", "port": 80 },
                "rules": [{ "hosts": ["fallback.test"] }],
                "scalingMetric": { "concurrency": { "targetValue": 100 } },
                "coldStart": { "fallback": { "service": { "name": "fb", "port": 80 } } },
                "timeouts": { "readiness": "200ms" }
            }
        }))
        .await;
    let mut failover = hso("failover", &["failover.test"], &[], "cold", json!(80));
    failover["spec"]["coldStartTimeoutFailoverRef"] =
        json!({ "service": "fb", "port": 80, "timeoutSeconds": 1 });
    bed.w.apply_hso(failover).await;
    let mut t = Transcript::default();

    let started = Instant::now();
    let reply = bed.get_routed("fallback.test", "/fb").await;
    assert_eq!(reply.status, StatusCode::OK, "{proto:?}: {}", reply.text());
    assert_eq!(reply.json()["backend"], "fallback", "{proto:?}");
    assert_eq!(reply.json()["path"], "/fb", "{proto:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{proto:?}: waited first"
    );
    t.saw("InterceptorRoute fallback", &reply);

    let started = Instant::now();
    let reply = bed.get_routed("failover.test", "/fo").await;
    assert_eq!(reply.status, StatusCode::OK, "{proto:?}: {}", reply.text());
    assert_eq!(reply.json()["backend"], "fallback", "{proto:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{proto:?}: timeoutSeconds"
    );
    t.saw("HTTPScaledObject failover", &reply);
    bed.w.wait_concurrency("default/with-fallback", 0).await;
    bed.w.wait_concurrency("default/failover", 0).await;
    t
}

// ---------------------------------------------------------------------------------------------
// Static routes and placeholders

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_routes_and_placeholders() {
    on_both(statics).await;
}

async fn statics(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let a = TestBackend::start("a").await;
    bed.w.expose("cold", "http", &[]).await;
    bed.w.expose("warm", "http", &[&a]).await;
    bed.w
        .apply_ir(json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": { "name": "placeholder" },
            "spec": {
                "target": { "service": "cold", "port": 80 },
                "rules": [{ "hosts": ["ph.test"] }],
                "scalingMetric": { "concurrency": { "targetValue": 100 } },
                "coldStart": { "placeholder": { "response": {
                    "statusCode": 503, "body": "warming up", "headers": { "retry-after": "5" } } } }
            }
        }))
        .await;
    bed.w
        .apply_ir(json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": { "name": "statics" },
            "spec": {
                "target": { "service": "warm", "port": 80 },
                "rules": [{ "hosts": ["static.test"] }],
                "scalingMetric": { "concurrency": { "targetValue": 100 } },
                "staticRoutes": [
                    { "rules": [{ "paths": [{ "value": "/robots.txt" }] }], "responseMode": "Always",
                      "response": { "statusCode": 200, "body": "User-agent: *" } },
                    { "rules": [{ "paths": [{ "value": "/" }] }],
                      "response": { "statusCode": 503, "body": "down" } }
                ]
            }
        }))
        .await;
    bed.w.wait_routed("ph.test", "/").await;
    bed.w.wait_routed("static.test", "/robots.txt").await;
    // The WhenUnavailable static answers until the backend's endpoint is known.
    eventually("the backend behind the static routes", || async {
        (bed.w.get("static.test", "/").await.header("x-backend") == Some("a")).then_some(())
    })
    .await;
    let count_before = bed.request_count("default/statics").await;
    let hits_before = a.hits();
    let mut t = Transcript::default();

    let placeholder = bed.get("ph.test", "/anything").await;
    assert_eq!(
        placeholder.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{proto:?}"
    );
    assert_eq!(placeholder.text(), "warming up", "{proto:?}");
    assert_eq!(placeholder.header("retry-after"), Some("5"), "{proto:?}");
    assert_eq!(
        placeholder.header("x-keda-http-cold-start"),
        Some("true"),
        "{proto:?}"
    );
    t.saw("placeholder", &placeholder);

    let robots = bed.get("static.test", "/robots.txt").await;
    assert_eq!(robots.status, StatusCode::OK, "{proto:?}");
    assert_eq!(robots.text(), "User-agent: *", "{proto:?}");
    t.saw("static Always", &robots);

    let page = bed.get("static.test", "/page").await;
    assert_eq!(
        page.json()["backend"],
        "a",
        "{proto:?}: WhenUnavailable does not apply while ready"
    );
    t.saw("static WhenUnavailable while ready", &page);
    assert_eq!(
        a.hits(),
        hits_before + 1,
        "{proto:?}: only /page was forwarded"
    );
    assert_eq!(
        bed.request_count("default/statics").await,
        count_before + 1,
        "{proto:?}: static responses are not counted"
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_limit_rejects_the_overflow_and_holds_the_rest() {
    on_both(pending_limit).await;
}

/// `coldStart.maxPendingRequests` (upstream 0.16): the first N requests to a cold route are
/// held, the next are answered at once (503 + `Retry-After`, or the placeholder with
/// `overflow: Placeholder`) and counted in `interceptor_cold_start_rejections_total`; a
/// placeholder alone holds nothing, even with a global limit.
async fn pending_limit(proto: Proto) -> Transcript {
    let mut config = Config::for_tests();
    config.max_pending_requests = Some(2);
    let bed = Bed::with_config(proto, config).await;
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    bed.w.expose("limited", "http", &[]).await;
    bed.w.expose("overflowing", "http", &[]).await;
    bed.w.expose("placeholder", "http", &[]).await;
    bed.w
        .set_slice("limited", "limited-0", "http", a.addr, false)
        .await;
    bed.w
        .set_slice("overflowing", "overflowing-0", "http", b.addr, false)
        .await;
    let route = |name: &str, cold: serde_json::Value| {
        json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": { "name": name },
            "spec": {
                "target": { "service": name, "port": 80 },
                "rules": [{ "hosts": [format!("{name}.test")] }],
                "scalingMetric": { "concurrency": { "targetValue": 100 } },
                "coldStart": cold
            }
        })
    };
    let busy = json!({ "response": { "statusCode": 503, "body": "busy" } });
    bed.w
        .apply_ir(route("limited", json!({ "maxPendingRequests": 5 })))
        .await;
    bed.w
        .apply_ir(route(
            "overflowing",
            json!({ "maxPendingRequests": 1, "overflow": "Placeholder", "placeholder": busy }),
        ))
        .await;
    bed.w
        .apply_ir(route("placeholder", json!({ "placeholder": busy })))
        .await;
    let mut t = Transcript::default();

    // Five held, three rejected at once.
    let mut held = vec![
        bed.spawn_held("limited.test", "/0", "default/limited")
            .await,
    ];
    for i in 1..5 {
        held.push(bed.spawn_get("limited.test", &format!("/{i}")));
    }
    bed.w.wait_concurrency("default/limited", 5).await;
    for _ in 0..3 {
        let rejected = bed.get("limited.test", "/more").await;
        assert_eq!(
            rejected.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{proto:?}: {}",
            rejected.text()
        );
        assert_eq!(rejected.header("retry-after"), Some("1"), "{proto:?}");
        t.saw("beyond the limit", &rejected);
    }
    assert_eq!(a.hits(), 0, "{proto:?}: nothing forwarded while cold");
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "{proto:?}: five still held"
    );

    // One held, the overflow gets the placeholder.
    let first = bed
        .spawn_held("overflowing.test", "/", "default/overflowing")
        .await;
    let overflow = bed.get("overflowing.test", "/").await;
    assert_eq!(overflow.text(), "busy", "{proto:?}");
    t.saw("overflow placeholder", &overflow);

    // A placeholder alone answers at once, whatever the global limit: nothing is held.
    for _ in 0..3 {
        let placeholder = bed.get_routed("placeholder.test", "/").await;
        assert_eq!(placeholder.text(), "busy", "{proto:?}");
    }
    bed.w.wait_concurrency("default/placeholder", 0).await;

    let metrics = bed.w.metrics_text().await;
    for (route, n) in [("limited", 3), ("overflowing", 1)] {
        let series = format!(
            r#"interceptor_cold_start_rejections_total{{route_name="{route}",route_namespace="default"}} {n}"#
        );
        assert!(metrics.contains(&series), "{proto:?}: {series}\n{metrics}");
    }
    assert!(
        !metrics.contains(r#"interceptor_cold_start_rejections_total{route_name="placeholder""#),
        "{proto:?}: a placeholder alone rejects nothing"
    );

    // Ready: every held request is answered by the backend.
    bed.w
        .set_slice("limited", "limited-0", "http", a.addr, true)
        .await;
    bed.w
        .set_slice("overflowing", "overflowing-0", "http", b.addr, true)
        .await;
    for request in held.into_iter().chain([first]) {
        let reply = tokio::time::timeout(TIMEOUT, request)
            .await
            .expect("woken by the ready endpoint")
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}: {}", reply.text());
    }
    assert_eq!(
        a.hits(),
        5,
        "{proto:?}: only the held requests were forwarded"
    );
    bed.w.wait_concurrency("default/limited", 0).await;
    assert_eq!(
        bed.request_count("default/limited").await,
        8,
        "{proto:?}: rejected requests are counted once each"
    );
    t
}

// ---------------------------------------------------------------------------------------------
// Response header timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slow_to_answer_gets_504() {
    on_both(response_header_timeout).await;
}

async fn response_header_timeout(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let slow = TestBackend::start("slow").await;
    bed.w.expose("svc", "http", &[&slow]).await;
    bed.w
        .apply_ir(json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": { "name": "slow" },
            "spec": {
                "target": { "service": "svc", "port": 80 },
                "rules": [{ "hosts": ["slow.test"] }],
                "scalingMetric": { "concurrency": { "targetValue": 100 } },
                "timeouts": { "responseHeader": "200ms" }
            }
        }))
        .await;
    bed.w.wait_routed("slow.test", "/").await;
    let mut t = Transcript::default();

    let started = Instant::now();
    // `/hold` never answers until released: only the timeout can end this request.
    let timed_out = bed.get("slow.test", "/hold").await;
    assert_eq!(
        timed_out.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{proto:?}: {}",
        timed_out.text()
    );
    assert!(
        timed_out.text().contains("response headers"),
        "{proto:?}: {}",
        timed_out.text()
    );
    assert!(started.elapsed() >= Duration::from_millis(200), "{proto:?}");
    assert_eq!(
        slow.held.load(Ordering::SeqCst),
        1,
        "{proto:?}: the backend had it"
    );
    t.saw("response header timeout", &timed_out);

    let quick = bed.get("slow.test", "/sleep/10").await;
    assert_eq!(quick.status, StatusCode::OK, "{proto:?}");
    t.saw("in time", &quick);
    bed.w.wait_concurrency("default/slow", 0).await;
    slow.release();
    t
}

// ---------------------------------------------------------------------------------------------
// Connect retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_retried_on_another_endpoint() {
    on_both(connect_retry).await;
}

async fn connect_retry(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let live = TestBackend::start("live").await;
    let dead = closed_port();
    bed.w.expose_addrs("svc", "http", None, &[dead]).await;
    bed.w
        .apply_hso(hso("app", &["retry.test"], &[], "svc", json!(80)))
        .await;
    // The refusing endpoint is known once a 502 names it, the live one once a request works.
    let refused = eventually("a 502 naming the refusing endpoint", || async {
        let reply = bed.w.get("retry.test", "/").await;
        (reply.status == StatusCode::BAD_GATEWAY).then_some(reply)
    })
    .await;
    assert!(
        refused
            .text()
            .contains(&format!("connecting to {dead} failed")),
        "{}",
        refused.text()
    );
    bed.w
        .set_slice("svc", "svc-live", "http", live.addr, true)
        .await;
    eventually("the live endpoint", || async {
        (bed.w.get("retry.test", "/").await.status == StatusCode::OK).then_some(())
    })
    .await;
    let mut t = Transcript::default();

    // Ties in least-outstanding rotate over the two endpoints: a request that starts on the
    // live one moves the next start to the refusing one, and one that starts on the refusing
    // one (and retries) keeps it there. So at least five of these six begin with a refused
    // connect: without retries they would be 502s. A POST with a body, retried because nothing
    // of it was sent.
    for step in ["1", "2", "3", "4", "5", "6"] {
        let request = Request::post(format!("http://retry.test/{step}"));
        let reply = bed.send_body(request, "payload").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{proto:?} request {step}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["backend"], "live", "{proto:?}");
        assert_eq!(
            reply.json()["bodyLen"],
            7,
            "{proto:?}: the body survives the retry"
        );
        t.saw(step, &reply);
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_host_is_rejected_with_400() {
    on_both(bad_input).await;
}

async fn bad_input(proto: Proto) -> Transcript {
    let bed = Bed::start(proto).await;
    let a = TestBackend::start("a").await;
    bed.w.expose("svc", "http", &[&a]).await;
    bed.w
        .apply_hso(hso("app", &["good.test"], &[], "svc", json!(80)))
        .await;
    bed.w.wait_routed("good.test", "/").await;
    let hits = a.hits();
    let mut t = Transcript::default();

    // HTTP/1.1 sends this as the request's `Host`. HTTP/2 names the host in `:authority`,
    // which the client takes from the URI and `http::Uri` refuses to hold an invalid one, so
    // the h2 request carries a valid `:authority` and this `Host` field next to it (allowed
    // by RFC 9113 §8.3.1): the proxy must check it just the same.
    for (step, host) in [
        ("space in Host", "bad host"),
        ("list in Host", "good.test,evil.test"),
    ] {
        let reply = bed
            .send(bed.request("good.test", "/").header("host", host))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{proto:?} {host:?}: {}",
            reply.text()
        );
        assert!(
            reply.text().contains("invalid Host header"),
            "{proto:?}: {}",
            reply.text()
        );
        t.saw(step, &reply);
    }
    // CONNECT (authority-form in HTTP/1.1; `:method`/`:authority` only in HTTP/2).
    let connect = bed.send(Request::connect("http://good.test:80")).await;
    assert_eq!(
        connect.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{proto:?}: {}",
        connect.text()
    );
    t.saw("CONNECT", &connect);
    assert_eq!(a.hits(), hits, "{proto:?}: nothing forwarded");
    // The connection (or its replacement) still serves good requests.
    let good = bed.get("good.test", "/after").await;
    assert_eq!(good.status, StatusCode::OK, "{proto:?}");
    t.saw("good after bad", &good);
    t
}

// ---------------------------------------------------------------------------------------------
// Drain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_in_flight_request_finish() {
    on_both(drain).await;
}

async fn drain(proto: Proto) -> Transcript {
    let bed = Bed::with_config(
        proto,
        Config {
            shutdown_delay: Duration::from_millis(200),
            ..Config::for_tests()
        },
    )
    .await;
    let a = TestBackend::start("a").await;
    bed.w.expose("svc", "http", &[&a]).await;
    bed.w
        .apply_hso(hso("app", &["bye.test"], &[], "svc", json!(80)))
        .await;
    bed.w.wait_routed("bye.test", "/").await;
    let in_flight = bed.spawn_get("bye.test", "/hold");
    eventually("the backend holds the request", || async {
        (a.held.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let mut t = Transcript::default();

    let proxy = bed.w.interceptor.proxy_addr();
    let shutdown = bed.w.interceptor.shutdown();
    let observe = async {
        eventually("/readyz to turn 503", || async {
            (admin_status(&bed, "/readyz").await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        })
        .await;
        eventually("the proxy listener to close", || async {
            TcpStream::connect(proxy).await.is_err().then_some(())
        })
        .await;
        assert!(!in_flight.is_finished(), "{proto:?}: still in flight");
        assert_eq!(a.held.load(Ordering::SeqCst), 1, "{proto:?}");
        a.release();
        in_flight.await.unwrap()
    };
    let ((), reply) = tokio::time::timeout(TIMEOUT, async { tokio::join!(shutdown, observe) })
        .await
        .expect("shutdown completes once the in-flight request is done");
    assert_eq!(reply.status, StatusCode::OK, "{proto:?}: {}", reply.text());
    assert_eq!(reply.json()["path"], "/hold", "{proto:?}");
    t.saw("in flight across shutdown", &reply);
    t
}

// ---------------------------------------------------------------------------------------------
// Upgrades: HTTP/1.1 only. HTTP/2 has no `Upgrade` mechanism: `Connection` and `Upgrade` are
// connection-specific fields an h2 request must not carry (RFC 9113 §8.2.2; hyper's h2 client
// strips them), and WebSocket over h2 is extended CONNECT (RFC 8441), which this proxy does
// not offer (it answers CONNECT with 405).

/// A backend that answers a request asking for a WebSocket upgrade with `101 Switching
/// Protocols`, then echoes bytes; any other request with `200 ok` and a close.
async fn upgrade_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                if !head
                    .to_ascii_lowercase()
                    .windows(18)
                    .any(|w| w == b"upgrade: websocket")
                {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = stream.write_all(ok).await;
                    return;
                }
                let reply = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
                if stream.write_all(reply).await.is_err() {
                    return;
                }
                let (mut rd, mut wr) = stream.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_upgrades_are_tunnelled_and_counted_until_closed() {
    let bed = Bed::start(Proto::Http1).await;
    let (addr, _backend) = upgrade_backend().await;
    bed.w.expose_addrs("ws", "http", None, &[addr]).await;
    bed.w
        .apply_hso(hso("ws", &["ws.test"], &[], "ws", json!(80)))
        .await;
    assert_eq!(bed.w.wait_routed("ws.test", "/").await.text(), "ok");
    let req = bed
        .request("ws.test", "/chat")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = bed
        .http
        .request(req)
        .await
        .expect("the upgrade is answered");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response
            .headers()
            .get("x-keda-http-cold-start")
            .map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );
    assert_eq!(
        response.headers().get("upgrade").map(|v| v.as_bytes()),
        Some(&b"websocket"[..])
    );
    let mut tunnel = TokioIo::new(
        tokio::time::timeout(TIMEOUT, hyper::upgrade::on(response))
            .await
            .expect("upgraded in time")
            .expect("the connection upgrades"),
    );
    for message in [&b"ping"[..], b"second message"] {
        tunnel.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(TIMEOUT, tunnel.read_exact(&mut echoed))
            .await
            .expect("the echo arrives")
            .unwrap();
        assert_eq!(echoed, message);
    }
    bed.w.wait_concurrency("default/ws", 1).await;
    drop(tunnel);
    bed.w.wait_concurrency("default/ws", 0).await;
}
