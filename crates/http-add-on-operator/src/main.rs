//! KEDA HTTP Add-on operator (not yet built: see the project's open issues).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the operator is not implemented yet")
}
