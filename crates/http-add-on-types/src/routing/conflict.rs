//! Conflict detection for the operator: routes claiming exactly the same match.

use std::collections::{BTreeMap, HashMap};

use super::host::HostPattern;
use super::{Route, RouteKey};

/// Two routes claiming the same (host, path prefix, header set).
///
/// The winner keeps serving the claim; the operator marks the loser
/// `Ready=False, reason=RouteConflict`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteConflict {
    /// The route keeping the claim: the older one, then the first by namespace/name.
    pub winner: RouteKey,
    /// The younger route, which loses the claim.
    pub loser: RouteKey,
    /// A contested host, normalised (`*` = catch-all); the smallest if several are.
    pub host: String,
    /// A contested path prefix (with the host above).
    pub path: String,
}

/// A claim: normalised host, path prefix, sorted header set (lower-case names).
type Claim = (String, String, Vec<(String, Option<String>)>);

/// Finds the conflicts among `routes`. Routes with the same key never conflict with each other.
pub(super) fn find_conflicts<T>(routes: &[Route<T>]) -> Vec<RouteConflict> {
    let mut claims: HashMap<Claim, Vec<usize>> = HashMap::new();
    for (index, route) in routes.iter().enumerate() {
        for rule in &route.rules {
            let mut headers: Vec<_> = rule
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
                .collect();
            headers.sort();
            headers.dedup();
            for host in rule.host_patterns() {
                let host = HostPattern::parse(host);
                if host == HostPattern::TooLong {
                    continue;
                }
                let host = host.canonical();
                for path in rule.path_prefixes() {
                    claims
                        .entry((host.clone(), path.to_owned(), headers.clone()))
                        .or_default()
                        .push(index);
                }
            }
        }
    }

    // (loser, winner) → smallest contested (host, path).
    let mut pairs: BTreeMap<(RouteKey, RouteKey), (String, String)> = BTreeMap::new();
    for ((host, path, _), mut claimants) in claims {
        claimants.sort_unstable();
        claimants.dedup();
        let Some(winner) = claimants.iter().copied().min_by(|&a, &b| {
            let (a, b) = (&routes[a], &routes[b]);
            (a.created, &a.key, a.kind).cmp(&(b.created, &b.key, b.kind))
        }) else {
            continue;
        };
        let winner = &routes[winner].key;
        for &loser in &claimants {
            let loser = &routes[loser].key;
            if loser == winner {
                continue;
            }
            let place = (host.clone(), path.clone());
            pairs
                .entry((loser.clone(), winner.clone()))
                .and_modify(|seen| {
                    if place < *seen {
                        *seen = place.clone();
                    }
                })
                .or_insert(place);
        }
    }
    pairs
        .into_iter()
        .map(|((loser, winner), (host, path))| RouteConflict {
            winner,
            loser,
            host,
            path,
        })
        .collect()
}
