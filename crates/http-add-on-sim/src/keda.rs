//! KEDA stand-in: drives external scalers over gRPC and scales workloads through `/scale`.
