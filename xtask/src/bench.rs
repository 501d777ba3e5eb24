//! `cargo xtask bench`: the tracer's overhead, written as sections of BENCHMARKS.md.
//!
//! - `https-loop`: a Python `http.client` loop (the system OpenSSL, which the tracer hooks) posts
//!   chat completions to the local mock OpenAI server (rustls, which the tracer is told never to hook) over one keep-alive
//!   connection, alternately without and with a fresh `agent-tracer run`.
//! - `tls-calls` ([`tls_calls`]): the same loop from Python, node and Go clients, and the latency
//!   the tracer adds per request and per TLS call.
//! - `syscalls` ([`syscalls`]): what the socket tracepoints cost a process the tracer does not
//!   trace (a pipe, and a TCP connection that is not HTTP).
//! - `syscall-paths` ([`syscall_paths`]): the same, and a cost per syscall, for each way of
//!   hooking syscalls this kernel offers.
//! - `pipeline` ([`pipeline`]): the user-space stages alone on a flood of one-byte SSE events
//!   (no kernel, no root).
//! - `real-agent` ([`real_agent`]): Claude Code's whole tool loop against the mock, timed end to
//!   end without and with the tracer, with a 95 % confidence interval ([`stats`]) for the
//!   overhead.
//!
//! Every child process is guarded ([`Guarded`]): an error anywhere interrupts, then kills, what
//! this command started, and nothing else is ever signalled.
//!
//! Pieces shared by the sections: [`harness`] (the tracer, mock server and client processes; the
//! tracer's counters come from its `--summary-file` JSON, not its log), [`procfs`] (CPU, memory
//! and host-load sampling from /proc) and [`report`] (Markdown: figures, notes, sections of
//! BENCHMARKS.md).

mod harness;
mod https_loop;
mod locator;
mod pipeline;
mod preattach;
mod procfs;
mod real_agent;
mod report;
mod soak;
mod stats;
pub(crate) mod syscall_paths;
mod syscalls;
mod tls_calls;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

use crate::{
    setup,
    util::{cargo, header, is_root, root, run_checked, target_dir},
};

use harness::{
    json_number, run_with_tracer, Client, ClientResult, Guarded, MockServer, Tracer, TracerRun,
};
use procfs::{cpu_seconds, other_tracers, OtherLoad};
pub(crate) use report::write_section;
use report::{cpu_count, grouped, list, load_note, machine, median, today};

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

/// Standard library only: the interpreter's `ssl` module is the system libssl.so.3.
const CLIENT_PY: &str = include_str!("../bench-clients/tls_client.py");
/// The soak's client: the same requests for a time, keeping no per-request numbers.
const SOAK_CLIENT_PY: &str = include_str!("../bench-clients/soak_client.py");

#[derive(clap::Args)]
pub struct Args {
    /// Measured requests per client run (after 50 warm-up requests), for `https-loop` and
    /// `tls-calls`.
    #[arg(long, default_value_t = 1000)]
    requests: u32,
    /// The Markdown file whose benchmark sections are written or replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Run only these sections (repeatable; all of them by default, but for the soak).
    #[arg(long, value_enum)]
    only: Vec<Section>,
    /// Run the soak (alone, unless `--only` names others too): the HTTPS loop twice over for
    /// `--soak-minutes`, content capture on, the tracer's RSS slope.
    #[arg(long)]
    soak: bool,
    #[arg(long, default_value_t = 30)]
    soak_minutes: u32,
    /// Divide the syscall workloads' counts and the real agent's runs by this, for a slow
    /// machine (the VM kernels under TCG, about ten times slower: `cargo xtask vmtest --bench`
    /// passes 10).
    #[arg(long, default_value_t = 1)]
    scale_down: u32,
    /// Use the release binaries already built, with no set-up (inside a VM guest, which shares
    /// the host's build).
    #[arg(long)]
    prebuilt: bool,
    /// Appended to each section's heading, so runs elsewhere (a VM kernel) get sections of
    /// their own.
    #[arg(long)]
    heading_suffix: Option<String>,
}

/// `--scale-down`, for the workloads' counts.
static SCALE_DOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A workload's count on this run: `n` divided by `--scale-down`.
fn scaled(n: u32) -> u32 {
    (n / SCALE_DOWN.load(std::sync::atomic::Ordering::Relaxed).max(1)).max(1)
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
    /// Pipeline: a flood of one-byte SSE events through the user-space stages.
    Pipeline,
    /// Real agent: Claude Code's tool loop against the mock, end to end, 20 runs each way
    /// (divided by `--scale-down`), with a 95 % confidence interval for the overhead.
    RealAgent,
    /// Soak: the HTTPS loop twice over for `--soak-minutes` (30), content capture on, the
    /// tracer's RSS slope. Never part of the default set (`--soak` runs it).
    Soak,
}

pub fn run(args: &Args) -> Result<()> {
    ensure!(
        (1..=1_000_000).contains(&args.requests),
        "--requests must be between 1 and 1000000"
    );
    let mut only = args.only.clone();
    if args.soak {
        only.push(Section::Soak);
    }
    let wanted = |s: Section| {
        if s == Section::Soak {
            only.contains(&s)
        } else {
            only.is_empty() || only.contains(&s)
        }
    };
    // `--out BENCHMARKS.md` (the default) means the workspace's file; other relative paths are
    // taken from the current directory, as usual for command-line paths.
    let out = if args.out == Path::new("BENCHMARKS.md") {
        root().join("BENCHMARKS.md")
    } else {
        args.out.clone()
    };
    SCALE_DOWN.store(args.scale_down, std::sync::atomic::Ordering::Relaxed);
    // Every section but the pipeline's runs the tracer and real clients.
    let runs_the_tracer = only.is_empty() || only.iter().any(|s| *s != Section::Pipeline);
    if runs_the_tracer {
        ensure!(is_root(), "the benchmark runs the tracer, which needs root");
    }
    if runs_the_tracer && !args.prebuilt {
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
    }

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
            let section = https_loop::measure(&env, &python)?;
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
    if wanted(Section::Soak) {
        header("starting the mock OpenAI server");
        let server = MockServer::start(&release.join("mock-llm"), &dir)?;
        let soak_py = dir.join("soak_client.py");
        fs::write(&soak_py, SOAK_CLIENT_PY)
            .with_context(|| format!("writing {}", soak_py.display()))?;
        let section = soak::measure(&env, &server, &soak_py, args.soak_minutes)?;
        drop(server);
        header(&format!("writing {}", out.display()));
        println!("{section}");
        write_section(&out, &section)?;
    }
    if wanted(Section::RealAgent) {
        header("starting the mock model server");
        let server = MockServer::start(&release.join("mock-llm"), &dir)?;
        println!("https://127.0.0.1:{}", server.port);
        let section = real_agent::measure(&env, &server)?;
        drop(server);
        header(&format!("writing {}", out.display()));
        println!("{section}");
        write_section(&out, &section)?;
    }
    if wanted(Section::Syscalls) {
        let section = syscalls::measure(&env)?;
        header(&format!("writing {}", out.display()));
        println!("{section}");
        write_section(&out, &section)?;
    }
    if wanted(Section::SyscallPaths) {
        let heading = match &args.heading_suffix {
            Some(suffix) => format!("{} {suffix}", syscall_paths::SECTION),
            None => syscall_paths::SECTION.to_string(),
        };
        let section = syscall_paths::measure(&env, &heading)?;
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
    if wanted(Section::Pipeline) {
        let section = pipeline::measure(&env)?;
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
    /// The bench's own model server is never hooked (`--skip-executable`): a remote model API's
    /// side would not be, and hooking it would charge the client for the server's TLS too.
    fn start_tracer(&self, label: &str) -> Result<Tracer> {
        let server = self.mock_server().display().to_string();
        Tracer::start_with(
            &self.tracer,
            &self.dir,
            label,
            &[],
            &["--skip-executable", server.as_str()],
        )
    }

    /// `target/release/mock-llm`, beside the tracer.
    fn mock_server(&self) -> PathBuf {
        self.tracer.with_file_name("mock-llm")
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
