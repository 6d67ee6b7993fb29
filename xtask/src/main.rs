//! `cargo xtask`: project automation.

fn main() -> anyhow::Result<()> {
    Ok(())
}
