//! "Pre-attach: start-up cost and exec → hooked latency": what pre-attach (analysing and hooking
//! the executables agents run from, at start-up and when files appear) costs the tracer's start,
//! and how long a program the tracer has never seen runs before its TLS hooks are in place.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{list, machine, today, Env, Guarded, Tracer};
use crate::util::header;

pub(super) const SECTION: &str = "## Pre-attach: start-up cost and exec → hooked latency";

/// Never-seen copies of the Go client run, one at a time.
const EXECS: usize = 20;
const SCAN_TIMEOUT: Duration = Duration::from_secs(600);
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The start-up of one tracer run.
struct StartUp {
    ready_s: f64,
    cpu_at_ready_s: f64,
    /// Pre-attach on: the scan's wall time, the tracer's CPU seconds when it was done, and the
    /// log line that reports it.
    scan: Option<(f64, f64, String)>,
    stop_s: f64,
}

fn start_up(env: &Env, preattach: bool) -> Result<StartUp> {
    let label = if preattach {
        "preattach-on"
    } else {
        "preattach-off"
    };
    header(&format!("tracer start-up, {label}"));
    let envs: &[(&str, &str)] = if preattach {
        &[]
    } else {
        &[("AGENT_TRACER_PREATTACH", "off")]
    };
    let started = Instant::now();
    let mut tracer = Tracer::start_with_env(&env.tracer, &env.dir, label, envs)?;
    let ready_s = started.elapsed().as_secs_f64();
    let cpu_at_ready_s = tracer.cpu_seconds()?;
    let scan = if preattach {
        tracer.wait_for_log("the pre-attach scan", SCAN_TIMEOUT, None, |l| {
            l.contains("start-up scan done")
        })?;
        let line = tracer
            .log()
            .lines()
            .find(|l| l.contains("start-up scan done"))
            .map(|l| l[l.find("files=").unwrap_or(0)..].to_string())
            .unwrap_or_default();
        Some((started.elapsed().as_secs_f64(), tracer.cpu_seconds()?, line))
    } else {
        None
    };
    let stopping = Instant::now();
    tracer.stop()?;
    Ok(StartUp {
        ready_s,
        cpu_at_ready_s,
        scan,
        stop_s: stopping.elapsed().as_secs_f64(),
    })
}

/// `exec_to_hooked_ms` of `pid`, once the tracer logged it.
fn exec_to_hooked(log: &str, pid: u32) -> Option<f64> {
    let tag = format!("pid={pid} ");
    log.lines()
        .filter(|l| l.contains("hooks in place after the exec") && l.contains(&tag))
        .find_map(|l| {
            let at = l.find("exec_to_hooked_ms=")? + "exec_to_hooked_ms=".len();
            l[at..].split_whitespace().next()?.parse().ok()
        })
}

/// Runs [`EXECS`] never-seen copies of the Go client (each a new file outside every watched
/// directory, so only its exec reveals it), each held until the tracer logged its hooks.
fn exec_latencies(env: &Env, go_client: &Path) -> Result<Vec<f64>> {
    header("exec → hooked, never-seen Go binaries");
    let mut tracer = Tracer::start_with_env(&env.tracer, &env.dir, "preattach-exec", &[])?;
    tracer.wait_for_log("the pre-attach scan", SCAN_TIMEOUT, None, |l| {
        l.contains("start-up scan done")
    })?;
    let fresh = env.dir.join("fresh");
    let _ = fs::remove_dir_all(&fresh);
    let mut latencies = Vec::new();
    for i in 0..EXECS {
        let copy = fresh.join(format!("{i}")).join("go-client");
        fs::create_dir_all(copy.parent().context("parent")?)?;
        fs::copy(go_client, &copy)?;
        // Port 9 (discard) on loopback and the system's CA bundle: the client, once let go,
        // fails fast; only its exec matters here.
        let mut client = Guarded::spawn(
            Command::new(&copy)
                .args(["9", "/etc/ssl/certs/ca-certificates.crt", "1", "0"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "go client",
        )?;
        let pid = client.pid();
        let deadline = Instant::now() + HOOK_TIMEOUT;
        let ms = loop {
            if let Some(ms) = exec_to_hooked(&tracer.log(), pid) {
                break ms;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no exec_to_hooked_ms for pid {pid} within {HOOK_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(child) = client.child_mut() {
            drop(child.stdin.take());
        }
        drop(client);
        println!("{ms:.1} ms");
        latencies.push(ms);
    }
    tracer.stop()?;
    Ok(latencies)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

pub(super) fn measure(env: &Env) -> Result<String> {
    let go_client = super::tls_calls::build_go_client(&env.dir)?;
    let off = start_up(env, false)?;
    let on = start_up(env, true)?;
    let latencies = exec_latencies(env, &go_client)?;
    let (scan_s, scan_cpu_s, scan_line) = on.scan.clone().unwrap_or_default();
    let mut s = format!("{SECTION}\n\n");
    s.push_str(&format!(
        "Measured {} on {}, with `cargo xtask bench --only preattach` (release build).\n\n",
        today(),
        machine()
    ));
    s.push_str(
        "*Start-up*: the tracer started with pre-attach off (`AGENT_TRACER_PREATTACH=off`) and \
         on. `ready` is the wall time to `tracer ready`; the scan runs on its own threads (nice \
         10) and does not delay it. CPU is the tracer's user+system seconds. *Stop* is SIGINT to \
         exit: removing every probe, which the kernel makes wait for a grace period per probe \
         (closed from many threads at once).\n\n",
    );
    s.push_str("| | ready | CPU at ready | scan done | CPU at scan done | stop |\n");
    s.push_str("|---|---|---|---|---|---|\n");
    s.push_str(&format!(
        "| pre-attach off | {:.2} s | {:.2} s | — | — | {:.2} s |\n",
        off.ready_s, off.cpu_at_ready_s, off.stop_s
    ));
    s.push_str(&format!(
        "| pre-attach on | {:.2} s | {:.2} s | {scan_s:.2} s | {scan_cpu_s:.2} s | {:.2} s |\n\n",
        on.ready_s, on.cpu_at_ready_s, on.stop_s
    ));
    s.push_str(&format!("The scan: `{scan_line}`.\n\n"));
    s.push_str(&format!(
        "*Exec → hooked*: {EXECS} never-seen copies of the Go bench client (a new file each, \
         outside every watched directory, so only the exec reveals it), each held until the \
         tracer logged `exec_to_hooked_ms` (from the kernel's exec timestamp to the last probe \
         placed: reading /proc, the analysis on its own thread, attaching 17 probes). \
         p50 **{:.1} ms**, p99 {:.1} ms (of {EXECS}: the maximum). All: {} ms. A file that \
         appears in a watched directory is analysed when it is closed, before it runs, and \
         costs its first run nothing if it is not started within that time.\n",
        percentile(latencies.clone(), 50.0),
        percentile(latencies.clone(), 99.0),
        list(latencies.iter().copied(), 1)
    ));
    Ok(s)
}
