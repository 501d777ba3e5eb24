//! Process lifetime tracepoints: userspace needs to know when a process is gone so that it can
//! close its half-finished exchanges and forget its state, and the agent stage turns the
//! processes an agent spawns (fork, exec with its arguments, exit status) into spans.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext as _,
};
use tracer_common::{
    counter, RecordHeader, RecordKind, EXEC_ARGS_COUNT, EXEC_ARGS_MAX, EXEC_ARG_MAX,
    EXEC_FILENAME_MAX, EXIT_STATUS_KNOWN,
};

use crate::maps::{count, forget_process_fds, mark_stdio, EVENTS, EXIT_STATUS};
use crate::report;

/// Offsets of `pid` and `clone_flags` in the `task_newtask` record, set by userspace from the
/// tracepoint's format file (these defaults are the layout of every kernel since 3.x).
#[unsafe(no_mangle)]
static NEWTASK_PID_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static NEWTASK_FLAGS_OFFSET: u32 = 32;
const CLONE_THREAD: u64 = 0x0001_0000;

fn header(kind: RecordKind, pid_tgid: u64) -> RecordHeader {
    RecordHeader {
        kind: kind as u32,
        direction: 0,
        function: 0,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        chunk_len: 0,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: 0,
        call_len: 0,
        offset: 0,
        stream_offset: 0,
        source: 0,
        fd: -1,
        cookie: 0,
        _pad: 0,
    }
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Fires per thread; only the group leader's exit ends the process.
    if tgid != tid {
        return 0;
    }
    let status = unsafe { EXIT_STATUS.get(tgid).copied() };
    if status.is_some() {
        let _ = EXIT_STATUS.remove(tgid);
    }
    crate::syscalls::finish_tls_at_exit(pid_tgid);
    forget_process_fds(tgid, false);
    let Some(mut entry) = EVENTS.reserve::<RecordHeader>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        report::ring_full(pid_tgid, RecordKind::ProcessExit as u32);
        return 0;
    };
    let mut record = header(RecordKind::ProcessExit, pid_tgid);
    if let Some(status) = status {
        record.function = EXIT_STATUS_KNOWN;
        record.offset = status as u32 as u64;
    }
    entry.write(record);
    entry.submit(0);
    0
}

/// The status a process exits with is only an argument of `exit_group`; a process without one
/// was killed by a signal.
#[tracepoint]
pub fn sys_enter_exit_group(ctx: TracePointContext) -> u32 {
    let status: u64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    remember_exit_status(status);
    0
}

#[inline(always)]
pub(crate) fn remember_exit_status(status: u64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Err(error) = EXIT_STATUS.insert(tgid, status as i32, 0) {
        report::insert_failed!(
            "EXIT_STATUS",
            bpf_get_current_pid_tgid(),
            error,
            "the process's exit status is reported unknown"
        );
    }
}

/// Process lineage: which process created which. `task_newtask` fires in the creating process
/// with the clone flags, so threads (by far the most frequent new tasks) are left out here and
/// cost userspace nothing.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let flags_at = unsafe { core::ptr::read_volatile(&NEWTASK_FLAGS_OFFSET) } as usize;
    let Ok(flags) = (unsafe { ctx.read_at::<u64>(flags_at & 0xff) }) else {
        return 0;
    };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let pid_at = unsafe { core::ptr::read_volatile(&NEWTASK_PID_OFFSET) } as usize;
    let Ok(child) = (unsafe { ctx.read_at::<i32>(pid_at & 0xff) }) else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<RecordHeader>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        report::ring_full(bpf_get_current_pid_tgid(), RecordKind::ProcessFork as u32);
        return 0;
    };
    let mut record = header(RecordKind::ProcessFork, bpf_get_current_pid_tgid());
    record.conn_id = child as u32 as u64;
    entry.write(record);
    entry.submit(0);
    0
}

#[repr(C)]
struct ArgsEvent {
    header: RecordHeader,
    /// Room for one more whole argument past the limit, so every copy has a constant size.
    args: [u8; EXEC_ARGS_MAX + EXEC_ARG_MAX],
}

/// The command line of a process the agent spawns: read at execve, while the arguments are
/// still in the caller's memory (a short-lived `sh -c` is gone before userspace could read
/// /proc/PID/cmdline).
#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    let argv: u64 = unsafe { ctx.read_at(24) }.unwrap_or(0);
    emit_args(argv)
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    let argv: u64 = unsafe { ctx.read_at(32) }.unwrap_or(0);
    emit_args(argv)
}

pub(crate) fn emit_args(argv: u64) -> u32 {
    if argv == 0 {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ArgsEvent>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        report::ring_full(bpf_get_current_pid_tgid(), RecordKind::ProcessArgs as u32);
        return 0;
    };
    let event = entry.as_mut_ptr();
    let mut len = 0usize;
    for i in 0..EXEC_ARGS_COUNT {
        let Ok(arg) = (unsafe { bpf_probe_read_user((argv as *const u64).wrapping_add(i)) }) else {
            break;
        };
        if arg == 0 || len >= EXEC_ARGS_MAX {
            break;
        }
        let at = len & (EXEC_ARGS_MAX - 1);
        let dest = unsafe { &mut (&mut (*event).args)[at..at + EXEC_ARG_MAX] };
        match unsafe { bpf_probe_read_user_str_bytes(arg as *const u8, dest) } {
            // The copy ends with its NUL, which separates the arguments.
            Ok(copied) => len = at + copied.len() + 1,
            Err(_) => break,
        }
    }
    let mut record = header(RecordKind::ProcessArgs, bpf_get_current_pid_tgid());
    record.chunk_len = (len as u32).min((EXEC_ARGS_MAX + EXEC_ARG_MAX) as u32);
    unsafe { (*event).header = record };
    entry.submit(0);
    0
}

#[repr(C)]
struct ExecEvent {
    header: RecordHeader,
    filename: [u8; EXEC_FILENAME_MAX],
}

/// A process replaced its program: its stdin and stdout become JSON-RPC candidates, and
/// userspace looks at the new executable (static TLS, Go) and its libraries. The record carries
/// the process's cgroup v2 id, read here because a short-lived client may be gone (and its
/// /proc/PID/cgroup with it) before userspace handles the record.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !crate::syscalls::is_tracer(pid_tgid) {
        forget_process_fds(tgid, true);
        mark_stdio(tgid);
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        report::ring_full(pid_tgid, RecordKind::ProcessExec as u32);
        return 0;
    };
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).header = RecordHeader {
            kind: RecordKind::ProcessExec as u32,
            direction: 0,
            function: 0,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            chunk_len: EXEC_FILENAME_MAX as u32,
            timestamp_ns: bpf_ktime_get_ns(),
            conn_id: bpf_get_current_cgroup_id(),
            call_len: 0,
            offset: 0,
            stream_offset: 0,
            source: 0,
            fd: -1,
            cookie: 0,
            _pad: 0,
        };
        (*event).filename[0] = 0;
        // __data_loc filename: offset in the low 16 bits, at offset 8 of the record.
        let loc: u32 = ctx.read_at(8).unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let _ = bpf_probe_read_kernel_str_bytes(src, &mut (*event).filename);
    }
    entry.submit(0);
    0
}
