//! Owner-reference garbage collection and orphaning of dependents.

use serde_json::{Value, json};

use super::super::store::ObjKey;
use super::{Cluster, FOREGROUND, meta, meta_mut, meta_str, string_set};

/// The uids an object's ownerReferences point at.
fn owner_uids(obj: &Value) -> Vec<&str> {
    meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

impl Cluster {
    /// Removes ownerReferences to `uid` from every object (`propagationPolicy: Orphan`).
    pub(super) fn orphan_dependents(&mut self, uid: &str) {
        let dependents: Vec<(ObjKey, Value)> = self
            .store
            .all()
            .filter(|(_, o)| owner_uids(o).contains(&uid))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, mut v) in dependents {
            if let Some(refs) = v
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            let rv = self.store.next_rv();
            meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
            self.store.put(k, v, rv);
        }
    }

    /// Whether the owner an ownerReference names exists: the object of that kind and name (in
    /// the dependent's namespace, for a namespaced kind) with that uid, as the kube garbage
    /// collector checks. An owner of a kind this server does not know counts as present
    /// (the real collector cannot resolve it either and keeps the dependent).
    fn owner_exists(&self, dependent: &ObjKey, owner: &Value) -> bool {
        let field = |f: &str| owner.get(f).and_then(Value::as_str).unwrap_or_default();
        let group = field("apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
        let Some(rt) = self.registry.by_kind(group, field("kind")) else {
            return true;
        };
        let key = ObjKey {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                dependent.namespace.clone()
            } else {
                String::new()
            },
            name: field("name").to_string(),
        };
        // A namespaced owner of a cluster-scoped dependent is invalid, hence absent.
        !(rt.namespaced && dependent.namespace.is_empty())
            && self
                .store
                .get(&key)
                .is_some_and(|o| meta_str(o, "uid") == Some(field("uid")))
    }

    /// One garbage-collection pass, repeated until nothing changes (so chains cascade):
    /// - a dependent none of whose owners exists is deleted;
    /// - a dependent with some owners gone loses the references to them;
    /// - a terminating namespace has its objects deleted, and goes once it is empty.
    ///
    /// Returns how many objects were deleted, marked for deletion or changed.
    pub fn collect_garbage(&mut self) -> usize {
        let mut total = 0;
        loop {
            let mut orphans = vec![];
            let mut dangling = vec![];
            for (k, o) in self.store.all() {
                let Some(refs) = meta(o).get("ownerReferences").and_then(Value::as_array) else {
                    continue;
                };
                if refs.is_empty() || meta(o).get("deletionTimestamp").is_some() {
                    continue;
                }
                let live: Vec<&Value> = refs.iter().filter(|r| self.owner_exists(k, r)).collect();
                if live.is_empty() {
                    orphans.push((k.clone(), o.clone()));
                } else if live.len() < refs.len() {
                    let mut v = o.clone();
                    v["metadata"]["ownerReferences"] = json!(live);
                    dangling.push((k.clone(), v));
                }
            }
            let namespaces = self.terminating_namespaces();
            let foreground = self.foreground_owners();
            if orphans.is_empty()
                && dangling.is_empty()
                && namespaces.is_empty()
                && foreground.is_empty()
            {
                return total;
            }
            let mut changed = orphans.len() + dangling.len();
            for (k, owner) in foreground {
                changed += self.delete_dependents_first(&k, owner);
            }
            for (k, mut v) in dangling {
                let rv = self.store.next_rv();
                meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
                self.store.put(k, v, rv);
            }
            for (k, v) in orphans {
                self.delete_stored(&k, v);
            }
            for (ns_key, ns) in namespaces {
                let contained: Vec<(ObjKey, Value)> = self
                    .store
                    .all()
                    .filter(|(k, _)| k.namespace == ns_key.name)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if contained.is_empty() {
                    if super::has_finalizers(&ns) {
                        // Its own finalizers hold it; their removal wakes the collector.
                        continue;
                    }
                    if let Some(rt) = self.registry.get("", "namespaces") {
                        self.remove(&rt, &ns_key, ns);
                    }
                    changed += 1;
                    continue;
                }
                for (k, v) in contained {
                    if meta(&v).get("deletionTimestamp").is_none() {
                        self.delete_stored(&k, v);
                        changed += 1;
                    }
                }
            }
            if changed == 0 {
                // Only finalizers hold what is left; their removal wakes the collector again.
                return total;
            }
            total += changed;
        }
    }

    /// Owners in foreground deletion: marked for deletion, with the `foregroundDeletion`
    /// finalizer.
    fn foreground_owners(&self) -> Vec<(ObjKey, Value)> {
        self.store
            .all()
            .filter(|(_, o)| {
                meta(o).get("deletionTimestamp").is_some()
                    && string_set(meta(o).get("finalizers"))
                        .iter()
                        .any(|f| f == FOREGROUND)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One step of a foreground deletion, as the kube garbage collector takes it: dependents
    /// not yet deleting are deleted (in the foreground too when their reference blocks the
    /// owner's deletion, else in the background); once no dependent with
    /// `blockOwnerDeletion: true` is left, the owner loses its `foregroundDeletion` finalizer
    /// and goes unless other finalizers hold it. Returns how many objects changed.
    fn delete_dependents_first(&mut self, owner_key: &ObjKey, owner: Value) -> usize {
        let Some(uid) = meta_str(&owner, "uid").map(String::from) else {
            return 0;
        };
        let mut blocking = 0;
        let mut victims = vec![];
        for (k, o) in self.store.all() {
            let Some(reference) = meta(o)
                .get("ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                })
            else {
                continue;
            };
            let blocks = reference.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true);
            if blocks {
                blocking += 1;
            }
            if meta(o).get("deletionTimestamp").is_none() {
                victims.push((k.clone(), o.clone(), blocks));
            }
        }
        let mut changed = 0;
        for (k, v, blocks) in victims {
            if let Some(rt) = self.registry.get(&k.group, &k.plural) {
                tracing::debug!(plural = %k.plural, name = %k.name, "deleting a dependent first");
                self.delete_key(&rt, &k, v, blocks.then_some("Foreground"));
                changed += 1;
            }
        }
        if blocking > 0 {
            // The next pass looks again; a deletion that completes (a finalizer removed)
            // wakes the collector.
            return changed;
        }
        let Some(rt) = self.registry.get(&owner_key.group, &owner_key.plural) else {
            return changed;
        };
        let mut owner = owner;
        if let Some(list) = owner
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            list.retain(|f| f.as_str() != Some(FOREGROUND));
        }
        if super::has_finalizers(&owner) {
            let rv = self.store.next_rv();
            meta_mut(&mut owner).insert("resourceVersion".into(), json!(rv.to_string()));
            self.store.put(owner_key.clone(), owner, rv);
        } else {
            self.remove(&rt, owner_key, owner);
        }
        changed + 1
    }

    fn terminating_namespaces(&self) -> Vec<(ObjKey, Value)> {
        self.store
            .list("", "namespaces", None)
            .filter(|(_, o)| meta(o).get("deletionTimestamp").is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Deletes a stored object as a DELETE without options would.
    fn delete_stored(&mut self, k: &ObjKey, v: Value) {
        if let Some(rt) = self.registry.get(&k.group, &k.plural) {
            tracing::debug!(plural = %k.plural, namespace = %k.namespace, name = %k.name, "garbage collecting");
            self.delete_key(&rt, k, v, None);
        } else {
            // A type that is no longer registered: drop silently.
            let rv = self.store.next_rv();
            self.store.remove(k, v, rv);
        }
    }
}
