//! Route table lookups at 10, 1k and 100k routes.
//!
//! The tables look like a busy cluster: mostly one exact host per route with a few paths,
//! every 10th route a wildcard host, every 50th route a path on one of a few shared hosts
//! (hundreds of paths per host at 100k), and header matchers on some rules.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use divan::Bencher;
use http::HeaderMap;
use http_add_on_types::routing::{HeaderMatch, Route, RouteKey, RouteKind, RouteRule, RouteTable};

fn main() {
    divan::main();
}

const SIZES: &[usize] = &[10, 1_000, 100_000];
/// Requests per kind, cycled through so lookups do not hit one cache line only.
const REQUESTS: usize = 1024;

struct Request {
    host: String,
    path: String,
    headers: HeaderMap,
}

struct Fixture {
    table: RouteTable<usize>,
    exact: Vec<Request>,
    wildcard: Vec<Request>,
    shared_host: Vec<Request>,
    miss: Vec<Request>,
}

fn rule(hosts: Vec<String>, paths: &[&str]) -> RouteRule {
    RouteRule {
        hosts,
        paths: paths.iter().map(|p| p.to_string()).collect(),
        headers: Vec::new(),
    }
}

fn routes(n: usize) -> Vec<Route<usize>> {
    (0..n)
        .map(|i| {
            let rules = if i % 10 == 0 {
                vec![rule(vec![format!("*.team{i}.example.org")], &["/", "/api"])]
            } else if i % 50 == 1 {
                vec![rule(
                    vec![format!("shared{}.example.com", i % 7)],
                    &[&format!("/svc{i}")],
                )]
            } else {
                let host = format!("svc{i}.ns{}.example.com", i % 97);
                let mut tenant = rule(vec![host.clone()], &["/api"]);
                tenant.headers.push(HeaderMatch {
                    name: "x-tenant".into(),
                    value: Some(format!("t{}", i % 5)),
                });
                vec![tenant, rule(vec![host], &["/", "/api/v1", "/static"])]
            };
            Route {
                key: RouteKey::new(&format!("ns{}", i % 97), &format!("app{i}")),
                kind: if i % 2 == 0 {
                    RouteKind::InterceptorRoute
                } else {
                    RouteKind::HttpScaledObject
                },
                created: i as i64,
                rules,
                target: i,
            }
        })
        .collect()
}

fn requests(n: usize, make: impl Fn(usize) -> Option<Request>) -> Vec<Request> {
    // Spread over the whole table; skip indices that are not of the wanted kind.
    let step = (n / REQUESTS).max(1);
    (0..)
        .map(|k| (k * step + k / n.max(1)) % n)
        .filter_map(make)
        .take(REQUESTS)
        .collect()
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| (http::HeaderName::from_static(name), value.parse().unwrap()))
        .collect()
}

fn fixture(n: usize) -> Arc<Fixture> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Fixture>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(n)
        .or_insert_with(|| {
            let table = RouteTable::build(routes(n));
            let exact = requests(n, |i| {
                (i % 10 != 0 && i % 50 != 1).then(|| Request {
                    host: format!("svc{i}.ns{}.example.com:8080", i % 97),
                    path: "/api/v1/users/42".into(),
                    headers: headers(&[
                        ("x-tenant", format!("t{}", i % 5)),
                        ("user-agent", "bench".into()),
                    ]),
                })
            });
            let wildcard = requests(n, |i| {
                (i % 10 == 0).then(|| Request {
                    host: format!("pod-3.team{i}.example.org"),
                    path: "/api/items".into(),
                    headers: headers(&[("user-agent", "bench".into())]),
                })
            });
            let shared_host = requests(n, |i| {
                (i % 50 == 1).then(|| Request {
                    host: format!("shared{}.example.com", i % 7),
                    path: format!("/svc{i}/index.html"),
                    headers: HeaderMap::new(),
                })
            });
            let miss = requests(n, |i| {
                Some(Request {
                    host: format!("unknown{i}.deep.sub.example.net"),
                    path: "/".into(),
                    headers: HeaderMap::new(),
                })
            });
            Arc::new(Fixture {
                table,
                exact,
                wildcard,
                shared_host,
                miss,
            })
        })
        .clone()
}

fn bench_lookups(bencher: Bencher, n: usize, pick: fn(&Fixture) -> &[Request], expect_hit: bool) {
    let fixture = fixture(n);
    let requests = pick(&fixture);
    assert!(!requests.is_empty());
    for request in requests {
        let found = fixture
            .table
            .lookup(&request.host, &request.path, &request.headers);
        assert_eq!(
            found.is_some(),
            expect_hit,
            "{} {}",
            request.host,
            request.path
        );
    }
    let next = Cell::new(0);
    bencher.bench_local(|| {
        let i = next.get();
        next.set((i + 1) % requests.len());
        let request = &requests[i];
        fixture
            .table
            .lookup(
                divan::black_box(&request.host),
                divan::black_box(&request.path),
                &request.headers,
            )
            .map(|route| route.target)
    });
}

/// Exact host, header matcher on the longest prefix, port in the Host header.
#[divan::bench(args = SIZES)]
fn exact_hit(bencher: Bencher, n: usize) {
    bench_lookups(bencher, n, |f| &f.exact, true);
}

/// Host matched by a wildcard two labels up.
#[divan::bench(args = SIZES)]
fn wildcard_hit(bencher: Bencher, n: usize) {
    bench_lookups(bencher, n, |f| &f.wildcard, true);
}

/// One of a few hosts carrying many paths each.
#[divan::bench(args = SIZES)]
fn shared_host_hit(bencher: Bencher, n: usize) {
    bench_lookups(bencher, n, |f| &f.shared_host, true);
}

/// Unknown host with several labels (exact, every wildcard suffix and the catch-all tried).
#[divan::bench(args = SIZES)]
fn miss(bencher: Bencher, n: usize) {
    bench_lookups(bencher, n, |f| &f.miss, false);
}

/// Building the table from scratch.
#[divan::bench(args = SIZES, sample_count = 5)]
fn build(bencher: Bencher, n: usize) {
    bencher
        .with_inputs(|| routes(n))
        .bench_local_values(RouteTable::build);
}
