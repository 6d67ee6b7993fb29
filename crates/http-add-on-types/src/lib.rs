//! Shared types of the KEDA HTTP Add-on: CRDs, route table, queue counts and generated gRPC code.

pub mod compat;
pub mod config;
pub mod crd;
pub mod duration;
pub mod process;
pub mod proto;
pub mod queue;
pub mod routing;
pub mod shutdown;
pub mod telemetry;
