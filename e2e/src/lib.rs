//! End-to-end scenarios, run by `cargo xtask e2e` against the simulated cluster or kind.
