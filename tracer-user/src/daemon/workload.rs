//! Synthetic capture records that stress one stage of the pipeline, shared by the tests that
//! check the pipeline's answer on them and by `cargo xtask bench`, which times it (the
//! `pipeline_sse_flood` example).

use bytes::Bytes;

use crate::{
    capture::{CaptureEvent, DataChunk},
    model::{Direction, Source},
};

/// The model the flood's response names.
pub const SSE_FLOOD_MODEL: &str = "gpt-4o-mini-2024-07-18";
/// The response id the flood's first event carries.
pub const SSE_FLOOD_ID: &str = "chatcmpl-sse-flood";
/// Nanoseconds between two reads of the flood (monotonic clock).
pub const SSE_FLOOD_READ_INTERVAL_NS: u64 = 1_000;
/// The monotonic time of the flood's request.
pub const SSE_FLOOD_START_NS: u64 = 1_000_000_000;

/// A streamed chat completion whose answer is drowned in tiny events: what a hostile (or merely
/// odd) server can send a traced client. The request goes out in one write; the response's
/// head arrives in one read, then a first event with the response's id and model, then `tiny`
/// events of one data byte (`data:x`, 8 bytes with the blank line), each in its own read, then
/// the finishing event with usage and `[DONE]`. 500 000 tiny events make a 4 MB body in
/// 500 000 reads.
pub struct SseFlood {
    /// The capture records, in the order the kernel would deliver them.
    pub records: Vec<CaptureEvent>,
    /// When the read completing the first event arrived.
    pub first_event_ns: u64,
    /// When the last read arrived.
    pub last_read_ns: u64,
    /// The response body's length.
    pub body_len: u64,
}

/// The tiny event: one byte of data, which no dialect can parse and every stage must still walk.
const TINY: &[u8] = b"data:x\n\n";

/// Builds the flood for a connection of process `pid`.
pub fn sse_flood(pid: u32, tiny: usize) -> SseFlood {
    let request_body = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Count to a million."}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{request_body}",
        request_body.len()
    );
    let first = format!(
        "data: {{\"id\":\"{SSE_FLOOD_ID}\",\"object\":\"chat.completion.chunk\",\"model\":\"{SSE_FLOOD_MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"1\"}},\"finish_reason\":null}}]}}\n\n"
    );
    let last = format!(
        "data: {{\"id\":\"{SSE_FLOOD_ID}\",\"object\":\"chat.completion.chunk\",\"model\":\"{SSE_FLOOD_MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{tiny},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
        tiny + 12
    );
    let body_len = (first.len() + TINY.len() * tiny + last.len()) as u64;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {body_len}\r\n\r\n"
    );

    let mut records = Vec::with_capacity(tiny + 4);
    let mut clock = SSE_FLOOD_START_NS;
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut read = |records: &mut Vec<CaptureEvent>, direction, at: u64, data: Bytes| {
        let offset = match direction {
            Direction::Egress => &mut sent,
            Direction::Ingress => &mut received,
        };
        let len = data.len() as u64;
        records.push(CaptureEvent::Data(DataChunk {
            pid,
            source: Source::Tls,
            conn_id: 0x5ee_f100d,
            direction,
            timestamp_ns: at,
            call_len: len,
            offset: 0,
            stream_offset: *offset,
            cookie: 0,
            data,
        }));
        *offset += len;
    };
    read(&mut records, Direction::Egress, clock, Bytes::from(request));
    clock += SSE_FLOOD_READ_INTERVAL_NS;
    read(&mut records, Direction::Ingress, clock, Bytes::from(head));
    clock += SSE_FLOOD_READ_INTERVAL_NS;
    read(&mut records, Direction::Ingress, clock, Bytes::from(first));
    let first_event_ns = clock;
    let tiny_bytes = Bytes::from_static(TINY);
    for _ in 0..tiny {
        clock += SSE_FLOOD_READ_INTERVAL_NS;
        read(&mut records, Direction::Ingress, clock, tiny_bytes.clone());
    }
    clock += SSE_FLOOD_READ_INTERVAL_NS;
    read(&mut records, Direction::Ingress, clock, Bytes::from(last));
    SseFlood {
        records,
        first_event_ns,
        last_read_ns: clock,
        body_len,
    }
}
