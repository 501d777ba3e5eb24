//! What every end-to-end test does: refuse to run without root, start a tracer that exports to
//! a real OTLP receiver and records the streams it reassembled, and read the results back.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    otlp::{self, as_int, OtlpReceiver, ReceivedSpan},
    tracer::{self, RunningTracer},
};

/// The tracer sees every process on the host: a test binary's tests take this lock so that
/// only one runs at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn require_root() {
    // Safety: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests load eBPF programs and must run as root (cargo xtask test)"
    );
}

pub fn certs_dir() -> PathBuf {
    crate::target_dir().join("e2e-certs")
}

pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients")
}

/// A running tracer exporting over gRPC to its own receiver, recording streams to `record_dir`.
pub struct Traced {
    pub receiver: OtlpReceiver,
    pub tracer: RunningTracer,
    pub record_dir: PathBuf,
}

pub async fn start_traced(bin: &Path, name: &str, extra_args: &[&str]) -> Result<Traced> {
    start_traced_with_env(bin, name, extra_args, &[]).await
}

/// [`start_traced`] with extra environment variables for the tracer.
pub async fn start_traced_with_env(
    bin: &Path,
    name: &str,
    extra_args: &[&str],
    envs: &[(&str, &str)],
) -> Result<Traced> {
    let receiver = otlp::start_grpc().await?;
    let record_dir = crate::target_dir().join("e2e-streams").join(name);
    let _ = std::fs::remove_dir_all(&record_dir);
    let endpoint = receiver.endpoint();
    let record = record_dir.display().to_string();
    let mut args = vec![
        "run",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--console",
        "always",
        "--record-streams",
        &record,
    ];
    args.extend_from_slice(extra_args);
    let tracer = tracer::start(bin, name, &args, envs)?;
    Ok(Traced {
        receiver,
        tracer,
        record_dir,
    })
}

/// The spans of one process, in start order.
/// OTLP `SPAN_KIND_INTERNAL`: the agent stage's runs, tool executions and processes.
pub const KIND_INTERNAL: i32 = 1;

/// The calls (client spans) `pid` made, in start order; its runs' own spans are left out.
pub fn of_pid(spans: &[ReceivedSpan], pid: u32) -> Vec<ReceivedSpan> {
    let mut mine: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| as_int(s.resource_attr("process.pid")) == Some(pid as i64))
        .filter(|s| s.span.kind != KIND_INTERNAL)
        .cloned()
        .collect();
    mine.sort_by_key(|s| s.span.start_time_unix_nano);
    mine
}

/// Every span of the trace `trace_id`, in start order.
pub fn of_trace(spans: &[ReceivedSpan], trace_id: &[u8]) -> Vec<ReceivedSpan> {
    let mut mine: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.span.trace_id == trace_id)
        .cloned()
        .collect();
    mine.sort_by_key(|s| s.span.start_time_unix_nano);
    mine
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Everything recorded for a process in one direction (`"egress"` or `"ingress"`), all its
/// connections concatenated.
pub fn recorded(dir: &Path, pid: u32, direction: &str) -> Vec<u8> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&format!("{pid}-"))
                            && n.ends_with(&format!("-{direction}.bin"))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect()
}

/// Runs a client to completion off the async runtime; fails unless it exits 0.
pub async fn run(mut command: Command) -> Result<Output> {
    let out = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("starting the client")?;
    if !out.status.success() {
        bail!(
            "client exited {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// The JSON lines a client printed.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A client's output with its pid removed, to compare runs with and without the tracer.
pub fn without_pid(lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if let Some(o) = l.as_object_mut() {
                o.remove("pid");
            }
            l
        })
        .collect()
}

/// A server process the test started; killed when dropped.
pub struct ChildServer(pub std::process::Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1 for a server the test starts.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `command` (a server that will listen on `port`) and waits until it accepts
/// connections.
pub async fn start_listening(mut command: Command, port: u16) -> Result<ChildServer> {
    let server = ChildServer(command.spawn().context("starting the server")?);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("the server did not listen on port {port} within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(server)
}
