//! The `#[repr(C)]` records the kernel programs write into the ring buffer and the indices of
//! the counters they keep. Both sides compile this crate, so a layout change cannot be made on
//! one side only.
#![no_std]

/// Bytes of payload copied per ring-buffer record. Larger buffers are split into several
/// records of this size; 16 KiB keeps the per-CPU scratch value under the 32 KiB per-CPU
/// allocation limit while needing only 64 records per MiB.
pub const CHUNK_SIZE: usize = 16 * 1024;

/// Upper bound on records per TLS call: `CHUNK_SIZE * MAX_CHUNKS_PER_CALL` bytes (4 MiB) of a
/// single `SSL_write`/`SSL_read` are captured; the rest is counted as truncated.
pub const MAX_CHUNKS_PER_CALL: u32 = 256;

/// What a ring-buffer record describes.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A chunk of plaintext that crossed a TLS library call.
    TlsData = 1,
    /// A thread group (process) ended; userspace flushes and forgets its state.
    ProcessExit = 2,
}

/// Which way the bytes went, seen from the traced process.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Written by the process (`SSL_write*`).
    Egress = 0,
    /// Read by the process (`SSL_read*`).
    Ingress = 1,
}

/// The library function whose call produced a record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFunction {
    SslWrite = 0,
    SslWriteEx = 1,
    SslRead = 2,
    SslReadEx = 3,
}

/// Header of every ring-buffer record; `chunk_len` payload bytes follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// A [`RecordKind`] value.
    pub kind: u32,
    /// A [`Direction`] value.
    pub direction: u32,
    /// A [`TlsFunction`] value.
    pub function: u32,
    /// Thread group id: the PID a user sees (in the root PID namespace).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub chunk_len: u32,
    /// CLOCK_MONOTONIC nanoseconds: call entry for writes (the bytes left then), call return for
    /// reads (the bytes arrived then).
    pub timestamp_ns: u64,
    /// Connection identity for now: the `SSL*` pointer.
    pub conn_id: u64,
    /// Bytes the call transferred in all (its return value).
    pub call_len: u64,
    /// Offset of this chunk within the call's bytes.
    pub offset: u64,
}

pub const RECORD_HEADER_SIZE: usize = core::mem::size_of::<RecordHeader>();

/// Indices into the per-CPU `COUNTERS` array map.
pub mod counter {
    /// Records the ring buffer had no room for.
    pub const RINGBUF_FULL_RECORDS: u32 = 0;
    /// Payload bytes lost because the ring buffer was full.
    pub const RINGBUF_FULL_BYTES: u32 = 1;
    /// Payload bytes that could not be read from user memory.
    pub const READ_FAILED_BYTES: u32 = 2;
    /// Payload bytes past `MAX_CHUNKS_PER_CALL * CHUNK_SIZE` of one call.
    pub const TRUNCATED_BYTES: u32 = 3;
    /// Returns whose entry was not seen (attached mid-call or the entry map was full).
    pub const MISSING_ENTRY: u32 = 4;
    /// TLS calls captured.
    pub const CALLS: u32 = 5;
    pub const COUNT: u32 = 6;
}

#[cfg(feature = "user")]
mod user {
    // Safety: plain-old-data, `#[repr(C)]`, no padding-sensitive invariants.
    unsafe impl aya::Pod for super::RecordHeader {}
}
