//! Behaviour of the route table through its public interface: one test per precedence rule,
//! a property test against a brute-force reference matcher, conflicts and the shared table.

use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http_add_on_types::routing::{
    HeaderMatch, Route, RouteConflict, RouteKey, RouteKind, RouteRule, RouteTable, SharedRouteTable,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

fn rule(hosts: &[&str], paths: &[&str]) -> RouteRule {
    RouteRule {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        headers: Vec::new(),
    }
}

fn with_header(mut rule: RouteRule, name: &str, value: Option<&str>) -> RouteRule {
    rule.headers.push(HeaderMatch {
        name: name.to_owned(),
        value: value.map(str::to_owned),
    });
    rule
}

fn route_in(
    namespace: &str,
    name: &str,
    created: i64,
    rules: Vec<RouteRule>,
) -> Route<&'static str> {
    Route {
        key: RouteKey::new(namespace, name),
        kind: RouteKind::InterceptorRoute,
        created,
        rules,
        target: "",
    }
}

fn route(name: &str, rules: Vec<RouteRule>) -> Route<&'static str> {
    route_in("ns", name, 0, rules)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

/// The key (`ns/name`) of the route serving the request, if any.
fn hit<T>(table: &RouteTable<T>, host: &str, path: &str, pairs: &[(&str, &str)]) -> Option<String> {
    table
        .lookup(host, path, &headers(pairs))
        .map(|route| route.key.to_string())
}

// ---------------------------------------------------------------------------------------------
// Host tiers

#[test]
fn exact_host_beats_wildcard_and_catch_all() {
    let table = RouteTable::build(vec![
        route("catch-all", vec![rule(&["*"], &["/api/v1/deep"])]),
        route("wildcard", vec![rule(&["*.example.com"], &["/api/v1"])]),
        route("exact", vec![rule(&["a.example.com"], &["/"])]),
    ]);
    // The exact host wins although the others have longer path prefixes.
    assert_eq!(
        hit(&table, "a.example.com", "/api/v1/deep/x", &[]).as_deref(),
        Some("ns/exact")
    );
    assert_eq!(
        hit(&table, "b.example.com", "/api/v1/deep/x", &[]).as_deref(),
        Some("ns/wildcard")
    );
    assert_eq!(
        hit(&table, "other.org", "/api/v1/deep/x", &[]).as_deref(),
        Some("ns/catch-all")
    );
}

#[test]
fn wildcard_beats_catch_all_and_empty_hosts_are_catch_all() {
    let table = RouteTable::build(vec![
        route("no-hosts", vec![rule(&[], &["/long/prefix"])]),
        route("wildcard", vec![rule(&["*.example.com"], &[])]),
    ]);
    assert_eq!(
        hit(&table, "x.example.com", "/long/prefix", &[]).as_deref(),
        Some("ns/wildcard")
    );
    assert_eq!(
        hit(&table, "x.example.org", "/long/prefix", &[]).as_deref(),
        Some("ns/no-hosts")
    );
}

#[test]
fn more_specific_wildcard_wins() {
    let table = RouteTable::build(vec![
        route("broad", vec![rule(&["*.example.com"], &["/a/long/path"])]),
        route("narrow", vec![rule(&["*.bar.example.com"], &["/"])]),
    ]);
    assert_eq!(
        hit(&table, "foo.bar.example.com", "/a/long/path", &[]).as_deref(),
        Some("ns/narrow")
    );
    assert_eq!(
        hit(&table, "x.foo.bar.example.com", "/", &[]).as_deref(),
        Some("ns/narrow")
    );
    assert_eq!(
        hit(&table, "foo.baz.example.com", "/a/long/path", &[]).as_deref(),
        Some("ns/broad")
    );
    // `*.bar.example.com` does not match `bar.example.com` itself; `*.example.com` does.
    assert_eq!(
        hit(&table, "bar.example.com", "/a/long/path", &[]).as_deref(),
        Some("ns/broad")
    );
}

#[test]
fn wildcard_matches_subdomains_at_any_depth_but_not_the_apex() {
    let table = RouteTable::build(vec![route("w", vec![rule(&["*.example.com"], &[])])]);
    assert_eq!(
        hit(&table, "a.example.com", "/", &[]).as_deref(),
        Some("ns/w")
    );
    assert_eq!(
        hit(&table, "a.b.example.com", "/", &[]).as_deref(),
        Some("ns/w")
    );
    assert_eq!(hit(&table, "example.com", "/", &[]), None);
    assert_eq!(hit(&table, "badexample.com", "/", &[]), None);
}

// ---------------------------------------------------------------------------------------------
// Paths

#[test]
fn longest_path_prefix_wins() {
    let table = RouteTable::build(vec![
        route("root", vec![rule(&["h"], &["/"])]),
        route("api", vec![rule(&["h"], &["/api"])]),
        route("api-v1", vec![rule(&["h"], &["/api/v1"])]),
    ]);
    assert_eq!(
        hit(&table, "h", "/api/v1/users", &[]).as_deref(),
        Some("ns/api-v1")
    );
    assert_eq!(hit(&table, "h", "/api/v2", &[]).as_deref(), Some("ns/api"));
    assert_eq!(hit(&table, "h", "/other", &[]).as_deref(), Some("ns/root"));
}

#[test]
fn path_prefix_is_a_plain_string_prefix() {
    // As upstream: `/api` also matches `/apiv2`; segment boundaries are not special.
    let table = RouteTable::build(vec![route("api", vec![rule(&["h"], &["/api"])])]);
    assert_eq!(hit(&table, "h", "/apiv2", &[]).as_deref(), Some("ns/api"));
    assert_eq!(hit(&table, "h", "/ap", &[]), None);
    // Case-sensitive.
    assert_eq!(hit(&table, "h", "/API", &[]), None);
}

#[test]
fn rules_are_ored_and_hosts_and_paths_inside_a_rule_are_ored() {
    let table = RouteTable::build(vec![route(
        "r",
        vec![
            rule(&["a.com", "b.com"], &["/x", "/y"]),
            rule(&["c.com"], &["/z"]),
        ],
    )]);
    for (host, path) in [
        ("a.com", "/x"),
        ("b.com", "/y"),
        ("a.com", "/y"),
        ("c.com", "/z"),
    ] {
        assert_eq!(
            hit(&table, host, path, &[]).as_deref(),
            Some("ns/r"),
            "{host}{path}"
        );
    }
    assert_eq!(hit(&table, "c.com", "/x", &[]), None);
    assert_eq!(hit(&table, "a.com", "/z", &[]), None);
}

// ---------------------------------------------------------------------------------------------
// Ties on the same path

#[test]
fn more_header_matchers_win() {
    let one = with_header(rule(&["h"], &["/"]), "x-a", Some("1"));
    let two = with_header(with_header(rule(&["h"], &["/"]), "x-a", None), "x-b", None);
    let table = RouteTable::build(vec![
        // Older and lexically first, but fewer matchers.
        route_in("a", "one", 0, vec![one]),
        route_in("z", "two", 10, vec![two]),
    ]);
    assert_eq!(
        hit(&table, "h", "/", &[("x-a", "1"), ("x-b", "")]).as_deref(),
        Some("z/two")
    );
    assert_eq!(
        hit(&table, "h", "/", &[("x-a", "1")]).as_deref(),
        Some("a/one")
    );
}

#[test]
fn valued_matchers_beat_presence_only() {
    let presence = with_header(rule(&["h"], &["/"]), "x-a", None);
    let valued = with_header(rule(&["h"], &["/"]), "x-a", Some("1"));
    let table = RouteTable::build(vec![
        route_in("a", "presence", 0, vec![presence]),
        route_in("z", "valued", 10, vec![valued]),
    ]);
    assert_eq!(
        hit(&table, "h", "/", &[("x-a", "1")]).as_deref(),
        Some("z/valued")
    );
    assert_eq!(
        hit(&table, "h", "/", &[("x-a", "2")]).as_deref(),
        Some("a/presence")
    );
    assert_eq!(hit(&table, "h", "/", &[]), None);
}

#[test]
fn older_route_wins() {
    let table = RouteTable::build(vec![
        route_in("a", "young", 200, vec![rule(&["h"], &["/"])]),
        route_in("z", "old", 100, vec![rule(&["h"], &["/"])]),
    ]);
    assert_eq!(hit(&table, "h", "/", &[]).as_deref(), Some("z/old"));
}

#[test]
fn namespace_then_name_breaks_ties() {
    let table = RouteTable::build(vec![
        route_in("b", "a", 5, vec![rule(&["h"], &["/"])]),
        route_in("a", "z", 5, vec![rule(&["h"], &["/"])]),
        route_in("a", "y", 5, vec![rule(&["h"], &["/"])]),
    ]);
    assert_eq!(hit(&table, "h", "/", &[]).as_deref(), Some("a/y"));
    // Namespace, then name — not the joined string ("a-b/x" < "a/z" as plain strings).
    let table = RouteTable::build(vec![
        route_in("a-b", "x", 5, vec![rule(&["h"], &["/"])]),
        route_in("a", "z", 5, vec![rule(&["h"], &["/"])]),
    ]);
    assert_eq!(hit(&table, "h", "/", &[]).as_deref(), Some("a/z"));
}

#[test]
fn interceptor_route_beats_http_scaled_object_with_the_same_key() {
    let mut hso = route_in("ns", "app", 0, vec![rule(&["h"], &["/long/path"])]);
    hso.kind = RouteKind::HttpScaledObject;
    hso.target = "hso";
    let mut ir = route_in("ns", "app", 100, vec![rule(&["other"], &["/"])]);
    ir.target = "ir";
    let mut unrelated_hso = route_in("ns", "else", 0, vec![rule(&["h"], &["/"])]);
    unrelated_hso.kind = RouteKind::HttpScaledObject;
    let table = RouteTable::build(vec![hso, ir, unrelated_hso]);

    assert_eq!(table.len(), 2, "the shadowed HTTPScaledObject is dropped");
    let app = table.get(&RouteKey::new("ns", "app")).unwrap();
    assert_eq!((app.kind, app.target), (RouteKind::InterceptorRoute, "ir"));
    // The HTTPScaledObject's own rules are gone with it.
    assert_eq!(
        hit(&table, "h", "/long/path", &[]).as_deref(),
        Some("ns/else")
    );
    assert_eq!(
        table
            .lookup("other", "/", &HeaderMap::new())
            .map(|r| r.target),
        Some("ir")
    );
}

// ---------------------------------------------------------------------------------------------
// Falling through

#[test]
fn falls_through_to_wildcard_then_catch_all_when_headers_fail() {
    let table = RouteTable::build(vec![
        route(
            "exact",
            vec![with_header(
                rule(&["a.example.com"], &["/"]),
                "x-exact",
                None,
            )],
        ),
        route(
            "wild",
            vec![with_header(
                rule(&["*.example.com"], &["/"]),
                "x-wild",
                None,
            )],
        ),
        route("any", vec![rule(&["*"], &["/"])]),
    ]);
    assert_eq!(
        hit(&table, "a.example.com", "/", &[("x-exact", "")]).as_deref(),
        Some("ns/exact")
    );
    assert_eq!(
        hit(&table, "a.example.com", "/", &[("x-wild", "")]).as_deref(),
        Some("ns/wild")
    );
    assert_eq!(
        hit(&table, "a.example.com", "/", &[]).as_deref(),
        Some("ns/any")
    );
}

#[test]
fn falls_through_to_shorter_prefix_then_next_tier_when_path_or_headers_fail() {
    let table = RouteTable::build(vec![
        route(
            "exact-deep",
            vec![with_header(
                rule(&["h.example.com"], &["/api"]),
                "x-a",
                Some("1"),
            )],
        ),
        route(
            "exact-root",
            vec![with_header(
                rule(&["h.example.com"], &["/"]),
                "x-a",
                Some("2"),
            )],
        ),
        route("wild", vec![rule(&["*.example.com"], &["/api"])]),
    ]);
    assert_eq!(
        hit(&table, "h.example.com", "/api", &[("x-a", "1")]).as_deref(),
        Some("ns/exact-deep")
    );
    assert_eq!(
        hit(&table, "h.example.com", "/api", &[("x-a", "2")]).as_deref(),
        Some("ns/exact-root")
    );
    assert_eq!(
        hit(&table, "h.example.com", "/api", &[]).as_deref(),
        Some("ns/wild")
    );
    // Path fails in every tier.
    assert_eq!(hit(&table, "h.example.com", "/other", &[]), None);
}

#[test]
fn header_matching_is_case_insensitive_on_names_and_any_value_may_match() {
    let table = RouteTable::build(vec![route(
        "r",
        vec![with_header(rule(&["h"], &["/"]), "X-Tenant", Some("blue"))],
    )]);
    assert_eq!(
        hit(
            &table,
            "h",
            "/",
            &[("x-tenant", "red"), ("x-tenant", "blue")]
        )
        .as_deref(),
        Some("ns/r")
    );
    assert_eq!(
        hit(&table, "h", "/", &[("x-tenant", "Blue")]),
        None,
        "values are case-sensitive"
    );
}

// ---------------------------------------------------------------------------------------------
// Host normalisation

#[test]
fn host_port_case_and_trailing_dot_are_ignored() {
    let table = RouteTable::build(vec![
        route("exact", vec![rule(&["App.Example.com"], &["/"])]),
        route("wild", vec![rule(&["*.Example.COM."], &["/"])]),
    ]);
    for host in [
        "app.example.com",
        "APP.EXAMPLE.COM",
        "app.example.com.",
        "app.example.com:8080",
        "App.Example.Com.:443",
    ] {
        assert_eq!(
            hit(&table, host, "/", &[]).as_deref(),
            Some("ns/exact"),
            "{host}"
        );
    }
    assert_eq!(
        hit(&table, "X.EXAMPLE.com.:80", "/", &[]).as_deref(),
        Some("ns/wild")
    );
}

#[test]
fn ipv6_hosts() {
    let table = RouteTable::build(vec![
        route("bracketed", vec![rule(&["[::1]"], &["/"])]),
        route("bare", vec![rule(&["fe80::1"], &["/"])]),
    ]);
    assert_eq!(
        hit(&table, "[::1]:8080", "/", &[]).as_deref(),
        Some("ns/bracketed")
    );
    assert_eq!(
        hit(&table, "[::1]", "/", &[]).as_deref(),
        Some("ns/bracketed")
    );
    assert_eq!(
        hit(&table, "::1", "/", &[]).as_deref(),
        Some("ns/bracketed")
    );
    assert_eq!(
        hit(&table, "[FE80::1]:443", "/", &[]).as_deref(),
        Some("ns/bare")
    );
    assert_eq!(hit(&table, "[::2]:8080", "/", &[]), None);
}

#[test]
fn overlong_host_matches_only_catch_all() {
    let long = format!("{}.example.com", "a".repeat(300));
    let table = RouteTable::build(vec![route("wild", vec![rule(&["*.example.com"], &["/"])])]);
    assert_eq!(hit(&table, &long, "/", &[]), None);
    let table = RouteTable::build(vec![
        route("wild", vec![rule(&["*.example.com"], &["/"])]),
        route("any", vec![rule(&["*"], &["/"])]),
    ]);
    assert_eq!(hit(&table, &long, "/", &[]).as_deref(), Some("ns/any"));
}

#[test]
fn no_match_returns_none() {
    let empty: RouteTable<()> = RouteTable::default();
    assert!(empty.is_empty());
    assert!(empty.lookup("h", "/", &HeaderMap::new()).is_none());

    let table = RouteTable::build(vec![route("r", vec![rule(&["h"], &["/api"])])]);
    assert_eq!(hit(&table, "unknown", "/api", &[]), None);
    assert_eq!(hit(&table, "h", "/", &[]), None);
    assert_eq!(hit(&table, "", "/api", &[]), None);
}

#[test]
fn accessors() {
    let table = RouteTable::build(vec![route("a", vec![]), route("b", vec![rule(&[], &[])])]);
    assert_eq!(table.len(), 2);
    assert_eq!(table.routes()[1].key.as_str(), "ns/b");
    assert!(table.get(&RouteKey::new("ns", "a")).is_some());
    assert!(table.get(&RouteKey::new("ns", "c")).is_none());
    // A route without rules never matches; a rule without hosts and paths matches everything.
    assert_eq!(hit(&table, "anything", "/x", &[]).as_deref(), Some("ns/b"));
}

// ---------------------------------------------------------------------------------------------
// Conflicts

#[test]
fn conflicts_report_the_younger_route_as_loser() {
    let table = RouteTable::build(vec![
        route_in("ns", "young", 20, vec![rule(&["A.com"], &["/api"])]),
        route_in("ns", "old", 10, vec![rule(&["a.com", "b.com"], &["/api"])]),
        route_in("ns", "other-path", 5, vec![rule(&["a.com"], &["/api/v2"])]),
        route_in("ns", "same-age", 20, vec![rule(&["b.com"], &["/api"])]),
    ]);
    assert_eq!(
        table.conflicts(),
        vec![
            RouteConflict {
                winner: RouteKey::new("ns", "old"),
                loser: RouteKey::new("ns", "same-age"),
                host: "b.com".into(),
                path: "/api".into(),
            },
            RouteConflict {
                winner: RouteKey::new("ns", "old"),
                loser: RouteKey::new("ns", "young"),
                host: "a.com".into(),
                path: "/api".into(),
            },
        ]
    );
}

#[test]
fn conflicts_consider_header_sets_and_catch_all_forms() {
    let table = RouteTable::build(vec![
        route_in(
            "ns",
            "a",
            1,
            vec![with_header(rule(&[], &[]), "X-A", Some("1"))],
        ),
        route_in(
            "ns",
            "b",
            2,
            vec![with_header(rule(&["*"], &["/"]), "x-a", Some("1"))],
        ),
        route_in(
            "ns",
            "c",
            3,
            vec![with_header(rule(&["*"], &["/"]), "x-a", Some("2"))],
        ),
        route_in("ns", "d", 4, vec![rule(&["*"], &["/"])]),
    ]);
    let conflicts = table.conflicts();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(
        (conflicts[0].winner.name(), conflicts[0].loser.name()),
        ("a", "b")
    );
    assert_eq!(conflicts[0].host, "*");
}

#[test]
fn no_conflict_within_one_route_or_after_dropping_a_shadowed_http_scaled_object() {
    let mut hso = route_in("ns", "app", 0, vec![rule(&["h"], &["/"])]);
    hso.kind = RouteKind::HttpScaledObject;
    let table = RouteTable::build(vec![
        hso,
        route_in(
            "ns",
            "app",
            5,
            vec![rule(&["h"], &["/"]), rule(&["h"], &["/"])],
        ),
    ]);
    assert!(table.conflicts().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Shared table

#[test]
fn shared_table_readers_see_the_old_or_the_new_table() {
    let old = RouteTable::build(vec![Route {
        target: "old",
        ..route("r", vec![rule(&["h"], &["/"])])
    }]);
    let new = RouteTable::build(vec![Route {
        target: "new",
        ..route("r", vec![rule(&["h"], &["/"])])
    }]);
    let shared = Arc::new(SharedRouteTable::new(old));
    let held = shared.load_full();
    let stop = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen_new = false;
                // Bounded by a deadline; normally ends right after the writer's store.
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let table = shared.load();
                    let target = table.lookup("h", "/", &HeaderMap::new()).map(|r| r.target);
                    assert!(matches!(target, Some("old" | "new")), "{target:?}");
                    seen_new |= target == Some("new");
                    if stop.load(Ordering::Acquire) && seen_new {
                        break;
                    }
                }
                seen_new
            })
        })
        .collect();

    shared.store(new);
    stop.store(true, Ordering::Release);
    for reader in readers {
        assert!(
            reader.join().unwrap(),
            "every reader eventually sees the new table"
        );
    }
    assert_eq!(
        shared
            .load()
            .lookup("h", "/", &HeaderMap::new())
            .map(|r| r.target),
        Some("new")
    );
    // A reader holding the old table keeps it intact.
    assert_eq!(
        held.lookup("h", "/", &HeaderMap::new()).map(|r| r.target),
        Some("old")
    );
}

// ---------------------------------------------------------------------------------------------
// Property test against a brute-force reference

const TABLE_HOSTS: &[&str] = &[
    "a.example.com",
    "b.a.example.com",
    "*.example.com",
    "*.a.example.com",
    "example.com",
    "*",
    "[::1]",
    "Other.org",
];
const TABLE_PATHS: &[&str] = &["/", "/a", "/ab", "/a/b", "/b", ""];
const HEADER_NAMES: &[&str] = &["x-a", "X-B"];
const HEADER_VALUES: &[Option<&str>] = &[None, Some("1"), Some("2")];

const REQUEST_HOSTS: &[&str] = &[
    "a.example.com",
    "A.EXAMPLE.com.",
    "a.example.com:8080",
    "b.a.example.com",
    "c.b.a.example.com",
    "example.com",
    "other.org:1",
    "[::1]:80",
    "::1",
    "nope",
    "",
];
const REQUEST_PATHS: &[&str] = &["/", "/a", "/ab", "/abc", "/a/b/c", "/b", "/c", ""];
const REQUEST_HEADER_VALUES: &[&[&str]] = &[&[], &["1"], &["2"], &["2", "1"]];

fn arb_rule() -> impl Strategy<Value = RouteRule> {
    (
        prop::collection::vec(prop::sample::select(TABLE_HOSTS), 0..3),
        prop::collection::vec(prop::sample::select(TABLE_PATHS), 0..3),
        prop::collection::vec(
            (
                prop::sample::select(HEADER_NAMES),
                prop::sample::select(HEADER_VALUES),
            ),
            0..3,
        ),
    )
        .prop_map(|(hosts, paths, headers)| RouteRule {
            hosts: hosts.into_iter().map(str::to_owned).collect(),
            paths: paths.into_iter().map(str::to_owned).collect(),
            headers: headers
                .into_iter()
                .map(|(name, value)| HeaderMatch {
                    name: name.to_owned(),
                    value: value.map(str::to_owned),
                })
                .collect(),
        })
}

fn arb_routes() -> impl Strategy<Value = Vec<Route<usize>>> {
    prop::collection::vec(
        (
            any::<bool>(),
            prop::sample::select(&["n1", "n2"][..]),
            prop::sample::select(&["r1", "r2", "r3"][..]),
            0..3i64,
            prop::collection::vec(arb_rule(), 0..3),
        ),
        0..8,
    )
    .prop_map(|specs| {
        let mut routes: Vec<Route<usize>> = Vec::new();
        for (is_ir, namespace, name, created, rules) in specs {
            let kind = if is_ir {
                RouteKind::InterceptorRoute
            } else {
                RouteKind::HttpScaledObject
            };
            let key = RouteKey::new(namespace, name);
            // One object per (kind, key), as in a cluster.
            if routes.iter().any(|r| r.kind == kind && r.key == key) {
                continue;
            }
            let target = routes.len();
            routes.push(Route {
                key,
                kind,
                created,
                rules,
                target,
            });
        }
        routes
    })
}

fn arb_request() -> impl Strategy<
    Value = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    ),
> {
    (
        prop::sample::select(REQUEST_HOSTS),
        prop::sample::select(REQUEST_PATHS),
        prop::sample::select(REQUEST_HEADER_VALUES),
        prop::sample::select(REQUEST_HEADER_VALUES),
    )
        .prop_map(|(host, path, a, b)| {
            let mut pairs: Vec<_> = a.iter().map(|v| ("x-a", *v)).collect();
            pairs.extend(b.iter().map(|v| ("x-b", *v)));
            (host, path, pairs)
        })
}

/// Host normalisation written independently of the crate's.
fn reference_host(host: &str) -> String {
    let mut host = host.to_ascii_lowercase();
    if host.starts_with('[') {
        if let Some(end) = host.find(']') {
            host = host[1..end].to_owned();
        }
    } else if host.matches(':').count() == 1 {
        host.truncate(host.find(':').unwrap());
    }
    if host.ends_with('.') {
        host.pop();
    }
    host
}

/// Host tier of `pattern` for `host` (smaller is tried first), or `None` when it does not match.
fn reference_tier(pattern: &str, host: &str) -> Option<(u8, Reverse<usize>)> {
    let pattern = reference_host(pattern);
    if pattern.is_empty() || pattern == "*" {
        Some((2, Reverse(0)))
    } else if host.len() > 253 {
        None
    } else if let Some(suffix) = pattern.strip_prefix("*.") {
        host.ends_with(&format!(".{suffix}"))
            .then_some((1, Reverse(suffix.len())))
    } else {
        (pattern == host).then_some((0, Reverse(0)))
    }
}

fn reference_headers_match(rule: &RouteRule, request: &[(&str, &str)]) -> bool {
    rule.headers.iter().all(|matcher| {
        request.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case(&matcher.name)
                && matcher.value.as_deref().is_none_or(|want| want == *value)
        })
    })
}

/// Enumerates every (route, rule, host, path) candidate and picks the best by precedence.
fn reference_lookup<'r>(
    routes: &'r [Route<usize>],
    host: &str,
    path: &str,
    request: &[(&str, &str)],
) -> Option<&'r Route<usize>> {
    let host = reference_host(host);
    let path = if path.is_empty() { "/" } else { path };
    let shadowed = |route: &Route<usize>| {
        route.kind == RouteKind::HttpScaledObject
            && routes
                .iter()
                .any(|r| r.kind == RouteKind::InterceptorRoute && r.key == route.key)
    };
    let mut best = None;
    for route in routes.iter().filter(|r| !shadowed(r)) {
        for rule in &route.rules {
            if !reference_headers_match(rule, request) {
                continue;
            }
            let hosts: Vec<&str> = if rule.hosts.is_empty() {
                vec!["*"]
            } else {
                rule.hosts.iter().map(String::as_str).collect()
            };
            let paths: Vec<&str> = if rule.paths.is_empty() {
                vec!["/"]
            } else {
                rule.paths
                    .iter()
                    .map(|p| if p.is_empty() { "/" } else { p.as_str() })
                    .collect()
            };
            for pattern in &hosts {
                let Some(tier) = reference_tier(pattern, &host) else {
                    continue;
                };
                for prefix in paths.iter().filter(|p| path.starts_with(**p)) {
                    let valued = rule.headers.iter().filter(|h| h.value.is_some()).count();
                    let rank = (
                        tier,
                        Reverse(prefix.len()),
                        Reverse(rule.headers.len()),
                        Reverse(valued),
                        route.created,
                        route.key.namespace().to_owned(),
                        route.key.name().to_owned(),
                    );
                    if best.as_ref().is_none_or(|(best_rank, _)| rank < *best_rank) {
                        best = Some((rank, route));
                    }
                }
            }
        }
    }
    best.map(|(_, route)| route)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn lookup_equals_brute_force_reference(
        routes in arb_routes(),
        requests in prop::collection::vec(arb_request(), 1..16),
    ) {
        let table = RouteTable::build(routes.clone());
        for (host, path, pairs) in &requests {
            let got = table
                .lookup(host, path, &headers(pairs))
                .map(|r| (r.kind, r.key.clone()));
            let want = reference_lookup(&routes, host, path, pairs).map(|r| (r.kind, r.key.clone()));
            prop_assert_eq!(got, want, "host={:?} path={:?} headers={:?}", host, path, pairs);
        }
    }
}
