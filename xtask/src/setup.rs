//! `cargo xtask setup`: everything a fresh machine needs to build and run the tracer, each step
//! skipped when already satisfied (see the project's toolchain notes).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::util::{header, is_root, output_of, run_checked, succeeds_quietly, which};

/// The bpf-linker release and LLVM major version it is built against (the nightly's LLVM).
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";

/// What the calling command needs; the test programs are only required by the tests and the
/// benchmark.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    BuildAndRun,
    Everything,
}

pub fn run(needs: Needs) -> Result<()> {
    header("setup");
    let sysroot = nightly_sysroot()?;
    rust_src(&sysroot)?;
    bpf_linker(&sysroot)?;
    mounts()?;
    test_tools(needs == Needs::Everything)?;
    if needs == Needs::Everything {
        cargo_fuzz()?;
        real_agents()?;
    }
    Ok(())
}

/// The real agents the end-to-end tests run, pinned in this list (the testkit's installer
/// reads the same file and installs whatever is missing itself, so a test run alone works).
pub(crate) const REAL_AGENTS: &str = include_str!("../../tests/support/real-agents.txt");
/// Set (to anything but `0`): install each agent's newest release instead of the pinned one.
pub const LATEST_AGENTS_ENV: &str = "AGENT_TRACER_LATEST_AGENTS";

/// Where the testkit keeps them: outside target/, so `cargo clean` does not throw away
/// hundreds of MB of downloads.
pub(crate) fn real_agents_dir() -> Result<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(cache.join("agent-tracer-tests").join("agents"))
}

/// Installs each agent of `real-agents.txt` into `<cache>/<package>@<version>` with npm unless
/// its executable is already there.
fn real_agents() -> Result<()> {
    let latest = std::env::var(LATEST_AGENTS_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    let root = real_agents_dir()?;
    for line in REAL_AGENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, package, pinned, executable] = fields[..] else {
            bail!("real-agents.txt: expected `name package version executable`, got {line:?}");
        };
        if which("npm").is_none() {
            println!(
                "warning: npm is missing: the real-agent tests will fail (install Node.js and npm)"
            );
            return Ok(());
        }
        let version = if latest {
            output_of(Command::new("npm").args(["view", package, "version"]))?
                .trim()
                .to_string()
        } else {
            pinned.to_string()
        };
        let dir = root.join(format!("{package}@{version}"));
        if dir.join("node_modules").join(executable).exists() {
            println!("{name} {version}: present");
            continue;
        }
        fs::create_dir_all(&dir)?;
        // The same install as the testkit's (tests/support/src/npm.rs): no lifecycle scripts,
        // run from the install directory so npm finds no other project.
        let mut npm = Command::new("npm");
        npm.current_dir(&dir)
            .args([
                "install",
                "--no-save",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
            ])
            .arg("--prefix")
            .arg(&dir)
            .arg(format!("{package}@{version}"));
        println!(
            "{name} {version}: installing ({})",
            crate::util::describe(&npm)
        );
        run_checked(&mut npm)?;
        ensure!(
            dir.join("node_modules").join(executable).exists(),
            "npm installed {package}@{version} without {executable}"
        );
    }
    Ok(())
}

/// The nightly toolchain's sysroot; a clear error when there is no nightly (it cannot be
/// downloaded from here, so it must come with the machine).
fn nightly_sysroot() -> Result<PathBuf> {
    let mut cmd = Command::new("rustc");
    // Never let rustup try to download a missing toolchain.
    cmd.args(["+nightly", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .env("RUST_BACKTRACE", "0");
    match output_of(&mut cmd) {
        Ok(sysroot) if !sysroot.is_empty() => Ok(PathBuf::from(sysroot)),
        Ok(_) => bail!("`rustc +nightly --print sysroot` printed nothing"),
        Err(e) => bail!(
            "the nightly Rust toolchain is missing ({}).\n\
             The eBPF programs are built with it (-Z build-std=core for bpfel-unknown-none). \
             `cargo xtask setup` does not download toolchains: install one with \
             `rustup toolchain install nightly` where downloads are possible, then rerun.",
            format!("{e:#}").lines().next().unwrap_or_default()
        ),
    }
}

fn rust_src(sysroot: &Path) -> Result<()> {
    let core = sysroot.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        println!("rust-src for nightly: present");
        return Ok(());
    }
    println!("rust-src for nightly: missing, adding it");
    run_checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    ensure!(
        core.is_dir(),
        "rust-src was added but {} is still missing",
        core.display()
    );
    Ok(())
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn bpf_linker_answers() -> Option<String> {
    output_of(Command::new("bpf-linker").arg("--version")).ok()
}

/// bpf-linker from crates.io, linked against the nightly's own libLLVM (no system LLVM of that
/// version exists in the OS packages).
fn bpf_linker(sysroot: &Path) -> Result<()> {
    let cargo_home = cargo_home()?;
    // `cargo install` puts binaries in $CARGO_HOME/bin; make sure this process and its children
    // (cargo, rustc linking with bpf-linker) find them even when that is not on PATH.
    let bin = cargo_home.join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let paths = std::iter::once(bin.clone()).chain(std::env::split_paths(&path));
        std::env::set_var("PATH", std::env::join_paths(paths)?);
    }

    if let Some(version) = bpf_linker_answers() {
        println!("bpf-linker: present ({version})");
        return Ok(());
    }
    println!(
        "bpf-linker: missing, building {BPF_LINKER_VERSION} against the nightly's LLVM \
         (takes a few minutes)"
    );

    let llvm_dir = sysroot.join("lib");
    let mut candidates: Vec<String> = fs::read_dir(&llvm_dir)
        .with_context(|| format!("listing {}", llvm_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libLLVM.so.") && n.ends_with("-nightly"))
        .collect();
    candidates.sort();
    let Some(lib_name) = candidates.pop() else {
        bail!(
            "no libLLVM.so.*-nightly in {}: is the llvm library part of this nightly?",
            llvm_dir.display()
        );
    };
    let major = lib_name
        .trim_start_matches("libLLVM.so.")
        .split(['.', '-'])
        .next()
        .unwrap_or_default();
    ensure!(
        major == LLVM_MAJOR,
        "the nightly ships LLVM {major} ({lib_name}), but bpf-linker is built here with its \
         llvm-{LLVM_MAJOR} feature; update BPF_LINKER_VERSION/LLVM_MAJOR in xtask/src/setup.rs"
    );

    // The prefix must stay in place: the linker keeps an rpath to $prefix/lib.
    let prefix = cargo_home.join("llvm-rust");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let target = llvm_dir.join(&lib_name);
    for link_name in [lib_name.as_str(), "libLLVM.so"] {
        let link = prefix_lib.join(link_name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
        println!("  {} -> {}", link.display(), target.display());
    }

    let mut install = Command::new("cargo");
    install
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{LLVM_MAJOR}"));
    println!(
        "  LLVM_PREFIX={} {}",
        prefix.display(),
        crate::util::describe(&install)
    );
    run_checked(&mut install)?;
    match bpf_linker_answers() {
        Some(version) => println!("bpf-linker: installed ({version})"),
        None => bail!(
            "bpf-linker was installed but `bpf-linker --version` still fails; is {} on PATH?",
            bin.display()
        ),
    }
    Ok(())
}

/// tracefs, which the tracer needs to attach tracepoints (it pins nothing: no bpffs).
fn mounts() -> Result<()> {
    let table = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let (dir, fstype) = ("/sys/kernel/tracing", "tracefs");
    let mounted = table.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(dir) && fields.next() == Some(fstype)
    });
    if mounted {
        println!("{fstype} on {dir}: mounted");
    } else if !is_root() {
        println!(
            "{fstype} on {dir}: not mounted, and not root so left alone (the tracer runs as root)"
        );
    } else {
        run_checked(Command::new("mount").args(["-t", fstype, fstype, dir]))?;
        println!("{fstype} on {dir}: was not mounted, ran `mount -t {fstype} {fstype} {dir}`");
    }
    Ok(())
}

/// cargo-fuzz, for the fuzz targets' smoke runs in `cargo xtask test`; skipped when it answers.
fn cargo_fuzz() -> Result<()> {
    if succeeds_quietly(Command::new("cargo").args(["fuzz", "--version"])) {
        println!("cargo-fuzz: present");
        return Ok(());
    }
    println!("cargo-fuzz: installing (a minute or two)");
    run_checked(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        "0.13.2",
        "--locked",
    ]))
}

/// A program the tests and the benchmark drive, the command that proves it works, and the
/// Debian package that provides it.
struct TestTool {
    what: &'static str,
    probe: &'static [&'static str],
    package: &'static str,
}

const TEST_TOOLS: &[TestTool] = &[
    TestTool {
        what: "python3 with venv",
        probe: &["python3", "-m", "venv", "--help"],
        package: "python3-venv",
    },
    TestTool {
        what: "go (Go crypto/tls test clients)",
        probe: &["go", "version"],
        package: "golang-go",
    },
    TestTool {
        what: "node (static-OpenSSL test client)",
        probe: &["node", "--version"],
        package: "nodejs",
    },
    TestTool {
        what: "curl",
        probe: &["curl", "--version"],
        package: "curl",
    },
    TestTool {
        what: "Mbed TLS static libraries (the encrypted-fallback test's unhookable client)",
        probe: &["test", "-e", "/usr/lib/x86_64-linux-gnu/libmbedtls.a"],
        package: "libmbedtls-dev",
    },
    TestTool {
        what: "gcc (builds the encrypted-fallback test's C client)",
        probe: &["gcc", "--version"],
        package: "gcc",
    },
    TestTool {
        what: "unshare (PID namespace tests)",
        probe: &["unshare", "--version"],
        package: "util-linux",
    },
    TestTool {
        what: "systemd-analyze (the systemd unit's hardening, assessed offline)",
        probe: &["systemd-analyze", "--version"],
        package: "systemd",
    },
    TestTool {
        what: "Prometheus and promtool (the alerting rules and dashboard queries, evaluated)",
        probe: &["promtool", "--version"],
        package: "prometheus",
    },
    TestTool {
        what: "podman (builds the container image and runs it as the DaemonSet would, no daemon)",
        probe: &["podman", "--version"],
        package: "podman",
    },
    TestTool {
        // Debian 12's crun refuses hybrid cgroup layouts (v1 controllers plus a v2 hierarchy
        // holding one, as on this machine); runc runs there and everywhere else.
        what: "runc (podman's runtime in the image test)",
        probe: &["runc", "--version"],
        package: "runc",
    },
];

fn works(tool: &TestTool) -> bool {
    succeeds_quietly(Command::new(tool.probe[0]).args(&tool.probe[1..]))
}

/// The real programs the tests drive; installed with apt-get when missing (as root).
fn test_tools(required: bool) -> Result<()> {
    let mut apt_updated = false;
    for tool in TEST_TOOLS {
        if works(tool) {
            println!("{}: present", tool.what);
            continue;
        }
        println!("{}: missing (Debian package: {})", tool.what, tool.package);
        if which("apt-get").is_some() && is_root() {
            let apt = |args: &[&str]| {
                let mut cmd = Command::new("apt-get");
                cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
                println!("  running {}", crate::util::describe(&cmd));
                run_checked(&mut cmd)
            };
            let install = ["install", "-y", tool.package];
            // On a fresh machine the package lists may be empty: refresh them once and retry.
            if apt(&install).is_err() && !apt_updated {
                apt_updated = true;
                let _ = apt(&["update"]).and_then(|()| apt(&install));
            }
            if works(tool) {
                println!("{}: installed", tool.what);
                continue;
            }
        }
        let msg = format!(
            "{} is needed by the tests and the benchmark: install it with `apt-get install -y {}` (as root)",
            tool.what, tool.package
        );
        if required {
            bail!(msg);
        }
        println!("warning: {msg}");
    }
    Ok(())
}
