//! "Pipeline: a flood of one-byte SSE events": how long the pipeline's stages take on a
//! streamed model response of 500 000 one-byte events, each in its own read (issue 17's
//! "handled in under a second"). The stages run in-process, without the kernel: the
//! `pipeline_sse_flood` example of tracer-user feeds them the capture records the ring buffer
//! would deliver. Its unit test (`daemon::pipeline::flood_tests`) checks the answer; this
//! measures the time.

use anyhow::{Context as _, Result};

use super::{grouped, list, machine, median, today, Env};
use crate::util::{cargo, header, run_checked, target_dir};

pub(super) const SECTION: &str = "## Pipeline: a flood of one-byte SSE events";

const TINY_EVENTS: u64 = 500_000;
const RUNS: usize = 5;
/// What issue 17 asks of this workload.
const TARGET_SECONDS: f64 = 1.0;

struct Measured {
    /// The host's 1-minute load average before the runs: the machine may be shared.
    load_before: String,
    records: u64,
    body_bytes: u64,
    seconds: Vec<f64>,
}

pub(super) fn measure(_env: &Env) -> Result<String> {
    header("cargo build --release -p tracer-user --example pipeline_sse_flood");
    run_checked(cargo().args([
        "build",
        "--release",
        "-p",
        "tracer-user",
        "--example",
        "pipeline_sse_flood",
    ]))?;
    let program = target_dir().join("release/examples/pipeline_sse_flood");
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string());
    header(&format!("{} {TINY_EVENTS} {RUNS}", program.display()));
    let out = std::process::Command::new(&program)
        .args([TINY_EVENTS.to_string(), RUNS.to_string()])
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    println!("{}", line.trim());
    let json: serde_json::Value =
        serde_json::from_str(line.trim()).context("the example's JSON line")?;
    let number = |key: &str| {
        json[key]
            .as_u64()
            .with_context(|| format!("{key} missing from {line}"))
    };
    let measured = Measured {
        load_before,
        records: number("records")?,
        body_bytes: number("body_bytes")?,
        seconds: json["seconds"]
            .as_array()
            .context("seconds missing")?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect(),
    };
    anyhow::ensure!(
        measured.seconds.len() == RUNS,
        "expected {RUNS} runs: {line}"
    );
    Ok(render(&measured))
}

fn render(m: &Measured) -> String {
    let median_s = median(m.seconds.clone());
    let per_record_ns = median_s * 1e9 / m.records as f64;
    let verdict = if median_s < TARGET_SECONDS {
        "under"
    } else {
        "OVER"
    };
    format!(
        "{SECTION}\n\nMeasured {} on {} with `cargo xtask bench --only pipeline`.\n\n\
         A traced client's streamed chat completion whose server sends {} events of one data \
         byte (`data:x` and the blank line, 8 bytes each) between the first chunk (the \
         response's id and model) and the last (finish reason, usage, `[DONE]`), each event in \
         its own read: a {} byte body in {} capture records. The records go through the \
         pipeline's stages as the daemon runs them (`Pipeline::handle`: streams, HTTP/1 with \
         the body's arrival timeline, genai's SSE parsing with each event's arrival time, the \
         agent's run), in one thread, without the kernel (tracer-user's `pipeline_sse_flood` \
         example, release build); the time runs from the first record to the call being \
         complete after the last. Its unit test (`daemon::pipeline::flood_tests`) checks the \
         call that comes out: model, id, finish reason, usage, body size, time to first chunk \
         and end time.\n\n\
         | metric | value |\n| --- | ---: |\n\
         | records per run | {} |\n\
         | median time per run ({RUNS} runs) | {:.3} s ({verdict} the {TARGET_SECONDS:.0} s target) |\n\
         | per record | {:.0} ns |\n\n\
         Per run, seconds: {}. The host's 1-minute load average before the runs was {} (on \
         {} CPUs): the single-threaded stages compete for a core with whatever else runs.\n",
        today(),
        machine(),
        grouped(TINY_EVENTS),
        grouped(m.body_bytes),
        grouped(m.records),
        grouped(m.records),
        median_s,
        per_record_ns,
        list(m.seconds.iter().copied(), 3),
        m.load_before,
        super::cpu_count(),
    )
}
