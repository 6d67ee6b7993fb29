//! End-to-end scenarios of the KEDA HTTP Add-on, run by `cargo xtask e2e` against the simulated
//! cluster (default) or a kind cluster, and the traffic driver of `cargo xtask demo`.
//!
//! Scenarios see the cluster only through a [`testbed::Testbed`]: a kube client, the address of
//! the interceptor's proxy, and a few cluster controls. That keeps them identical on every
//! cluster kind.

pub mod app;
pub mod demo;
pub mod http;
pub mod kind;
pub mod load;
pub mod manifests;
pub mod runner;
pub mod scenarios;
pub mod sim;
pub mod testbed;
pub mod wait;
