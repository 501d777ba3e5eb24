//! The consumer protocol on a ring laid out in ordinary memory as the kernel lays it out (the
//! kernel's own ring is read by every e2e test; these reach the wrap-around, discard and busy
//! cases on purpose).

use super::*;

/// A ring buffer's positions and data, written the way `bpf_ringbuf_commit` leaves them.
struct KernelSide {
    consumer: Box<AtomicUsize>,
    producer: Box<AtomicUsize>,
    /// u64s: the data area is 8-byte aligned, as the kernel's pages are.
    data: Vec<u64>,
    size: usize,
}

impl KernelSide {
    fn new(size: usize, start: usize) -> Self {
        KernelSide {
            consumer: Box::new(AtomicUsize::new(start)),
            producer: Box::new(AtomicUsize::new(start)),
            data: vec![0; size / 8],
            size,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        let len = self.size;
        // Safety: the Vec<u64> owns `size` bytes.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast::<u8>(), len) }
    }

    /// Reserves and fills a record with `flags` (busy, discard) on its header; returns the
    /// header's offset. The producer position moves past it, as a reservation does.
    fn write(&mut self, payload: &[u8], flags: u32) -> usize {
        let mask = self.size - 1;
        // Positions may wrap around the word (the laps test starts them near usize::MAX).
        let at = self.producer.load(Ordering::Relaxed);
        let free = self.size - at.wrapping_sub(self.consumer.load(Ordering::Relaxed));
        let total = (HEADER_BYTES + payload.len()).next_multiple_of(8);
        assert!(total <= free, "the test overfilled its ring");
        let offset = at & mask;
        let header = payload.len() as u32 | flags;
        self.bytes()[offset..offset + 4].copy_from_slice(&header.to_le_bytes());
        for (i, byte) in payload.iter().enumerate() {
            let place = (offset + HEADER_BYTES + i) & mask;
            self.bytes()[place] = *byte;
        }
        self.producer
            .store(at.wrapping_add(total), Ordering::Release);
        offset
    }

    /// Clears the busy bit of the record at `offset` (the commit).
    fn commit(&mut self, offset: usize) {
        let header = &mut self.bytes()[offset..offset + 4];
        let value = u32::from_le_bytes(header.try_into().unwrap()) & !BUSY_BIT;
        header.copy_from_slice(&value.to_le_bytes());
    }

    fn reader(&mut self) -> RingMemory {
        RingMemory {
            consumer: NonNull::from(&*self.consumer),
            producer: NonNull::from(&*self.producer),
            data: NonNull::new(self.data.as_mut_ptr().cast::<u8>()).unwrap(),
            size: self.size,
            consumer_pos: self.consumer.load(Ordering::Relaxed),
            producer_pos: self.producer.load(Ordering::Relaxed),
            needs_wakeup: false,
            scratch: Vec::new(),
        }
    }
}

fn drained(reader: &mut RingMemory) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    reader.drain(|record| records.push(record.to_vec()));
    records
}

#[test]
fn records_come_in_order_and_their_space_is_given_back() {
    let mut kernel = KernelSide::new(4096, 0);
    kernel.write(b"first", 0);
    kernel.write(b"second record", 0);
    let mut reader = kernel.reader();
    assert_eq!(
        drained(&mut reader),
        [b"first".to_vec(), b"second record".to_vec()]
    );
    // 8 + 5 -> 16, 8 + 13 -> 24.
    assert_eq!(kernel.consumer.load(Ordering::Relaxed), 40);
    assert!(drained(&mut reader).is_empty());
}

#[test]
fn a_record_wrapping_around_the_end_comes_whole() {
    // Start 16 bytes before the end: the header fits, the payload runs over into the start.
    let mut kernel = KernelSide::new(4096, 3 * 4096 - 16);
    let payload: Vec<u8> = (0..200u8).collect();
    kernel.write(&payload, 0);
    kernel.write(b"after", 0);
    let mut reader = kernel.reader();
    assert_eq!(drained(&mut reader), [payload, b"after".to_vec()]);
    assert_eq!(
        kernel.consumer.load(Ordering::Relaxed),
        kernel.producer.load(Ordering::Relaxed)
    );
}

#[test]
fn a_header_at_the_very_end_has_its_payload_at_the_start() {
    let mut kernel = KernelSide::new(4096, 4096 - 8);
    kernel.write(b"at the start", 0);
    let mut reader = kernel.reader();
    assert_eq!(drained(&mut reader), [b"at the start".to_vec()]);
}

#[test]
fn discarded_records_are_skipped_and_busy_ones_wait_for_their_commit() {
    let mut kernel = KernelSide::new(4096, 0);
    kernel.write(b"dropped by its program", DISCARD_BIT);
    kernel.write(b"kept", 0);
    let busy = kernel.write(b"still being written", BUSY_BIT);
    kernel.write(b"behind it", 0);
    let mut reader = kernel.reader();
    assert_eq!(drained(&mut reader), [b"kept".to_vec()]);
    assert_eq!(drained(&mut reader), Vec::<Vec<u8>>::new(), "still busy");
    kernel.commit(busy);
    assert_eq!(
        drained(&mut reader),
        [b"still being written".to_vec(), b"behind it".to_vec()]
    );
    assert_eq!(
        kernel.consumer.load(Ordering::Relaxed),
        kernel.producer.load(Ordering::Relaxed)
    );
}

/// Many laps of records of every size up to a quarter of the ring: each comes out byte for
/// byte, wrapped or not, and the consumer ends where the producer is.
#[test]
fn many_laps_of_records_of_every_size() {
    let mut kernel = KernelSide::new(4096, usize::MAX - 10_000 * 8 + 1);
    let mut reader = kernel.reader();
    let mut written = Vec::new();
    let mut read = Vec::new();
    for i in 0..5000usize {
        let len = (i * 37) % 1024;
        let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        let total = (HEADER_BYTES + len).next_multiple_of(8);
        let used = kernel
            .producer
            .load(Ordering::Relaxed)
            .wrapping_sub(kernel.consumer.load(Ordering::Relaxed));
        if used + total > kernel.size {
            reader.drain(|r| read.push(r.to_vec()));
        }
        kernel.write(&payload, 0);
        written.push(payload);
    }
    reader.drain(|r| read.push(r.to_vec()));
    assert_eq!(read.len(), written.len());
    assert!(read == written, "a record came out changed");
    assert_eq!(
        kernel.consumer.load(Ordering::Relaxed),
        kernel.producer.load(Ordering::Relaxed)
    );
}
