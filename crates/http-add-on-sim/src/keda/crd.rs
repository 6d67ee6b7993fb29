//! KEDA's own ScaledObject CRD (`scaledobjects.keda.sh.yaml`, KEDA 2.16.1, copied from
//! kedacore/charts; see the file's header), installed by the API server at start, so a
//! ScaledObject is checked against KEDA's `openAPIV3Schema` as on a cluster with KEDA: a wrong
//! type, a missing required field or an undeclared field is a 422 naming the field. Undeclared
//! fields are errors rather than pruned ([`crate::schema::validate_strict`]) because the
//! operator writes ScaledObjects by server-side apply, which refuses fields the schema does
//! not declare, and `kubectl` asks for strict field validation.

use serde_json::Value;

/// The CRD as copied from KEDA (YAML).
pub const SCALED_OBJECT_CRD_YAML: &str = include_str!("scaledobjects.keda.sh.yaml");

/// KEDA's version the CRD comes from.
pub const KEDA_VERSION: &str = "2.16.1";

/// KEDA's ScaledObject CRD as JSON.
pub fn scaled_object_crd() -> Value {
    serde_yaml::from_str(SCALED_OBJECT_CRD_YAML).expect("the embedded KEDA CRD is valid YAML")
}

/// Whether objects of `group`/`plural` are validated strictly (undeclared fields are
/// errors): KEDA's ScaledObjects.
pub fn validates_strictly(group: &str, plural: &str) -> bool {
    group == "keda.sh" && plural == "scaledobjects"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_is_kedas_scaled_object_with_its_schema() {
        let crd = scaled_object_crd();
        assert_eq!(crd["metadata"]["name"], "scaledobjects.keda.sh");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["spec"]["required"],
            serde_json::json!(["scaleTargetRef", "triggers"])
        );
        assert!(SCALED_OBJECT_CRD_YAML.contains(KEDA_VERSION));
    }
}
