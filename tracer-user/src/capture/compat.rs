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
        needed_for: "copying whole buffers in 16 KiB records",
        required: true,
        needs_bpf: true,
        probe: || {
            is_helper_supported(ProgramType::KProbe, BpfHelper::BPF_FUNC_loop).unwrap_or(false)
        },
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
