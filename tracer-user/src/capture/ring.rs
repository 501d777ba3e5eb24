//! The kernel ring buffer's consumer side, with its data pages mapped once.
//!
//! aya's `RingBuf`, like libbpf, maps the data pages twice in a row so that a record wrapping
//! around the end reads as one slice. The kernel backs both mappings with the same pages, but
//! RSS counts every mapping: the default 32 MiB ring showed as 64 MiB of the daemon's RSS while
//! holding 32 MiB. Here the data is mapped once and the rare record that wraps around is copied
//! into a scratch buffer. The kernel accepts a read-only mapping of any length up to the double
//! one (`ringbuf_map_mmap` leaves the length to `remap_vmalloc_range`, on every kernel with ring
//! buffers), and the protocol is the one kernel/bpf/ringbuf.c documents: an 8-byte header per
//! record (length, busy and discard bits), records 8-byte aligned, the consumer position
//! published after each record.

use std::{
    os::fd::{AsFd as _, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::MapData;
use thiserror::Error;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: usize = 8;

#[derive(Debug, Error)]
pub enum RingError {
    #[error("the ring buffer's size {0} is not a power of two of at least a page")]
    Size(u32),
    #[error("mapping the ring buffer: {0}")]
    Map(#[source] std::io::Error),
}

/// The ring buffer map, its consumer page mapped read-write and its producer page and data
/// pages mapped read-only, once.
pub struct RingReader {
    map: MapData,
    _consumer_page: Mapping,
    _producer_pages: Mapping,
    memory: RingMemory,
}

// Safety: the mappings are owned by the reader and only read (the consumer position written)
// through `&mut self`; moving them to another thread changes nothing.
unsafe impl Send for RingReader {}

impl RingReader {
    /// Maps the ring buffer `map` (a `BPF_MAP_TYPE_RINGBUF`).
    pub fn new(map: MapData) -> Result<Self, RingError> {
        let size = map
            .info()
            .map_err(|e| RingError::Map(std::io::Error::other(e)))?;
        let size = size.max_entries();
        let page = page_size();
        let data_bytes = usize::try_from(size).map_err(|_| RingError::Size(size))?;
        if !size.is_power_of_two() || data_bytes < page {
            return Err(RingError::Size(size));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer_page = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer_pages = Mapping::new(fd, page + data_bytes, libc::PROT_READ, page)?;
        let memory = RingMemory {
            consumer: consumer_page.ptr.cast(),
            producer: producer_pages.ptr.cast(),
            // Safety: the producer mapping is a page and then `data_bytes` bytes long.
            data: unsafe { producer_pages.ptr.add(page) },
            size: data_bytes,
            // The starting positions (non-zero for a ring used before).
            consumer_pos: 0,
            producer_pos: 0,
            needs_wakeup: false,
            scratch: Vec::new(),
        };
        let mut reader = RingReader {
            map,
            _consumer_page: consumer_page,
            _producer_pages: producer_pages,
            memory,
        };
        reader.memory.consumer_pos = reader.memory.load_consumer();
        reader.memory.producer_pos = reader.memory.load_producer();
        Ok(reader)
    }

    /// Hands every committed record to `each`, in order, each record's space given back to
    /// the kernel once `each` returns. Returns when the ring is empty or its next record is
    /// still being written.
    pub fn drain(&mut self, each: impl FnMut(&[u8])) {
        self.memory.drain(each);
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

/// Where the ring's positions and data are, and the consumer's state. Raw pointers: the kernel
/// writes the producer position and records concurrently, so no Rust reference may span them.
struct RingMemory {
    consumer: NonNull<AtomicUsize>,
    producer: NonNull<AtomicUsize>,
    data: NonNull<u8>,
    /// Data bytes: a power of two.
    size: usize,
    consumer_pos: usize,
    /// The producer position last read: no need to read it again while records remain.
    producer_pos: usize,
    /// A record was consumed since the last full fence: the producer may be waiting for news.
    needs_wakeup: bool,
    /// A record that wraps around the end, put together.
    scratch: Vec<u8>,
}

impl RingMemory {
    fn load_consumer(&self) -> usize {
        // Safety: a page-aligned word of the consumer page, mapped while `self` lives.
        unsafe { self.consumer.as_ref() }.load(Ordering::Acquire)
    }

    /// The kernel publishes the producer position with a release store after the record
    /// headers it covers.
    fn load_producer(&self) -> usize {
        // Safety: as above, of the producer page.
        unsafe { self.producer.as_ref() }.load(Ordering::Acquire)
    }

    fn drain(&mut self, mut each: impl FnMut(&[u8])) {
        let mask = self.size - 1;
        loop {
            if self.consumer_pos == self.producer_pos {
                if self.needs_wakeup {
                    // Either the load below sees a new record, or its producer sees our
                    // position and sends a wake-up (the kernel's side of this pairing).
                    fence(Ordering::SeqCst);
                    self.needs_wakeup = false;
                }
                self.producer_pos = self.load_producer();
                if self.consumer_pos == self.producer_pos {
                    return;
                }
            }
            let offset = self.consumer_pos & mask;
            // Safety: records are 8-byte aligned and the data area a multiple of a page, so a
            // header lies whole inside it; the kernel commits it with a full barrier (xchg).
            let header = unsafe { &*self.data.as_ptr().add(offset).cast::<AtomicU32>() }
                .load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                if !self.needs_wakeup {
                    return;
                }
                fence(Ordering::SeqCst);
                self.needs_wakeup = false;
                continue;
            }
            // The kernel never reserves more than the data area less a header; a length past
            // that would read outside the mapping, so it ends the record's bytes at the area.
            let len = ((header & !(BUSY_BIT | DISCARD_BIT)) as usize).min(self.size - HEADER_BYTES);
            if header & DISCARD_BIT == 0 {
                let start = (offset + HEADER_BYTES) & mask;
                let first = len.min(self.size - start);
                // Safety: `start + first <= size`, and `len - first < size`: both within the
                // data mapping; committed records are not written until the consumer passes.
                let head =
                    unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(start), first) };
                if first == len {
                    each(head);
                } else {
                    let tail =
                        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), len - first) };
                    let mut joined = std::mem::take(&mut self.scratch);
                    joined.clear();
                    joined.extend_from_slice(head);
                    joined.extend_from_slice(tail);
                    each(&joined);
                    self.scratch = joined;
                }
            }
            self.consumer_pos = self
                .consumer_pos
                .wrapping_add((HEADER_BYTES + len).next_multiple_of(8));
            // Publish after reading: the kernel reuses the space once it sees this (acquire).
            // Safety: as in `load_consumer`; the consumer page is mapped writable.
            unsafe { self.consumer.as_ref() }.store(self.consumer_pos, Ordering::Release);
            self.needs_wakeup = true;
        }
    }
}

/// One `mmap` of the ring buffer's fd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, protection: i32, offset: usize) -> Result<Self, RingError> {
        let offset =
            libc::off_t::try_from(offset).map_err(|e| RingError::Map(std::io::Error::other(e)))?;
        // Safety: a fresh shared mapping of the map's fd; nothing else refers to its range.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                protection,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::Map(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| RingError::Map(std::io::Error::other("mmap returned null")))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Safety: the range this Mapping mapped, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // Safety: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

#[cfg(test)]
mod tests;
