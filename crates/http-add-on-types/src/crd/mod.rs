//! Custom resources of the add-on (group `http.keda.sh`) and the KEDA ScaledObject subset.

pub mod http_scaled_object;
pub mod interceptor_route;
pub mod routes;
pub mod scaled_object;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use http_scaled_object::{HTTPScaledObject, HTTPScaledObjectSpec, HTTPScaledObjectStatus};
pub use interceptor_route::{InterceptorRoute, InterceptorRouteSpec, InterceptorRouteStatus};
pub use scaled_object::{ScaledObject, ScaledObjectSpec};

/// API group of the add-on's resources.
pub const GROUP: &str = "http.keda.sh";

/// The CRDs the add-on installs, each with the file name it is written to by `cargo xtask codegen`.
pub fn generated_crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (
            "http.keda.sh_httpscaledobjects.yaml",
            HTTPScaledObject::crd(),
        ),
        (
            "http.keda.sh_interceptorroutes.yaml",
            InterceptorRoute::crd(),
        ),
    ]
}
