//! KEDA HTTP Add-on scaler (not yet built: see the project's open issues).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the scaler is not implemented yet")
}
