//! HTTP/2 (frames and HPACK) over arbitrary bytes, the fuzzer scripting reads and gaps in both
//! directions as for HTTP/1.1, on a connection that starts as the first byte's high bits say:
//! 0. the client sends the preface (HTTP/2 from its start);
//! 1. nothing first: the tracer joined the connection after its preface, and the script's
//!    first reads must be found to be frames;
//! 2. two whole frames each way first, so the joined path is taken at once and the script
//!    plays on a connection whose HPACK tables are unknown;
//! 3. an HTTP/1.1 request asking `Upgrade: h2c`, its 101, then the client's preface.
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
const UPGRADE_REQUEST: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: h\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
const UPGRADE_RESPONSE: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n";
/// A SETTINGS acknowledgement and a WINDOW_UPDATE: two whole frames.
const TWO_FRAMES: &[u8] = &[
    0, 0, 0, 4, 1, 0, 0, 0, 0, //
    0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0,
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let count = (first & 0x0f) as usize;
    let mode = (first >> 4) & 3;
    if rest.len() < count * 2 {
        return;
    }
    let (script, mut bytes) = rest.split_at(count * 2);
    let conn = ConnKey { pid: 1, source: Source::Tls, conn_id: 1 };
    let mut tracker = HttpTracker::new(1 << 20, Arc::new(Health::default()));
    let mut out = Vec::new();
    let mut send = |tracker: &mut HttpTracker, out: &mut Vec<_>, direction, piece: &[u8]| {
        let event = StreamEvent::Data {
            conn,
            direction,
            timestamp_ns: 0,
            bytes: Bytes::copy_from_slice(piece),
        };
        tracker.push(&event, out);
    };
    match mode {
        0 => send(&mut tracker, &mut out, Direction::Egress, PREFACE),
        1 => {}
        2 => {
            send(&mut tracker, &mut out, Direction::Egress, TWO_FRAMES);
            send(&mut tracker, &mut out, Direction::Ingress, TWO_FRAMES);
        }
        _ => {
            send(&mut tracker, &mut out, Direction::Egress, UPGRADE_REQUEST);
            send(&mut tracker, &mut out, Direction::Ingress, UPGRADE_RESPONSE);
            send(&mut tracker, &mut out, Direction::Egress, PREFACE);
        }
    }
    for (i, step) in script.chunks(2).enumerate() {
        let direction = if step[0] & 1 == 0 { Direction::Egress } else { Direction::Ingress };
        let len = (step[1] as usize).min(bytes.len());
        let (piece, tail) = bytes.split_at(len);
        bytes = tail;
        let event = if step[0] & 0x80 != 0 {
            StreamEvent::Gap { conn, direction, timestamp_ns: i as u64, len: step[1] as u64 }
        } else {
            StreamEvent::Data {
                conn,
                direction,
                timestamp_ns: i as u64,
                bytes: Bytes::copy_from_slice(piece),
            }
        };
        tracker.push(&event, &mut out);
    }
    send(&mut tracker, &mut out, Direction::Ingress, bytes);
    tracker.close_all(&mut out);
    for exchange in &out {
        let _ = recognise(exchange, &GenAiConfig { capture_content: true });
    }
});
