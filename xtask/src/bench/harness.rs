//! The processes a benchmark runs: the tracer (`agent-tracer run`, ready when its probes are
//! attached; its counters read from the JSON summary it writes at stop), the mock OpenAI server
//! and the HTTPS clients, each [`Guarded`] so that an error never leaves one behind.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use super::{
    procfs::{cpu_seconds, peak_rss_kib, OtherLoad},
    Env, Others, ATTACH_TIMEOUT, READY_TIMEOUT, STOP_TIMEOUT, WARMUP,
};
use crate::util::strip_ansi;

/// One client run's numbers, as printed by the bench clients.
pub(super) struct ClientResult {
    pub(super) line: String,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) rps: f64,
    /// CPUs other processes on the host kept busy during the run ([`OtherLoad`]).
    pub(super) other_cpus: f64,
}

pub(super) struct TracerRun {
    pub(super) client: ClientResult,
    /// Tracer CPU time from `tracer ready` to the end of the client run.
    pub(super) cpu_run_s: f64,
    /// Tracer CPU time from start to `tracer ready` (loading and attaching the programs).
    pub(super) cpu_startup_s: f64,
    pub(super) peak_rss_kib: u64,
    /// The tracer's `tracer stopped: ...` log message, shown in the report for people.
    pub(super) final_line: String,
    /// Its counters, from its summary.
    pub(super) counters: Counters,
}

/// One of the HTTPS bench clients: `program [script] PORT CERT N WARMUP`. Each waits for a line
/// (or EOF) on stdin before its first request and prints one JSON line with `requests`,
/// `seconds`, `p50_us`, `p99_us`, `rps` and `connections`.
#[derive(Clone)]
pub(super) struct Client {
    /// Short name for messages and log files.
    pub(super) name: &'static str,
    pub(super) program: PathBuf,
    pub(super) script: Option<OsString>,
    pub(super) port: u16,
    pub(super) cert: PathBuf,
    /// The mock server's PID, whose CPU time is this benchmark's own.
    pub(super) server_pid: u32,
    pub(super) requests: u32,
    /// Set for an executable the tracer can only hook once a process runs it (a Go binary):
    /// traced runs hold the client until the tracer's log says `attached ... <this>`.
    pub(super) hooked_at_exec: Option<String>,
}

impl Client {
    /// One run; with `tracer`, the client waits until the tracer has hooked it if needed.
    pub(super) fn run(&self, tracer: Option<&mut Tracer>) -> Result<ClientResult> {
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

pub(super) fn run_with_tracer(
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
    let stopped = tracer.stop()?;
    Ok(TracerRun {
        client: result,
        cpu_run_s: cpu_end - cpu_ready,
        cpu_startup_s: cpu_ready,
        peak_rss_kib,
        final_line: stopped.final_line,
        counters: stopped.counters,
    })
}

/// A running `agent-tracer run --console never` (no exporter), ready: its probes are attached.
pub(super) struct Tracer {
    pub(super) process: Guarded,
    pub(super) pid: u32,
    pub(super) stderr_path: PathBuf,
    pub(super) summary_path: PathBuf,
}

impl Tracer {
    /// [`start_with`](Self::start_with), with extra environment variables only.
    pub(super) fn start_with_env(
        bin: &Path,
        dir: &Path,
        label: &str,
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_with(bin, dir, label, envs, &[])
    }

    /// Starts the tracer, logging to `dir/tracer-{label}.{stdout,stderr}`, with extra
    /// environment variables and `run` flags, and waits for `tracer ready`.
    pub(super) fn start_with(
        bin: &Path,
        dir: &Path,
        label: &str,
        envs: &[(&str, &str)],
        flags: &[&str],
    ) -> Result<Self> {
        let stdout_path = dir.join(format!("tracer-{label}.stdout"));
        let stderr_path = dir.join(format!("tracer-{label}.stderr"));
        let summary_path = dir.join(format!("tracer-{label}.summary.json"));
        // An earlier run's summary must not pass for this one's.
        let _ = fs::remove_file(&summary_path);
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--console", "never", "--summary-file"])
            .arg(&summary_path)
            .args(flags)
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
            summary_path,
        };
        tracer.wait_for_log("tracer ready", READY_TIMEOUT, None, |l| {
            l.contains("tracer ready")
        })?;
        Ok(tracer)
    }

    /// An error, with the end of its log, if the tracer has exited.
    pub(super) fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            bail!("the tracer exited ({status}):\n{}", tail(&self.log(), 20));
        }
        Ok(())
    }

    pub(super) fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.stderr_path).unwrap_or_default())
    }

    /// Polls the log until a line matches; an error if the tracer (or `also`, a process this
    /// wait is for) exits first, or after `limit`.
    pub(super) fn wait_for_log(
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
    pub(super) fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid), 14)
    }

    pub(super) fn peak_rss_kib(&self) -> Result<u64> {
        peak_rss_kib(self.pid)
    }

    /// SIGINT, wait for the exit, and return its `tracer stopped: ...` message and counters.
    pub(super) fn stop(self) -> Result<Stopped> {
        let status = self.process.stop(STOP_TIMEOUT)?;
        let log = strip_ansi(&fs::read_to_string(&self.stderr_path).unwrap_or_default());
        ensure!(
            status.success(),
            "the tracer failed ({status}):\n{}",
            tail(&log, 20)
        );
        let final_line = log
            .lines()
            .rev()
            .find_map(|l| l.find("tracer stopped:").map(|i| l[i..].trim().to_string()))
            .with_context(|| {
                format!(
                    "no `tracer stopped:` line in {}",
                    self.stderr_path.display()
                )
            })?;
        let summary = fs::read_to_string(&self.summary_path)
            .with_context(|| format!("reading {}", self.summary_path.display()))?;
        Ok(Stopped {
            final_line,
            counters: Counters::from_summary(&summary)
                .with_context(|| format!("in {}", self.summary_path.display()))?,
        })
    }
}

/// What a stopped tracer left.
pub(super) struct Stopped {
    /// Its last log line, `tracer stopped: name=value ...`: for people (the report shows it).
    pub(super) final_line: String,
    pub(super) counters: Counters,
}

/// The tracer's health counters by name, from the JSON it writes at stop (`--summary-file`):
/// `{"counters": {"kernel_tls_calls": 6150, ...}, ...}`.
#[derive(Clone, Debug, Default)]
pub(super) struct Counters(BTreeMap<String, u64>);

impl Counters {
    pub(super) fn from_summary(json: &str) -> Result<Self> {
        let summary: serde_json::Value =
            serde_json::from_str(json).context("the summary is not JSON")?;
        let counters = summary["counters"]
            .as_object()
            .context("the summary has no counters")?
            .iter()
            .map(|(name, value)| {
                let value = value
                    .as_u64()
                    .with_context(|| format!("counter {name} is {value}"))?;
                Ok((name.clone(), value))
            })
            .collect::<Result<_>>()?;
        Ok(Self(counters))
    }

    /// The counter `name`; 0 when the summary does not list it.
    pub(super) fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}

/// `mock-llm 127.0.0.1:0`, stopped when dropped.
pub(super) struct MockServer {
    pub(super) process: Guarded,
    pub(super) port: u16,
    pub(super) cert: PathBuf,
}

impl MockServer {
    pub(super) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(super) fn start(bin: &Path, dir: &Path) -> Result<Self> {
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
pub(super) struct Guarded {
    pub(super) child: Option<Child>,
    pub(super) name: &'static str,
}

impl Guarded {
    pub(super) fn spawn(cmd: &mut Command, name: &'static str) -> Result<Self> {
        let child = cmd.spawn().with_context(|| {
            format!("starting {name} ({})", cmd.get_program().to_string_lossy())
        })?;
        Ok(Self {
            child: Some(child),
            name,
        })
    }

    pub(super) fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub(super) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{} was already stopped", self.name),
        }
    }

    /// Polls for the exit for at most `limit`.
    pub(super) fn wait_timeout(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
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

    pub(super) fn interrupt(&mut self) -> Result<()> {
        // Only while not yet reaped, so the PID is still this child's.
        if self.try_wait()?.is_none() {
            let pid = self.pid().to_string();
            let status = Command::new("kill").args(["-INT", &pid]).status()?;
            ensure!(status.success(), "kill -INT {pid} failed");
        }
        Ok(())
    }

    /// SIGINT, then wait up to `limit` for the exit; killed (and an error) past that.
    pub(super) fn stop(mut self, limit: Duration) -> Result<ExitStatus> {
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

/// A number field from a client's flat JSON line (`"key": 1.5` or `"key":1.5`).
pub(super) fn json_number(line: &str, key: &str) -> Result<f64> {
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

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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
    fn reads_counters_from_the_summary() {
        let summary = r#"{"counters": {"records": 6236, "bytes": 1927000,
            "kernel_tls_calls": 6150, "kernel_ignored_connections": 0,
            "export_dropped_spans{reason=shutdown}": 0},
            "unsupported_tls": [{"binary": "/x", "stack": "rustls", "processes": 1}]}"#;
        let counters = Counters::from_summary(summary).unwrap();
        assert_eq!(counters.get("kernel_tls_calls"), 6150);
        assert_eq!(counters.get("bytes"), 1927000);
        assert_eq!(counters.get("kernel_ignored_connections"), 0);
        // Not a prefix match.
        assert_eq!(counters.get("kernel_tls"), 0);
        assert!(Counters::from_summary("tracer stopped: records=1").is_err());
        assert!(Counters::from_summary(r#"{"counters": {"records": -1}}"#).is_err());
    }
}
