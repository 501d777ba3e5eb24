//! HTTP/2 (frames and HPACK) over arbitrary bytes: the client sends the connection preface,
//! then the fuzzer scripts reads and gaps in both directions as for HTTP/1.1.
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

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    tracker.push(&StreamEvent::Data { conn, direction: Direction::Egress, timestamp_ns: 0, bytes: Bytes::from_static(PREFACE) }, &mut out);
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
