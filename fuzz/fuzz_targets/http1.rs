//! HTTP/1.1 tracking over arbitrary bytes: the input is a script of reads (direction, length)
//! followed by the bytes, so the fuzzer controls both content and how it is cut. Any input must
//! be handled without a panic, and every exchange it yields must come out of genai cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_fuzz::{script_and_bytes, Connection};
use tracer_user::streams::Direction;

fuzz_target!(|data: &[u8]| {
    let Some((_, script, bytes)) = script_and_bytes(data) else { return };
    let mut connection = Connection::default();
    let rest = connection.play(script, bytes);
    connection.send(Direction::Ingress, 99, rest);
    connection.finish();
});
