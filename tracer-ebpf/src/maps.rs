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

/// A TLS call between its entry and its return: the buffer is only complete (reads) and the
/// transferred length only known (both directions) at return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    pub ssl: u64,
    pub buf: u64,
    /// `size_t *` out-parameter of the `_ex` variants; 0 for the plain ones.
    pub len_out: u64,
    pub timestamp_ns: u64,
    pub function: u32,
    pub _pad: u32,
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
