//! Running a workspace binary the way its start-up tests need: with nothing of the test's own
//! environment, so only the variables a test names configure it.

use std::process::Command;

/// Where [`run_with_only`] points `KUBECONFIG`: a file that does not exist, so a binary whose
/// configuration is good stops at connecting to the Kubernetes API.
pub const NO_KUBECONFIG: &str = "/nonexistent/kubeconfig";

/// What a finished run of a binary said.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output (lossily decoded).
    pub stdout: String,
    /// Its standard error (lossily decoded).
    pub stderr: String,
}

/// Runs `program` (e.g. `env!("CARGO_BIN_EXE_scaler")`) to its end with only `env` set, besides
/// `RUST_LOG=off` and `KUBECONFIG=`[`NO_KUBECONFIG`] unless `env` sets them.
pub fn run_with_only(program: &str, env: &[(&str, &str)]) -> Exit {
    let out = Command::new(program)
        .env_clear()
        .env("RUST_LOG", "off")
        .env("KUBECONFIG", NO_KUBECONFIG)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    Exit {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_sees_only_the_named_variables_and_the_defaults() {
        let exit = run_with_only("/usr/bin/env", &[("ONLY", "this"), ("RUST_LOG", "warn")]);
        assert!(exit.success, "{exit:?}");
        let mut seen: Vec<&str> = exit.stdout.lines().collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            [
                "KUBECONFIG=/nonexistent/kubeconfig",
                "ONLY=this",
                "RUST_LOG=warn"
            ]
        );
    }
}
