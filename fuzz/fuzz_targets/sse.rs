//! Server-sent events over arbitrary bytes cut at an arbitrary point: never a panic, and the
//! cut never changes the events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::protocols::sse::{parse_all, SseParser};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let cut = (cut as usize).min(body.len());
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.feed(&body[..cut], &mut events);
    parser.feed(&body[cut..], &mut events);
    parser.finish(&mut events);
    assert_eq!(events, parse_all(body));
});
