//! HTTP/2 (frames and HPACK) over arbitrary bytes, the fuzzer scripting reads and gaps in both
//! directions as for HTTP/1.1, on a connection that starts as the first byte's high bits say:
//! 0. the client sends the preface (HTTP/2 from its start);
//! 1. nothing first: the tracer joined the connection after its preface, and the script's
//!    first reads must be found to be frames;
//! 2. two whole frames each way first, so the joined path is taken at once and the script
//!    plays on a connection whose HPACK tables are unknown;
//! 3. an HTTP/1.1 request asking `Upgrade: h2c`, its 101, then the client's preface.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_fuzz::{script_and_bytes, Connection};
use tracer_user::streams::Direction;

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
    let Some((first, script, bytes)) = script_and_bytes(data) else { return };
    let mode = (first >> 4) & 3;
    let mut connection = Connection::default();
    match mode {
        0 => connection.send(Direction::Egress, 0, PREFACE),
        1 => {}
        2 => {
            connection.send(Direction::Egress, 0, TWO_FRAMES);
            connection.send(Direction::Ingress, 0, TWO_FRAMES);
        }
        _ => {
            connection.send(Direction::Egress, 0, UPGRADE_REQUEST);
            connection.send(Direction::Ingress, 0, UPGRADE_RESPONSE);
            connection.send(Direction::Egress, 0, PREFACE);
        }
    }
    let rest = connection.play(script, bytes);
    connection.send(Direction::Ingress, 0, rest);
    connection.finish();
});
