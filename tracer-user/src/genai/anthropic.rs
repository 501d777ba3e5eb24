//! Anthropic Messages: JSON and the typed SSE stream (message_start, content_block_*,
//! message_delta, message_stop), tool_use blocks with input_json_delta, cache token counts.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{
    content,
    dialect::{has, Dialect, FirstObject},
    error_from_object,
    history::{self, History, ToolResult},
    openai::stream_interrupted,
    str_field, strings, GenAiConfig, LlmCall, ResponseView, ToolCall, Usage,
};

/// The Messages API: `POST …/messages`, and on Vertex `…:rawPredict` / `…:streamRawPredict`
/// (the Messages body, the model in the path).
pub struct Messages;

impl Dialect for Messages {
    fn name(&self) -> &'static str {
        "anthropic.messages"
    }

    fn provider(&self) -> &'static str {
        "anthropic"
    }

    fn by_path(&self, path: &str, request: &Value) -> bool {
        if path.ends_with("/messages") {
            // Other `/messages` APIs (MCP's among them) have no `max_tokens`.
            has(request, "messages") && has(request, "max_tokens")
        } else if path.ends_with(":rawPredict") || path.ends_with(":streamRawPredict") {
            has(request, "messages")
        } else {
            false
        }
    }

    fn answers_with(&self, first: &FirstObject) -> bool {
        let kind = first.text("type");
        kind == "message"
            || kind == "message_start"
            || first.event.as_deref() == Some("message_start")
    }

    fn asked_with(&self, request: &Value) -> bool {
        has(request, "messages")
    }

    fn parse(
        &self,
        path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        config: &GenAiConfig,
        call: &mut LlmCall,
    ) {
        parse(request, path, response, config, call);
    }

    fn history(&self, request: &Value, with_content: bool) -> History {
        let mut history = History::default();
        history.push_items(request.get("system"));
        history.push_items(request.get("messages"));
        for message in history::array(request.get("messages")) {
            for block in history::array(message.get("content")) {
                if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                    history.tool_results.push(ToolResult {
                        call_id: history::text(block.get("tool_use_id")),
                        name: None,
                        is_error: block.get("is_error").and_then(Value::as_bool) == Some(true),
                        content: with_content.then(|| history::content_text(block.get("content"))),
                    });
                }
            }
        }
        history
    }
}

fn parse(
    req: &Value,
    path: &str,
    view: Option<&ResponseView<'_>>,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    parse_request(req, path, config, call);
    let Some(view) = view else { return };
    if view.status >= 400 {
        return;
    }
    if view.is_sse() {
        let events = view.sse();
        call.first_chunk_ns = events.first().and_then(|(_, t)| *t);
        parse_stream(&events, config, call);
    } else if let Some(v) = view.json() {
        call.response.reached_end = true;
        parse_message(&v, config, call);
    }
}

/// The request's parameters (the Messages body, also as Bedrock InvokeModel carries it).
pub(super) fn parse_request(req: &Value, path: &str, config: &GenAiConfig, call: &mut LlmCall) {
    call.operation = "chat";
    let r = &mut call.request;
    // On Vertex the model is in the path (`.../models/{model}:rawPredict`).
    r.model = str_field(req, "model").or_else(|| model_from_path(path));
    r.stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false)
        || path.ends_with(":streamRawPredict");
    r.max_tokens = req.get("max_tokens").and_then(Value::as_i64);
    r.temperature = req.get("temperature").and_then(Value::as_f64);
    r.top_p = req.get("top_p").and_then(Value::as_f64);
    r.top_k = req.get("top_k").and_then(Value::as_f64);
    r.stop_sequences = strings(req.get("stop_sequences"));
    r.tool_names = req
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(|t| str_field(t, "name")).collect())
        .unwrap_or_default();
    if config.capture_content {
        r.input_messages = req
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| input_messages(m));
        r.system_instructions = match req.get("system") {
            Some(Value::String(s)) => Some(json!([{"type": "text", "content": s}])),
            Some(Value::Array(blocks)) => Some(Value::Array(
                blocks
                    .iter()
                    .map(|b| json!({"type": "text", "content": b.get("text")}))
                    .collect(),
            )),
            _ => None,
        };
    }
}

/// A whole (non-streamed) Message response.
pub(super) fn parse_message(v: &Value, config: &GenAiConfig, call: &mut LlmCall) {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let resp = &mut call.response;
    resp.id = str_field(v, "id");
    resp.model = str_field(v, "model");
    if let Some(u) = v.get("usage") {
        resp.usage = usage(u, &Usage::default());
    }
    let stop = str_field(v, "stop_reason");
    finish(call, stop, blocks_to_output(&blocks), config);
}

fn model_from_path(path: &str) -> Option<String> {
    let after = path.rsplit_once("/models/")?.1;
    Some(after.split(':').next()?.to_string())
}

/// Input tokens per the conventions: Anthropic's `input_tokens` excludes cached tokens, so the
/// cache reads and writes are added (semconv anthropic.md). Counts missing here keep `before`.
fn usage(u: &Value, before: &Usage) -> Usage {
    let int = |k: &str| u.get(k).and_then(Value::as_i64);
    let raw_input = int("input_tokens");
    let cache_read = int("cache_read_input_tokens").or(before.cache_read_input_tokens);
    let cache_write = int("cache_creation_input_tokens").or(before.cache_creation_input_tokens);
    let input_tokens = match raw_input {
        Some(i) => Some(i + cache_read.unwrap_or(0) + cache_write.unwrap_or(0)),
        None => before.input_tokens,
    };
    Usage {
        input_tokens,
        output_tokens: int("output_tokens").or(before.output_tokens),
        cache_read_input_tokens: cache_read,
        cache_creation_input_tokens: cache_write,
        reasoning_output_tokens: None,
    }
}

fn input_messages(messages: &[Value]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                let parts: Vec<Value> = match m.get("content") {
                    Some(Value::String(s)) => vec![json!({"type": "text", "content": s})],
                    Some(Value::Array(blocks)) => blocks.iter().map(block_part).collect(),
                    _ => Vec::new(),
                };
                // A user turn carrying tool results is the tool speaking.
                let role = if parts.iter().all(|p| p["type"] == "tool_call_response")
                    && !parts.is_empty()
                {
                    "tool"
                } else {
                    role
                };
                json!({"role": role, "parts": parts})
            })
            .collect(),
    )
}

fn block_part(b: &Value) -> Value {
    match b.get("type").and_then(Value::as_str) {
        Some("text") => json!({"type": "text", "content": b.get("text")}),
        Some("tool_use") => {
            json!({"type": "tool_call", "id": b.get("id"), "name": b.get("name"), "arguments": b.get("input")})
        }
        Some("tool_result") => {
            json!({"type": "tool_call_response", "id": b.get("tool_use_id"), "response": b.get("content")})
        }
        Some("thinking") => json!({"type": "reasoning", "content": b.get("thinking")}),
        Some(other) => json!({"type": other}),
        None => json!({"type": "unknown"}),
    }
}

/// (text, tool calls) of response content blocks.
fn blocks_to_output(blocks: &[Value]) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") => calls.push(ToolCall {
                id: str_field(b, "id"),
                name: str_field(b, "name").unwrap_or_default(),
                arguments: b
                    .get("input")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".to_string()),
            }),
            _ => {}
        }
    }
    (text, calls)
}

/// The response's outcome: raw stop reason, tool calls and (content only) the output message.
pub(super) fn finish(
    call: &mut LlmCall,
    stop: Option<String>,
    (text, calls): (String, Vec<ToolCall>),
    config: &GenAiConfig,
) {
    let stop = stop.unwrap_or_else(|| "error".to_string());
    if config.capture_content {
        let text = (!text.is_empty()).then_some(text.as_str());
        let message = content::output_message(text, &calls, Some(&stop));
        call.response.output_messages = Some(json!([message]));
    }
    call.response.finish_reasons = vec![stop];
    call.response.tool_calls = calls;
}

/// A content block being reassembled.
#[derive(Default)]
struct Block {
    kind: String,
    text: String,
    id: Option<String>,
    name: String,
    /// `input_json_delta` fragments, joined.
    json: String,
}

/// The typed stream's events (from SSE, or unwrapped from Bedrock's event-stream chunks).
pub(super) fn parse_stream(
    events: &[(crate::protocols::sse::SseEvent, Option<u64>)],
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    let mut blocks: BTreeMap<i64, Block> = BTreeMap::new();
    let mut stop = None;
    let mut stopped = false;
    for (event, at) in events {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let index = data.get("index").and_then(Value::as_i64).unwrap_or(0);
        // The first tool_use block closed: the agent may run that tool from here on.
        if data.get("type").and_then(Value::as_str) == Some("content_block_stop")
            && call.response.tools_requested_ns.is_none()
            && blocks.get(&index).is_some_and(|b| b.kind == "tool_use")
        {
            call.response.tools_requested_ns = *at;
        }
        match data.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = data.get("message").unwrap_or(&Value::Null);
                call.response.id = str_field(m, "id");
                call.response.model = str_field(m, "model");
                if let Some(u) = m.get("usage") {
                    call.response.usage = usage(u, &call.response.usage);
                }
            }
            Some("content_block_start") => {
                let b = data.get("content_block").unwrap_or(&Value::Null);
                blocks.insert(
                    index,
                    Block {
                        kind: str_field(b, "type").unwrap_or_default(),
                        text: str_field(b, "text").unwrap_or_default(),
                        id: str_field(b, "id"),
                        name: str_field(b, "name").unwrap_or_default(),
                        json: String::new(),
                    },
                );
            }
            Some("content_block_delta") => {
                let block = blocks.entry(index).or_default();
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") if config.capture_content => block.text.push_str(
                        delta
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ),
                    Some("input_json_delta") => block.json.push_str(
                        delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ),
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(s) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    stop = Some(s.to_string());
                }
                // Cumulative counts; newer servers repeat input and cache counts here too.
                if let Some(u) = data.get("usage") {
                    call.response.usage = usage(u, &call.response.usage);
                }
            }
            Some("message_stop") => stopped = true,
            Some("error") => {
                let err = data.get("error").cloned().unwrap_or(Value::Null);
                call.error = Some(error_from_object(&err, "stream_error"));
            }
            _ => {}
        }
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks.into_values() {
        match block.kind.as_str() {
            "text" => text.push_str(&block.text),
            "tool_use" => calls.push(ToolCall {
                id: block.id,
                name: block.name,
                // The first fragment may be empty; an empty input is `{}`.
                arguments: if block.json.trim().is_empty() {
                    "{}".to_string()
                } else {
                    block.json
                },
            }),
            _ => {}
        }
    }
    finish(call, stop, (text, calls), config);
    call.response.reached_end = stopped;
    if !stopped && call.error.is_none() {
        call.error = Some(stream_interrupted(
            "the event stream ended before message_stop",
        ));
    }
}
