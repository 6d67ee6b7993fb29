//! Keeps KEDA's HPAs in step with the routes' metric specs (upstream's open #1656).
//!
//! KEDA builds a ScaledObject's HPA from `GetMetricSpec` and reads the specs again only when it
//! reconciles the ScaledObject: when its spec changes, or when the HPA's labels or annotations
//! change. A new `scalingMetric` or `targetValue` on an InterceptorRoute or HTTPScaledObject
//! changes neither, so the HPA would keep the old metric names and targets until someone
//! deleted something. The scaler knows both sides: every KEDA call names the ScaledObject, and
//! the route caches that answer `GetMetricSpec` are the ones that change. So it remembers the
//! ScaledObjects that asked, and when the metric specs it would now answer one of them differ
//! from the ones its HPA was last marked with, it writes their digest into the HPA annotation
//! [`METRIC_SPEC_ANNOTATION`]. That makes KEDA rebuild the HPA, from the new specs — which the
//! scaler already serves, since the change was seen in its own caches first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_add_on_types::crd::ScaledObject;
use http_add_on_types::proto::externalscaler::{GetMetricSpecResponse, ScaledObjectRef};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::Notify;

/// HPA annotation holding a digest of the metric specs the HPA should be built from.
pub const METRIC_SPEC_ANNOTATION: &str = "http.keda.sh/metric-spec";

/// Field manager of the annotation.
const FIELD_MANAGER: &str = "keda-add-ons-http-external-scaler";

/// ScaledObjects not heard of for this long are forgotten (KEDA polls every few seconds).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A digest of the metric names and targets of `specs` (FNV-1a, 16 hex digits).
pub fn digest(specs: &GetMetricSpecResponse) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for spec in &specs.metric_specs {
        feed(spec.metric_name.as_bytes());
        feed(&[0]);
        feed(&spec.target_size.to_le_bytes());
        feed(&spec.target_size_float.to_bits().to_le_bytes());
    }
    format!("{hash:016x}")
}

/// A ScaledObject KEDA asked about.
struct Known {
    sor: ScaledObjectRef,
    last_heard: Instant,
    /// The digest its HPA was last found or marked with.
    marked: Option<String>,
}

/// The ScaledObjects KEDA asked about, and whether their HPAs carry the current digest.
#[derive(Default)]
pub struct HpaMarks {
    known: Mutex<HashMap<(String, String), Known>>,
    changed: Notify,
}

impl HpaMarks {
    /// Records a call of KEDA about `sor`.
    pub fn heard(&self, sor: &ScaledObjectRef) {
        if sor.namespace.is_empty() || sor.name.is_empty() {
            return;
        }
        let key = (sor.namespace.clone(), sor.name.clone());
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match known.get_mut(&key) {
            Some(k) => {
                k.last_heard = now;
                if k.sor.scaler_metadata != sor.scaler_metadata {
                    k.sor = sor.clone();
                    k.marked = None;
                    self.changed.notify_one();
                }
            }
            None => {
                known.insert(
                    key,
                    Known {
                        sor: sor.clone(),
                        last_heard: now,
                        marked: None,
                    },
                );
                self.changed.notify_one();
            }
        }
    }

    /// The ScaledObjects whose current digest (from `specs`) differs from the marked one.
    fn due(
        &self,
        specs: &impl Fn(&ScaledObjectRef) -> Option<GetMetricSpecResponse>,
    ) -> Vec<(ScaledObjectRef, String)> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        known.retain(|_, k| now.duration_since(k.last_heard) < FORGET_AFTER);
        known
            .values()
            .filter_map(|k| {
                let digest = digest(&specs(&k.sor)?);
                (k.marked.as_ref() != Some(&digest)).then(|| (k.sor.clone(), digest))
            })
            .collect()
    }

    fn marked(&self, sor: &ScaledObjectRef, digest: String) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = known.get_mut(&(sor.namespace.clone(), sor.name.clone())) {
            k.marked = Some(digest);
        }
    }

    /// Checks every `interval` (or at once when a new ScaledObject is heard of) and marks the
    /// HPAs whose specs changed; runs until dropped. `specs` answers as `GetMetricSpec` would.
    pub async fn run(
        self: Arc<Self>,
        client: kube::Client,
        specs: impl Fn(&ScaledObjectRef) -> Option<GetMetricSpecResponse>,
        interval: Duration,
    ) {
        let mut warned: HashMap<(String, String), String> = HashMap::new();
        loop {
            for (sor, digest) in self.due(&specs) {
                match mark(&client, &sor, &digest).await {
                    Ok(()) => {
                        warned.remove(&(sor.namespace.clone(), sor.name.clone()));
                        self.marked(&sor, digest);
                    }
                    Err(error) => {
                        let key = (sor.namespace.clone(), sor.name.clone());
                        let message = error.to_string();
                        if warned.get(&key) != Some(&message) {
                            tracing::warn!(namespace = %sor.namespace, scaled_object = %sor.name, %error, "cannot mark the ScaledObject's HPA for a rebuild after its route's metric changed; retrying");
                            warned.insert(key, message);
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// Writes `digest` into the HPA of `sor` unless it is there; an HPA that does not exist yet
/// needs nothing (KEDA builds it from the current specs).
async fn mark(client: &kube::Client, sor: &ScaledObjectRef, digest: &str) -> kube::Result<()> {
    let scaled_objects: Api<ScaledObject> = Api::namespaced(client.clone(), &sor.namespace);
    let Some(so) = scaled_objects.get_opt(&sor.name).await? else {
        return Ok(());
    };
    let name = so
        .status
        .as_ref()
        .and_then(|s| s.hpa_name.clone())
        .unwrap_or_else(|| format!("keda-hpa-{}", sor.name));
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &sor.namespace);
    let Some(hpa) = hpas.get_metadata_opt(&name).await? else {
        return Ok(());
    };
    let current = hpa
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(METRIC_SPEC_ANNOTATION));
    if current.map(String::as_str) == Some(digest) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {METRIC_SPEC_ANNOTATION: digest}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    hpas.patch_metadata(&name, &params, &Patch::Merge(&patch))
        .await?;
    tracing::info!(namespace = %sor.namespace, scaled_object = %sor.name, hpa = %name, digest, "marked the HPA for a rebuild: its route's metric specs changed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_add_on_types::proto::externalscaler::MetricSpec;

    fn specs(name: &str, target: f64) -> GetMetricSpecResponse {
        GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: name.into(),
                target_size: 0,
                target_size_float: target,
            }],
        }
    }

    #[test]
    fn the_digest_follows_names_and_targets() {
        let a = digest(&specs("http_app_concurrency", 10.0));
        assert_eq!(a, digest(&specs("http_app_concurrency", 10.0)));
        assert_ne!(a, digest(&specs("http_app_concurrency", 20.0)));
        assert_ne!(a, digest(&specs("http_app_rate", 10.0)));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn a_scaled_object_is_due_until_marked_and_again_when_its_specs_change() {
        let marks = HpaMarks::default();
        let sor = ScaledObjectRef {
            name: "app".into(),
            namespace: "apps".into(),
            ..Default::default()
        };
        marks.heard(&sor);
        let target = std::cell::Cell::new(10.0);
        let answer = |_: &ScaledObjectRef| Some(specs("m", target.get()));
        let due = marks.due(&answer);
        assert_eq!(due.len(), 1);
        marks.marked(&sor, due[0].1.clone());
        assert!(marks.due(&answer).is_empty());
        target.set(20.0);
        assert_eq!(marks.due(&answer).len(), 1);
        // Unknown routes (no answer) are not due.
        assert!(marks.due(&|_: &ScaledObjectRef| None).is_empty());
    }
}
