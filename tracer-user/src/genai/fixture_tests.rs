//! Every dialect fed with bytes the tracer captured from real clients (tests/fixtures, recorded
//! with `--record-streams` from the provider end-to-end tests): the call record each yields, and
//! that cutting the same bytes anywhere into reads yields the same record.

use std::sync::Arc;

use bytes::Bytes;

use super::{recognise, Call, GenAiConfig, LlmCall};
use crate::{
    health::Health,
    protocols::HttpTracker,
    streams::{ConnKey, Direction, Source, StreamEvent},
};

struct Fixture {
    name: &'static str,
    request: &'static [u8],
    response: &'static [u8],
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            request: include_bytes!(concat!("../../../tests/fixtures/", $name, ".request")),
            response: include_bytes!(concat!("../../../tests/fixtures/", $name, ".response")),
        }
    };
}

const ANTHROPIC_STREAM: Fixture = fixture!("anthropic/messages_stream_tool_use");
const ANTHROPIC_529: Fixture = fixture!("anthropic/messages_529");
const RESPONSES_STREAM: Fixture = fixture!("openai/responses_stream_function_call");
const GEMINI_STREAM: Fixture = fixture!("gemini/stream_generate_content");
const OLLAMA_NDJSON: Fixture = fixture!("ollama/chat_ndjson");

fn all() -> [Fixture; 5] {
    [
        ANTHROPIC_STREAM,
        ANTHROPIC_529,
        RESPONSES_STREAM,
        GEMINI_STREAM,
        OLLAMA_NDJSON,
    ]
}

const CONN: ConnKey = ConnKey {
    pid: 1,
    source: Source::Tls,
    conn_id: 2,
};

fn data(direction: Direction, bytes: &[u8]) -> StreamEvent {
    StreamEvent::Data {
        conn: CONN,
        direction,
        timestamp_ns: 7,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

/// The call the pieces make, once the connection closes.
fn call_of(pieces: &[StreamEvent]) -> LlmCall {
    let mut tracker = HttpTracker::new(64 << 20, Arc::new(Health::default()));
    let mut exchanges = Vec::new();
    for p in pieces {
        tracker.push(p, &mut exchanges);
    }
    tracker.push(
        &StreamEvent::Closed {
            conn: CONN,
            timestamp_ns: 8,
        },
        &mut exchanges,
    );
    assert_eq!(exchanges.len(), 1, "one exchange");
    match recognise(
        &exchanges[0],
        &GenAiConfig {
            capture_content: true,
        },
    ) {
        Some(Ok(Call::Llm(call))) => *call,
        other => panic!("not an LLM call: {other:?}"),
    }
}

fn whole(f: &Fixture) -> LlmCall {
    call_of(&[
        data(Direction::Egress, f.request),
        data(Direction::Ingress, f.response),
    ])
}

#[test]
fn every_split_of_every_provider_gives_the_same_call() {
    for f in all() {
        let expected = whole(&f);
        for at in 0..=f.response.len() {
            let got = call_of(&[
                data(Direction::Egress, f.request),
                data(Direction::Ingress, &f.response[..at]),
                data(Direction::Ingress, &f.response[at..]),
            ]);
            assert_eq!(got, expected, "{}: response split at {at}", f.name);
        }
        for at in (0..=f.request.len()).step_by(7) {
            let got = call_of(&[
                data(Direction::Egress, &f.request[..at]),
                data(Direction::Egress, &f.request[at..]),
                data(Direction::Ingress, f.response),
            ]);
            assert_eq!(got, expected, "{}: request split at {at}", f.name);
        }
    }
}

#[test]
fn anthropic_stream_golden() {
    let c = whole(&ANTHROPIC_STREAM);
    assert_eq!((c.provider.as_str(), c.operation), ("anthropic", "chat"));
    assert_eq!(c.request.model.as_deref(), Some("claude-sonnet-4-20250514"));
    assert!(c.request.stream);
    assert_eq!(c.response.id.as_deref(), Some("msg_mock_1"));
    assert_eq!(c.response.finish_reasons, vec!["tool_use"]);
    assert_eq!(c.response.usage.input_tokens, Some(377 + 100 + 10));
    assert_eq!(c.response.usage.output_tokens, Some(65));
    assert_eq!(c.response.tool_calls[0].id.as_deref(), Some("toolu_mock_1"));
    assert_eq!(
        c.response.tool_calls[0].arguments,
        r#"{"location": "Paris"}"#
    );
    assert_eq!(c.error, None);
}

#[test]
fn anthropic_error_golden() {
    let c = whole(&ANTHROPIC_529);
    assert_eq!(c.http_status, Some(529));
    assert_eq!(
        c.error.map(|e| e.error_type),
        Some("overloaded_error".to_string())
    );
}

#[test]
fn responses_stream_golden() {
    let c = whole(&RESPONSES_STREAM);
    assert_eq!(c.api_type, Some("responses"));
    assert_eq!(c.response.id.as_deref(), Some("resp_mock_1"));
    assert_eq!(c.response.finish_reasons, vec!["tool_call"]);
    assert_eq!(
        c.response.tool_calls[0].id.as_deref(),
        Some("call_mock_resp")
    );
    assert_eq!(c.response.usage.reasoning_output_tokens, Some(4));
    assert!(c.request.system_instructions.is_some());
}

#[test]
fn gemini_stream_golden() {
    let c = whole(&GEMINI_STREAM);
    assert_eq!(
        (c.provider.as_str(), c.operation),
        ("gcp.gemini", "generate_content")
    );
    assert_eq!(c.request.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(c.response.finish_reasons, vec!["STOP"]);
    assert_eq!(c.response.usage.output_tokens, Some(12));
    assert_eq!(c.response.tool_calls[0].name, "get_weather");
}

#[test]
fn ollama_ndjson_golden() {
    let c = whole(&OLLAMA_NDJSON);
    assert_eq!((c.provider.as_str(), c.operation), ("ollama", "chat"));
    assert_eq!(c.response.usage.input_tokens, Some(169));
    assert_eq!(c.response.finish_reasons, vec!["stop"]);
    assert_eq!(
        c.response
            .output_messages
            .as_ref()
            .map(|m| m[0]["parts"][0]["content"].clone()),
        Some(serde_json::json!("The weather is sunny."))
    );
}

#[test]
fn a_stream_cut_short_is_interrupted_for_every_streaming_dialect() {
    for f in [ANTHROPIC_STREAM, RESPONSES_STREAM, OLLAMA_NDJSON] {
        let cut = f.response.len() * 2 / 3;
        let c = call_of(&[
            data(Direction::Egress, f.request),
            data(Direction::Ingress, &f.response[..cut]),
        ]);
        assert!(c.error.is_some(), "{}: a cut stream is an error", f.name);
    }
}
