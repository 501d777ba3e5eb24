//! The queue from the ring-buffer reader to the pipeline, bounded in bytes as well as in records:
//! 64 Ki records of up to 16 KiB each would be 1 GiB, far past what a node agent may hold. A
//! record that would take the queue past its byte budget is dropped at the reader and counted
//! (`pipeline_queue_full`), like one that finds it full; the streams see the gap.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

use tokio::sync::mpsc;

use super::CaptureEvent;
use crate::telemetry::health::Health;

/// What a queued record is charged: its payload and the event around it.
pub fn charge(event: &CaptureEvent) -> u64 {
    const EVENT_OVERHEAD: u64 = 128;
    let payload = match event {
        CaptureEvent::Data(chunk) => chunk.data.len() as u64,
        _ => 0,
    };
    payload.saturating_add(EVENT_OVERHEAD)
}

/// The reader's end.
#[derive(Clone)]
pub struct CaptureQueue {
    tx: mpsc::Sender<CaptureEvent>,
    held: Arc<AtomicU64>,
    budget_bytes: u64,
}

/// The pipeline's end: release each record's charge once it is taken off the queue.
pub struct CaptureQueueReceiver {
    rx: mpsc::Receiver<CaptureEvent>,
    held: Arc<AtomicU64>,
}

/// A queue of at most `records` records and `budget_bytes` bytes.
pub fn capture_queue(records: usize, budget_bytes: u64) -> (CaptureQueue, CaptureQueueReceiver) {
    let (tx, rx) = mpsc::channel(records.max(1));
    let held = Arc::new(AtomicU64::new(0));
    (
        CaptureQueue {
            tx,
            held: held.clone(),
            budget_bytes,
        },
        CaptureQueueReceiver { rx, held },
    )
}

impl CaptureQueue {
    /// Queues `event` unless either bound is reached; a refusal is counted.
    pub fn offer(&self, event: CaptureEvent, health: &Health) -> bool {
        let charge = charge(&event);
        let held = self.held.fetch_add(charge, Relaxed).saturating_add(charge);
        let sent = held <= self.budget_bytes && self.tx.try_send(event).is_ok();
        if !sent {
            self.held.fetch_sub(charge, Relaxed);
            Health::add(&health.pipeline_queue_full, 1);
        }
        sent
    }
}

impl CaptureQueueReceiver {
    pub async fn recv(&mut self) -> Option<CaptureEvent> {
        let event = self.rx.recv().await?;
        self.held.fetch_sub(charge(&event), Relaxed);
        Some(event)
    }

    /// Bytes charged to the records waiting now.
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::capture::DataChunk;

    fn data(len: usize) -> CaptureEvent {
        CaptureEvent::Data(DataChunk {
            pid: 1,
            source: tracer_common::Source::Socket,
            conn_id: 3,
            direction: tracer_common::Direction::Egress,
            timestamp_ns: 0,
            call_len: len as u64,
            offset: 0,
            stream_offset: 0,
            cookie: 0,
            data: Bytes::from(vec![b'x'; len]),
        })
    }

    fn full(health: &Health) -> u64 {
        health.pipeline_queue_full.load(Relaxed)
    }

    #[tokio::test]
    async fn records_past_the_byte_budget_are_dropped_and_counted() {
        let health = Health::default();
        // Room for two 16 KiB records, though the channel takes a thousand.
        let (queue, mut rx) = capture_queue(1000, 2 * (16 * 1024 + 128));
        assert!(queue.offer(data(16 * 1024), &health));
        assert!(queue.offer(data(16 * 1024), &health));
        assert!(!queue.offer(data(16 * 1024), &health), "past the budget");
        assert!(!queue.offer(data(0), &health), "still full");
        assert_eq!(full(&health), 2);
        assert_eq!(rx.held_bytes(), 2 * (16 * 1024 + 128));
        // The pipeline takes one: room for one more.
        assert!(rx.recv().await.is_some());
        assert!(queue.offer(data(16 * 1024), &health));
        while rx.held_bytes() > 0 {
            rx.recv().await;
        }
        assert_eq!(rx.held_bytes(), 0, "every charge released");
    }

    #[tokio::test]
    async fn a_full_channel_refuses_within_the_budget_too() {
        let health = Health::default();
        let (queue, _rx) = capture_queue(1, u64::MAX);
        assert!(queue.offer(data(1), &health));
        assert!(!queue.offer(data(1), &health));
        assert_eq!(full(&health), 1);
    }
}
