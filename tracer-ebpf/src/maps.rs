//! Every map the kernel programs share with each other and with userspace.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{counter, RecordHeader, CHUNK_SIZE};

/// Records to userspace. Userspace sizes it at load time (`--ring-buffer-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// One record under construction per CPU: a record is larger than the 512-byte BPF stack.
#[repr(C)]
pub struct RecordBuf {
    pub header: RecordHeader,
    pub data: [u8; CHUNK_SIZE],
}

#[map]
pub static SCRATCH: PerCpuArray<RecordBuf> = PerCpuArray::with_max_entries(1, 0);

/// Loss and activity counters, indexed by `tracer_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// What copying the current call lost so far, for its one debug message (`report.rs`); per CPU,
/// as a program runs on one CPU from start to end. In a map rather than on the stack: the
/// bpf_loop callback adds to it, and sums on the caller's stack would differ at every iteration,
/// which the verifier must then tell apart.
#[repr(C)]
pub struct CallLosses {
    /// 1 when anything was lost.
    pub any: u64,
    /// The thread and the connection (`RecordHeader::conn_id`) of the call.
    pub pid_tgid: u64,
    pub conn_id: u64,
    /// Bytes that could not be read from the traced program's memory.
    pub unreadable: u64,
    /// The last failed read's error.
    pub read_error: i64,
    /// Records the full ring buffer refused.
    pub ring_full: u64,
    /// Bytes past the per-call limit.
    pub cut: u64,
}

impl CallLosses {
    pub const NONE: CallLosses = CallLosses {
        any: 0,
        pid_tgid: 0,
        conn_id: 0,
        unreadable: 0,
        read_error: 0,
        ring_full: 0,
        cut: 0,
    };
}

#[map]
pub static CALL_LOSSES: PerCpuArray<CallLosses> = PerCpuArray::with_max_entries(1, 0);

/// A connection's direction, for counting the bytes it carried.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StreamKey {
    pub conn_id: u64,
    pub tgid: u32,
    /// Direction in the low byte, `Source` in the next.
    pub direction: u32,
}

/// Bytes each connection carried per direction: the per-connection sequence number of every
/// record. LRU: a connection evicted here restarts at 0, which userspace sees as a new stream.
#[map]
pub static STREAM_OFFSETS: LruHashMap<StreamKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// A TLS call between its entry and its return: the buffer is only complete (reads) and the
/// transferred length only known (both directions) at return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    pub ssl: u64,
    pub buf: u64,
    /// `size_t *` out-parameter of the `_ex` variants; 0 for the plain ones.
    pub len_out: u64,
    /// The byte count the `_ex` variants were asked for: the most the out-parameter can say.
    pub requested: u64,
    pub timestamp_ns: u64,
    pub function: u32,
    /// The entry probe's attach cookie, carried to the records the return probe writes.
    pub cookie: u32,
}

/// Keyed by pid_tgid. LRU so that threads dying inside a call cannot fill the map.
#[map]
pub static PENDING_WRITES: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static PENDING_READS: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
pub fn count(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *slot += by };
    }
}

/// Processes (tgid) userspace decided not to trace (selection rules), set when it first sees
/// them (at exec, or at their first captured record) and cleared when they exit. The TLS and
/// socket-data probes skip them; a process's first calls may be copied before the decision.
#[map]
pub static IGNORED_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
pub fn is_ignored(tgid: u32) -> bool {
    unsafe { IGNORED_PIDS.get(tgid) }.is_some()
}

// Plain sockets (syscalls.rs)

/// Sockets worth watching, per process. The filter every read/write syscall on the host goes
/// through: one hash lookup that misses for anything but a traced TCP connection.
#[map]
pub static SOCKETS: LruHashMap<tracer_common::FdKey, tracer_common::SocketState> =
    LruHashMap::with_max_entries(65536, 0);

/// TLS client connections no TLS hook has seen from inside (yet): their ciphertext totals, until
/// close or process exit reports them as an encrypted-only connection. A connection whose socket
/// is then used inside a hooked TLS call is dropped from here (its plaintext is captured).
#[map]
pub static TLS_CONNS: LruHashMap<tracer_common::FdKey, tracer_common::TlsTotals> =
    LruHashMap::with_max_entries(16384, 0);

/// Per process with an entry in `TLS_CONNS`: one more than the highest fd it used, so that the
/// process's exit looks up only those fds (every exit on the host passes by; most miss here).
#[map]
pub static TLS_PROCS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// A socket syscall between entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingIo {
    /// The buffer, or the iovec array for vectored calls.
    pub buf: u64,
    /// Length, or iovec count for vectored calls.
    pub count: u64,
    pub timestamp_ns: u64,
    pub fd: u32,
    pub function: u32,
}

#[map]
pub static PENDING_IO: LruHashMap<u64, PendingIo> = LruHashMap::with_max_entries(16384, 0);

/// socket()/connect()/accept() between entry and exit: the fd (connect) and the sockaddr pointer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingSocketCall {
    pub addr: u64,
    pub fd: u32,
    pub _pad: u32,
}

#[map]
pub static PENDING_SOCKET_CALLS: LruHashMap<u64, PendingSocketCall> =
    LruHashMap::with_max_entries(16384, 0);

/// A dup/dup2/dup3/fcntl(F_DUPFD) call on a traced fd between entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingDup {
    /// The duplicated stdio fd's state, which the new fd takes; zero flags when the old fd is not
    /// a traced stdio fd.
    pub state: tracer_common::SocketState,
    /// Flags of the traced fd dup2/dup3 replaces; 0 when none.
    pub replaced_flags: u32,
    pub _pad: u32,
}

#[map]
pub static PENDING_DUPS: LruHashMap<u64, PendingDup> = LruHashMap::with_max_entries(16384, 0);

/// Forgets the byte counts of both directions of a connection: the next bytes on it start a new
/// stream at offset 0.
#[inline(always)]
pub fn forget_offsets(tgid: u32, conn_id: u64, source: tracer_common::Source) {
    use tracer_common::Direction;
    for direction in [Direction::Egress, Direction::Ingress] {
        let stream = StreamKey {
            conn_id,
            tgid,
            direction: direction as u32 | ((source as u32) << 8),
        };
        let _ = STREAM_OFFSETS.remove(stream);
    }
}

/// Forgets a process's fds in `0..FORGET_FDS` and its stdio connection's byte counts: at exit
/// all of them (a reused pid must not inherit them), at exec the stdio ones (the old program's
/// duplicates are gone with it, or are no longer its wire). A socket stays across an exec.
#[inline(always)]
pub fn forget_process_fds(tgid: u32, stdio_only: bool) {
    use tracer_common::{socket_flag, FdKey, Source, FORGET_FDS, STDIO_CONN_ID};
    for fd in 0..FORGET_FDS {
        let key = FdKey { tgid, fd };
        if stdio_only {
            match unsafe { SOCKETS.get(key) } {
                Some(state) if state.flags & socket_flag::STDIO != 0 => {}
                _ => continue,
            }
        }
        let _ = SOCKETS.remove(key);
    }
    forget_offsets(tgid, STDIO_CONN_ID as u64, Source::Stdio);
}

/// A program starts: its stdin and stdout become JSON-RPC candidates, unless they are sockets
/// already traced. Done here rather than from userspace so that no race with the program's first
/// read exists: an MCP server may read its first request within a millisecond of its exec.
#[inline(always)]
pub fn mark_stdio(tgid: u32) {
    use tracer_common::{socket_flag, FdKey, SocketState, STDIO_CONN_ID};
    for fd in [0, 1] {
        let key = FdKey { tgid, fd };
        if unsafe { SOCKETS.get(key) }.is_none() {
            let state = SocketState {
                flags: socket_flag::STDIO,
                pair: STDIO_CONN_ID,
            };
            if let Err(error) = SOCKETS.insert(key, state, aya_ebpf::bindings::BPF_ANY as u64) {
                crate::report::insert_failed!(
                    "SOCKETS",
                    aya_ebpf::helpers::bpf_get_current_pid_tgid(),
                    error,
                    "the program's stdio is not traced"
                );
            }
        }
    }
}

// Go crypto/tls

/// A Go `crypto/tls.(*Conn)` call in flight, per goroutine: a goroutine blocked in `Read` may
/// resume on another OS thread, so the thread id cannot pair an entry with its return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoCallKey {
    /// The goroutine's `g` pointer (register R14 under Go's register ABI).
    pub goroutine: u64,
    pub tgid: u32,
    /// A `Direction` value: `Write` and `Read` are tracked apart.
    pub direction: u32,
}

/// What the entry probe saw: the return probe only learns `n`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoPendingCall {
    /// The `*tls.Conn`: Go's heap does not move objects, so it names the connection for life.
    pub conn: u64,
    pub buf: u64,
    /// `len(b)`: the most the call can transfer, a bound on the `n` read at return.
    pub len: u64,
    pub timestamp_ns: u64,
}

/// LRU: goroutines that die or are parked forever inside a call cannot fill the map.
#[map]
pub static GO_TLS_PENDING: LruHashMap<GoCallKey, GoPendingCall> =
    LruHashMap::with_max_entries(16384, 0);

// Processes (process.rs)

/// The status passed to `exit_group`, per process, until the process's exit is reported.
#[map]
pub static EXIT_STATUS: LruHashMap<u32, i32> = LruHashMap::with_max_entries(16384, 0);
