//! `cargo xtask <command>`: set-up, build, run, test and benchmark helpers for agent-tracer.
//!
//! Only std, anyhow and clap: this crate is compiled on every `cargo xtask` call.

mod bench;
mod fuzz;
mod setup;
mod util;

use std::{os::unix::process::CommandExt as _, process::ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use util::{cargo, run_checked, target_dir};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Set-up, build, run, test and benchmark helpers for agent-tracer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this machine able to build and run the tracer (idempotent): rust-src for the nightly
    /// toolchain, bpf-linker, tracefs and bpffs mounts, Python 3 with venv.
    Setup,
    /// Set up, then build the tracer (the eBPF programs are built by tracer-user's build.rs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build the release tracer and run it: `cargo xtask run -- <agent-tracer run args>`.
    Run {
        /// Arguments for `agent-tracer run`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then check formatting, run clippy and run every test (what CI runs).
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure the tracer's overhead (HTTPS client loops from Python, node and Go; syscalls of
    /// unrelated processes) and record it in BENCHMARKS.md.
    Bench(bench::Args),
    /// Run the cargo fuzz targets in fuzz/ (nightly): `cargo xtask fuzz --seconds 600 http1`.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Targets to run; all when none is named.
        targets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(setup::Needs::Everything),
        Command::Build { release } => build(release),
        Command::Run { args } => run(&args),
        Command::Test { args } => test(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz { seconds, targets } => {
            setup::run(setup::Needs::Everything).and_then(|()| fuzz::run(seconds, &targets))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build(release: bool) -> Result<()> {
    setup::run(setup::Needs::BuildAndRun)?;
    util::header("cargo build");
    let mut cmd = cargo();
    cmd.args(["build", "-p", "tracer-user"]);
    if release {
        cmd.arg("--release");
    }
    run_checked(&mut cmd)
}

fn run(args: &[String]) -> Result<()> {
    setup::run(setup::Needs::BuildAndRun)?;
    util::header("cargo build --release");
    run_checked(cargo().args(["build", "--release", "-p", "tracer-user"]))?;
    if !util::is_root() {
        eprintln!("warning: not running as root; loading eBPF programs will most likely fail");
    }
    let tracer = target_dir().join("release").join("agent-tracer");
    util::header(&format!("{} run {}", tracer.display(), args.join(" ")));
    // Replace this process so that Ctrl-C and other signals reach the tracer directly.
    let err = std::process::Command::new(&tracer)
        .arg("run")
        .args(args)
        .exec();
    Err(err).with_context(|| format!("executing {}", tracer.display()))
}

const FUZZ_SMOKE_SECONDS: u32 = 5;

fn test(extra: &[String]) -> Result<()> {
    setup::run(setup::Needs::Everything)?;
    let steps: Vec<(String, std::process::Command)> = vec![
        ("formatting: cargo fmt --all --check".to_string(), {
            let mut c = cargo();
            c.args(["fmt", "--all", "--check"]);
            c
        }),
        (
            // tracer-ebpf builds only for bpfel-unknown-none, so it is linted on its own below.
            "lints: cargo clippy --workspace --exclude tracer-ebpf --all-targets -- -D warnings".to_string(),
            {
                let mut c = cargo();
                c.args(["clippy", "--workspace", "--exclude", "tracer-ebpf", "--all-targets"])
                    .args(["--", "-D", "warnings"]);
                c
            },
        ),
        ("lints for the eBPF crate: cargo +nightly clippy -p tracer-ebpf --target bpfel-unknown-none -Z build-std=core --release -- -D warnings".to_string(),
            {
                let mut c = util::cargo_toolchain("nightly");
                c.args(["clippy", "-p", "tracer-ebpf", "--target", "bpfel-unknown-none"])
                    .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"]);
                c
            },
        ),
        ("tests: cargo test --workspace --exclude tracer-ebpf --no-fail-fast".to_string(), {
            let mut c = cargo();
            c.args(["test", "--workspace", "--exclude", "tracer-ebpf", "--no-fail-fast"])
                .args(extra);
            c
        }),
    ];
    // Every fuzz target for a few seconds: the parsers keep running on inputs no test wrote.
    let steps = steps.into_iter().chain(fuzz::TARGETS.iter().map(|t| {
        (
            format!("fuzz smoke: {t} for {FUZZ_SMOKE_SECONDS} s"),
            fuzz::command(t, FUZZ_SMOKE_SECONDS),
        )
    }));
    let mut failed = Vec::new();
    for (name, mut cmd) in steps {
        util::header(&name);
        if let Err(e) = run_checked(&mut cmd) {
            eprintln!("error: {e:#}");
            failed.push(name);
        }
    }
    if failed.is_empty() {
        println!("\nall checks passed");
        Ok(())
    } else {
        bail!(
            "{} step(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        )
    }
}
