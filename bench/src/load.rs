//! A closed-loop load generator: `in_flight` workers each issue one request
//! after another for a fixed duration; latencies go to an HDR histogram.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::h2_client::Connection;

/// The two servers a scenario's load phases run against: their connections, and their
/// processes (whose CPU each phase records, [`crate::cpu::measure`]).
#[derive(Debug, Clone, Copy)]
pub struct Peers<'a> {
    /// Connections to the Signpost control plane.
    pub signpost: &'a [Connection],
    /// Connections to etcd.
    pub etcd: &'a [Connection],
    /// Their process ids.
    pub pids: crate::cpu::Servers,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Every request's latency, in microseconds.
    pub latencies: Histogram<u64>,
    /// CPU spent by the server and this load generator, when measured ([`crate::cpu::measure`]).
    pub cpu: Option<crate::cpu::CpuSpent>,
}

impl LoadReport {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The server's CPU per request, in microseconds, when measured.
    pub fn server_us_per_request(&self) -> Option<f64> {
        let seconds = self.cpu?.server_seconds?;
        Some(seconds * 1e6 / self.requests.max(1) as f64)
    }

    /// A JSON object for reports.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests, "errors": self.errors, "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.rate(),
            "p50_us": self.latencies.value_at_quantile(0.5),
            "p99_us": self.latencies.value_at_quantile(0.99),
            "max_us": self.latencies.max(),
            "cpu": self.cpu.map(|cpu| cpu.json(self.requests)),
        })
    }

    /// One report for two runs of the same load: requests, time and CPU added up,
    /// latencies in one histogram.
    pub fn merge(mut self, other: LoadReport) -> LoadReport {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.add(&other.latencies).expect("same bounds");
        self.cpu = match (self.cpu, other.cpu) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

/// How many turns each compared load gets ([`in_turns`]).
pub const ROUNDS: u32 = 2;

/// One load phase, started anew each time it is called.
pub type Phase<'a> =
    Box<dyn FnMut(Duration) -> Pin<Box<dyn Future<Output = LoadReport> + 'a>> + 'a>;

/// A phase that runs `load` for each turn and records the CPU `server` and this load
/// generator spend meanwhile ([`crate::cpu::measure`]).
pub fn measured<'a, F, Fut>(server: Option<u32>, mut load: F) -> Phase<'a>
where
    F: FnMut(Duration) -> Fut + 'a,
    Fut: Future<Output = LoadReport> + 'a,
{
    Box::new(move |turn| Box::pin(crate::cpu::measure(server, load(turn))))
}

/// Runs `phases` in turns, `rounds` times over (A, B, A, B, ...), each turn for
/// `duration / rounds`, and gives each phase's turns merged into one report. Loads
/// compared with each other share whatever the machine's neighbours do during the run,
/// instead of one of them meeting a busy minute alone.
pub async fn in_turns<const N: usize>(
    rounds: u32,
    duration: Duration,
    mut phases: [Phase<'_>; N],
) -> [LoadReport; N] {
    let turn = duration / rounds.max(1);
    let mut reports: [Option<LoadReport>; N] = std::array::from_fn(|_| None);
    for _ in 0..rounds.max(1) {
        for (phase, report) in phases.iter_mut().zip(reports.iter_mut()) {
            let this = phase(turn).await;
            *report = Some(match report.take() {
                Some(earlier) => earlier.merge(this),
                None => this,
            });
        }
    }
    reports.map(|report| report.expect("every phase ran at least once"))
}

/// Runs `call(worker, i)` from `in_flight` workers for `duration`.
pub async fn run<F, Fut>(in_flight: usize, duration: Duration, call: F) -> LoadReport
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for worker in 0..in_flight {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if !call(worker, i).await {
                    errors += 1;
                }
                let _ = histogram.record(sent.elapsed().as_micros().max(1) as u64);
                i += 1;
            }
            (histogram, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut errors = 0;
    for worker in workers {
        let (histogram, worker_errors) = worker.await.expect("load worker");
        all.add(histogram).expect("same bounds");
        errors += worker_errors;
    }
    LoadReport {
        requests: all.len(),
        errors,
        elapsed: started.elapsed(),
        latencies: all,
        cpu: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn report(requests: u64, latency_us: u64, elapsed: Duration) -> LoadReport {
        let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        latencies.record_n(latency_us, requests).expect("recorded");
        LoadReport {
            requests,
            errors: 0,
            elapsed,
            latencies,
            cpu: None,
        }
    }

    #[tokio::test]
    async fn loads_take_turns_and_each_ones_turns_are_merged() {
        let calls = Mutex::new(Vec::new());
        let phase = |name: &'static str, requests: u64, latency_us: u64| -> Phase<'_> {
            let calls = &calls;
            Box::new(move |turn| {
                calls.lock().expect("calls").push((name, turn));
                Box::pin(async move { report(requests, latency_us, turn) })
            })
        };
        let reports = in_turns(
            2,
            Duration::from_secs(10),
            [phase("a", 100, 10), phase("b", 7, 1_500)],
        )
        .await;
        let five = Duration::from_secs(5);
        assert_eq!(
            *calls.lock().expect("calls"),
            [("a", five), ("b", five), ("a", five), ("b", five)]
        );
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].requests, 200);
        assert_eq!(reports[0].elapsed, Duration::from_secs(10));
        assert_eq!(reports[1].requests, 14);
        assert!((reports[0].rate() - 20.0).abs() < 1e-9);
        // Each keeps its own latencies: b's are never mixed into a's.
        assert_eq!(reports[0].json()["max_us"], 10);
        assert_eq!(reports[1].json()["p50_us"], 1_500);
    }
}
