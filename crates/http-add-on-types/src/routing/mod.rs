//! The route table: maps a request (host, path, headers) to the route that serves it.
//!
//! HTTPScaledObjects and InterceptorRoutes are both converted into [`Route`]s and fed into one
//! immutable [`RouteTable`]; the interceptor reads it through a [`SharedRouteTable`] that is
//! swapped atomically whenever the watched objects change.
//!
//! # Precedence (DESIGN.md §3)
//!
//! Candidates are tried in this order and the first whose headers match wins:
//!
//! 1. **Host tier.** The exact host; then wildcard hosts from the most specific to the least
//!    (`*.bar.example.com` before `*.example.com`); then the catch-all (`*`, or a rule without
//!    hosts). Each wildcard suffix is its own tier. When nothing in a tier matches (path or
//!    headers), the next tier is tried.
//! 2. Inside a tier: the **longest path prefix**. Prefixes are plain string prefixes of the raw
//!    request path (as upstream does): `/api` also matches `/apiv2`. A rule without paths has the
//!    prefix `/`.
//! 3. Among equal paths: **more header matchers** first, then **more matchers with a value**,
//!    then the **older** route (`created`), then `namespace/name` lexically.
//!
//! If an InterceptorRoute and an HTTPScaledObject share namespace/name, the HTTPScaledObject is
//! dropped when the table is built, so the InterceptorRoute wins.
//!
//! # Normalisation
//!
//! Hosts (in routes and in requests) lose a `:port` suffix (`[::1]:8080` → `::1`; brackets of an
//! IPv6 literal are removed; a bare IPv6 address such as `::1` is left alone), one trailing dot,
//! and are compared ASCII case-insensitively. A request host longer than 253 bytes matches only
//! the catch-all tier. A wildcard `*.example.com` matches `a.example.com` and `a.b.example.com`,
//! not `example.com`. An empty request path is treated as `/`; an empty path prefix in a route
//! as `/`. Header names are case-insensitive; a header matcher with a value matches when any of
//! the request's values for that name equals it byte for byte.

mod conflict;
mod host;
mod key;
mod shared;
mod table;

pub use conflict::RouteConflict;
pub use key::RouteKey;
pub use shared::SharedRouteTable;
pub use table::{RequestHeaders, RouteTable};

/// Which kind of object a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// An `InterceptorRoute` (`http.keda.sh/v1beta1`).
    InterceptorRoute,
    /// An `HTTPScaledObject` (`http.keda.sh/v1alpha1`).
    HttpScaledObject,
}

/// One header condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Required value (exact, case-sensitive); `None` means the header only has to be present.
    pub value: Option<String>,
}

/// One way to reach a route: any host AND any path AND all headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteRule {
    /// Hosts, exact or `*.suffix`; empty or `*` = catch-all.
    pub hosts: Vec<String>,
    /// Path prefixes; empty = `/`.
    pub paths: Vec<String>,
    /// Header conditions; all must match.
    pub headers: Vec<HeaderMatch>,
}

/// A routable object: its identity, its rules (OR-ed) and what the caller routes to.
#[derive(Debug, Clone)]
pub struct Route<T> {
    /// `<namespace>/<name>` of the object.
    pub key: RouteKey,
    /// The kind of object.
    pub kind: RouteKind,
    /// Creation time in unix seconds; the older route wins ties.
    pub created: i64,
    /// The rules; a request matching any of them is routed here.
    pub rules: Vec<RouteRule>,
    /// The caller's payload (backend service, timeouts, …).
    pub target: T,
}

impl RouteRule {
    /// The hosts as written, with the catch-all `*` for an empty list.
    fn host_patterns(&self) -> impl Iterator<Item = &str> {
        let catch_all = self.hosts.is_empty().then_some("*");
        self.hosts.iter().map(String::as_str).chain(catch_all)
    }

    /// The path prefixes, with `/` for an empty list or an empty prefix.
    fn path_prefixes(&self) -> impl Iterator<Item = &str> {
        let root = self.paths.is_empty().then_some("/");
        self.paths
            .iter()
            .map(|p| if p.is_empty() { "/" } else { p.as_str() })
            .chain(root)
    }
}
