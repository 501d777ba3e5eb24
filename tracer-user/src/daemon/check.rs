//! `agent-tracer check`: what this host offers the tracer, read and probed rather than assumed
//! (the same probes `run` relies on), and what is missing, by name. Meant for the first minutes
//! on a new host or node image, and for bug reports.

use std::{collections::BTreeSet, io::Write, path::Path};

use anyhow::Result;

use crate::capture::{
    compat, safe_open,
    targets::{is_tls_library_name, Analysis, HookMethod, TargetCache, TlsStack},
};

/// What `check` found missing; empty when the tracer can run.
pub struct Report {
    pub missing: Vec<String>,
}

/// A capability the tracer uses: its bit in CapEff, and why.
struct Capability {
    name: &'static str,
    bit: u32,
    required: bool,
    why: &'static str,
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "CAP_BPF",
        bit: CAP_BPF,
        required: true,
        why: "loading the eBPF programs and maps",
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        required: true,
        why: "attaching tracepoints and uprobes, reading traced processes' memory from eBPF",
    },
    Capability {
        name: "CAP_SYS_ADMIN",
        bit: CAP_SYS_ADMIN,
        // Measured on Linux 6.18 with CAP_BPF and CAP_PERFMON held: perf_event_open of the
        // uprobe PMU fails with EACCES without it, and no TLS hook is placed.
        required: true,
        why: "attaching uprobes (TLS library hooks) through perf events; mounting tracefs",
    },
    Capability {
        name: "CAP_SYS_PTRACE",
        bit: 19,
        required: true,
        why: "reading other processes' /proc/PID/maps, exe and root to find their TLS libraries",
    },
    Capability {
        name: "CAP_SYS_RESOURCE",
        bit: 24,
        required: false,
        why: "raising RLIMIT_MEMLOCK, which kernels before 5.11 charge eBPF maps to",
    },
    Capability {
        name: "CAP_DAC_READ_SEARCH",
        bit: 2,
        required: false,
        why: "reading executables and libraries whatever their file permissions",
    },
];

/// The effective capability set from /proc/self/status (`CapEff: 000001ffffffffff`).
pub fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Whether `target` has a filesystem of type `fstype` mounted on it, per /proc/self/mounts.
fn mounted(mounts: &str, target: &str, fstype: &str) -> bool {
    mounts.lines().any(|l| {
        let mut fields = l.split_whitespace().skip(1);
        fields.next() == Some(target) && fields.next() == Some(fstype)
    })
}

/// Runs every check, writing one line per finding to `out`.
pub fn run(out: &mut impl Write) -> Result<Report> {
    let mut missing = Vec::new();

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    writeln!(out, "kernel: Linux {release}")?;

    // Kernels before 5.8 have no CAP_BPF: CAP_SYS_ADMIN stands for it and for CAP_PERFMON.
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let status = std::fs::read_to_string("/proc/self/status")?;
    let caps = effective_capabilities(&status).unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    writeln!(out, "capabilities (effective set {caps:#x}):")?;
    for cap in CAPABILITIES {
        let exists = cap.bit <= last_cap;
        let held = has(cap.bit);
        let required = cap.required && exists;
        let state = match (held, exists) {
            (true, _) => "ok",
            (false, false) => "n/a",
            (false, true) if required => "MISSING",
            (false, true) => "absent",
        };
        writeln!(out, "  {state:<8}{}: {}", cap.name, cap.why)?;
        if required && !held {
            missing.push(format!("{} ({})", cap.name, cap.why));
        }
    }
    if last_cap < CAP_BPF {
        writeln!(
            out,
            "  note    this kernel has no CAP_BPF or CAP_PERFMON: CAP_SYS_ADMIN covers them"
        )?;
    }
    let can_bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);

    writeln!(out, "kernel features:")?;
    for (feature, present) in compat::probe_all() {
        let state = match (present, feature.needs_bpf && !can_bpf) {
            (true, _) => "ok",
            (false, true) => "unknown",
            (false, false) if feature.required => "MISSING",
            (false, false) => "absent",
        };
        let note = if state == "unknown" {
            " (cannot be probed without CAP_BPF)"
        } else {
            ""
        };
        writeln!(
            out,
            "  {state:<8}{}: {}{note}",
            feature.name, feature.needed_for
        )?;
        if state == "MISSING" {
            missing.push(format!(
                "{} (needed for {})",
                feature.name, feature.needed_for
            ));
        }
    }

    match compat::syscall_hooks_to_try() {
        Ok(paths) => writeln!(out, "syscall hooks: {}", compat::describe_choice(&paths))?,
        Err(e) => {
            writeln!(out, "syscall hooks: {e:#}")?;
            missing.push(format!("{e:#}"));
        }
    }

    writeln!(out, "filesystems:")?;
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|t| mounted(&mounts, t, "tracefs"));
    // No bpffs: the tracer pins nothing.
    let (name, at, needed_for) = ("tracefs", tracefs, "attaching tracepoints");
    match at {
        Some(path) => writeln!(out, "  ok      {name} mounted at {path}")?,
        None if has(CAP_SYS_ADMIN) => writeln!(
            out,
            "  absent  {name} not mounted: `run` mounts it (CAP_SYS_ADMIN is held)"
        )?,
        None => {
            writeln!(
                out,
                "  MISSING {name} not mounted, and mounting it needs CAP_SYS_ADMIN"
            )?;
            missing.push(format!("{name} mount (needed for {needed_for})"));
        }
    }

    if can_bpf && missing.is_empty() {
        verify_programs(out, &mut missing)?;
    }

    tls_summary(out)?;
    writeln!(
        out,
        "prices: built-in table of {} (USD per million tokens; --prices FILE adds or overrides)",
        crate::agent::cost::PriceTable::builtin().version
    )?;

    if missing.is_empty() {
        writeln!(out, "agent-tracer can run on this host")?;
    }
    Ok(Report { missing })
}

/// Loads every kernel program (and attaches the tracepoints, for a moment) as `run` would: a
/// kernel whose verifier refuses one says so here, with the verifier's last words, rather than
/// at the first `run`.
fn verify_programs(out: &mut impl Write, missing: &mut Vec<String>) -> Result<()> {
    writeln!(out, "kernel programs:")?;
    writeln!(out, "  loops   {}", compat::loop_path().describe())?;
    match crate::capture::Capture::load(4096) {
        Ok(capture) => {
            drop(capture);
            writeln!(out, "  ok      every program loads and passes the verifier")?;
        }
        Err(e) => {
            let full = format!("{e:#}");
            let lines: Vec<&str> = full.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n          ");
            let first = lines.first().copied().unwrap_or_default();
            writeln!(out, "  MISSING {first}\n          {tail}")?;
            missing.push(format!("kernel programs refused by this kernel: {first}"));
        }
    }
    Ok(())
}

/// The TLS stacks of running processes: per process, each stack found (in the executable or a
/// library it maps) and how the tracer hooks it.
fn tls_summary(out: &mut impl Write) -> Result<()> {
    let own_pid = std::process::id();
    let cache = TargetCache::default();
    let mut lines: Vec<String> = Vec::new();
    let mut scanned = 0;
    let mut unreadable = 0;
    let mut pids = crate::capture::all_pids();
    pids.sort_unstable();
    for pid in pids {
        if pid == own_pid {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            // Gone, a kernel thread, or not ours to read (no CAP_SYS_PTRACE).
            unreadable += u32::from(std::fs::symlink_metadata(format!("/proc/{pid}/exe")).is_ok());
            continue;
        };
        if maps.is_empty() {
            continue; // kernel thread
        }
        scanned += 1;
        let program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| pid.to_string());
        let found = process_stacks(&cache, pid, &maps);
        for f in found {
            lines.push(format!(
                "  {pid:>7} {program}: {} ({}): {}",
                f.stack, f.place, f.how
            ));
        }
    }
    writeln!(
        out,
        "TLS in running processes ({scanned} scanned{}), pid program: stack (where): how hooked",
        if unreadable > 0 {
            format!(", {unreadable} unreadable")
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "  (symbol: at its symbols; inferred: at functions located without symbols; fallback: \
         not hooked, its connections are reported encrypted-only: SNI host, bytes, timing)"
    )?;
    if lines.is_empty() {
        writeln!(out, "  none found")?;
    }
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Each TLS stack of process `pid` (whose /proc/PID/maps is `maps`), in its executable or a
/// TLS library it maps, and how it is hooked.
pub fn process_stacks(cache: &TargetCache, pid: u32, maps: &str) -> BTreeSet<Found> {
    let mut found: BTreeSet<Found> = BTreeSet::new();
    found.extend(analyse(cache, safe_open::open_exe(pid), true, "executable"));
    // Each library once, opened the way the attacher opens it (see `capture::safe_open`).
    let mut seen = BTreeSet::new();
    for lib in safe_open::mappings(maps) {
        let name = Path::new(lib.name())
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(lib.path);
        if !is_tls_library_name(name) || !seen.insert(lib.path) {
            continue;
        }
        found.extend(analyse(
            cache,
            safe_open::open_mapping(pid, &lib),
            false,
            name,
        ));
    }
    found
}

/// One TLS stack found in one process.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub stack: String,
    /// `executable`, or the library's file name.
    pub place: String,
    /// `symbol`, `inferred` or `fallback` (see `how_hooked`).
    pub how: &'static str,
}

/// Each stack an analysis found and how it is hooked: `symbol`, `inferred`, or `fallback` when a
/// TLS stack is there but no hook could be placed (its traffic is reported encrypted-only). A
/// binary carrying several stacks gets one entry per stack.
fn how_hooked(analysis: &Analysis) -> Vec<(String, &'static str)> {
    let mut found: Vec<(String, &'static str)> = analysis
        .stacks
        .iter()
        .map(|s| {
            let hooked = !s.hooks.is_empty() || (s.stack == TlsStack::Go && analysis.go.is_some());
            let how = match (hooked, s.method) {
                (false, _) => "fallback",
                (true, HookMethod::Symbol) => "symbol",
                (true, HookMethod::Inferred) => "inferred",
            };
            (format!("{:?}", s.stack), how)
        })
        .collect();
    if let Some(stack) = analysis.unsupported {
        found.push((stack.to_string(), "fallback"));
    }
    found
}

fn analyse(
    cache: &TargetCache,
    opened: Result<safe_open::Opened, safe_open::OpenError>,
    executable: bool,
    place: &str,
) -> Vec<Found> {
    let Ok(opened) = opened else {
        return Vec::new();
    };
    let Ok(analysis) = cache.get_or_analyse(opened.id, &opened.file, place, executable) else {
        return Vec::new();
    };
    how_hooked(&analysis)
        .into_iter()
        .map(|(stack, how)| Found {
            stack,
            place: place.to_string(),
            how,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::targets::StackHooks;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }

    #[test]
    fn hook_methods_and_fallback() {
        let hook = crate::capture::targets::Hook {
            program: "ssl_write".into(),
            symbol: "SSL_write".into(),
            offset: 1,
        };
        let symbol = StackHooks {
            stack: TlsStack::OpenSsl,
            hooks: vec![hook],
            method: HookMethod::Symbol,
            description: None,
        };
        let one = |s: &StackHooks| Analysis {
            stacks: vec![s.clone()],
            ..Analysis::default()
        };
        assert_eq!(how_hooked(&one(&symbol)), [("OpenSsl".into(), "symbol")]);
        let inferred = StackHooks {
            stack: TlsStack::Rustls,
            method: HookMethod::Inferred,
            description: Some("rustls (aws-lc)".into()),
            ..symbol.clone()
        };
        let found_unhooked = StackHooks {
            hooks: Vec::new(),
            ..symbol.clone()
        };
        assert_eq!(
            how_hooked(&one(&found_unhooked)),
            [("OpenSsl".into(), "fallback")]
        );
        // Two stacks in one binary: both listed, each with its own method.
        let both = Analysis {
            stacks: vec![symbol.clone(), inferred],
            ..Analysis::default()
        };
        assert_eq!(
            how_hooked(&both),
            [("OpenSsl".into(), "symbol"), ("Rustls".into(), "inferred")]
        );
        let unsupported = Analysis {
            unsupported: Some("rustls"),
            ..Analysis::default()
        };
        assert_eq!(how_hooked(&unsupported), [("rustls".into(), "fallback")]);
        assert_eq!(how_hooked(&Analysis::default()), []);
    }

    #[test]
    fn mount_lookup_checks_the_filesystem_type() {
        let mounts = "tracefs /sys/kernel/tracing tracefs rw 0 0\nnone /sys/fs/bpf tmpfs rw 0 0\n";
        assert!(mounted(mounts, "/sys/kernel/tracing", "tracefs"));
        assert!(!mounted(mounts, "/sys/fs/bpf", "bpf"));
    }
}
