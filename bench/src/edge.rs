//! Scenario 4, the login edge: in-process lookup latency among every route
//! (`Edge::lookup`: email normalization + one map lookup, timed one by one
//! into an HDR histogram in nanoseconds), and HTTP `POST /v1/discover`
//! throughput of the `signpost-edge` binary with the load generator on the
//! same machine (`wrk` when installed, else the built-in HTTP/1.1 generator).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use signpost_edge::Edge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::load;
use crate::populate::domain_of;

/// Lookup latency of `lookups` random routed emails, one at a time.
pub fn lookup_latency(edge: &Edge, routes: usize, lookups: usize) -> serde_json::Value {
    let emails: Vec<String> = (0..lookups)
        .map(|i| {
            format!(
                "user{}@{}",
                i % 1000,
                domain_of((i * 104_729 + 17) % routes.max(1))
            )
        })
        .collect();
    // Warm caches and the allocator.
    for email in emails.iter().take(10_000) {
        let _ = edge.lookup(email);
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    let mut misses = 0u64;
    for email in &emails {
        let started = Instant::now();
        let found = edge.lookup(email);
        let nanos = started.elapsed().as_nanos().max(1) as u64;
        if !matches!(&found, Ok(lookup) if lookup.route.is_some()) {
            misses += 1;
        }
        let _ = histogram.record(nanos);
    }
    // The clock's own cost, to read the figures against.
    let mut clock = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    for _ in 0..lookups.min(100_000) {
        let started = Instant::now();
        let _ = clock.record(started.elapsed().as_nanos().max(1) as u64);
    }
    serde_json::json!({
        "routes": routes, "lookups": histogram.len(), "misses": misses,
        "p50_ns": histogram.value_at_quantile(0.5), "p99_ns": histogram.value_at_quantile(0.99),
        "p999_ns": histogram.value_at_quantile(0.999), "max_ns": histogram.max(),
        "mean_ns": histogram.mean(), "clock_p50_ns": clock.value_at_quantile(0.5),
        "clock_p99_ns": clock.value_at_quantile(0.99),
    })
}

/// `wrk`'s Lua script: POST /v1/discover for routed emails spread over `routes`.
fn wrk_script(routes: usize) -> String {
    format!(
        r#"counter = 0
request = function()
  counter = counter + 1
  local i = (counter * 104729) % {routes}
  local body = '{{"email":"user@firm' .. i .. '.example.com"}}'
  return wrk.format("POST", "/v1/discover", {{["Content-Type"] = "application/json"}}, body)
end
"#
    )
}

fn wrk_installed() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

/// Parses "1.23ms" / "456.00us" / "2.00s" into microseconds.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * factor)
}

/// Runs `wrk` against `addr` for `duration` with `connections`.
pub async fn wrk_discover(
    addr: SocketAddr,
    routes: usize,
    connections: usize,
    threads: usize,
    duration: Duration,
    work_dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    let script = work_dir.join("discover.lua");
    std::fs::write(&script, wrk_script(routes))?;
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    let mut json = serde_json::json!({
        "generator": "wrk", "threads": threads, "connections": connections,
    });
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", rate] => {
                json["per_second"] = rate.parse::<f64>().unwrap_or(0.0).into()
            }
            ["50%", value] => json["p50_us"] = wrk_duration_us(value).into(),
            ["99%", value] => json["p99_us"] = wrk_duration_us(value).into(),
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                json["errors"] = count.parse::<u64>().unwrap_or(0).into()
            }
            [count, "requests", "in", ..] => {
                json["requests"] = count.parse::<u64>().unwrap_or(0).into()
            }
            _ => {}
        }
    }
    json["raw"] = text.into();
    Ok(json)
}

/// The built-in generator: `connections` keep-alive HTTP/1.1 connections,
/// one request at a time each, latencies in an HDR histogram.
pub async fn builtin_discover(
    addr: SocketAddr,
    routes: usize,
    connections: usize,
    duration: Duration,
) -> serde_json::Value {
    let streams: Arc<Vec<tokio::sync::Mutex<Option<tokio::net::TcpStream>>>> = Arc::new(
        (0..connections)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect(),
    );
    let report = load::run(connections, duration, move |worker, i| {
        let streams = streams.clone();
        async move {
            let mut slot = streams[worker].lock().await;
            if slot.is_none() {
                *slot = tokio::net::TcpStream::connect(addr).await.ok();
                if let Some(stream) = slot.as_ref() {
                    let _ = stream.set_nodelay(true);
                }
            }
            let Some(stream) = slot.as_mut() else {
                return false;
            };
            let index = ((worker as u64 * 7919 + i * 104_729) % routes.max(1) as u64) as usize;
            let ok = discover_once(stream, &domain_of(index))
                .await
                .unwrap_or(false);
            if !ok {
                *slot = None;
            }
            ok
        }
    })
    .await;
    let mut json = report.json();
    json["generator"] = "built-in".into();
    json["connections"] = connections.into();
    json
}

async fn discover_once(stream: &mut tokio::net::TcpStream, domain: &str) -> std::io::Result<bool> {
    let body = format!(r#"{{"email":"user@{domain}"}}"#);
    let request = format!(
        "POST /v1/discover HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(false);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
    let ok = head.starts_with("http/1.1 200");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(false);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Ok(ok)
}

/// Discover throughput: `wrk` when installed, else the built-in generator.
pub async fn discover(
    addr: SocketAddr,
    routes: usize,
    connections: usize,
    duration: Duration,
    work_dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    if wrk_installed() {
        wrk_discover(addr, routes, connections, 1, duration, work_dir).await
    } else {
        Ok(builtin_discover(addr, routes, connections, duration).await)
    }
}
