//! A closed-loop load generator: `in_flight` workers each issue one request
//! after another for a fixed duration; latencies go to an HDR histogram.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::Channel;

/// The two servers a scenario's load phases run against: their connections, and their
/// processes (whose CPU each phase records, [`crate::cpu::measure`]).
#[derive(Debug, Clone, Copy)]
pub struct Peers<'a> {
    /// Connections to the Signpost control plane.
    pub signpost: &'a [Channel],
    /// Connections to etcd.
    pub etcd: &'a [Channel],
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
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// CPU spent by the server and this load generator, when measured ([`crate::cpu::measure`]).
    pub cpu: Option<crate::cpu::CpuSpent>,
}

impl LoadReport {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// A JSON object for reports.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests, "errors": self.errors, "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.rate(), "p50_us": self.p50_us, "p99_us": self.p99_us, "max_us": self.max_us,
            "cpu": self.cpu.map(|cpu| cpu.json(self.requests)),
        })
    }
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
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
        max_us: all.max(),
        cpu: None,
    }
}
