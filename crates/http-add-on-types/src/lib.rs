//! Shared types of the KEDA HTTP Add-on: CRDs, route table, queue counts and generated gRPC code.

pub mod proto;
