//! Scripted tool loops for real coding agents (Claude Code, Gemini CLI) on the mock server,
//! chosen by the agent's own User-Agent: the model asks the agent's shell tool to run
//! [`TOOL_COMMAND`], and once the request carries the tool's result it answers with a final
//! text that quotes that result, so the agent's output proves the command really ran.
//!
//! The side requests these agents make are answered the way the real APIs would: Claude Code's
//! `count_tokens` and non-streamed calls, Gemini CLI's model-routing classifier (a
//! `generateContent` with a JSON schema, answered with JSON that fits it) and `countTokens`.
//!
//! Every model call served is recorded with the id, model and token counts it was answered
//! with ([`ServedCall`]), so a test can check the tracer's span for each one. Streams send each
//! event as its own frame `STREAM_EVENT_GAP` apart (own TLS record, flushed), as the real APIs
//! do.

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::Response;
use serde_json::{json, Value};

use crate::{
    mock_openai::Body,
    mock_providers::{json_response, streamed},
};

/// The command the scripted model asks the agent's shell tool to run: an external program (so
/// the tool's process tree has an exec of it), whose output is known.
pub const TOOL_COMMAND: &str = "expr 6 + 36";
pub const TOOL_OUTPUT: &str = "42";
/// The final answer's text is this followed by the tool's output as the agent reported it.
pub const FINAL_TEXT_PREFIX: &str = "The command printed: ";

/// Claude Code's shell tool, and the id of the tool_use the script asks for.
pub const CLAUDE_CODE_TOOL: &str = "Bash";
pub const CLAUDE_CODE_TOOL_USE_ID: &str = "toolu_real_agent_bash_01";
/// The model the Anthropic script answers as (the request's model is Claude Code's choice).
pub const CLAUDE_CODE_RESPONSE_MODEL: &str = "claude-sonnet-4-5-20250929";

/// Gemini CLI's shell tool.
pub const GEMINI_CLI_TOOL: &str = "run_shell_command";
/// The `modelVersion` the Gemini script answers with.
pub const GEMINI_RESPONSE_MODEL: &str = "gemini-2.5-pro-001";

/// Token counts as the provider's API reports them (not the conventions' derived counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServedUsage {
    /// Anthropic `input_tokens` (excluding the cache); Gemini `promptTokenCount` (including it).
    pub input: i64,
    /// Anthropic `output_tokens`; Gemini `candidatesTokenCount`.
    pub output: i64,
    /// Anthropic `cache_read_input_tokens`; Gemini `cachedContentTokenCount`.
    pub cache_read: i64,
    /// Anthropic `cache_creation_input_tokens` (Gemini has none).
    pub cache_creation: i64,
    /// Gemini `thoughtsTokenCount` (Anthropic reports none separately).
    pub thoughts: i64,
}

/// What the script answered a model call with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedCall {
    /// The model the agent asked for (Anthropic: the body's `model`; Gemini: the path's).
    pub request_model: String,
    pub response_id: String,
    pub response_model: String,
    pub usage: ServedUsage,
    pub stream: bool,
    /// The step of the loop: `tool_call`, `final` or `side` (a request outside the loop).
    pub step: &'static str,
    /// The finish reason as the API wrote it (`tool_use`, `end_turn`, `STOP`).
    pub finish_reason: &'static str,
}

/// A scripted answer, and the model call it served (none for token counting).
pub struct Scripted {
    pub response: Response<Body>,
    pub served: Option<ServedCall>,
}

/// The scripted answer for a request from a known agent (by its User-Agent), if it is one.
pub fn respond(path: &str, user_agent: Option<&str>, req: &Value) -> Option<Scripted> {
    let agent = user_agent.unwrap_or_default();
    if agent.starts_with("claude-cli/") {
        return claude_code(path, req);
    }
    if agent.starts_with("GeminiCLI") {
        return gemini_cli(path, req);
    }
    None
}

/// A fresh number for each model call served, so every response id is unique across tests.
fn next_sequence() -> u64 {
    static SEQUENCE: AtomicU64 = AtomicU64::new(1);
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

// Claude Code: Anthropic Messages.

fn claude_code(path: &str, req: &Value) -> Option<Scripted> {
    if path.ends_with("/v1/messages/count_tokens") {
        return Some(Scripted {
            response: json_response(json!({"input_tokens": 2048}), false),
            served: None,
        });
    }
    if !path.ends_with("/v1/messages") {
        return None;
    }
    let stream = req["stream"].as_bool().unwrap_or(false);
    let offers_shell = req["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|t| t["name"] == CLAUDE_CODE_TOOL));
    let (step, usage, blocks, finish_reason) = match (offers_shell, tool_result_anthropic(req)) {
        (true, None) => (
            "tool_call",
            ServedUsage {
                input: 1204,
                output: 47,
                cache_read: 5120,
                cache_creation: 380,
                thoughts: 0,
            },
            vec![
                json!({"type": "text", "text": "I'll run that."}),
                json!({"type": "tool_use", "id": CLAUDE_CODE_TOOL_USE_ID, "name": CLAUDE_CODE_TOOL,
                       "input": {"command": TOOL_COMMAND, "description": "Add two numbers"}}),
            ],
            "tool_use",
        ),
        (true, Some(result)) => (
            "final",
            ServedUsage {
                input: 1391,
                output: 23,
                cache_read: 5500,
                cache_creation: 0,
                thoughts: 0,
            },
            vec![json!({"type": "text", "text": format!("{FINAL_TEXT_PREFIX}{result}")})],
            "end_turn",
        ),
        // A request outside the loop (a title, a quota probe): a short plain answer.
        (false, _) => (
            "side",
            ServedUsage {
                input: 311,
                output: 9,
                cache_read: 0,
                cache_creation: 0,
                thoughts: 0,
            },
            vec![json!({"type": "text", "text": "Adding numbers"})],
            "end_turn",
        ),
    };
    let served = ServedCall {
        request_model: req["model"].as_str().unwrap_or_default().to_string(),
        response_id: format!("msg_real_agent_{step}_{:04}", next_sequence()),
        response_model: CLAUDE_CODE_RESPONSE_MODEL.to_string(),
        usage,
        stream,
        step,
        finish_reason,
    };
    let response = if stream {
        streamed(
            "text/event-stream; charset=utf-8",
            anthropic_events(&served, &blocks),
        )
    } else {
        json_response(
            json!({
            "id": served.response_id, "type": "message", "role": "assistant",
            "model": served.response_model, "content": blocks,
            "stop_reason": finish_reason, "stop_sequence": null,
            "usage": anthropic_usage(&usage, usage.output)}),
            false,
        )
    };
    Some(Scripted {
        response,
        served: Some(served),
    })
}

fn anthropic_usage(usage: &ServedUsage, output: i64) -> Value {
    json!({"input_tokens": usage.input, "cache_creation_input_tokens": usage.cache_creation,
           "cache_read_input_tokens": usage.cache_read, "output_tokens": output,
           "service_tier": "standard"})
}

/// The text of the tool_result answering the script's tool_use, when the request carries one.
fn tool_result_anthropic(req: &Value) -> Option<String> {
    let block = req["messages"]
        .as_array()?
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == CLAUDE_CODE_TOOL_USE_ID)?;
    let text = match &block["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    Some(text.trim().to_string())
}

/// The Messages stream of `blocks`, as the API sends it: `message_start` with the input
/// usage, each block's start, its deltas (tool input as partial JSON in two pieces), its stop,
/// then `message_delta` with the stop reason and output usage, and `message_stop`.
fn anthropic_events(served: &ServedCall, blocks: &[Value]) -> Vec<String> {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": served.response_id, "type": "message",
            "role": "assistant", "model": served.response_model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": anthropic_usage(&served.usage, 1)}}),
        json!({"type": "ping"}),
    ];
    for (index, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("tool_use") => {
                events.push(json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}));
                let input = block["input"].to_string();
                let (first, second) = input.split_at(input.len() / 2);
                for piece in [first, second] {
                    events.push(json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}));
                }
            }
            _ => {
                events.push(json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}}));
                events.push(json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": block["text"]}}));
            }
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": served.finish_reason, "stop_sequence": null},
        "usage": {"output_tokens": served.usage.output}}));
    events.push(json!({"type": "message_stop"}));
    events
        .into_iter()
        .map(|e| {
            let name = e["type"].as_str().unwrap_or("message").to_string();
            format!("event: {name}\ndata: {e}\n\n")
        })
        .collect()
}

// Gemini CLI: Generative Language API.

fn gemini_cli(path: &str, req: &Value) -> Option<Scripted> {
    if path.ends_with(":countTokens") {
        return Some(Scripted {
            response: json_response(json!({"totalTokens": 2048}), false),
            served: None,
        });
    }
    let stream = path.ends_with(":streamGenerateContent");
    if !stream && !path.ends_with(":generateContent") {
        return None;
    }
    let offers_shell = req["tools"].as_array().is_some_and(|tools| {
        tools
            .iter()
            .filter_map(|t| t["functionDeclarations"].as_array())
            .flatten()
            .any(|f| f["name"] == GEMINI_CLI_TOOL)
    });
    let schema = req
        .pointer("/generationConfig/responseJsonSchema")
        .or(req.pointer("/generationConfig/responseSchema"));
    let (step, usage, parts) = match (offers_shell, function_response_gemini(req), schema) {
        (true, None, _) => (
            "tool_call",
            ServedUsage {
                input: 8123,
                output: 31,
                cache_read: 4096,
                cache_creation: 0,
                thoughts: 112,
            },
            vec![json!({"functionCall": {"name": GEMINI_CLI_TOOL,
                "args": {"command": TOOL_COMMAND, "description": "Add two numbers"}}})],
        ),
        (true, Some(result), _) => (
            "final",
            ServedUsage {
                input: 8347,
                output: 12,
                cache_read: 8064,
                cache_creation: 0,
                thoughts: 40,
            },
            vec![json!({"text": format!("{FINAL_TEXT_PREFIX}{result}")})],
        ),
        // The model router's classifier and other structured side requests: JSON that fits.
        (false, _, Some(schema)) => (
            "side",
            ServedUsage {
                input: 1020,
                output: 18,
                cache_read: 0,
                cache_creation: 0,
                thoughts: 0,
            },
            vec![json!({"text": fill_schema(schema).to_string()})],
        ),
        (false, _, None) => (
            "side",
            ServedUsage {
                input: 640,
                output: 6,
                cache_read: 0,
                cache_creation: 0,
                thoughts: 0,
            },
            vec![json!({"text": "Adding numbers"})],
        ),
    };
    let served = ServedCall {
        request_model: gemini_model(path).to_string(),
        response_id: format!("gemini-real-agent-{step}-{:04}", next_sequence()),
        response_model: GEMINI_RESPONSE_MODEL.to_string(),
        usage,
        stream,
        step,
        finish_reason: "STOP",
    };
    let usage_metadata = gemini_usage(&usage);
    let chunk = |parts: Value, last: bool| {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        let mut chunk = json!({"candidates": [], "modelVersion": served.response_model,
                               "responseId": served.response_id});
        if last {
            candidate["finishReason"] = json!("STOP");
            chunk["usageMetadata"] = usage_metadata.clone();
        } else {
            chunk["usageMetadata"] = json!({"trafficType": "ON_DEMAND"});
        }
        chunk["candidates"] = json!([candidate]);
        chunk
    };
    let response = if stream {
        // alt=sse: a thought first, then the answer's parts with the usage in the last chunk.
        let thought = json!([{"text": "**Planning** I should run it.", "thought": true}]);
        let frames = [chunk(thought, false), chunk(Value::Array(parts), true)]
            .iter()
            .map(|c| format!("data: {c}\r\n\r\n"))
            .collect();
        streamed("text/event-stream", frames)
    } else {
        json_response(chunk(Value::Array(parts), true), false)
    };
    Some(Scripted {
        response,
        served: Some(served),
    })
}

/// `gemini-x` of `/v1beta/models/gemini-x:streamGenerateContent`.
fn gemini_model(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or_default();
    name.split(':').next().unwrap_or_default()
}

fn gemini_usage(usage: &ServedUsage) -> Value {
    json!({"promptTokenCount": usage.input, "candidatesTokenCount": usage.output,
           "cachedContentTokenCount": usage.cache_read, "thoughtsTokenCount": usage.thoughts,
           "totalTokenCount": usage.input + usage.output + usage.thoughts,
           "trafficType": "ON_DEMAND",
           "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.input}]})
}

/// The output of the script's function call as the agent reported it, when the request
/// carries a functionResponse for the shell tool.
fn function_response_gemini(req: &Value) -> Option<String> {
    let response = req["contents"]
        .as_array()?
        .iter()
        .filter_map(|c| c["parts"].as_array())
        .flatten()
        .find_map(|p| {
            let f = p.get("functionResponse")?;
            (f["name"] == GEMINI_CLI_TOOL).then(|| f["response"].clone())
        })?;
    let text = response["output"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| response.to_string());
    // Gemini CLI wraps the output ("Output: 42\nProcess Group PGID: ..."): keep the output line.
    let output = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Output:"))
        .unwrap_or(&text);
    Some(output.trim().to_string())
}

/// A value fitting a (Gemini OpenAPI-style or JSON) schema: enums take their first value,
/// numbers a low score, strings a short reason.
fn fill_schema(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    let kind = schema["type"]
        .as_str()
        .unwrap_or("OBJECT")
        .to_ascii_uppercase();
    match kind.as_str() {
        "OBJECT" => Value::Object(
            schema["properties"]
                .as_object()
                .map(|props| {
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), fill_schema(v)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "ARRAY" => json!([fill_schema(&schema["items"])]),
        "INTEGER" | "NUMBER" => json!(10),
        "BOOLEAN" => json!(false),
        _ => json!("A single explicit shell command."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_classifier_gets_json_that_fits_its_schema() {
        let schema = json!({"type": "OBJECT", "properties": {
            "complexity_reasoning": {"type": "STRING"},
            "complexity_score": {"type": "INTEGER"},
            "next_speaker": {"type": "string", "enum": ["user", "model"]}}});
        let filled = fill_schema(&schema);
        assert_eq!(filled["complexity_score"], 10);
        assert!(filled["complexity_reasoning"].is_string());
        assert_eq!(filled["next_speaker"], "user");
    }

    #[test]
    fn tool_results_are_read_as_each_agent_reports_them() {
        let claude = json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": CLAUDE_CODE_TOOL_USE_ID, "content": "42\n"}]}]});
        assert_eq!(tool_result_anthropic(&claude).as_deref(), Some("42"));
        let gemini = json!({"contents": [{"role": "user", "parts": [{"functionResponse": {
            "name": GEMINI_CLI_TOOL, "response": {"output":
            "<untrusted_context>\nOutput: 42\nProcess Group PGID: 18404\n</untrusted_context>"}}}]}]});
        assert_eq!(function_response_gemini(&gemini).as_deref(), Some("42"));
    }
}
