//! The simulated API server: storage, discovery, list/watch, patches, CRDs and validation.
