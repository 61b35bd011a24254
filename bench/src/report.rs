//! Turns the JSON lines the scenario runs print into `BENCHMARKS.md`: the
//! machine, a summary table (Signpost, etcd, ratio, goal, met), details per
//! scenario, the event-log micro-benchmark, and the notes kept in
//! `bench/FINDINGS.md` (profiling evidence, before/after), copied verbatim.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;

const MIB: f64 = 1024.0 * 1024.0;

/// One row of the summary.
struct Row {
    scenario: &'static str,
    measure: String,
    signpost: String,
    etcd: String,
    ratio: String,
    goal: &'static str,
    met: Option<bool>,
}

impl Row {
    /// A row that only gives context (no etcd figure, no goal to meet) under the scenario
    /// above it.
    fn context(measure: String, signpost: String, goal: &'static str) -> Self {
        Row {
            scenario: "",
            measure,
            signpost,
            etcd: "n/a".into(),
            ratio: "n/a".into(),
            goal,
            met: None,
        }
    }
}

fn f(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn rate(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{}/s", thousands(v)))
}

fn events_rate(value: Option<f64>) -> String {
    rate(value).replace("/s", " events/s")
}

fn secs(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{v:.2} s"))
}

fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| {
        if v < 10.0 {
            format!("{v:.2} ms")
        } else {
            format!("{v:.1} ms")
        }
    })
}

fn us_as_ms(value: Option<f64>) -> String {
    ms(value.map(|v| v / 1000.0))
}

fn mib(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{:.1} MiB", v / MIB))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".into(),
    }
}

/// A load's CPU per request in µs: (server under test, load generator), and the cores
/// the machine has (see `cpu.rs`).
fn cpu_per_request(load: &Value) -> Option<(f64, f64, f64)> {
    let cpu = &load["cpu"];
    Some((
        f(&cpu["server_us_per_request"])?,
        f(&cpu["generator_us_per_request"])?,
        f(&cpu["cores"])?,
    ))
}

fn us(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{v:.1} µs"))
}

/// The row that says what a goal leaves per request on this machine's cores: the
/// server and the load generator share them, so `goal` requests a second leave
/// `cores / goal` of CPU for both, to compare with what `load` and a do-nothing call
/// (`floor`) cost in the same run.
fn cpu_budget_row(measure: &str, load: &Value, floor: &Value, goal: Option<f64>) -> Row {
    let cost = cpu_per_request(load);
    let floor = cpu_per_request(floor);
    let budget = cost
        .zip(goal)
        .map(|((_, _, cores), goal)| cores * 1e6 / goal);
    Row {
        scenario: "",
        measure: measure.into(),
        signpost: cost.map_or("n/a".into(), |(server, generator, _)| {
            format!(
                "server {} + load generator {} = {}",
                us(Some(server)),
                us(Some(generator)),
                us(Some(server + generator))
            )
        }),
        etcd: format!(
            "the goal leaves {} for both; a do-nothing call costs {}{}",
            us(budget),
            floor.map_or("n/a".into(), |(server, generator, _)| format!(
                "{} + {}",
                us(Some(server)),
                us(Some(generator))
            )),
            cost.map_or(String::new(), |(server, generator, cores)| format!(
                "; bound at this cost: {}",
                rate(Some(cores * 1e6 / (server + generator)))
            )),
        ),
        ratio: "n/a".into(),
        goal: "context: CPU per request, server and load generator on the same cores",
        met: None,
    }
}

/// The row that says what the rebuild goal leaves per event on this machine's cores, next
/// to the CPU a first start spent per event until every projection was built, and a
/// restart's (every projection but the audit index) until it served.
/// A first start's timings from its `cold_start::rebuild` figures: "listening after …,
/// first Resolve after …, every projection built after … (rate, CPU of CPU)".
fn first_start_timings(r: &Value) -> String {
    format!(
        "listening after {:.2} s, first Resolve after {:.2} s, every projection built after {:.2} s ({}, {} of CPU)",
        f(&r["rebuild_listening_seconds"]).unwrap_or(0.0),
        f(&r["rebuild_first_resolve_seconds"]).unwrap_or(0.0),
        f(&r["rebuild_seconds"]).unwrap_or(0.0),
        events_rate(f(&r["rebuild_events_per_second"])),
        secs(f(&r["rebuild_cpu_seconds"])),
    )
}

fn rebuild_cpu_row(cold_start: &Value, goal: f64) -> Row {
    let events = f(&cold_start["events"]).filter(|&e| e > 0.0);
    let per_event = |key: &str| {
        f(&cold_start[key])
            .zip(events)
            .map(|(seconds, events)| seconds * 1e6 / events)
    };
    let (first, restart) = (
        per_event("rebuild_cpu_seconds"),
        per_event("restart_cpu_seconds"),
    );
    let cores = f(&cold_start["cores"]);
    Row {
        scenario: "",
        measure: "limit: CPU per event, every thread of the server (restart: every projection but the audit index)".into(),
        signpost: format!("first start {}; restart {}", us(first), us(restart)),
        etcd: format!(
            "the goal leaves {}{}",
            cores.map_or("n/a".into(), |c| format!(
                "{} on {c} cores",
                us(Some(c * 1e6 / goal))
            )),
            first.zip(cores).map_or(String::new(), |(cost, c)| format!(
                "; bound at this cost: {}",
                events_rate(Some(c * 1e6 / cost))
            )),
        ),
        ratio: "n/a".into(),
        goal: "context: CPU per event, all cores counted",
        met: None,
    }
}

fn met(ok: Option<bool>, quick: bool) -> String {
    if quick {
        return "(quick run)".into();
    }
    match ok {
        Some(true) => "**met**".into(),
        Some(false) => "**missed**".into(),
        None => "n/a".into(),
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory} memory, Linux {kernel}")
}

/// Every load phase in `results` with failed calls: `scenario.path: errors`. A quick run
/// (CI's) fails on any, so the suite proves that every server it measures answers every
/// call it is sent, the ceilings included.
pub fn failed_calls(results: &str) -> anyhow::Result<Vec<String>> {
    fn walk(value: &Value, path: &str, failed: &mut Vec<String>) {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields {
                    match (key.as_str(), field.as_u64()) {
                        ("errors", Some(errors)) if errors > 0 => {
                            failed.push(format!("{path}: {errors}"));
                        }
                        _ => walk(field, &format!("{path}.{key}"), failed),
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{index}]"), failed);
                }
            }
            _ => {}
        }
    }
    let mut failed = Vec::new();
    for line in results.lines().filter(|l| l.trim_start().starts_with('{')) {
        let value: Value = serde_json::from_str(line)?;
        let scenario = value["scenario"].as_str().unwrap_or("?");
        walk(&value["result"], scenario, &mut failed);
    }
    Ok(failed)
}

/// Renders the report.
pub fn render(
    results: &str,
    measured_at: chrono::DateTime<chrono::Utc>,
    commit: &str,
    etcd_version: &str,
    quick: bool,
) -> anyhow::Result<String> {
    let mut by: HashMap<String, Value> = HashMap::new();
    for line in results.lines().filter(|l| l.trim_start().starts_with('{')) {
        let value: Value = serde_json::from_str(line)?;
        if let Some(name) = value["scenario"].as_str() {
            by.insert(name.to_owned(), value["result"].clone());
        }
    }
    let null = Value::Null;
    let get = |name: &str| by.get(name).unwrap_or(&null);
    let mut rows = Vec::new();

    // 1. Durable writes.
    let w = get("writes");
    let (sp, et) = (f(&w["signpost"]["per_second"]), f(&w["etcd"]["per_second"]));
    let (sp99, et99) = (f(&w["signpost"]["p99_us"]), f(&w["etcd"]["p99_us"]));
    rows.push(Row {
        scenario: "1. Durable writes",
        measure: format!(
            "{} clients, throughput",
            w["in_flight"].as_u64().unwrap_or(64)
        ),
        signpost: rate(sp),
        etcd: rate(et),
        ratio: ratio(sp, et),
        goal: "≥ 2× etcd",
        met: sp.zip(et).map(|(a, b)| a >= 2.0 * b),
    });
    rows.push(Row {
        scenario: "",
        measure: "p99 latency".into(),
        signpost: us_as_ms(sp99),
        etcd: us_as_ms(et99),
        ratio: ratio(sp99, et99),
        goal: "≤ etcd",
        met: sp99.zip(et99).map(|(a, b)| a <= b),
    });
    let (seq, fsync) = (
        f(&w["signpost_sequential"]["per_second"]),
        f(&w["fdatasync_per_second"]),
    );
    rows.push(Row {
        scenario: "",
        measure: "1 client vs raw fdatasync".into(),
        signpost: rate(seq),
        etcd: format!(
            "{} (etcd 1 client: {})",
            rate(fsync).replace("/s", " fdatasync/s"),
            rate(f(&w["etcd_sequential"]["per_second"]))
        ),
        ratio: ratio(seq, fsync),
        goal: "≥ 70% of fdatasync",
        met: seq.zip(fsync).map(|(a, b)| a >= 0.7 * b),
    });
    // The limits of this client on this machine (same run): nothing can beat a do-nothing
    // call, and a sequential durable write costs at least a round trip plus an fdatasync.
    let noop_many = f(&w["noop_unary"]["per_second"]);
    rows.push(Row {
        scenario: "",
        measure: "limit: do-nothing unary, same client and in-flight count".into(),
        signpost: rate(sp),
        etcd: format!(
            "ceiling {} (2× etcd = {})",
            rate(noop_many),
            rate(et.map(|e| 2.0 * e))
        ),
        ratio: ratio(sp, noop_many),
        goal: "context: is 2× etcd below the ceiling?",
        met: None,
    });
    // A durable write's own ceiling: a server whose calls only append to Signpost's log.
    let durable_many = f(&w["durable_noop"]["per_second"]);
    if durable_many.is_some() {
        rows.push(Row {
            scenario: "",
            measure: "limit: durable do-nothing (each call one 200-byte append to Signpost's log: group commit, fdatasync; no command, no projection), same client and in-flight count".into(),
            signpost: rate(sp),
            etcd: format!(
                "ceiling {} (2× etcd = {})",
                rate(durable_many),
                rate(et.map(|e| 2.0 * e))
            ),
            ratio: ratio(sp, durable_many),
            goal: "context: is 2× etcd below a durable write's ceiling?",
            met: None,
        });
    }
    // The same, carrying `AssignGroup`'s messages: the load generator's own `AssignGroup`
    // calls, each request read and its event appended as the control plane would, each
    // answered with the control plane's answer to such a call.
    let durable_assign = f(&w["durable_assign"]["per_second"]);
    if durable_assign.is_some() {
        rows.push(Row {
            scenario: "",
            measure: "limit: durable do-nothing `AssignGroup` (the same calls from the same client: each request read, its `group_assigned` event appended to Signpost's log as above, the answer the control plane's own to such a call; nothing decided, no projection)".into(),
            signpost: rate(sp),
            etcd: format!(
                "ceiling {} (2× etcd = {})",
                rate(durable_assign),
                rate(et.map(|e| 2.0 * e))
            ),
            ratio: ratio(sp, durable_assign),
            goal: "context: is 2× etcd below the ceiling of a durable write carrying these messages?",
            met: None,
        });
    }
    let noop_one_us = f(&w["noop_unary_sequential"]["p50_us"]);
    let sequential_limit = noop_one_us
        .zip(fsync)
        .map(|(rtt_us, fsync)| 1.0 / (rtt_us / 1e6 + 1.0 / fsync));
    rows.push(Row {
        scenario: "",
        measure: "limit: 1 client, round trip (do-nothing p50) + one fdatasync".into(),
        signpost: rate(seq),
        etcd: format!(
            "limit {} (round trip {}, 70% of fdatasync = {})",
            rate(sequential_limit),
            us_as_ms(noop_one_us),
            rate(fsync.map(|f| 0.7 * f))
        ),
        ratio: ratio(seq, sequential_limit),
        goal: "context: is 70% of fdatasync below the limit?",
        met: None,
    });
    let durable_one = f(&w["durable_noop_sequential"]["per_second"]);
    if durable_one.is_some() {
        rows.push(Row {
            scenario: "",
            measure: "limit: durable do-nothing, 1 client (the limit above, measured)".into(),
            signpost: rate(seq),
            etcd: format!(
                "limit {} (70% of fdatasync = {})",
                rate(durable_one),
                rate(fsync.map(|f| 0.7 * f))
            ),
            ratio: ratio(seq, durable_one),
            goal: "context: is 70% of fdatasync below a durable write's own limit?",
            met: None,
        });
    }
    rows.push(cpu_budget_row(
        "limit: CPU per write at 2× etcd",
        &w["signpost"],
        &w["noop_unary"],
        et.map(|e| 2.0 * e),
    ));

    // 2. Lookups.
    let l = get("lookups");
    let (sp, et, noop) = (
        f(&l["signpost"]["per_second"]),
        f(&l["etcd"]["per_second"]),
        f(&l["noop_unary"]["per_second"]),
    );
    rows.push(Row {
        scenario: "2. Lookups",
        measure: format!(
            "Resolve / Range among {} , {} in flight",
            thousands(f(&l["routes"]).unwrap_or(0.0)),
            l["in_flight"].as_u64().unwrap_or(64)
        )
        .replace(" ,", ","),
        signpost: rate(sp),
        etcd: rate(et),
        ratio: ratio(sp, et),
        goal: "≥ 5× etcd",
        met: sp.zip(et).map(|(a, b)| a >= 5.0 * b),
    });
    rows.push(Row {
        scenario: "",
        measure: "vs do-nothing unary (same client)".into(),
        signpost: rate(sp),
        etcd: format!("ceiling {}", rate(noop)),
        ratio: ratio(sp, noop),
        goal: "≥ 60% of ceiling",
        met: sp.zip(noop).map(|(a, b)| a >= 0.6 * b),
    });
    // The same answer from a server that only sends it. Not a ceiling: measured in turns,
    // it is within their noise of `Resolve` itself, which has reached and passed it
    // (bench/FINDINGS.md, round 24); what it shows is how much of `Resolve`'s cost is its
    // answer's (the do-nothing call above answers two bytes).
    let answer = f(&l["answer_ceiling"]["per_second"]);
    if answer.is_some() {
        rows.push(Row {
            scenario: "",
            measure: "context: the same answer from a do-nothing Resolve (every call answered with one route's bytes: no lookup, no authorization), same client and in-flight count".into(),
            signpost: rate(sp),
            etcd: format!(
                "{} (5× etcd = {})",
                rate(answer),
                rate(et.map(|e| 5.0 * e))
            ),
            ratio: ratio(sp, answer),
            goal: "context: how near Resolve is to only sending its answer (not a ceiling: within the noise of turns, Resolve has passed it)",
            met: None,
        });
    }
    rows.push(cpu_budget_row(
        "limit: CPU per Resolve at 5× etcd",
        &l["signpost"],
        &l["noop_unary"],
        et.map(|e| 5.0 * e),
    ));

    // 3. Fan-out.
    let fo = get("fan_out");
    let (spm, etm) = (f(&fo["signpost"]["median_ms"]), f(&fo["etcd"]["median_ms"]));
    let (spw, etw) = (f(&fo["signpost"]["worst_ms"]), f(&fo["etcd"]["worst_ms"]));
    let streams = fo["streams"].as_u64().unwrap_or(0);
    rows.push(Row {
        scenario: "3. Fan-out",
        measure: format!(
            "{} watchers, median commit→delivery",
            thousands(streams as f64)
        ),
        signpost: ms(spm),
        etcd: ms(etm),
        ratio: ratio(spm, etm),
        goal: "≤ 30 ms",
        met: spm.map(|v| v <= 30.0),
    });
    rows.push(Row {
        scenario: "",
        measure: "worst commit→delivery".into(),
        signpost: ms(spw),
        etcd: ms(etw),
        ratio: ratio(spw, etw),
        goal: "≤ 50 ms",
        met: spw.map(|v| v <= 50.0),
    });
    // The limit of this client on this machine (same run): a server that only streams.
    let (cem, cew) = (
        f(&fo["ceiling"]["median_ms"]),
        f(&fo["ceiling"]["worst_ms"]),
    );
    rows.push(Row {
        scenario: "",
        measure: "limit: do-nothing stream server, same client, median / worst".into(),
        signpost: format!("{} / {}", ms(spm), ms(spw)),
        etcd: format!("limit {} / {}", ms(cem), ms(cew)),
        ratio: format!("{} / {}", ratio(spm, cem), ratio(spw, cew)),
        goal: "context: are 30 / 50 ms above the limit?",
        met: None,
    });
    // The same server sending each change as a delta as large as the control plane's.
    if !fo["route_floor"].is_null() {
        let (rfm, rfw) = (
            f(&fo["route_floor"]["median_ms"]),
            f(&fo["route_floor"]["worst_ms"]),
        );
        let bytes = fo["delta_route_bytes"].as_u64().unwrap_or(0);
        rows.push(Row {
            scenario: "",
            measure: format!(
                "limit: the same server, each change a `WatchRoutes` delta of the control plane's size (a {bytes}-byte route, encoded once, written by the control plane's own stream body), same client, median / worst"
            ),
            signpost: format!("{} / {}", ms(spm), ms(spw)),
            etcd: format!("limit {} / {}", ms(rfm), ms(rfw)),
            ratio: format!("{} / {}", ratio(spm, rfm), ratio(spw, rfw)),
            goal: "context: are 30 / 50 ms above the limit for messages of this size?",
            met: None,
        });
    }
    let (spmem, etmem) = (
        f(&fo["signpost"]["memory_per_stream_bytes"]),
        f(&fo["etcd"]["memory_per_stream_bytes"]),
    );
    rows.push(Row {
        scenario: "",
        measure: "server memory per watcher".into(),
        signpost: spmem.map_or("n/a".into(), |v| format!("{:.1} KiB", v / 1024.0)),
        etcd: etmem.map_or("n/a".into(), |v| format!("{:.1} KiB", v / 1024.0)),
        ratio: ratio(spmem, etmem),
        goal: "< 16 KiB",
        met: spmem.map(|v| v < 16.0 * 1024.0),
    });

    // 4. Edge.
    let e = get("edge");
    let p99 = f(&e["lookup"]["p99_ns"]);
    rows.push(Row {
        scenario: "4. Edge",
        measure: format!(
            "in-process lookup p99 among {}",
            thousands(f(&e["lookup"]["routes"]).unwrap_or(0.0))
        ),
        signpost: p99.map_or("n/a".into(), |v| format!("{v:.0} ns")),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "< 1 µs",
        met: p99.map(|v| v < 1000.0),
    });
    let discover = f(&e["discover"]["per_second"]);
    rows.push(Row {
        scenario: "",
        measure: format!(
            "HTTP discover ({}, {} connections)",
            e["discover"]["generator"].as_str().unwrap_or("?"),
            e["discover"]["connections"].as_u64().unwrap_or(0)
        ),
        signpost: rate(discover),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "≥ 30,000/s",
        met: discover.map(|v| v >= 30_000.0),
    });

    // 5. Cold start.
    let c = get("cold_start");
    let rebuild = f(&c["rebuild_events_per_second"]);
    let first_starts = c["first_starts"].as_array().map_or(0, Vec::len);
    let median_of = if first_starts > 1 {
        format!(" (the median of {first_starts} first starts)")
    } else {
        String::new()
    };
    rows.push(Row {
        scenario: "5. Cold start",
        measure: format!(
            "rebuild every projection from {} events{median_of}",
            thousands(f(&c["events"]).unwrap_or(0.0))
        ),
        signpost: events_rate(rebuild),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "≥ 500,000 events/s",
        met: rebuild.map(|v| v >= 500_000.0),
    });
    let lifecycle = get("cold_start_lifecycle");
    let lifecycle_rebuild = f(&lifecycle["rebuild_events_per_second"]);
    if lifecycle_rebuild.is_some() {
        rows.push(Row::context(
            "context: the same rebuild, events in lifecycle order (group assignments to active connections)".into(),
            events_rate(lifecycle_rebuild),
            "context: the population above folds its group assignments before their organization exists",
        ));
    }
    let no_checkpoint = get("cold_start_no_checkpoint");
    let no_checkpoint_rebuild = f(&no_checkpoint["rebuild_events_per_second"]);
    if no_checkpoint_rebuild.is_some() {
        rows.push(Row::context(
            "context: the same rebuild with the log's own index built from its segments too (no index checkpoint: the log's last close was not clean)".into(),
            format!(
                "{} (every projection built after {})",
                events_rate(no_checkpoint_rebuild),
                secs(f(&no_checkpoint["rebuild_seconds"]))
            ),
            "context: the row above takes the log's index from the checkpoint its last clean close saved (checked against the segments' frames)",
        ));
    }
    let serve_first = get("cold_start_serve_first");
    let serve_first_rebuild = f(&serve_first["rebuild_events_per_second"]);
    if serve_first_rebuild.is_some() {
        rows.push(Row::context(
            "context: the same rebuild serving first (`--audit-serve-first-behind 1`: the server serves once its read model has caught up, and the audit index is rebuilt behind it)".into(),
            format!(
                "{} (serving after {})",
                events_rate(serve_first_rebuild),
                secs(f(&serve_first["rebuild_first_resolve_seconds"]))
            ),
            "context: serving sooner, every projection later (the default for a catch-up of more than 2^20 events)",
        ));
    }
    rows.push(rebuild_cpu_row(c, 500_000.0));
    let restart_rate = f(&c["restart_events_per_second"]);
    rows.push(Row::context(
        "limit: a restart's pace, which builds every projection but the audit index (events / spawn → listening)".into(),
        events_rate(restart_rate),
        "context: how much of the goal's time the audit index would have left",
    ));
    let serving = f(&c["restart_first_resolve_seconds"]);
    rows.push(Row {
        scenario: "",
        measure: "restart to serving (spawn → first Resolve)".into(),
        signpost: secs(serving),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "< 3 s",
        met: serving.map(|v| v < 3.0),
    });
    let first_serving = f(&c["rebuild_first_resolve_seconds"]);
    rows.push(Row {
        scenario: "",
        measure:
                format!("first start to serving (spawn → first Resolve; by default a catch-up of a million events builds every projection first, in one fold){median_of}"),
        signpost: secs(first_serving),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "< 3 s",
        met: first_serving.map(|v| v < 3.0),
    });
    if let Some(lifecycle_serving) = f(&lifecycle["rebuild_first_resolve_seconds"]) {
        rows.push(Row::context(
            "context: first start to serving, events in lifecycle order".into(),
            format!("{lifecycle_serving:.2} s"),
            "context: the same goal on the lifecycle-order log",
        ));
    }

    // 6. Snapshot.
    let s = get("snapshot");
    let ready = f(&s["edge_ready_ms"]);
    let etcd_list = f(&s["etcd_list_ms"]);
    rows.push(Row {
        scenario: "6. Snapshot",
        measure: format!(
            "fresh edge ready with {} routes (etcd: list the prefix)",
            thousands(f(&s["routes"]).unwrap_or(0.0))
        ),
        signpost: ms(ready),
        etcd: ms(etcd_list),
        ratio: ratio(ready, etcd_list),
        goal: "≤ 300 ms",
        met: ready.map(|v| v <= 300.0),
    });

    // 7. Audit.
    let a = get("audit");
    let available = a["available"].as_bool();
    let page = f(&a["page_sequential"]["p99_us"]);
    let export = f(&a["export_per_second"]);
    let na = |v: String| {
        if available == Some(false) {
            "not available".to_owned()
        } else {
            v
        }
    };
    rows.push(Row {
        scenario: "7. Audit",
        measure: format!(
            "one page (50 entries, one org, time range) p99, {} events / {} orgs",
            thousands(f(&a["events"]).unwrap_or(0.0)),
            thousands(f(&a["organizations"]).unwrap_or(0.0))
        ),
        signpost: na(us_as_ms(page)),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "< 5 ms",
        met: page.map(|v| v < 5000.0),
    });
    rows.push(Row {
        scenario: "",
        measure: "export".into(),
        signpost: na(events_rate(export)),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "≥ 200,000 events/s",
        met: export.map(|v| v >= 200_000.0),
    });

    // 8. Memory.
    let m = get("memory");
    let cp = f(&m["control_plane_streams_bytes"]);
    let edge_rss = f(&m["edge_bytes"]);
    rows.push(Row {
        scenario: "8. Memory",
        measure: format!(
            "control plane RSS, {} routes + {} streams (etcd: keys + watchers)",
            thousands(f(&m["routes"]).unwrap_or(0.0)),
            thousands(f(&m["streams"]).unwrap_or(0.0))
        ),
        signpost: mib(cp),
        etcd: mib(f(&m["etcd_watchers_bytes"])),
        ratio: ratio(cp, f(&m["etcd_watchers_bytes"])),
        goal: "< 300 MiB",
        met: cp.map(|v| v < 300.0 * MIB),
    });
    if let Some(restarted) = f(&m["control_plane_restarted_bytes"]).filter(|v| *v > 0.0) {
        rows.push(Row::context(
            format!(
                "context: control plane RSS after a restart on the same data, {} routes, no stream open",
                thousands(f(&m["routes"]).unwrap_or(0.0))
            ),
            mib(Some(restarted)),
            "context: the row above follows a first start, which built every projection",
        ));
    }
    if let Some(with_links) = f(&m["control_plane_streams_with_links_bytes"]).filter(|v| *v > 0.0) {
        rows.push(Row::context(
            format!(
                "context: the same first start and {} streams, {} organizations that each also hold the setup link their connection was configured through (spent), as a real lifecycle leaves them",
                thousands(f(&m["streams"]).unwrap_or(0.0)),
                thousands(f(&m["routes"]).unwrap_or(0.0))
            ),
            mib(Some(with_links)),
            "context: the goal's measure on the population a real lifecycle leaves (the first row's has no setup links)",
        ));
    }
    if let Some(with_links) = f(&m["control_plane_restarted_with_links_bytes"]).filter(|v| *v > 0.0)
    {
        rows.push(Row::context(
            format!(
                "context: those {} organizations with their setup links after a restart, no stream open",
                thousands(f(&m["routes"]).unwrap_or(0.0))
            ),
            mib(Some(with_links)),
            "context: the restart row's population has no setup links",
        ));
    }
    rows.push(Row {
        scenario: "",
        measure: format!(
            "edge RSS with {} routes",
            thousands(f(&m["routes"]).unwrap_or(0.0))
        ),
        signpost: mib(edge_rss),
        etcd: "n/a".into(),
        ratio: "n/a".into(),
        goal: "< 64 MiB",
        met: edge_rss.map(|v| v < 64.0 * MIB),
    });

    let mut out = String::new();
    writeln!(out, "# Benchmarks: Signpost against etcd\n")?;
    writeln!(
        out,
        "Generated by `bench/run.sh{}` (do not edit by hand: notes belong in `bench/FINDINGS.md`, which is copied in below).\n",
        if quick { " --quick" } else { "" }
    )?;
    if quick {
        writeln!(
            out,
            "**This is a `--quick` run: tiny sizes and one-second phases. It proves the suite works; its figures measure nothing.**\n"
        )?;
    }
    writeln!(out, "- Machine: {}", machine())?;
    writeln!(
        out,
        "- Date: {} (when the results were written)",
        measured_at.format("%Y-%m-%d %H:%M UTC")
    )?;
    writeln!(out, "- Commit: `{commit}`")?;
    writeln!(out, "- etcd: {etcd_version}, one member on loopback, `--quota-backend-bytes 8589934592`, data directory on the same disk as Signpost's")?;
    writeln!(out, "- Both servers run on the same 2 cores as the load generator; the machine is shared with other work, so figures move by ±10-20% between runs.\n")?;

    writeln!(out, "## Summary\n")?;
    writeln!(
        out,
        "| Scenario | Measure | Signpost | etcd | Signpost / etcd | Goal | Met |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for row in &rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.measure,
            row.signpost,
            row.etcd,
            row.ratio,
            row.goal,
            met(row.met, quick)
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Details\n")?;
    detail(
        &mut out,
        "1. Durable writes",
        w,
        &[
            ("Signpost AssignGroup (BASIC view), concurrent", "signpost"),
            ("etcd put 200 B, concurrent", "etcd"),
            (
                "Signpost AssignGroup (BASIC view), 1 client",
                "signpost_sequential",
            ),
            ("etcd put 200 B, 1 client", "etcd_sequential"),
            ("do-nothing unary, concurrent (ceiling)", "noop_unary"),
            (
                "do-nothing unary, 1 client (round trip)",
                "noop_unary_sequential",
            ),
            (
                "durable do-nothing (one append to Signpost's log), concurrent",
                "durable_noop",
            ),
            (
                "durable do-nothing (one append to Signpost's log), 1 client",
                "durable_noop_sequential",
            ),
            (
                "durable do-nothing AssignGroup (its event appended, the control plane's answer), concurrent",
                "durable_assign",
            ),
        ],
    )?;
    writeln!(
        out,
        "Raw fdatasync (200-byte write + fdatasync, Signpost's data directory): {} just before the sequential Signpost client, {} just after (the average is the limit compared with).\n",
        rate(f(&w["fdatasync_before"])),
        rate(f(&w["fdatasync_after"]))
    )?;
    detail(
        &mut out,
        "2. Lookups",
        l,
        &[
            ("Signpost Resolve", "signpost"),
            ("do-nothing unary (grpc.health Check)", "noop_unary"),
            (
                "do-nothing Resolve (one fixed answer; a child process)",
                "answer_ceiling",
            ),
            ("etcd serializable Range", "etcd"),
        ],
    )?;
    writeln!(
        out,
        "etcd values are {} bytes, the encoded size of one Signpost route; loading the {} keys took {:.1} s.\n",
        l["value_bytes"], l["routes"], f(&l["etcd_load_seconds"]).unwrap_or(0.0)
    )?;
    let lists = get("admin_lists");
    if !lists.is_null() {
        let (one, all) = (&lists["of_one_organization"], &lists["first_page_of_all"]);
        writeln!(
            out,
            "Admin lists among {} organizations (no goal), one call at a time, {} of each taking turns: `ListConnections` of one organization p50 {}, p99 {}, max {}; the first page of all (page size 1) p50 {}, p99 {}, max {}.\n",
            f(&lists["organizations"]).map(thousands).unwrap_or_default(),
            one["calls"],
            us_as_ms(f(&one["p50_us"])),
            us_as_ms(f(&one["p99_us"])),
            us_as_ms(f(&one["max_us"])),
            us_as_ms(f(&all["p50_us"])),
            us_as_ms(f(&all["p99_us"])),
            us_as_ms(f(&all["max_us"])),
        )?;
    }
    let link_lists = get("admin_link_lists");
    if !link_lists.is_null() {
        let pages = &link_lists["pages"];
        writeln!(
            out,
            "`ListSetupLinks` across the {} organizations that each hold their spent setup link (scenario 8's context rows), pages of {} one after another from the first ({} pages, {} links): p50 {}, p99 {}, max {} a page. Every link there is closed, and the read model keeps a closed link's state alone: each view on a page is folded from its stream in the log.\n",
            f(&get("memory")["routes"]).map(thousands).unwrap_or_default(),
            link_lists["page_size"],
            pages["calls"],
            f(&link_lists["links"]).map(thousands).unwrap_or_default(),
            us_as_ms(f(&pages["p50_us"])),
            us_as_ms(f(&pages["p99_us"])),
            us_as_ms(f(&pages["max_us"])),
        )?;
    }
    writeln!(out, "### 3. Fan-out\n")?;
    for (name, key) in [
        ("Signpost", "signpost"),
        ("etcd", "etcd"),
        ("Do-nothing stream server (the limit)", "ceiling"),
        (
            "Do-nothing stream server, route-sized `WatchRoutes` deltas (the limit for messages of that size)",
            "route_floor",
        ),
    ] {
        if fo[key].is_null() {
            continue;
        }
        let v = &fo[key];
        let changes = v["per_change_ms"].as_array().map_or(0, Vec::len).max(1) as f64;
        let cpu = match (
            f(&v["changes_server_cpu_seconds"]),
            f(&v["changes_generator_cpu_seconds"]),
        ) {
            (Some(server), Some(generator)) => format!(
                "; CPU a change, from the first made to the last delivered: server {:.1} ms, load generator {:.1} ms",
                server * 1000.0 / changes,
                generator * 1000.0 / changes
            ),
            _ => String::new(),
        };
        let warm_up = match v["warm_up_per_change_ms"].as_array() {
            Some(changes) if !changes.is_empty() => format!(
                " after {} warm-up changes, not counted (their worst {:.1} ms)",
                changes.len(),
                changes
                    .iter()
                    .filter_map(|p| f(&p[1]))
                    .fold(0.0, f64::max)
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "- {name}: {} watchers opened in {:.1} s; per change{warm_up} (median ms, worst ms): {}{}{cpu}.",
            v["streams"],
            f(&v["connect_seconds"]).unwrap_or(0.0),
            v["per_change_ms"]
                .as_array()
                .map(|a| a
                    .iter()
                    .map(|p| format!(
                        "({:.1}, {:.1})",
                        f(&p[0]).unwrap_or(0.0),
                        f(&p[1]).unwrap_or(0.0)
                    ))
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default(),
            match f(&v["rss_open_bytes"]) {
                Some(open) if open > 0.0 => format!(
                    "; server RSS {} before, {} open, {} after the changes",
                    mib(f(&v["rss_before_bytes"])),
                    mib(Some(open)),
                    mib(f(&v["rss_after_bytes"])),
                ),
                _ => String::new(),
            },
        )?;
    }
    writeln!(out)?;
    writeln!(out, "### 4. Edge\n")?;
    let lk = &e["lookup"];
    writeln!(
        out,
        "- In-process `Edge::lookup` ({} lookups, {} misses): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns, mean {:.0} ns (reading the clock alone: p50 {} ns, p99 {} ns).",
        lk["lookups"], lk["misses"], lk["p50_ns"], lk["p99_ns"], lk["p999_ns"], lk["max_ns"],
        f(&lk["mean_ns"]).unwrap_or(0.0), lk["clock_p50_ns"], lk["clock_p99_ns"]
    )?;
    let d = &e["discover"];
    writeln!(
        out,
        "- HTTP `POST /v1/discover` on the `signpost-edge` binary ({}): {} (p50 {}, p99 {}, non-2xx {}).\n",
        d["generator"].as_str().unwrap_or("?"),
        rate(f(&d["per_second"])),
        us_as_ms(f(&d["p50_us"])),
        us_as_ms(f(&d["p99_us"])),
        d["errors"].as_u64().unwrap_or(0)
    )?;
    writeln!(out, "### 5. Cold start\n")?;
    writeln!(
        out,
        "- First start (no projection state: control-plane state, routing table and audit index all built from the log, hash chain verified; the log's own index taken from the checkpoint `populate`'s clean close saved, once every frame was read and found unchanged): listening after {:.2} s, first Resolve after {:.2} s, audit index caught up (first `ListAuditEvents` answer) after {}; every projection built after {:.2} s ({}), having spent {} of CPU.",
        f(&c["rebuild_listening_seconds"]).unwrap_or(0.0),
        f(&c["rebuild_first_resolve_seconds"]).unwrap_or(0.0),
        secs(f(&c["rebuild_audit_caught_up_seconds"])),
        f(&c["rebuild_seconds"]).unwrap_or(0.0),
        events_rate(rebuild),
        secs(f(&c["rebuild_cpu_seconds"])),
    )?;
    if let Some(starts) = c["first_starts"].as_array().filter(|s| s.len() > 1) {
        let each: Vec<String> = starts
            .iter()
            .map(|start| {
                format!(
                    "{} ({}, {} of CPU)",
                    secs(f(&start["rebuild_seconds"])),
                    events_rate(f(&start["rebuild_events_per_second"])),
                    secs(f(&start["rebuild_cpu_seconds"])),
                )
            })
            .collect();
        writeln!(
            out,
            "  That start is the median of {} first starts, each on its own copy of the populated directory, one after another: every projection built after {}.",
            starts.len(),
            each.join(", ")
        )?;
    }
    if serve_first_rebuild.is_some() {
        writeln!(
            out,
            "- The same log, its audit database deleted, first start serving first (`--audit-serve-first-behind 1`): {}.",
            first_start_timings(serve_first),
        )?;
    }
    if no_checkpoint_rebuild.is_some() {
        writeln!(
            out,
            "- The same log, its audit database and the log's index checkpoint deleted (the log's own index built from the segments too, as after a close that was not clean): {}.",
            first_start_timings(no_checkpoint),
        )?;
    }
    if lifecycle_rebuild.is_some() {
        writeln!(
            out,
            "- The same events in lifecycle order (`populate --lifecycle`: each organization created, its domain verified, its connection configured and activated, then the group assignments, each of which changes the route), first start: {}; RSS {} then.\n",
            first_start_timings(lifecycle),
            mib(f(&lifecycle["rss_after_rebuild_bytes"])),
        )?;
    }
    writeln!(
        out,
        "- Restart: listening after {:.2} s, first Resolve after {:.2} s ({} of CPU by then), audit answering after {}. RSS {} after the first start, {} after the restart.\n",
        f(&c["restart_listening_seconds"]).unwrap_or(0.0),
        f(&c["restart_first_resolve_seconds"]).unwrap_or(0.0),
        secs(f(&c["restart_cpu_seconds"])),
        secs(f(&c["restart_audit_caught_up_seconds"])),
        mib(f(&c["rss_after_rebuild_bytes"])),
        mib(f(&c["rss_after_restart_bytes"]))
    )?;
    writeln!(out, "### 6. Snapshot\n")?;
    writeln!(
        out,
        "- In-process edge, `Edge::start` → ready with every route: {}; bare gRPC client reading the snapshot to its end marker: {} ({} routes); `signpost-edge` binary, spawn → `readyz` 200: {}; etcd range of the whole prefix: {} ({} keys).\n",
        ms(ready),
        ms(f(&s["grpc_snapshot_ms"])),
        s["grpc_snapshot_routes"],
        ms(f(&s["edge_binary_ready_ms"])),
        ms(etcd_list),
        s["etcd_list_keys"]
    )?;
    writeln!(out, "### 7. Audit\n")?;
    if available == Some(false) {
        writeln!(
            out,
            "Not available: the server answered `{}`.\n",
            a["reason"].as_str().unwrap_or("")
        )?;
    } else {
        detail_rows(
            &mut out,
            a,
            &[
                ("ListAuditEvents page, 1 at a time", "page_sequential"),
                ("ListAuditEvents page, concurrent", "page_concurrent"),
                (
                    "GetRoutingAt of one domain now, 1 at a time (its organization's streams folded when asked)",
                    "routing_at_sequential",
                ),
            ],
        )?;
        writeln!(
            out,
            "Export: {} entries in {:.2} s ({}). VerifyLog: {} events in {:.2} s ({}, intact: {}).\n",
            a["export_entries"],
            f(&a["export_seconds"]).unwrap_or(0.0),
            events_rate(export),
            a["verify_events"],
            f(&a["verify_seconds"]).unwrap_or(0.0),
            events_rate(f(&a["verify_per_second"])),
            a["verify_intact"]
        )?;
    }
    writeln!(out, "### 8. Memory\n")?;
    writeln!(
        out,
        "- Control plane: {} with the table alone, {} with every stream open (after a first start); {} with the table alone after a restart on the same data (read 10 s after it; 1 s with --quick). etcd: {} with the keys, {} with every watcher open. Edge binary: {}.\n",
        mib(f(&m["control_plane_idle_bytes"])),
        mib(cp),
        mib(f(&m["control_plane_restarted_bytes"])),
        mib(f(&m["etcd_idle_bytes"])),
        mib(f(&m["etcd_watchers_bytes"])),
        mib(edge_rss)
    )?;
    let startup = get("startup");
    writeln!(
        out,
        "Control plane start on the routing data directory ({} routes, first start): {:.2} s.\n",
        startup["routes"],
        f(&startup["seconds"]).unwrap_or(0.0)
    )?;

    out.push_str(STATIC_SECTIONS);
    let findings = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("FINDINGS.md");
    if let Ok(text) = std::fs::read_to_string(findings) {
        out.push('\n');
        out.push_str(&text);
    }
    Ok(out)
}

fn detail(
    out: &mut String,
    title: &str,
    value: &Value,
    loads: &[(&str, &str)],
) -> anyhow::Result<()> {
    writeln!(out, "### {title}\n")?;
    detail_rows(out, value, loads)
}

fn detail_rows(out: &mut String, value: &Value, loads: &[(&str, &str)]) -> anyhow::Result<()> {
    writeln!(
        out,
        "| Load | Requests | Errors | Seconds | Per second | p50 | p99 | max | Server CPU / request | Load generator CPU / request | Busy cores |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for (name, key) in loads {
        let v = &value[*key];
        if v.is_null() {
            // Not measured in this run (results from before the load existed).
            continue;
        }
        let cpu = &v["cpu"];
        writeln!(
            out,
            "| {name} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            thousands(f(&v["requests"]).unwrap_or(0.0)),
            v["errors"].as_u64().unwrap_or(0),
            f(&v["seconds"]).unwrap_or(0.0),
            rate(f(&v["per_second"])),
            us_as_ms(f(&v["p50_us"])),
            us_as_ms(f(&v["p99_us"])),
            us_as_ms(f(&v["max_us"])),
            us(f(&cpu["server_us_per_request"])),
            us(f(&cpu["generator_us_per_request"])),
            f(&cpu["machine_busy_cores"]).map_or("n/a".into(), |c| format!("{c:.2}")),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

const STATIC_SECTIONS: &str = r#"## How to run

```sh
bench/speed.sh          # about 30 s: is the machine at its usual speed? (exit status 3: no)
bench/run.sh            # the full suite (about 10-15 minutes here), rewrites BENCHMARKS.md
bench/run.sh --quick    # every scenario for a second or two: proves the suite works (CI)
```

`speed.sh` measures the do-nothing unary call (64 in flight, the suite's client) against a
control plane on a small populated directory and compares it with scenario 2's do-nothing
call in a normal hour (74,716/s, round 31's report). Below 85% of that, a full run would
miss absolute goals that a normal hour meets (the machine is shared, and has run whole
sessions at half speed), so the last full report is worth more than a new one.

`run.sh` installs what is missing (`etcd-server`, `wrk` from Debian), builds the release
binaries (`signpost`, `signpost-edge`, `signpost-bench`), starts etcd on a free loopback port with
a fresh data directory in `target/bench-work/` (the same disk as Signpost's data directories),
runs `signpost-bench writes`, `routing` and `history` (each starts its own control plane on a
freshly populated data directory and stops it), stops etcd, and renders the JSON lines
(`target/bench-work/results.jsonl`) with `signpost-bench report`. Set `BENCH_WORK_DIR` to put the
scratch space elsewhere, `BENCH_OUT` to write the report elsewhere. No test asserts any speed.

`bench/instructions.sh [SECONDS]` (about 4 minutes, not part of `run.sh`; installs valgrind if
missing) counts with valgrind's callgrind the instructions a durable write costs the control
plane and the durable do-nothing server, under scenario 1's `AssignGroup` load (two turns of
20 s, 64 in flight). Counts do not move with what else the machine does (runs of one build
agree within about 0.6%), so it compares two builds where timed turns cannot; it counts no
kernel work, and SHA-256 runs in software under valgrind, so it is shown apart. `--cache`
adds the first-level cache misses a write (callgrind's cache simulation: instruction-cache
misses, data-cache read and write misses); `--kernel` then runs each server without valgrind
under the same load and counts the context switches a write (from `/proc`), the system
calls a write (`strace -c -f`, installed if missing) and the CPU a write by thread, user and
system (from every thread's `/proc` stat; the control plane names its runtime's threads
`signpost-worker` and `signpost-block`, the latter its blocking work: the audit database's
writes); `--fanout` counts scenario 3's fan-out
the same way, instructions a delivery (one change reaching one stream, 2,000 streams, the
difference between 20 and 60 changes) on the control plane (`fanout-ab`) and on the
do-nothing stream server sending the control plane's route (`floor-fanout`, the route-sized
limit).

Both peers are driven by the same client over the same number of HTTP/2 connections (4 for
load, one per 100 watchers for fan-out), a closed loop of 64 requests in flight, latencies in
HDR histograms. Since round 30 the loads of scenarios 1 to 3, and the limits measured beside
them, use one minimal gRPC client on `h2` (`bench/src/h2_client.rs`): the request encoded once,
the answer read only as far as the load checks it (a route for `Resolve`, one key-value for
`Range`, an OK status for writes), messages left as slices of the frames they arrived in. It
takes less of the two cores it shares with the servers than tonic's client, which drove them
before and still drives the audit scenario and the set-up calls. Since round 33 the
benchmark binary (the load generator and the do-nothing servers) installs a `tracing`
subscriber keeping warnings, as the control plane keeps its own level: without one, the
`tracing` crate's `log` fallback made every span of h2 cost work, about 9,700 instructions a
call in the durable do-nothing server, which the control plane never paid. etcd is reached through `bench/proto/etcd.proto`, the subset of etcd's v3 API
used here with etcd's own field numbers. Loads compared with each other (Signpost, etcd and the
do-nothing ceilings, in scenarios 1 and 2) take turns: each runs twice for half its phase
(A, B, C, D, A, B, C, D) and its two turns are merged, so that a busy minute on this shared
machine falls on all of them rather than on one.

Every load phase also records the CPU the server under test (Signpost or etcd) and the load
generator spent, from their `/proc/<pid>/stat` counters over the phase, and how many cores the
whole machine kept busy: the detail tables give them per request. The server, the load
generator and the kernel's loopback share the same cores, so a closed loop cannot go faster
than `cores / (server + load generator CPU per request)`; the summary's "CPU per ..." rows
compare that cost with what a goal leaves per request, and with a do-nothing call's.

## What each scenario measures

1. **Durable writes.** 64 clients, each issuing `AssignGroup` with a new role on its own set of
   connections (4,096 organizations, so no two clients touch one stream; every call appends an
   event and changes a route), for 10 s. Each asks for the BASIC connection view in the answer
   (the connection's groups and new version, about 150 bytes, where FULL adds the SAML
   settings, certificate and SP metadata, about 2 KB; etcd's `put` answers a header); etcd: `put` of a 200-byte value, 64 in flight. Then one
   client of each, and a 200-byte write + fdatasync loop on Signpost's data directory for 3 s just
   before and just after the sequential Signpost client (the average is the disk's limit).
   Limits, from the same client in the same run: the do-nothing unary call (what any call
   costs), and the durable do-nothing server (`signpost-bench durable-ceiling`, a child
   process: every `grpc.health.v1.Health/Check` appends one event with a 200-byte payload to
   Signpost's own segment-file log on the same disk, group commit and `fdatasync` included,
   and answers once it is durable; no command, read model, routing table or audit index;
   served on the control plane's own transport, responses finished in one turn of the
   runtime written together), with 64 in flight and with one client: what any durable write
   through this log reaches here. The same server also answers
   `signpost.admin.v1.ConnectionAdminService/AssignGroup`: the load generator's own
   `AssignGroup` calls, 64 in flight, each request read by the control plane's reader, its
   `group_assigned` event appended to the connection's stream, and the answer the control
   plane's own to a call of the load's shape (fetched just before): what a durable write
   carrying these messages reaches here, with nothing decided.
2. **Lookups.** `Resolve` of random routed emails among 100,000 routes, 64 in flight, for 10 s;
   the do-nothing unary ceiling (`grpc.health.v1.Health/Check`, a two-byte answer) from the
   same client; etcd serializable `Range` of one random key among 100,000 keys whose values
   are as large as an encoded route. Context, from the same client in the same run: the
   do-nothing `Resolve` (`signpost-bench resolve-ceiling`, a child process on the control
   plane's own transport: `signpost.routing.v1.RoutingService/Resolve` answering every call
   with the control plane's own answer for one routed domain, nothing looked up or
   authorized), how much of `Resolve`'s cost is its answer's. It is not a ceiling: measured
   in turns, it is within their noise of `Resolve` itself, which has passed it.
3. **Fan-out.** 10,000 `WatchRoutes` streams (resuming from the revision of a snapshot, as an edge
   with a state file does, so they carry deltas only) against 10,000 etcd watch streams on a
   prefix; 20 changes one after another (an `AssignGroup` / a 200-byte `put`); for each, the time
   from just before the mutation is sent to its arrival at every watcher; median (over changes)
   of the per-change median, and the worst single delivery. Before the measured changes come
   16 warm-up changes, made and timed the same way on every peer and limit and not counted
   (their worst is given with each row's changes below): with tonic's client, every watcher's
   1st and 8th route-sized message wrote a fresh page of its 8 KiB receive buffer, 10,000 page
   faults in the load generator within one change, on the cores the server delivers with
   (round 30); an edge pays such first costs once in a stream's life. The watchers are one
   minimal gRPC client on `h2`, the same for every peer and limit (`h2_client.rs`, since
   round 30; tonic's before): a message is the slice of the DATA frame it arrived in, with no
   body layers and no buffer per stream; each change is made over a connection no watcher
   uses. A watcher decodes each message as
   far as its kind (a `WatchRoutes` delta, an etcd response's events) and leaves the routes and
   key-values in it encoded: decoding them is an edge's own work, done on machines of its own
   in production, where here it would take the two cores from the server still delivering
   (both were decoded whole until round 29). Each arrival is written to the watcher's own
   slot; only the arrival that completes a change wakes the collector. Server memory per stream is the RSS
   growth with every stream open divided by the number of streams. The limit row: the same
   client, streams and connections against a do-nothing stream server (`signpost-bench
   stream-ceiling`, a child process: `grpc.health.v1.Health/Watch`, one two-byte message per
   change, nothing computed or written; served on the control plane's own transport, so the
   messages of a change that share a connection go out in one write), the floor of this
   client on this machine. The second limit row: the same server and client, but
   `WatchRoutes` streams (the same request as the control plane's), each change a delta
   upserting the route the changes above left (so the message is as large as the control
   plane's, and the client reads it the same way), built and encoded once per change and
   written with the control plane's own stream body; nothing authorized, kept or computed.
4. **Edge.** `Edge::lookup` in process (email normalization + one map lookup) among 100,000
   routes, each of 1,000,000 lookups timed alone (the clock's own cost is reported next to it);
   `POST /v1/discover` on the `signpost-edge` binary (a real SAML AuthnRequest or OIDC URL per
   answer) with `wrk -t1 -c64` on the same machine for 10 s.
5. **Cold start.** 10,000 organizations × 100 events (1,000,001 events). First start: no
   projection state, every projection built from the log (control-plane state, routing table,
   audit index) and the hash chain verified; events / (spawn → every projection caught up: the
   later of the first routed `Resolve` and the first `ListAuditEvents` answer, since the audit
   index may finish after the server listens) is the rebuild rate. The first start runs three
   times, each on its own copy of the populated directory one after another; the start with
   the median time to every projection built is reported (its rebuild rate, start to serving
   and CPU), and all three are listed in the details. The context rows' first starts run
   once each. Restart (after the last first start): spawn → listening,
   and spawn → first successful `Resolve` (start to serving). The server's CPU (every thread,
   from `/proc/<pid>/stat`) is read when the first start has built every projection and when
   the restart first serves: per event, it bounds the rebuild rate at cores / CPU per event,
   however well the work were spread over the cores. The population writes each
   organization in one commit, its connection's events (group assignments included) before
   its own; a second first start, on the same events in lifecycle order (`populate
   --lifecycle`: group assignments to an active connection, each changing the route), is
   reported beside it as context.
6. **Snapshot.** A fresh in-process `Edge` with no state file following the control plane that
   holds 100,000 routes: from `Edge::start` until it is ready holding every route. Also the bare
   gRPC snapshot, the edge binary from spawn to `readyz`, and etcd's list of the prefix.
7. **Audit.** On scenario 5's log (1,000,001 events, 10,000 organizations): `ListAuditEvents` for
   a random organization with a time range, 50 entries, one request at a time for 10 s (p99),
   then 64 in flight; `GetRoutingAt` of a random organization's domain now, one call at a time
   for half as long (no goal: it folds that organization's streams when asked);
   `ExportAuditEvents` of the whole history (events/s); `VerifyLog` of the whole chain. "Not
   available" when the server does not implement `AuditService`.
8. **Memory.** Control-plane RSS holding 100,000 routes with 10,000 streams open (read during
   scenario 3, in the process whose first start built every projection); `signpost-edge` RSS
   holding 100,000 routes (read after scenario 6); etcd's RSS at the same moments for scale.
   For context, the control plane is then restarted on the same data and its RSS read 10 s
   later, with no stream open. The population has no setup links, so for context again the
   same is measured on 100,000 organizations that each also hold the (spent) setup link
   their connection was configured through, as the real lifecycle leaves them: a first
   start, the 10,000 streams opened 15 s later and one change sent to them, then a restart.

## Event-log micro-benchmark

From `cargo bench -p signpost-eventlog --bench append_throughput` (in process, one event of 200
bytes per commit, group commit; each round interleaves a raw fdatasync probe, a sled slice and a
segment-file slice, four rounds of 2 s, medians; two runs in a quiet window):

| Appenders | sled store | segment-file store (the server's) | Raw fdatasync/s (same run: appending / over zeros) |
|---|---|---|---|
| 1 | 2,791 / 2,861 per s (p99 0.99 / 0.82 ms) | 6,727 / 6,900 per s (p99 0.43 / 0.54 ms) | 5,501 / 7,682 and 5,058 / 7,353 |
| 64 | 30,171 / 28,983 per s (p99 3.7 / 4.0 ms) | 132,460 / 123,530 per s (p99 2.8 / 3.1 ms) | |

Reading 1,000,000 events: sled open 2.2 s and `read_range` 17 s; segment files open (index
build) 0.18 s and `scan` 0.40 s; `verify_chain` 4.6 s on sled, 1.2 s on segment files.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of one scenario's `results`.
    fn rendered(results: &Value) -> String {
        render(
            &results.to_string(),
            chrono::Utc::now(),
            "c0ffee",
            "3.4",
            false,
        )
        .expect("rendered")
    }

    /// The summary row holding `measure` in the report of one scenario's `results`.
    fn rendered_row(results: &Value, measure: &str) -> String {
        rendered(results)
            .lines()
            .find(|l| l.contains(measure))
            .unwrap_or_else(|| panic!("no row for {measure}"))
            .to_owned()
    }

    /// The row for `measure` contains `expected`.
    #[track_caller]
    fn assert_row(results: &Value, measure: &str, expected: &str) {
        let row = rendered_row(results, measure);
        assert!(row.contains(expected), "{row}");
    }

    /// Asserts that the report of `results` has no table row starting with any of
    /// `starts` (only the tables: the findings copied in below them may name the rows).
    fn assert_no_table_row(results: &Value, starts: &[&str]) {
        let text = rendered(results);
        if let Some(line) = text
            .lines()
            .find(|line| starts.iter().any(|start| line.starts_with(start)))
        {
            panic!("unexpected row: {line}");
        }
    }

    #[test]
    fn the_cpu_rows_give_what_a_goal_leaves_and_the_bound_at_the_measured_cost() {
        let cpu = |server: f64, generator: f64| serde_json::json!({ "server_us_per_request": server, "generator_us_per_request": generator, "cores": 2 });
        let writes = serde_json::json!({ "scenario": "writes", "result": {
            "signpost": { "per_second": 12_000.0, "cpu": cpu(50.0, 30.0) },
            "etcd": { "per_second": 10_000.0 },
            "noop_unary": { "per_second": 40_000.0, "cpu": cpu(19.0, 26.0) },
        }});
        let row = rendered_row(&writes, "limit: CPU per write at 2× etcd");
        // 2× etcd = 20,000/s on 2 cores leaves 100 µs a write; 80 µs bounds at 25,000/s.
        assert!(
            row.contains("server 50.0 µs + load generator 30.0 µs = 80.0 µs"),
            "{row}"
        );
        assert!(row.contains("the goal leaves 100.0 µs for both"), "{row}");
        assert!(
            row.contains("a do-nothing call costs 19.0 µs + 26.0 µs"),
            "{row}"
        );
        assert!(row.contains("bound at this cost: 25,000/s"), "{row}");
    }

    #[test]
    fn the_fan_out_details_give_the_cpu_a_change_and_the_warm_up_when_measured() {
        let fan_out = serde_json::json!({ "scenario": "fan_out", "result": {
            "streams": 10_000, "changes": 2,
            "signpost": {
                "streams": 10_000, "per_change_ms": [[30.0, 50.0], [32.0, 55.0]],
                "warm_up_per_change_ms": [[40.0, 61.5], [30.0, 49.0], [31.0, 50.0]],
                "changes_server_cpu_seconds": 0.1, "changes_generator_cpu_seconds": 0.15,
            },
            "etcd": { "streams": 10_000, "per_change_ms": [[60.0, 80.0]] },
        }});
        let report = rendered(&fan_out);
        let signpost = report
            .lines()
            .find(|l| l.starts_with("- Signpost: 10000 watchers"))
            .expect("the Signpost fan-out line");
        assert!(
            signpost.ends_with("server 50.0 ms, load generator 75.0 ms."),
            "{signpost}"
        );
        assert!(
            signpost.contains(
                "per change after 3 warm-up changes, not counted (their worst 61.5 ms) \
                 (median ms, worst ms): (30.0, 50.0) (32.0, 55.0);"
            ),
            "{signpost}"
        );
        let etcd = report
            .lines()
            .find(|l| l.starts_with("- etcd: 10000 watchers"))
            .expect("the etcd fan-out line");
        assert!(!etcd.contains("CPU a change"), "{etcd}");
        assert!(!etcd.contains("warm-up"), "{etcd}");
    }

    #[test]
    fn failed_calls_are_found_wherever_a_phase_records_them() {
        let results = [
            r#"{"scenario": "writes", "result": {"signpost": {"errors": 0}, "durable_assign": {"errors": 3, "cpu": {}}}}"#,
            r#"{"scenario": "lookups", "result": {"rounds": [{"errors": 0}, {"errors": 2}]}}"#,
            r#"{"scenario": "edge", "result": {"discover": {"errors": 0}}}"#,
        ]
        .join("\n");
        let failed = failed_calls(&results).unwrap();
        assert_eq!(failed, ["writes.durable_assign: 3", "lookups.rounds[1]: 2"]);
        assert!(
            failed_calls(r#"{"scenario": "edge", "result": {"errors": 0}}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_durable_ceiling_rows_compare_with_a_server_that_only_appends() {
        let writes = serde_json::json!({ "scenario": "writes", "result": {
            "signpost": { "per_second": 12_000.0 },
            "etcd": { "per_second": 10_000.0 },
            "signpost_sequential": { "per_second": 1_500.0 },
            "fdatasync_per_second": 6_000.0,
            "durable_noop": { "per_second": 24_000.0 },
            "durable_noop_sequential": { "per_second": 3_000.0 },
            "durable_assign": { "per_second": 16_000.0 },
        }});
        assert_row(
            &writes,
            "limit: durable do-nothing (",
            "| 12,000/s | ceiling 24,000/s (2× etcd = 20,000/s) | 0.50× |",
        );
        assert_row(
            &writes,
            "limit: durable do-nothing `AssignGroup`",
            "| 12,000/s | ceiling 16,000/s (2× etcd = 20,000/s) | 0.75× |",
        );
        assert_row(
            &writes,
            "limit: durable do-nothing, 1 client",
            "| 1,500/s | limit 3,000/s (70% of fdatasync = 4,200/s) | 0.50× |",
        );
        // A run without the durable server (older results) renders neither row.
        let older = serde_json::json!({ "scenario": "writes", "result": {
            "signpost": { "per_second": 12_000.0 },
            "etcd": { "per_second": 10_000.0 },
        }});
        assert_no_table_row(
            &older,
            &[
                "|  | limit: durable do-nothing",
                "| durable do-nothing (",
                "durable do-nothing `AssignGroup`",
            ],
        );
    }

    #[test]
    fn the_answer_row_compares_resolve_with_a_server_that_only_answers() {
        let lookups = serde_json::json!({ "scenario": "lookups", "result": {
            "routes": 100_000, "in_flight": 64,
            "signpost": { "per_second": 30_000.0 },
            "etcd": { "per_second": 9_000.0 },
            "noop_unary": { "per_second": 50_000.0 },
            "answer_ceiling": { "per_second": 40_000.0, "requests": 400_000, "seconds": 10.0 },
        }});
        assert_row(
            &lookups,
            "context: the same answer from a do-nothing Resolve",
            "| 30,000/s | 40,000/s (5× etcd = 45,000/s) | 0.75× |",
        );
        assert_row(
            &lookups,
            "| do-nothing Resolve (one fixed answer",
            "| 400,000 | 0 | 10.0 | 40,000/s |",
        );
        // Results from before the ceiling existed render neither.
        let older = serde_json::json!({ "scenario": "lookups", "result": {
            "signpost": { "per_second": 30_000.0 },
            "etcd": { "per_second": 9_000.0 },
            "noop_unary": { "per_second": 50_000.0 },
        }});
        assert_no_table_row(
            &older,
            &[
                "|  | context: the same answer from a do-nothing Resolve",
                "| do-nothing Resolve (",
            ],
        );
    }

    #[test]
    fn the_route_sized_floor_row_compares_the_fan_out_with_deltas_of_its_size() {
        let watchers = |median: f64, worst: f64| serde_json::json!({ "streams": 10_000, "median_ms": median, "worst_ms": worst, "per_change_ms": [[median, worst]], "connect_seconds": 1.0 });
        let fan_out = serde_json::json!({ "scenario": "fan_out", "result": {
            "streams": 10_000, "changes": 1,
            "signpost": watchers(50.0, 100.0), "etcd": watchers(60.0, 120.0),
            "ceiling": watchers(25.0, 40.0), "route_floor": watchers(40.0, 80.0),
            "delta_route_bytes": 431,
        }});
        assert_row(
            &fan_out,
            "limit: the same server, each change a `WatchRoutes` delta of the control plane's size (a 431-byte route",
            "| 50.0 ms / 100.0 ms | limit 40.0 ms / 80.0 ms | 1.25× / 1.25× |",
        );
        assert_row(
            &fan_out,
            "limit: do-nothing stream server, same client",
            "| limit 25.0 ms / 40.0 ms | 2.00× / 2.50× |",
        );
        assert_row(
            &fan_out,
            "- Do-nothing stream server, route-sized `WatchRoutes` deltas",
            "10000 watchers opened in 1.0 s; per change (median ms, worst ms): (40.0, 80.0)",
        );
        // Results from before the route-sized floor existed render neither.
        let older = serde_json::json!({ "scenario": "fan_out", "result": {
            "streams": 10_000, "changes": 1,
            "signpost": watchers(50.0, 100.0), "etcd": watchers(60.0, 120.0),
            "ceiling": watchers(25.0, 40.0),
        }});
        assert_no_table_row(
            &older,
            &[
                "|  | limit: the same server, each change a `WatchRoutes` delta",
                "- Do-nothing stream server, route-sized",
            ],
        );
    }

    #[test]
    fn the_rebuild_cpu_row_gives_what_the_goal_leaves_per_event_and_the_bound() {
        let cold_start = serde_json::json!({ "scenario": "cold_start", "result": {
            "events": 1_000_000.0,
            "rebuild_events_per_second": 125_000.0,
            "rebuild_cpu_seconds": 8.0,
            "restart_cpu_seconds": 3.0,
            "restart_events_per_second": 600_000.0,
            "cores": 2,
        }});
        let row = rendered_row(&cold_start, "limit: CPU per event");
        // 500,000 events/s on 2 cores leaves 4 µs an event; 8 µs bounds at 250,000/s.
        assert!(row.contains("first start 8.0 µs; restart 3.0 µs"), "{row}");
        assert!(row.contains("the goal leaves 4.0 µs on 2 cores"), "{row}");
        assert!(
            row.contains("bound at this cost: 250,000 events/s"),
            "{row}"
        );
        assert_row(
            &cold_start,
            "limit: a restart's pace",
            "| 600,000 events/s |",
        );
    }

    #[test]
    fn the_rebuild_rows_name_the_median_start_and_the_details_list_every_start() {
        let start = |seconds: f64, cpu: f64| serde_json::json!({ "rebuild_seconds": seconds, "rebuild_events_per_second": 1_000_000.0 / seconds, "rebuild_cpu_seconds": cpu });
        let cold_start = serde_json::json!({ "scenario": "cold_start", "result": {
            "events": 1_000_000.0,
            "rebuild_seconds": 1.6,
            "rebuild_events_per_second": 625_000.0,
            "rebuild_first_resolve_seconds": 1.5,
            "rebuild_cpu_seconds": 3.0,
            "first_starts": [start(2.5, 3.9), start(1.6, 3.0), start(1.5, 2.9)],
        }});
        assert_row(
            &cold_start,
            "rebuild every projection",
            "1,000,000 events (the median of 3 first starts) | 625,000 events/s |",
        );
        assert_row(
            &cold_start,
            "first start to serving (spawn",
            "(the median of 3 first starts) | 1.50 s |",
        );
        assert_row(&cold_start, "That start is the median of 3 first starts", "every projection built after 2.50 s (400,000 events/s, 3.90 s of CPU), 1.60 s (625,000 events/s, 3.00 s of CPU), 1.50 s (666,667 events/s, 2.90 s of CPU).");
        // One start (results from before): no median named, nothing listed.
        let one = serde_json::json!({ "scenario": "cold_start", "result": {
            "events": 1_000_000.0, "rebuild_events_per_second": 625_000.0,
        }});
        let row = rendered_row(&one, "rebuild every projection");
        assert!(!row.contains("median"), "{row}");
    }
}
