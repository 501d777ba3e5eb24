//! Every dialect fed with bytes the tracer captured from real clients (tests/fixtures, recorded
//! with `--record-streams` from the provider end-to-end tests): the call record each yields, and
//! that cutting the same bytes anywhere into reads yields the same record.

use std::sync::Arc;

use bytes::Bytes;

use serde_json::json;

use super::{
    recognise, Call, GenAiConfig, HttpCall, LlmCall, LlmError, LlmRequest, LlmResponse, ToolCall,
    Usage,
};
use crate::{
    protocols::HttpTracker,
    streams::{ConnKey, Direction, Source, StreamEvent},
    telemetry::health::Health,
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
const CHAT_STREAM: Fixture = fixture!("openai/chat_stream_tools");
const H2_CHAT_STREAM: Fixture = fixture!("http2/chat_stream_tools");
const ANTHROPIC_529: Fixture = fixture!("anthropic/messages_529");
const RESPONSES_STREAM: Fixture = fixture!("openai/responses_stream_function_call");
const GEMINI_STREAM: Fixture = fixture!("gemini/stream_generate_content");
const OLLAMA_NDJSON: Fixture = fixture!("ollama/chat_ndjson");
const BEDROCK_CONVERSE: Fixture = fixture!("bedrock/converse_tool_use");
const BEDROCK_CONVERSE_STREAM: Fixture = fixture!("bedrock/converse_stream_tool_use");
const BEDROCK_INVOKE: Fixture = fixture!("bedrock/invoke_anthropic");
const BEDROCK_INVOKE_STREAM: Fixture = fixture!("bedrock/invoke_stream_anthropic");
const BEDROCK_STREAM_EXCEPTION: Fixture = fixture!("bedrock/converse_stream_exception");
const BEDROCK_THROTTLED: Fixture = fixture!("bedrock/converse_throttled");

fn all() -> [Fixture; 12] {
    [
        ANTHROPIC_STREAM,
        CHAT_STREAM,
        ANTHROPIC_529,
        RESPONSES_STREAM,
        GEMINI_STREAM,
        OLLAMA_NDJSON,
        BEDROCK_CONVERSE,
        BEDROCK_CONVERSE_STREAM,
        BEDROCK_INVOKE,
        BEDROCK_INVOKE_STREAM,
        BEDROCK_STREAM_EXCEPTION,
        BEDROCK_THROTTLED,
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
            max_body_bytes: crate::daemon::pipeline::DEFAULT_MAX_BODY_BYTES,
        },
    ) {
        Some(Ok(Call::Llm(call))) => *call,
        other => panic!("not an LLM call: {other:?}"),
    }
}

/// The call a golden record states: everything but the run-assembly fingerprints (hashes,
/// covered by genai/history.rs's tests).
fn golden(f: &Fixture) -> LlmCall {
    let mut call = whole(f);
    call.request.history = Default::default();
    call
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
    assert_eq!(c.http.status, Some(529));
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

/// Every streamed fixture, with where its terminal event starts: the first occurrence of
/// `marker` in the response bytes, or the last when `last` (Bedrock InvokeModel's chunks are
/// base64: its last event-stream message is the one with `message_stop`).
fn terminal_events() -> [(Fixture, &'static [u8], bool); 7] {
    [
        // With `include_usage` the usage chunk ends the stream even before `[DONE]`.
        (CHAT_STREAM, br#"{"choices":[],"#, false),
        (RESPONSES_STREAM, b"event: response.completed", false),
        (ANTHROPIC_STREAM, b"event: message_stop", false),
        (GEMINI_STREAM, br#""finishReason""#, false),
        (OLLAMA_NDJSON, br#""done":true"#, false),
        (BEDROCK_CONVERSE_STREAM, b"metadata", false),
        (BEDROCK_INVOKE_STREAM, b":event-type", true),
    ]
}

fn find(haystack: &[u8], needle: &[u8], last: bool) -> usize {
    let mut at = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle);
    let hit = if last { at.next_back() } else { at.next() };
    hit.map(|(i, _)| i).expect("marker in the fixture")
}

/// The openai SDK, Codex and others stop reading at the protocol's own end of stream and close
/// the connection; the chunked body's last chunk (`0\r\n\r\n`), which real servers send in a
/// later TLS record, is never read. That call is whole: the same record as with the last chunk,
/// no error.
#[test]
fn a_close_after_the_terminal_event_is_a_complete_call() {
    for (f, _, _) in terminal_events() {
        let unterminated = f
            .response
            .strip_suffix(b"0\r\n\r\n")
            .expect("a chunked fixture ends with the last chunk");
        let expected = whole(&f);
        assert!(expected.response.reached_end, "{}", f.name);
        assert_eq!(expected.error, None, "{}", f.name);
        let got = call_of(&[
            data(Direction::Egress, f.request),
            data(Direction::Ingress, unterminated),
        ]);
        assert_eq!(got, expected, "{}: closed before the last chunk", f.name);
        assert_eq!(got.http.interrupted, None, "{}", f.name);
    }
}

/// Over HTTP/2 the transport's end is END_STREAM, in a DATA frame of its own after the last
/// event; a client that stops at `[DONE]` closes the connection or resets the stream (CANCEL)
/// instead of reading it. Either way the call is whole.
#[test]
fn an_http2_stream_ended_by_done_is_complete_without_its_end_stream() {
    const END_STREAM_DATA: &[u8] = &[0, 0, 0, 0, 1, 0, 0, 0, 1];
    let f = H2_CHAT_STREAM;
    let unterminated = f
        .response
        .strip_suffix(END_STREAM_DATA)
        .expect("the fixture ends with an empty DATA frame ending stream 1");
    let expected = whole(&f);
    assert_eq!(expected.error, None);
    assert_eq!(expected.response.usage.input_tokens, Some(57));
    let closed = call_of(&[
        data(Direction::Egress, f.request),
        data(Direction::Ingress, unterminated),
    ]);
    assert_eq!(closed, expected, "connection closed before END_STREAM");
    // RST_STREAM(CANCEL) on stream 1.
    let cancel = [0, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 0, 8];
    let reset = call_of(&[
        data(Direction::Egress, f.request),
        data(Direction::Ingress, unterminated),
        data(Direction::Egress, &cancel),
    ]);
    assert_eq!(reset, expected, "stream reset before END_STREAM");
    // Cut before `[DONE]` and the usage chunk: interrupted.
    let usage_chunk = find(f.response, br#"{"choices":[],"#, false);
    let cut = call_of(&[
        data(Direction::Egress, f.request),
        data(Direction::Ingress, &f.response[..usage_chunk]),
    ]);
    assert_eq!(
        cut.error.map(|e| e.error_type).as_deref(),
        Some("stream_interrupted")
    );
}

/// A Gemini stream for a blocked prompt has no candidates: its one chunk says why, and ends it.
#[test]
fn a_gemini_stream_for_a_blocked_prompt_ends_at_its_prompt_feedback() {
    let chunk = r#"data: {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}, "modelVersion": "gemini-2.5-flash"}"#;
    let body = format!("{chunk}\r\n\r\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:X}\r\n{body}\r\n",
        body.len()
    );
    let c = call_of(&[
        data(Direction::Egress, GEMINI_STREAM.request),
        data(Direction::Ingress, response.as_bytes()),
    ]);
    assert!(c.response.reached_end);
    assert_eq!((c.error, c.http.interrupted), (None, None));
    assert_eq!(c.response.usage.input_tokens, Some(8));
}

/// A stream cut anywhere before its terminal event stays a failed call, `stream_interrupted`,
/// whatever the transport then says.
#[test]
fn a_stream_cut_before_its_terminal_event_is_interrupted() {
    for (f, marker, last) in terminal_events() {
        let terminal = find(f.response, marker, last);
        // Just before the terminal event, inside it, and well before it.
        let cuts = [terminal, terminal + marker.len() / 2, terminal / 2];
        for cut in cuts {
            let c = call_of(&[
                data(Direction::Egress, f.request),
                data(Direction::Ingress, &f.response[..cut]),
            ]);
            assert!(!c.response.reached_end, "{}: cut at {cut}", f.name);
            assert_eq!(
                c.error.map(|e| e.error_type).as_deref(),
                Some("stream_interrupted"),
                "{}: cut at {cut}",
                f.name
            );
            assert_eq!(c.http.interrupted, Some("connection_closed"), "{}", f.name);
        }
    }
}

// AWS Bedrock, recorded from boto3 1.44.5 against the mock Bedrock server (e2e_bedrock).

const BEDROCK_REQUEST_ID: &str = "5d1b6c2e-0c4b-4f7e-9a51-bedrock00mock";
const CONVERSE_MODEL: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
const INVOKE_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// The call record every Bedrock fixture shares: who, where, when.
fn bedrock_call(path: &str, status: u16, request_body: u64, response_body: u64) -> LlmCall {
    LlmCall {
        http: HttpCall {
            conn: CONN,
            method: "POST".into(),
            url_path: path.into(),
            status: Some(status),
            server_address: Some("127.0.0.1".into()),
            server_port: Some(36713),
            start_ns: 7,
            end_ns: 7,
            request_body_bytes: request_body,
            response_body_bytes: response_body,
            bytes_lost: 0,
            interrupted: None,
            http2_joined_mid_connection: false,
            http2_incomplete_headers: false,
            body_decoded_truncated: false,
            request_body_cut: None,
            response_body_cut: None,
        },
        provider: "aws.bedrock".into(),
        operation: "chat",
        api_type: None,
        request: LlmRequest::default(),
        response: LlmResponse::default(),
        error: None,
        first_chunk_ns: None,
    }
}

/// What boto3's `converse`/`converse_stream` sent (bedrock_calls.py).
fn converse_request(model: &str, stream: bool) -> LlmRequest {
    LlmRequest {
        model: Some(model.into()),
        stream,
        temperature: Some(0.5),
        top_p: Some(0.9),
        max_tokens: Some(512),
        stop_sequences: vec!["\n\nHuman:".into()],
        tool_names: vec!["get_weather".into()],
        input_messages: Some(json!([{"role": "user", "parts": [
            {"type": "text", "content": "What's the weather in Paris?"}]}])),
        system_instructions: Some(json!([{"type": "text", "content": "You are a weather bot."}])),
        ..LlmRequest::default()
    }
}

fn invoke_request(stream: bool) -> LlmRequest {
    LlmRequest {
        model: Some(INVOKE_MODEL.into()),
        stream,
        temperature: Some(0.7),
        max_tokens: Some(256),
        input_messages: Some(json!([{"role": "user", "parts": [
            {"type": "text", "content": "Say hello."}]}])),
        ..LlmRequest::default()
    }
}

fn weather_call(id: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: Some(id.into()),
        name: "get_weather".into(),
        arguments: arguments.into(),
    }
}

fn answer(text: &str, finish: &str, tool_id: Option<&str>) -> serde_json::Value {
    let mut parts = vec![json!({"type": "text", "content": text})];
    if let Some(id) = tool_id {
        parts.push(json!({"type": "tool_call", "id": id, "name": "get_weather",
            "arguments": {"location": "Paris"}}));
    }
    json!([{"role": "assistant", "parts": parts, "finish_reason": finish}])
}

#[test]
fn bedrock_converse_golden() {
    let expected = LlmCall {
        request: converse_request(CONVERSE_MODEL, false),
        response: LlmResponse {
            // Converse bodies carry no id and no model: the request id stands for the answer.
            id: Some(BEDROCK_REQUEST_ID.into()),
            finish_reasons: vec!["tool_use".into()],
            usage: Usage {
                input_tokens: Some(390),
                output_tokens: Some(61),
                ..Usage::default()
            },
            tool_calls: vec![weather_call("tooluse_mock_1", r#"{"location":"Paris"}"#)],
            output_messages: Some(answer(
                "I'll look that up.",
                "tool_call",
                Some("tooluse_mock_1"),
            )),
            reached_end: true,
            ..LlmResponse::default()
        },
        ..bedrock_call(
            "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
            200,
            437,
            294,
        )
    };
    assert_eq!(golden(&BEDROCK_CONVERSE), expected);
}

#[test]
fn bedrock_converse_stream_golden() {
    let expected = LlmCall {
        request: converse_request(CONVERSE_MODEL, true),
        response: LlmResponse {
            id: Some(BEDROCK_REQUEST_ID.into()),
            finish_reasons: vec!["tool_use".into()],
            // Bedrock leaves cached tokens out of inputTokens; the conventions count them.
            usage: Usage {
                input_tokens: Some(412 + 128),
                output_tokens: Some(58),
                cache_read_input_tokens: Some(128),
                cache_creation_input_tokens: Some(0),
                reasoning_output_tokens: None,
            },
            tool_calls: vec![weather_call(
                "tooluse_mock_stream",
                r#"{"location": "Paris"}"#,
            )],
            output_messages: Some(answer(
                "Let me check the weather.",
                "tool_call",
                Some("tooluse_mock_stream"),
            )),
            reached_end: true,
            ..LlmResponse::default()
        },
        first_chunk_ns: Some(7),
        ..bedrock_call(
            "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream",
            200,
            437,
            1619,
        )
    };
    assert_eq!(golden(&BEDROCK_CONVERSE_STREAM), expected);
}

#[test]
fn bedrock_invoke_anthropic_golden() {
    let expected = LlmCall {
        request: invoke_request(false),
        response: LlmResponse {
            id: Some("msg_bdrk_mock_1".into()),
            model: Some("claude-3-5-sonnet-20240620".into()),
            finish_reasons: vec!["end_turn".into()],
            usage: Usage {
                input_tokens: Some(25),
                output_tokens: Some(12),
                ..Usage::default()
            },
            output_messages: Some(answer("Hello from Bedrock.", "stop", None)),
            reached_end: true,
            ..LlmResponse::default()
        },
        ..bedrock_call(
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke",
            200,
            139,
            247,
        )
    };
    assert_eq!(golden(&BEDROCK_INVOKE), expected);
}

#[test]
fn bedrock_invoke_stream_anthropic_golden() {
    let expected = LlmCall {
        request: invoke_request(true),
        response: LlmResponse {
            id: Some("msg_mock_1".into()),
            model: Some("claude-sonnet-4-20250514".into()),
            finish_reasons: vec!["tool_use".into()],
            usage: Usage {
                input_tokens: Some(377 + 100 + 10),
                output_tokens: Some(65),
                cache_read_input_tokens: Some(100),
                cache_creation_input_tokens: Some(10),
                reasoning_output_tokens: None,
            },
            tool_calls: vec![weather_call("toolu_mock_1", r#"{"location": "Paris"}"#)],
            output_messages: Some(answer(
                "I'll check the weather.",
                "tool_call",
                Some("toolu_mock_1"),
            )),
            reached_end: true,
            // Its tool_use block closed in the one read the fixture arrives in.
            tools_requested_ns: Some(7),
            ..LlmResponse::default()
        },
        first_chunk_ns: Some(7),
        ..bedrock_call(
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream",
            200,
            139,
            3056,
        )
    };
    assert_eq!(golden(&BEDROCK_INVOKE_STREAM), expected);
}

#[test]
fn bedrock_stream_exception_golden() {
    let mut http = bedrock_call(
        "/model/us.anthropic.stream-exception-v1%3A0/converse-stream",
        200,
        437,
        479,
    )
    .http;
    // The server closed the connection after the exception: the exchange's own fact; the
    // call's error is the API's, which said why first.
    http.interrupted = Some("connection_closed");
    let expected = LlmCall {
        http,
        request: converse_request("us.anthropic.stream-exception-v1:0", true),
        response: LlmResponse {
            id: Some(BEDROCK_REQUEST_ID.into()),
            finish_reasons: vec!["error".into()],
            output_messages: Some(answer("Let me check ", "error", None)),
            ..LlmResponse::default()
        },
        error: Some(LlmError {
            error_type: "throttlingException".into(),
            message: Some("Too many tokens, please wait before trying again.".into()),
        }),
        first_chunk_ns: Some(7),
        provider: "aws.bedrock".into(),
        operation: "chat",
        api_type: None,
    };
    assert_eq!(golden(&BEDROCK_STREAM_EXCEPTION), expected);
}

#[test]
fn bedrock_throttled_golden() {
    let expected = LlmCall {
        request: LlmRequest {
            model: Some("us.anthropic.throttled-v1:0".into()),
            input_messages: converse_request("", false).input_messages,
            ..LlmRequest::default()
        },
        response: LlmResponse {
            id: Some(BEDROCK_REQUEST_ID.into()),
            ..LlmResponse::default()
        },
        // `x-amzn-errortype: ThrottlingException:http://internal.amazon.com/...`
        error: Some(LlmError {
            error_type: "ThrottlingException".into(),
            message: Some("Too many requests, please wait before trying again.".into()),
        }),
        ..bedrock_call("/model/us.anthropic.throttled-v1%3A0/converse", 429, 87, 65)
    };
    assert_eq!(golden(&BEDROCK_THROTTLED), expected);
}

/// Each read its own arrival time, one event-stream message per read: time to first chunk is
/// when the first contentBlockDelta arrived, not the messageStart before it.
#[test]
fn bedrock_time_to_first_chunk_is_the_first_content_delta() {
    let f = BEDROCK_CONVERSE_STREAM;
    let head_end = f
        .response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    // Chunked transfer coding: one chunk per message, `{len:x}\r\n{message}\r\n`.
    let mut pieces = vec![data(Direction::Egress, f.request)];
    let mut at = head_end;
    let mut t = 100;
    pieces.push(timed(Direction::Ingress, &f.response[..head_end], t));
    while at < f.response.len() {
        let line_end = at
            + f.response[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
        let len = usize::from_str_radix(
            std::str::from_utf8(&f.response[at..line_end]).expect("hex"),
            16,
        )
        .expect("chunk size");
        let end = (line_end + 2 + len + 2).min(f.response.len());
        t += 1000;
        pieces.push(timed(Direction::Ingress, &f.response[at..end], t));
        at = end;
    }
    let c = call_of(&pieces);
    // Chunk 1 (t=1100) is messageStart, chunk 2 (t=2100) the first contentBlockDelta.
    assert_eq!(c.first_chunk_ns, Some(2100));
    assert_eq!(c.response.finish_reasons, vec!["tool_use"]);
}

fn timed(direction: Direction, bytes: &[u8], timestamp_ns: u64) -> StreamEvent {
    StreamEvent::Data {
        conn: CONN,
        direction,
        timestamp_ns,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

mod chunking {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Bedrock's binary streams cut into any number of reads, anywhere (inside preludes,
        /// headers, CRCs, chunk-size lines), give the call the whole bytes give.
        #[test]
        fn bedrock_streams_in_any_reads(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            for f in [BEDROCK_CONVERSE_STREAM, BEDROCK_INVOKE_STREAM, BEDROCK_STREAM_EXCEPTION] {
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(f.response.len() + 1)).collect();
                at.sort();
                let mut pieces = vec![data(Direction::Egress, f.request)];
                let mut last = 0;
                for cut in at.into_iter().chain([f.response.len()]) {
                    pieces.push(data(Direction::Ingress, &f.response[last..cut]));
                    last = cut;
                }
                prop_assert_eq!(call_of(&pieces), whole(&f), "{}", f.name);
            }
        }
    }
}

/// A Responses stream's tool call is complete at its `response.output_item.done`: the time the
/// record carrying that event arrived, not the end of the stream (agents start the tool then).
#[test]
fn a_responses_tool_call_is_requested_when_its_item_is_done() {
    let f = RESPONSES_STREAM;
    let done = find(f.response, b"response.output_item.done", false);
    let item_end = done + find(&f.response[done..], b"\n\n", false) + 2;
    let c = call_of(&[
        timed(Direction::Egress, f.request, 1),
        timed(Direction::Ingress, &f.response[..item_end], 5),
        timed(Direction::Ingress, &f.response[item_end..], 9),
    ]);
    assert_eq!(c.response.tool_calls.len(), 1);
    assert_eq!(c.response.tools_requested_ns, Some(5));
    assert_eq!(c.http.end_ns, 9);
}

/// An Anthropic stream's tool call is complete at its block's `content_block_stop`, before
/// `message_delta` and `message_stop` (Claude Code runs the tool once the message is whole, which
/// is still before the body's end arrives).
#[test]
fn an_anthropic_tool_use_is_requested_when_its_block_stops() {
    let f = ANTHROPIC_STREAM;
    let tool_start = find(f.response, b"\"tool_use\"", false);
    let stop = tool_start + find(&f.response[tool_start..], b"content_block_stop", false);
    let stop_end = stop + find(&f.response[stop..], b"\n\n", false) + 2;
    let c = call_of(&[
        timed(Direction::Egress, f.request, 1),
        timed(Direction::Ingress, &f.response[..stop_end], 5),
        timed(Direction::Ingress, &f.response[stop_end..], 9),
    ]);
    assert_eq!(c.response.tool_calls.len(), 1);
    assert_eq!(c.response.tools_requested_ns, Some(5));
}
