//! The other model APIs on the mock server, by path: Anthropic Messages, OpenAI Responses,
//! Gemini generateContent/streamGenerateContent, Ollama /api/chat, and AWS Bedrock Runtime's
//! Converse/ConverseStream/InvokeModel/InvokeModelWithResponseStream (the streams in AWS
//! event-stream frames with valid CRCs: botocore checks them). Streams send their events
//! `STREAM_EVENT_GAP` apart so time to first chunk is measurable, and their body's end one gap
//! after the terminal event (see mock_openai.rs). JSON answers are gzip-compressed when the
//! client accepts it, as the hosted APIs do (not Ollama's, not Bedrock's).

use bytes::Bytes;
use hyper::{body::Frame, Response, StatusCode};
use serde_json::{json, Value};

use crate::mock_openai::{
    cut, full, streamed_body, whole, Body, StreamFrame, COOKIE_SECRET, CUT_STREAM_MODEL,
};

pub const ANTHROPIC_MODEL: &str = "claude-sonnet-4-20250514";
pub const GEMINI_MODEL_VERSION: &str = "gemini-2.5-flash-001";
/// Every Bedrock answer's `x-amzn-RequestId`.
pub const BEDROCK_REQUEST_ID: &str = "5d1b6c2e-0c4b-4f7e-9a51-bedrock00mock";

/// The response for a non-chat-completions path, if it is one of these APIs.
/// The `agent-loop` Messages model's tool-use id.
pub const ANTHROPIC_TOOL_USE_ID: &str = "toolu_agent_task_1";

/// A scripted agent turn: without a tool_result the model asks for `run_task`, with one it
/// answers.
fn anthropic_agent_step(req: &Value) -> Value {
    let answered = req["messages"].as_array().is_some_and(|m| {
        m.iter().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let (content, stop, id) = if answered {
        (
            json!([{"type": "text", "text": "The task failed; reported."}]),
            "end_turn",
            "msg_agent_final",
        )
    } else {
        (
            json!([{"type": "text", "text": "Running it."},
                   {"type": "tool_use", "id": ANTHROPIC_TOOL_USE_ID, "name": "run_task",
                    "input": {"cmd": crate::mock_openai::AGENT_TOOL_COMMAND}}]),
            "tool_use",
            "msg_agent_tool",
        )
    };
    json!({"id": id, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
           "content": content, "stop_reason": stop, "stop_sequence": null,
           "usage": {"input_tokens": 120, "output_tokens": 30,
                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100}})
}

/// `accepts_gzip`: the request's `Accept-Encoding` names gzip.
pub fn respond(path: &str, req: &Value, accepts_gzip: bool) -> Option<Response<Body>> {
    if let Some(response) = bedrock(path, req) {
        return Some(response);
    }
    let stream = req.get("stream").and_then(Value::as_bool);
    if path.ends_with("/v1/messages") {
        if req.get("model").and_then(Value::as_str) == Some("overloaded") {
            let body = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
            return Some(full(
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "application/json",
                body.to_string().into_bytes(),
                false,
            ));
        }
        if req.get("model").and_then(Value::as_str) == Some("agent-loop") {
            return Some(json_response(anthropic_agent_step(req), accepts_gzip));
        }
        return Some(if stream == Some(true) {
            anthropic_stream()
        } else {
            json_response(anthropic_message(), accepts_gzip)
        });
    }
    if path.ends_with("/v1/responses") {
        let cut_early = req.get("model").and_then(Value::as_str) == Some(CUT_STREAM_MODEL);
        return Some(if stream == Some(true) {
            responses_stream(cut_early)
        } else {
            json_response(responses_object(), accepts_gzip)
        });
    }
    if path.ends_with(":streamGenerateContent") {
        return Some(gemini_stream());
    }
    if path.ends_with(":generateContent") {
        return Some(json_response(gemini_final_chunk(true), accepts_gzip));
    }
    if path.ends_with("/api/chat") {
        // Ollama streams unless told not to.
        return Some(if stream == Some(false) {
            // Ollama's server never compresses.
            json_response(ollama_done("The weather is sunny."), false)
        } else {
            ollama_stream()
        });
    }
    None
}

pub(crate) fn json_response(v: Value, gzip: bool) -> Response<Body> {
    full(
        StatusCode::OK,
        "application/json",
        v.to_string().into_bytes(),
        gzip,
    )
}

/// A body sent as these frames, `STREAM_EVENT_GAP` apart.
pub(crate) fn streamed(content_type: &str, frames: Vec<String>) -> Response<Body> {
    streamed_with(
        content_type,
        &[],
        frames.into_iter().map(Bytes::from).collect(),
    )
}

fn streamed_with(
    content_type: &str,
    headers: &[(&str, &str)],
    frames: Vec<Bytes>,
) -> Response<Body> {
    streamed_frames(
        content_type,
        headers,
        frames.into_iter().map(|f| Ok(Frame::data(f))).collect(),
    )
}

fn streamed_frames(
    content_type: &str,
    headers: &[(&str, &str)],
    frames: Vec<StreamFrame>,
) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("set-cookie", format!("session={COOKIE_SECRET}; Path=/"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(streamed_body(frames))
        .unwrap_or_else(|_| Response::new(whole(Bytes::new())))
}

fn sse(events: &[(&str, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

// Anthropic.

fn anthropic_message() -> Value {
    json!({"id": "msg_mock_1", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": "I'll check the weather."},
                    {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"location": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 377, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 65}})
}

fn anthropic_stream() -> Response<Body> {
    streamed(
        "text/event-stream; charset=utf-8",
        sse(&anthropic_stream_events()),
    )
}

fn anthropic_stream_events() -> Vec<(&'static str, Value)> {
    vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock_1", "type": "message", "role": "assistant",
            "model": ANTHROPIC_MODEL, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 377, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "I'll check the weather."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"Pa"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 65}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
}

// OpenAI Responses.

fn responses_object() -> Value {
    json!({"id": "resp_mock_1", "object": "response", "created_at": 1741290958, "status": "completed", "model": "gpt-5.4-2026-03-01",
        "output": [{"type": "function_call", "id": "fc_mock_1", "call_id": "call_mock_resp", "name": "get_current_weather",
                    "arguments": "{\"location\":\"Boston, MA\"}", "status": "completed"}],
        "usage": {"input_tokens": 37, "input_tokens_details": {"cached_tokens": 16}, "output_tokens": 11,
                  "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 48}})
}

/// `cut_early`: the connection drops after the arguments' first delta, before
/// `response.completed`.
fn responses_stream(cut_early: bool) -> Response<Body> {
    let mut seq = 0;
    let mut ev = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        (kind.to_string(), data)
    };
    let in_progress = json!({"id": "resp_mock_1", "object": "response", "status": "in_progress", "model": "gpt-5.4-2026-03-01", "output": [], "usage": null});
    let events = [
        ev("response.created", json!({"response": in_progress})),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "function_call", "id": "fc_mock_1",
            "call_id": "call_mock_resp", "name": "get_current_weather", "arguments": "", "status": "in_progress"}}),
        ),
        ev(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_mock_1", "output_index": 0, "delta": "{\"location\":"}),
        ),
        ev(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_mock_1", "output_index": 0, "delta": "\"Boston, MA\"}"}),
        ),
        ev(
            "response.function_call_arguments.done",
            json!({"item_id": "fc_mock_1", "output_index": 0, "name": "get_current_weather",
            "arguments": "{\"location\":\"Boston, MA\"}"}),
        ),
        ev(
            "response.output_item.done",
            json!({"output_index": 0, "item": responses_object()["output"][0].clone()}),
        ),
        ev(
            "response.completed",
            json!({"response": responses_object()}),
        ),
    ];
    let mut frames: Vec<StreamFrame> = events
        .iter()
        .map(|(k, d)| {
            Ok(Frame::data(Bytes::from(format!(
                "event: {k}\ndata: {d}\n\n"
            ))))
        })
        .collect();
    if cut_early {
        frames.truncate(3);
        frames.push(Err(cut()));
    }
    streamed_frames("text/event-stream; charset=utf-8", &[], frames)
}

// Gemini.

fn gemini_final_chunk(whole: bool) -> Value {
    let mut parts =
        vec![json!({"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}})];
    if whole {
        parts.insert(0, json!({"text": "Let me check. "}));
    }
    json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 42, "candidatesTokenCount": 7, "thoughtsTokenCount": 5, "totalTokenCount": 54},
        "modelVersion": GEMINI_MODEL_VERSION, "responseId": "gemini-mock-response-1"})
}

fn gemini_stream() -> Response<Body> {
    // alt=sse: each event a whole GenerateContentResponse, separated by CRLF pairs; no sentinel.
    // Four events, so time to first chunk stands three gaps before the last event: a client read
    // late under load still tells the first event from the last.
    let text = |t: &str| {
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}],
        "usageMetadata": {"trafficType": "ON_DEMAND"}, "modelVersion": GEMINI_MODEL_VERSION, "responseId": "gemini-mock-response-1"})
    };
    let frames = [
        text("Let me "),
        text("check "),
        text("the weather. "),
        gemini_final_chunk(false),
    ]
    .iter()
    .map(|c| format!("data: {c}\r\n\r\n"))
    .collect();
    streamed("text/event-stream", frames)
}

// Ollama.

fn ollama_done(content: &str) -> Value {
    json!({"model": "llama3.2", "created_at": "2026-11-24T00:00:00Z", "message": {"role": "assistant", "content": content},
        "done_reason": "stop", "done": true, "total_duration": 182242375, "load_duration": 41295167,
        "prompt_eval_count": 169, "prompt_eval_duration": 24573166, "eval_count": 15, "eval_duration": 115959084})
}

fn ollama_stream() -> Response<Body> {
    let piece = |t: &str| {
        json!({"model": "llama3.2", "created_at": "2026-11-24T00:00:00Z",
        "message": {"role": "assistant", "content": t}, "done": false})
    };
    let frames = [piece("The weather "), piece("is sunny."), ollama_done("")]
        .iter()
        .map(|o| format!("{o}\n"))
        .collect();
    streamed("application/x-ndjson", frames)
}

// AWS Bedrock Runtime.

/// One event-stream message with string headers: prelude (total length, headers length, CRC32),
/// headers, payload, CRC32 of everything before it.
pub fn event_stream_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (12 + h.len() + payload.len() + 4) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn bedrock_event(kind: &str, payload: &Value) -> Bytes {
    Bytes::from(event_stream_frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    ))
}

/// Bedrock's answer for `/model/{modelId}/{operation}`, chosen by the operation and the model
/// id: one containing `throttled` gets a 429 ThrottlingException, one containing
/// `stream-exception` a stream that ends in a throttlingException message.
fn bedrock(path: &str, req: &Value) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/model/")?;
    let (model, op) = rest.rsplit_once('/')?;
    if model.contains("throttled") {
        return Some(bedrock_json(
            StatusCode::TOO_MANY_REQUESTS,
            &[(
                "x-amzn-errortype",
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            )],
            json!({"message": "Too many requests, please wait before trying again."}),
        ));
    }
    let anthropic = req.get("anthropic_version").is_some();
    Some(match op {
        "converse" => bedrock_json(StatusCode::OK, &[], converse_answer()),
        "converse-stream" => converse_stream(model.contains("stream-exception")),
        "invoke" if anthropic => bedrock_json(
            StatusCode::OK,
            &[
                ("x-amzn-bedrock-input-token-count", "25"),
                ("x-amzn-bedrock-output-token-count", "12"),
                ("x-amzn-bedrock-invocation-latency", "420"),
            ],
            json!({"id": "msg_bdrk_mock_1", "type": "message", "role": "assistant",
                "model": "claude-3-5-sonnet-20240620", "content": [{"type": "text", "text": "Hello from Bedrock."}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 25, "output_tokens": 12}}),
        ),
        "invoke-with-response-stream" if anthropic => invoke_stream(),
        _ => bedrock_json(
            StatusCode::BAD_REQUEST,
            &[(
                "x-amzn-errortype",
                "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            )],
            json!({"message": "The mock serves Converse and Anthropic InvokeModel only."}),
        ),
    })
}

fn bedrock_json(status: StatusCode, headers: &[(&str, &str)], body: Value) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-requestid", BEDROCK_REQUEST_ID)
        .header("set-cookie", format!("session={COOKIE_SECRET}; Path=/"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(whole(body.to_string()))
        .unwrap_or_else(|_| Response::new(whole(Bytes::new())))
}

fn converse_answer() -> Value {
    json!({"output": {"message": {"role": "assistant", "content": [
            {"text": "I'll look that up."},
            {"toolUse": {"toolUseId": "tooluse_mock_1", "name": "get_weather", "input": {"location": "Paris"}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 390, "outputTokens": 61, "totalTokens": 451},
        "metrics": {"latencyMs": 640}})
}

fn converse_stream(exception: bool) -> Response<Body> {
    // Bedrock pads payloads with a `p` field so lengths do not reveal content.
    let mut frames = vec![
        bedrock_event(
            "messageStart",
            &json!({"role": "assistant", "p": "abcdefgh"}),
        ),
        bedrock_event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "Let me check "}, "p": "abcd"}),
        ),
    ];
    if exception {
        frames.push(Bytes::from(event_stream_frame(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many tokens, please wait before trying again."}"#,
        )));
    } else {
        frames.extend([
            bedrock_event(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 0, "delta": {"text": "the weather."}}),
            ),
            bedrock_event("contentBlockStop", &json!({"contentBlockIndex": 0})),
            bedrock_event(
                "contentBlockStart",
                &json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_mock_stream", "name": "get_weather"}}}),
            ),
            bedrock_event(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"location\":"}}}),
            ),
            bedrock_event(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": " \"Paris\"}"}}}),
            ),
            bedrock_event("contentBlockStop", &json!({"contentBlockIndex": 1})),
            bedrock_event("messageStop", &json!({"stopReason": "tool_use"})),
            bedrock_event(
                "metadata",
                &json!({"usage": {"inputTokens": 412, "outputTokens": 58, "totalTokens": 598,
                    "cacheReadInputTokens": 128, "cacheWriteInputTokens": 0}, "metrics": {"latencyMs": 812}}),
            ),
        ]);
    }
    streamed_with(
        "application/vnd.amazon.eventstream",
        &[("x-amzn-requestid", BEDROCK_REQUEST_ID)],
        frames,
    )
}

/// The Anthropic stream, each event base64-wrapped in a `chunk` message.
fn invoke_stream() -> Response<Body> {
    use base64::Engine as _;
    let events = anthropic_stream_events();
    let last = events.len().saturating_sub(1);
    let frames = events
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut data))| {
            if i == last {
                data["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": 377,
                    "outputTokenCount": 65, "invocationLatency": 900, "firstByteLatency": 300});
            }
            let bytes = base64::engine::general_purpose::STANDARD.encode(data.to_string());
            bedrock_event("chunk", &json!({"bytes": bytes, "p": "abc"}))
        })
        .collect();
    streamed_with(
        "application/vnd.amazon.eventstream",
        &[
            ("x-amzn-requestid", BEDROCK_REQUEST_ID),
            ("x-amzn-bedrock-content-type", "application/json"),
        ],
        frames,
    )
}
