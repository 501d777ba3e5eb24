//! WebSocket frames (and permessage-deflate) over arbitrary bytes in both directions, cut where
//! the fuzzer says: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::{
    telemetry::health::Health,
    protocols::websocket::{Deflate, WebSocketConnection},
    streams::{ConnKey, Direction, Peer, Source},
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let deflate = (flags & 1 == 1).then_some(Deflate {
        client_no_context_takeover: flags & 2 != 0,
        server_no_context_takeover: flags & 4 != 0,
    });
    let conn = ConnKey { pid: 1, source: Source::Socket, conn_id: 3 };
    let mut ws = WebSocketConnection::new(conn, "/v1/responses", Some("h"), deflate, 1 << 20);
    let (peer, health) = (Peer::default(), Health::default());
    let mut out = Vec::new();
    for (i, piece) in rest.chunks(((flags >> 3) as usize).max(1) * 7).enumerate() {
        let direction = if i % 3 == 0 { Direction::Egress } else { Direction::Ingress };
        ws.push(direction, i as u64, piece, &peer, &health, &mut out);
    }
    ws.close("shutdown", &peer, &health, &mut out);
});
