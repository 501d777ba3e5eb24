//! Loading the kernel programs, attaching the tracepoints, and placing uprobes on the targets
//! the attacher finds.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeScope},
        BtfTracePoint, FEntry, FExit, KProbe, RawTracePoint, TracePoint, UProbe,
    },
    Btf, Ebpf, EbpfLoader,
};
use tracer_common::{counter, socket_flag, FdKey, SocketState};
use tracing::{debug, info, warn};

use super::{
    compat::{self, SyscallHooks},
    kernel_log::{self, KernelLog},
    rejection,
    targets::{Hook, TLS_PROGRAMS},
};
use crate::telemetry::health::Health;

/// The compiled kernel programs, embedded at build time by build.rs: for kernels with the
/// `bpf_loop` helper, and the same programs with bounded loops for older ones.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));
static PROGRAMS_BOUNDED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf-bounded"));

/// The programs this kernel gets, and the path named in `check` and the start-up log.
pub fn programs_for_this_kernel() -> (&'static [u8], compat::LoopPath) {
    match compat::loop_path() {
        compat::LoopPath::Helper => (PROGRAMS, compat::LoopPath::Helper),
        compat::LoopPath::Bounded => (PROGRAMS_BOUNDED, compat::LoopPath::Bounded),
    }
}

/// (category, name) of the tracepoints every path attaches; the program has the tracepoint's
/// name.
const TRACEPOINTS: &[(&str, &str)] = &[
    ("sched", "sched_process_exit"),
    ("sched", "sched_process_exec"),
    ("task", "task_newtask"),
];

/// The per-syscall tracepoints of [`SyscallHooks::PerSyscall`]; the raw paths' two programs
/// (`sys_enter_*`/`sys_exit_*` suffixed `_btf` or `_raw`) run the same handlers.
const SYSCALL_TRACEPOINTS: &[(&str, &str)] = &[
    ("syscalls", "sys_enter_exit_group"),
    ("syscalls", "sys_enter_execve"),
    ("syscalls", "sys_enter_execveat"),
    ("syscalls", "sys_enter_socket"),
    ("syscalls", "sys_exit_socket"),
    ("syscalls", "sys_enter_connect"),
    ("syscalls", "sys_exit_connect"),
    ("syscalls", "sys_enter_accept"),
    ("syscalls", "sys_exit_accept"),
    ("syscalls", "sys_enter_accept4"),
    ("syscalls", "sys_exit_accept4"),
    ("syscalls", "sys_enter_close"),
    ("syscalls", "sys_enter_write"),
    ("syscalls", "sys_exit_write"),
    ("syscalls", "sys_enter_writev"),
    ("syscalls", "sys_exit_writev"),
    ("syscalls", "sys_enter_sendto"),
    ("syscalls", "sys_exit_sendto"),
    ("syscalls", "sys_enter_sendmsg"),
    ("syscalls", "sys_exit_sendmsg"),
    ("syscalls", "sys_enter_read"),
    ("syscalls", "sys_exit_read"),
    ("syscalls", "sys_enter_readv"),
    ("syscalls", "sys_exit_readv"),
    ("syscalls", "sys_enter_recvfrom"),
    ("syscalls", "sys_exit_recvfrom"),
    ("syscalls", "sys_enter_recvmsg"),
    ("syscalls", "sys_exit_recvmsg"),
    ("syscalls", "sys_enter_dup"),
    ("syscalls", "sys_exit_dup"),
    ("syscalls", "sys_enter_dup2"),
    ("syscalls", "sys_exit_dup2"),
    ("syscalls", "sys_enter_dup3"),
    ("syscalls", "sys_exit_dup3"),
    ("syscalls", "sys_enter_fcntl"),
    ("syscalls", "sys_exit_fcntl"),
];

/// The syscalls [`SyscallHooks::Fentry`] hooks: the suffix of programs `fentry_<name>` and
/// `fexit_<name>`, the kernel function they are written for, and whether there is an exit
/// program (`tracer-ebpf/src/fentry_syscalls.rs` says why the socket calls use `__sys_*`).
const SYSCALL_FUNCTIONS: &[(&str, &str, bool)] = &[
    ("read", "__x64_sys_read", true),
    ("write", "__x64_sys_write", true),
    ("readv", "__x64_sys_readv", true),
    ("writev", "__x64_sys_writev", true),
    ("dup", "__x64_sys_dup", true),
    ("dup2", "__x64_sys_dup2", true),
    ("dup3", "__x64_sys_dup3", true),
    ("fcntl", "__x64_sys_fcntl", true),
    ("close", "__x64_sys_close", false),
    ("execve", "__x64_sys_execve", false),
    ("execveat", "__x64_sys_execveat", false),
    ("exit_group", "__x64_sys_exit_group", false),
    ("socket", "__sys_socket", true),
    ("connect", "__sys_connect", true),
    ("accept4", "__sys_accept4", true),
    ("sendto", "__sys_sendto", true),
    ("recvfrom", "__sys_recvfrom", true),
    ("sendmsg", "__sys_sendmsg", true),
    ("recvmsg", "__sys_recvmsg", true),
];

/// Where tracepoint `category:event` keeps `field`: from its format file, else `default`.
fn tracepoint_field_offset(category: &str, event: &str, field: &str, default: u32) -> u32 {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            std::fs::read_to_string(format!("{root}/events/{category}/{event}/format")).ok()
        })
        .and_then(|format| field_offset(&format, field))
        .unwrap_or(default)
}

/// `offset:N` of field `name` in a tracepoint format description.
fn field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        if decl.rsplit([' ', '*']).next()? != name {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))?
            .parse()
            .ok()
    })
}

/// Loaded programs. Dropping it detaches everything.
pub struct Capture {
    ebpf: Ebpf,
    loops: compat::LoopPath,
    syscall_hooks: SyscallHooks,
    /// The programs' debug messages on their way to the log, when the log shows them.
    _kernel_log: Option<KernelLog>,
}

impl Capture {
    /// A program the verifier refuses is reported with the end of the verifier's log.
    pub fn load(ring_buffer_bytes: u32) -> Result<Self> {
        Self::load_programs(ring_buffer_bytes).map_err(super::rejection::for_user)
    }

    fn load_programs(ring_buffer_bytes: u32) -> Result<Self> {
        compat::require_supported()?;
        let (programs, loops) = programs_for_this_kernel();
        tracing::info!("kernel programs: {}", loops.describe());
        let to_try = compat::syscall_hooks_to_try()?;
        let ring_buffer_bytes = ring_buffer_bytes.next_power_of_two().max(4096);
        let tracer_tgid = std::process::id();
        let kernel_log_level = kernel_log::level();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .override_global("TRACER_TGID", &tracer_tgid, true)
            .override_global(aya_log::LEVEL, &kernel_log_level, true)
            .override_global(
                "NEWTASK_PID_OFFSET",
                &tracepoint_field_offset("task", "task_newtask", "pid", 8),
                true,
            )
            .override_global(
                "NEWTASK_FLAGS_OFFSET",
                &tracepoint_field_offset("task", "task_newtask", "clone_flags", 32),
                true,
            )
            .load(programs)
            .context("loading the eBPF programs into the kernel")?;
        let kernel_log = KernelLog::start(&mut ebpf, kernel_log_level).unwrap_or_else(|e| {
            warn!("the kernel programs' debug messages will not be logged: {e:#}");
            None
        });

        // Uprobes are loaded up front and attached per target as targets are found.
        for name in TLS_PROGRAMS.iter().chain(super::gotls::GO_PROGRAMS) {
            uprobe(&mut ebpf, name)?
                .load()
                .with_context(|| format!("verifying program {name}"))?;
        }
        attach_tracepoints(&mut ebpf, TRACEPOINTS)?;
        let syscall_hooks = attach_syscall_hooks(&mut ebpf, &to_try)?;
        info!(
            "socket and stdio syscalls hooked by {}",
            syscall_hooks.describe()
        );
        Ok(Capture {
            ebpf,
            loops,
            syscall_hooks,
            _kernel_log: kernel_log,
        })
    }

    /// How this kernel's socket and stdio syscalls are hooked.
    pub fn syscall_hooks(&self) -> SyscallHooks {
        self.syscall_hooks
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Places the hooks on `path`; returns how many were placed.
    pub fn attach_hooks(&mut self, path: &Path, hooks: &[Hook]) -> usize {
        let mut attached = 0;
        for hook in hooks {
            let result = uprobe(&mut self.ebpf, &hook.program).and_then(|p| {
                p.attach(
                    UProbeAttachLocation::AbsoluteOffset(hook.offset),
                    path,
                    UProbeScope::AllProcesses,
                )
                .map_err(anyhow::Error::from)
            });
            match result {
                Ok(_) => attached += 1,
                Err(e) => debug!(
                    "{} on {} in {}: {e:#}",
                    hook.program,
                    hook.symbol,
                    path.display()
                ),
            }
        }
        attached
    }

    /// Attaches one hook with an attach cookie (copied into its records, see `validate.rs`);
    /// returns the link, for [`detach`](Self::detach).
    pub fn attach_with_cookie(
        &mut self,
        path: &Path,
        hook: &Hook,
        cookie: u64,
    ) -> Result<aya::programs::uprobe::UProbeLinkId> {
        // The bounded programs (kernels before 5.17) read no cookie: an inferred hook's records
        // could not be told apart for validation, so such hooks are not placed at all.
        if self.loops == compat::LoopPath::Bounded {
            anyhow::bail!(
                "hooks placed by inference need attach cookies, which the programs for this \
                 kernel (before 5.17) do not read"
            );
        }
        let program = uprobe(&mut self.ebpf, &hook.program)?;
        Ok(program.attach(
            aya::programs::uprobe::UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(hook.offset),
                cookie: Some(cookie),
            },
            path,
            UProbeScope::AllProcesses,
        )?)
    }

    /// Removes one probe placed by [`attach_with_cookie`](Self::attach_with_cookie).
    pub fn detach(
        &mut self,
        program: &str,
        link: aya::programs::uprobe::UProbeLinkId,
    ) -> Result<()> {
        uprobe(&mut self.ebpf, program)?.detach(link)?;
        Ok(())
    }

    /// Marks a socket that was open before the tracer started as worth watching.
    pub fn seed_socket(&mut self, tgid: u32, fd: u32) -> Result<()> {
        let mut sockets = self.sockets()?;
        let state = SocketState {
            flags: socket_flag::STREAM | socket_flag::CONNECTED | socket_flag::MIDSTREAM,
            pair: 0,
        };
        sockets.insert(FdKey { tgid, fd }, state, 0)?;
        Ok(())
    }

    /// The per-process interest map, handed once to whoever decides which processes are
    /// traced.
    pub fn take_ignored_pids(&mut self) -> Result<IgnoredPids> {
        let map = self
            .ebpf
            .take_map("IGNORED_PIDS")
            .context("map IGNORED_PIDS missing")?;
        Ok(IgnoredPids(BpfHashMap::try_from(map)?))
    }

    /// Marks stdio fds of a process that was running before the tracer started as JSON-RPC
    /// candidates (the kernel marks those of programs that exec afterwards).
    pub fn seed_stdio(&mut self, tgid: u32, fds: &[u32]) -> Result<()> {
        let mut sockets = self.sockets()?;
        let state = SocketState {
            flags: socket_flag::STDIO,
            pair: tracer_common::STDIO_CONN_ID,
        };
        for fd in fds {
            sockets.insert(FdKey { tgid, fd: *fd }, state, 0)?;
        }
        Ok(())
    }

    fn sockets(&mut self) -> Result<BpfHashMap<&mut MapData, FdKey, SocketState>> {
        Ok(BpfHashMap::try_from(
            self.ebpf
                .map_mut("SOCKETS")
                .context("map SOCKETS missing")?,
        )?)
    }

    /// The ring buffer, handed to the reader once.
    pub fn take_ring_buffer(&mut self) -> Result<super::ring::RingReader> {
        let map = self.ebpf.take_map("EVENTS").context("map EVENTS missing")?;
        let aya::maps::Map::RingBuf(data) = map else {
            anyhow::bail!("map EVENTS is not a ring buffer");
        };
        Ok(super::ring::RingReader::new(data)?)
    }

    /// Copies the kernel's per-CPU counters into `health`.
    pub fn read_kernel_counters(&self, health: &Health) -> Result<()> {
        let map = self.ebpf.map("COUNTERS").context("map COUNTERS missing")?;
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let read = |index: u32| -> u64 {
            counters
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        for (kernel, value) in counter::ALL.iter().zip(&health.kernel) {
            value.store(read(kernel.index), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Processes the kernel programs skip: their TLS calls and socket data are not copied.
pub struct IgnoredPids(BpfHashMap<MapData, u32, u8>);

impl IgnoredPids {
    pub fn set(&mut self, tgid: u32, ignored: bool) {
        let result = if ignored {
            self.0.insert(tgid, 1, 0)
        } else {
            self.0.remove(&tgid)
        };
        if let Err(e) = result {
            // Removing a pid the LRU map already evicted fails harmlessly.
            debug!("IGNORED_PIDS {tgid} -> {ignored}: {e}");
        }
    }
}

fn attach_tracepoints(ebpf: &mut Ebpf, tracepoints: &[(&str, &str)]) -> Result<()> {
    for (category, name) in tracepoints {
        let program: &mut TracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("verifying program {name}"))?;
        program
            .attach(category, name)
            .with_context(|| format!("attaching tracepoint {category}:{name}"))?;
    }
    Ok(())
}

/// Attaches the first of `to_try` that loads and attaches; a failed path is unloaded before the
/// next is tried, so exactly one path runs. The last one's error is the caller's.
fn attach_syscall_hooks(ebpf: &mut Ebpf, to_try: &[SyscallHooks]) -> Result<SyscallHooks> {
    let mut last_error = None;
    for (i, hooks) in to_try.iter().enumerate() {
        let result = match hooks {
            SyscallHooks::Fentry => attach_fentry(ebpf),
            SyscallHooks::BtfRaw => attach_btf_raw(ebpf),
            SyscallHooks::Raw => attach_raw(ebpf),
            SyscallHooks::PerSyscall => attach_tracepoints(ebpf, SYSCALL_TRACEPOINTS),
        };
        match result {
            Ok(()) => return Ok(*hooks),
            Err(e) => {
                // The verifier's whole log runs to thousands of lines: its end says why, the
                // rest goes to the debug log.
                let e = rejection::for_user(e);
                if i + 1 < to_try.len() {
                    warn!("{} failed, falling back: {e:#}", hooks.describe());
                }
                unload_syscall_hooks(ebpf, *hooks);
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no way to hook syscalls on this kernel")))
}

/// Loads every fentry/fexit program before attaching any, so a kernel that rejects one leaves
/// no syscall half-hooked; then attaches them, exits first, so no entry is left without its
/// exit. (A call already in flight when its exit attaches is lost like any call that began
/// before the tracer: its entry was never seen.)
fn attach_fentry(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    // Every program is tried, so one run names every function this kernel refuses.
    let mut refused = Vec::new();
    let mut kprobes = Vec::new();
    for (name, function, has_exit) in SYSCALL_FUNCTIONS {
        let enter = format!("fentry_{name}");
        if let Err(e) = program::<FEntry>(ebpf, &enter).and_then(|p| Ok(p.load(function, &btf)?)) {
            // An entry-only wrapper the BTF cannot type takes a kprobe instead.
            let kprobe = format!("kprobe_{name}");
            let stand_in = (!has_exit && ebpf.program(&kprobe).is_some())
                .then(|| program::<KProbe>(ebpf, &kprobe).and_then(|p| Ok(p.load()?)));
            match stand_in {
                Some(Ok(())) => {
                    info!(
                        "{function}: a kprobe instead of fentry ({})",
                        verifier_reason(&e)
                    );
                    kprobes.push((kprobe, *function));
                }
                Some(Err(k)) => refused.push(format!(
                    "{enter} on {function}: {:#}; {:#}",
                    rejection::for_user(e),
                    rejection::for_user(k)
                )),
                None => refused.push(format!(
                    "{enter} on {function}: {:#}",
                    rejection::for_user(e)
                )),
            }
        }
        if *has_exit {
            let exit = format!("fexit_{name}");
            if let Err(e) = program::<FExit>(ebpf, &exit).and_then(|p| Ok(p.load(function, &btf)?))
            {
                refused.push(format!(
                    "{exit} on {function}: {:#}",
                    rejection::for_user(e)
                ));
            }
        }
    }
    anyhow::ensure!(
        refused.is_empty(),
        "verifying {} of the fentry/fexit programs failed:\n{}",
        refused.len(),
        refused.join("\n")
    );
    for (name, function, _) in SYSCALL_FUNCTIONS.iter().filter(|(_, _, exit)| *exit) {
        program::<FExit>(ebpf, &format!("fexit_{name}"))?
            .attach()
            .with_context(|| format!("attaching fexit/{function}"))?;
    }
    for (name, function, _) in SYSCALL_FUNCTIONS {
        if let Some((kprobe, _)) = kprobes.iter().find(|(_, f)| f == function) {
            program::<KProbe>(ebpf, kprobe)?
                .attach(function, 0)
                .with_context(|| format!("attaching kprobe/{function}"))?;
            continue;
        }
        program::<FEntry>(ebpf, &format!("fentry_{name}"))?
            .attach()
            .with_context(|| format!("attaching fentry/{function}"))?;
    }
    Ok(())
}

/// The verifier's reason in one line: its complaint about the function's BTF when there is one
/// (`func '…' arg0 type FWD is not a struct`), else the error's first line.
fn verifier_reason(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let mut lines = text.lines();
    let first = lines.clone().next().unwrap_or_default();
    lines
        .find(|l| l.starts_with("func '"))
        .unwrap_or(first)
        .to_string()
}

/// Program `name` as its type.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing"))?;
    Ok(program.try_into()?)
}

fn attach_btf_raw(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    for (name, tracepoint) in [("sys_enter_btf", "sys_enter"), ("sys_exit_btf", "sys_exit")] {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        program
            .load(tracepoint, &btf)
            .with_context(|| format!("verifying program {name}"))?;
        program
            .attach()
            .with_context(|| format!("attaching tp_btf/{tracepoint}"))?;
    }
    Ok(())
}

fn attach_raw(ebpf: &mut Ebpf) -> Result<()> {
    for (name, tracepoint) in [("sys_enter_raw", "sys_enter"), ("sys_exit_raw", "sys_exit")] {
        let program: &mut RawTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("verifying program {name}"))?;
        program
            .attach(tracepoint)
            .with_context(|| format!("attaching raw_tp/{tracepoint}"))?;
    }
    Ok(())
}

/// Unloads (and so detaches) whatever of `hooks`' programs got loaded; a program the path never
/// reached is not loaded and its unload fails harmlessly.
fn unload_syscall_hooks(ebpf: &mut Ebpf, hooks: SyscallHooks) {
    fn unload<P>(
        ebpf: &mut Ebpf,
        name: &str,
        unload: impl FnOnce(&mut P) -> Result<(), aya::programs::ProgramError>,
    ) where
        for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program>,
    {
        let Some(program) = ebpf.program_mut(name) else {
            return;
        };
        if let Ok(program) = <&mut P>::try_from(program) {
            if let Err(e) = unload(program) {
                debug!("unloading {name}: {e}");
            }
        }
    }
    match hooks {
        SyscallHooks::Fentry => {
            for (name, _, has_exit) in SYSCALL_FUNCTIONS {
                unload(ebpf, &format!("fentry_{name}"), FEntry::unload);
                unload(ebpf, &format!("kprobe_{name}"), KProbe::unload);
                if *has_exit {
                    unload(ebpf, &format!("fexit_{name}"), FExit::unload);
                }
            }
        }
        SyscallHooks::BtfRaw => {
            for name in ["sys_enter_btf", "sys_exit_btf"] {
                unload(ebpf, name, BtfTracePoint::unload);
            }
        }
        SyscallHooks::Raw => {
            for name in ["sys_enter_raw", "sys_exit_raw"] {
                unload(ebpf, name, RawTracePoint::unload);
            }
        }
        SyscallHooks::PerSyscall => {
            for (_, name) in SYSCALL_TRACEPOINTS {
                unload(ebpf, name, TracePoint::unload);
            }
        }
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    program(ebpf, name)
}

#[cfg(test)]
mod tests {
    use super::field_offset;

    #[test]
    fn fork_child_pid_offset_of_both_layouts() {
        // 6.x: the comms are __data_loc.
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                   \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(new, "child_pid"), Some(20));
        assert_eq!(field_offset(new, "parent_pid"), Some(12));
        // 5.x: fixed comm arrays.
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(old, "child_pid"), Some(44));
        assert_eq!(
            field_offset(old, "child_comm"),
            None,
            "an array is not the field name"
        );
        assert_eq!(field_offset("garbage", "child_pid"), None);
        // task_newtask, which lineage now uses.
        let newtask = "\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
                       \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
                       \tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n";
        assert_eq!(field_offset(newtask, "pid"), Some(8));
        assert_eq!(field_offset(newtask, "clone_flags"), Some(32));
    }
}
