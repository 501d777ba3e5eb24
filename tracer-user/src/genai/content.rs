//! Message content in the semantic conventions' JSON shape, and the size cap applied before any
//! of it leaves the process.

use serde_json::{json, Value};

use super::ToolCall;

pub fn tool_call_part(id: Option<&str>, name: &str, arguments: &str) -> Value {
    // "expected to be an object": keep the text only when it is not JSON.
    let arguments = serde_json::from_str::<Value>(arguments)
        .unwrap_or_else(|_| Value::String(arguments.to_string()));
    json!({"type": "tool_call", "id": id, "name": name, "arguments": arguments})
}

pub fn output_message(text: Option<&str>, calls: &[ToolCall], finish: Option<&str>) -> Value {
    let mut parts = Vec::new();
    if let Some(t) = text {
        parts.push(json!({"type": "text", "content": t}));
    }
    for c in calls {
        parts.push(tool_call_part(c.id.as_deref(), &c.name, &c.arguments));
    }
    json!({"role": "assistant", "parts": parts,
           "finish_reason": normalise_finish_reason(finish.unwrap_or("error"))})
}

/// The conventions' finish reasons; the raw value stays in `gen_ai.response.finish_reasons`.
pub fn normalise_finish_reason(raw: &str) -> &str {
    match raw {
        "tool_calls" | "function_call" | "tool_use" => "tool_call",
        // Anthropic and Bedrock spellings.
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "refusal" | "guardrail_intervened" | "content_filtered" => "content_filter",
        other => other,
    }
}

/// Text cut to at most `max_bytes` (on a character boundary), saying how much was cut.
pub fn capped_text(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated {} bytes]", &text[..end], text.len() - end)
}

/// Serialises `value` to at most `max_bytes`, shortening the longest strings first so the JSON
/// structure survives (genai-spec §1.5 "truncation preserving JSON structure").
pub fn capped_json(value: &Value, max_bytes: usize) -> String {
    let full = value.to_string();
    if full.len() <= max_bytes {
        return full;
    }
    let mut limit = max_bytes;
    while limit >= 16 {
        limit /= 2;
        let shortened = shorten_strings(value, limit).to_string();
        if shortened.len() <= max_bytes {
            return shortened;
        }
    }
    // Even with every string cut the structure is too large: say so instead.
    json!([{"role": "agent_tracer", "parts": [{"type": "text",
        "content": format!("[content of {} bytes omitted: over the {max_bytes}-byte cap]", full.len())}]}])
    .to_string()
}

fn shorten_strings(value: &Value, limit: usize) -> Value {
    match value {
        Value::String(s) if s.len() > limit => {
            let mut end = limit;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}…[truncated {} bytes]", &s[..end], s.len() - end))
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| shorten_strings(v, limit)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), shorten_strings(v, limit)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_structure_and_bound() {
        let big =
            json!([{"role": "user", "parts": [{"type": "text", "content": "é".repeat(10_000)}]}]);
        let out = capped_json(&big, 1000);
        assert!(out.len() <= 1000, "{}", out.len());
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed[0]["role"], "user");
        assert!(parsed[0]["parts"][0]["content"]
            .as_str()
            .unwrap()
            .contains("truncated"));
    }

    #[test]
    fn small_content_is_untouched() {
        let v = json!([{"role": "user"}]);
        assert_eq!(capped_json(&v, 1000), v.to_string());
    }

    #[test]
    fn tool_call_arguments_become_objects() {
        let p = tool_call_part(Some("c1"), "f", "{\"x\":1}");
        assert_eq!(p["arguments"]["x"], 1);
        assert_eq!(
            tool_call_part(None, "f", "not json")["arguments"],
            "not json"
        );
    }
}
