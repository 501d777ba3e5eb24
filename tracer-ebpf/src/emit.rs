//! Copying a user buffer, whole, into the ring buffer as a sequence of variable-sized records.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_user, bpf_ringbuf_output};
use tracer_common::{
    counter, RecordHeader, RecordKind, CHUNK_SIZE, MAX_CHUNKS_PER_CALL, RECORD_HEADER_SIZE,
};

use crate::maps::{count, EVENTS, SCRATCH};

/// One finished TLS call's bytes, as the chunk callback needs them.
#[repr(C)]
pub struct Transfer {
    pub conn_id: u64,
    pub buf: u64,
    pub len: u64,
    pub timestamp_ns: u64,
    pub pid_tgid: u64,
    pub function: u32,
    pub direction: u32,
}

#[inline(always)]
pub fn emit_buffer(transfer: &Transfer) {
    let chunks = transfer.len.div_ceil(CHUNK_SIZE as u64);
    let loops = if chunks > MAX_CHUNKS_PER_CALL as u64 {
        let kept = MAX_CHUNKS_PER_CALL as u64 * CHUNK_SIZE as u64;
        count(counter::TRUNCATED_BYTES, transfer.len - kept);
        MAX_CHUNKS_PER_CALL
    } else {
        chunks as u32
    };
    // bpf_loop (5.17+) verifies the callback once instead of unrolling up to 256 copies.
    unsafe {
        bpf_loop(
            loops,
            emit_chunk as *mut c_void,
            transfer as *const Transfer as *mut c_void,
            0,
        );
    }
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
    let Some(record) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let record = unsafe { &mut *record };
    record.header = RecordHeader {
        kind: RecordKind::TlsData as u32,
        direction: transfer.direction,
        function: transfer.function,
        pid: (transfer.pid_tgid >> 32) as u32,
        tid: transfer.pid_tgid as u32,
        chunk_len: len as u32,
        timestamp_ns: transfer.timestamp_ns,
        conn_id: transfer.conn_id,
        call_len: transfer.len,
        offset,
    };
    // Bound the length in a form the verifier tracks through to both helpers.
    let len = len & (2 * CHUNK_SIZE - 1);
    if len > CHUNK_SIZE {
        return 1;
    }
    let src = (transfer.buf + offset) as *const u8;
    let dst = record.data.as_mut_ptr() as *mut c_void;
    if unsafe { bpf_probe_read_user(dst, len as u32, src as *const c_void) } != 0 {
        count(counter::READ_FAILED_BYTES, len as u64);
        return 0;
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
    }
    0
}
