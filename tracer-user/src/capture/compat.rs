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
        needed_for: "BTF-typed raw tracepoints (tp_btf)",
        required: false,
        needs_bpf: false,
        probe: has_kernel_btf,
    },
    Feature {
        name: "fentry/fexit programs (Linux 5.5, with BTF)",
        needed_for: "hooking socket and stdio syscalls at their kernel functions, so other \
                     processes' syscalls pay nothing",
        required: false,
        needs_bpf: true,
        probe: || has_kernel_btf() && is_program_supported(ProgramType::Tracing).unwrap_or(false),
    },
    Feature {
        name: "raw tracepoint programs (Linux 4.17)",
        needed_for: "one raw sys_enter/sys_exit hook instead of a tracepoint per syscall",
        required: false,
        needs_bpf: true,
        probe: || is_program_supported(ProgramType::RawTracePoint).unwrap_or(false),
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

fn has_kernel_btf() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// How socket and stdio syscalls are hooked, cheapest first. Each runs the same handlers
/// (`tracer-ebpf/src/syscalls.rs`); they differ in what every other process on the host pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallHooks {
    /// fentry/fexit on each syscall's kernel function (`__x64_sys_read`, …): no syscall
    /// tracepoint at all, so a process pays only on the syscalls we handle, and nothing on the
    /// rest (`tracer-ebpf/src/fentry_syscalls.rs`).
    Fentry,
    /// `tp_btf/sys_enter` + `tp_btf/sys_exit`: one program each, run straight off the
    /// tracepoint; an unwanted syscall costs a compare of its number.
    BtfRaw,
    /// `raw_tp/sys_enter` + `raw_tp/sys_exit`: the same without BTF; the registers are read
    /// with a helper (on exit for every syscall, to learn its number).
    Raw,
    /// One `syscalls:sys_enter_*`/`sys_exit_*` perf-event tracepoint per syscall: the kernel
    /// fills a perf buffer record before each run.
    PerSyscall,
}

/// `AGENT_TRACER_SYSCALL_HOOKS`: `fentry`, `tp_btf`, `raw_tp` or `tracepoints` forces one path (the
/// benchmark compares them; a user can step around a kernel that misbehaves with one).
pub const SYSCALL_HOOKS_ENV: &str = "AGENT_TRACER_SYSCALL_HOOKS";

impl SyscallHooks {
    pub const ALL: [SyscallHooks; 4] = [Self::Fentry, Self::BtfRaw, Self::Raw, Self::PerSyscall];

    /// The value of [`SYSCALL_HOOKS_ENV`] that selects this path.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::BtfRaw => "tp_btf",
            Self::Raw => "raw_tp",
            Self::PerSyscall => "tracepoints",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Fentry => "fentry/fexit on the syscall functions (no syscall tracepoints)",
            Self::BtfRaw => "tp_btf sys_enter/sys_exit (one BTF raw tracepoint each way)",
            Self::Raw => "raw_tp sys_enter/sys_exit (one raw tracepoint each way)",
            Self::PerSyscall => {
                "syscalls:sys_enter_*/sys_exit_* (one perf-event tracepoint per syscall)"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }

    /// Whether this kernel (and this build's architecture) offers the path, by probing.
    fn available(self) -> bool {
        // The raw programs decode x86_64's syscall numbers and pt_regs.
        let x86_64 = cfg!(target_arch = "x86_64");
        match self {
            // aya's probe loads an fentry program on bpf_fentry_test1: a kernel that refuses it
            // has no fentry (this host's). One that loads it but cannot attach is caught by the
            // loader, which falls back.
            Self::Fentry => {
                x86_64
                    && has_kernel_btf()
                    && is_program_supported(ProgramType::Tracing).unwrap_or(false)
            }
            // aya's probe for tracing programs loads an fentry one, which kernels may refuse
            // (EPERM here) while tp_btf works: with BTF present, loading the programs is the
            // probe, and a failure falls back to raw_tp.
            Self::BtfRaw => {
                x86_64
                    && has_kernel_btf()
                    && is_program_supported(ProgramType::RawTracePoint).unwrap_or(false)
            }
            Self::Raw => {
                x86_64 && is_program_supported(ProgramType::RawTracePoint).unwrap_or(false)
            }
            Self::PerSyscall => true,
        }
    }
}

/// The paths to try, in order: the one [`SYSCALL_HOOKS_ENV`] names, else every path this kernel
/// offers, cheapest first (the loader falls back to the next when one fails to load).
pub fn syscall_hooks_to_try() -> Result<Vec<SyscallHooks>> {
    choose_syscall_hooks(
        std::env::var(SYSCALL_HOOKS_ENV).ok().as_deref(),
        SyscallHooks::available,
    )
}

/// `check`'s line: the path the loader takes first, and what it falls back to.
pub fn describe_choice(paths: &[SyscallHooks]) -> String {
    match paths {
        [] => "none available".to_string(),
        [only] => only.describe().to_string(),
        [first, rest @ ..] => format!(
            "{} (if it fails to load: {})",
            first.describe(),
            rest.iter()
                .map(|h| h.name())
                .collect::<Vec<_>>()
                .join(", then ")
        ),
    }
}

fn choose_syscall_hooks(
    forced: Option<&str>,
    available: impl Fn(SyscallHooks) -> bool,
) -> Result<Vec<SyscallHooks>> {
    match forced.map(str::trim).filter(|v| !v.is_empty()) {
        Some(name) => {
            let Some(hooks) = SyscallHooks::from_name(name) else {
                bail!(
                    "{SYSCALL_HOOKS_ENV}={name:?}: expected one of {}",
                    SyscallHooks::ALL.map(SyscallHooks::name).join(", ")
                );
            };
            if !available(hooks) {
                bail!(
                    "{SYSCALL_HOOKS_ENV}={name}: this kernel does not offer {}",
                    hooks.describe()
                );
            }
            Ok(vec![hooks])
        }
        None => Ok(SyscallHooks::ALL
            .into_iter()
            .filter(|h| available(*h))
            .collect()),
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

#[cfg(test)]
mod tests {
    use super::{choose_syscall_hooks, SyscallHooks};

    #[test]
    fn cheapest_available_path_first() {
        let all = choose_syscall_hooks(None, |_| true).unwrap();
        assert_eq!(all, SyscallHooks::ALL.to_vec());
        let no_btf = choose_syscall_hooks(None, |h| {
            h != SyscallHooks::BtfRaw && h != SyscallHooks::Fentry
        })
        .unwrap();
        assert_eq!(no_btf, [SyscallHooks::Raw, SyscallHooks::PerSyscall]);
        let old = choose_syscall_hooks(Some(""), |h| h == SyscallHooks::PerSyscall).unwrap();
        assert_eq!(old, [SyscallHooks::PerSyscall]);
    }

    #[test]
    fn forced_path_must_exist_and_be_offered() {
        let forced = choose_syscall_hooks(Some("raw_tp"), |_| true).unwrap();
        assert_eq!(forced, [SyscallHooks::Raw]);
        let e = choose_syscall_hooks(Some("kprobe"), |_| true).unwrap_err();
        assert!(
            e.to_string()
                .contains("fentry, tp_btf, raw_tp, tracepoints"),
            "{e}"
        );
        let e = choose_syscall_hooks(Some("tp_btf"), |h| h != SyscallHooks::BtfRaw).unwrap_err();
        assert!(e.to_string().contains("does not offer"), "{e}");
    }
}
