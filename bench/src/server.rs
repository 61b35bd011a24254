//! Runs the real control plane binary as a child process and reads its memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncBufReadExt;

/// A control plane child process.
pub struct ControlPlaneProcess {
    child: tokio::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// From spawn to "listening".
    pub startup: Duration,
}

impl ControlPlaneProcess {
    /// Starts `binary serve` on `data_dir` with a free loopback port.
    pub async fn start(binary: &Path, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("SIGNPOST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(600), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("signpost listening on ") {
                    return Ok::<_, anyhow::Error>(addr.trim().parse::<SocketAddr>()?);
                }
                eprintln!("[control plane] {line}");
            }
            anyhow::bail!("the control plane exited before listening")
        })
        .await
        .context("the control plane did not start within 10 minutes")??;
        let startup = started.elapsed();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            addr,
            startup,
        })
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.child.id().map(rss_of).unwrap_or_default()
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Resident memory of a process, in bytes (from /proc).
pub fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or_default()
}

/// The `signpost` binary next to this one (same target profile).
pub fn sibling_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.with_file_name(name)
}
