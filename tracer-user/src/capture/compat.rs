//! What the running kernel supports, probed (kunai's one-table style), never guessed from the
//! version string. Each feature names what needs it and whether the tracer can run without it.

use anyhow::{bail, Result};
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
};

pub struct Feature {
    pub name: &'static str,
    pub needed_for: &'static str,
    pub required: bool,
    /// Probed with the bpf() syscall: without CAP_BPF (or CAP_SYS_ADMIN) the probe fails
    /// whatever the kernel offers.
    pub needs_bpf: bool,
    pub probe: fn() -> bool,
}

pub const FEATURES: &[Feature] = &[
    Feature {
        name: "BPF ring buffer (Linux 5.8)",
        needed_for: "every record the kernel programs send",
        required: true,
        needs_bpf: true,
        probe: || is_map_supported(MapType::RingBuf).unwrap_or(false),
    },
    Feature {
        name: "kprobe/uprobe programs",
        needed_for: "TLS library hooks (uprobes)",
        required: true,
        needs_bpf: true,
        probe: || is_program_supported(ProgramType::KProbe).unwrap_or(false),
    },
    Feature {
        name: "uprobe perf events",
        needed_for: "TLS library hooks (uprobes)",
        required: true,
        needs_bpf: false,
        probe: || std::path::Path::new("/sys/bus/event_source/devices/uprobe").exists(),
    },
    Feature {
        name: "bpf_loop helper (Linux 5.17)",
        needed_for: "copying up to 16 MiB per call; without it bounded loops copy up to 256 KiB",
        required: false,
        needs_bpf: true,
        probe: has_bpf_loop,
    },
    Feature {
        name: "tracepoint programs",
        needed_for: "process and socket syscall tracepoints",
        required: true,
        needs_bpf: true,
        probe: || is_program_supported(ProgramType::TracePoint).unwrap_or(false),
    },
    Feature {
        name: "syscall tracepoints",
        needed_for: "plain-socket capture and TLS-to-socket linking",
        required: true,
        needs_bpf: false,
        probe: || {
            [
                "/sys/kernel/tracing/events/syscalls",
                "/sys/kernel/debug/tracing/events/syscalls",
            ]
            .iter()
            .any(|p| std::path::Path::new(p).exists())
        },
    },
    Feature {
        name: "kernel BTF (/sys/kernel/btf/vmlinux)",
        needed_for: "typed tracepoints (not used yet)",
        required: false,
        needs_bpf: false,
        probe: || std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
    },
];

fn has_bpf_loop() -> bool {
    is_helper_supported(ProgramType::KProbe, BpfHelper::BPF_FUNC_loop).unwrap_or(false)
}

/// How the kernel programs repeat per-call work (`tracer-ebpf/src/programs.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopPath {
    /// `bpf_loop`: 16 KiB records up to 16 MiB per call.
    Helper,
    /// Unrolled bounded loops for kernels before 5.17: up to 256 KiB per call, the rest counted
    /// as truncated.
    Bounded,
}

impl LoopPath {
    pub fn describe(self) -> &'static str {
        match self {
            LoopPath::Helper => "bpf_loop (whole calls up to 16 MiB)",
            LoopPath::Bounded => {
                "bounded loops, for kernels without bpf_loop (calls up to 256 KiB, the rest counted \
                 as truncated)"
            }
        }
    }
}

/// Env var forcing the bounded-loop programs on a kernel that has `bpf_loop` (`bounded`), so
/// the path older kernels take is tested on any kernel.
pub const LOOPS_ENV: &str = "AGENT_TRACER_LOOPS";

/// The loop path for this kernel: probed, unless `AGENT_TRACER_LOOPS=bounded`.
pub fn loop_path() -> LoopPath {
    if std::env::var(LOOPS_ENV).is_ok_and(|v| v == "bounded") || !has_bpf_loop() {
        LoopPath::Bounded
    } else {
        LoopPath::Helper
    }
}

/// Every feature with whether this kernel has it.
pub fn probe_all() -> Vec<(&'static Feature, bool)> {
    FEATURES.iter().map(|f| (f, (f.probe)())).collect()
}

/// Fails with a message naming each missing required feature.
pub fn require_supported() -> Result<()> {
    let missing: Vec<String> = probe_all()
        .into_iter()
        .filter(|(f, ok)| f.required && !ok)
        .map(|(f, _)| format!("{} (needed for {})", f.name, f.needed_for))
        .collect();
    if !missing.is_empty() {
        bail!(
            "this kernel lacks what agent-tracer needs: {}",
            missing.join("; ")
        );
    }
    Ok(())
}
