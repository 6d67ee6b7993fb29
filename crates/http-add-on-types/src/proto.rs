//! Generated gRPC code for the KEDA external scaler protocol (`proto/externalscaler.proto`).

/// The `externalscaler` protobuf package.
#[allow(missing_docs, clippy::all, unused_qualifications)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}

/// Encoded `FileDescriptorSet` of the protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/externalscaler_descriptor.bin"));
