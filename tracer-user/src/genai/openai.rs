//! OpenAI Chat Completions: request parameters, JSON responses, SSE chunk streams (with
//! `stream_options.include_usage`), tool calls in both, and API errors.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{content, GenAiConfig, LlmCall, LlmError, ToolCall, Usage};
use crate::protocols::{body::decode_content, http1::header, sse, HttpExchange};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    ChatCompletions,
}

pub fn parse(
    dialect: Dialect,
    request: &Value,
    exchange: &HttpExchange,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    match dialect {
        Dialect::ChatCompletions => {
            call.operation = "chat";
            call.api_type = Some("chat_completions");
        }
    }
    parse_request(request, config, call);
    let Some(response) = &exchange.response else {
        return;
    };
    let body = match decode_content(
        header(&response.headers, "content-encoding"),
        &response.body,
    ) {
        Ok(b) => b,
        // Bytes lost in capture are reported as such (bytes_lost), not as the call's failure.
        Err(_) if response.bytes_lost > 0 => return,
        Err(e) => {
            call.error = Some(LlmError {
                error_type: "body_decode".to_string(),
                message: Some(e.to_string()),
            });
            return;
        }
    };
    if response.status >= 400 {
        call.error = Some(api_error(response.status, &body));
        return;
    }
    let is_sse = header(&response.headers, "content-type")
        .is_some_and(|ct| ct.contains("text/event-stream"));
    if is_sse {
        let events = sse::parse_all(&body);
        if let Some(first) = events.first() {
            call.first_chunk_ns = response.time_at_offset(first.end_offset);
        }
        parse_stream(&events, config, call);
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => parse_completion(&v, config, call),
            Err(_) if response.bytes_lost > 0 => {}
            Err(e) => {
                call.error = Some(LlmError {
                    error_type: "invalid_response".to_string(),
                    message: Some(format!("response is not JSON: {e}")),
                })
            }
        }
    }
}

fn parse_request(req: &Value, config: &GenAiConfig, call: &mut LlmCall) {
    let r = &mut call.request;
    r.model = str_field(req, "model");
    r.stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    r.temperature = req.get("temperature").and_then(Value::as_f64);
    r.top_p = req.get("top_p").and_then(Value::as_f64);
    r.max_tokens = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_i64);
    r.frequency_penalty = req.get("frequency_penalty").and_then(Value::as_f64);
    r.presence_penalty = req.get("presence_penalty").and_then(Value::as_f64);
    r.seed = req.get("seed").and_then(Value::as_i64);
    r.choice_count = req.get("n").and_then(Value::as_i64).filter(|n| *n != 1);
    r.stop_sequences = match req.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    r.tool_names = req
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    t.pointer("/function/name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    if config.capture_content {
        r.input_messages = req
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| input_messages(m));
    }
}

/// Chat messages in the semantic conventions' shape (genai-spec §1.5).
fn input_messages(messages: &[Value]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                let mut parts = content_parts(m.get("content"));
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for c in calls {
                        parts.push(content::tool_call_part(
                            c.get("id").and_then(Value::as_str),
                            c.pointer("/function/name")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                            c.pointer("/function/arguments")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        ));
                    }
                }
                if role == "tool" {
                    let response = m.get("content").cloned().unwrap_or(Value::Null);
                    parts = vec![json!({"type": "tool_call_response",
                        "id": m.get("tool_call_id"), "response": response})];
                }
                json!({"role": role, "parts": parts})
            })
            .collect(),
    )
}

fn content_parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({"type": "text", "content": s})],
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => json!({"type": "text", "content": p.get("text")}),
                Some("image_url") => json!({"type": "uri", "modality": "image",
                    "uri": p.pointer("/image_url/url")}),
                Some(other) => json!({"type": other}),
                None => json!({"type": "unknown"}),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_completion(v: &Value, config: &GenAiConfig, call: &mut LlmCall) {
    let resp = &mut call.response;
    resp.id = str_field(v, "id");
    resp.model = str_field(v, "model");
    resp.system_fingerprint = str_field(v, "system_fingerprint");
    resp.service_tier = str_field(v, "service_tier");
    if let Some(u) = v.get("usage") {
        resp.usage = usage(u);
    }
    let mut outputs = Vec::new();
    for choice in v
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let finish = choice.get("finish_reason").and_then(Value::as_str);
        if let Some(f) = finish {
            resp.finish_reasons.push(f.to_string());
        }
        let message = choice.get("message").unwrap_or(&Value::Null);
        let mut calls = Vec::new();
        for c in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            calls.push(ToolCall {
                id: str_field(c, "id"),
                name: c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: c
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        if config.capture_content {
            let text = message.get("content").and_then(Value::as_str);
            outputs.push(content::output_message(text, &calls, finish));
        }
        resp.tool_calls.extend(calls);
    }
    if config.capture_content {
        resp.output_messages = Some(Value::Array(outputs));
    }
    // An error object can also arrive with status 200 (proxies).
    if let Some(err) = v.get("error").filter(|e| e.is_object()) {
        call.error = Some(error_from_object(err, "200"));
    }
}

/// A choice being reassembled from stream deltas.
#[derive(Default)]
struct ChoiceAcc {
    text: String,
    finish: Option<String>,
    /// Keyed by the delta's `tool_calls[].index`.
    tool_calls: BTreeMap<i64, ToolCall>,
}

fn parse_stream(events: &[sse::SseEvent], config: &GenAiConfig, call: &mut LlmCall) {
    let mut choices: BTreeMap<i64, ChoiceAcc> = BTreeMap::new();
    let mut done = false;
    for event in events {
        let data = event.data.trim();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(err) = chunk.get("error").filter(|e| e.is_object()) {
            call.error = Some(error_from_object(err, "stream_error"));
            continue;
        }
        let resp = &mut call.response;
        if resp.id.is_none() {
            resp.id = str_field(&chunk, "id");
        }
        if resp.model.is_none() {
            resp.model = str_field(&chunk, "model");
        }
        if let Some(fp) = str_field(&chunk, "system_fingerprint") {
            resp.system_fingerprint = Some(fp);
        }
        if let Some(tier) = str_field(&chunk, "service_tier") {
            resp.service_tier = Some(tier);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            resp.usage = usage(u);
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_i64).unwrap_or(0);
            let acc = choices.entry(index).or_default();
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                acc.finish = Some(f.to_string());
            }
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if config.capture_content {
                if let Some(t) = delta.get("content").and_then(Value::as_str) {
                    acc.text.push_str(t);
                }
            }
            for tc in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let tc_index = tc.get("index").and_then(Value::as_i64).unwrap_or(0);
                let entry = acc.tool_calls.entry(tc_index).or_insert_with(|| ToolCall {
                    id: None,
                    name: String::new(),
                    arguments: String::new(),
                });
                if let Some(id) = str_field(tc, "id") {
                    entry.id = Some(id);
                }
                if let Some(name) = tc.pointer("/function/name").and_then(Value::as_str) {
                    entry.name.push_str(name);
                }
                if let Some(args) = tc.pointer("/function/arguments").and_then(Value::as_str) {
                    entry.arguments.push_str(args);
                }
            }
        }
    }
    let mut outputs = Vec::new();
    for acc in choices.into_values() {
        // A stream that ended before its choice finished reports `error` in that position.
        let finish = acc.finish.clone().unwrap_or_else(|| "error".to_string());
        call.response.finish_reasons.push(finish.clone());
        let calls: Vec<ToolCall> = acc.tool_calls.into_values().collect();
        if config.capture_content {
            let text = (!acc.text.is_empty()).then_some(acc.text.as_str());
            outputs.push(content::output_message(text, &calls, Some(&finish)));
        }
        call.response.tool_calls.extend(calls);
    }
    if config.capture_content {
        call.response.output_messages = Some(Value::Array(outputs));
    }
    if !done && call.error.is_none() {
        call.error = Some(LlmError {
            error_type: "stream_interrupted".to_string(),
            message: Some("the event stream ended before [DONE]".to_string()),
        });
    }
}

fn usage(u: &Value) -> Usage {
    let int = |p: &str| u.pointer(p).and_then(Value::as_i64);
    Usage {
        input_tokens: int("/prompt_tokens"),
        output_tokens: int("/completion_tokens"),
        cache_read_input_tokens: int("/prompt_tokens_details/cached_tokens"),
        cache_creation_input_tokens: int("/prompt_tokens_details/cache_write_tokens"),
        reasoning_output_tokens: int("/completion_tokens_details/reasoning_tokens"),
    }
}

fn api_error(status: u16, body: &[u8]) -> LlmError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object())
    {
        Some(err) => error_from_object(err, &status.to_string()),
        None => LlmError {
            error_type: status.to_string(),
            message: None,
        },
    }
}

/// `{"message": ..., "type": ..., "code": ...}`: the code is the most specific identifier.
fn error_from_object(err: &Value, fallback: &str) -> LlmError {
    let code = err.get("code").and_then(|c| match c {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    LlmError {
        error_type: code
            .or_else(|| str_field(err, "type"))
            .unwrap_or_else(|| fallback.to_string()),
        message: str_field(err, "message"),
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}
