//! An LLM call as OpenTelemetry GenAI semantic-convention attributes (v1.41 names, genai-spec
//! §1.3), with the OpenInference attributes Arize Phoenix renders natively (§2).

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

use serde_json::{json, Value};

use super::{
    content::{capped_json, capped_text},
    HttpCall, LlmCall,
};
use crate::{capture::Clock, model::span::AttrValue};

/// OpenInference flattens messages into indexed keys; this many messages and tool calls per
/// message are flattened (the whole list is in `gen_ai.input.messages` regardless).
const MAX_FLAT_MESSAGES: usize = 64;
const MAX_FLAT_TOOL_CALLS: usize = 16;

#[derive(Clone, Debug)]
pub struct ContentPolicy {
    pub capture: bool,
    pub max_bytes: usize,
}

pub fn call_attributes(call: &LlmCall, content: &ContentPolicy) -> Vec<(&'static str, AttrValue)> {
    let mut a: Vec<(&'static str, AttrValue)> = Vec::with_capacity(40);
    let req = &call.request;
    let resp = &call.response;
    a.push(("gen_ai.operation.name", call.operation.into()));
    a.push(("gen_ai.provider.name", call.provider.clone().into()));
    if let Some(t) = call.api_type {
        a.push(("openai.api.type", t.into()));
    }
    if let Some(m) = &req.model {
        a.push(("gen_ai.request.model", m.clone().into()));
    }
    if let Some(c) = &req.conversation_id {
        a.push(("gen_ai.conversation.id", c.clone().into()));
    }
    if let Some(k) = req.top_k {
        a.push(("gen_ai.request.top_k", k.into()));
    }
    if req.stream {
        a.push(("gen_ai.request.stream", true.into()));
    }
    let mut opt_f64 = |k: &'static str, v: Option<f64>| {
        if let Some(v) = v {
            a.push((k, v.into()));
        }
    };
    opt_f64("gen_ai.request.temperature", req.temperature);
    opt_f64("gen_ai.request.top_p", req.top_p);
    opt_f64("gen_ai.request.frequency_penalty", req.frequency_penalty);
    opt_f64("gen_ai.request.presence_penalty", req.presence_penalty);
    let mut opt_i64 = |k: &'static str, v: Option<i64>| {
        if let Some(v) = v {
            a.push((k, v.into()));
        }
    };
    opt_i64("gen_ai.request.max_tokens", req.max_tokens);
    opt_i64("gen_ai.request.seed", req.seed);
    opt_i64("gen_ai.request.choice.count", req.choice_count);
    opt_i64("gen_ai.usage.input_tokens", resp.usage.input_tokens);
    opt_i64("gen_ai.usage.output_tokens", resp.usage.output_tokens);
    opt_i64(
        "gen_ai.usage.cache_read.input_tokens",
        resp.usage.cache_read_input_tokens,
    );
    opt_i64(
        "gen_ai.usage.cache_creation.input_tokens",
        resp.usage.cache_creation_input_tokens,
    );
    opt_i64(
        "gen_ai.usage.reasoning.output_tokens",
        resp.usage.reasoning_output_tokens,
    );
    if !req.stop_sequences.is_empty() {
        a.push((
            "gen_ai.request.stop_sequences",
            req.stop_sequences.clone().into(),
        ));
    }
    if let Some(id) = &resp.id {
        a.push(("gen_ai.response.id", id.clone().into()));
    }
    if let Some(m) = &resp.model {
        a.push(("gen_ai.response.model", m.clone().into()));
    }
    if !resp.finish_reasons.is_empty() {
        a.push((
            "gen_ai.response.finish_reasons",
            resp.finish_reasons.clone().into(),
        ));
    }
    if let Some(first) = call.first_chunk_ns {
        let secs = first.saturating_sub(call.http.start_ns) as f64 / 1e9;
        a.push(("gen_ai.response.time_to_first_chunk", secs.into()));
        // As the conventions define it for servers: the time after the first token over the
        // tokens that followed it.
        if let Some(out) = resp.usage.output_tokens.filter(|o| *o > 1) {
            let rest = call.http.end_ns.saturating_sub(first) as f64 / 1e9;
            a.push((
                "agent_tracer.time_per_output_token",
                (rest / (out - 1) as f64).into(),
            ));
        }
    }
    if let Some(fp) = &resp.system_fingerprint {
        a.push(("openai.response.system_fingerprint", fp.clone().into()));
    }
    if let Some(tier) = &resp.service_tier {
        a.push(("openai.response.service_tier", tier.clone().into()));
    }
    // Tool names and ids are metadata, not content (genai-spec §5.3): always present.
    if !req.tool_names.is_empty() {
        a.push((
            "agent_tracer.request.tool_names",
            req.tool_names.clone().into(),
        ));
    }
    if !resp.tool_calls.is_empty() {
        let names: Vec<String> = resp.tool_calls.iter().map(|t| t.name.clone()).collect();
        let ids: Vec<String> = resp
            .tool_calls
            .iter()
            .map(|t| t.id.clone().unwrap_or_default())
            .collect();
        a.push(("agent_tracer.response.tool_call.names", names.into()));
        a.push(("agent_tracer.response.tool_call.ids", ids.into()));
    }
    let http = &call.http;
    if let Some(addr) = &http.server_address {
        a.push(("server.address", addr.clone().into()));
    }
    if let Some(port) = http.server_port {
        a.push(("server.port", port.into()));
    }
    // Empty when HPACK could not decode them: left out rather than guessed.
    if !http.method.is_empty() {
        a.push(("http.request.method", http.method.clone().into()));
    }
    if !http.url_path.is_empty() {
        a.push(("url.path", http.url_path.clone().into()));
    }
    if let Some(status) = http.status {
        a.push(("http.response.status_code", status.into()));
    }
    a.push(("http.request.body.size", http.request_body_bytes.into()));
    a.push(("http.response.body.size", http.response_body_bytes.into()));
    if http.bytes_lost > 0 {
        a.push(("agent_tracer.capture.bytes_lost", http.bytes_lost.into()));
    }
    http2_marks(
        &mut a,
        http.http2_joined_mid_connection,
        http.http2_incomplete_headers,
    );
    body_marks(&mut a, http);
    if let Some(err) = &call.error {
        a.push(("error.type", err.error_type.clone().into()));
    }
    if content.capture {
        if let Some(m) = &req.input_messages {
            a.push((
                "gen_ai.input.messages",
                capped_json(m, content.max_bytes).into(),
            ));
        }
        if let Some(m) = &resp.output_messages {
            a.push((
                "gen_ai.output.messages",
                capped_json(m, content.max_bytes).into(),
            ));
        }
        if let Some(s) = &req.system_instructions {
            a.push((
                "gen_ai.system_instructions",
                capped_json(s, content.max_bytes).into(),
            ));
        }
    }
    // OpenInference, so Phoenix shows the span as an LLM call without conversion.
    let kind = if call.operation == "embeddings" {
        "EMBEDDING"
    } else {
        "LLM"
    };
    a.push(("openinference.span.kind", kind.into()));
    a.push(("llm.provider", call.provider.clone().into()));
    a.push(("llm.system", call.provider.clone().into()));
    if let Some(m) = resp.model.as_ref().or(req.model.as_ref()) {
        a.push(("llm.model_name", m.clone().into()));
    }
    if let Some(i) = resp.usage.input_tokens {
        a.push(("llm.token_count.prompt", i.into()));
    }
    if let Some(o) = resp.usage.output_tokens {
        a.push(("llm.token_count.completion", o.into()));
    }
    if let (Some(i), Some(o)) = (resp.usage.input_tokens, resp.usage.output_tokens) {
        a.push(("llm.token_count.total", (i + o).into()));
    }
    for (key, value) in [
        (
            "llm.token_count.prompt_details.cache_read",
            resp.usage.cache_read_input_tokens,
        ),
        (
            "llm.token_count.prompt_details.cache_write",
            resp.usage.cache_creation_input_tokens,
        ),
        (
            "llm.token_count.completion_details.reasoning",
            resp.usage.reasoning_output_tokens,
        ),
    ] {
        if let Some(v) = value {
            a.push((key, v.into()));
        }
    }
    a.push((
        "llm.invocation_parameters",
        invocation_parameters(call).into(),
    ));
    if let Some(f) = resp.finish_reasons.first() {
        a.push(("llm.finish_reason", f.clone().into()));
    }
    if content.capture {
        let mut inputs = Vec::new();
        if let Some(Value::Array(system)) = &req.system_instructions {
            inputs.push(json!({"role": "system", "parts": system}));
        }
        if let Some(Value::Array(m)) = &req.input_messages {
            inputs.extend(m.iter().cloned());
        }
        flatten_messages(&mut a, "llm.input_messages", &inputs, content.max_bytes);
        if let Some(Value::Array(m)) = &resp.output_messages {
            flatten_messages(&mut a, "llm.output_messages", m, content.max_bytes);
        }
        if let Some(m) = &req.input_messages {
            a.push(("input.value", capped_json(m, content.max_bytes).into()));
            a.push(("input.mime_type", "application/json".into()));
        }
        if let Some(m) = &resp.output_messages {
            a.push(("output.value", capped_json(m, content.max_bytes).into()));
            a.push(("output.mime_type", "application/json".into()));
        }
    }
    a
}

/// `llm.invocation_parameters`: the request's parameters, no content.
fn invocation_parameters(call: &LlmCall) -> String {
    let r = &call.request;
    let mut p = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            p.insert(k.to_string(), v);
        }
    };
    put("model", json!(r.model));
    put("temperature", json!(r.temperature));
    put("top_p", json!(r.top_p));
    put("top_k", json!(r.top_k));
    put("max_tokens", json!(r.max_tokens));
    put("seed", json!(r.seed));
    if r.stream {
        put("stream", json!(true));
    }
    Value::Object(p).to_string()
}

/// An indexed OpenInference key, interned: the set is bounded by the flattening limits, so the
/// few thousand keys that can exist are allocated once for the life of the process.
fn key(text: String) -> &'static str {
    static KEYS: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(k) = keys.get(&text) {
        return k;
    }
    let leaked: &'static str = Box::leak(text.clone().into_boxed_str());
    keys.insert(text, leaked);
    leaked
}

/// GenAI-convention messages (`{role, parts: [{type, content | id, name, arguments |
/// response}]}`) as OpenInference's flattened `prefix.{i}.message.*` attributes.
fn flatten_messages(
    a: &mut Vec<(&'static str, AttrValue)>,
    prefix: &str,
    messages: &[Value],
    max_bytes: usize,
) {
    for (i, m) in messages.iter().take(MAX_FLAT_MESSAGES).enumerate() {
        let base = format!("{prefix}.{i}.message");
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            a.push((key(format!("{base}.role")), role.into()));
        }
        let parts = m
            .get("parts")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let text: Vec<&str> = parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p.get("content").and_then(Value::as_str))
            .collect();
        if !text.is_empty() {
            a.push((
                key(format!("{base}.content")),
                capped_text(&text.join("\n"), max_bytes).into(),
            ));
        }
        let calls = parts.iter().filter(|p| p["type"] == "tool_call");
        for (k, call) in calls.take(MAX_FLAT_TOOL_CALLS).enumerate() {
            let tc = format!("{base}.tool_calls.{k}.tool_call");
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                a.push((key(format!("{tc}.id")), id.into()));
            }
            if let Some(name) = call.get("name").and_then(Value::as_str) {
                a.push((key(format!("{tc}.function.name")), name.into()));
            }
            if let Some(args) = call.get("arguments") {
                let args = match args {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                a.push((
                    key(format!("{tc}.function.arguments")),
                    capped_text(&args, max_bytes).into(),
                ));
            }
        }
        if let Some(response) = parts.iter().find(|p| p["type"] == "tool_call_response") {
            if let Some(id) = response.get("id").and_then(Value::as_str) {
                a.push((key(format!("{base}.tool_call_id")), id.into()));
            }
            if text.is_empty() {
                let body = match response.get("response") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                a.push((
                    key(format!("{base}.content")),
                    capped_text(&body, max_bytes).into(),
                ));
            }
        }
    }
}

/// A generic HTTP client call (HTTP semantic conventions).
pub fn http_attributes(call: &HttpCall) -> Vec<(&'static str, AttrValue)> {
    let mut a: Vec<(&'static str, AttrValue)> = Vec::with_capacity(12);
    if !call.method.is_empty() {
        a.push(("http.request.method", call.method.clone().into()));
    }
    if !call.url_path.is_empty() {
        a.push(("url.path", call.url_path.clone().into()));
    }
    a.push(("http.request.body.size", call.request_body_bytes.into()));
    a.push(("http.response.body.size", call.response_body_bytes.into()));
    if let Some(s) = call.status {
        a.push(("http.response.status_code", s.into()));
        if s >= 400 {
            a.push(("error.type", s.to_string().into()));
        }
    }
    if let Some(reason) = call.interrupted {
        a.push(("error.type", reason.into()));
    }
    if let Some(addr) = &call.server_address {
        a.push(("server.address", addr.clone().into()));
    }
    if let Some(port) = call.server_port {
        a.push(("server.port", port.into()));
    }
    if call.bytes_lost > 0 {
        a.push(("agent_tracer.capture.bytes_lost", call.bytes_lost.into()));
    }
    http2_marks(
        &mut a,
        call.http2_joined_mid_connection,
        call.http2_incomplete_headers,
    );
    body_marks(&mut a, call);
    a
}

/// A body the span was made from the start of only: kept only up to the body limit or to what
/// the memory budget had left (`..._cut_by`), or content-encoded and decoding to more than the
/// body limit (a compression bomb, or a body larger than `--max-body-bytes`).
fn body_marks(a: &mut Vec<(&'static str, AttrValue)>, http: &HttpCall) {
    if let Some(cut) = http.request_body_cut {
        a.push(("agent_tracer.body.request_cut_by", cut.as_str().into()));
    }
    if let Some(cut) = http.response_body_cut {
        a.push(("agent_tracer.body.response_cut_by", cut.as_str().into()));
    }
    if http.body_decoded_truncated {
        a.push(("agent_tracer.body.decoded_truncated", true.into()));
    }
}

/// What a span of an HTTP/2 connection the tracer joined late, or whose header fields it could
/// not all decode, says about itself: what is missing was unknown, not absent.
fn http2_marks(a: &mut Vec<(&'static str, AttrValue)>, joined: bool, incomplete: bool) {
    if joined {
        a.push(("agent_tracer.http2.joined_mid_connection", true.into()));
    }
    if incomplete {
        a.push(("agent_tracer.http2.incomplete_headers", true.into()));
    }
}

/// `{operation} {model}` (semconv span name).
pub fn span_name(call: &LlmCall) -> String {
    match &call.request.model {
        Some(m) => format!("{} {m}", call.operation),
        None => call.operation.to_string(),
    }
}

pub fn unix_times(call: &LlmCall, clock: &Clock) -> (u64, u64) {
    (
        clock.unix_ns(call.http.start_ns),
        clock.unix_ns(call.http.end_ns.max(call.http.start_ns)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_flatten_to_openinference_keys() {
        let messages = vec![
            json!({"role": "user", "parts": [{"type": "text", "content": "weather?"}]}),
            json!({"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1",
                "name": "get_weather", "arguments": {"city": "Paris"}}]}),
            json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1",
                "response": "sunny"}]}),
        ];
        let mut a = Vec::new();
        flatten_messages(&mut a, "llm.input_messages", &messages, 1024);
        let get = |k: &str| a.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("llm.input_messages.0.message.role"),
            Some("user".into())
        );
        assert_eq!(
            get("llm.input_messages.0.message.content"),
            Some("weather?".into())
        );
        assert_eq!(
            get("llm.input_messages.1.message.tool_calls.0.tool_call.function.name"),
            Some("get_weather".into())
        );
        assert_eq!(
            get("llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments"),
            Some(r#"{"city":"Paris"}"#.into())
        );
        assert_eq!(
            get("llm.input_messages.2.message.tool_call_id"),
            Some("call_1".into())
        );
        assert_eq!(
            get("llm.input_messages.2.message.content"),
            Some("sunny".into())
        );
        // Interned: the same key text is the same allocation.
        assert!(std::ptr::eq(
            key("llm.input_messages.0.message.role".into()),
            key("llm.input_messages.0.message.role".into())
        ));
    }
}
