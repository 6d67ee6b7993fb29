//! [`RouteKey`]: the `<namespace>/<name>` identity of a route.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// `<namespace>/<name>` of a route — the key used everywhere for counts and metrics.
///
/// Stored as one shared string, so cloning is a reference-count increment and
/// [`as_str`](Self::as_str) yields `"ns/name"` without allocating.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    full: Arc<str>,
    slash: usize,
}

impl RouteKey {
    /// Builds the key of `namespace`/`name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        let full: Arc<str> = format!("{namespace}/{name}").into();
        Self {
            full,
            slash: namespace.len(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.full[..self.slash]
    }

    /// The object name.
    pub fn name(&self) -> &str {
        &self.full[self.slash + 1..]
    }

    /// `"<namespace>/<name>"`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl Ord for RouteKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.namespace(), self.name()).cmp(&(other.namespace(), other.name()))
    }
}

impl PartialOrd for RouteKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.full, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_display() {
        let key = RouteKey::new("default", "app");
        assert_eq!(key.namespace(), "default");
        assert_eq!(key.name(), "app");
        assert_eq!(key.as_str(), "default/app");
        assert_eq!(key.to_string(), "default/app");
        assert_eq!(format!("{key:?}"), "\"default/app\"");
    }

    #[test]
    fn orders_by_namespace_then_name() {
        // "a-b/x" < "a/y" as strings ('-' < '/'), but namespace "a" < "a-b".
        let a = RouteKey::new("a", "y");
        let ab = RouteKey::new("a-b", "x");
        assert!(a < ab);
        assert!(RouteKey::new("a", "b") < RouteKey::new("a", "c"));
        assert_eq!(RouteKey::new("a", "b"), RouteKey::new("a", "b"));
    }
}
