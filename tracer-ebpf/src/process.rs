//! Process lifetime tracepoints: userspace needs to know when a process is gone so that it can
//! close its half-finished exchanges and forget its state.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{counter, RecordHeader, RecordKind};

use crate::maps::{count, EVENTS};

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Fires per thread; only the group leader's exit ends the process.
    if tgid != tid {
        return 0;
    }
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
    });
    entry.submit(0);
    0
}
