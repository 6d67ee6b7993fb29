//! Simulated Kubernetes cluster for tests and the local demo (DESIGN.md §7).
//!
//! Ownership while the crate is being built: `apiserver` (API server: storage, discovery,
//! list/watch, patches, CRDs, validation) and `workloads` + `keda` (controllers that talk to the
//! API server through a `kube::Client`, exactly as real controllers would).

pub mod apiserver;
pub mod keda;
pub mod workloads;
