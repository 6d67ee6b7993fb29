//! Object storage: objects keyed by (group, plural, namespace, name), one global
//! resourceVersion counter, and a bounded history of change events broadcast to watchers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// Storage key of an object: (group, plural, namespace or "", name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// API group.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace, "" for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// Kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and broadcast to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Key of the changed object.
    pub key: ObjKey,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletions: the last state, with the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change (modifications and deletions).
    pub old: Option<Arc<Value>>,
}

/// The object store.
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<ObjKey, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Highest rv no longer in the history (0 if nothing was dropped).
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Store {
    /// An empty store keeping at most `history_limit` events.
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(history_limit.clamp(16, 65_536));
        Self {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            tx,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Allocates the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// The highest resourceVersion dropped from the history.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Gets an object.
    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// All objects of a type, optionally in one namespace.
    pub fn list<'a>(
        &'a self,
        group: &'a str,
        plural: &'a str,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        // Keys sort by group, plural, namespace, name: scan only this type's (and namespace's) range.
        let start = ObjKey {
            group: group.to_string(),
            plural: plural.to_string(),
            namespace: ns.unwrap_or_default().to_string(),
            name: String::new(),
        };
        self.objects.range(start..).take_while(move |(k, _)| {
            k.group == group && k.plural == plural && ns.is_none_or(|n| k.namespace == n)
        })
    }

    /// All objects.
    pub fn all(&self) -> impl Iterator<Item = (&ObjKey, &Value)> {
        self.objects.iter()
    }

    /// Stores an object whose `metadata.resourceVersion` is already set to `rv`, recording an event.
    pub fn put(&mut self, key: ObjKey, object: Value, rv: u64) {
        let old = self.objects.insert(key.clone(), object.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rv,
            key,
            kind,
            object: Arc::new(object),
            old: old.map(Arc::new),
        });
    }

    /// Removes an object; `last` is its final state stamped with the deletion's rv.
    pub fn remove(&mut self, key: &ObjKey, last: Value, rv: u64) {
        if let Some(stored) = self.objects.remove(key) {
            self.record(Event {
                rv,
                key: key.clone(),
                kind: EventType::Deleted,
                object: Arc::new(last),
                old: Some(Arc::new(stored)),
            });
        }
    }

    /// The objects of a type (optionally in one namespace) as they were at `rv`, rebuilt by
    /// undoing the later events; `None` when the history no longer reaches back to `rv`.
    pub fn list_at(
        &self,
        group: &str,
        plural: &str,
        ns: Option<&str>,
        rv: u64,
    ) -> Option<BTreeMap<ObjKey, Value>> {
        if rv < self.compacted || rv > self.rv {
            return None;
        }
        let mut objects: BTreeMap<ObjKey, Value> = self
            .list(group, plural, ns)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ev in self.history.iter().rev().take_while(|e| e.rv > rv) {
            let k = &ev.key;
            if k.group != group || k.plural != plural || ns.is_some_and(|n| k.namespace != n) {
                continue;
            }
            match (&ev.kind, &ev.old) {
                (EventType::Added, _) => {
                    objects.remove(k);
                }
                (EventType::Modified | EventType::Deleted, Some(old)) => {
                    objects.insert(k.clone(), (**old).clone());
                }
                (EventType::Modified | EventType::Deleted, None) => {}
            }
        }
        Some(objects)
    }

    fn record(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    /// Events after `rv` still in the history.
    pub fn history_after(&self, rv: u64) -> impl Iterator<Item = &Arc<Event>> {
        self.history.iter().filter(move |e| e.rv > rv)
    }

    /// Subscribes to future events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(name: &str) -> ObjKey {
        ObjKey {
            group: String::new(),
            plural: "configmaps".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn history_is_bounded_and_records_what_was_dropped() {
        let mut store = Store::new(3);
        for i in 0..5 {
            let rv = store.next_rv();
            store.put(key(&format!("o{i}")), json!({"i": i}), rv);
        }
        // rvs 2..=6 were recorded; 2 and 3 are gone.
        assert_eq!(store.compacted(), 3);
        assert_eq!(
            store.history_after(0).map(|e| e.rv).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(store.history_after(5).count(), 1);
    }

    #[test]
    fn lists_only_the_requested_type_and_namespace() {
        let mut store = Store::new(10);
        for (plural, ns, name) in [
            ("configmaps", "a", "x"),
            ("configmaps", "b", "y"),
            ("secrets", "a", "z"),
        ] {
            let rv = store.next_rv();
            let k = ObjKey {
                group: String::new(),
                plural: plural.into(),
                namespace: ns.into(),
                name: name.into(),
            };
            store.put(k, json!({}), rv);
        }
        let names = |ns| {
            store
                .list("", "configmaps", ns)
                .map(|(k, _)| k.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(None), ["x", "y"]);
        assert_eq!(names(Some("b")), ["y"]);
        let rv = store.next_rv();
        store.remove(&key("missing"), json!({}), rv);
        assert_eq!(
            store
                .history_after(0)
                .filter(|e| e.kind == EventType::Deleted)
                .count(),
            0
        );
    }
}
