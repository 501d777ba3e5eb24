//! "Socket tracepoints: cost on an unrelated process": the tracer's syscall tracepoints run on
//! every read and write of every process. This measures what that costs a process the tracer has
//! no interest in: a pipe (never a candidate), and a TCP connection whose first bytes are not
//! HTTP (a candidate until its first bytes, ignored afterwards).

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

use super::harness::{Counters, Stopped};
use super::{
    cpu_count, cpu_seconds, grouped, header, json_number, list, load_note, machine, median, today,
    Env, Guarded, OtherLoad, Others,
};

pub(super) const SECTION: &str = "## Socket tracepoints: cost on an unrelated process";

const RUNS: usize = 5;
/// The pipe workload's one-byte writes ([`super::scaled`]).
pub(super) fn pipe_writes() -> u32 {
    super::scaled(1_000_000)
}

/// The TCP workload's sends ([`super::scaled`]).
pub(super) fn tcp_sends() -> u32 {
    super::scaled(200_000)
}
/// Each workload takes about a second; anything near this is broken.
const STEP_LIMIT: Duration = Duration::from_secs(120);
pub(super) const TCP_PY: &str = include_str!("../../bench-clients/tcp_pair.py");

/// One workload run.
pub(super) struct Sample {
    /// Wall-clock seconds (for TCP: the script's own, from its fork to the end of the stream).
    pub(super) seconds: f64,
    /// user + system seconds of the workload's processes.
    pub(super) workload_cpu_s: f64,
    /// CPUs other processes on the host kept busy meanwhile ([`OtherLoad`]).
    pub(super) other_cpus: f64,
}

/// One run of both workloads with the tracer.
struct Traced {
    pipe: Sample,
    tcp: Sample,
    pipe_tracer_cpu_s: f64,
    tcp_tracer_cpu_s: f64,
    final_line: String,
    counters: Counters,
}

pub(super) fn measure(env: &Env) -> Result<String> {
    let script = env.dir.join("tcp_pair.py");
    fs::write(&script, TCP_PY).with_context(|| format!("writing {}", script.display()))?;
    let mut others = Others::default();
    let mut off_pipe = Vec::new();
    let mut off_tcp = Vec::new();
    let mut on = Vec::new();
    for i in 1..=RUNS {
        header(&format!("syscalls: run {i}/{RUNS} without the tracer"));
        env.before_run(&mut others)?;
        let pipe = pipe_run(None)?;
        let tcp = tcp_run(&script, None)?;
        others.check(&[]);
        println!(
            "pipe {:.3} s (CPU {:.2} s), tcp {:.3} s (CPU {:.2} s)",
            pipe.seconds, pipe.workload_cpu_s, tcp.seconds, tcp.workload_cpu_s
        );
        off_pipe.push(pipe);
        off_tcp.push(tcp);

        header(&format!("syscalls: run {i}/{RUNS} with the tracer"));
        env.before_run(&mut others)?;
        let tracer = env.start_tracer(&format!("syscalls-{i}"))?;
        let cpu0 = tracer.cpu_seconds()?;
        let pipe = pipe_run(Some(tracer.pid))?;
        let cpu1 = tracer.cpu_seconds()?;
        let tcp = tcp_run(&script, Some(tracer.pid))?;
        let cpu2 = tracer.cpu_seconds()?;
        others.check(&[tracer.pid]);
        let Stopped {
            final_line,
            counters,
        } = tracer.stop()?;
        println!(
            "pipe {:.3} s (CPU {:.2} s, tracer {:.3} s), tcp {:.3} s (CPU {:.2} s, tracer {:.3} s)\n{final_line}",
            pipe.seconds,
            pipe.workload_cpu_s,
            cpu1 - cpu0,
            tcp.seconds,
            tcp.workload_cpu_s,
            cpu2 - cpu1
        );
        on.push(Traced {
            pipe,
            tcp,
            pipe_tracer_cpu_s: cpu1 - cpu0,
            tcp_tracer_cpu_s: cpu2 - cpu1,
            final_line,
            counters,
        });
    }
    Ok(render(&off_pipe, &off_tcp, &on, &others))
}

/// CPU time of this process's waited-for children so far (cutime + cstime): a workload's
/// processes, once reaped, including the grandchildren they waited for.
fn children_cpu() -> Result<f64> {
    cpu_seconds("/proc/self/stat", 16)
}

/// `dd if=/dev/zero bs=1 count=1000000 status=none | cat > /dev/null`, as two processes joined
/// by a pipe (so that both are this command's children, and guarded).
pub(super) fn pipe_run(tracer: Option<u32>) -> Result<Sample> {
    let load = OtherLoad::start(tracer.into_iter().collect())?;
    let cpu_before = children_cpu()?;
    let start = Instant::now();
    let mut dd = Guarded::spawn(
        Command::new("dd")
            .args(["if=/dev/zero", "bs=1"])
            .arg(format!("count={}", pipe_writes()))
            .arg("status=none")
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
        "dd",
    )?;
    let pipe = dd
        .child_mut()
        .and_then(|c| c.stdout.take())
        .context("dd has no stdout")?;
    let mut cat = {
        // The command (and with it this process's copy of the pipe) is dropped at once.
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::from(pipe)).stdout(Stdio::null());
        Guarded::spawn(&mut cmd, "cat")?
    };
    let dd_status = dd
        .wait_timeout(STEP_LIMIT)?
        .with_context(|| format!("dd did not finish within {STEP_LIMIT:?}"))?;
    let cat_status = cat
        .wait_timeout(STEP_LIMIT.saturating_sub(start.elapsed()))?
        .with_context(|| format!("cat did not finish within {STEP_LIMIT:?}"))?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        dd_status.success() && cat_status.success(),
        "dd ({dd_status}) or cat ({cat_status}) failed"
    );
    Ok(Sample {
        seconds,
        workload_cpu_s: children_cpu()? - cpu_before,
        other_cpus: load.finish()?,
    })
}

/// tcp_pair.py: TCP_SENDS 16-byte sends through one loopback connection.
pub(super) fn tcp_run(script: &Path, tracer: Option<u32>) -> Result<Sample> {
    let load = OtherLoad::start(tracer.into_iter().collect())?;
    let cpu_before = children_cpu()?;
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(tcp_sends().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut process = Guarded::spawn(&mut cmd, "tcp_pair.py")?;
    let status = process
        .wait_timeout(STEP_LIMIT)?
        .with_context(|| format!("tcp_pair.py did not finish within {STEP_LIMIT:?}"))?;
    let other_cpus = load.finish()?;
    ensure!(status.success(), "tcp_pair.py failed ({status})");
    // The output is one short line, which fits in the pipe while the script runs.
    let mut out = String::new();
    if let Some(mut stdout) = process.child_mut().and_then(|c| c.stdout.take()) {
        std::io::Read::read_to_string(&mut stdout, &mut out)?;
    }
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON line in tcp_pair.py's output: {out:?}"))?;
    ensure!(
        json_number(line, "recvs")? >= 1.0 && json_number(line, "sends")? == f64::from(tcp_sends()),
        "unexpected tcp_pair.py output: {line}"
    );
    Ok(Sample {
        seconds: json_number(line, "seconds")?,
        workload_cpu_s: children_cpu()? - cpu_before,
        other_cpus,
    })
}

fn render(off_pipe: &[Sample], off_tcp: &[Sample], on: &[Traced], others: &Others) -> String {
    let seconds = |s: &[&Sample]| median(s.iter().map(|s| s.seconds).collect());
    let cpu = |s: &[&Sample]| median(s.iter().map(|s| s.workload_cpu_s).collect());
    let off_pipe: Vec<&Sample> = off_pipe.iter().collect();
    let off_tcp: Vec<&Sample> = off_tcp.iter().collect();
    let on_pipe: Vec<&Sample> = on.iter().map(|t| &t.pipe).collect();
    let on_tcp: Vec<&Sample> = on.iter().map(|t| &t.tcp).collect();
    let pipe_tracer = median(on.iter().map(|t| t.pipe_tracer_cpu_s).collect());
    let tcp_tracer = median(on.iter().map(|t| t.tcp_tracer_cpu_s).collect());
    let ignored = median(
        on.iter()
            .map(|t| t.counters.get("kernel_ignored_connections") as f64)
            .collect(),
    );
    let cpus = cpu_count();

    let mut s = String::new();
    s.push_str(SECTION);
    s.push_str("\n\n");
    s.push_str(&format!(
        "Measured {date} on {machine} with `cargo xtask bench`.\n\n\
         The tracer's syscall tracepoints run on every `read`/`write` (and the other socket \
         calls) of every process on the host. For a file descriptor that is not a candidate \
         connection the kernel side makes one hash lookup and returns. This measures what that \
         costs processes the tracer has no interest in. {RUNS} runs without the tracer and \
         {RUNS} with a fresh `agent-tracer run --console never`, interleaved, with both \
         workloads run against the same tracer; each figure is the median of its {RUNS} runs, \
         timed by the benchmark itself (hyperfine is not used).\n\n\
         - **Pipe**: `dd if=/dev/zero bs=1 count={writes_raw} status=none | cat > /dev/null`. \
         dd makes {writes} one-byte reads and {writes} one-byte writes; cat reads \
         what dd wrote and writes it to /dev/null, one byte or more at a time, so the workload \
         makes up to {total} `read`/`write` syscalls. Started as two processes joined by a pipe \
         and timed from dd's start to both exits. A pipe is never a candidate.\n\
         - **TCP connection whose first bytes are not HTTP (ignored after the first read)**: a \
         Python script listens on 127.0.0.1, forks a child that connects and makes {sends} \
         16-byte sends (`TCP_NODELAY`, first bytes neither HTTP nor TLS), and reads them with \
         16-byte `recv`s until the end. Both processes are pinned to one CPU \
         (`sched_setaffinity`), which keeps the spread between runs small. A TCP connection \
         made while the tracer runs is a candidate: its first bytes are looked at, found not to \
         be HTTP, and the connection is ignored from then on (the tracer counted a median of \
         {ignored:.0} ignored connections per run; the script's connection has two ends). Timed \
         by the script, from the fork to the end of the stream.\n\n\
         The probes run in the kernel on the calling thread, so their time shows in the \
         workload's own CPU (user + system of its processes, from the benchmark's waited-for \
         children), not in the tracer's. The tracer's CPU during a run is its user-space work, \
         which includes looking at each newly executed program (dd, cat, python3). With {cpus} \
         CPUs the workload's two processes and the tracer share cores, and the wall-clock time \
         depends on whatever else runs on the machine; the workload's CPU time is the steadier \
         measure.\n\n",
        date = today(),
        machine = machine(),
        total = grouped(4 * u64::from(pipe_writes())),
        writes = grouped(pipe_writes().into()),
        writes_raw = pipe_writes(),
        sends = grouped(tcp_sends().into()),
    ));
    s.push_str(&others.caution());
    let loads: Vec<f64> = [&off_pipe, &off_tcp, &on_pipe, &on_tcp]
        .into_iter()
        .flat_map(|v| v.iter().map(|s| s.other_cpus))
        .collect();
    s.push_str(&load_note(&loads));
    s.push_str(
        "| workload | without tracer | with tracer | ratio (with / without) | workload CPU \
         without → with | tracer CPU during the run |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (name, off, on, tracer) in [
        ("pipe: dd → cat", &off_pipe, &on_pipe, pipe_tracer),
        (
            "TCP connection whose first bytes are not HTTP (ignored after the first read)",
            &off_tcp,
            &on_tcp,
            tcp_tracer,
        ),
    ] {
        let (off_s, on_s) = (seconds(off), seconds(on));
        s.push_str(&format!(
            "| {name} | {off_s:.3} s | {on_s:.3} s | {:.2}× | {:.2} → {:.2} s | {tracer:.3} s |\n",
            on_s / off_s,
            cpu(off),
            cpu(on),
        ));
    }
    let per = |off: &[&Sample], on: &[&Sample], n: u32| (cpu(on) - cpu(off)) * 1e9 / f64::from(n);
    s.push_str(&format!(
        "\nAdded workload CPU: {:+.0} ns per dd write (covering up to four syscalls: dd's read \
         and write, cat's read and write), {:+.0} ns per TCP send (covering the send and its \
         recv). CPU times come in clock ticks, so these are rough.\n\n",
        per(&off_pipe, &on_pipe, pipe_writes()),
        per(&off_tcp, &on_tcp, tcp_sends()),
    ));
    let runs = |v: &[&Sample], f: fn(&Sample) -> f64, d: usize| list(v.iter().map(|s| f(s)), d);
    s.push_str(&format!(
        "Per run, pipe seconds: without {}; with {}. Pipe workload CPU s: without {}; with {}. \
         TCP seconds: without {}; with {}. TCP workload CPU s: without {}; with {}. Tracer CPU s \
         (pipe, TCP): {}; {}.\n\n",
        runs(&off_pipe, |s| s.seconds, 3),
        runs(&on_pipe, |s| s.seconds, 3),
        runs(&off_pipe, |s| s.workload_cpu_s, 2),
        runs(&on_pipe, |s| s.workload_cpu_s, 2),
        runs(&off_tcp, |s| s.seconds, 3),
        runs(&on_tcp, |s| s.seconds, 3),
        runs(&off_tcp, |s| s.workload_cpu_s, 2),
        runs(&on_tcp, |s| s.workload_cpu_s, 2),
        list(on.iter().map(|t| t.pipe_tracer_cpu_s), 3),
        list(on.iter().map(|t| t.tcp_tracer_cpu_s), 3),
    ));
    s.push_str("The tracer's final log line of each run with it:\n\n```text\n");
    for t in on {
        s.push_str(&t.final_line);
        s.push('\n');
    }
    s.push_str("```\n");
    s
}
