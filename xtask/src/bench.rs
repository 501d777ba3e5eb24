//! `cargo xtask bench`: the tracer's overhead, written as sections of BENCHMARKS.md.
//!
//! - `https-loop`: a Python `http.client` loop (the system OpenSSL, which the tracer hooks) posts
//!   chat completions to the local mock OpenAI server (rustls, never hooked) over one keep-alive
//!   connection, alternately without and with a fresh `agent-tracer run`.
//! - `tls-calls` ([`tls_calls`]): the same loop from Python, node and Go clients, and the latency
//!   the tracer adds per request and per TLS call.
//! - `syscalls` ([`syscalls`]): what the socket tracepoints cost a process the tracer does not
//!   trace (a pipe, and a TCP connection that is not HTTP).
//! - `syscall-paths` ([`syscall_paths`]): the same, and a cost per syscall, for each way of
//!   hooking syscalls this kernel offers.
//!
//! Every child process is guarded ([`Guarded`]): an error anywhere interrupts, then kills, what
//! this command started, and nothing else is ever signalled.

mod locator;
mod preattach;
mod syscall_paths;
mod syscalls;
mod tls_calls;

use std::{
    ffi::OsString,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Write as _},
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
/// How long a traced run waits for the tracer to hook a client executable it only sees at exec.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// Before each run, wait at most this long for other agent-tracers to exit and other processes
/// to go quiet (the machine may be shared)...
const QUIET_WAIT_PER_RUN: Duration = Duration::from_secs(120);
/// ...and at most this long in all, so the benchmark stays bounded on a busy machine.
const QUIET_WAIT_TOTAL: Duration = Duration::from_secs(600);
/// Other processes' CPU use (in CPUs) under which the machine counts as quiet.
const QUIET_CPUS: f64 = 0.3;
const SECTION: &str = "## HTTPS client loop (OpenSSL, Python http.client, keep-alive)";

/// Standard library only: the interpreter's `ssl` module is the system libssl.so.3.
const CLIENT_PY: &str = include_str!("../bench-clients/tls_client.py");

#[derive(clap::Args)]
pub struct Args {
    /// Measured requests per client run (after 50 warm-up requests), for `https-loop` and
    /// `tls-calls`.
    #[arg(long, default_value_t = 1000)]
    requests: u32,
    /// The Markdown file whose benchmark sections are written or replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Run only these sections (repeatable; all of them by default).
    #[arg(long, value_enum)]
    only: Vec<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// HTTPS client loop (OpenSSL, Python http.client, keep-alive).
    HttpsLoop,
    /// Added latency per TLS call: OpenSSL, Node, Go.
    TlsCalls,
    /// Socket tracepoints: cost on an unrelated process.
    Syscalls,
    /// Syscall hook paths (per-syscall tracepoints, raw_tp, tp_btf): cost on an unrelated
    /// process.
    SyscallPaths,
    /// Locator: TLS functions found without symbols (first analysis and cached).
    Locator,
    /// Pre-attach: start-up cost, and exec → hooked latency of a never-seen binary.
    Preattach,
}

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        (1..=1_000_000).contains(&args.requests),
        "--requests must be between 1 and 1000000"
    );
    ensure!(is_root(), "the benchmark runs the tracer, which needs root");
    let wanted = |s: Section| args.only.is_empty() || args.only.contains(&s);
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
    let env = Env {
        tracer: release.join("agent-tracer"),
        dir: dir.clone(),
        requests: args.requests,
        quiet_budget: std::cell::Cell::new(QUIET_WAIT_TOTAL),
    };
    let client_py = dir.join("client.py");
    fs::write(&client_py, CLIENT_PY).with_context(|| format!("writing {}", client_py.display()))?;

    if wanted(Section::HttpsLoop) || wanted(Section::TlsCalls) {
        header("starting the mock OpenAI server");
        let server = MockServer::start(&release.join("mock-llm"), &dir)?;
        println!("https://127.0.0.1:{}/v1", server.port);
        let python = Client {
            name: "python",
            program: PathBuf::from("python3"),
            script: Some(client_py.clone().into()),
            port: server.port,
            cert: server.cert.clone(),
            server_pid: server.pid(),
            requests: args.requests,
            hooked_at_exec: None,
        };
        if wanted(Section::HttpsLoop) {
            let section = https_loop(&env, &python)?;
            header(&format!("writing {}", out.display()));
            println!("{section}");
            write_section(&out, &section)?;
        }
        if wanted(Section::TlsCalls) {
            let section = tls_calls::measure(&env, python)?;
            header(&format!("writing {}", out.display()));
            println!("{section}");
            write_section(&out, &section)?;
        }
        drop(server);
    }
    if wanted(Section::Syscalls) {
        let section = syscalls::measure(&env)?;
        header(&format!("writing {}", out.display()));
        println!("{section}");
        write_section(&out, &section)?;
    }
    if wanted(Section::SyscallPaths) {
        let section = syscall_paths::measure(&env)?;
        header(&format!("writing {}", out.display()));
        println!("{section}");
        write_section(&out, &section)?;
    }
    if wanted(Section::Locator) {
        let section = locator::measure(&env)?;
        header(&format!("writing {}", out.display()));
        println!("{section}");
        write_section(&out, &section)?;
    }
    if wanted(Section::Preattach) {
        let section = preattach::measure(&env)?;
        header(&format!("writing {}", out.display()));
        println!("{section}");
        write_section(&out, &section)?;
    }
    Ok(())
}

/// What every section needs.
struct Env {
    /// `target/release/agent-tracer`.
    tracer: PathBuf,
    /// `target/bench`: scripts, client builds, tracer logs.
    dir: PathBuf,
    /// Measured requests per client run.
    requests: u32,
    /// What is left of [`QUIET_WAIT_TOTAL`].
    quiet_budget: std::cell::Cell<Duration>,
}

impl Env {
    fn start_tracer(&self, label: &str) -> Result<Tracer> {
        Tracer::start(&self.tracer, &self.dir, label)
    }

    /// Call before each run: waits (bounded) until no other agent-tracer runs and other
    /// processes use less than [`QUIET_CPUS`], then notes any other tracer still running.
    fn before_run(&self, others: &mut Others) -> Result<()> {
        let started = Instant::now();
        let deadline = started + QUIET_WAIT_PER_RUN.min(self.quiet_budget.get());
        let mut told = false;
        loop {
            let tracers = other_tracers();
            // Sampled over half a second; the benchmark's own processes are idle here.
            let sample = OtherLoad::start(Vec::new())?;
            std::thread::sleep(Duration::from_millis(500));
            let busy = sample.finish()?;
            if tracers.is_empty() && busy < QUIET_CPUS {
                break;
            }
            if Instant::now() >= deadline {
                println!("the machine is still busy; measuring anyway");
                break;
            }
            if !told {
                println!(
                    "waiting for the machine to quieten: {} other agent-tracer(s), other \
                     processes using {busy:.2} CPUs",
                    tracers.len()
                );
                told = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.quiet_budget
            .set(self.quiet_budget.get().saturating_sub(started.elapsed()));
        others.check(&[]);
        Ok(())
    }
}

/// Other agent-tracer processes seen during a section: their probes slow down both sides, so the
/// section says so.
#[derive(Default)]
struct Others(Vec<u32>);

impl Others {
    /// Looks for other tracers, `ours` (this benchmark's running tracer, if any) aside. Call it
    /// before and after each run.
    fn check(&mut self, ours: &[u32]) {
        for pid in other_tracers().into_iter().filter(|p| !ours.contains(p)) {
            eprintln!("warning: another agent-tracer (pid {pid}) is running; the numbers include its probes");
            if !self.0.contains(&pid) {
                self.0.push(pid);
            }
        }
    }

    /// The caution paragraph for a section, if any other tracer was seen.
    fn caution(&self) -> String {
        match self.0.len() {
            0 => String::new(),
            n => format!(
                "Caution: {n} other agent-tracer process(es) (other engineers' tests) were \
                 running during some of these runs, even after waiting for a quiet machine: \
                 their probes slowed down both sides, and their traffic may be counted in the \
                 final log lines.\n\n"
            ),
        }
    }
}

fn https_loop(env: &Env, client: &Client) -> Result<String> {
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

/// One client run's numbers, as printed by the bench clients.
struct ClientResult {
    line: String,
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    /// CPUs other processes on the host kept busy during the run ([`OtherLoad`]).
    other_cpus: f64,
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

/// One of the HTTPS bench clients: `program [script] PORT CERT N WARMUP`. Each waits for a line
/// (or EOF) on stdin before its first request and prints one JSON line with `requests`,
/// `seconds`, `p50_us`, `p99_us`, `rps` and `connections`.
#[derive(Clone)]
struct Client {
    /// Short name for messages and log files.
    name: &'static str,
    program: PathBuf,
    script: Option<OsString>,
    port: u16,
    cert: PathBuf,
    /// The mock server's PID, whose CPU time is this benchmark's own.
    server_pid: u32,
    requests: u32,
    /// Set for an executable the tracer can only hook once a process runs it (a Go binary):
    /// traced runs hold the client until the tracer's log says `attached ... <this>`.
    hooked_at_exec: Option<String>,
}

impl Client {
    /// One run; with `tracer`, the client waits until the tracer has hooked it if needed.
    fn run(&self, tracer: Option<&mut Tracer>) -> Result<ClientResult> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.script)
            .arg(self.port.to_string())
            .arg(&self.cert)
            .arg(self.requests.to_string())
            .arg(WARMUP.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut pids = vec![self.server_pid];
        pids.extend(tracer.as_ref().map(|t| t.pid));
        let load = OtherLoad::start(pids)?;
        let mut client = Guarded::spawn(&mut cmd, self.name)?;
        // Read stdout on a thread so that a full pipe can never stall the client.
        let stdout = client
            .child_mut()
            .and_then(|c| c.stdout.take())
            .context("the client has no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut text);
            text
        });
        if let (Some(tracer), Some(binary)) = (tracer, &self.hooked_at_exec) {
            tracer.wait_for_log(
                &format!("`attached ... {binary}` line"),
                ATTACH_TIMEOUT,
                Some(&mut client),
                |l| l.contains("attached") && l.contains(binary.as_str()),
            )?;
        }
        // The line starts the client; dropping the handle then closes its stdin.
        if let Some(mut stdin) = client.child_mut().and_then(|c| c.stdin.take()) {
            stdin
                .write_all(b"go\n")
                .context("starting the client (its stdin)")?;
        }
        // Generous: a request normally takes well under a millisecond.
        let limit = Duration::from_secs(60) + Duration::from_millis(50) * (self.requests + WARMUP);
        let status = client
            .wait_timeout(limit)?
            .with_context(|| format!("the {} client did not finish within {limit:?}", self.name))?;
        let other_cpus = load.finish()?;
        let stdout = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the stdout reader panicked"))?;
        ensure!(
            status.success(),
            "the {} client failed ({status})",
            self.name
        );
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| {
                format!(
                    "no JSON line in the {} client's output: {stdout:?}",
                    self.name
                )
            })?
            .to_string();
        let connections = json_number(&line, "connections")?;
        ensure!(
            connections == 1.0,
            "the {} client opened {connections} connections, so keep-alive did not hold: {line}",
            self.name
        );
        Ok(ClientResult {
            p50_us: json_number(&line, "p50_us")?,
            p99_us: json_number(&line, "p99_us")?,
            rps: json_number(&line, "rps")?,
            other_cpus,
            line,
        })
    }
}

fn run_with_tracer(
    env: &Env,
    label: &str,
    client: &Client,
    others: &mut Others,
) -> Result<TracerRun> {
    let mut tracer = env.start_tracer(label)?;
    let cpu_ready = tracer.cpu_seconds()?;
    let result = client.run(Some(&mut tracer))?;
    others.check(&[tracer.pid]);
    // Read before stopping: the process is gone afterwards.
    let cpu_end = tracer.cpu_seconds()?;
    let peak_rss_kib = tracer.peak_rss_kib()?;
    let final_line = tracer.stop()?;
    Ok(TracerRun {
        client: result,
        cpu_run_s: cpu_end - cpu_ready,
        cpu_startup_s: cpu_ready,
        peak_rss_kib,
        final_line,
    })
}

/// A running `agent-tracer run --console never` (no exporter), ready: its probes are attached.
struct Tracer {
    process: Guarded,
    pid: u32,
    stderr_path: PathBuf,
}

impl Tracer {
    /// Starts the tracer, logging to `dir/tracer-{label}.{stdout,stderr}`, and waits for
    /// `tracer ready`.
    fn start(bin: &Path, dir: &Path, label: &str) -> Result<Self> {
        Self::start_with_env(bin, dir, label, &[])
    }

    /// [`start`](Self::start), with extra environment variables.
    fn start_with_env(bin: &Path, dir: &Path, label: &str, envs: &[(&str, &str)]) -> Result<Self> {
        let stdout_path = dir.join(format!("tracer-{label}.stdout"));
        let stderr_path = dir.join(format!("tracer-{label}.stderr"));
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--console", "never"])
            // Plain log text, and no exporter picked up from the environment: capture cost only.
            .env("NO_COLOR", "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?);
        cmd.envs(envs.iter().copied());
        let process = Guarded::spawn(&mut cmd, "agent-tracer")?;
        let mut tracer = Self {
            pid: process.pid(),
            process,
            stderr_path,
        };
        tracer.wait_for_log("tracer ready", READY_TIMEOUT, None, |l| {
            l.contains("tracer ready")
        })?;
        Ok(tracer)
    }

    fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.stderr_path).unwrap_or_default())
    }

    /// Polls the log until a line matches; an error if the tracer (or `also`, a process this
    /// wait is for) exits first, or after `limit`.
    fn wait_for_log(
        &mut self,
        what: &str,
        limit: Duration,
        mut also: Option<&mut Guarded>,
        matches: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.lines().any(&matches) {
                return Ok(());
            }
            if let Some(status) = self.process.try_wait()? {
                bail!(
                    "the tracer exited ({status}) while waiting for {what}:\n{}",
                    tail(&log, 20)
                );
            }
            if let Some(other) = also.as_deref_mut() {
                if let Some(status) = other.try_wait()? {
                    bail!(
                        "{} exited ({status}) while waiting for the tracer's {what}",
                        other.name
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no {what} in the tracer's log within {limit:?}:\n{}",
                    tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// utime + stime so far, in seconds.
    fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid), 14)
    }

    fn peak_rss_kib(&self) -> Result<u64> {
        peak_rss_kib(self.pid)
    }

    /// SIGINT, wait for the exit, and return the `tracer stopped: ...` message (its counters).
    fn stop(self) -> Result<String> {
        let status = self.process.stop(STOP_TIMEOUT)?;
        let log = strip_ansi(&fs::read_to_string(&self.stderr_path).unwrap_or_default());
        ensure!(
            status.success(),
            "the tracer failed ({status}):\n{}",
            tail(&log, 20)
        );
        log.lines()
            .rev()
            .find_map(|l| l.find("tracer stopped:").map(|i| l[i..].trim().to_string()))
            .with_context(|| {
                format!(
                    "no `tracer stopped:` line in {}",
                    self.stderr_path.display()
                )
            })
    }
}

/// The value of `name=` in the tracer's final line; counters at zero are left out of it.
fn counter(final_line: &str, name: &str) -> u64 {
    final_line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

/// `mock-llm 127.0.0.1:0`, stopped when dropped.
struct MockServer {
    process: Guarded,
    port: u16,
    cert: PathBuf,
}

impl MockServer {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

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
            process,
            port,
            cert,
        })
    }
}

/// A child process that is interrupted (then killed) if still running when dropped, so that an
/// error anywhere never leaves a tracer, server or client behind.
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
            std::thread::sleep(Duration::from_millis(2));
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

/// Clock ticks per second, the unit of /proc CPU times (asked once).
fn clk_tck() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        match output_of(Command::new("getconf").arg("CLK_TCK")).map(|s| s.parse::<f64>()) {
            Ok(Ok(ticks)) if ticks > 0.0 => ticks,
            _ => {
                eprintln!("warning: `getconf CLK_TCK` failed; assuming 100 ticks per second");
                100.0
            }
        }
    })
}

/// The sum of two consecutive CPU-time fields of a /proc/PID/stat file, starting at 1-based
/// field `first`, in seconds: 14 is utime + stime, 16 is cutime + cstime (waited-for children).
fn cpu_seconds(stat_path: &str, first: usize) -> Result<f64> {
    let stat = fs::read_to_string(stat_path)?;
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
    Ok((ticks(first)? + ticks(first + 1)?) / clk_tck())
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

/// CPU time of user and system work on the whole host so far (the `cpu` line of /proc/stat:
/// user + nice + system), in seconds. Interrupt time and steal are left out: loopback traffic's
/// softirq work may be accounted there rather than to the process that caused it.
fn host_busy_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()?;
    ensure!(ticks.len() == 3, "short cpu line in /proc/stat: {line}");
    Ok(ticks.iter().sum::<f64>() / clk_tck())
}

/// Measures how busy the rest of the host was during a step: host CPU time minus what this
/// command, its waited-for children and the given running processes (server, tracer) used.
/// Other engineers' builds and tests on a shared machine show up here.
struct OtherLoad {
    start: Instant,
    host: f64,
    ours: f64,
    pids: Vec<u32>,
}

impl OtherLoad {
    fn start(pids: Vec<u32>) -> Result<Self> {
        Ok(Self {
            start: Instant::now(),
            host: host_busy_seconds()?,
            ours: Self::ours(&pids)?,
            pids,
        })
    }

    fn ours(pids: &[u32]) -> Result<f64> {
        let mut total = cpu_seconds("/proc/self/stat", 14)? + cpu_seconds("/proc/self/stat", 16)?;
        for pid in pids {
            total += cpu_seconds(&format!("/proc/{pid}/stat"), 14)?;
        }
        Ok(total)
    }

    /// The average number of CPUs other processes kept busy since `start` (never negative;
    /// clock-tick resolution, so approximate).
    fn finish(&self) -> Result<f64> {
        let wall = self.start.elapsed().as_secs_f64();
        let host = host_busy_seconds()? - self.host;
        let ours = Self::ours(&self.pids)? - self.ours;
        Ok(((host - ours) / wall.max(1e-3)).max(0.0))
    }
}

/// A sentence on how busy the rest of the host was, from per-run [`OtherLoad`] figures, with a
/// caution when it was enough to matter.
fn load_note(values: &[f64]) -> String {
    let max = values.iter().copied().fold(0.0, f64::max);
    let mut s = format!(
        "Before each run the benchmark waited (at most {}s per run, {}s in all) until no other \
         agent-tracer ran and other processes used under {QUIET_CPUS} CPUs. Other processes \
         then kept on average {:.2} CPUs busy during the measured runs (median over runs; \
         highest {max:.2}), from /proc/stat minus this benchmark's own processes.",
        QUIET_WAIT_PER_RUN.as_secs(),
        QUIET_WAIT_TOTAL.as_secs(),
        median(values.to_vec())
    );
    if max >= 0.25 {
        s.push_str(
            " Caution: that is enough to slow down and spread the measured numbers; the machine \
             was shared while they were taken.",
        );
    }
    s.push_str("\n\n");
    s
}

/// A number field from a client's flat JSON line (`"key": 1.5` or `"key":1.5`).
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

/// Values as a comma-separated list with `decimals` decimals, for the per-run lines.
fn list(values: impl IntoIterator<Item = f64>, decimals: usize) -> String {
    values
        .into_iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` with commas between groups of three digits: 1,000,000.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

/// Online CPUs, for notes about sharing cores.
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn today() -> String {
    output_of(Command::new("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_else(|_| "?".into())
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
         (`mock-llm`, rustls, so its side is never hooked), after {WARMUP} warm-up requests. \
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
        // Go and node print without spaces, keys in any order.
        let line = r#"{"connections":1,"p50_us":144.033,"rps":6988.2}"#;
        assert_eq!(json_number(line, "connections").unwrap(), 1.0);
        assert_eq!(json_number(line, "rps").unwrap(), 6988.2);
    }

    #[test]
    fn reads_counters_from_the_final_line() {
        let line = "tracer stopped: records=6236 bytes=1927000 kernel_tls_calls=6150 \
                    tls_targets_attached=3 tracer.unsupported_tls{binary=/x,stack=rustls}=1";
        assert_eq!(counter(line, "kernel_tls_calls"), 6150);
        assert_eq!(counter(line, "bytes"), 1927000);
        // Counters at zero are not printed.
        assert_eq!(counter(line, "kernel_ignored_connections"), 0);
        assert_eq!(counter(line, "kernel_tls"), 0);
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
    fn groups_digits() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(4_000_000), "4,000,000");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
