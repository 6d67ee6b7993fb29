//! `cargo xtask images [--tag T] [--platform P] [--push]`: the three component images and the
//! e2e suite's sample app image `<repository>/e2e-echo` (the `echo` binary of `http-add-on-sim`),
//! built from the root `Dockerfile` (one target per image) with docker buildx.

use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

/// The components, which are also the Dockerfile's targets and the images' last path segment.
pub(crate) const COMPONENTS: [&str; 3] = ["operator", "interceptor", "scaler"];

/// The e2e suite's sample app: Dockerfile target and image's last path segment.
pub(crate) const E2E_ECHO: &str = "e2e-echo";

/// Every image this command builds: the components, then the e2e sample app.
pub(crate) const IMAGES: [&str; 4] = [COMPONENTS[0], COMPONENTS[1], COMPONENTS[2], E2E_ECHO];

/// Default image repository prefix (the chart's `images.*` defaults).
pub(crate) const DEFAULT_REPOSITORY: &str = "ghcr.io/kedacore/http-add-on-rs";

/// Image repository prefix: `$IMAGE_REPOSITORY`, else [`DEFAULT_REPOSITORY`].
pub(crate) fn repository() -> String {
    std::env::var("IMAGE_REPOSITORY")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REPOSITORY.to_owned())
}

/// The image reference of `component` (one of [`IMAGES`]) at `tag`.
pub(crate) fn image(component: &str, tag: &str) -> String {
    format!("{}/{component}:{tag}", repository())
}

/// Builds (and with `push`, pushes) every image of [`IMAGES`] for `platforms` (comma-separated,
/// e.g. `linux/amd64,linux/arm64`). Without `push` the images are loaded into the local docker,
/// which holds a single platform only.
pub(crate) fn run(tag: &str, platforms: &str, push: bool) -> anyhow::Result<()> {
    require_tool(
        "docker",
        &["buildx", "version"],
        "docker with the buildx plugin is needed to build images: install Docker Engine \
         (https://docs.docker.com/engine/install/) or Docker Desktop, which include buildx",
    )?;
    if !push && platforms.contains(',') {
        bail!(
            "--platform {platforms}: docker can only load one platform into its local image store; \
             pass a single platform, or --push to publish a multi-platform image"
        );
    }
    for target in IMAGES {
        let reference = image(target, tag);
        let mut cmd = Command::new("docker");
        cmd.current_dir(workspace_root())
            .args(["buildx", "build", "--file", "Dockerfile"])
            .args(["--target", target])
            .args(["--platform", platforms])
            .args(["--tag", &reference])
            .arg(if push { "--push" } else { "--load" })
            .arg(".");
        run_command(&mut cmd)?;
        eprintln!("images: built {reference} ({platforms})");
    }
    Ok(())
}

/// Fails with `hint` when `tool args` cannot run successfully.
pub(crate) fn require_tool(tool: &str, args: &[&str], hint: &str) -> anyhow::Result<()> {
    match Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => bail!("`{tool} {}` failed ({status}). {hint}", args.join(" ")),
        Err(e) => bail!("{tool} is not available ({e}). {hint}"),
    }
}

/// Runs `cmd` (echoed), failing when it fails.
pub(crate) fn run_command(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_the_chart_defaults() {
        // The chart's values.yaml names the same repository.
        let values =
            std::fs::read_to_string(crate::chart::chart_dir().join("values.yaml")).unwrap();
        for component in COMPONENTS {
            assert!(
                values.contains(&format!("{component}: {DEFAULT_REPOSITORY}/{component}\n")),
                "values.yaml images.{component}"
            );
        }
    }

    #[test]
    fn a_missing_tool_is_named_with_the_hint() {
        let err = require_tool("surely-not-a-tool-xtask", &["version"], "install it from X")
            .unwrap_err()
            .to_string();
        assert!(err.contains("surely-not-a-tool-xtask") && err.contains("install it from X"));
    }

    #[test]
    fn every_image_has_a_dockerfile_target() {
        let dockerfile = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
        for target in IMAGES {
            assert!(
                dockerfile.contains(&format!(" AS {target}\n")),
                "Dockerfile has no target {target}"
            );
        }
        assert!(
            dockerfile.contains("--bin echo"),
            "the e2e-echo image runs the sim's echo binary"
        );
    }

    #[test]
    fn the_e2e_suite_defaults_to_the_published_echo_image() {
        // e2e/src/app.rs `ECHO_IMAGE`: what a release publishes, tagged with the version.
        let app = std::fs::read_to_string(workspace_root().join("e2e/src/app.rs")).unwrap();
        let published = format!("\"{DEFAULT_REPOSITORY}/{E2E_ECHO}:\",");
        assert!(
            app.contains(&published),
            "ECHO_IMAGE is not {published}<version>"
        );
    }
}
