use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tracer_common::{Direction, Source};

use super::*;
use crate::capture::{
    queue::capture_queue,
    validate::{InferredHook, Validator},
    DataChunk,
};

/// The reader's state after the ring: the stages `hand_on` feeds, with room to spare.
struct Reader {
    events: CaptureQueue,
    queued: crate::capture::queue::CaptureQueueReceiver,
    execs: mpsc::Sender<ExecSeen>,
    exec_notices: mpsc::Receiver<ExecSeen>,
    health: Health,
    validator: Mutex<Validator>,
    records: TlsRecords,
}

impl Reader {
    fn new(exec_room: usize) -> Self {
        let (events, queued) = capture_queue(1024, 1 << 20);
        let (execs, exec_notices) = mpsc::channel(exec_room);
        Reader {
            events,
            queued,
            execs,
            exec_notices,
            health: Health::default(),
            validator: Mutex::new(Validator::default()),
            records: TlsRecords::new(),
        }
    }

    fn hand_on(&mut self, event: CaptureEvent) {
        let mut assembled = Vec::new();
        hand_on(
            event,
            &self.events,
            &self.execs,
            &self.health,
            &self.validator,
            &mut self.records,
            &mut assembled,
        );
    }
}

fn exec(pid: u32) -> CaptureEvent {
    CaptureEvent::Exec {
        pid,
        filename: "/usr/bin/true".into(),
        timestamp_ns: 1,
        cgroup_id: 0,
    }
}

fn chunk(cookie: u32, data: &'static [u8]) -> CaptureEvent {
    CaptureEvent::Data(DataChunk {
        pid: 1,
        source: Source::Tls,
        conn_id: 7,
        direction: Direction::Egress,
        timestamp_ns: 0,
        call_len: data.len() as u64,
        offset: 0,
        stream_offset: 0,
        cookie,
        data: Bytes::from_static(data),
    })
}

fn hook() -> InferredHook {
    InferredHook {
        binary: "/bin/x".into(),
        function: "ssl_write_internal".into(),
    }
}

#[test]
fn exec_notices_past_the_attachers_queue_are_counted() {
    let mut reader = Reader::new(1);
    reader.hand_on(exec(10));
    reader.hand_on(exec(11));
    reader.hand_on(exec(12));
    assert_eq!(reader.health.exec_notices_dropped.load(Relaxed), 2);
    assert_eq!(reader.exec_notices.try_recv().map(|e| e.pid).ok(), Some(10));
}

#[test]
fn a_rejected_hooks_records_are_counted_as_dropped() {
    let mut reader = Reader::new(4);
    let cookie = reader.validator.lock().unwrap().register(hook());
    reader.hand_on(chunk(cookie, b"\x17\x03\x03\x00\x45\x00\x00\x00\x00\x00"));
    reader.hand_on(chunk(cookie, b"POST / HTTP/1.1\r\n"));
    let health = &reader.health;
    assert_eq!(health.inferred_hook_dropped_rejected.load(Relaxed), 2);
    assert_eq!(health.inferred_hooks_rejected.load(Relaxed), 1);
    assert_eq!(health.inferred_hook_dropped_held.load(Relaxed), 0);
}

#[test]
fn records_an_unusable_validator_cannot_judge_are_counted() {
    let mut reader = Reader::new(4);
    let cookie = reader.validator.lock().unwrap().register(hook());
    // A panic while holding the lock poisons it.
    std::thread::scope(|s| {
        let validator = &reader.validator;
        let _ = s
            .spawn(move || {
                let _held = validator.lock().unwrap();
                panic!("poisoning the validator's lock");
            })
            .join();
    });
    assert!(reader.validator.is_poisoned());
    reader.hand_on(chunk(cookie, b"POST / HTTP/1.1\r\n"));
    // Records without a cookie are not judged and pass.
    reader.hand_on(chunk(0, b"POST / HTTP/1.1\r\n"));
    let health = &reader.health;
    assert_eq!(health.inferred_hook_dropped_unavailable.load(Relaxed), 1);
    assert_eq!(health.pipeline_queue_full.load(Relaxed), 0);
    assert_eq!(
        reader.queued.held_bytes(),
        crate::capture::queue::charge(&chunk(0, b"POST / HTTP/1.1\r\n"))
    );
}
