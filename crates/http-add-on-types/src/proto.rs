//! Generated gRPC code for the KEDA external scaler protocol (`proto/externalscaler.proto`).

/// The `externalscaler` protobuf package.
#[allow(missing_docs, clippy::all, unused_qualifications)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}
