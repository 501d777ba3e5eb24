//! What a model API's wire format is to the genai stage, and how the one an exchange speaks is
//! chosen from the registry ([`super::DIALECTS`]). A dialect is recognised by its path and
//! request body shape, never by host alone, so a compatible server on any host still parses.

use serde_json::Value;

use super::{history::History, view::ResponseView, GenAiConfig, LlmCall};

/// One model API's wire format. Implement it in a file of its own and add the value to
/// [`super::DIALECTS`]: nothing else names a dialect.
pub trait Dialect: Sync {
    /// Names the dialect in tests and logs (`openai.chat_completions`).
    fn name(&self) -> &'static str;

    /// `gen_ai.provider.name` for a host that is not a known provider's: the telemetry flavour
    /// the API speaks (genai-spec §1.6).
    fn provider(&self) -> &'static str;

    /// Whether a POST to `path` is this API's call: the path names the API, the request body's
    /// shape confirms it. `request` is Null when the body was damaged in capture: the path alone
    /// decides then (see [`has`]).
    fn by_path(&self, path: &str, request: &Value) -> bool;

    /// When no path was decoded (HTTP/2 headers the capture could not decode): whether the
    /// response's first object is this API's answer; each API's own objects tell them apart.
    /// An API known only by its path keeps the default, never.
    fn answers_with(&self, _first: &FirstObject) -> bool {
        false
    }

    /// Then whether the request body (Null when not captured) has this API's shape too: a
    /// request alone is not enough, `messages` and `model` are common to several APIs.
    fn asked_with(&self, _request: &Value) -> bool {
        false
    }

    /// Fills `call` (its HTTP facts and provider are set) from the request body and the decoded
    /// response (None when there was none or it could not be decoded; an error status is
    /// already the call's error).
    fn parse(
        &self,
        path: &str,
        request: &Value,
        response: Option<&ResponseView<'_>>,
        config: &GenAiConfig,
        call: &mut LlmCall,
    );

    /// What places the call in its agent run (see [`History`]), built whether or not content
    /// is captured. An API without a conversation keeps the default, none.
    fn history(&self, _request: &Value, _with_content: bool) -> History {
        History::default()
    }
}

/// Whether the request has `key`, or is Null (damaged in capture, or not captured), which
/// rules nothing out.
pub fn has(request: &Value, key: &str) -> bool {
    request.is_null() || request.get(key).is_some()
}

/// The first JSON object of a response body, whatever its framing (one JSON value, the first
/// server-sent event with JSON data, a JSON array's first element, NDJSON's first line).
pub struct FirstObject {
    /// Its server-sent event's name.
    pub event: Option<String>,
    pub value: Value,
    /// The body was server-sent events.
    pub sse: bool,
}

impl FirstObject {
    pub fn of(view: &ResponseView<'_>) -> Option<Self> {
        if view.is_sse() {
            return view.sse().into_iter().find_map(|(e, _)| {
                let value: Value = serde_json::from_str(&e.data).ok()?;
                value.is_object().then_some(FirstObject {
                    event: e.event,
                    value,
                    sse: true,
                })
            });
        }
        let first = match view.json() {
            Some(Value::Array(items)) => items.into_iter().next(),
            Some(v) => Some(v),
            None => view.ndjson().into_iter().next().map(|(v, _)| v),
        }?;
        first.is_object().then_some(FirstObject {
            event: None,
            value: first,
            sse: false,
        })
    }

    /// A string field, empty when absent.
    pub fn text(&self, key: &str) -> &str {
        self.value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn has(&self, key: &str) -> bool {
        self.value.get(key).is_some()
    }
}

/// The dialect of a request by its method and path, confirmed by its body's shape (Null when
/// the body was damaged in capture: the path alone decides then). Model APIs are all POSTs.
pub fn by_path(method: &str, path: &str, request: &Value) -> Option<&'static dyn Dialect> {
    if method != "POST" {
        return None;
    }
    super::DIALECTS
        .iter()
        .copied()
        .find(|d| d.by_path(path, request))
}

/// Without a path: the dialect whose answer the response's first object is, if the request
/// (Null when not captured) has that API's shape too.
pub fn by_bodies(
    request: &Value,
    response: Option<&ResponseView<'_>>,
) -> Option<&'static dyn Dialect> {
    let first = FirstObject::of(response?)?;
    super::DIALECTS
        .iter()
        .copied()
        .find(|d| d.answers_with(&first))
        .filter(|d| d.asked_with(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_by_path_and_shape() {
        let j = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        let d = |p: &str, b: &str| by_path("POST", p, &j(b)).map(|d| d.name());
        assert_eq!(
            d("/v1/chat/completions", r#"{"messages":[]}"#),
            Some("openai.chat_completions")
        );
        assert_eq!(d("/chat/completions", r#"{"model":"x"}"#), None);
        assert_eq!(
            d("/v1/responses", r#"{"input":"hi"}"#),
            Some("openai.responses")
        );
        assert_eq!(
            d("/v1/messages", r#"{"messages":[],"max_tokens":5}"#),
            Some("anthropic.messages")
        );
        assert_eq!(
            d("/v1/messages", r#"{"messages":[]}"#),
            None,
            "MCP-style or other /messages APIs are not Anthropic"
        );
        assert_eq!(
            d(
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "{}"
            ),
            Some("gemini.stream_generate_content")
        );
        assert_eq!(
            d("/api/chat", r#"{"model":"llama3.2","messages":[]}"#),
            Some("ollama.chat")
        );
        assert_eq!(
            d("/api/generate", r#"{"model":"llama3.2","prompt":"hi"}"#),
            Some("ollama.generate")
        );
        // Bedrock by path on any host; Converse needs messages, InvokeModel any JSON object.
        assert_eq!(
            d(
                "/model/us.amazon.nova-lite-v1%3A0/converse",
                r#"{"messages":[]}"#
            ),
            Some("bedrock.converse")
        );
        assert_eq!(d("/model/m/converse-stream", r#"{"input":"x"}"#), None);
        assert_eq!(
            d(
                "/model/meta.llama3-8b-instruct-v1%3A0/invoke",
                r#"{"prompt":"hi"}"#
            ),
            Some("bedrock.invoke")
        );
        assert_eq!(
            by_path("GET", "/v1/chat/completions", &Value::Null).map(|d| d.name()),
            None
        );
        // A body lost in capture: the path decides.
        assert_eq!(
            by_path("POST", "/v1/chat/completions", &Value::Null).map(|d| d.name()),
            Some("openai.chat_completions")
        );
    }

    #[test]
    fn dialect_names_are_unique() {
        let mut names: Vec<_> = super::super::DIALECTS.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
