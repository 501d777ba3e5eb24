//! What the agent stage needs to put a call into its run, taken from every request whether or
//! not content is captured: a fingerprint of each conversation item as sent, and the tool
//! results the request carries. The fingerprints are hashes, never content, so they cost nothing
//! in privacy; a run's next request repeats the previous one's items as its prefix.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use super::Dialect;

/// The result of a tool call, as the agent sent it back to the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolResult {
    /// The model's tool-call id (`call_…`, `toolu_…`); Gemini may have none, then the name.
    pub call_id: Option<String>,
    pub name: Option<String>,
    /// The API says the tool failed (Anthropic `is_error`, Bedrock `status: error`).
    pub is_error: bool,
    /// The result as text; only kept when content capture is on.
    pub content: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// One fingerprint per conversation item in order, instructions first.
    pub items: Vec<u64>,
    pub tool_results: Vec<ToolResult>,
    /// OpenAI Responses: the response this request continues (its items are not re-sent).
    pub previous_response_id: Option<String>,
    /// OpenAI Responses `"generate": false` (Codex CLI's prewarm at the start of a session): the
    /// server takes the context and returns a response id the next request continues, but
    /// generates nothing, so its empty answer is no final answer and does not end the run.
    pub warmup: bool,
}

pub fn fingerprint(value: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    // Value's Display is compact JSON: the same item sent twice by one client hashes the same.
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// A stable id for a conversation: its first items (instructions and the first user turn).
pub fn conversation_id(items: &[u64]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let mut hasher = DefaultHasher::new();
    items[..items.len().min(2)].hash(&mut hasher);
    Some(format!("{:016x}", hasher.finish()))
}

pub fn of(dialect: Dialect, request: &Value, with_content: bool) -> History {
    let mut history = History::default();
    let push_all = |history: &mut History, items: Option<&Value>| match items {
        Some(Value::Array(items)) => history.items.extend(items.iter().map(fingerprint)),
        Some(Value::Null) | None => {}
        Some(single) => history.items.push(fingerprint(single)),
    };
    match dialect {
        Dialect::OpenAiChat | Dialect::Ollama { .. } => {
            push_all(&mut history, request.get("messages"));
            push_all(&mut history, request.get("prompt"));
            for message in array(request.get("messages")) {
                if message.get("role").and_then(Value::as_str) == Some("tool") {
                    history.tool_results.push(ToolResult {
                        call_id: text(message.get("tool_call_id")),
                        name: text(message.get("name")).or(text(message.get("tool_name"))),
                        is_error: false,
                        content: with_content.then(|| content_text(message.get("content"))),
                    });
                }
            }
        }
        Dialect::OpenAiResponses => {
            push_all(&mut history, request.get("instructions"));
            push_all(&mut history, request.get("input"));
            history.previous_response_id = text(request.get("previous_response_id"));
            history.warmup = request.get("generate") == Some(&Value::Bool(false));
            for item in array(request.get("input")) {
                if item.get("type").and_then(Value::as_str) == Some("function_call_output") {
                    history.tool_results.push(ToolResult {
                        call_id: text(item.get("call_id")),
                        name: None,
                        is_error: false,
                        content: with_content.then(|| content_text(item.get("output"))),
                    });
                }
            }
        }
        Dialect::Anthropic => {
            push_all(&mut history, request.get("system"));
            push_all(&mut history, request.get("messages"));
            for message in array(request.get("messages")) {
                for block in array(message.get("content")) {
                    if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                        history.tool_results.push(ToolResult {
                            call_id: text(block.get("tool_use_id")),
                            name: None,
                            is_error: block.get("is_error").and_then(Value::as_bool) == Some(true),
                            content: with_content.then(|| content_text(block.get("content"))),
                        });
                    }
                }
            }
        }
        Dialect::Gemini { .. } => {
            push_all(
                &mut history,
                request
                    .get("systemInstruction")
                    .or(request.get("system_instruction")),
            );
            push_all(&mut history, request.get("contents"));
            for content in array(request.get("contents")) {
                for part in array(content.get("parts")) {
                    let Some(response) = part
                        .get("functionResponse")
                        .or(part.get("function_response"))
                    else {
                        continue;
                    };
                    history.tool_results.push(ToolResult {
                        call_id: text(response.get("id")),
                        name: text(response.get("name")),
                        is_error: response.pointer("/response/error").is_some(),
                        content: with_content.then(|| content_text(response.get("response"))),
                    });
                }
            }
        }
        Dialect::Bedrock(op) => {
            if super::bedrock::anthropic_body(op, request) {
                return of(Dialect::Anthropic, request, with_content);
            }
            if !matches!(
                op,
                super::bedrock::Operation::Converse | super::bedrock::Operation::ConverseStream
            ) {
                return history;
            }
            push_all(&mut history, request.get("system"));
            push_all(&mut history, request.get("messages"));
            for message in array(request.get("messages")) {
                for block in array(message.get("content")) {
                    let Some(result) = block.get("toolResult") else {
                        continue;
                    };
                    history.tool_results.push(ToolResult {
                        call_id: text(result.get("toolUseId")),
                        name: None,
                        is_error: result.get("status").and_then(Value::as_str) == Some("error"),
                        content: with_content.then(|| content_text(result.get("content"))),
                    });
                }
            }
        }
        Dialect::OpenAiEmbeddings => {}
    }
    history
}

fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_string)
}

/// A tool result as text: strings as they are, text blocks joined, anything else as JSON.
fn content_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks))
            if blocks
                .iter()
                .all(|b| b.get("text").and_then(Value::as_str).is_some()) =>
        {
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_loop_step_extends_the_previous_request() {
        let first = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"}]});
        let second = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]});
        let a = of(Dialect::OpenAiChat, &first, false);
        let b = of(Dialect::OpenAiChat, &second, true);
        assert_eq!(a.items.len(), 2);
        assert_eq!(b.items[..2], a.items[..]);
        assert_eq!(
            b.tool_results,
            vec![ToolResult {
                call_id: Some("call_1".into()),
                name: None,
                is_error: false,
                content: Some("sunny".into()),
            }]
        );
        assert_eq!(conversation_id(&a.items), conversation_id(&b.items));
        let without_content = of(Dialect::OpenAiChat, &second, false);
        assert_eq!(without_content.tool_results[0].content, None);
    }

    #[test]
    fn anthropic_tool_results_carry_is_error() {
        let req = json!({"system": "s", "max_tokens": 10, "messages": [
            {"role": "user", "content": "go"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "is_error": true, "content": [{"type": "text", "text": "boom"}]}]}]});
        let h = of(Dialect::Anthropic, &req, true);
        assert_eq!(h.items.len(), 3);
        assert!(h.tool_results[0].is_error);
        assert_eq!(h.tool_results[0].content.as_deref(), Some("boom"));
    }

    #[test]
    fn responses_and_gemini_results() {
        let req = json!({"previous_response_id": "resp_1", "input": [
            {"type": "function_call_output", "call_id": "call_9", "output": "42"}]});
        let h = of(Dialect::OpenAiResponses, &req, false);
        assert_eq!(h.previous_response_id.as_deref(), Some("resp_1"));
        assert_eq!(h.tool_results[0].call_id.as_deref(), Some("call_9"));
        assert!(!h.warmup);
        let prewarm = json!({"generate": false, "input": [{"role": "user", "content": "hi"}]});
        assert!(of(Dialect::OpenAiResponses, &prewarm, false).warmup);
        let req = json!({"contents": [{"role": "user", "parts": [{"functionResponse":
            {"name": "lookup", "response": {"error": "nope"}}}]}]});
        let h = of(Dialect::Gemini { stream: false }, &req, false);
        assert_eq!(h.tool_results[0].name.as_deref(), Some("lookup"));
        assert!(h.tool_results[0].is_error);
    }

    #[test]
    fn bedrock_converse_tool_results_and_anthropic_bodies() {
        let req = json!({"system": [{"text": "s"}], "messages": [
            {"role": "user", "content": [{"text": "go"}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1",
                "status": "error", "content": [{"text": "boom"}]}}]}]});
        let h = of(
            Dialect::Bedrock(super::super::bedrock::Operation::Converse),
            &req,
            true,
        );
        assert_eq!(h.items.len(), 3);
        assert_eq!(h.tool_results[0].call_id.as_deref(), Some("tooluse_1"));
        assert!(h.tool_results[0].is_error);
        assert_eq!(h.tool_results[0].content.as_deref(), Some("boom"));
        let anthropic = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]});
        let h = of(
            Dialect::Bedrock(super::super::bedrock::Operation::Invoke),
            &anthropic,
            false,
        );
        assert_eq!(h.items.len(), 1);
        // Other families' InvokeModel bodies may carry messages and max_tokens too.
        let mistral = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5});
        assert!(!super::super::bedrock::anthropic_body(
            super::super::bedrock::Operation::Invoke,
            &mistral
        ));
    }

    #[test]
    fn different_conversations_have_different_ids() {
        let a = of(
            Dialect::OpenAiChat,
            &json!({"messages": [{"role": "user", "content": "a"}]}),
            false,
        );
        let b = of(
            Dialect::OpenAiChat,
            &json!({"messages": [{"role": "user", "content": "b"}]}),
            false,
        );
        assert_ne!(conversation_id(&a.items), conversation_id(&b.items));
        assert_eq!(conversation_id(&[]), None);
    }
}
