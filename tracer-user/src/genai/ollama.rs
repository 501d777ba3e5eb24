//! Ollama's native API: /api/chat and /api/generate, NDJSON streams (the default) or one JSON
//! object, tool calls with object arguments, prompt_eval_count / eval_count usage.

use serde_json::{json, Value};

use super::{
    content,
    dialect::{has, Dialect, FirstObject},
    history::History,
    openai::{self, stream_interrupted},
    str_field, strings, GenAiConfig, LlmCall, ResponseView, ToolCall,
};

/// `POST …/api/chat`, or `…/api/generate` when `generate`.
pub struct Ollama {
    pub generate: bool,
}

impl Dialect for Ollama {
    fn name(&self) -> &'static str {
        if self.generate {
            "ollama.generate"
        } else {
            "ollama.chat"
        }
    }

    fn provider(&self) -> &'static str {
        "ollama"
    }

    fn by_path(&self, path: &str, request: &Value) -> bool {
        if self.generate {
            path.ends_with("/api/generate") && has(request, "prompt")
        } else {
            path.ends_with("/api/chat") && has(request, "messages")
        }
    }

    fn answers_with(&self, first: &FirstObject) -> bool {
        first.has("done") && first.has(if self.generate { "response" } else { "message" })
    }

    fn asked_with(&self, request: &Value) -> bool {
        has(request, if self.generate { "prompt" } else { "messages" })
    }

    fn parse(
        &self,
        _path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        config: &GenAiConfig,
        call: &mut LlmCall,
    ) {
        parse(request, self.generate, response, config, call);
    }

    /// The messages (or prompt) and tool results are Chat Completions'.
    fn history(&self, request: &Value, with_content: bool) -> History {
        openai::chat_history(request, with_content)
    }
}

fn parse(
    req: &Value,
    generate: bool,
    view: Option<&ResponseView<'_>>,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    call.operation = if generate { "text_completion" } else { "chat" };
    let r = &mut call.request;
    r.model = str_field(req, "model");
    // Ollama streams unless told not to.
    r.stream = req.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let o = req.get("options").unwrap_or(&Value::Null);
    r.temperature = o.get("temperature").and_then(Value::as_f64);
    r.top_p = o.get("top_p").and_then(Value::as_f64);
    r.top_k = o.get("top_k").and_then(Value::as_f64);
    r.max_tokens = o.get("num_predict").and_then(Value::as_i64);
    r.seed = o.get("seed").and_then(Value::as_i64);
    r.stop_sequences = strings(o.get("stop"));
    r.tool_names = req
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| {
                    t.pointer("/function/name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    if config.capture_content {
        r.input_messages = if generate {
            Some(
                json!([{"role": "user", "parts": [{"type": "text", "content": req.get("prompt")}]}]),
            )
        } else {
            req.get("messages").and_then(Value::as_array).map(|m| {
                Value::Array(
                    m.iter()
                        .map(|m| {
                            json!({"role": m.get("role").and_then(Value::as_str).unwrap_or("user"),
                                        "parts": [{"type": "text", "content": m.get("content")}]})
                        })
                        .collect(),
                )
            })
        };
    }
    let Some(view) = view else { return };
    if view.status >= 400 {
        return;
    }
    let objects = view.ndjson();
    if call.request.stream {
        call.first_chunk_ns = objects.first().and_then(|(_, t)| *t);
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut done = None;
    for (o, _) in &objects {
        if call.response.model.is_none() {
            call.response.model = str_field(o, "model");
        }
        let piece = if generate {
            o.get("response")
        } else {
            o.pointer("/message/content")
        };
        if let Some(t) = piece.and_then(Value::as_str) {
            text.push_str(t);
        }
        for tc in o
            .pointer("/message/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            calls.push(ToolCall {
                id: str_field(tc, "id"),
                name: tc
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: tc
                    .pointer("/function/arguments")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".to_string()),
            });
        }
        if o.get("done").and_then(Value::as_bool) == Some(true) {
            done = Some(o.clone());
        }
    }
    call.response.reached_end = done.is_some();
    match done {
        Some(last) => {
            let reason = str_field(&last, "done_reason").unwrap_or_else(|| "stop".to_string());
            let resp = &mut call.response;
            resp.usage.input_tokens = last.get("prompt_eval_count").and_then(Value::as_i64);
            resp.usage.output_tokens = last.get("eval_count").and_then(Value::as_i64);
            if config.capture_content {
                let finish = if calls.is_empty() {
                    reason.as_str()
                } else {
                    "tool_call"
                };
                let t = (!text.is_empty()).then_some(text.as_str());
                resp.output_messages =
                    Some(json!([content::output_message(t, &calls, Some(finish))]));
            }
            resp.finish_reasons = vec![reason];
        }
        None if call.http.bytes_lost == 0 => {
            call.response.finish_reasons = vec!["error".to_string()];
            call.error = Some(stream_interrupted(
                "the stream ended before the object with done: true",
            ));
        }
        None => {}
    }
    call.response.tool_calls = calls;
}
