//! KEDA HTTP Add-on interceptor (not yet built: see the project's open issues).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the interceptor is not implemented yet")
}
