//! Process lifetime tracepoints: userspace needs to know when a process is gone so that it can
//! close its half-finished exchanges and forget its state.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext as _,
};
use tracer_common::{counter, RecordHeader, RecordKind, EXEC_FILENAME_MAX};

use crate::maps::{count, forget_process_fds, mark_stdio, EVENTS};

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Fires per thread; only the group leader's exit ends the process.
    if tgid != tid {
        return 0;
    }
    forget_process_fds(tgid, false);
    let Some(mut entry) = EVENTS.reserve::<RecordHeader>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        return 0;
    };
    entry.write(RecordHeader {
        kind: RecordKind::ProcessExit as u32,
        direction: 0,
        function: 0,
        pid: tgid,
        tid,
        chunk_len: 0,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: 0,
        call_len: 0,
        offset: 0,
        stream_offset: 0,
        source: 0,
        fd: -1,
    });
    entry.submit(0);
    0
}

#[repr(C)]
struct ExecEvent {
    header: RecordHeader,
    filename: [u8; EXEC_FILENAME_MAX],
}

/// A process replaced its program: its stdin and stdout become JSON-RPC candidates, and
/// userspace looks at the new executable (static TLS, Go) and its libraries.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != unsafe { core::ptr::read_volatile(&crate::syscalls::TRACER_TGID) } {
        forget_process_fds(tgid, true);
        mark_stdio(tgid);
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
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
            conn_id: 0,
            call_len: 0,
            offset: 0,
            stream_offset: 0,
            source: 0,
            fd: -1,
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
