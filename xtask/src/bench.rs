//! `cargo xtask bench`: the tracer's overhead on an HTTPS client loop.
//!
//! A Python `http.client` loop (the system OpenSSL, which the tracer hooks) posts chat
//! completions to the local mock OpenAI server (rustls, never hooked) over one keep-alive
//! connection, alternately without and with a fresh `agent-tracer run`. Medians of each side are
//! written as a section of BENCHMARKS.md.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{
    setup,
    util::{cargo, header, is_root, output_of, root, run_checked, strip_ansi, target_dir},
};

const RUNS: usize = 3;
const WARMUP: u32 = 50;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const SECTION: &str = "## HTTPS client loop (OpenSSL, Python http.client, keep-alive)";

/// Standard library only: the interpreter's `ssl` module is the system libssl.so.3.
const CLIENT_PY: &str = r#"# Written by `cargo xtask bench`: N chat-completion POSTs over one keep-alive HTTPS connection.
import http.client
import json
import math
import ssl
import sys
import time

port, cert, n, warmup = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cert)
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
# http.client sends "Accept-Encoding: identity" by itself, so the answer is never gzipped.
headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-not-a-secret"}


def once():
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.exit(f"HTTP {resp.status}: {data[:200]!r}")


for _ in range(warmup):
    once()
latencies = []
start = time.perf_counter_ns()
for _ in range(n):
    t = time.perf_counter_ns()
    once()
    latencies.append(time.perf_counter_ns() - t)
total = (time.perf_counter_ns() - start) / 1e9
conn.close()
latencies.sort()


def percentile(p):
    return latencies[min(len(latencies) - 1, max(0, math.ceil(p / 100 * len(latencies)) - 1))] / 1000


print(json.dumps({"requests": n, "seconds": total, "p50_us": percentile(50),
                  "p99_us": percentile(99), "rps": n / total}), flush=True)
"#;

#[derive(clap::Args)]
pub struct Args {
    /// Measured requests per run (after 50 warm-up requests).
    #[arg(long, default_value_t = 1000)]
    requests: u32,
    /// The Markdown file whose benchmark section is written or replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        (1..=1_000_000).contains(&args.requests),
        "--requests must be between 1 and 1000000"
    );
    ensure!(is_root(), "the benchmark runs the tracer, which needs root");
    // `--out BENCHMARKS.md` (the default) means the workspace's file; other relative paths are
    // taken from the current directory, as usual for command-line paths.
    let out = if args.out == Path::new("BENCHMARKS.md") {
        root().join("BENCHMARKS.md")
    } else {
        args.out.clone()
    };
    setup::run(setup::Needs::Everything)?;
    header("cargo build --release -p tracer-user -p tracer-testkit");
    run_checked(cargo().args([
        "build",
        "--release",
        "-p",
        "tracer-user",
        "-p",
        "tracer-testkit",
    ]))?;

    let release = target_dir().join("release");
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let client_py = dir.join("client.py");
    fs::write(&client_py, CLIENT_PY).with_context(|| format!("writing {}", client_py.display()))?;
    let clk_tck = clock_ticks_per_second();

    header("starting the mock OpenAI server");
    let server = MockServer::start(&release.join("mock-llm"), &dir)?;
    println!("https://127.0.0.1:{}/v1", server.port);
    let client = Client {
        script: client_py,
        port: server.port,
        cert: server.cert.clone(),
        requests: args.requests,
    };

    let mut off = Vec::new();
    let mut on = Vec::new();
    // Another tracer's probes would slow down both sides: noted in the report when seen.
    let mut others = Vec::new();
    let mut check_others = || {
        for pid in other_tracers() {
            eprintln!("warning: another agent-tracer (pid {pid}) is running; the numbers include its probes");
            if !others.contains(&pid) {
                others.push(pid);
            }
        }
    };
    for i in 1..=RUNS {
        header(&format!("run {i}/{RUNS} without the tracer"));
        check_others();
        let result = client.run()?;
        println!("{}", result.line);
        off.push(result);

        header(&format!("run {i}/{RUNS} with the tracer"));
        check_others();
        let result = run_with_tracer(&release.join("agent-tracer"), &dir, i, &client, clk_tck)?;
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
    drop(server);

    let section = render(args.requests, &off, &on, others.len());
    header(&format!("writing {}", out.display()));
    println!("{section}");
    write_section(&out, &section)
}

/// One client run's numbers, as printed by client.py.
struct ClientResult {
    line: String,
    p50_us: f64,
    p99_us: f64,
    rps: f64,
}

struct TracerRun {
    client: ClientResult,
    /// Tracer CPU time from `tracer ready` to the end of the client run.
    cpu_run_s: f64,
    /// Tracer CPU time from start to `tracer ready` (loading and attaching the programs).
    cpu_startup_s: f64,
    peak_rss_kib: u64,
    /// The tracer's `tracer stopped: ...` log message.
    final_line: String,
}

struct Client {
    script: PathBuf,
    port: u16,
    cert: PathBuf,
    requests: u32,
}

impl Client {
    fn run(&self) -> Result<ClientResult> {
        let mut cmd = Command::new("python3");
        cmd.arg(&self.script)
            .arg(self.port.to_string())
            .arg(&self.cert)
            .arg(self.requests.to_string())
            .arg(WARMUP.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut client = Guarded::spawn(&mut cmd, "python client")?;
        // Generous: a request normally takes about a millisecond.
        let limit = Duration::from_secs(60) + Duration::from_millis(50) * (self.requests + WARMUP);
        let status = client
            .wait_timeout(limit)?
            .with_context(|| format!("the client did not finish within {limit:?}"))?;
        let mut stdout = String::new();
        if let Some(mut pipe) = client.child_mut().and_then(|c| c.stdout.take()) {
            pipe.read_to_string(&mut stdout)?;
        }
        ensure!(status.success(), "the client failed ({status})");
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("no JSON line in the client's output: {stdout:?}"))?
            .to_string();
        Ok(ClientResult {
            p50_us: json_number(&line, "p50_us")?,
            p99_us: json_number(&line, "p99_us")?,
            rps: json_number(&line, "rps")?,
            line,
        })
    }
}

fn run_with_tracer(
    bin: &Path,
    dir: &Path,
    run: usize,
    client: &Client,
    clk_tck: f64,
) -> Result<TracerRun> {
    let stdout_path = dir.join(format!("tracer-{run}.stdout"));
    let stderr_path = dir.join(format!("tracer-{run}.stderr"));
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--console", "never"])
        // Plain log text, and no exporter picked up from the environment: capture cost only.
        .env("NO_COLOR", "1")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path)?)
        .stderr(File::create(&stderr_path)?);
    let mut tracer = Guarded::spawn(&mut cmd, "agent-tracer")?;
    let pid = tracer.pid();

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let log = strip_ansi(&fs::read_to_string(&stderr_path).unwrap_or_default());
        if log.contains("tracer ready") {
            break;
        }
        if let Some(status) = tracer.try_wait()? {
            bail!(
                "the tracer exited before it was ready ({status}):\n{}",
                tail(&log, 20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the tracer was not ready within {READY_TIMEOUT:?}:\n{}",
                tail(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu_ready = cpu_seconds(pid, clk_tck)?;
    let result = client.run()?;
    // Read before stopping: the process is gone afterwards.
    let cpu_end = cpu_seconds(pid, clk_tck)?;
    let peak_rss_kib = peak_rss_kib(pid)?;

    let status = tracer.stop(STOP_TIMEOUT)?;
    let log = strip_ansi(&fs::read_to_string(&stderr_path).unwrap_or_default());
    ensure!(
        status.success(),
        "the tracer failed ({status}):\n{}",
        tail(&log, 20)
    );
    let final_line = log
        .lines()
        .rev()
        .find_map(|l| l.find("tracer stopped:").map(|i| l[i..].trim().to_string()))
        .with_context(|| format!("no `tracer stopped:` line in {}", stderr_path.display()))?;
    Ok(TracerRun {
        client: result,
        cpu_run_s: cpu_end - cpu_ready,
        cpu_startup_s: cpu_ready,
        peak_rss_kib,
        final_line,
    })
}

/// `mock-llm 127.0.0.1:0`, stopped when dropped.
struct MockServer {
    _process: Guarded,
    port: u16,
    cert: PathBuf,
}

impl MockServer {
    fn start(bin: &Path, dir: &Path) -> Result<Self> {
        let stderr = File::create(dir.join("mock-llm.stderr"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut process = Guarded::spawn(&mut cmd, "mock-llm")?;
        let stdout = process
            .child_mut()
            .and_then(|c| c.stdout.take())
            .context("mock-llm has no stdout")?;
        // Read the announcement on a thread so that a silent server cannot hang us; the thread
        // keeps draining the pipe afterwards.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => bail!(
                "mock-llm exited without announcing its address (see {})",
                dir.join("mock-llm.stderr").display()
            ),
            Err(_) => bail!("mock-llm did not announce its address within 30 s"),
        };
        // listening https://127.0.0.1:PORT/v1 cert=/path/to/cert.pem
        let parse = || -> Option<(u16, PathBuf)> {
            let rest = line.strip_prefix("listening https://127.0.0.1:")?;
            let (port, rest) = rest.split_once('/')?;
            let cert = rest.split_once(" cert=")?.1;
            Some((port.parse().ok()?, PathBuf::from(cert.trim())))
        };
        let (port, cert) =
            parse().with_context(|| format!("unexpected mock-llm announcement: {line:?}"))?;
        Ok(Self {
            _process: process,
            port,
            cert,
        })
    }
}

/// A child process that is interrupted (then killed) if still running when dropped, so that an
/// error anywhere never leaves a tracer or server behind.
struct Guarded {
    child: Option<Child>,
    name: &'static str,
}

impl Guarded {
    fn spawn(cmd: &mut Command, name: &'static str) -> Result<Self> {
        let child = cmd.spawn().with_context(|| {
            format!("starting {name} ({})", cmd.get_program().to_string_lossy())
        })?;
        Ok(Self {
            child: Some(child),
            name,
        })
    }

    fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{} was already stopped", self.name),
        }
    }

    /// Polls for the exit for at most `limit`.
    fn wait_timeout(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn interrupt(&mut self) -> Result<()> {
        // Only while not yet reaped, so the PID is still this child's.
        if self.try_wait()?.is_none() {
            let pid = self.pid().to_string();
            let status = Command::new("kill").args(["-INT", &pid]).status()?;
            ensure!(status.success(), "kill -INT {pid} failed");
        }
        Ok(())
    }

    /// SIGINT, then wait up to `limit` for the exit; killed (and an error) past that.
    fn stop(mut self, limit: Duration) -> Result<ExitStatus> {
        self.interrupt()?;
        match self.wait_timeout(limit)? {
            Some(status) => {
                self.child = None;
                Ok(status)
            }
            None => bail!(
                "{} did not exit within {limit:?} of SIGINT; killed it",
                self.name
            ),
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.child.is_none() || !matches!(self.try_wait(), Ok(None)) {
            return;
        }
        let _ = self.interrupt();
        if !matches!(self.wait_timeout(Duration::from_secs(5)), Ok(Some(_))) {
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// PIDs of running agent-tracer processes (this benchmark's own are not running when called).
fn other_tracers() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "agent-tracer")
        })
        .collect()
}

fn clock_ticks_per_second() -> f64 {
    match output_of(Command::new("getconf").arg("CLK_TCK")).map(|s| s.parse::<f64>()) {
        Ok(Ok(ticks)) if ticks > 0.0 => ticks,
        _ => {
            eprintln!("warning: `getconf CLK_TCK` failed; assuming 100 ticks per second");
            100.0
        }
    }
}

/// utime + stime of `pid` (fields 14 and 15 of /proc/PID/stat), in seconds.
fn cpu_seconds(pid: u32, clk_tck: f64) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; count fields after its closing paren.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let ticks = |n: usize| -> Result<f64> {
        Ok(fields
            .get(n - 3)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(14)? + ticks(15)?) / clk_tck)
}

/// VmHWM of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/PID/status")?;
    Ok(value.trim().trim_end_matches("kB").trim().parse()?)
}

/// A number field from client.py's flat JSON line.
fn json_number(line: &str, key: &str) -> Result<f64> {
    let needle = format!("\"{key}\":");
    let start = line
        .find(&needle)
        .with_context(|| format!("no {key} in {line}"))?
        + needle.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .with_context(|| format!("{key} in {line} is not a number"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn machine() -> String {
    let cpus = output_of(&mut Command::new("nproc")).unwrap_or_else(|_| "?".into());
    let kernel = output_of(Command::new("uname").arg("-r")).unwrap_or_else(|_| "?".into());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| format!(" ({})", m.trim()))
        })
        .unwrap_or_default();
    format!("{cpus} CPUs{model}, Linux {kernel}")
}

fn render(requests: u32, off: &[ClientResult], on: &[TracerRun], others: usize) -> String {
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
    let date =
        output_of(Command::new("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_else(|_| "?".into());
    let per_run = |runs: &[&ClientResult], f: fn(&ClientResult) -> f64| {
        runs.iter()
            .map(|r| format!("{:.0}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = String::new();
    s.push_str(SECTION);
    s.push_str("\n\n");
    s.push_str(&format!(
        "Measured {date} on {machine} with `cargo xtask bench --requests {requests}`.\n\n\
         One Python `http.client` HTTPS connection (the system OpenSSL, which the tracer hooks) \
         sends {requests} chat-completion POSTs, kept alive, to the local mock OpenAI server \
         (`mock-llm`, rustls, so its side is never hooked), after {WARMUP} warm-up requests. \
         {RUNS} runs without the tracer and {RUNS} with a fresh `agent-tracer run --console never` \
         (no exporter), interleaved; each figure is the median of its {RUNS} runs. Latency \
         includes the time the uprobes spend in the client's own SSL_write/SSL_read calls; the \
         tracer's CPU covers its user-space work (ring-buffer reading, HTTP parsing, spans).\n\n",
        machine = machine(),
    ));
    if others > 0 {
        s.push_str(&format!(
            "Caution: {others} other agent-tracer process(es) were running during these runs; \
             their probes slowed down both sides.\n\n"
        ));
    }
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

const INTRO: &str = "# Benchmarks\n\n\
Overhead of agent-tracer on the traffic it traces, measured with `cargo xtask bench`. Numbers are \
ratios against the same workload run without the tracer, interleaved with the traced runs on the \
same machine; absolute numbers depend on the machine, which each section names along with the \
date it was measured.\n";

/// Writes `section` into `path`, replacing the existing section with the same heading (sections
/// run from a `## ` heading to the next one) and leaving the rest of the file alone.
fn write_section(path: &Path, section: &str) -> Result<()> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => INTRO.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    fs::write(path, replace_section(&existing, section))
        .with_context(|| format!("writing {}", path.display()))
}

fn replace_section(text: &str, section: &str) -> String {
    let heading = section.lines().next().unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let section = section.trim_end();
    match lines.iter().position(|l| l.trim_end() == heading) {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |i| start + 1 + i);
            let mut out = lines[..start].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(section);
            out.push('\n');
            if end < lines.len() {
                out.push('\n');
                out.push_str(&lines[end..].join("\n"));
                out.push('\n');
            }
            out
        }
        None => format!("{}\n\n{section}\n", text.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_numbers() {
        let line =
            r#"{"requests": 10, "seconds": 0.5, "p50_us": 812.3, "p99_us": 1500.0, "rps": 20.0}"#;
        assert_eq!(json_number(line, "p50_us").unwrap(), 812.3);
        assert_eq!(json_number(line, "rps").unwrap(), 20.0);
        assert!(json_number(line, "nope").is_err());
    }

    #[test]
    fn replaces_only_its_section() {
        let text = "# Benchmarks\n\nintro\n\n## Other\n\nkeep\n\n## HTTPS x\n\nold\n\n## Later\n\nalso kept\n";
        let out = replace_section(text, "## HTTPS x\n\nnew\n");
        assert_eq!(
            out,
            "# Benchmarks\n\nintro\n\n## Other\n\nkeep\n\n## HTTPS x\n\nnew\n\n## Later\n\nalso kept\n"
        );
        // Idempotent, and appended when missing.
        assert_eq!(replace_section(&out, "## HTTPS x\n\nnew\n"), out);
        assert_eq!(
            replace_section("# B\n\nintro\n", "## HTTPS x\n\nnew\n"),
            "# B\n\nintro\n\n## HTTPS x\n\nnew\n"
        );
        assert_eq!(
            replace_section("# B\n\n## HTTPS x\nold", "## HTTPS x\nnew"),
            "# B\n\n## HTTPS x\nnew\n"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
