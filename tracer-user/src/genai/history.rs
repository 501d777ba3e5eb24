//! What the agent stage needs to put a call into its run, taken from every request whether or
//! not content is captured: a fingerprint of each conversation item as sent, and the tool
//! results the request carries. The fingerprints are hashes, never content, so they cost nothing
//! in privacy; a run's next request repeats the previous one's items as its prefix.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

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

impl History {
    /// Fingerprints the conversation items `items` holds (an array's elements, or one item).
    pub fn push_items(&mut self, items: Option<&Value>) {
        match items {
            Some(Value::Array(items)) => self.items.extend(items.iter().map(fingerprint)),
            Some(Value::Null) | None => {}
            Some(single) => self.items.push(fingerprint(single)),
        }
    }
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

pub(crate) fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_string)
}

/// A tool result as text: strings as they are, text blocks joined, anything else as JSON.
pub(crate) fn content_text(value: Option<&Value>) -> String {
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
    use crate::genai::{anthropic, bedrock, gemini, openai, Dialect};

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
        let a = openai::Chat.history(&first, false);
        let b = openai::Chat.history(&second, true);
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
        let without_content = openai::Chat.history(&second, false);
        assert_eq!(without_content.tool_results[0].content, None);
    }

    #[test]
    fn anthropic_tool_results_carry_is_error() {
        let req = json!({"system": "s", "max_tokens": 10, "messages": [
            {"role": "user", "content": "go"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "is_error": true, "content": [{"type": "text", "text": "boom"}]}]}]});
        let h = anthropic::Messages.history(&req, true);
        assert_eq!(h.items.len(), 3);
        assert!(h.tool_results[0].is_error);
        assert_eq!(h.tool_results[0].content.as_deref(), Some("boom"));
    }

    #[test]
    fn responses_and_gemini_results() {
        let req = json!({"previous_response_id": "resp_1", "input": [
            {"type": "function_call_output", "call_id": "call_9", "output": "42"}]});
        let h = openai::Responses.history(&req, false);
        assert_eq!(h.previous_response_id.as_deref(), Some("resp_1"));
        assert_eq!(h.tool_results[0].call_id.as_deref(), Some("call_9"));
        assert!(!h.warmup);
        let prewarm = json!({"generate": false, "input": [{"role": "user", "content": "hi"}]});
        assert!(openai::Responses.history(&prewarm, false).warmup);
        let req = json!({"contents": [{"role": "user", "parts": [{"functionResponse":
            {"name": "lookup", "response": {"error": "nope"}}}]}]});
        let h = gemini::GenerateContent { stream: false }.history(&req, false);
        assert_eq!(h.tool_results[0].name.as_deref(), Some("lookup"));
        assert!(h.tool_results[0].is_error);
    }

    #[test]
    fn bedrock_converse_tool_results_and_anthropic_bodies() {
        let req = json!({"system": [{"text": "s"}], "messages": [
            {"role": "user", "content": [{"text": "go"}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1",
                "status": "error", "content": [{"text": "boom"}]}}]}]});
        let h = bedrock::Runtime(bedrock::Operation::Converse).history(&req, true);
        assert_eq!(h.items.len(), 3);
        assert_eq!(h.tool_results[0].call_id.as_deref(), Some("tooluse_1"));
        assert!(h.tool_results[0].is_error);
        assert_eq!(h.tool_results[0].content.as_deref(), Some("boom"));
        let anthropic = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]});
        let h = bedrock::Runtime(bedrock::Operation::Invoke).history(&anthropic, false);
        assert_eq!(h.items.len(), 1);
        // Other families' InvokeModel bodies may carry messages and max_tokens too.
        let mistral = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5});
        assert!(!bedrock::anthropic_body(
            bedrock::Operation::Invoke,
            &mistral
        ));
    }

    #[test]
    fn different_conversations_have_different_ids() {
        let a = openai::Chat.history(
            &json!({"messages": [{"role": "user", "content": "a"}]}),
            false,
        );
        let b = openai::Chat.history(
            &json!({"messages": [{"role": "user", "content": "b"}]}),
            false,
        );
        assert_ne!(conversation_id(&a.items), conversation_id(&b.items));
        assert_eq!(conversation_id(&[]), None);
    }
}
