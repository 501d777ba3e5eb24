//! "Syscall hook paths": what each way of hooking socket and stdio syscalls
//! (`AGENT_TRACER_SYSCALL_HOOKS`: per-syscall perf-event tracepoints, `raw_tp`, `tp_btf`) costs
//! processes the tracer has no interest in, on this kernel. Same workloads as the `syscalls`
//! section (a `dd bs=1 | cat` pipe, small TCP sends), plus two single-process loops that give a
//! cost per syscall: one-byte `dd` from /dev/zero to /dev/null (`read`/`write`, hooked syscalls
//! on fds that are not candidates) and a `getppid` loop (a syscall no path hooks).

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};

use super::{
    cpu_count, header, list, load_note, machine, median,
    syscalls::{pipe_run, pipe_writes, tcp_run, tcp_sends, Sample, TCP_PY},
    today, Env, Guarded, OtherLoad, Others, Tracer,
};

pub(crate) const SECTION: &str = "## Syscall hook paths: cost on an unrelated process";

const RUNS: usize = 3;
/// `dd bs=1` to /dev/null: one read and one write per byte.
fn null_bytes() -> u32 {
    super::scaled(1_000_000)
}
fn getppid_calls() -> u32 {
    super::scaled(2_000_000)
}
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// `AGENT_TRACER_SYSCALL_HOOKS` values, in the order they run in each round (no tracer first);
/// `fentry` only where the kernel offers it.
const PATHS: [Option<&str>; 5] = [
    None,
    Some("tracepoints"),
    Some("raw_tp"),
    Some("tp_btf"),
    Some("fentry"),
];
const GETPPID_PY: &str =
    "import os, sys\nf = os.getppid\nfor _ in range(int(sys.argv[1])):\n    f()\n";

/// One round's four workloads under one path.
struct Round {
    pipe: Sample,
    tcp: Sample,
    null: Sample,
    getppid: Sample,
    tracer_log: Option<String>,
}

/// The paths this kernel offers, as `agent-tracer check` lists them (`syscall hooks: …`).
fn offered_paths(tracer: &std::path::Path) -> Result<Vec<Option<&'static str>>> {
    let out = Command::new(tracer)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} check", tracer.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("syscall hooks:"))
        .with_context(|| format!("`check` printed no syscall hooks line:\n{text}"))?;
    let fentry = line.contains("fentry/fexit");
    Ok(PATHS
        .into_iter()
        .filter(|p| *p != Some("fentry") || fentry)
        .collect())
}

pub(super) fn measure(env: &Env, heading: &str) -> Result<String> {
    let paths = offered_paths(&env.tracer)?;
    let script = env.dir.join("tcp_pair.py");
    fs::write(&script, TCP_PY).with_context(|| format!("writing {}", script.display()))?;
    let getppid = env.dir.join("getppid_loop.py");
    fs::write(&getppid, GETPPID_PY).with_context(|| format!("writing {}", getppid.display()))?;
    let mut others = Others::default();
    let mut rounds: Vec<Vec<Round>> = paths.iter().map(|_| Vec::new()).collect();
    for i in 1..=RUNS {
        for (p, path) in paths.iter().enumerate() {
            let name = path.unwrap_or("no tracer");
            header(&format!("syscall paths: run {i}/{RUNS}, {name}"));
            env.before_run(&mut others)?;
            let tracer = match path {
                Some(path) => Some(Tracer::start_with_env(
                    &env.tracer,
                    &env.dir,
                    &format!("paths-{path}-{i}"),
                    &[("AGENT_TRACER_SYSCALL_HOOKS", path)],
                )?),
                None => None,
            };
            let pid = tracer.as_ref().map(|t| t.pid);
            let pipe = pipe_run(pid)?;
            let tcp = tcp_run(&script, pid)?;
            let null = null_run(pid)?;
            let getppid = loop_run(&getppid, pid)?;
            others.check(&pid.into_iter().collect::<Vec<_>>());
            let tracer_log = match tracer {
                Some(t) => {
                    let log = t.log();
                    t.stop()?;
                    let hooked = log
                        .lines()
                        .find_map(|l| l.split("syscalls hooked by ").nth(1))
                        .unwrap_or("?")
                        .trim()
                        .to_string();
                    Some(hooked)
                }
                None => None,
            };
            println!(
                "pipe CPU {:.2} s, tcp CPU {:.2} s, /dev/null CPU {:.2} s, getppid CPU {:.2} s{}",
                pipe.workload_cpu_s,
                tcp.workload_cpu_s,
                null.workload_cpu_s,
                getppid.workload_cpu_s,
                tracer_log
                    .as_deref()
                    .map(|h| format!(" (hooked by {h})"))
                    .unwrap_or_default()
            );
            rounds[p].push(Round {
                pipe,
                tcp,
                null,
                getppid,
                tracer_log,
            });
        }
    }
    Ok(render(heading, &paths, &rounds, &others))
}

fn children_cpu() -> Result<f64> {
    super::cpu_seconds("/proc/self/stat", 16)
}

/// Runs `cmd` to its end and measures it as one [`Sample`].
fn timed(cmd: &mut Command, name: &'static str, tracer: Option<u32>) -> Result<Sample> {
    let load = OtherLoad::start(tracer.into_iter().collect())?;
    let cpu_before = children_cpu()?;
    let start = std::time::Instant::now();
    let mut process = Guarded::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::null()), name)?;
    let status = process
        .wait_timeout(STEP_LIMIT)?
        .with_context(|| format!("{name} did not finish within {STEP_LIMIT:?}"))?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(status.success(), "{name} failed ({status})");
    Ok(Sample {
        seconds,
        workload_cpu_s: children_cpu()? - cpu_before,
        other_cpus: load.finish()?,
    })
}

/// `dd if=/dev/zero of=/dev/null bs=1 count=NULL_BYTES`: one process, 2 × NULL_BYTES syscalls.
fn null_run(tracer: Option<u32>) -> Result<Sample> {
    timed(
        Command::new("dd")
            .args(["if=/dev/zero", "of=/dev/null", "bs=1", "status=none"])
            .arg(format!("count={}", null_bytes())),
        "dd",
        tracer,
    )
}

/// GETPPID_CALLS `getppid` calls from Python (the interpreter's loop is the same with and
/// without the tracer; the difference is the syscalls').
fn loop_run(script: &std::path::Path, tracer: Option<u32>) -> Result<Sample> {
    timed(
        Command::new("python3")
            .arg(script)
            .arg(getppid_calls().to_string()),
        "getppid_loop.py",
        tracer,
    )
}

fn render(heading: &str, paths: &[Option<&str>], rounds: &[Vec<Round>], others: &Others) -> String {
    let cpu = |p: usize, f: fn(&Round) -> &Sample| {
        median(rounds[p].iter().map(|r| f(r).workload_cpu_s).collect())
    };
    let mut s = String::new();
    s.push_str(heading);
    s.push_str("\n\n");
    s.push_str(&format!(
        "Measured {date} on {machine} ({cpus} CPUs) with `cargo xtask bench --only \
         syscall-paths`. Each round runs the workloads with no tracer, then with a fresh \
         `agent-tracer run --console never` forced onto each path by \
         `AGENT_TRACER_SYSCALL_HOOKS`; {RUNS} rounds; each figure is the median of its runs. \
         Workload CPU is user + system time of the workload's own processes (the probes run on \
         their threads), in clock ticks, so small differences are rough.\n\n\
         - **pipe**: `dd if=/dev/zero bs=1 count={pipe_writes} | cat > /dev/null` (up to 4 \
         syscalls per byte; a pipe is never a candidate).\n\
         - **TCP**: {tcp_sends} 16-byte sends and their `recv`s over loopback (a candidate \
         connection, ignored after its first bytes).\n\
         - **read/write**: `dd if=/dev/zero of=/dev/null bs=1 count={null_bytes}`: \
         {calls} hooked syscalls on fds that are not candidates.\n\
         - **getppid**: {getppid_calls} `getppid` calls from a Python loop: a syscall no path \
         hooks.\n\n",
        date = today(),
        machine = machine(),
        cpus = cpu_count(),
        calls = 2 * u64::from(null_bytes()),
        pipe_writes = pipe_writes(),
        tcp_sends = tcp_sends(),
        null_bytes = null_bytes(),
        getppid_calls = getppid_calls(),
    ));
    s.push_str(&others.caution());
    let loads: Vec<f64> = rounds
        .iter()
        .flatten()
        .flat_map(|r| [&r.pipe, &r.tcp, &r.null, &r.getppid].map(|s| s.other_cpus))
        .collect();
    s.push_str(&load_note(&loads));
    s.push_str(
        "| path | pipe CPU (ratio) | TCP CPU (ratio) | read/write: added ns per syscall | \
         getppid: added ns per syscall |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    let per_call = |p: usize, f: fn(&Round) -> &Sample, calls: u32| {
        (cpu(p, f) - cpu(0, f)) * 1e9 / f64::from(calls)
    };
    for (p, path) in paths.iter().enumerate() {
        let name = match path {
            None => "no tracer".to_string(),
            Some(path) => {
                let hooked = rounds[p]
                    .first()
                    .and_then(|r| r.tracer_log.clone())
                    .unwrap_or_default();
                format!("`{path}`: {hooked}")
            }
        };
        let ratio = |f: fn(&Round) -> &Sample| {
            format!("{:.2} s ({:.2}×)", cpu(p, f), cpu(p, f) / cpu(0, f))
        };
        let added = |f: fn(&Round) -> &Sample, calls: u32| {
            if p == 0 {
                "—".to_string()
            } else {
                format!("{:+.0}", per_call(p, f, calls))
            }
        };
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            ratio(|r| &r.pipe),
            ratio(|r| &r.tcp),
            added(|r| &r.null, 2 * null_bytes()),
            added(|r| &r.getppid, getppid_calls()),
        ));
    }
    s.push_str("\nPer run, workload CPU s (pipe; TCP; read/write; getppid):\n\n");
    for (p, path) in paths.iter().enumerate() {
        let runs =
            |f: fn(&Round) -> &Sample| list(rounds[p].iter().map(|r| f(r).workload_cpu_s), 2);
        s.push_str(&format!(
            "- {}: {}; {}; {}; {}\n",
            path.unwrap_or("no tracer"),
            runs(|r| &r.pipe),
            runs(|r| &r.tcp),
            runs(|r| &r.null),
            runs(|r| &r.getppid),
        ));
    }
    s.push('\n');
    s
}
