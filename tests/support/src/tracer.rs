//! Runs the real agent-tracer binary as a child process: waits for `tracer ready`, stops it with
//! SIGINT like a user would, and returns what it printed and the counters it wrote.
//!
//! Counters come from the JSON summary the tracer writes at stop (`--summary-file`, set here
//! through its `AGENT_TRACER_SUMMARY_FILE` variable so every caller gets it), not from the
//! `tracer stopped:` log line, which is for people and free to change.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub struct RunningTracer {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    summary: PathBuf,
}

pub struct TracerOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The JSON summary the tracer wrote at stop; empty when it wrote none.
    pub summary: String,
}

impl TracerOutput {
    /// The tracer's non-zero health counters by name, from its JSON summary (a missing name is
    /// zero, so `get(name) == None` asserts that nothing was counted).
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        Ok(summary_counters(&self.summary)
            .with_context(|| format!("no JSON summary; the tracer logged:\n{}", self.stderr))?
            .into_iter()
            .filter(|(_, value)| *value != 0)
            .collect())
    }

    /// One counter (0 when not counted).
    pub fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.counters()?.get(name).copied().unwrap_or(0))
    }
}

/// Every counter of a `--summary-file` document, zeros included.
pub fn summary_counters(json: &str) -> Result<BTreeMap<String, u64>> {
    let summary: serde_json::Value = serde_json::from_str(json).context("summary is not JSON")?;
    summary["counters"]
        .as_object()
        .context("summary has no counters")?
        .iter()
        .map(|(name, value)| {
            let value = value
                .as_u64()
                .with_context(|| format!("counter {name} is {value}"))?;
            Ok((name.clone(), value))
        })
        .collect()
}

/// Starts `bin` with `args` and `envs`; logs go to target/e2e-logs/`name`.{out,err}, the
/// summary to `name`.summary.json.
pub fn start(
    bin: &Path,
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<RunningTracer> {
    let logs = crate::target_dir().join("e2e-logs");
    std::fs::create_dir_all(&logs)?;
    let stdout = logs.join(format!("{name}.out"));
    let stderr = logs.join(format!("{name}.err"));
    let summary = logs.join(format!("{name}.summary.json"));
    // A summary left by an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&summary);
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout)?)
        .stderr(std::fs::File::create(&stderr)?)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_METRICS_EXPORTER")
        .env_remove("OTEL_METRIC_EXPORT_INTERVAL")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env("AGENT_TRACER_SUMMARY_FILE", &summary);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut tracer = RunningTracer {
        child,
        stdout,
        stderr,
        summary,
    };
    let patience = crate::patience(Duration::from_secs(60));
    let deadline = Instant::now() + patience;
    loop {
        let err = std::fs::read_to_string(&tracer.stderr).unwrap_or_default();
        if err.contains("tracer ready") {
            return Ok(tracer);
        }
        if let Some(status) = tracer.child.try_wait()? {
            bail!("agent-tracer exited ({status}) before it was ready:\n{err}");
        }
        if Instant::now() > deadline {
            let _ = tracer.child.kill();
            bail!("agent-tracer not ready after {patience:?}:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RunningTracer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Stops the tracer (SIGSTOP) until the returned guard is dropped (SIGCONT): what a tracer
    /// far behind on a loaded machine looks like, made certain. The kernel side keeps running
    /// and the ring buffer keeps its records for when the tracer resumes.
    pub fn pause(&self) -> Paused<'_> {
        // Safety: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
        Paused(self)
    }

    /// SIGINT, then waits (up to 30 s) for a clean exit.
    pub fn stop(mut self) -> Result<TracerOutput> {
        // Safety: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + crate::patience(Duration::from_secs(30));
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("agent-tracer did not exit within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(TracerOutput {
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            summary: std::fs::read_to_string(&self.summary).unwrap_or_default(),
        })
    }
}

/// A paused tracer, resumed when dropped.
pub struct Paused<'a>(&'a RunningTracer);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        // Safety: plain kill(2) on our own child.
        unsafe { libc::kill(self.0.child.id() as i32, libc::SIGCONT) };
    }
}

impl Drop for RunningTracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
