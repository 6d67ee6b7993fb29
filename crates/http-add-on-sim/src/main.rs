//! `http-add-on-sim`: the simulated cluster as a process.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the simulated cluster is not implemented yet")
}
