//! The `/scale` subresource (autoscaling/v1 Scale) of types that declare one.

use std::sync::Arc;

use serde_json::{Value, json};

use super::super::error::{ApiError, ApiResult, Cause, Target};
use super::super::patch::{self, PatchKind};
use super::super::registry::{ResourceType, ScaleSpec};
use super::{Cluster, WriteOptions, get_path, meta, selector_string, set_path};

/// The Scale object of `obj`.
fn scale_of(spec: &ScaleSpec, obj: &Value) -> Value {
    let m = meta(obj);
    let selector = match &spec.label_selector_path {
        Some(p) => get_path(obj, p).and_then(Value::as_str).map(String::from),
        None => obj.pointer("/spec/selector").map(selector_string),
    };
    let observed = get_path(obj, &spec.status_replicas_path).and_then(Value::as_i64);
    let mut status = json!({"replicas": observed.unwrap_or(0)});
    if let Some(s) = selector {
        status["selector"] = json!(s);
    }
    let desired = get_path(obj, &spec.spec_replicas_path).and_then(Value::as_i64);
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": desired.unwrap_or(0)},
        "status": status,
    })
}

fn scale_spec<'a>(rt: &'a ResourceType, name: &str) -> ApiResult<&'a ScaleSpec> {
    rt.scale.as_ref().ok_or_else(|| {
        ApiError::not_found(Target {
            group: &rt.group,
            kind: &rt.plural,
            name,
        })
    })
}

impl Cluster {
    /// Reads the `/scale` subresource.
    pub fn get_scale(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let spec = scale_spec(rt, name)?;
        let (_, cur) = self.existing(rt, ns, name)?;
        Ok(scale_of(spec, &cur))
    }

    /// Writes the `/scale` subresource (PUT, or PATCH with `patch` given).
    #[allow(clippy::too_many_arguments)]
    pub fn write_scale(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: Option<&str>,
        name: &str,
        body: Value,
        patch: Option<PatchKind>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let spec = scale_spec(rt, name)?.clone();
        let (key, cur) = self.existing(rt, ns, name)?;
        let scale = match patch {
            None => body,
            Some(kind) => {
                let mut s = scale_of(&spec, &cur);
                match kind {
                    PatchKind::Json => patch::json_patch(&mut s, &body)?,
                    // Apply to a Scale only ever sets the replicas.
                    PatchKind::Apply => {
                        if let Some(r) = body.pointer("/spec/replicas") {
                            s["spec"]["replicas"] = r.clone();
                        }
                    }
                    PatchKind::Merge | PatchKind::Strategic => patch::merge_patch(&mut s, &body),
                }
                s
            }
        };
        Self::check_rv(rt, name, &scale, &cur)?;
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                Target {
                    group: "autoscaling",
                    kind: "Scale",
                    name,
                },
                vec![Cause {
                    field: "spec.replicas".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                }],
            ));
        }
        let mut new = cur.clone();
        set_path(&mut new, &spec.spec_replicas_path, json!(replicas));
        let mut updater = opts.updater(super::Sub::Main);
        updater.subresource = Some("scale");
        let new = self.commit(rt, version, key, &cur, new, opts.dry_run, Some(updater))?;
        Ok(scale_of(&spec, &new))
    }
}
