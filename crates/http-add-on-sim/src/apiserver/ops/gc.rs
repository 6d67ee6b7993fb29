//! Owner-reference garbage collection and orphaning of dependents.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::super::store::ObjKey;
use super::{Cluster, meta, meta_mut, meta_str};

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

    /// One garbage-collection pass: deletes objects all of whose owners are gone (repeating
    /// until nothing changes, so chains cascade). Returns how many objects were deleted or
    /// marked for deletion.
    pub fn collect_garbage(&mut self) -> usize {
        let mut total = 0;
        loop {
            let uids: HashSet<String> = self
                .store
                .all()
                .filter_map(|(_, o)| meta_str(o, "uid").map(String::from))
                .collect();
            let orphans: Vec<(ObjKey, Value)> = self
                .store
                .all()
                .filter(|(_, o)| {
                    let owners = owner_uids(o);
                    !owners.is_empty()
                        && owners.iter().all(|u| !uids.contains(*u))
                        && meta(o).get("deletionTimestamp").is_none()
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if orphans.is_empty() {
                return total;
            }
            total += orphans.len();
            for (k, v) in orphans {
                if let Some(rt) = self.registry.get(&k.group, &k.plural) {
                    tracing::debug!(plural = %k.plural, namespace = %k.namespace, name = %k.name, "garbage collecting");
                    self.delete_key(&rt, &k, v, None);
                } else {
                    // A type that is no longer registered: drop silently.
                    let rv = self.store.next_rv();
                    self.store.remove(&k, v, rv);
                }
            }
        }
    }
}
