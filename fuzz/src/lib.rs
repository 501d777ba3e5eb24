//! What the HTTP fuzz targets share: one traced connection fed by a script of reads the fuzzer
//! writes, so that it controls both the bytes and where they are cut.

use std::sync::Arc;

use bytes::Bytes;
use tracer_user::{
    genai::{recognise, GenAiConfig},
    telemetry::health::Health,
    model::HttpExchange,
    protocols::HttpTracker,
    streams::{ConnKey, Direction, Source, StreamEvent},
};

/// Splits an input into its first byte, a script of up to 15 reads (two bytes each; the count
/// is the first byte's low four bits, the others are the target's) and the bytes they read.
/// None when the input is too short for its script.
pub fn script_and_bytes(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&first, rest) = data.split_first()?;
    let count = (first & 0x0f) as usize;
    if rest.len() < count * 2 {
        return None;
    }
    let (script, bytes) = rest.split_at(count * 2);
    Some((first, script, bytes))
}

/// One connection through the HTTP tracker, and the exchanges it gave.
pub struct Connection {
    conn: ConnKey,
    tracker: HttpTracker,
    out: Vec<HttpExchange>,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            conn: ConnKey { pid: 1, source: Source::Tls, conn_id: 1 },
            tracker: HttpTracker::new(1 << 20, Arc::new(Health::default())),
            out: Vec::new(),
        }
    }
}

impl Connection {
    /// One read of `bytes` in `direction`.
    pub fn send(&mut self, direction: Direction, timestamp_ns: u64, bytes: &[u8]) {
        let event = StreamEvent::Data {
            conn: self.conn,
            direction,
            timestamp_ns,
            bytes: Bytes::copy_from_slice(bytes),
        };
        self.tracker.push(&event, &mut self.out);
    }

    /// Plays `script` over `bytes`: per step, bit 0 of its first byte is the direction, bit 7
    /// makes it a loss (a gap) instead of a read, and its second byte is the length. Returns
    /// the bytes no step read.
    pub fn play<'a>(&mut self, script: &[u8], mut bytes: &'a [u8]) -> &'a [u8] {
        let conn = self.conn;
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
            self.tracker.push(&event, &mut self.out);
        }
        bytes
    }

    /// Closes the connection and runs every exchange it gave through genai.
    pub fn finish(mut self) {
        self.tracker.close_all(&mut self.out);
        for exchange in &self.out {
            let _ = recognise(exchange, &GenAiConfig { capture_content: true, max_body_bytes: 1 << 20 });
        }
    }
}
