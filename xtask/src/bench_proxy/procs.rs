//! Processes of the benchmark: spawning (pinned to a core), stopping, bounded runs, tools
//! installed on demand, and CPU time and memory from /proc.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A child process killed (by its own pid) when dropped.
pub(crate) struct Proc {
    name: String,
    child: Child,
    /// Lines of its stdout, read on a thread of their own from the first `wait_line` on.
    lines: Option<mpsc::Receiver<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so that a master process (nginx) stops its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd`, named `name` in errors.
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            lines: None,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status when the process has ended.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for a stdout line starting with `prefix` and returns it; other lines are dropped.
    /// Later calls go on from the line after it.
    pub(crate) fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        if self.lines.is_none() {
            let stdout = self.child.stdout.take().context("stdout not piped")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            self.lines = Some(rx);
        }
        let rx = self.lines.as_ref().context("stdout not piped")?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("{} did not print {prefix:?} within {timeout:?}", self.name),
            }
        }
    }

    /// Writes `line` and a newline to its stdin (piped).
    pub(crate) fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("stdin not piped")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to {}'s stdin", self.name))
    }
}

/// Runs `cmd` to its end with stdout and stderr captured, killing it after `timeout`.
pub(crate) fn output_within(
    mut cmd: Command,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {what} ({cmd:?})"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads `pipe` to its end on a thread of its own (so that a full pipe never blocks the child).
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

pub(super) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The tool, installing `package` with apt-get when missing; `Err` is the reason it is absent.
pub(crate) fn ensure_tool(tool: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(path) = which(tool) {
        return Ok(path);
    }
    if which("apt-get").is_none() {
        return Err(format!(
            "{tool} is not installed and apt-get is not available"
        ));
    }
    if !is_root() {
        return Err(format!(
            "{tool} is not installed and installing it needs root"
        ));
    }
    eprintln!("installing {package} with apt-get");
    let apt = |args: &[&str], minutes: u64| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        output_within(c, Duration::from_secs(60 * minutes), "apt-get")
            .is_ok_and(|o| o.status.success())
    };
    apt(&["update", "-qq"], 5);
    let ok = apt(
        &["install", "-y", "-qq", "--no-install-recommends", package],
        10,
    );
    match which(tool) {
        Some(path) => Ok(path),
        None if ok => Err(format!("{package} installed but {tool} is not on PATH")),
        None => Err(format!("apt-get install {package} failed")),
    }
}

/// A loopback port free at the time of asking.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `program`, prefixed with `taskset -c <core>` when pinning is possible.
pub(crate) fn pinned(program: &Path, core: Option<u32>) -> Command {
    match (core, which("taskset")) {
        (Some(core), Some(taskset)) => {
            let mut c = Command::new(taskset);
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

/// `pid` and its children (nginx and HAProxy serve from worker processes).
fn family(pid: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect();
    pids.push(pid);
    pids
}

/// CPU time (user + system, every thread) used so far by `pid` and its children, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let ticks_per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let ticks: u64 = family(pid)
        .into_iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // After the command: state is field 3, utime 14 and stime 15 (1-based, man proc).
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum();
    ticks as f64 / ticks_per_second
}

/// Sum of `field` (kB) of `pid` and its children, from /proc.
pub(crate) fn rss_kb(pid: u32, field: &str) -> u64 {
    let read = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    family(pid).into_iter().map(read).sum::<u64>()
}
