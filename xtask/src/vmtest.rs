//! `cargo xtask vmtest [--kernel SERIES]...`: boots the distributions' own kernel packages under
//! QEMU (through virtme-ng, which shares the host's filesystem with the guest) and runs a kernel
//! smoke suite inside each: `agent-tracer check`, then a few of the end-to-end tests, built on
//! the host and run in the guest as they run here, with real eBPF against that kernel.
//!
//! Everything it installs is cached under `$AGENT_TRACER_VM_CACHE` (default
//! `/var/cache/agent-tracer-vmtest`) and skipped when present: the virtme-ng venv, a private apt
//! state per suite (the machine's own Debian mirror with another suite; the machine's apt state
//! is never touched), the kernel packages and their unpacked trees.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::util::{cargo, header, output_of, root, run_checked, target_dir, which};

#[derive(clap::Args)]
pub struct Args {
    /// Kernel series to boot (`5.10`, `6.1`, `6.12`); all of them when none is named.
    #[arg(long = "kernel")]
    kernels: Vec<String>,
    /// Only `agent-tracer check` in each guest, not the end-to-end smoke tests.
    #[arg(long)]
    check_only: bool,
    /// Only the smoke tests whose name contains this (repeatable); all of them when none is
    /// named.
    #[arg(long = "test", conflicts_with = "check_only")]
    tests: Vec<String>,
    /// Also run `cargo xtask bench --only syscall-paths` in each guest (scaled down tenfold
    /// under TCG) and write each kernel's section into BENCHMARKS.md. With no `--test`, no
    /// smoke tests.
    #[arg(long, conflicts_with = "check_only")]
    bench: bool,
}

/// A kernel series as a Debian suite ships it, and the fleets it stands for.
struct Series {
    series: &'static str,
    suite: &'static str,
    stands_for: &'static str,
}

const SERIES: &[Series] = &[
    Series {
        series: "5.10",
        suite: "bullseye",
        stands_for: "Debian 11, Amazon Linux 2",
    },
    Series {
        series: "6.1",
        suite: "bookworm",
        stands_for: "Debian 12, Amazon Linux 2023, COS 6.1",
    },
    Series {
        series: "6.12",
        suite: "trixie",
        stands_for: "Debian 13",
    },
];

/// The end-to-end tests each guest runs: one per capture path the issue names (libssl, node's
/// static OpenSSL, Go crypto/tls, plain HTTP), an MCP stdio exchange and a tool's exec child.
const SMOKE_TESTS: &[(&str, &str)] = &[
    ("e2e_capture", "curl_over_https_and_over_plain_http"),
    (
        "e2e_capture",
        "node_fetch_over_https_through_its_static_openssl",
    ),
    ("e2e_go", "go_crypto_tls_calls_become_genai_spans"),
    ("e2e_mcp", "mcp_sdk_tools_over_stdio"),
    (
        "e2e_agent",
        "openai_agent_tool_loop_is_one_trace_with_tool_process_and_http_beneath",
    ),
];

/// One guest's boot under TCG takes about a minute on two busy cores; a smoke test a few.
const GUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn cache_dir() -> PathBuf {
    std::env::var_os("AGENT_TRACER_VM_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/agent-tracer-vmtest"))
}

pub fn run(args: &Args) -> Result<()> {
    let chosen: Vec<&Series> = if args.kernels.is_empty() {
        SERIES.iter().collect()
    } else {
        args.kernels
            .iter()
            .map(|k| {
                SERIES.iter().find(|s| s.series == k).with_context(|| {
                    format!(
                        "no kernel series {k}; known: {}",
                        SERIES
                            .iter()
                            .map(|s| s.series)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    crate::setup::run(crate::setup::Needs::Everything)?;
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    header("vmtest: host tools");
    host_tools()?;
    let vng = virtme_ng(&cache)?;

    header("vmtest: kernels");
    let mut kernels = Vec::new();
    for series in &chosen {
        kernels.push((*series, kernel(&cache, series)?));
    }

    header("vmtest: building the tracer and the smoke tests");
    run_checked(cargo().args(["build", "-p", "tracer-user", "--bin", "agent-tracer"]))?;
    if args.bench {
        run_checked(cargo().args([
            "build",
            "--release",
            "-p",
            "tracer-user",
            "--bin",
            "agent-tracer",
        ]))?;
    }
    let smoke = if args.check_only || (args.bench && args.tests.is_empty()) {
        Vec::new()
    } else {
        smoke_executables(&args.tests)?
    };

    let accel = accelerator(&cache, &vng, &kernels[0].1)?;
    let mut results = Vec::new();
    for (series, kernel) in &kernels {
        header(&format!(
            "vmtest: Linux {} ({}) under {accel}",
            kernel.version, series.suite
        ));
        let result = boot_and_test(&cache, &vng, kernel, accel, &smoke, args.bench)?;
        println!("{}", result.summary());
        if args.bench {
            record_bench(&cache, kernel)?;
        }
        results.push((*series, kernel.version.clone(), result));
    }

    let table = results_table(&results, accel);
    let report = target_dir().join("vmtest").join("results.md");
    if let Some(dir) = report.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&report, &table)?;
    update_readme(&table)?;
    println!("\n{table}");
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, _, r)| !r.passed())
        .map(|(s, v, r)| format!("{} ({v}): {}", s.series, r.summary()))
        .collect();
    if !failed.is_empty() {
        for (_, version, result) in &results {
            if !result.passed() {
                eprintln!("\n--- Linux {version}: guest output ---\n{}", result.log);
            }
        }
        bail!("vmtest failed on {}", failed.join("; "));
    }
    println!("vmtest: all kernels passed");
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let install = |p: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "-q"])
            .args(p)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_checked(&mut cmd)
    };
    if install(packages).is_err() {
        run_checked(Command::new("apt-get").args(["update", "-q"]))?;
        install(packages)?;
    }
    Ok(())
}

/// QEMU for the guest, busybox and kmod for virtme-ng's initramfs.
fn host_tools() -> Result<()> {
    let wanted = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("depmod", "kmod"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| which(bin).is_none() && !Path::new("/sbin").join(bin).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        println!("qemu, busybox, kmod: present");
        return Ok(());
    }
    println!("installing {}", missing.join(" "));
    apt_install(&missing)
}

/// virtme-ng from PyPI in a venv of its own (the `vng` launcher and the `virtme-run` it calls).
fn virtme_ng(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join("venv");
    let vng = venv.join("bin").join("vng");
    if vng.exists() {
        println!("virtme-ng: present");
        return Ok(vng);
    }
    println!("virtme-ng: installing into {}", venv.display());
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_checked(Command::new(venv.join("bin").join("pip")).args(["install", "-q", "virtme-ng"]))?;
    ensure!(
        vng.exists(),
        "virtme-ng installed but {} is missing",
        vng.display()
    );
    Ok(vng)
}

struct Kernel {
    version: String,
    vmlinuz: PathBuf,
}

/// The machine's Debian mirror, from its own apt sources (so this works wherever apt does).
fn debian_mirror() -> Result<String> {
    let mut texts = Vec::new();
    for path in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        if let Ok(text) = fs::read_to_string(path) {
            texts.push(text);
        }
    }
    for text in &texts {
        for line in text.lines().map(str::trim) {
            if let Some(uris) = line.strip_prefix("URIs:") {
                if let Some(uri) = uris.split_whitespace().find(|u| !u.contains("security")) {
                    return Ok(uri.to_string());
                }
            }
            if let Some(rest) = line.strip_prefix("deb ") {
                if let Some(uri) = rest
                    .split_whitespace()
                    .find(|w| w.contains("://") && !w.contains("security"))
                {
                    return Ok(uri.to_string());
                }
            }
        }
    }
    bail!("no Debian mirror in the machine's apt sources")
}

/// apt options that keep a private state per suite under the cache.
fn private_apt(cache: &Path, suite: &str) -> Result<Vec<String>> {
    let dir = cache.join("apt").join(suite);
    for sub in ["lists/partial", "archives/partial", "etc"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let sources = dir.join("etc").join("suite.sources");
    if !sources.exists() {
        fs::write(
            &sources,
            format!(
                "Types: deb\nURIs: {}\nSuites: {suite}\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
                debian_mirror()?
            ),
        )?;
    }
    Ok([
        "Dir::Etc::SourceList=/dev/null".to_string(),
        format!("Dir::Etc::SourceParts={}", dir.join("etc").display()),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        format!("Dir::Cache={}", dir.display()),
        "Debug::NoLocking=1".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect())
}

/// The suite's current kernel, downloaded and unpacked once; its modules linked where
/// virtme-ng's initramfs looks for them (`/lib/modules/<version>`).
fn kernel(cache: &Path, series: &Series) -> Result<Kernel> {
    let pinned = cache
        .join("kernels")
        .join(format!("{}.version", series.suite));
    let version = match fs::read_to_string(&pinned) {
        Ok(v) if cache.join("kernels").join(v.trim()).join("boot").is_dir() => v.trim().to_string(),
        _ => download_kernel(cache, series, &pinned)?,
    };
    let tree = cache.join("kernels").join(&version);
    let vmlinuz = tree.join("boot").join(format!("vmlinuz-{version}"));
    ensure!(vmlinuz.exists(), "{} is missing", vmlinuz.display());
    let modules = [tree.join("lib/modules"), tree.join("usr/lib/modules")]
        .into_iter()
        .map(|d| d.join(&version))
        .find(|d| d.is_dir())
        .with_context(|| format!("no modules for {version} in {}", tree.display()))?;
    let link = Path::new("/lib/modules").join(&version);
    if link.symlink_metadata().is_err() {
        fs::create_dir_all("/lib/modules")?;
        std::os::unix::fs::symlink(&modules, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!(
        "Linux {} ({}): {}",
        version,
        series.suite,
        vmlinuz.display()
    );
    Ok(Kernel { version, vmlinuz })
}

fn download_kernel(cache: &Path, series: &Series, pinned: &Path) -> Result<String> {
    let apt = private_apt(cache, series.suite)?;
    println!("{}: reading the suite's package lists", series.suite);
    run_checked(Command::new("apt-get").args(&apt).args(["-q", "update"]))?;
    // The suite's metapackage names the kernel it currently ships.
    let depends = output_of(
        Command::new("apt-cache")
            .args(&apt)
            .args(["depends", "linux-image-amd64"]),
    )?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .with_context(|| {
            format!(
                "linux-image-amd64 in {} names no kernel:\n{depends}",
                series.suite
            )
        })?
        .to_string();
    let version = package.trim_start_matches("linux-image-").to_string();
    ensure!(
        version.starts_with(&format!("{}.", series.series)),
        "{} ships {version}, not the {} series",
        series.suite,
        series.series
    );
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    println!("{}: downloading {package}", series.suite);
    run_checked(
        Command::new("apt-get")
            .args(&apt)
            .args(["-q", "download", &package])
            .current_dir(&debs),
    )?;
    let deb = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("{package} downloaded but no .deb in {}", debs.display()))?;
    let tree = cache.join("kernels").join(&version);
    fs::create_dir_all(&tree)?;
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    fs::write(pinned, &version)?;
    Ok(version)
}

/// The test executables of the smoke suite, built for the host (the guest shares its files).
fn smoke_executables(filters: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let chosen = chosen_smoke_tests(filters)?;
    let mut build = cargo();
    build.args(["test", "--no-run", "-p", "tracer-user"]);
    let mut files: Vec<&str> = chosen.iter().map(|(file, _)| *file).collect();
    files.dedup();
    for file in &files {
        build.args(["--test", file]);
    }
    let out = build
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .context("building the smoke tests")?;
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "building the smoke tests failed:\n{log}"
    );
    // cargo says `Executable tests/e2e_go.rs (target/debug/deps/e2e_go-<hash>)` per test file.
    let executable = |file: &str| -> Result<PathBuf> {
        log.lines()
            .filter_map(|l| l.trim().strip_prefix("Executable "))
            .find(|l| l.contains(&format!("/{file}.rs ")))
            .and_then(|l| l.rsplit_once('(').map(|(_, p)| p.trim_end_matches(')')))
            .map(|p| root().join(p))
            .with_context(|| format!("cargo printed no executable for {file}:\n{log}"))
    };
    chosen
        .iter()
        .map(|(file, test)| Ok((format!("{file}::{test}"), executable(file)?)))
        .collect()
}

/// The smoke tests `--test` names (by a part of the test's name), or all of them.
fn chosen_smoke_tests(filters: &[String]) -> Result<Vec<(&'static str, &'static str)>> {
    if filters.is_empty() {
        return Ok(SMOKE_TESTS.to_vec());
    }
    for f in filters {
        ensure!(
            SMOKE_TESTS.iter().any(|(_, t)| t.contains(f.as_str())),
            "no smoke test matches {f:?}; they are: {}",
            SMOKE_TESTS
                .iter()
                .map(|(_, t)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(SMOKE_TESTS
        .iter()
        .filter(|(_, t)| filters.iter().any(|f| t.contains(f.as_str())))
        .copied()
        .collect())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (software emulation)",
        })
    }
}

/// KVM when a guest boots with it within a minute, else TCG. Nested KVM can exist and still
/// hang in the guest's real-mode set-up, so the answer is a real boot, kept per host kernel.
fn accelerator(cache: &Path, vng: &Path, kernel: &Kernel) -> Result<Accel> {
    if std::env::var("AGENT_TRACER_VM_ACCEL").as_deref() == Ok("tcg")
        || !Path::new("/dev/kvm").exists()
    {
        return Ok(Accel::Tcg);
    }
    let host = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let verdict = cache.join(format!("kvm-verdict-{}", host.trim()));
    if let Ok(v) = fs::read_to_string(&verdict) {
        return Ok(if v.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        });
    }
    println!("probing KVM with one boot (kept in {})", verdict.display());
    let out = cache.join("kvm-probe");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let marker = out.join("booted");
    let mut cmd = vng_command(vng, kernel, Accel::Kvm, &out);
    cmd.arg("--exec").arg(format!("touch {}", marker.display()));
    let _ = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let accel = if marker.exists() {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    fs::write(&verdict, if accel == Accel::Kvm { "kvm" } else { "tcg" })?;
    Ok(accel)
}

fn vng_command(vng: &Path, kernel: &Kernel, accel: Accel, out: &Path) -> Command {
    let mut cmd = Command::new(vng);
    // vng runs `virtme-run` from its own bin directory.
    let bin = vng.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(bin).chain(std::env::split_paths(&path));
    if let Ok(joined) = std::env::join_paths(paths) {
        cmd.env("PATH", joined);
    }
    cmd.arg("--run")
        .arg(&kernel.vmlinuz)
        .args(["--user", "root", "--cpus", "2", "--memory", "4G"])
        // The guest writes its results and the tests their logs and certificates here; the
        // rest of the host's filesystem is a throwaway overlay.
        .arg("--rwdir")
        .arg(out)
        .arg("--rwdir")
        .arg(target_dir())
        .stdin(Stdio::null());
    if accel == Accel::Tcg {
        cmd.arg("--disable-kvm");
    }
    cmd
}

/// Runs `cmd` with its output collected, killed after `timeout`.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(bool, String)> {
    let log = tempfile_path("vng");
    let file = fs::File::create(&log)?;
    let mut child = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting `{}`", crate::util::describe(cmd)))?;
    let start = Instant::now();
    let finished = loop {
        if child.try_wait()?.is_some() {
            break true;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    Ok((finished, text))
}

fn tempfile_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xtask-{what}-{}.log", std::process::id()))
}

struct GuestResult {
    booted: bool,
    check_passed: bool,
    check: String,
    /// Each smoke test and whether it passed.
    tests: Vec<(String, bool)>,
    log: String,
    seconds: u64,
}

impl GuestResult {
    fn passed(&self) -> bool {
        self.booted
            && self.check_passed
            && !self.fell_back_from_fentry()
            && self.tests.iter().all(|(_, ok)| *ok)
    }

    /// The kernel offers fentry but the syscall hooks fell back to another path: the cheap path
    /// is broken there (the loader's warning in `check` says why), which the matrix must not
    /// pass over.
    fn fell_back_from_fentry(&self) -> bool {
        self.feature("fentry/fexit") == "ok" && self.syscall_hooks() != "fentry"
    }

    fn summary(&self) -> String {
        if !self.booted {
            return "the guest did not finish".to_string();
        }
        let passed = self.tests.iter().filter(|(_, ok)| *ok).count();
        format!(
            "check {}, smoke tests {passed}/{} passed, {} s",
            if !self.check_passed {
                "FAILED"
            } else if self.fell_back_from_fentry() {
                "passed but fell back from fentry (FAILED)"
            } else {
                "passed"
            },
            self.tests.len(),
            self.seconds
        )
    }

    /// What `check` says of a feature: `ok`, `MISSING` or `absent`.
    /// The copy loop the kernel programs use (`check`'s `loops` line): `bpf_loop` or `bounded`.
    fn loops(&self) -> &str {
        match self
            .check
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("loops"))
        {
            Some(l) if l.trim_start().starts_with("bounded") => "bounded",
            Some(l) if l.trim_start().starts_with("bpf_loop") => "bpf_loop",
            _ => "?",
        }
    }

    /// How socket and stdio syscalls were hooked: the loader's log line in `check`'s output
    /// (what actually loaded), else the path `check` would try first.
    fn syscall_hooks(&self) -> &str {
        let name = |describe: &str| {
            ["fentry", "tp_btf", "raw_tp", "syscalls:"]
                .into_iter()
                .find(|n| describe.trim_start().starts_with(n))
                .map(|n| if n == "syscalls:" { "tracepoints" } else { n })
        };
        self.check
            .lines()
            .find_map(|l| {
                l.split_once("syscalls hooked by ")
                    .and_then(|(_, d)| name(d))
            })
            .or_else(|| {
                self.check
                    .lines()
                    .find_map(|l| l.strip_prefix("syscall hooks:").and_then(name))
            })
            .unwrap_or("?")
    }

    fn feature(&self, name_starts: &str) -> &str {
        self.check
            .lines()
            .map(str::trim)
            .find_map(|l| {
                let (state, rest) = l.split_once(char::is_whitespace)?;
                rest.trim().starts_with(name_starts).then_some(state)
            })
            .unwrap_or("?")
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest's script: the mounts a booted system would have, `check`, then each smoke test
/// with its own log and exit code in `out`.
/// Copies the guest's benchmark section into BENCHMARKS.md.
fn record_bench(cache: &Path, kernel: &Kernel) -> Result<()> {
    let file = cache.join("runs").join(&kernel.version).join("bench.md");
    let text = fs::read_to_string(&file).with_context(|| {
        format!(
            "the guest wrote no benchmark ({}); its log: {}",
            file.display(),
            fs::read_to_string(file.with_extension("log")).unwrap_or_default()
        )
    })?;
    let start = text
        .find(crate::bench::syscall_paths::SECTION)
        .with_context(|| format!("no syscall-paths section in {}", file.display()))?;
    crate::bench::write_section(&root().join("BENCHMARKS.md"), &text[start..])?;
    println!("{}", &text[start..]);
    Ok(())
}

/// `bench`: the heading suffix of the guest's benchmark section, when one is run.
fn guest_script(
    out: &Path,
    smoke: &[(String, PathBuf)],
    accel: Accel,
    bench: Option<&str>,
) -> String {
    let tracer = target_dir().join("debug").join("agent-tracer");
    let o = out.display();
    let mut s = String::from("#!/bin/sh\nset -u\n");
    // The tests find their certificates, clients and logs through it, as on the host; their
    // waits are stretched under emulation, which is about ten times slower.
    let _ = writeln!(
        s,
        "export CARGO_TARGET_DIR={}\nexport AGENT_TRACER_TEST_SLOWDOWN={}",
        shell_quote(&target_dir().display().to_string()),
        if accel == Accel::Tcg { 10 } else { 2 }
    );
    let _ = writeln!(
        s,
        "mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing\n\
         mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf\n\
         mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         ulimit -l unlimited\n\
         uname -r > {o}/kernel\n\
         {tracer} check > {o}/check.txt 2>&1; echo $? > {o}/check.rc",
        tracer = shell_quote(&tracer.display().to_string())
    );
    // Again with the kernel programs' debug messages on: they must not push a program past this
    // kernel's verifier (what a user asked to send us `AGENT_TRACER_LOG=debug` would hit).
    let _ = writeln!(
        s,
        "AGENT_TRACER_LOG=info,tracer_ebpf=debug {} check > {o}/check-debug.txt 2>&1; \
         echo $? > {o}/check-debug.rc",
        shell_quote(&tracer.display().to_string())
    );
    for (i, (name, exe)) in smoke.iter().enumerate() {
        let test = name.rsplit("::").next().unwrap_or(name);
        let _ = writeln!(
            s,
            "echo {} > {o}/test{i}.name\n\
             cd {} && CI=true {} --exact {} --test-threads=1 > {o}/test{i}.log 2>&1; \
             echo $? > {o}/test{i}.rc",
            shell_quote(name),
            shell_quote(&root().display().to_string()),
            shell_quote(&exe.display().to_string()),
            shell_quote(test),
        );
    }
    if let Some(suffix) = bench {
        let xtask = target_dir().join("debug").join("xtask");
        let _ = writeln!(
            s,
            "cd {} && {} bench --only syscall-paths --prebuilt --scale-down {} \
             --heading-suffix {} --out {o}/bench.md > {o}/bench.log 2>&1",
            shell_quote(&root().display().to_string()),
            shell_quote(&xtask.display().to_string()),
            if accel == Accel::Tcg { 10 } else { 1 },
            shell_quote(suffix),
        );
    }
    let _ = writeln!(s, "touch {o}/done");
    s
}

fn boot_and_test(
    cache: &Path,
    vng: &Path,
    kernel: &Kernel,
    accel: Accel,
    smoke: &[(String, PathBuf)],
    bench: bool,
) -> Result<GuestResult> {
    let out = cache.join("runs").join(&kernel.version);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let script = out.join("guest.sh");
    let heading_suffix = format!("(Linux {} in a VM under {accel})", kernel.version);
    let bench = bench.then_some(heading_suffix.as_str());
    fs::write(&script, guest_script(&out, smoke, accel, bench))?;
    let mut cmd = vng_command(vng, kernel, accel, &out);
    cmd.arg("--exec").arg(format!("sh {}", script.display()));
    let start = Instant::now();
    let (_, log) = run_with_timeout(&mut cmd, GUEST_TIMEOUT)?;
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let booted = out.join("done").exists();
    let mut tests = Vec::new();
    for (i, (name, _)) in smoke.iter().enumerate() {
        let ok = read(&format!("test{i}.rc")).trim() == "0";
        if !ok {
            eprintln!(
                "--- {name} on Linux {} ---\n{}",
                kernel.version,
                read(&format!("test{i}.log"))
            );
        }
        tests.push((name.clone(), ok));
    }
    let check = read("check.txt");
    let debug_check_passed = read("check-debug.rc").trim() == "0";
    if !debug_check_passed {
        eprintln!(
            "--- agent-tracer check with the kernel's debug messages on, on Linux {} ---\n{}",
            kernel.version,
            read("check-debug.txt")
        );
    }
    let check_passed = read("check.rc").trim() == "0" && debug_check_passed;
    if !check_passed {
        eprintln!(
            "--- agent-tracer check on Linux {} ---\n{check}",
            kernel.version
        );
    }
    Ok(GuestResult {
        booted,
        check_passed,
        check,
        tests,
        log,
        seconds: start.elapsed().as_secs(),
    })
}

fn results_table(results: &[(&Series, String, GuestResult)], accel: Accel) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| kernel | stands for | ring buffer | bpf_loop | copy loop | syscall hooks | fentry | kprobe programs | BTF | check | smoke tests |"
    );
    let _ = writeln!(
        t,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (series, version, r) in results {
        let passed = r.tests.iter().filter(|(_, ok)| *ok).count();
        let _ = writeln!(
            t,
            "| {version} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            series.stands_for,
            r.feature("BPF ring buffer"),
            r.feature("bpf_loop"),
            r.loops(),
            r.syscall_hooks(),
            r.feature("fentry/fexit"),
            r.feature("kprobe/uprobe"),
            r.feature("kernel BTF"),
            if !r.booted {
                "did not boot"
            } else if r.check_passed {
                "passed"
            } else {
                "FAILED"
            },
            if r.tests.is_empty() {
                "not run".to_string()
            } else {
                format!("{passed}/{}", r.tests.len())
            }
        );
    }
    let _ = writeln!(
        t,
        "\nRun by `cargo xtask vmtest` under {accel}; each guest boots Debian's own kernel package."
    );
    t
}

const README_BEGIN: &str = "<!-- vmtest:begin -->";
const README_END: &str = "<!-- vmtest:end -->";

/// Replaces the table between the README's vmtest markers with this run's.
fn update_readme(table: &str) -> Result<()> {
    let path = root().join("README.md");
    let text = fs::read_to_string(&path)?;
    let (Some(begin), Some(end)) = (text.find(README_BEGIN), text.find(README_END)) else {
        println!("README.md has no {README_BEGIN} section; the table is not copied there");
        return Ok(());
    };
    if end < begin {
        return Ok(());
    }
    let old = &text[begin + README_BEGIN.len()..end];
    let table = merge_rows(old, table);
    let updated = format!("{}{README_BEGIN}\n{table}{}", &text[..begin], &text[end..]);
    fs::write(&path, updated)?;
    Ok(())
}

/// `new` with the rows of `old` for kernel series it did not run kept, in their place: a run
/// of one kernel (`--kernel 5.10`) updates that kernel's row and leaves the others' results.
fn merge_rows(old: &str, new: &str) -> String {
    let is_row =
        |l: &str| l.starts_with("| ") && !l.starts_with("| kernel ") && !l.starts_with("| ---");
    // "6.12.117+deb13-amd64" → "6.12".
    let series = |row: &str| -> String {
        let version = row
            .trim_start_matches("| ")
            .split(' ')
            .next()
            .unwrap_or_default();
        version.split('.').take(2).collect::<Vec<_>>().join(".")
    };
    let fresh: Vec<&str> = new.lines().filter(|l| is_row(l)).collect();
    let mut rows: Vec<String> = old
        .lines()
        .filter(|l| is_row(l))
        .map(|l| {
            fresh
                .iter()
                .find(|f| series(f) == series(l))
                .map_or(l, |f| *f)
                .to_string()
        })
        .collect();
    for f in &fresh {
        if !rows.iter().any(|r| series(r) == series(f)) {
            rows.push(f.to_string());
        }
    }
    let mut out = String::new();
    let mut rows_written = false;
    for line in new.lines() {
        if is_row(line) {
            if !rows_written {
                for r in &rows {
                    out.push_str(r);
                    out.push('\n');
                }
                rows_written = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::GuestResult;

    #[test]
    fn a_run_of_one_kernel_keeps_the_other_kernels_rows() {
        let header = "| kernel | stands for | smoke tests |\n| --- | --- | --- |\n";
        let old = format!(
            "\n{header}| 5.10.0-32-amd64 | Debian 11 | 1/1 |\n| 6.1.0-50-amd64 | Debian 12 | 1/1 |\n\nRun by.\n"
        );
        let new = format!("{header}| 5.10.0-33-amd64 | Debian 11 | 5/5 |\n\nRun by.\n");
        assert_eq!(
            super::merge_rows(&old, &new),
            format!(
                "{header}| 5.10.0-33-amd64 | Debian 11 | 5/5 |\n| 6.1.0-50-amd64 | Debian 12 | 1/1 |\n\nRun by.\n"
            )
        );
        let newer = format!("{header}| 6.12.117+deb13-amd64 | Debian 13 | 1/1 |\n\nRun by.\n");
        assert!(super::merge_rows(&old, &newer)
            .contains("| 6.1.0-50-amd64 | Debian 12 | 1/1 |\n| 6.12.117+deb13-amd64 |"));
    }

    fn guest(check: &str) -> GuestResult {
        GuestResult {
            booted: true,
            check_passed: true,
            check: check.to_string(),
            tests: Vec::new(),
            log: String::new(),
            seconds: 0,
        }
    }

    #[test]
    fn the_table_reads_each_hook_family_from_a_real_guests_check() {
        // `agent-tracer check` as Debian's 5.10 printed it under `cargo xtask vmtest`.
        let r = guest(include_str!("vmtest_check_5.10.txt"));
        assert_eq!(r.loops(), "bounded");
        assert_eq!(r.syscall_hooks(), "fentry");
        assert_eq!(r.feature("fentry/fexit"), "ok");
        assert!(!r.fell_back_from_fentry());
        assert_eq!(r.feature("bpf_loop"), "absent");
        assert_eq!(r.feature("BPF ring buffer"), "ok");
        // The same kernel, had the fentry programs failed to load there.
        let fell_back = guest(&include_str!("vmtest_check_5.10.txt").replace(
            "hooked by fentry/fexit",
            "hooked by tp_btf sys_enter/sys_exit",
        ));
        assert_eq!(fell_back.syscall_hooks(), "tp_btf");
        assert!(fell_back.fell_back_from_fentry());
        assert!(fell_back
            .summary()
            .contains("fell back from fentry (FAILED)"));
        let unknown = guest("nothing useful\n");
        assert_eq!((unknown.loops(), unknown.syscall_hooks()), ("?", "?"));
        let planned =
            guest("syscall hooks: raw_tp sys_enter/sys_exit (one raw tracepoint each way)\n");
        assert_eq!(planned.syscall_hooks(), "raw_tp");
    }
}
