//! `https-loop`: a Python `http.client` loop (the system OpenSSL, which the tracer hooks) posts
//! chat completions to the local mock OpenAI server over one keep-alive connection, alternately
//! without and with a fresh `agent-tracer run`.

use anyhow::Result;

use super::{
    list, load_note, machine, median, run_with_tracer, today, Client, ClientResult, Env, Others,
    TracerRun, RUNS, WARMUP,
};
use crate::util::header;

const SECTION: &str = "## HTTPS client loop (OpenSSL, Python http.client, keep-alive)";

pub(super) fn measure(env: &Env, client: &Client) -> Result<String> {
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut others = Others::default();
    for i in 1..=RUNS {
        header(&format!("run {i}/{RUNS} without the tracer"));
        env.before_run(&mut others)?;
        let result = client.run(None)?;
        others.check(&[]);
        println!("{}", result.line);
        off.push(result);

        header(&format!("run {i}/{RUNS} with the tracer"));
        env.before_run(&mut others)?;
        let result = run_with_tracer(env, &format!("{i}"), client, &mut others)?;
        println!("{}", result.client.line);
        println!(
            "tracer: {:.3} s CPU during the run, {:.3} s at start-up, peak RSS {:.1} MiB",
            result.cpu_run_s,
            result.cpu_startup_s,
            result.peak_rss_kib as f64 / 1024.0
        );
        println!("{}", result.final_line);
        on.push(result);
    }
    Ok(render(env.requests, &off, &on, &others))
}

fn render(requests: u32, off: &[ClientResult], on: &[TracerRun], others: &Others) -> String {
    let on_clients: Vec<&ClientResult> = on.iter().map(|t| &t.client).collect();
    let off_clients: Vec<&ClientResult> = off.iter().collect();
    let med = |runs: &[&ClientResult], f: fn(&ClientResult) -> f64| {
        median(runs.iter().map(|r| f(r)).collect())
    };
    let (off_p50, on_p50) = (
        med(&off_clients, |r| r.p50_us),
        med(&on_clients, |r| r.p50_us),
    );
    let (off_p99, on_p99) = (
        med(&off_clients, |r| r.p99_us),
        med(&on_clients, |r| r.p99_us),
    );
    let (off_rps, on_rps) = (med(&off_clients, |r| r.rps), med(&on_clients, |r| r.rps));
    let cpu_run = median(on.iter().map(|t| t.cpu_run_s).collect());
    let cpu_startup = median(on.iter().map(|t| t.cpu_startup_s).collect());
    let rss_mib = median(on.iter().map(|t| t.peak_rss_kib as f64 / 1024.0).collect());
    let per_run =
        |runs: &[&ClientResult], f: fn(&ClientResult) -> f64| list(runs.iter().map(|r| f(r)), 0);
    let mut s = String::new();
    s.push_str(SECTION);
    s.push_str("\n\n");
    s.push_str(&format!(
        "Measured {date} on {machine} with `cargo xtask bench --requests {requests}`.\n\n\
         One Python `http.client` HTTPS connection (the system OpenSSL, which the tracer hooks) \
         sends {requests} chat-completion POSTs, kept alive, to the local mock OpenAI server \
         (`mock-llm`, rustls, whose side the tracer is told never to hook with `--skip-executable`, as a remote model API's would not be), after {WARMUP} warm-up requests. \
         {RUNS} runs without the tracer and {RUNS} with a fresh `agent-tracer run --console never` \
         (no exporter), interleaved; each figure is the median of its {RUNS} runs. Latency \
         includes the time the uprobes spend in the client's own SSL_write/SSL_read calls; the \
         tracer's CPU covers its user-space work (ring-buffer reading, HTTP parsing, spans).\n\n",
        date = today(),
        machine = machine(),
    ));
    s.push_str(&others.caution());
    let loads: Vec<f64> = off
        .iter()
        .chain(on.iter().map(|t| &t.client))
        .map(|r| r.other_cpus)
        .collect();
    s.push_str(&load_note(&loads));
    s.push_str("| metric | without tracer | with tracer | ratio (with / without) |\n");
    s.push_str("| --- | ---: | ---: | ---: |\n");
    s.push_str(&format!(
        "| requests per run | {requests} | {requests} | |\n"
    ));
    s.push_str(&format!(
        "| p50 latency | {off_p50:.0} µs | {on_p50:.0} µs | {:.2}× |\n",
        on_p50 / off_p50
    ));
    s.push_str(&format!(
        "| p99 latency | {off_p99:.0} µs | {on_p99:.0} µs | {:.2}× |\n",
        on_p99 / off_p99
    ));
    s.push_str(&format!(
        "| throughput | {off_rps:.0} req/s | {on_rps:.0} req/s | {:.2}× |\n",
        on_rps / off_rps
    ));
    s.push_str(&format!(
        "| tracer CPU during the run | | {cpu_run:.3} s ({:.1} ms per 1,000 requests) | |\n",
        cpu_run * 1000.0 * 1000.0 / f64::from(requests)
    ));
    s.push_str(&format!(
        "| tracer CPU at start-up (loading, attaching) | | {cpu_startup:.3} s | |\n"
    ));
    s.push_str(&format!(
        "| tracer peak RSS (VmHWM) | | {rss_mib:.1} MiB | |\n\n"
    ));
    s.push_str(
        "Of the peak RSS, 32 MiB is the ring buffer (`--ring-buffer-bytes`; its data pages are \
         mapped once into the reader, where aya and libbpf map them twice and RSS would count \
         64 MiB), about 12 MiB the tracer's own code, and aya-log's 128 KiB ring counts twice. \
         The rest of the peak is start-up analysis: every executable on PATH and every running \
         one is read as its metadata, a Go executable as its function names and entries, and \
         one whose strings name a stack the locators find in full (see the README's memory section).\n\n",
    );
    s.push_str(&format!(
        "Per run, p50 µs: without {}; with {}. p99 µs: without {}; with {}. \
         Throughput req/s: without {}; with {}.\n\n",
        per_run(&off_clients, |r| r.p50_us),
        per_run(&on_clients, |r| r.p50_us),
        per_run(&off_clients, |r| r.p99_us),
        per_run(&on_clients, |r| r.p99_us),
        per_run(&off_clients, |r| r.rps),
        per_run(&on_clients, |r| r.rps),
    ));
    s.push_str(&format!(
        "The tracer's final log line of each run with it ({requests} + {WARMUP} warm-up calls each):\n\n```text\n"
    ));
    for run in on {
        s.push_str(&run.final_line);
        s.push('\n');
    }
    s.push_str("```\n");
    s
}
