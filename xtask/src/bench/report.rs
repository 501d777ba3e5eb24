//! The Markdown side: figures (medians, per-run lists, grouped digits), the notes every section
//! carries (machine, date, how busy the host was), and writing one section of BENCHMARKS.md
//! without touching the others.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result};

use super::{QUIET_CPUS, QUIET_WAIT_PER_RUN, QUIET_WAIT_TOTAL};
use crate::util::output_of;

/// A sentence on how busy the rest of the host was, from per-run [`OtherLoad`] figures, with a
/// caution when it was enough to matter.
pub(super) fn load_note(values: &[f64]) -> String {
    let max = values.iter().copied().fold(0.0, f64::max);
    let mut s = format!(
        "Before each run the benchmark waited (at most {}s per run, {}s in all) until no other \
         agent-tracer ran and other processes used under {QUIET_CPUS} CPUs. Other processes \
         then kept on average {:.2} CPUs busy during the measured runs (median over runs; \
         highest {max:.2}), from /proc/stat minus this benchmark's own processes.",
        QUIET_WAIT_PER_RUN.as_secs(),
        QUIET_WAIT_TOTAL.as_secs(),
        median(values.to_vec())
    );
    if max >= 0.25 {
        s.push_str(
            " Caution: that is enough to slow down and spread the measured numbers; the machine \
             was shared while they were taken.",
        );
    }
    s.push_str("\n\n");
    s
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Values as a comma-separated list with `decimals` decimals, for the per-run lines.
pub(super) fn list(values: impl IntoIterator<Item = f64>, decimals: usize) -> String {
    values
        .into_iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` with commas between groups of three digits: 1,000,000.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn machine() -> String {
    let cpus = output_of(&mut Command::new("nproc")).unwrap_or_else(|_| "?".into());
    let kernel = output_of(Command::new("uname").arg("-r")).unwrap_or_else(|_| "?".into());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| format!(" ({})", m.trim()))
        })
        .unwrap_or_default();
    format!("{cpus} CPUs{model}, Linux {kernel}")
}

/// Online CPUs, for notes about sharing cores.
pub(super) fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub(super) fn today() -> String {
    output_of(Command::new("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_else(|_| "?".into())
}

pub(super) const INTRO: &str = "# Benchmarks\n\n\
Overhead of agent-tracer on the traffic it traces, measured with `cargo xtask bench`. Numbers are \
ratios against the same workload run without the tracer, interleaved with the traced runs on the \
same machine; absolute numbers depend on the machine, which each section names along with the \
date it was measured.\n";

/// Writes `section` into `path`, replacing the existing section with the same heading (sections
/// run from a `## ` heading to the next one) and leaving the rest of the file alone.
pub(crate) fn write_section(path: &Path, section: &str) -> Result<()> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => INTRO.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    fs::write(path, replace_section(&existing, section))
        .with_context(|| format!("writing {}", path.display()))
}

pub(super) fn replace_section(text: &str, section: &str) -> String {
    let heading = section.lines().next().unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let section = section.trim_end();
    match lines.iter().position(|l| l.trim_end() == heading) {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |i| start + 1 + i);
            let mut out = lines[..start].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(section);
            out.push('\n');
            if end < lines.len() {
                out.push('\n');
                out.push_str(&lines[end..].join("\n"));
                out.push('\n');
            }
            out
        }
        None => format!("{}\n\n{section}\n", text.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_section() {
        let text = "# Benchmarks\n\nintro\n\n## Other\n\nkeep\n\n## HTTPS x\n\nold\n\n## Later\n\nalso kept\n";
        let out = replace_section(text, "## HTTPS x\n\nnew\n");
        assert_eq!(
            out,
            "# Benchmarks\n\nintro\n\n## Other\n\nkeep\n\n## HTTPS x\n\nnew\n\n## Later\n\nalso kept\n"
        );
        // Idempotent, and appended when missing.
        assert_eq!(replace_section(&out, "## HTTPS x\n\nnew\n"), out);
        assert_eq!(
            replace_section("# B\n\nintro\n", "## HTTPS x\n\nnew\n"),
            "# B\n\nintro\n\n## HTTPS x\n\nnew\n"
        );
        assert_eq!(
            replace_section("# B\n\n## HTTPS x\nold", "## HTTPS x\nnew"),
            "# B\n\n## HTTPS x\nnew\n"
        );
    }

    #[test]
    fn groups_digits() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(4_000_000), "4,000,000");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
