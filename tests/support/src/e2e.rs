//! What every end-to-end test does: refuse to run without root, start a tracer that exports to
//! a real OTLP receiver and records the streams it reassembled, and read the results back.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

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
    start_traced_with(
        bin,
        name,
        &TraceOptions {
            args: extra_args,
            envs,
            console: true,
        },
    )
    .await
}

/// How [`start_traced_with`] runs the tracer, beyond what every run has (`run`, the export to
/// its own gRPC receiver, `--record-streams`).
#[derive(Default)]
pub struct TraceOptions<'a> {
    /// Arguments after those.
    pub args: &'a [&'a str],
    /// Extra environment variables for the tracer.
    pub envs: &'a [(&'a str, &'a str)],
    /// `--console always`: spans printed as well as exported, so a test can check the console
    /// too. Off (the default), the tracer keeps its own default: none printed while it exports.
    pub console: bool,
}

/// Starts the tracer as `name` (its logs in target/e2e-logs/`name`.{out,err}, its streams in
/// target/e2e-streams/`name`, emptied first).
pub async fn start_traced_with(
    bin: &Path,
    name: &str,
    options: &TraceOptions<'_>,
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
    ];
    if options.console {
        args.extend_from_slice(&["--console", "always"]);
    }
    args.extend_from_slice(&["--record-streams", &record]);
    args.extend_from_slice(options.args);
    let tracer = tracer::start(bin, name, &args, options.envs)?;
    Ok(Traced {
        receiver,
        tracer,
        record_dir,
    })
}

/// The log (stderr) of the tracer started as `name`.
pub fn tracer_log(name: &str) -> PathBuf {
    crate::target_dir()
        .join("e2e-logs")
        .join(format!("{name}.err"))
}

/// Waits until the log of the tracer started as `name` has a line containing all of `words`;
/// returns that line.
pub async fn wait_for_log(name: &str, words: &[&str], wait: Duration) -> Result<String> {
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read_to_string(tracer_log(name)).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return Ok(line.to_string());
        }
        if Instant::now() > deadline {
            bail!("no log line with {words:?} within {wait:?}; the log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the tracer started as `name` says it hooked `binary`. It can only do that once a
/// process runs it (the exec is what makes the tracer look at the file), so a client that must
/// be seen from its first byte is started held ([`HeldClient`]) and let go after this.
pub async fn wait_until_hooked(name: &str, binary: &Path, wait: Duration) -> Result<()> {
    let path = binary.display().to_string();
    wait_for_log(name, &["attached", &path], wait)
        .await
        .with_context(|| format!("the tracer did not hook {path}"))?;
    Ok(())
}

/// A client started held before it connects: it waits for a line on stdin (`--wait-stdin` or
/// the like), so the test can let it go once the tracer has hooked its executable.
pub struct HeldClient {
    child: Child,
    what: String,
}

impl HeldClient {
    /// Starts `command` with its stdin, stdout and stderr piped to the test.
    pub fn spawn(mut command: Command) -> Result<Self> {
        let what = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { child, what })
    }

    /// Lets the client go (a line on its stdin, then EOF); returns its pid and all it printed,
    /// once it exited 0.
    pub async fn release(self) -> Result<(u32, String)> {
        self.release_with(b"go\n").await
    }

    /// [`release`](Self::release) with `input` as what the client reads (a prompt, a request).
    pub async fn release_with(self, input: &[u8]) -> Result<(u32, String)> {
        let Self { mut child, what } = self;
        let pid = child.id();
        let input = input.to_vec();
        tokio::task::spawn_blocking(move || {
            child.stdin.take().context("stdin")?.write_all(&input)?;
            let mut stdout = String::new();
            child
                .stdout
                .take()
                .context("stdout")?
                .read_to_string(&mut stdout)?;
            let status = child.wait()?;
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("{what} failed ({status}): {err}");
            }
            Ok((pid, stdout))
        })
        .await?
    }

    /// [`release`](Self::release) for a client that prints one JSON line with its own `pid`.
    pub async fn release_line(self) -> Result<(u32, serde_json::Value)> {
        let (pid, stdout) = self.release().await?;
        let line: serde_json::Value = serde_json::from_str(stdout.trim())
            .with_context(|| format!("the client's output {stdout:?}"))?;
        ensure!(
            line["pid"].as_u64() == Some(pid as u64),
            "the client reports its own pid ({pid}): {line}"
        );
        Ok((pid, line))
    }
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
    let deadline = std::time::Instant::now() + crate::patience(std::time::Duration::from_secs(30));
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("the server did not listen on port {port} within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(server)
}
