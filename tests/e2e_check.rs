//! `agent-tracer check`, the real binary on this host: everything the tracer needs is here, so it
//! passes and lists what it found, including the TLS stack of each process the test starts and
//! how it is hooked (symbol, or fallback for a stripped static Mbed TLS client); run
//! again with capabilities taken away by util-linux `setpriv`, it fails naming them.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use tracer_testkit::e2e::require_root;

fn check(prefix: &[&str]) -> Result<Output> {
    let bin = env!("CARGO_BIN_EXE_agent-tracer");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("check")
        .output()
        .with_context(|| format!("running {cmd:?}"))
}

/// A process that keeps running with `marker` in its maps once it printed `ready`.
struct Sleeper(Child);

impl Sleeper {
    fn start(program: &str, args: &[&str]) -> Result<Self> {
        let mut child = Sleeper(
            Command::new(program)
                .args(args)
                .stdout(Stdio::piped())
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {program}"))?,
        );
        let mut out = child.0.stdout.take().context("stdout")?;
        let mut buf = [0u8; 6];
        let deadline = Instant::now() + Duration::from_secs(30);
        std::io::Read::read_exact(&mut out, &mut buf)?;
        if &buf != b"ready\n" || Instant::now() > deadline {
            bail!("{program} did not start: {buf:?}");
        }
        Ok(child)
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn check_passes_here_and_names_what_it_found() -> Result<()> {
    require_root();
    // Python loads the shared libssl; node carries a static OpenSSL.
    let python = Sleeper::start(
        "python3",
        &[
            "-c",
            "import ssl, sys, time; print('ready', flush=True); time.sleep(120)",
        ],
    )?;
    let node = Sleeper::start(
        "node",
        &["-e", "console.log('ready'); setTimeout(() => {}, 120000)"],
    )?;
    // Mbed TLS, static and stripped, stuck in its handshake with a server that never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = silent.local_addr()?.port().to_string();
    let mut mbedtls = Command::new(tracer_testkit::c_client::mbedtls_post()?)
        .args([&port, "api.openai.com", "gpt-4o-mini"])
        .stdout(Stdio::null())
        .spawn()?;
    let _accepted = silent.accept()?;
    let out = check(&[]);
    let _ = mbedtls.kill();
    let _ = mbedtls.wait();
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    for expected in [
        format!("kernel: Linux {}", release.trim()),
        "ok      CAP_BPF".into(),
        "ok      CAP_PERFMON".into(),
        "ok      CAP_SYS_PTRACE".into(),
        "ok      BPF ring buffer".into(),
        "ok      uprobe perf events".into(),
        "ok      bpf_loop helper".into(),
        "ok      syscall tracepoints".into(),
        "ok      kernel BTF (/sys/kernel/btf/vmlinux)".into(),
        // This host has BTF and tracing programs: the cheapest syscall hook path comes first.
        "syscall hooks: tp_btf sys_enter/sys_exit".into(),
        "ok      tracefs mounted at /sys/kernel/tracing".into(),
        "agent-tracer can run on this host".into(),
        // The price table's date, so a user knows how current the costs are.
        "prices: built-in table of 2026-12-01".into(),
    ] {
        assert!(stdout.contains(&expected), "no {expected:?} in:\n{stdout}");
    }
    // One line per process and stack: `  PID program: stack (where): how`.
    let line = |pid: u32| -> String {
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{pid} ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        line(python.0.id()).contains("python3: OpenSsl (libssl.so.3): symbol"),
        "{stdout}"
    );
    assert!(
        line(node.0.id()).contains("node: OpenSsl (executable): symbol"),
        "{stdout}"
    );
    assert!(
        line(mbedtls.id()).contains("mbedtls (executable): fallback"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn check_fails_naming_the_capabilities_taken_away() -> Result<()> {
    require_root();
    assert!(
        Path::new("/usr/bin/setpriv").exists(),
        "setpriv (util-linux) is needed to drop capabilities"
    );
    let dropped = "-bpf,-perfmon,-sys_admin";
    let out = check(&[
        "setpriv",
        &format!("--inh-caps={dropped}"),
        &format!("--bounding-set={dropped}"),
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("agent-tracer cannot run on this host: missing CAP_BPF"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_PERFMON"), "{stderr}");
    assert!(stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
    assert!(!stderr.contains("CAP_SYS_PTRACE"), "still held: {stderr}");
    for expected in [
        "MISSING CAP_BPF",
        "MISSING CAP_PERFMON",
        "MISSING CAP_SYS_ADMIN",
        "ok      CAP_SYS_PTRACE",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // Probes that need the bpf() syscall are not reported as missing kernel features.
    assert!(stdout.contains("unknown BPF ring buffer"), "{stdout}");
    assert!(!stdout.contains("agent-tracer can run"), "{stdout}");
    Ok(())
}

/// CAP_SYS_ADMIN alone: the tracer loads its programs without it but cannot place a single uprobe
/// (perf_event_open of the uprobe PMU answers EACCES), so `check` must call it missing.
#[test]
fn check_fails_without_sys_admin_alone() -> Result<()> {
    require_root();
    let out = check(&[
        "setpriv",
        "--inh-caps=-sys_admin",
        "--bounding-set=-sys_admin",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing CAP_SYS_ADMIN (attaching uprobes"),
        "{stderr}"
    );
    assert!(!stderr.contains("CAP_BPF"), "{stderr}");
    Ok(())
}

/// What `check` warns about, `run` must not hide: without CAP_SYS_ADMIN the programs load but no
/// uprobe can be placed, so the tracer says it is blind to TLS and stays not-ready.
#[test]
fn run_without_sys_admin_warns_and_is_not_ready() -> Result<()> {
    use std::io::{Read as _, Write as _};
    require_root();
    let port = tracer_testkit::e2e::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let running = tracer_testkit::tracer::start(
        Path::new("/usr/bin/setpriv"),
        "run-no-sys-admin",
        &[
            "--inh-caps=-sys_admin",
            "--bounding-set=-sys_admin",
            env!("CARGO_BIN_EXE_agent-tracer"),
            "run",
            "--console",
            "never",
            "--prometheus-listen",
            "off",
            "--health-listen",
            &listen,
        ],
        &[],
    )?;
    let mut stream = std::net::TcpStream::connect(&listen)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stderr.contains("no TLS hook could be placed"),
        "{}",
        output.stderr
    );
    assert!(
        response.starts_with("HTTP/1.1 503"),
        "/readyz while blind to TLS: {response}"
    );
    Ok(())
}
