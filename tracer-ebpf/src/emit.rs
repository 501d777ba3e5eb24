//! Copying a user buffer, whole, into the ring buffer as a sequence of variable-sized records.

use core::ffi::c_void;

use aya_ebpf::bindings::BPF_ANY;
use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_user, bpf_ringbuf_output};
use tracer_common::{
    bounded, counter, Direction, RecordHeader, RecordKind, SocketFunction, Source, TlsFunction,
    CHUNK_SIZE, MAX_CHUNKS_PER_CALL, RECORD_HEADER_SIZE,
};

use crate::{report, Loops};

use crate::maps::{count, StreamKey, EVENTS, SCRATCH, STREAM_OFFSETS};

/// One finished call's bytes, as the chunk callback needs them.
#[repr(C)]
pub struct Transfer {
    pub conn_id: u64,
    pub buf: u64,
    pub len: u64,
    pub timestamp_ns: u64,
    pub pid_tgid: u64,
    /// Filled by `emit_buffer` from the per-connection byte count.
    pub stream_offset: u64,
    pub function: u32,
    pub direction: u32,
    pub source: u32,
    pub fd: i32,
    /// See `RecordHeader::cookie`.
    pub cookie: u32,
}

impl Transfer {
    /// Bytes seen at a socket syscall.
    #[inline(always)]
    pub fn socket(
        fd: u32,
        buf: u64,
        len: u64,
        timestamp_ns: u64,
        pid_tgid: u64,
        function: SocketFunction,
        direction: Direction,
    ) -> Self {
        Transfer {
            conn_id: fd as u64,
            buf,
            len,
            timestamp_ns,
            pid_tgid,
            stream_offset: 0,
            function: function as u32,
            direction: direction as u32,
            source: Source::Socket as u32,
            fd: fd as i32,
            cookie: 0,
        }
    }

    /// The same bytes, seen on a stdio fd: `pair` ([`tracer_common::STDIO_CONN_ID`]) names the
    /// connection, so stdin and stdout (and their duplicates) make one.
    #[inline(always)]
    pub fn on_stdio(mut self, pair: u32) -> Self {
        self.conn_id = pair as u64;
        self.source = Source::Stdio as u32;
        self
    }

    /// Bytes seen at a TLS library function; the socket fd is not known.
    #[inline(always)]
    pub fn tls(
        conn_id: u64,
        buf: u64,
        len: u64,
        timestamp_ns: u64,
        pid_tgid: u64,
        function: TlsFunction,
        direction: Direction,
    ) -> Self {
        Transfer {
            conn_id,
            buf,
            len,
            timestamp_ns,
            pid_tgid,
            stream_offset: 0,
            function: function as u32,
            direction: direction as u32,
            source: Source::Tls as u32,
            fd: -1,
            cookie: 0,
        }
    }
}

/// Copies `transfer.len` bytes at `transfer.buf` to userspace, whole, in chunk records.
#[inline(always)]
pub fn emit_buffer(transfer: &mut Transfer) {
    emit_buffer_capped(transfer, bounded::CHUNKS_PER_CALL);
    report::call_ends();
}

/// [`emit_buffer`] for one piece of a vectored call: in the bounded build each piece gets fewer
/// records, so that every iovec's copy loop together stays within the verifier's budget. The
/// caller ends the whole call (`report::call_ends`) after its last piece.
#[inline(always)]
pub fn emit_iovec(transfer: &mut Transfer) {
    emit_buffer_capped(transfer, bounded::CHUNKS_PER_IOVEC);
}

/// `if loops > K { emit_chunk(K, ctx) }` for each constant K given.
macro_rules! copies_while_below {
    ($loops:expr, $ctx:expr, $($k:literal)*) => {
        $(
            if $loops > $k {
                unsafe { emit_chunk($k, $ctx) };
            }
        )*
    };
}
// The copies unrolled in `emit_buffer_capped` stop at 16.
const _: () = assert!(bounded::CHUNKS_PER_CALL == 16);

/// `bounded_chunks`: the bounded build's limit (a constant, so the verifier knows the range).
#[inline(always)]
fn emit_buffer_capped(transfer: &mut Transfer, bounded_chunks: u32) {
    let key = StreamKey {
        conn_id: transfer.conn_id,
        tgid: (transfer.pid_tgid >> 32) as u32,
        direction: transfer.direction | (transfer.source << 8),
    };
    // The byte count advances by what the call transferred even when records are dropped below:
    // that is what lets userspace see the loss.
    transfer.stream_offset = match STREAM_OFFSETS.get_ptr_mut(key) {
        Some(offset) => unsafe {
            let before = *offset;
            *offset = before + transfer.len;
            before
        },
        None => {
            let _ = STREAM_OFFSETS.insert(key, transfer.len, BPF_ANY as u64);
            0
        }
    };
    let max_chunks = match crate::LOOPS {
        Loops::Helper => MAX_CHUNKS_PER_CALL,
        Loops::Bounded => bounded_chunks,
    };
    let chunks = transfer.len.div_ceil(CHUNK_SIZE as u64);
    let loops = if chunks > max_chunks as u64 {
        let kept = max_chunks as u64 * CHUNK_SIZE as u64;
        count(counter::TRUNCATED_BYTES, transfer.len - kept);
        report::note_cut(transfer.pid_tgid, transfer.conn_id, transfer.len - kept);
        max_chunks
    } else {
        chunks as u32
    };
    match crate::LOOPS {
        // bpf_loop (5.17+) verifies the callback once instead of unrolling every copy.
        Loops::Helper => unsafe {
            bpf_loop(
                loops,
                emit_chunk as *mut c_void,
                transfer as *mut Transfer as *mut c_void,
                0,
            );
        },
        Loops::Bounded => {
            let ctx = transfer as *mut Transfer as *mut c_void;
            // Unrolled by hand, each copy behind `loops > K` with K a constant: a test against an
            // immediate is one every verifier uses to narrow `loops` and prune the copies that
            // cannot run. A loop leaves the compiler free to exit on `index == loops` (a loop
            // 5.10 cannot bound) or to compare two registers (which 5.10 does not narrow, so it
            // walks every dead copy and runs out of instructions).
            copies_while_below!(loops, ctx, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        }
    }
}

/// Writes one record: `header` followed by `len` (at most `CHUNK_SIZE`) bytes of user memory at
/// `src`. Losses are counted, never reported as errors: there is no one to report them to.
#[inline(always)]
pub fn emit_record(mut header: RecordHeader, src: u64, len: usize) {
    let Some(record) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let record = unsafe { &mut *record };
    // Bound the length in a form the verifier tracks through to both helpers. `black_box` keeps
    // the compiler from dropping the mask and test as redundant (it can prove `len <= CHUNK_SIZE`
    // from the caller's `min`): older verifiers (5.10) cannot follow that `min`, taken between two
    // registers, and refuse the copy as possibly negative.
    let len = core::hint::black_box(len) & (2 * CHUNK_SIZE - 1);
    if len > CHUNK_SIZE {
        return;
    }
    header.chunk_len = len as u32;
    record.header = header;
    let dst = record.data.as_mut_ptr() as *mut c_void;
    let read = unsafe { bpf_probe_read_user(dst, len as u32, src as *const c_void) };
    if read != 0 {
        count(counter::READ_FAILED_BYTES, len as u64);
        report::note_unreadable(pid_tgid(&header), header.conn_id, len as u64, read);
        return;
    }
    let size = (RECORD_HEADER_SIZE + len) as u64;
    let ret = unsafe {
        bpf_ringbuf_output(
            &EVENTS as *const _ as *mut c_void,
            record as *mut _ as *mut c_void,
            size,
            0,
        )
    };
    if ret < 0 {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        count(counter::RINGBUF_FULL_BYTES, len as u64);
        report::note_ring_full(pid_tgid(&header), header.conn_id);
    }
}

/// The thread a record's header names, as `bpf_get_current_pid_tgid` gives it.
#[inline(always)]
fn pid_tgid(header: &RecordHeader) -> u64 {
    ((header.pid as u64) << 32) | header.tid as u64
}

/// bpf_loop callback: copy chunk `index` of the transfer. Returns 0 to go on, 1 to stop.
unsafe extern "C" fn emit_chunk(index: u32, ctx: *mut c_void) -> i64 {
    let transfer = unsafe { &*(ctx as *const Transfer) };
    let offset = index as u64 * CHUNK_SIZE as u64;
    if offset >= transfer.len {
        return 1;
    }
    let remaining = transfer.len - offset;
    let len = if remaining < CHUNK_SIZE as u64 {
        remaining as usize
    } else {
        CHUNK_SIZE
    };
    let header = RecordHeader {
        kind: RecordKind::Data as u32,
        direction: transfer.direction,
        function: transfer.function,
        pid: (transfer.pid_tgid >> 32) as u32,
        tid: transfer.pid_tgid as u32,
        chunk_len: len as u32,
        timestamp_ns: transfer.timestamp_ns,
        conn_id: transfer.conn_id,
        call_len: transfer.len,
        offset,
        stream_offset: transfer.stream_offset,
        source: transfer.source,
        fd: transfer.fd,
        cookie: transfer.cookie,
        _pad: 0,
    };
    emit_record(header, transfer.buf + offset, len);
    0
}
