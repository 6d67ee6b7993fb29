//! `cargo xtask test`: the README's test command — every crate's tests, then the e2e suite.

use crate::{cargo, e2e};

pub(crate) fn run() -> anyhow::Result<()> {
    cargo(&["test", "--workspace", "--all-targets"])?;
    // Doc tests are not part of --all-targets.
    cargo(&["test", "--workspace", "--doc"])?;
    e2e::run("sim", &[])
}
