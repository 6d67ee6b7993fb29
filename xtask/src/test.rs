//! `cargo xtask test`: the README's test command.

use crate::cargo;

pub(crate) fn run() -> anyhow::Result<()> {
    cargo(&["test", "--workspace", "--all-targets"])?;
    // Doc tests are not part of --all-targets.
    cargo(&["test", "--workspace", "--doc"])?;
    Ok(())
}
