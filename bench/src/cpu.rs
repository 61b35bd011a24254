//! CPU time over a load phase, read from /proc: what each request cost the server under
//! test and this load generator, and how busy the whole machine was.
//!
//! The load generator and both servers share the machine's cores, so a closed loop can
//! go no faster than `cores / (server CPU + load generator CPU per request)`: the report
//! turns these figures into that bound (see `report.rs`). Times come from the kernel's
//! per-process counters (`utime + stime` of every thread, in USER_HZ ticks of 10 ms), so
//! a 10-second phase that keeps a core busy is read to about 0.1%.

use std::future::Future;
use std::time::Instant;

use crate::load::LoadReport;

/// The kernel's clock ticks per second in /proc (USER_HZ, fixed at 100 by Linux's ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// The processes whose CPU the phases of a scenario record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Servers {
    /// The control plane under test.
    pub signpost: Option<u32>,
    /// etcd.
    pub etcd: Option<u32>,
}

/// CPU spent during one phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuSpent {
    /// Seconds of CPU of the server under test (None: no pid, or it could not be read).
    pub server_seconds: Option<f64>,
    /// Seconds of CPU of this process (the load generator).
    pub generator_seconds: f64,
    /// Busy cores on the whole machine, averaged over the phase.
    pub machine_busy_cores: Option<f64>,
    /// Cores the machine has.
    pub cores: usize,
    /// The phase's wall time, in seconds.
    pub wall_seconds: f64,
}

impl CpuSpent {
    /// The CPU of two phases of the same load: seconds added up, busy cores averaged over
    /// their wall time.
    pub fn merge(self, other: CpuSpent) -> CpuSpent {
        let wall_seconds = self.wall_seconds + other.wall_seconds;
        CpuSpent {
            server_seconds: self
                .server_seconds
                .zip(other.server_seconds)
                .map(|(a, b)| a + b),
            generator_seconds: self.generator_seconds + other.generator_seconds,
            machine_busy_cores: self.machine_busy_cores.zip(other.machine_busy_cores).map(
                |(a, b)| {
                    (a * self.wall_seconds + b * other.wall_seconds)
                        / wall_seconds.max(f64::EPSILON)
                },
            ),
            cores: self.cores.max(other.cores),
            wall_seconds,
        }
    }

    /// A JSON object with the costs per request.
    pub fn json(&self, requests: u64) -> serde_json::Value {
        let per_request = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
        serde_json::json!({
            "server_seconds": self.server_seconds,
            "generator_seconds": self.generator_seconds,
            "server_us_per_request": self.server_seconds.map(per_request),
            "generator_us_per_request": per_request(self.generator_seconds),
            "machine_busy_cores": self.machine_busy_cores,
            "cores": self.cores,
        })
    }
}

/// Runs `phase` and records the CPU the server `pid` and this process spent meanwhile.
pub async fn measure<F>(server: Option<u32>, phase: F) -> LoadReport
where
    F: Future<Output = LoadReport>,
{
    let server_before = server.and_then(process_ticks);
    let own_before = process_ticks(std::process::id());
    let machine_before = machine_ticks();
    let started = Instant::now();
    let mut report = phase.await;
    let wall = started.elapsed().as_secs_f64();
    let seconds = |before: Option<u64>, after: Option<u64>| {
        before
            .zip(after)
            .map(|(b, a)| a.saturating_sub(b) as f64 / TICKS_PER_SECOND)
    };
    let server_seconds = seconds(server_before, server.and_then(process_ticks));
    let generator_seconds =
        seconds(own_before, process_ticks(std::process::id())).unwrap_or_default();
    let machine_busy_cores =
        machine_before
            .zip(machine_ticks())
            .map(|((busy_b, _), (busy_a, _))| {
                busy_a.saturating_sub(busy_b) as f64 / TICKS_PER_SECOND / wall.max(f64::EPSILON)
            });
    report.cpu = Some(CpuSpent {
        server_seconds,
        generator_seconds,
        machine_busy_cores,
        cores: cores(),
        wall_seconds: wall,
    });
    report
}

/// Seconds of CPU `pid` has spent since it started (every thread, user and system).
pub fn process_seconds(pid: u32) -> Option<f64> {
    process_ticks(pid).map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds used so far by the process `server` and by this one, when the server's is
/// known and readable.
pub fn server_and_own_seconds(server: Option<u32>) -> Option<(f64, f64)> {
    server
        .and_then(process_seconds)
        .zip(process_seconds(std::process::id()))
}

/// The cores this machine gives the suite.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `utime + stime` of every thread of `pid`, in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&stat)
}

/// Fields 14 and 15 of `/proc/<pid>/stat`, counted after the command name (which is in
/// parentheses and may itself hold spaces and parentheses).
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// (busy, total) ticks of every core, from the `cpu` line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Busy is everything but idle and iowait.
fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_stat_line_is_read_after_its_name() {
        // Field 14 (utime) = 120, field 15 (stime) = 30; the name holds ") (" on purpose.
        let stat = "4242 (tokio) (x) R 1 4242 4242 0 -1 4194560 500 0 0 0 120 30 0 0 20 0 3 0";
        assert_eq!(parse_process_ticks(stat), Some(150));
        assert_eq!(parse_process_ticks("4242 (cut"), None);
    }

    #[test]
    fn the_machine_line_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 40 1 2 0 0 0\ncpu0 50 2 25 400 20 0 1 0 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((158, 998)));
    }

    fn spin(millis: u128) {
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < millis {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
    }

    #[tokio::test]
    async fn a_measured_phase_carries_the_cpu_it_spent_per_request() {
        let phase = async {
            spin(200);
            let mut latencies =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            latencies.record_n(100, 10).expect("recorded");
            LoadReport {
                requests: 10,
                errors: 0,
                elapsed: std::time::Duration::from_millis(200),
                latencies,
                cpu: None,
            }
        };
        // This process stands for the server too: both counters must move.
        let report = measure(Some(std::process::id()), phase).await;
        let cpu = report.cpu.expect("measured");
        assert!(cpu.generator_seconds > 0.0, "{cpu:?}");
        assert!(cpu.server_seconds.is_some_and(|s| s > 0.0), "{cpu:?}");
        assert!(cpu.wall_seconds >= 0.2, "{cpu:?}");
        assert!(cpu.machine_busy_cores.is_some_and(|c| c > 0.0), "{cpu:?}");
        let json = report.json();
        let per_request = json["cpu"]["generator_us_per_request"]
            .as_f64()
            .expect("a number");
        assert!((per_request - cpu.generator_seconds * 1e6 / 10.0).abs() < 1e-6);
        // Without a server, only the load generator's side is known.
        let alone = measure(None, async { report.clone() }).await;
        assert!(alone.cpu.expect("measured").server_seconds.is_none());
    }

    #[test]
    fn this_process_is_seen_spending_cpu() {
        let before = process_ticks(std::process::id()).expect("own stat");
        spin(200);
        let after = process_ticks(std::process::id()).expect("own stat");
        assert!(
            after > before,
            "{before} → {after} ticks over 200 ms of spinning"
        );
    }
}
