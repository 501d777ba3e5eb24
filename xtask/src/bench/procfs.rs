//! Sampling from /proc: a process's CPU time and peak memory, the host's busy time, and the
//! other agent-tracers running (whose probes would slow both sides of a comparison).

use std::{fs, process::Command, time::Instant};

use anyhow::{ensure, Context as _, Result};

use crate::util::output_of;

/// PIDs of running agent-tracer processes (this benchmark's own are not running when called).
pub(super) fn other_tracers() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "agent-tracer")
        })
        .collect()
}

/// Clock ticks per second, the unit of /proc CPU times (asked once).
pub(super) fn clk_tck() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        match output_of(Command::new("getconf").arg("CLK_TCK")).map(|s| s.parse::<f64>()) {
            Ok(Ok(ticks)) if ticks > 0.0 => ticks,
            _ => {
                eprintln!("warning: `getconf CLK_TCK` failed; assuming 100 ticks per second");
                100.0
            }
        }
    })
}

/// The sum of two consecutive CPU-time fields of a /proc/PID/stat file, starting at 1-based
/// field `first`, in seconds: 14 is utime + stime, 16 is cutime + cstime (waited-for children).
pub(super) fn cpu_seconds(stat_path: &str, first: usize) -> Result<f64> {
    let stat = fs::read_to_string(stat_path)?;
    // The command name (field 2) may contain spaces; count fields after its closing paren.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let ticks = |n: usize| -> Result<f64> {
        Ok(fields
            .get(n - 3)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(first)? + ticks(first + 1)?) / clk_tck())
}

/// VmHWM of `pid`, in KiB.
pub(super) fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/PID/status")?;
    Ok(value.trim().trim_end_matches("kB").trim().parse()?)
}

/// CPU time of user and system work on the whole host so far (the `cpu` line of /proc/stat:
/// user + nice + system), in seconds. Interrupt time and steal are left out: loopback traffic's
/// softirq work may be accounted there rather than to the process that caused it.
pub(super) fn host_busy_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()?;
    ensure!(ticks.len() == 3, "short cpu line in /proc/stat: {line}");
    Ok(ticks.iter().sum::<f64>() / clk_tck())
}

/// Measures how busy the rest of the host was during a step: host CPU time minus what this
/// command, its waited-for children and the given running processes (server, tracer) used.
/// Other engineers' builds and tests on a shared machine show up here.
pub(super) struct OtherLoad {
    start: Instant,
    host: f64,
    ours: f64,
    pids: Vec<u32>,
}

impl OtherLoad {
    pub(super) fn start(pids: Vec<u32>) -> Result<Self> {
        Ok(Self {
            start: Instant::now(),
            host: host_busy_seconds()?,
            ours: Self::ours(&pids)?,
            pids,
        })
    }

    pub(super) fn ours(pids: &[u32]) -> Result<f64> {
        let mut total = cpu_seconds("/proc/self/stat", 14)? + cpu_seconds("/proc/self/stat", 16)?;
        for pid in pids {
            total += cpu_seconds(&format!("/proc/{pid}/stat"), 14)?;
        }
        Ok(total)
    }

    /// The average number of CPUs other processes kept busy since `start` (never negative;
    /// clock-tick resolution, so approximate).
    pub(super) fn finish(&self) -> Result<f64> {
        let wall = self.start.elapsed().as_secs_f64();
        let host = host_busy_seconds()? - self.host;
        let ours = Self::ours(&self.pids)? - self.ours;
        Ok(((host - ours) / wall.max(1e-3)).max(0.0))
    }
}
