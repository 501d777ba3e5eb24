//! AWS event-stream framing (Bedrock's streams) over arbitrary bytes cut at an arbitrary point:
//! never a panic, and the cut never changes the messages or the error. With the second byte odd
//! the input's CRCs are first made valid, so the fuzzer gets past them into the headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::protocols::eventstream::{parse_all, EventStreamParser};

/// Writes correct prelude and message CRCs into every frame the length fields delimit.
fn repair_crcs(body: &mut [u8]) {
    let mut at = 0;
    while body.len() - at >= 16 {
        let total = u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as usize;
        if total < 16 || total > body.len() - at {
            return;
        }
        let prelude = crc32fast::hash(&body[at..at + 8]);
        body[at + 8..at + 12].copy_from_slice(&prelude.to_be_bytes());
        let end = at + total;
        let message = crc32fast::hash(&body[at..end - 4]);
        body[end - 4..end].copy_from_slice(&message.to_be_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let [cut, mode, rest @ ..] = data else { return };
    let mut body = rest.to_vec();
    if mode & 1 == 1 {
        repair_crcs(&mut body);
    }
    let cut = (*cut as usize * body.len() / 255).min(body.len());
    let mut parser = EventStreamParser::new();
    let mut messages = Vec::new();
    parser.feed(&body[..cut], &mut messages);
    parser.feed(&body[cut..], &mut messages);
    parser.finish();
    assert_eq!((messages, parser.error().cloned()), parse_all(&body));
});
