//! HTTP/1.1 tracking over arbitrary bytes: the input is a script of reads (direction, length)
//! followed by the bytes, so the fuzzer controls both content and how it is cut. Any input must
//! be handled without a panic, and every exchange it yields must come out of genai cleanly.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tracer_user::{
    genai::{recognise, GenAiConfig},
    health::Health,
    protocols::HttpTracker,
    streams::{ConnKey, Direction, Source, StreamEvent},
};

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let count = (count % 16) as usize;
    if rest.len() < count * 2 {
        return;
    }
    let (script, mut bytes) = rest.split_at(count * 2);
    let conn = ConnKey { pid: 1, source: Source::Tls, conn_id: 1 };
    let mut tracker = HttpTracker::new(1 << 20, Arc::new(Health::default()));
    let mut out = Vec::new();
    for (i, step) in script.chunks(2).enumerate() {
        let direction = if step[0] & 1 == 0 { Direction::Egress } else { Direction::Ingress };
        let len = (step[1] as usize).min(bytes.len());
        let (piece, tail) = bytes.split_at(len);
        bytes = tail;
        let event = if step[0] & 0x80 != 0 {
            StreamEvent::Gap { conn, direction, timestamp_ns: i as u64, len: step[1] as u64 }
        } else {
            StreamEvent::Data { conn, direction, timestamp_ns: i as u64, bytes: Bytes::copy_from_slice(piece) }
        };
        tracker.push(&event, &mut out);
    }
    tracker.push(&StreamEvent::Data { conn, direction: Direction::Ingress, timestamp_ns: 99, bytes: Bytes::copy_from_slice(bytes) }, &mut out);
    tracker.close_all(&mut out);
    for exchange in &out {
        let _ = recognise(exchange, &GenAiConfig { capture_content: true });
    }
});
