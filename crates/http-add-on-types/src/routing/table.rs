//! [`RouteTable`]: the immutable matcher, built once and read without locks or allocation.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

use http::{HeaderMap, HeaderName};

use super::conflict::{self, RouteConflict};
use super::host::{self, HostPattern, MAX_HOST_LEN};
use super::{Route, RouteKey, RouteKind, RouteRule};

/// Above this many distinct path prefixes for one host, a lookup hashes the request path cut at
/// each known prefix length instead of testing every prefix.
const PATH_SCAN_LIMIT: usize = 8;

/// Unsorted candidates of one host tier: (path prefix, rule index).
type Candidates = Vec<(Box<[u8]>, usize)>;

/// An immutable routing table; see the [module docs](super) for the precedence rules.
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
    by_key: HashMap<RouteKey, usize>,
    rules: Vec<CompiledRule>,
    /// Normalised exact host → its candidates.
    exact: HashMap<Box<[u8]>, HostRoutes>,
    /// Normalised suffix of `*.suffix` → its candidates.
    wildcard: HashMap<Box<[u8]>, HostRoutes>,
    catch_all: HostRoutes,
}

/// One rule of one route with its header names parsed.
struct CompiledRule {
    route: usize,
    headers: Box<[CompiledHeader]>,
    /// How many of `headers` require a value.
    valued: usize,
}

struct CompiledHeader {
    name: HeaderName,
    value: Option<Box<[u8]>>,
}

/// The candidates of one host tier, longest path prefix first.
#[derive(Default)]
struct HostRoutes {
    /// Rule indices, sorted by path length (longest first), path, then rule precedence.
    rules: Vec<usize>,
    /// Distinct path prefixes, longest first; each owns the range `start..end` of `rules`.
    paths: Vec<PathGroup>,
    /// Hash index over `paths`, present when there are more than [`PATH_SCAN_LIMIT`].
    index: Option<PathIndex>,
}

struct PathGroup {
    prefix: Box<[u8]>,
    start: usize,
    end: usize,
}

struct PathIndex {
    /// Prefix → index into `HostRoutes::paths`.
    by_prefix: HashMap<Box<[u8]>, usize>,
    /// Distinct prefix lengths, longest first.
    lengths: Box<[usize]>,
}

impl<T> RouteTable<T> {
    /// Builds the table. An HTTPScaledObject whose namespace/name is also an InterceptorRoute
    /// is dropped; a rule with an invalid header name can never match and is left out.
    pub fn build(routes: Vec<Route<T>>) -> Self {
        let routes = drop_shadowed(routes);
        let mut by_key = HashMap::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            by_key.entry(route.key.clone()).or_insert(index);
        }

        let mut rules = Vec::new();
        let mut exact: HashMap<Box<[u8]>, Candidates> = HashMap::new();
        let mut wildcard: HashMap<Box<[u8]>, Candidates> = HashMap::new();
        let mut catch_all = Vec::new();
        for (route_index, route) in routes.iter().enumerate() {
            for rule in &route.rules {
                let Some(compiled) = compile_rule(route_index, route, rule) else {
                    continue;
                };
                let rule_index = rules.len();
                rules.push(compiled);
                for host in rule.host_patterns() {
                    let bucket = match HostPattern::parse(host) {
                        HostPattern::Exact(host) => exact.entry(host).or_default(),
                        HostPattern::Wildcard(suffix) => wildcard.entry(suffix).or_default(),
                        HostPattern::CatchAll => &mut catch_all,
                        HostPattern::TooLong => {
                            tracing::warn!(route = %route.key, host, "host longer than 253 bytes never matches");
                            continue;
                        }
                    };
                    bucket.extend(
                        rule.path_prefixes()
                            .map(|path| (Box::from(path.as_bytes()), rule_index)),
                    );
                }
            }
        }

        let order = |a: usize, b: usize| rule_precedence(&routes, &rules, a, b);
        let finish_all = |map: HashMap<Box<[u8]>, Candidates>| {
            map.into_iter()
                .map(|(host, entries)| (host, HostRoutes::new(entries, order)))
                .collect()
        };
        let exact = finish_all(exact);
        let wildcard = finish_all(wildcard);
        let catch_all = HostRoutes::new(catch_all, order);
        Self {
            routes,
            by_key,
            rules,
            exact,
            wildcard,
            catch_all,
        }
    }

    /// The route serving a request, or `None` (→ 404).
    ///
    /// `host` is the Host header (or URI authority) as received, port and all; `path` is the
    /// request path without the query string. Never allocates.
    pub fn lookup<H: RequestHeaders + ?Sized>(
        &self,
        host: &str,
        path: &str,
        headers: &H,
    ) -> Option<&Route<T>> {
        let path = if path.is_empty() { "/" } else { path }.as_bytes();
        let mut buf = [0; MAX_HOST_LEN];
        if let Some(host) = host::normalize_into(host, &mut buf) {
            if let Some(found) = self
                .exact
                .get(host)
                .and_then(|tier| self.find(tier, path, headers))
            {
                return Some(found);
            }
            if !self.wildcard.is_empty() {
                // Every suffix after a dot, longest (most specific) first.
                let suffixes = host
                    .iter()
                    .enumerate()
                    .filter(|&(_, &byte)| byte == b'.')
                    .map(|(dot, _)| &host[dot + 1..]);
                for suffix in suffixes {
                    if let Some(found) = self
                        .wildcard
                        .get(suffix)
                        .and_then(|tier| self.find(tier, path, headers))
                    {
                        return Some(found);
                    }
                }
            }
        }
        self.find(&self.catch_all, path, headers)
    }

    /// The route with this namespace/name.
    pub fn get(&self, key: &RouteKey) -> Option<&Route<T>> {
        self.by_key.get(key).map(|&index| &self.routes[index])
    }

    /// All routes in the table (shadowed HTTPScaledObjects excluded), in input order.
    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Pairs of routes claiming the same host, path prefix and header set; the younger one of
    /// each pair loses (see [`RouteConflict`]). Sorted by loser, then winner.
    pub fn conflicts(&self) -> Vec<RouteConflict> {
        conflict::find_conflicts(&self.routes)
    }

    /// The first candidate of `tier` matching `path` and `headers`.
    fn find<H: RequestHeaders + ?Sized>(
        &self,
        tier: &HostRoutes,
        path: &[u8],
        headers: &H,
    ) -> Option<&Route<T>> {
        match &tier.index {
            None => tier
                .paths
                .iter()
                .filter(|group| path.starts_with(&group.prefix))
                .find_map(|group| self.first_match(tier, group, headers)),
            Some(index) => index
                .lengths
                .iter()
                .filter(|&&len| len <= path.len())
                .filter_map(|&len| index.by_prefix.get(&path[..len]))
                .find_map(|&group| self.first_match(tier, &tier.paths[group], headers)),
        }
    }

    fn first_match<H: RequestHeaders + ?Sized>(
        &self,
        tier: &HostRoutes,
        group: &PathGroup,
        headers: &H,
    ) -> Option<&Route<T>> {
        tier.rules[group.start..group.end]
            .iter()
            .map(|&rule| &self.rules[rule])
            .find(|rule| rule.matches(headers))
            .map(|rule| &self.routes[rule.route])
    }
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self::build(Vec::new())
    }
}

impl<T> fmt::Debug for RouteTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes.len())
            .field("exact_hosts", &self.exact.len())
            .field("wildcard_hosts", &self.wildcard.len())
            .field("catch_all_candidates", &self.catch_all.rules.len())
            .finish()
    }
}

impl CompiledRule {
    fn matches<H: RequestHeaders + ?Sized>(&self, headers: &H) -> bool {
        self.headers.iter().all(|matcher| match &matcher.value {
            None => headers.contains(&matcher.name),
            Some(value) => headers.has_value(&matcher.name, value),
        })
    }
}

/// Request headers a lookup matches routes' header rules against.
pub trait RequestHeaders {
    /// Whether a header named `name` is present.
    fn contains(&self, name: &HeaderName) -> bool;
    /// Whether any value of the header `name` equals `value` byte for byte.
    fn has_value(&self, name: &HeaderName, value: &[u8]) -> bool;
}

impl RequestHeaders for HeaderMap {
    fn contains(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }

    fn has_value(&self, name: &HeaderName, value: &[u8]) -> bool {
        self.get_all(name).iter().any(|got| got.as_bytes() == value)
    }
}

impl HostRoutes {
    fn new(mut entries: Candidates, order: impl Fn(usize, usize) -> Ordering) -> Self {
        entries.sort_by(|(path_a, a), (path_b, b)| {
            path_b
                .len()
                .cmp(&path_a.len())
                .then_with(|| path_a.cmp(path_b))
                .then_with(|| order(*a, *b))
        });
        // A host or path listed twice in one rule.
        entries.dedup();

        let mut rules = Vec::with_capacity(entries.len());
        let mut paths: Vec<PathGroup> = Vec::new();
        for (prefix, rule) in entries {
            match paths.last_mut() {
                Some(group) if group.prefix == prefix => group.end += 1,
                _ => paths.push(PathGroup {
                    prefix,
                    start: rules.len(),
                    end: rules.len() + 1,
                }),
            }
            rules.push(rule);
        }

        let index = (paths.len() > PATH_SCAN_LIMIT).then(|| {
            let by_prefix = paths
                .iter()
                .enumerate()
                .map(|(index, group)| (group.prefix.clone(), index))
                .collect();
            let mut lengths: Vec<usize> = paths.iter().map(|group| group.prefix.len()).collect();
            lengths.dedup(); // already sorted, longest first
            PathIndex {
                by_prefix,
                lengths: lengths.into(),
            }
        });
        Self {
            rules,
            paths,
            index,
        }
    }
}

/// Drops each HTTPScaledObject whose namespace/name is also an InterceptorRoute.
fn drop_shadowed<T>(mut routes: Vec<Route<T>>) -> Vec<Route<T>> {
    let interceptor_routes: HashSet<RouteKey> = routes
        .iter()
        .filter(|route| route.kind == RouteKind::InterceptorRoute)
        .map(|route| route.key.clone())
        .collect();
    if !interceptor_routes.is_empty() {
        routes.retain(|route| {
            let shadowed = route.kind == RouteKind::HttpScaledObject
                && interceptor_routes.contains(&route.key);
            if shadowed {
                tracing::debug!(route = %route.key, "HTTPScaledObject shadowed by an InterceptorRoute of the same name");
            }
            !shadowed
        });
    }
    routes
}

fn compile_rule<T>(route_index: usize, route: &Route<T>, rule: &RouteRule) -> Option<CompiledRule> {
    let mut headers = Vec::with_capacity(rule.headers.len());
    for matcher in &rule.headers {
        let Ok(name) = HeaderName::from_bytes(matcher.name.as_bytes()) else {
            tracing::warn!(route = %route.key, header = %matcher.name, "invalid header name; the rule never matches");
            return None;
        };
        let value = matcher
            .value
            .as_deref()
            .map(|value| Box::from(value.as_bytes()));
        headers.push(CompiledHeader { name, value });
    }
    let valued = headers.iter().filter(|h| h.value.is_some()).count();
    Some(CompiledRule {
        route: route_index,
        headers: headers.into(),
        valued,
    })
}

/// Precedence among candidates with the same path prefix: more header matchers, more valued
/// matchers, older route, namespace/name; then input order for a stable result.
fn rule_precedence<T>(routes: &[Route<T>], rules: &[CompiledRule], a: usize, b: usize) -> Ordering {
    let (rule_a, rule_b) = (&rules[a], &rules[b]);
    let (route_a, route_b) = (&routes[rule_a.route], &routes[rule_b.route]);
    rule_b
        .headers
        .len()
        .cmp(&rule_a.headers.len())
        .then(rule_b.valued.cmp(&rule_a.valued))
        .then(route_a.created.cmp(&route_b.created))
        .then_with(|| route_a.key.cmp(&route_b.key))
        .then(route_a.kind.cmp(&route_b.kind))
        .then(a.cmp(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::HeaderMatch;

    fn route(name: &str, created: i64, rules: Vec<RouteRule>) -> Route<()> {
        Route {
            key: RouteKey::new("ns", name),
            kind: RouteKind::InterceptorRoute,
            created,
            rules,
            target: (),
        }
    }

    fn rule(hosts: &[&str], paths: &[&str]) -> RouteRule {
        RouteRule {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            headers: Vec::new(),
        }
    }

    fn found(table: &RouteTable<()>, host: &str, path: &str) -> Option<String> {
        table
            .lookup(host, path, &HeaderMap::new())
            .map(|r| r.key.name().to_owned())
    }

    #[test]
    fn many_paths_use_the_index_and_keep_longest_prefix() {
        let routes: Vec<_> = (0..50)
            .map(|i| {
                route(
                    &format!("r{i}"),
                    0,
                    vec![rule(&["h"], &[&"/a".repeat(i + 1)])],
                )
            })
            .collect();
        let table = RouteTable::build(routes);
        let tier = &table.exact[b"h".as_slice()];
        assert!(tier.index.is_some(), "50 distinct paths must be indexed");
        assert_eq!(found(&table, "h", "/a/a/a").as_deref(), Some("r2"));
        assert_eq!(found(&table, "h", "/a/a/ax").as_deref(), Some("r2"));
        assert_eq!(found(&table, "h", &"/a".repeat(80)).as_deref(), Some("r49"));
        assert_eq!(found(&table, "h", "/b"), None);
    }

    #[test]
    fn indexed_tier_falls_back_to_shorter_prefix_when_headers_fail() {
        let mut routes: Vec<_> = (0..20)
            .map(|i| {
                route(
                    &format!("p{i}"),
                    0,
                    vec![rule(&["h"], &[&format!("/x{i}")])],
                )
            })
            .collect();
        let mut guarded = rule(&["h"], &["/x1/deep"]);
        guarded.headers.push(HeaderMatch {
            name: "X-Need".into(),
            value: None,
        });
        routes.push(route("guarded", 0, vec![guarded]));
        let table = RouteTable::build(routes);
        assert!(table.exact[b"h".as_slice()].index.is_some());
        assert_eq!(found(&table, "h", "/x1/deep/er").as_deref(), Some("p1"));
        let mut headers = HeaderMap::new();
        headers.insert("x-need", "1".parse().unwrap());
        let hit = table.lookup("h", "/x1/deep/er", &headers).unwrap();
        assert_eq!(hit.key.name(), "guarded");
    }

    #[test]
    fn duplicate_hosts_and_paths_in_a_rule_are_deduplicated() {
        let table = RouteTable::build(vec![route(
            "dup",
            0,
            vec![rule(&["a.com", "A.com", "a.com."], &["/", "/", ""])],
        )]);
        let tier = &table.exact[b"a.com".as_slice()];
        assert_eq!(tier.rules.len(), 1);
        assert_eq!(found(&table, "a.com", "/x").as_deref(), Some("dup"));
    }

    #[test]
    fn invalid_header_name_drops_only_that_rule() {
        let mut bad = rule(&["h"], &["/bad"]);
        bad.headers.push(HeaderMatch {
            name: "bad header".into(),
            value: None,
        });
        let table = RouteTable::build(vec![route("r", 0, vec![bad, rule(&["h"], &["/good"])])]);
        assert_eq!(table.rules.len(), 1);
        assert_eq!(found(&table, "h", "/bad"), None);
        assert_eq!(found(&table, "h", "/good").as_deref(), Some("r"));
    }

    #[test]
    fn empty_request_path_is_root() {
        let table = RouteTable::build(vec![route("r", 0, vec![rule(&["h"], &[])])]);
        assert_eq!(found(&table, "h", "").as_deref(), Some("r"));
    }
}
