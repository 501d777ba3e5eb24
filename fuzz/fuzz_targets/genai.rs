//! Every dialect's parser over arbitrary request and response bodies behind a well-formed HTTP
//! exchange: the first byte picks the API path (model APIs, MCP's JSON-RPC endpoint) and the
//! response framing (JSON, SSE, NDJSON, AWS event-stream).
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tracer_user::{
    genai::{recognise, GenAiConfig},
    telemetry::health::Health,
    protocols::HttpTracker,
    streams::{ConnKey, Direction, Source, StreamEvent},
};

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    "/v1beta/models/gemini-2.5-flash:generateContent",
    "/api/chat",
    "/api/generate",
    "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
    "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream",
    "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke",
    "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream",
    // Anything else: MCP JSON-RPC and generic JSON APIs.
    "/mcp",
];
const TYPES: &[&str] = &[
    "application/json",
    "text/event-stream",
    "application/x-ndjson",
    "application/vnd.amazon.eventstream",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (request_body, response_body) = rest.split_at(split);
    let path = PATHS[selector as usize % PATHS.len()];
    let content_type = TYPES[(selector as usize / PATHS.len()) % TYPES.len()];
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        request_body.len()
    );
    let response = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", response_body.len());
    let conn = ConnKey { pid: 1, source: Source::Tls, conn_id: 1 };
    let mut tracker = HttpTracker::new(1 << 20, Arc::new(Health::default()));
    let mut out = Vec::new();
    let mut push = |direction, bytes: Vec<u8>| {
        tracker.push(&StreamEvent::Data { conn, direction, timestamp_ns: 1, bytes: Bytes::from(bytes) }, &mut out);
    };
    push(Direction::Egress, [request.as_bytes(), request_body].concat());
    push(Direction::Ingress, [response.as_bytes(), response_body].concat());
    for exchange in &out {
        let _ = recognise(exchange, &GenAiConfig { capture_content: true, max_body_bytes: 1 << 20 });
    }
});
