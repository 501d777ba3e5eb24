//! Hostile bodies: a gzip bomb answering a model call, an MCP call and a download. Decoding
//! stops at the body limit and the span says so; bodies no parser reads are never decoded.

use std::{io::Write, sync::Arc};

use bytes::Bytes;

use super::{recognise, semconv, Call, GenAiConfig};
use crate::{
    alloc_probe::peak_during,
    model::{ConnKey, Direction, HttpExchange, Source, StreamEvent},
    protocols::HttpTracker,
    telemetry::health::Health,
};

const LIMIT: usize = 4 << 20;

const CONN: ConnKey = ConnKey {
    pid: 1,
    source: Source::Tls,
    conn_id: 3,
};

/// About 1 GiB of zeros in about 1 MiB: 1024 gzip members of 1 MiB of zeros.
fn gzip_bomb() -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 1 << 20]).unwrap();
    e.finish().unwrap().repeat(1024)
}

/// The exchange HTTP/1.1 parsing makes of a request and a gzip-bomb response of `content_type`.
fn exchange(request: &str, content_type: &str) -> HttpExchange {
    let bomb = gzip_bomb();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-encoding: gzip\r\n\
         content-length: {}\r\n\r\n",
        bomb.len()
    )
    .into_bytes();
    response.extend_from_slice(&bomb);
    let tracker = HttpTracker::new(LIMIT, Arc::new(Health::default()));
    exchange_through(tracker, request.as_bytes(), &response)
}

/// The one exchange `tracker` makes of a request and its response.
fn exchange_through(mut tracker: HttpTracker, request: &[u8], response: &[u8]) -> HttpExchange {
    let mut out = Vec::new();
    for (direction, bytes) in [(Direction::Egress, request), (Direction::Ingress, response)] {
        tracker.push(
            &StreamEvent::Data {
                conn: CONN,
                direction,
                timestamp_ns: 7,
                bytes: Bytes::copy_from_slice(bytes),
            },
            &mut out,
        );
    }
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: api.openai.com\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn config() -> GenAiConfig {
    GenAiConfig {
        capture_content: false,
        max_body_bytes: LIMIT,
    }
}

#[test]
fn a_gzip_bomb_answering_a_model_call_is_cut_at_the_body_limit_and_marked() {
    let x = exchange(
        &post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        "application/json",
    );
    let (call, peak) = peak_during(|| recognise(&x, &config()));
    let Some(Ok(Call::Llm(call))) = call else {
        panic!("a model call: {call:?}");
    };
    assert!(call.http.body_decoded_truncated);
    let attributes = semconv::call_attributes(
        &call,
        &semconv::ContentPolicy {
            capture: false,
            max_bytes: 1024,
        },
    );
    assert!(attributes
        .iter()
        .any(|(k, v)| *k == "agent_tracer.body.decoded_truncated" && *v == true.into()));
    // The decoded body (at most the limit) and the parsers' work on it; never the gigabyte.
    assert!(peak < 2 * LIMIT, "{peak} bytes allocated at once");
}

#[test]
fn a_gzip_bomb_answering_an_mcp_call_is_marked_on_its_span() {
    let x = exchange(
        &post(
            "/mcp",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#,
        ),
        "application/json",
    );
    let (call, peak) = peak_during(|| recognise(&x, &config()));
    let Some(Ok(call)) = call else {
        panic!("a call: {call:?}");
    };
    assert!(call.body_decoded_truncated(), "{call:?}");
    assert!(peak < 2 * LIMIT, "{peak} bytes allocated at once");
}

/// Decoding would allocate the limit (4 MiB); what is allocated instead is the call record and
/// the tables the parsers initialise once.
#[test]
fn bodies_no_parser_reads_are_never_decoded() {
    // A JSON API's GET (not a model call, not JSON-RPC): reported, its body not read.
    let get = "GET /v1/items HTTP/1.1\r\nhost: api.example.com\r\naccept: application/json\r\n\r\n";
    let x = exchange(get, "application/json");
    let (call, peak) = peak_during(|| recognise(&x, &config()));
    let Some(Ok(Call::Http(http))) = call else {
        panic!("a generic HTTP call: {call:?}");
    };
    assert!(!http.body_decoded_truncated, "not decoded at all");
    assert!(peak < 1 << 20, "{peak} bytes allocated at once");
    // An MCP-shaped POST answered with a gzip'd archive: not JSON, not decoded.
    let x = exchange(
        &post("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
        "application/octet-stream",
    );
    let (_, peak) = peak_during(|| recognise(&x, &config()));
    assert!(peak < 1 << 20, "{peak} bytes allocated at once");
}

/// Issue 17 item 7: a streamed answer that finds the memory budget for bodies spent is read
/// from the start it kept, and its span says the body was cut, and by what.
#[test]
fn a_model_answer_cut_by_the_memory_budget_is_marked_on_its_span() {
    use crate::protocols::memory::BodyBudget;
    let request = post(
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let event = "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n";
    let body = event.repeat(100);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let budget = BodyBudget::new(1000);
    let tracker = HttpTracker::new(LIMIT, Arc::new(Health::default())).with_budget(budget);
    let exchange = exchange_through(tracker, request.as_bytes(), response.as_bytes());
    let Some(Ok(Call::Llm(call))) = recognise(&exchange, &config()) else {
        panic!("a model call");
    };
    assert_eq!(call.http.request_body_cut, None);
    assert_eq!(
        call.http.response_body_cut,
        Some(crate::model::BodyCut::MemoryBudget)
    );
    assert_eq!(call.http.response_body_bytes, body.len() as u64);
    let attributes = semconv::call_attributes(
        &call,
        &semconv::ContentPolicy {
            capture: false,
            max_bytes: 1024,
        },
    );
    let cut_by = |key: &str| {
        attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        cut_by("agent_tracer.body.response_cut_by"),
        Some("memory_budget".into())
    );
    assert_eq!(cut_by("agent_tracer.body.request_cut_by"), None);
}
