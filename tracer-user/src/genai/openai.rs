//! OpenAI's dialects: Chat Completions (JSON and SSE chunk streams with
//! `stream_options.include_usage`), the Responses API (JSON and typed SSE events), embeddings.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{
    content,
    dialect::{has, Dialect, FirstObject},
    error_from_object,
    history::{self, History, ToolResult},
    str_field, strings, GenAiConfig, LlmCall, LlmError, ResponseView, ToolCall, Usage,
};

/// Chat Completions, `POST …/chat/completions`.
pub struct Chat;

/// The Responses API, `POST …/responses`.
pub struct Responses;

/// Embeddings, `POST …/embeddings`.
pub struct Embeddings;

impl Dialect for Chat {
    fn name(&self) -> &'static str {
        "openai.chat_completions"
    }

    fn provider(&self) -> &'static str {
        "openai"
    }

    fn by_path(&self, path: &str, request: &Value) -> bool {
        path.ends_with("/chat/completions") && has(request, "messages")
    }

    fn answers_with(&self, first: &FirstObject) -> bool {
        first.text("object").starts_with("chat.completion")
    }

    fn asked_with(&self, request: &Value) -> bool {
        has(request, "messages")
    }

    fn parse(
        &self,
        _path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        config: &GenAiConfig,
        call: &mut LlmCall,
    ) {
        parse_chat(request, response, config, call);
    }

    fn history(&self, request: &Value, with_content: bool) -> History {
        chat_history(request, with_content)
    }
}

impl Dialect for Responses {
    fn name(&self) -> &'static str {
        "openai.responses"
    }

    fn provider(&self) -> &'static str {
        "openai"
    }

    fn by_path(&self, path: &str, request: &Value) -> bool {
        path.ends_with("/responses") && (has(request, "input") || has(request, "instructions"))
    }

    fn answers_with(&self, first: &FirstObject) -> bool {
        first.text("object") == "response" || first.text("type").starts_with("response.")
    }

    fn asked_with(&self, request: &Value) -> bool {
        has(request, "input") || has(request, "instructions")
    }

    fn parse(
        &self,
        _path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        config: &GenAiConfig,
        call: &mut LlmCall,
    ) {
        parse_responses(request, response, config, call);
    }

    fn history(&self, request: &Value, with_content: bool) -> History {
        let mut history = History::default();
        history.push_items(request.get("instructions"));
        history.push_items(request.get("input"));
        history.previous_response_id = history::text(request.get("previous_response_id"));
        history.warmup = request.get("generate") == Some(&Value::Bool(false));
        for item in history::array(request.get("input")) {
            if item.get("type").and_then(Value::as_str) == Some("function_call_output") {
                history.tool_results.push(ToolResult {
                    call_id: history::text(item.get("call_id")),
                    name: None,
                    is_error: false,
                    content: with_content.then(|| history::content_text(item.get("output"))),
                });
            }
        }
        history
    }
}

impl Dialect for Embeddings {
    fn name(&self) -> &'static str {
        "openai.embeddings"
    }

    fn provider(&self) -> &'static str {
        "openai"
    }

    fn by_path(&self, path: &str, request: &Value) -> bool {
        path.ends_with("/embeddings") && has(request, "input")
    }

    fn answers_with(&self, first: &FirstObject) -> bool {
        first.text("object") == "list"
            && first.value.pointer("/data/0/object") == Some(&"embedding".into())
    }

    fn asked_with(&self, request: &Value) -> bool {
        has(request, "input")
    }

    fn parse(
        &self,
        _path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        _config: &GenAiConfig,
        call: &mut LlmCall,
    ) {
        parse_embeddings(request, response, call);
    }
}

/// A chat-messages request's history (Chat Completions, and Ollama's native API which has the
/// same messages): every message (and a completion's prompt), and the `tool` role's results.
pub(crate) fn chat_history(request: &Value, with_content: bool) -> History {
    let mut history = History::default();
    history.push_items(request.get("messages"));
    history.push_items(request.get("prompt"));
    for message in history::array(request.get("messages")) {
        if message.get("role").and_then(Value::as_str) == Some("tool") {
            history.tool_results.push(ToolResult {
                call_id: history::text(message.get("tool_call_id")),
                name: history::text(message.get("name"))
                    .or(history::text(message.get("tool_name"))),
                is_error: false,
                content: with_content.then(|| history::content_text(message.get("content"))),
            });
        }
    }
    history
}

fn common_params(req: &Value, call: &mut LlmCall) {
    let r = &mut call.request;
    r.model = str_field(req, "model");
    r.stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    r.temperature = req.get("temperature").and_then(Value::as_f64);
    r.top_p = req.get("top_p").and_then(Value::as_f64);
    r.frequency_penalty = req.get("frequency_penalty").and_then(Value::as_f64);
    r.presence_penalty = req.get("presence_penalty").and_then(Value::as_f64);
    r.seed = req.get("seed").and_then(Value::as_i64);
}

// Chat Completions.

fn parse_chat(
    req: &Value,
    view: Option<&ResponseView<'_>>,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    call.operation = "chat";
    call.api_type = Some("chat_completions");
    common_params(req, call);
    let r = &mut call.request;
    r.max_tokens = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_i64);
    r.choice_count = req.get("n").and_then(Value::as_i64).filter(|n| *n != 1);
    r.stop_sequences = strings(req.get("stop"));
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
            .map(|m| chat_input_messages(m));
    }
    let Some(view) = view else { return };
    if view.status >= 400 {
        return;
    }
    if view.is_sse() {
        let events = view.sse();
        call.first_chunk_ns = events.first().and_then(|(_, t)| *t);
        parse_chat_stream(&events, config, call);
    } else if let Some(v) = view.json() {
        call.response.reached_end = true;
        parse_chat_completion(&v, config, call);
    } else if call.http.bytes_lost == 0 {
        call.error = Some(LlmError {
            error_type: "invalid_response".to_string(),
            message: Some("the response is not JSON".to_string()),
        });
    }
}

/// Chat messages in the semantic conventions' shape (genai-spec §1.5).
fn chat_input_messages(messages: &[Value]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                let mut parts = content_parts(m.get("content"));
                for c in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    parts.push(content::tool_call_part(
                        c.get("id").and_then(Value::as_str),
                        c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
                        c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or_default(),
                    ));
                }
                if role == "tool" {
                    let response = m.get("content").cloned().unwrap_or(Value::Null);
                    parts = vec![json!({"type": "tool_call_response", "id": m.get("tool_call_id"), "response": response})];
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
                Some("text") | Some("input_text") | Some("output_text") => {
                    json!({"type": "text", "content": p.get("text")})
                }
                Some("image_url") => {
                    json!({"type": "uri", "modality": "image", "uri": p.pointer("/image_url/url")})
                }
                Some(other) => json!({"type": other}),
                None => json!({"type": "unknown"}),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_chat_completion(v: &Value, config: &GenAiConfig, call: &mut LlmCall) {
    let resp = &mut call.response;
    resp.id = str_field(v, "id");
    resp.model = str_field(v, "model");
    resp.system_fingerprint = str_field(v, "system_fingerprint");
    resp.service_tier = str_field(v, "service_tier");
    if let Some(u) = v.get("usage") {
        resp.usage = chat_usage(u);
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
        let calls: Vec<ToolCall> = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| ToolCall {
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
            })
            .collect();
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

fn parse_chat_stream(
    events: &[(crate::protocols::sse::SseEvent, Option<u64>)],
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    let mut choices: BTreeMap<i64, ChoiceAcc> = BTreeMap::new();
    let mut done = false;
    let mut usage_seen = false;
    for (event, _) in events {
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
        resp.id = resp.id.take().or_else(|| str_field(&chunk, "id"));
        resp.model = resp.model.take().or_else(|| str_field(&chunk, "model"));
        if let Some(fp) = str_field(&chunk, "system_fingerprint") {
            resp.system_fingerprint = Some(fp);
        }
        if let Some(tier) = str_field(&chunk, "service_tier") {
            resp.service_tier = Some(tier);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            resp.usage = chat_usage(u);
            usage_seen = true;
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
    // `[DONE]` ends the stream; so does the usage chunk once every choice has finished (it is
    // the last before `[DONE]` when `stream_options.include_usage` asks for it).
    let every_choice_finished = !choices.is_empty() && choices.values().all(|c| c.finish.is_some());
    let ended = done || (every_choice_finished && usage_seen);
    call.response.reached_end = ended;
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
    if !ended && call.error.is_none() {
        call.error = Some(stream_interrupted("the event stream ended before [DONE]"));
    }
}

pub(crate) fn stream_interrupted(message: &str) -> LlmError {
    LlmError {
        error_type: "stream_interrupted".to_string(),
        message: Some(message.to_string()),
    }
}

fn chat_usage(u: &Value) -> Usage {
    let int = |p: &str| u.pointer(p).and_then(Value::as_i64);
    Usage {
        input_tokens: int("/prompt_tokens"),
        output_tokens: int("/completion_tokens"),
        cache_read_input_tokens: int("/prompt_tokens_details/cached_tokens"),
        cache_creation_input_tokens: int("/prompt_tokens_details/cache_write_tokens"),
        reasoning_output_tokens: int("/completion_tokens_details/reasoning_tokens"),
    }
}

// Responses API.

fn parse_responses(
    req: &Value,
    view: Option<&ResponseView<'_>>,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    call.operation = "chat";
    call.api_type = Some("responses");
    common_params(req, call);
    let r = &mut call.request;
    r.max_tokens = req.get("max_output_tokens").and_then(Value::as_i64);
    r.tool_names = req
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| tools.iter().filter_map(|t| str_field(t, "name")).collect())
        .unwrap_or_default();
    r.conversation_id = match req.get("conversation") {
        Some(Value::String(id)) => Some(id.clone()),
        Some(c) => str_field(c, "id"),
        None => None,
    };
    if config.capture_content {
        r.input_messages = Some(responses_input(req.get("input")));
        r.system_instructions =
            str_field(req, "instructions").map(|i| json!([{"type": "text", "content": i}]));
    }
    let Some(view) = view else { return };
    if view.status >= 400 {
        return;
    }
    if view.is_sse() {
        let events = view.sse();
        call.first_chunk_ns = events.first().and_then(|(_, t)| *t);
        // The terminal event carries the whole Response: read it exactly like a JSON body.
        let mut terminal = None;
        for (event, at) in &events {
            let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            match data.get("type").and_then(Value::as_str) {
                Some("response.completed" | "response.incomplete" | "response.failed") => {
                    terminal = data.get("response").cloned();
                }
                Some("response.output_item.done") if call.response.tools_requested_ns.is_none() => {
                    let item_type = data.pointer("/item/type").and_then(Value::as_str);
                    if item_type.is_some_and(|t| t.ends_with("_call") && t != "web_search_call") {
                        call.response.tools_requested_ns = *at;
                    }
                }
                Some("response.created") => {
                    if let Some(r) = data.get("response") {
                        call.response.id = str_field(r, "id");
                        call.response.model = str_field(r, "model");
                    }
                }
                Some("error") => call.error = Some(error_from_object(&data, "stream_error")),
                _ => {}
            }
        }
        call.response.reached_end = terminal.is_some();
        match terminal {
            Some(response) => parse_response_object(&response, config, call),
            None if call.error.is_none() => {
                call.response.finish_reasons.push("error".to_string());
                call.error = Some(stream_interrupted(
                    "the event stream ended before response.completed",
                ));
            }
            None => {}
        }
    } else if let Some(v) = view.json() {
        call.response.reached_end = true;
        parse_response_object(&v, config, call);
    }
}

/// Responses input: a string, or items (messages, function calls and their outputs).
fn responses_input(input: Option<&Value>) -> Value {
    match input {
        Some(Value::String(text)) => {
            json!([{"role": "user", "parts": [{"type": "text", "content": text}]}])
        }
        Some(Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|item| match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => {
                        json!({"role": "assistant", "parts": [content::tool_call_part(
                        item.get("call_id").and_then(Value::as_str),
                        item.get("name").and_then(Value::as_str).unwrap_or_default(),
                        item.get("arguments").and_then(Value::as_str).unwrap_or_default())]})
                    }
                    Some("function_call_output") => {
                        json!({"role": "tool", "parts": [{"type": "tool_call_response",
                        "id": item.get("call_id"), "response": item.get("output")}]})
                    }
                    _ => json!({"role": item.get("role").and_then(Value::as_str).unwrap_or("user"),
                                "parts": content_parts(item.get("content"))}),
                })
                .collect(),
        ),
        _ => json!([]),
    }
}

fn parse_response_object(r: &Value, config: &GenAiConfig, call: &mut LlmCall) {
    let resp = &mut call.response;
    resp.id = str_field(r, "id").or(resp.id.take());
    resp.model = str_field(r, "model").or(resp.model.take());
    resp.service_tier = str_field(r, "service_tier");
    if let Some(u) = r.get("usage").filter(|u| u.is_object()) {
        let int = |p: &str| u.pointer(p).and_then(Value::as_i64);
        resp.usage = Usage {
            input_tokens: int("/input_tokens"),
            output_tokens: int("/output_tokens"),
            cache_read_input_tokens: int("/input_tokens_details/cached_tokens"),
            cache_creation_input_tokens: int("/input_tokens_details/cache_write_tokens"),
            reasoning_output_tokens: int("/output_tokens_details/reasoning_tokens"),
        };
    }
    let mut text = String::new();
    for item in r
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("function_call") => resp.tool_calls.push(ToolCall {
                id: str_field(item, "call_id"),
                name: str_field(item, "name").unwrap_or_default(),
                arguments: str_field(item, "arguments").unwrap_or_default(),
            }),
            Some("message") => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                }
            }
            _ => {}
        }
    }
    // Responses has no finish reason: derive one from the status (genai-spec §3.2).
    let status = r
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("completed");
    let finish = match status {
        "completed" if !resp.tool_calls.is_empty() => "tool_call",
        "completed" => "stop",
        "incomplete" => match r
            .pointer("/incomplete_details/reason")
            .and_then(Value::as_str)
        {
            Some("max_output_tokens") => "length",
            Some("content_filter") => "content_filter",
            _ => "incomplete",
        },
        _ => "error",
    };
    resp.finish_reasons = vec![finish.to_string()];
    if config.capture_content {
        let text = (!text.is_empty()).then_some(text.as_str());
        resp.output_messages = Some(Value::Array(vec![content::output_message(
            text,
            &resp.tool_calls,
            Some(finish),
        )]));
    }
    if status == "failed" {
        let err = r.get("error").cloned().unwrap_or(Value::Null);
        call.error = Some(error_from_object(&err, "response_failed"));
    }
}

// Embeddings.

fn parse_embeddings(req: &Value, view: Option<&ResponseView<'_>>, call: &mut LlmCall) {
    call.operation = "embeddings";
    call.api_type = None;
    call.request.model = str_field(req, "model");
    let Some(view) = view else { return };
    if view.status >= 400 {
        return;
    }
    if let Some(v) = view.json() {
        call.response.reached_end = true;
        call.response.model = str_field(&v, "model");
        call.response.usage.input_tokens =
            v.pointer("/usage/prompt_tokens").and_then(Value::as_i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_status_to_finish_reason() {
        let mut call = crate::genai::tests_support::empty_call();
        let config = GenAiConfig {
            capture_content: true,
            max_body_bytes: crate::daemon::pipeline::DEFAULT_MAX_BODY_BYTES,
        };
        let completed = json!({"id": "resp_1", "model": "gpt-5.4", "status": "completed",
            "output": [{"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}],
            "usage": {"input_tokens": 37, "output_tokens": 11, "input_tokens_details": {"cached_tokens": 5},
                      "output_tokens_details": {"reasoning_tokens": 3}}});
        parse_response_object(&completed, &config, &mut call);
        assert_eq!(call.response.finish_reasons, vec!["tool_call"]);
        assert_eq!(call.response.tool_calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(call.response.usage.cache_read_input_tokens, Some(5));
        assert_eq!(call.response.usage.reasoning_output_tokens, Some(3));

        let mut call = crate::genai::tests_support::empty_call();
        parse_response_object(
            &json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}),
            &config,
            &mut call,
        );
        assert_eq!(call.response.finish_reasons, vec!["length"]);
    }
}
