//! Child processes under test: the control plane (`signpost serve`) and the
//! login edge (`signpost-edge`), with their resident memory read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// A control plane child process.
pub struct ControlPlaneProcess {
    child: tokio::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// When it was spawned.
    pub spawned: Instant,
    /// From spawn to "listening" (every projection built).
    pub startup: Duration,
}

impl ControlPlaneProcess {
    /// Starts `binary serve` on `data_dir` with a free loopback port and waits
    /// for its "signpost listening on" line.
    pub async fn start(binary: &Path, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let spawned = Instant::now();
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
        let startup = spawned.elapsed();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[control plane] {line}");
            }
        });
        Ok(Self {
            child,
            addr,
            spawned,
            startup,
        })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        crate::grpc::url(self.addr)
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.child.id().map(rss_of).unwrap_or_default()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it (SIGKILL: the log is durable at every acknowledged append).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A login edge child process (`signpost-edge`).
pub struct EdgeProcess {
    child: tokio::process::Child,
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// When it was spawned.
    pub spawned: Instant,
}

impl EdgeProcess {
    /// Starts `binary` following `control_plane` with the token in `token_file`.
    pub async fn start(
        binary: &Path,
        control_plane: &str,
        token_file: &Path,
        state_file: &Path,
    ) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let spawned = Instant::now();
        let child = tokio::process::Command::new(binary)
            .arg("--control-plane")
            .arg(control_plane)
            .arg("--token-file")
            .arg(token_file)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-file")
            .arg(state_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        Ok(Self {
            child,
            addr,
            spawned,
        })
    }

    /// Waits until `GET /readyz` answers 200; returns the time from spawn.
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if http_get(self.addr, "/readyz")
                .await
                .map(|(status, _)| status)
                == Some(200)
            {
                return Ok(self.spawned.elapsed());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the edge was not ready in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A one-shot HTTP/1.1 GET: the status and body, or `None` when it fails.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
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

/// A ceiling server of this benchmark binary, run as a child process: the do-nothing
/// stream server of [`crate::stream_ceiling`], the do-nothing `Resolve` of
/// [`crate::resolve_ceiling`] or the durable do-nothing server of
/// [`crate::durable_ceiling`].
pub struct CeilingProcess {
    child: tokio::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl CeilingProcess {
    /// Spawns `signpost-bench stream-ceiling` and waits until it listens; given a route
    /// and a store epoch, it also serves `WatchRoutes` with deltas upserting that route.
    pub async fn stream(
        route: Option<(&signpost_api::routing::v1::Route, &str)>,
    ) -> anyhow::Result<Self> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "stream-ceiling".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        if let Some((route, store_epoch)) = route {
            args.push("--route-hex".into());
            args.push(hex::encode(prost::Message::encode_to_vec(route)).into());
            args.push("--store-epoch".into());
            args.push(store_epoch.into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        Self::start(
            &args,
            crate::stream_ceiling::LISTENING,
            "the stream ceiling server",
        )
        .await
    }

    /// Spawns `signpost-bench resolve-ceiling` answering every call with `answer` and
    /// waits until it listens.
    pub async fn resolve(
        answer: &signpost_api::routing::v1::ResolveResponse,
    ) -> anyhow::Result<Self> {
        let answer_hex = hex::encode(prost::Message::encode_to_vec(answer));
        Self::start(
            &[
                "resolve-ceiling".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--answer-hex".as_ref(),
                answer_hex.as_str().as_ref(),
            ],
            crate::resolve_ceiling::LISTENING,
            "the resolve ceiling server",
        )
        .await
    }

    /// Spawns `signpost-bench durable-ceiling` with its log in `data_dir`, answering
    /// `AssignGroup` with `assign_answer`, and waits until it listens.
    pub async fn durable(
        data_dir: &Path,
        assign_answer: &signpost_api::admin::v1::AssignGroupResponse,
    ) -> anyhow::Result<Self> {
        let answer_hex = hex::encode(prost::Message::encode_to_vec(assign_answer));
        Self::start(
            &[
                "durable-ceiling".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--data-dir".as_ref(),
                data_dir.as_os_str(),
                "--assign-answer-hex".as_ref(),
                answer_hex.as_str().as_ref(),
            ],
            crate::durable_ceiling::LISTENING,
            "the durable ceiling server",
        )
        .await
    }

    async fn start(args: &[&std::ffi::OsStr], listening: &str, what: &str) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {what}"))?;
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix(listening) {
                    return Ok::<_, anyhow::Error>(addr.trim().parse::<SocketAddr>()?);
                }
            }
            anyhow::bail!("{what} exited before listening")
        })
        .await
        .with_context(|| format!("{what} did not start within 30 s"))??;
        Ok(Self { child, addr })
    }

    /// Its process id (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
