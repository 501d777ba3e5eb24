//! `--soak`: the HTTPS loop's client twice over (two keep-alive connections at once, each as
//! fast as it goes) for `--soak-minutes` against one tracer with content capture on. The
//! tracer's RSS is sampled every 10 s and its slope fitted by least squares over the run after
//! the warm-up (the first sixth, at most 5 minutes: caches and buffers fill). A leak shows as a
//! slope; the target is under 1 MiB per hour. Every request must also come out as a model
//! call: a soak that drops calls to keep its memory flat would pass for the wrong reason.

use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

use super::{harness::json_number, machine, today, Env, Guarded, MockServer, Tracer};
use crate::util::header;

pub(super) const SECTION: &str = "## Soak: the HTTPS loop twice over, content capture on";
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Clients at once: "twice the benchmark's rate" (the HTTPS loop runs one).
const CLIENTS: usize = 2;
/// Issue 16/17's target for the RSS slope.
const TARGET_MIB_PER_HOUR: f64 = 1.0;

pub(super) fn measure(
    env: &Env,
    server: &MockServer,
    client_py: &Path,
    minutes: u32,
) -> Result<String> {
    ensure!(minutes >= 2, "--soak-minutes must be at least 2");
    let seconds = u64::from(minutes) * 60;
    header(&format!(
        "soak: {CLIENTS} HTTPS loops for {minutes} min, content capture on"
    ));
    let mut tracer =
        Tracer::start_with(&env.tracer, &env.dir, "soak", &[], &["--capture-content"])?;
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut cmd = Command::new("python3");
        cmd.arg(client_py)
            .arg(server.port.to_string())
            .arg(&server.cert)
            .arg(seconds.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut client = Guarded::spawn(&mut cmd, if i == 0 { "soak-a" } else { "soak-b" })?;
        let stdout = client
            .child_mut()
            .and_then(|c| c.stdout.take())
            .context("a soak client has no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::BufReader::new(stdout).read_to_string(&mut text);
            text
        });
        clients.push((client, reader));
    }
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(SAMPLE_EVERY.min(end.saturating_duration_since(Instant::now())));
        let rss_mib = vm_rss_kib(tracer.pid)? as f64 / 1024.0;
        let t = started.elapsed().as_secs_f64();
        samples.push((t, rss_mib));
        println!("{:>6.0} s  RSS {rss_mib:.1} MiB", t);
        tracer.check_running()?;
    }
    let mut requests = 0.0;
    for (mut client, reader) in clients {
        let status = client
            .wait_timeout(Duration::from_secs(120))?
            .context("a soak client did not finish")?;
        ensure!(status.success(), "a soak client failed ({status})");
        let text = reader
            .join()
            .map_err(|_| anyhow::anyhow!("a soak client's reader panicked"))?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("no JSON line from a soak client: {text:?}"))?;
        ensure!(
            json_number(line, "connections")? == 1.0,
            "keep-alive did not hold: {line}"
        );
        requests += json_number(line, "requests")?;
    }
    let cpu_s = tracer.cpu_seconds()?;
    let peak_mib = tracer.peak_rss_kib()? as f64 / 1024.0;
    let stopped = tracer.stop()?;
    let llm_calls = stopped.counters.get("llm_calls") as f64;
    let warmup = (seconds as f64 / 6.0).min(300.0);
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup)
        .collect();
    let slope_per_hour = least_squares_slope(&steady).map(|s| s * 3600.0);
    let first = steady.first().map_or(0.0, |s| s.1);
    let last = steady.last().map_or(0.0, |s| s.1);
    let verdict = match slope_per_hour {
        Some(s) if s < TARGET_MIB_PER_HOUR => "within the target",
        Some(_) => "**over the target**",
        None => "too few samples",
    };
    let calls = if llm_calls == requests {
        "every request came out as one model call".to_string()
    } else {
        format!("**{llm_calls:.0} model calls for {requests:.0} requests**")
    };
    Ok(format!(
        "{SECTION}\n\n\
         Measured {} on {} with `cargo xtask bench --soak --soak-minutes {minutes}`.\n\n\
         {CLIENTS} copies of the HTTPS loop's client (Python `http.client`, the system OpenSSL), \
         each on its own keep-alive connection as fast as it goes, post chat completions to the \
         mock server for {minutes} minutes, traced by one `agent-tracer run --capture-content \
         --console never`, which hooks both ends (the clients' OpenSSL and the mock server's \
         rustls). The tracer's RSS is sampled every {} s; the slope is a least-squares \
         fit over the samples after the first {:.0} s. The target is a slope under \
         {TARGET_MIB_PER_HOUR} MiB/hour.\n\n\
         | metric | value |\n| --- | ---: |\n\
         | requests (both clients) | {requests:.0} ({:.0}/s) |\n\
         | model calls the tracer made of them | {llm_calls:.0}: {calls} |\n\
         | tracer CPU | {cpu_s:.1} s ({:.1} ms per 1,000 requests) |\n\
         | RSS after the warm-up / at the end | {first:.1} MiB / {last:.1} MiB |\n\
         | peak RSS (VmHWM) | {peak_mib:.1} MiB |\n\
         | RSS slope after the warm-up | {} MiB/hour: {verdict} |\n\n\
         The tracer's final log line:\n\n```text\n{}\n```\n",
        today(),
        machine(),
        SAMPLE_EVERY.as_secs(),
        warmup,
        requests / seconds as f64,
        cpu_s * 1e6 / requests.max(1.0),
        slope_per_hour.map_or("?".to_string(), |s| format!("{s:+.2}")),
        stopped.final_line,
    ))
}

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/PID/status")?;
    Ok(value.trim().trim_end_matches("kB").trim().parse()?)
}

/// The slope of the least-squares line through `points` (x, y); `None` below three points.
fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 0.5 * i as f64)).collect();
        assert!((least_squares_slope(&line).unwrap() - 0.5).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 7.0)).collect();
        assert_eq!(least_squares_slope(&flat), Some(0.0));
        assert_eq!(least_squares_slope(&line[..2]), None);
    }
}
