//! `cargo xtask <command>`: set-up, build, run, test and benchmark helpers for agent-tracer.
//!
//! Only std, anyhow and clap: this crate is compiled on every `cargo xtask` call.

mod bench;
mod fuzz;
mod setup;
mod util;
mod vmtest;

use std::{os::unix::process::CommandExt as _, process::ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use util::{cargo, root, run_checked, target_dir};

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
    /// toolchain, bpf-linker, the tracefs mount, Python 3 with venv.
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
        /// Only the real-agent tests (tests/e2e_real_agents.rs, tests/e2e_codex.rs), against
        /// each agent's newest release on npm instead of the pinned one.
        #[arg(long)]
        latest_agents: bool,
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure the tracer's overhead (HTTPS client loops from Python, node and Go; syscalls of
    /// unrelated processes) and record it in BENCHMARKS.md.
    Bench(bench::Args),
    /// Boot Debian's kernel packages (5.10, 6.1, 6.12) under QEMU and run the kernel smoke suite
    /// inside each: `cargo xtask vmtest --kernel 6.1`.
    Vmtest(vmtest::Args),
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
        Command::Test {
            latest_agents: true,
            args,
        } => test_latest_agents(&args),
        Command::Test { args, .. } => test(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Vmtest(args) => vmtest::run(&args),
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

#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
}

/// Counts from a libtest summary line: `test result: ok. 12 passed; 0 failed; ...`.
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

/// Runs `cargo test`, passing its output through and adding up its summary lines.
fn run_counting_tests(cmd: &mut std::process::Command, totals: &mut TestTotals) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", util::describe(cmd)))?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some((passed, failed)) = parse_test_result(&line) {
                totals.passed += passed;
                totals.failed += failed;
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed ({status})", util::describe(cmd));
    }
    Ok(())
}

/// The test files that run real agents from npm; `--latest-agents` runs only these.
const REAL_AGENT_TESTS: &[&str] = &["e2e_real_agents", "e2e_codex"];

/// The real-agent tests against each agent's newest release: the installers (setup's and the
/// testkit's) read `AGENT_TRACER_LATEST_AGENTS` and install `@latest` instead of the pinned
/// version, into its own `<package>@<version>` directory.
fn test_latest_agents(extra: &[String]) -> Result<()> {
    // Read by setup (this process) and by the tests (its children).
    std::env::set_var(setup::LATEST_AGENTS_ENV, "1");
    setup::run(setup::Needs::Everything)?;
    let mut cmd = cargo();
    cmd.args(["test", "-p", "tracer-user", "--no-fail-fast"]);
    // A file another branch adds may not be here yet: name only the ones that exist.
    for test in REAL_AGENT_TESTS {
        if util::root()
            .join("tests")
            .join(format!("{test}.rs"))
            .exists()
        {
            cmd.args(["--test", test]);
        }
    }
    cmd.args(extra);
    util::header(&format!(
        "tests against the newest agents: {}",
        util::describe(&cmd)
    ));
    let mut totals = TestTotals::default();
    let result = run_counting_tests(&mut cmd, &mut totals);
    println!(
        "\ntests: {} passed, {} failed",
        totals.passed, totals.failed
    );
    result
}

fn test(extra: &[String]) -> Result<()> {
    // A whole run builds everything once: incremental compilation's caches would only add
    // gigabytes to the target directory, and CI machines have run out of disk.
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        std::env::set_var("CARGO_INCREMENTAL", "0");
    }
    let disk = || util::disk_free(&root()).unwrap_or_default();
    println!("{}", disk());
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
        (
            // After the tests: the guests run binaries built there. Loads and verifies every
            // kernel program in each kernel, so a verifier rejection fails CI with its log,
            // then runs the whole smoke suite through that kernel's hooks (fentry, with the
            // bounded copies on 5.10): curl over HTTPS and plain HTTP, node's static OpenSSL,
            // Go's crypto/tls, MCP over stdio and a tool's exec under its span, each checked
            // byte for byte. About 6 min per kernel under TCG.
            "kernel matrix: cargo xtask vmtest \
             (the smoke suite in Debian's 5.10, 6.1 and 6.12 under QEMU)"
                .to_string(),
            {
                let mut c = std::process::Command::new(
                    std::env::current_exe().unwrap_or_else(|_| "cargo-xtask".into()),
                );
                c.arg("vmtest");
                c
            },
        ),
    ];
    // Every fuzz target for a few seconds: the parsers keep running on inputs no test wrote.
    let steps = steps.into_iter().chain(fuzz::TARGETS.iter().map(|t| {
        (
            format!("fuzz smoke: {t} for {FUZZ_SMOKE_SECONDS} s"),
            fuzz::command(t, FUZZ_SMOKE_SECONDS),
        )
    }));
    let mut failed = Vec::new();
    let mut totals = TestTotals::default();
    for (name, mut cmd) in steps {
        util::header(&name);
        let result = if name.starts_with("tests:") {
            run_counting_tests(&mut cmd, &mut totals)
        } else {
            run_checked(&mut cmd)
        };
        if let Err(e) = result {
            // A full disk fails every later step with compiler and linker noise: say it once.
            eprintln!("error: {e:#}\n({})", disk());
            failed.push(name);
        }
    }
    // One closing line over every test binary: cargo's own last line is an (empty) doc-test run.
    println!(
        "\ntests: {} passed, {} failed",
        totals.passed, totals.failed
    );
    if failed.is_empty() {
        println!("all checks passed");
        Ok(())
    } else {
        bail!(
            "{} step(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        )
    }
}

#[cfg(test)]
mod test_totals {
    use super::parse_test_result;

    #[test]
    fn reads_libtest_summaries() {
        assert_eq!(parse_test_result("test result: ok. 115 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 11.65s"), Some((115, 0)));
        assert_eq!(
            parse_test_result("test result: FAILED. 4 passed; 1 failed; 0 ignored"),
            Some((4, 1))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }
}
