//! Times the pipeline's stages (streams, HTTP/1 and SSE, genai, agent) on the SSE flood of
//! `daemon::workload::sse_flood`: a streamed model response of one-byte events, each in its own
//! read. `cargo xtask bench --only pipeline` runs it and writes BENCHMARKS.md.
//!
//! `pipeline_sse_flood [TINY_EVENTS] [RUNS]` (500000 and 5 by default) prints one JSON line:
//! the records fed per run and the seconds each run took, from the first record handed to the
//! pipeline to the call being complete after the last.

use std::{sync::atomic::Ordering::Relaxed, sync::Arc, time::Instant};

use anyhow::{ensure, Context as _, Result};
use tracer_user::{
    capture::Clock,
    daemon::{
        pipeline::{Pipeline, PipelineConfig},
        workload::sse_flood,
    },
    telemetry::health::Health,
};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |default: usize| -> Result<usize> {
        args.next()
            .map_or(Ok(default), |a| a.parse().context("a number"))
    };
    let tiny = number(500_000)?;
    let runs = number(5)?;
    let mut seconds = Vec::new();
    let mut records = 0;
    let mut body_bytes = 0;
    for _ in 0..runs {
        // Built before the clock starts: the records stand for what the ring buffer delivers.
        let flood = sse_flood(std::process::id(), tiny);
        records = flood.records.len();
        body_bytes = flood.body_len;
        let health = Arc::new(Health::default());
        let mut pipeline = Pipeline::new(
            PipelineConfig::default(),
            Clock::new(),
            health.clone(),
            None,
        )?;
        let mut spans = Vec::new();
        let started = Instant::now();
        for record in flood.records {
            pipeline.handle(record, &mut spans);
        }
        let took = started.elapsed();
        ensure!(
            health.llm_calls.load(Relaxed) == 1,
            "the flood did not make one model call: {:?}",
            health.snapshot()
        );
        seconds.push(took.as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({
            "tiny_events": tiny,
            "records": records,
            "body_bytes": body_bytes,
            "seconds": seconds,
        })
    );
    Ok(())
}
