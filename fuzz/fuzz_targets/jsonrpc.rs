//! JSON-RPC over stdio (MCP's stdio framing) over arbitrary bytes in both directions: never a
//! panic; cutting each direction's bytes anywhere never changes the exchanges; losses, exits and
//! the MCP records built from the exchanges never panic either.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tracer_user::{
    genai::recognise_rpc,
    telemetry::health::Health,
    protocols::jsonrpc::{JsonRpcTracker, RpcExchange},
    streams::{ConnKey, Direction, Source, StreamEvent},
};

const CONN: ConnKey = ConnKey { pid: 1, source: Source::Stdio, conn_id: 0 };

fn chunk(direction: Direction, timestamp_ns: u64, bytes: &[u8]) -> StreamEvent {
    StreamEvent::Data { conn: CONN, direction, timestamp_ns, bytes: Bytes::copy_from_slice(bytes) }
}

/// One time per direction, so that only the cut differs between runs.
fn run(max_line: usize, ingress: &[&[u8]], egress: &[&[u8]]) -> Vec<RpcExchange> {
    let mut tracker = JsonRpcTracker::new(max_line, Arc::new(Health::default()));
    let mut out = Vec::new();
    for piece in ingress {
        tracker.push(&chunk(Direction::Ingress, 1, piece), &mut out);
    }
    for piece in egress {
        tracker.push(&chunk(Direction::Egress, 2, piece), &mut out);
    }
    tracker.close_all(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    // Ingress (the requests a server reads) before the first NUL, egress after it.
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (ingress, egress) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let max_line = 16 + (flags as usize & 0x3f) * 64;
    let cut_in = (flags as usize * 7) % (ingress.len() + 1);
    let cut_out = (flags as usize * 13) % (egress.len() + 1);
    let whole = run(max_line, &[ingress], &[egress]);
    let pieces = run(
        max_line,
        &[&ingress[..cut_in], &ingress[cut_in..]],
        &[&egress[..cut_out], &egress[cut_out..]],
    );
    assert_eq!(whole, pieces);
    for exchange in &whole {
        let _ = recognise_rpc(exchange);
    }

    // Interleaved, with a loss and a process exit in the middle: no panic.
    let mut tracker = JsonRpcTracker::new(max_line, Arc::new(Health::default()));
    let mut out = Vec::new();
    for (i, piece) in rest.chunks(((flags >> 2) as usize).max(1) * 5).enumerate() {
        let direction = if i % 2 == 0 { Direction::Ingress } else { Direction::Egress };
        let event = match i % 7 {
            5 => StreamEvent::Gap { conn: CONN, direction, timestamp_ns: i as u64, len: piece.len() as u64 },
            6 if flags & 1 == 1 => StreamEvent::ProcessExit { pid: 1, timestamp_ns: i as u64 },
            _ => chunk(direction, i as u64, piece),
        };
        tracker.push(&event, &mut out);
    }
    tracker.sweep_idle(u64::MAX, 1, &mut out);
    for exchange in &out {
        let _ = recognise_rpc(exchange);
    }
});
