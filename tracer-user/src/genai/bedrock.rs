//! AWS Bedrock Runtime's native API, `POST /model/{modelId}/{operation}` on any host (the model
//! id percent-decoded from the path: a foundation model, an inference profile such as
//! `us.anthropic.claude-…`, or an ARN). What is covered:
//!
//! - **Converse** and **ConverseStream**, fully: `inferenceConfig` (maxTokens, temperature,
//!   topP, stopSequences), `additionalModelRequestFields.top_k`/`topK`, the tools offered
//!   (`toolConfig.tools[].toolSpec.name`), the answer's text and `toolUse` blocks (id, name,
//!   input; streamed input fragments joined), `stopReason`, every `usage` count, content when
//!   captured. The stream's time to first chunk is its first `contentBlockDelta` message.
//! - **InvokeModel** and **InvokeModelWithResponseStream** with an Anthropic Messages body
//!   (`anthropic_version`, e.g. `bedrock-2023-05-31`): everything the Anthropic dialect reads,
//!   the stream's `chunk` events being base64-wrapped Anthropic stream events.
//! - InvokeModel* with another model family's body (Llama, Titan, Nova, Cohere, Mistral, ...):
//!   the model, operation, status and errors; max tokens, temperature and top_p where the body
//!   uses one of the common spellings; token counts from the `x-amzn-bedrock-*-token-count`
//!   response headers, or a stream's `amazon-bedrock-invocationMetrics`. No finish reasons,
//!   tool calls or content for these.
//! - Errors: a non-2xx answer's type from `x-amzn-errortype` (the part before `:`), else the
//!   body's `__type` or `code`, else the status; an event-stream exception (`throttlingException`,
//!   `modelStreamErrorException`, ...) or error message becomes the call's error.
//!
//! Bedrock bodies carry no response id: `gen_ai.response.id` is the `x-amzn-RequestId` header
//! (what AWS support asks for), unless an Anthropic body has its own `id`. Converse answers do
//! not name the model that served them, so `gen_ai.response.model` is only set for Anthropic
//! bodies. Not covered: the OpenAI-compatible `/openai/v1` routes (parsed as OpenAI by path),
//! CountTokens, ApplyGuardrail, asynchronous invocation, bidirectional streams.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};

use super::{
    anthropic,
    dialect::Dialect,
    history::{self, History, ToolResult},
    openai::stream_interrupted,
    str_field, strings, GenAiConfig, LlmCall, LlmError, ResponseView, ToolCall, Usage,
};
use crate::protocols::{
    eventstream::{EventMessage, EventStreamError},
    sse::SseEvent,
};

/// One Bedrock Runtime operation, recognised by its path only (never from bodies alone).
pub struct Runtime(pub Operation);

impl Dialect for Runtime {
    fn name(&self) -> &'static str {
        match self.0 {
            Operation::Converse => "bedrock.converse",
            Operation::ConverseStream => "bedrock.converse_stream",
            Operation::Invoke => "bedrock.invoke",
            Operation::InvokeStream => "bedrock.invoke_with_response_stream",
        }
    }

    fn provider(&self) -> &'static str {
        "aws.bedrock"
    }

    fn by_path(&self, path: &str, request: &Value) -> bool {
        Operation::of_path(path).is_some_and(|(op, _)| op == self.0) && self.0.body_fits(request)
    }

    fn parse(
        &self,
        path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        config: &GenAiConfig,
        call: &mut LlmCall,
    ) {
        let model = Operation::of_path(path).map_or("", |(_, m)| m);
        parse(self.0, model, request, response, config, call);
    }

    fn history(&self, request: &Value, with_content: bool) -> History {
        if anthropic_body(self.0, request) {
            return anthropic::Messages.history(request, with_content);
        }
        let mut history = History::default();
        if !matches!(self.0, Operation::Converse | Operation::ConverseStream) {
            return history;
        }
        history.push_items(request.get("system"));
        history.push_items(request.get("messages"));
        for message in history::array(request.get("messages")) {
            for block in history::array(message.get("content")) {
                let Some(result) = block.get("toolResult") else {
                    continue;
                };
                history.tool_results.push(ToolResult {
                    call_id: history::text(result.get("toolUseId")),
                    name: None,
                    is_error: result.get("status").and_then(Value::as_str) == Some("error"),
                    content: with_content.then(|| history::content_text(result.get("content"))),
                });
            }
        }
        history
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Converse,
    ConverseStream,
    Invoke,
    InvokeStream,
}

impl Operation {
    /// The operation and the (still percent-encoded) model id of `…/model/{modelId}/{op}`.
    pub fn of_path(path: &str) -> Option<(Self, &str)> {
        let after = &path[path.find("/model/")? + "/model/".len()..];
        let (model, op) = after.rsplit_once('/')?;
        let op = match op {
            "converse" => Operation::Converse,
            "converse-stream" => Operation::ConverseStream,
            "invoke" => Operation::Invoke,
            "invoke-with-response-stream" => Operation::InvokeStream,
            _ => return None,
        };
        (!model.is_empty()).then_some((op, model))
    }

    fn streams(self) -> bool {
        matches!(self, Operation::ConverseStream | Operation::InvokeStream)
    }

    /// Whether a request body of this shape is this operation's (`Null`: damaged in capture).
    pub fn body_fits(self, json: &Value) -> bool {
        match self {
            Operation::Converse | Operation::ConverseStream => {
                json.is_null()
                    || json.get("messages").is_some()
                    || json.get("promptVariables").is_some()
            }
            // The body is the model family's own JSON: any object.
            Operation::Invoke | Operation::InvokeStream => json.is_null() || json.is_object(),
        }
    }
}

/// InvokeModel with an Anthropic Messages body: Bedrock requires its `anthropic_version`
/// (other families' bodies can have `messages` and `max_tokens` too).
pub fn anthropic_body(op: Operation, req: &Value) -> bool {
    matches!(op, Operation::Invoke | Operation::InvokeStream)
        && req.get("anthropic_version").is_some()
}

fn parse(
    op: Operation,
    raw_model: &str,
    req: &Value,
    view: Option<&ResponseView<'_>>,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    let model = percent_encoding::percent_decode_str(raw_model)
        .decode_utf8_lossy()
        .into_owned();
    let anthropic_body = anthropic_body(op, req);
    match op {
        Operation::Converse | Operation::ConverseStream => converse_request(req, config, call),
        _ if anthropic_body => anthropic::parse_request(req, "", config, call),
        _ => other_request(req, &model, call),
    }
    call.request.model = Some(model);
    call.request.stream = op.streams();
    let Some(view) = view else { return };
    if view.status >= 400 {
        call.error = Some(http_error(view));
    } else if view.is_event_stream() {
        let (messages, framing) = view.event_stream();
        match op {
            Operation::ConverseStream => converse_stream(&messages, config, call),
            _ => invoke_stream(&messages, anthropic_body, config, call),
        }
        if let Some(e) = framing {
            let error = match e {
                EventStreamError::Truncated(_) => stream_interrupted(&e.to_string()),
                _ => LlmError {
                    error_type: "body_decode".to_string(),
                    message: Some(e.to_string()),
                },
            };
            // A modelled exception says more than the framing that followed it.
            if call
                .error
                .as_ref()
                .is_none_or(|c| c.error_type == "stream_interrupted")
            {
                call.error = Some(error);
            }
        }
    } else if let Some(v) = view.json() {
        call.response.reached_end = true;
        match op {
            Operation::Converse => converse_response(&v, config, call),
            _ if anthropic_body => anthropic::parse_message(&v, config, call),
            _ => {}
        }
    }
    if call.response.id.is_none() {
        call.response.id = view.header("x-amzn-requestid").map(str::to_string);
    }
    // InvokeModel answers count tokens in headers, whatever the model family.
    let counted = |name: &str| view.header(name).and_then(|v| v.trim().parse::<i64>().ok());
    let usage = &mut call.response.usage;
    if usage.input_tokens.is_none() && usage.output_tokens.is_none() {
        usage.input_tokens = counted("x-amzn-bedrock-input-token-count");
        usage.output_tokens = counted("x-amzn-bedrock-output-token-count");
    }
}

/// A non-2xx answer: `x-amzn-errortype: ThrottlingException:http://internal.amazon.com/…` and a
/// `{"message": "…"}` body (restJson1).
fn http_error(view: &ResponseView<'_>) -> LlmError {
    let body = view.json().unwrap_or(Value::Null);
    let header_type = view
        .header("x-amzn-errortype")
        .map(|t| t.split(':').next().unwrap_or_default().trim().to_string())
        .filter(|t| !t.is_empty());
    // `aws.protocoltests#ThrottlingException:http://…` in bodies that carry the type.
    let body_type = str_field(&body, "__type").map(|t| {
        let t = t.split(':').next().unwrap_or_default();
        t.rsplit('#').next().unwrap_or(t).to_string()
    });
    LlmError {
        error_type: header_type
            .or(body_type)
            .or_else(|| str_field(&body, "code"))
            .unwrap_or_else(|| view.status.to_string()),
        message: str_field(&body, "message").or_else(|| str_field(&body, "Message")),
    }
}

/// An exception or error message inside an event stream.
fn stream_error(m: &EventMessage) -> Option<LlmError> {
    let message = || {
        serde_json::from_slice::<Value>(&m.payload)
            .ok()
            .and_then(|v| str_field(&v, "message").or_else(|| str_field(&v, "Message")))
    };
    match m.message_type.as_deref() {
        Some("exception") => Some(LlmError {
            error_type: m
                .exception_type
                .clone()
                .unwrap_or_else(|| "stream_exception".to_string()),
            message: message(),
        }),
        Some("error") => Some(LlmError {
            error_type: m
                .error_code
                .clone()
                .unwrap_or_else(|| "stream_error".to_string()),
            message: m.error_message.clone(),
        }),
        _ => None,
    }
}

// Converse.

fn converse_request(req: &Value, config: &GenAiConfig, call: &mut LlmCall) {
    call.operation = "chat";
    let r = &mut call.request;
    let inference = req.get("inferenceConfig").unwrap_or(&Value::Null);
    r.max_tokens = inference.get("maxTokens").and_then(Value::as_i64);
    r.temperature = inference.get("temperature").and_then(Value::as_f64);
    r.top_p = inference.get("topP").and_then(Value::as_f64);
    r.stop_sequences = strings(inference.get("stopSequences"));
    let extra = req
        .get("additionalModelRequestFields")
        .unwrap_or(&Value::Null);
    r.top_k = extra
        .get("top_k")
        .or_else(|| extra.get("topK"))
        .and_then(Value::as_f64);
    r.tool_names = req
        .pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/toolSpec/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    if config.capture_content {
        r.input_messages = req
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| input_messages(m));
        r.system_instructions = req.get("system").and_then(Value::as_array).map(|blocks| {
            Value::Array(
                blocks
                    .iter()
                    .filter_map(|b| b.get("text"))
                    .map(|t| json!({"type": "text", "content": t}))
                    .collect(),
            )
        });
    }
}

fn input_messages(messages: &[Value]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let parts: Vec<Value> = m
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(block_part)
                    .collect();
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                // A user turn carrying only tool results is the tool speaking.
                let role = if !parts.is_empty()
                    && parts.iter().all(|p| p["type"] == "tool_call_response")
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

/// One Converse content block (a union: the key names the kind).
fn block_part(b: &Value) -> Option<Value> {
    let (kind, v) = b.as_object()?.iter().next()?;
    Some(match kind.as_str() {
        "text" => json!({"type": "text", "content": v}),
        "toolUse" => json!({"type": "tool_call", "id": v.get("toolUseId"),
                            "name": v.get("name"), "arguments": v.get("input")}),
        "toolResult" => json!({"type": "tool_call_response", "id": v.get("toolUseId"),
                               "response": v.get("content")}),
        "reasoningContent" => {
            json!({"type": "reasoning", "content": v.pointer("/reasoningText/text")})
        }
        // Cache markers are not content.
        "cachePoint" => return None,
        other => json!({"type": other}),
    })
}

fn converse_response(v: &Value, config: &GenAiConfig, call: &mut LlmCall) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(u) = block.get("toolUse") {
            calls.push(ToolCall {
                id: str_field(u, "toolUseId"),
                name: str_field(u, "name").unwrap_or_default(),
                arguments: u
                    .get("input")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".to_string()),
            });
        }
    }
    if let Some(u) = v.get("usage") {
        call.response.usage = usage(u);
    }
    anthropic::finish(call, str_field(v, "stopReason"), (text, calls), config);
}

/// The conventions count cached tokens as input; Bedrock's `inputTokens` leaves them out
/// (`totalTokens` is input + output + cache reads + cache writes).
fn usage(u: &Value) -> Usage {
    let int = |k: &str| u.get(k).and_then(Value::as_i64);
    let cache_read = int("cacheReadInputTokens");
    let cache_write = int("cacheWriteInputTokens");
    Usage {
        input_tokens: int("inputTokens")
            .map(|i| i + cache_read.unwrap_or(0) + cache_write.unwrap_or(0)),
        output_tokens: int("outputTokens"),
        cache_read_input_tokens: cache_read,
        cache_creation_input_tokens: cache_write,
        reasoning_output_tokens: None,
    }
}

/// A streamed content block being reassembled.
#[derive(Default)]
struct Block {
    text: String,
    tool: Option<(Option<String>, String)>,
    /// `toolUse.input` fragments, joined.
    input: String,
}

fn converse_stream(
    messages: &[(EventMessage, Option<u64>)],
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    let mut blocks: BTreeMap<i64, Block> = BTreeMap::new();
    let mut stop = None;
    let mut ended = false;
    let mut first_delta = true;
    for (m, at) in messages {
        if let Some(e) = stream_error(m) {
            call.error = Some(e);
            continue;
        }
        let Ok(data) = serde_json::from_slice::<Value>(&m.payload) else {
            continue;
        };
        let index = data
            .get("contentBlockIndex")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        match m.event_type.as_deref() {
            Some("contentBlockStart") => {
                if let Some(t) = data.pointer("/start/toolUse") {
                    blocks.entry(index).or_default().tool = Some((
                        str_field(t, "toolUseId"),
                        str_field(t, "name").unwrap_or_default(),
                    ));
                }
            }
            Some("contentBlockDelta") => {
                if first_delta {
                    first_delta = false;
                    call.first_chunk_ns = *at;
                }
                let block = blocks.entry(index).or_default();
                let delta = data.get("delta").unwrap_or(&Value::Null);
                if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    if config.capture_content {
                        block.text.push_str(t);
                    }
                }
                if let Some(i) = delta.pointer("/toolUse/input").and_then(Value::as_str) {
                    block.input.push_str(i);
                }
            }
            Some("messageStop") => stop = str_field(&data, "stopReason"),
            Some("metadata") => {
                ended = true;
                if let Some(u) = data.get("usage") {
                    call.response.usage = usage(u);
                }
            }
            _ => {}
        }
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks.into_values() {
        text.push_str(&block.text);
        if let Some((id, name)) = block.tool {
            calls.push(ToolCall {
                id,
                name,
                arguments: if block.input.trim().is_empty() {
                    "{}".to_string()
                } else {
                    block.input
                },
            });
        }
    }
    anthropic::finish(call, stop, (text, calls), config);
    call.response.reached_end = ended;
    if !ended && call.error.is_none() {
        call.error = Some(stream_interrupted(
            "the event stream ended before its metadata event",
        ));
    }
}

// InvokeModel with the model family's own body.

/// The model family's JSON, as far as its common spellings go.
fn other_request(req: &Value, model: &str, call: &mut LlmCall) {
    call.operation = if model.contains("embed") {
        "embeddings"
    } else if req.get("messages").is_some() {
        "chat"
    } else if req.get("prompt").is_some() || req.get("inputText").is_some() {
        "text_completion"
    } else {
        "chat"
    };
    let first = |paths: &[&str]| paths.iter().find_map(|p| req.pointer(p)).cloned();
    let r = &mut call.request;
    r.max_tokens = first(&[
        "/max_tokens",
        "/max_gen_len",
        "/textGenerationConfig/maxTokenCount",
        "/inferenceConfig/max_new_tokens",
    ])
    .and_then(|v| v.as_i64());
    r.temperature = first(&[
        "/temperature",
        "/textGenerationConfig/temperature",
        "/inferenceConfig/temperature",
    ])
    .and_then(|v| v.as_f64());
    r.top_p = first(&[
        "/top_p",
        "/p",
        "/textGenerationConfig/topP",
        "/inferenceConfig/top_p",
    ])
    .and_then(|v| v.as_f64());
}

fn invoke_stream(
    messages: &[(EventMessage, Option<u64>)],
    anthropic_body: bool,
    config: &GenAiConfig,
    call: &mut LlmCall,
) {
    let mut events = Vec::new();
    for (m, at) in messages {
        if let Some(e) = stream_error(m) {
            call.error = Some(e);
            continue;
        }
        if m.event_type.as_deref() != Some("chunk") {
            continue;
        }
        // `{"bytes": "<base64 of the model's own chunk JSON>"}`
        let Some(chunk) = serde_json::from_slice::<Value>(&m.payload)
            .ok()
            .and_then(|v| str_field(&v, "bytes"))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
        else {
            continue;
        };
        events.push((
            SseEvent {
                event: None,
                data: chunk,
                id: None,
                end_offset: m.end_offset,
            },
            *at,
        ));
    }
    call.first_chunk_ns = events.first().and_then(|(_, t)| *t);
    if anthropic_body {
        anthropic::parse_stream(&events, config, call);
    } else {
        // Every family's last chunk carries the invocation's counts.
        for (e, _) in &events {
            let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
                continue;
            };
            if let Some(m) = v.get("amazon-bedrock-invocationMetrics") {
                call.response.reached_end = true;
                let int = |k: &str| m.get(k).and_then(Value::as_i64);
                call.response.usage.input_tokens = int("inputTokenCount");
                call.response.usage.output_tokens = int("outputTokenCount");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_model_ids_from_paths() {
        let p = Operation::of_path;
        assert_eq!(
            p("/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"),
            Some((
                Operation::Converse,
                "us.anthropic.claude-3-5-haiku-20241022-v1%3A0"
            ))
        );
        assert_eq!(
            p("/model/m/converse-stream"),
            Some((Operation::ConverseStream, "m"))
        );
        assert_eq!(p("/model/m/invoke"), Some((Operation::Invoke, "m")));
        // An ARN whose slash the client left unencoded, behind a proxy's prefix.
        assert_eq!(
            p("/bedrock/model/arn:aws:bedrock:us-east-1:1:inference-profile/us.x/invoke-with-response-stream"),
            Some((
                Operation::InvokeStream,
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.x"
            ))
        );
        assert_eq!(p("/model//converse"), None);
        assert_eq!(p("/model/m/embed"), None);
        assert_eq!(p("/models/m/converse"), None);
    }

    #[test]
    fn body_shapes() {
        let j = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(Operation::Converse.body_fits(&j(r#"{"messages":[]}"#)));
        assert!(!Operation::Converse.body_fits(&j(r#"{"inputText":"x"}"#)));
        assert!(Operation::Invoke.body_fits(&j(r#"{"inputText":"x"}"#)));
        assert!(!Operation::Invoke.body_fits(&j("[1]")));
        assert!(Operation::InvokeStream.body_fits(&Value::Null));
    }

    #[test]
    fn other_families_common_parameters() {
        let mut call = super::super::tests_support::empty_call();
        let body = serde_json::json!({"inputText": "hi", "textGenerationConfig":
            {"maxTokenCount": 50, "temperature": 0.3, "topP": 0.9}});
        other_request(&body, "amazon.titan-text-express-v1", &mut call);
        assert_eq!(call.operation, "text_completion");
        assert_eq!(call.request.max_tokens, Some(50));
        assert_eq!(call.request.temperature, Some(0.3));
        assert_eq!(call.request.top_p, Some(0.9));
        let llama = serde_json::json!({"prompt": "hi", "max_gen_len": 64, "temperature": 0.5});
        other_request(&llama, "meta.llama3-8b-instruct-v1:0", &mut call);
        assert_eq!(call.request.max_tokens, Some(64));
        other_request(
            &serde_json::json!({"inputText": "x"}),
            "amazon.titan-embed-text-v2:0",
            &mut call,
        );
        assert_eq!(call.operation, "embeddings");
    }

    #[test]
    fn usage_counts_cache_tokens_as_input() {
        let u = usage(
            &serde_json::json!({"inputTokens": 10, "outputTokens": 5, "totalTokens": 1515,
            "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 500}),
        );
        assert_eq!(u.input_tokens, Some(1510));
        assert_eq!(u.cache_read_input_tokens, Some(1000));
        assert_eq!(u.cache_creation_input_tokens, Some(500));
        assert_eq!(u.output_tokens, Some(5));
    }
}
