//! Google Gemini generateContent / streamGenerateContent (Generative Language and Vertex hosts):
//! the model in the path, candidates with functionCall parts, usageMetadata with thoughts tokens.

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

/// `POST …/models/{model}:generateContent`, or `:streamGenerateContent` when `stream`.
pub struct GenerateContent {
    pub stream: bool,
}

impl Dialect for GenerateContent {
    fn name(&self) -> &'static str {
        if self.stream {
            "gemini.stream_generate_content"
        } else {
            "gemini.generate_content"
        }
    }

    fn provider(&self) -> &'static str {
        "gcp.gemini"
    }

    fn by_path(&self, path: &str, _request: &Value) -> bool {
        if self.stream {
            path.ends_with(":streamGenerateContent")
        } else {
            path.ends_with(":generateContent")
        }
    }

    /// Without a path, a streamed answer is told by its framing: server-sent events.
    fn answers_with(&self, first: &FirstObject) -> bool {
        first.has("candidates") && first.sse == self.stream
    }

    fn asked_with(&self, request: &Value) -> bool {
        has(request, "contents")
    }

    fn parse(
        &self,
        path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        config: &GenAiConfig,
        call: &mut LlmCall,
    ) {
        parse(request, path, self.stream, response, config, call);
    }

    fn history(&self, request: &Value, with_content: bool) -> History {
        let mut history = History::default();
        history.push_items(
            request
                .get("systemInstruction")
                .or(request.get("system_instruction")),
        );
        history.push_items(request.get("contents"));
        for content in history::array(request.get("contents")) {
            for part in history::array(content.get("parts")) {
                let Some(response) = part
                    .get("functionResponse")
                    .or(part.get("function_response"))
                else {
                    continue;
                };
                history.tool_results.push(ToolResult {
                    call_id: history::text(response.get("id")),
                    name: history::text(response.get("name")),
                    is_error: response.pointer("/response/error").is_some(),
                    content: with_content.then(|| history::content_text(response.get("response"))),
                });
            }
        }
        history
    }
}

fn parse(
    req: &Value,
    path: &str,
    stream: bool,
    view: Option<&ResponseView<'_>>,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    call.operation = "generate_content";
    let r = &mut call.request;
    r.model = path
        .rsplit_once("/models/")
        .and_then(|(_, m)| m.split(':').next())
        .map(str::to_string);
    r.stream = stream;
    let g = req.get("generationConfig").unwrap_or(&Value::Null);
    r.temperature = g.get("temperature").and_then(Value::as_f64);
    r.top_p = g.get("topP").and_then(Value::as_f64);
    r.top_k = g.get("topK").and_then(Value::as_f64);
    r.max_tokens = g.get("maxOutputTokens").and_then(Value::as_i64);
    r.seed = g.get("seed").and_then(Value::as_i64);
    r.choice_count = g
        .get("candidateCount")
        .and_then(Value::as_i64)
        .filter(|n| *n != 1);
    r.stop_sequences = strings(g.get("stopSequences"));
    r.tool_names = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|t| {
            t.get("functionDeclarations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|f| str_field(&f, "name"))
        .collect();
    if config.capture_content {
        r.input_messages = req
            .get("contents")
            .and_then(Value::as_array)
            .map(|c| input_messages(c));
        r.system_instructions = req
            .pointer("/systemInstruction/parts")
            .and_then(Value::as_array)
            .map(|parts| {
                Value::Array(
                    parts
                        .iter()
                        .map(|p| json!({"type": "text", "content": p.get("text")}))
                        .collect(),
                )
            });
    }
    let Some(view) = view else { return };
    if view.status >= 400 {
        return;
    }
    // With alt=sse each event is a whole GenerateContentResponse; without it the stream is one
    // JSON array sent incrementally.
    let sse = view.is_sse();
    let chunks: Vec<(Value, Option<u64>)> = if sse {
        view.sse()
            .into_iter()
            .filter_map(|(e, t)| serde_json::from_str(&e.data).ok().map(|v| (v, t)))
            .collect()
    } else {
        // A whole JSON document (one answer, or the whole streamed array) is the whole answer.
        let whole = view.json();
        call.response.reached_end = whole.is_some();
        match whole {
            Some(Value::Array(items)) => items.into_iter().map(|v| (v, None)).collect(),
            Some(v) => vec![(v, None)],
            None => Vec::new(),
        }
    };
    if stream {
        call.first_chunk_ns = chunks.first().and_then(|(_, t)| *t);
    }
    let mut candidates: BTreeMap<i64, (String, Vec<ToolCall>, Option<String>)> = BTreeMap::new();
    for (chunk, _) in &chunks {
        if let Some(err) = chunk.get("error").filter(|e| e.is_object()) {
            call.error = Some(error_from_object(err, "stream_error"));
        }
        let resp = &mut call.response;
        if let Some(id) = str_field(chunk, "responseId") {
            resp.id = Some(id);
        }
        if let Some(m) = str_field(chunk, "modelVersion") {
            resp.model = Some(m);
        }
        // The last chunk carries the final usage; intermediate ones may carry only trafficType.
        if let Some(u) = chunk
            .get("usageMetadata")
            .filter(|u| u.get("promptTokenCount").is_some())
        {
            resp.usage = usage(u);
        }
        for cand in chunk
            .get("candidates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = cand.get("index").and_then(Value::as_i64).unwrap_or(0);
            let acc = candidates.entry(index).or_default();
            for part in cand
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    acc.0.push_str(t);
                }
                if let Some(f) = part.get("functionCall") {
                    acc.1.push(ToolCall {
                        id: str_field(f, "id"),
                        name: str_field(f, "name").unwrap_or_default(),
                        arguments: f
                            .get("args")
                            .map(Value::to_string)
                            .unwrap_or_else(|| "{}".to_string()),
                    });
                }
            }
            if let Some(reason) = str_field(cand, "finishReason") {
                acc.2 = Some(reason);
            }
        }
    }
    if sse {
        // Gemini has no end-of-stream event: its last chunk is the one whose candidates all
        // carry a finishReason, or, for a blocked prompt, the one that says why (no candidates).
        let blocked = chunks
            .iter()
            .any(|(c, _)| c.pointer("/promptFeedback/blockReason").is_some());
        call.response.reached_end = blocked
            || (!candidates.is_empty()
                && candidates.values().all(|(_, _, reason)| reason.is_some()));
        if !call.response.reached_end && call.error.is_none() {
            call.error = Some(stream_interrupted(
                "the event stream ended before a chunk with finishReason",
            ));
        }
    }
    let mut outputs = Vec::new();
    for (text, calls, reason) in candidates.into_values() {
        let reason = reason.unwrap_or_else(|| "error".to_string());
        if config.capture_content {
            let normalised = match reason.as_str() {
                _ if !calls.is_empty() => "tool_call",
                "STOP" => "stop",
                "MAX_TOKENS" => "length",
                "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => {
                    "content_filter"
                }
                other => other,
            };
            let text = (!text.is_empty()).then_some(text.as_str());
            let mut m = content::output_message(text, &calls, Some(normalised));
            m["finish_reason"] = json!(normalised);
            outputs.push(m);
        }
        call.response.finish_reasons.push(reason);
        call.response.tool_calls.extend(calls);
    }
    if config.capture_content {
        call.response.output_messages = Some(Value::Array(outputs));
    }
}

/// Derived mapping (genai-spec §3.4): thoughts are output tokens not counted in candidates.
fn usage(u: &Value) -> Usage {
    let int = |k: &str| u.get(k).and_then(Value::as_i64);
    let thoughts = int("thoughtsTokenCount");
    Usage {
        input_tokens: int("promptTokenCount")
            .map(|p| p + int("toolUsePromptTokenCount").unwrap_or(0)),
        output_tokens: int("candidatesTokenCount")
            .map(|c| c + thoughts.unwrap_or(0))
            .or(thoughts),
        cache_read_input_tokens: int("cachedContentTokenCount"),
        cache_creation_input_tokens: None,
        reasoning_output_tokens: thoughts,
    }
}

fn input_messages(contents: &[Value]) -> Value {
    Value::Array(
        contents
            .iter()
            .map(|c| {
                let parts: Vec<Value> = c
                    .get("parts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        if let Some(t) = p.get("text") {
                            json!({"type": "text", "content": t})
                        } else if let Some(f) = p.get("functionCall") {
                            json!({"type": "tool_call", "id": f.get("id"), "name": f.get("name"), "arguments": f.get("args")})
                        } else if let Some(f) = p.get("functionResponse") {
                            json!({"type": "tool_call_response", "id": f.get("id"), "response": f.get("response")})
                        } else {
                            json!({"type": "unknown"})
                        }
                    })
                    .collect();
                let role = match c.get("role").and_then(Value::as_str) {
                    Some("model") => "assistant",
                    _ if parts.iter().any(|p| p["type"] == "tool_call_response") => "tool",
                    Some(r) => r,
                    None => "user",
                };
                json!({"role": role, "parts": parts})
            })
            .collect(),
    )
}
