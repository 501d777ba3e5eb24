//! Stage 4, genai: recognises model API calls among HTTP exchanges and extracts the call record.
//! One module per API dialect, each a [`Dialect`] listed in [`DIALECTS`] and chosen by path and
//! body shape (never by host alone), so an OpenAI-, Anthropic-, Bedrock- or Ollama-compatible
//! server on any host still parses. Other JSON APIs become generic HTTP calls.

pub mod anthropic;
pub mod bedrock;
pub mod content;
pub mod dialect;
pub mod gemini;
pub mod history;
pub mod mcp;
pub mod ollama;
pub mod openai;
pub mod provider;
pub mod semconv;
pub mod view;

use std::borrow::Cow;

use serde_json::Value;

pub use dialect::Dialect;
pub use view::ResponseView;

use crate::{
    model::{header, BodyCut, ConnKey, ExchangeEnd, Headers, HttpExchange, Source},
    protocols::{body::decode_content, jsonrpc::RpcExchange},
};
use view::{can_matter, decode_response, DecodedResponse};

/// Every model API dialect we parse, in the order they are tried: the first whose path (or,
/// without one, whose answer) matches is the exchange's. Adding a dialect is a file with a
/// [`Dialect`] implementation, its `mod` line above and its line here.
pub static DIALECTS: &[&dyn Dialect] = &[
    &bedrock::Runtime(bedrock::Operation::Converse),
    &bedrock::Runtime(bedrock::Operation::ConverseStream),
    &bedrock::Runtime(bedrock::Operation::Invoke),
    &bedrock::Runtime(bedrock::Operation::InvokeStream),
    &openai::Chat,
    &openai::Responses,
    &openai::Embeddings,
    &anthropic::Messages,
    &gemini::GenerateContent { stream: false },
    &gemini::GenerateContent { stream: true },
    &ollama::Ollama { generate: false },
    &ollama::Ollama { generate: true },
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cache_read_input_tokens: Option<i64>,
    pub cache_creation_input_tokens: Option<i64>,
    pub reasoning_output_tokens: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// Request parameters, as sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LlmRequest {
    pub model: Option<String>,
    pub stream: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<f64>,
    pub max_tokens: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub choice_count: Option<i64>,
    pub stop_sequences: Vec<String>,
    /// Names of the tools offered to the model.
    pub tool_names: Vec<String>,
    pub conversation_id: Option<String>,
    /// `gen_ai.input.messages`, only built when content capture is on.
    pub input_messages: Option<Value>,
    /// `gen_ai.system_instructions` (APIs that carry it apart from the messages), content only.
    pub system_instructions: Option<Value>,
    /// What places the call in its agent run (fingerprints, tool results), always built.
    pub history: history::History,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LlmResponse {
    pub id: Option<String>,
    pub model: Option<String>,
    pub finish_reasons: Vec<String>,
    pub usage: Usage,
    pub tool_calls: Vec<ToolCall>,
    pub system_fingerprint: Option<String>,
    pub service_tier: Option<String>,
    /// `gen_ai.output.messages`, only built when content capture is on.
    pub output_messages: Option<Value>,
    /// The answer reached its API's own end: a stream's terminal event (`[DONE]`,
    /// `response.completed`, `message_stop`, ...) or a whole JSON document. What the transport
    /// still owed after it (a chunked body's last chunk, HTTP/2's END_STREAM) carries nothing
    /// more, and clients close without reading it: a close after this end cut nothing off.
    pub reached_end: bool,
    /// When a streamed answer's first tool call was complete (the time of the event that closed
    /// it), if before the answer's end: agents such as Codex start the tool right then, while
    /// the rest of the stream is still arriving, so the tool's window opens there.
    pub tools_requested_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmError {
    /// Low-cardinality: provider error code, else the HTTP status, else a transport reason.
    pub error_type: String,
    pub message: Option<String>,
}

/// One call to a model API, with everything the spans and metrics need.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmCall {
    /// The HTTP exchange that carried it: connection, method, path, status, sizes, times. Its
    /// `interrupted` is also in `error` (as the call's failure, unless the API said why first).
    pub http: HttpCall,
    pub provider: String,
    /// `gen_ai.operation.name`.
    pub operation: &'static str,
    /// `openai.api.type` for OpenAI dialects.
    pub api_type: Option<&'static str>,
    pub request: LlmRequest,
    pub response: LlmResponse,
    pub error: Option<LlmError>,
    /// CLOCK_MONOTONIC nanoseconds: the first response chunk (the call's start and end are
    /// `http`'s).
    pub first_chunk_ns: Option<u64>,
}

/// The HTTP facts of an exchange: a generic client span of its own for any other JSON API, and
/// the transport part of a model or MCP call.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpCall {
    pub conn: ConnKey,
    /// Empty when HPACK could not decode it.
    pub method: String,
    pub url_path: String,
    /// None when no response came, or its `:status` could not be decoded.
    pub status: Option<u16>,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    /// CLOCK_MONOTONIC nanoseconds: first request byte, end of the response (or the request).
    pub start_ns: u64,
    pub end_ns: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// Bytes of this exchange the capture lost.
    pub bytes_lost: u64,
    /// Why the exchange ended early, if it did.
    pub interrupted: Option<&'static str>,
    /// HTTP/2 connection the tracer joined after it started (see [`HttpExchange`]).
    pub http2_joined_mid_connection: bool,
    /// HTTP/2 header fields that could not be decoded: the method, path, status or headers
    /// left out were unknown, not absent.
    pub http2_incomplete_headers: bool,
    /// A content-encoded body decoded to more than the body limit: what was read of it is its
    /// start only.
    pub body_decoded_truncated: bool,
    /// Why the request's or the response's kept body stops before the body did (the body
    /// limit, or the memory budget): the call was read from its start only.
    pub request_body_cut: Option<BodyCut>,
    pub response_body_cut: Option<BodyCut>,
}

/// An MCP JSON-RPC request, with what carried it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpExchange {
    pub transport: McpTransport,
    pub mcp: mcp::McpCall,
}

#[derive(Clone, Debug, PartialEq)]
pub enum McpTransport {
    /// The HTTP exchange that carried the request.
    Http(HttpCall),
    Stdio(StdioCall),
}

/// A request on a server's stdin and its answer on its stdout (or the other way round).
#[derive(Clone, Debug, PartialEq)]
pub struct StdioCall {
    pub conn: ConnKey,
    /// CLOCK_MONOTONIC nanoseconds: the request line's first byte, the response line's end.
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes_lost: u64,
    /// Why no answer came, if none did.
    pub interrupted: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Llm(Box<LlmCall>),
    Mcp(Box<McpExchange>),
    Http(HttpCall),
}

impl Call {
    /// A body of the exchange decoded to more than the body limit (see
    /// [`HttpCall::body_decoded_truncated`]).
    pub fn body_decoded_truncated(&self) -> bool {
        match self {
            Call::Llm(llm) => llm.http.body_decoded_truncated,
            Call::Mcp(mcp) => match &mcp.transport {
                McpTransport::Http(http) => http.body_decoded_truncated,
                McpTransport::Stdio(_) => false,
            },
            Call::Http(http) => http.body_decoded_truncated,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenAiConfig {
    pub capture_content: bool,
    /// Most bytes a content-encoded body is decoded to (`--max-body-bytes`, the bound on the
    /// bodies the protocols keep).
    pub max_body_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GenAiError {
    #[error("request body is not JSON: {0}")]
    RequestJson(String),
}

/// What this exchange is: a model call, another JSON API call, or nothing we report.
pub fn recognise(
    exchange: &HttpExchange,
    config: &GenAiConfig,
) -> Option<Result<Call, GenAiError>> {
    let req = &exchange.request;
    let path = req.target.split('?').next().unwrap_or_default();
    let headers_unknown = req.http2_incomplete_headers
        || exchange
            .response
            .as_ref()
            .is_some_and(|r| r.http2_incomplete_headers);
    // LLM APIs are all POSTs: a method HPACK could not decode does not rule one out (it is
    // only used to choose, never reported).
    let method = if req.method.is_empty() && headers_unknown {
        "POST"
    } else {
        req.method.as_str()
    };
    let limit = config.max_body_bytes;
    // An encoded request body is decoded when it may be a model or JSON-RPC request; an upload
    // of another type is not, whatever it inflates to.
    let request_can_matter = headers_unknown
        || header(&req.headers, "content-type").is_none()
        || is_json(&req.headers)
        || dialect::by_path(method, path, &Value::Null).is_some();
    let encoding = header(&req.headers, "content-encoding").filter(|_| request_can_matter);
    let (body, request_truncated) = match decode_content(encoding, &req.body, limit) {
        Ok(b) => (b.bytes, b.truncated),
        Err(_) if req.bytes_lost > 0 => (Cow::Borrowed(&b""[..]), false),
        Err(e) => return Some(Err(GenAiError::RequestJson(e.to_string()))),
    };
    let json: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            // The path names the API; a body damaged in capture (or cut at the limit) still
            // makes a call, so the loss shows on a span.
            Err(_) if req.bytes_lost > 0 || request_truncated => Value::Null,
            Err(e)
                if dialect::by_path(method, path, &Value::Null).is_some()
                    && is_json(&req.headers) =>
            {
                return Some(Err(GenAiError::RequestJson(e.to_string())))
            }
            Err(_) => Value::Null,
        }
    };
    let decode = |r| decode_response(r, limit);
    // The response is decoded at most once, and only when a parser reads it: here when only
    // the bodies can say which API this is, else below for a model or MCP call.
    let mut decoded_response: Option<Option<DecodedResponse<'_>>> = None;
    let dialect = dialect::by_path(method, path, &json).or_else(|| {
        // No path decoded: the bodies may still say which API this is.
        if !(headers_unknown && path.is_empty()) {
            return None;
        }
        let decoded = decoded_response.insert(exchange.response.as_ref().map(decode));
        dialect::by_bodies(&json, decoded.as_ref().and_then(|r| r.as_ref().ok()))
    });
    let Some(dialect) = dialect else {
        let mut http = generic_http(exchange, path)?;
        let decoded_response = match decoded_response {
            Some(decoded) => decoded,
            // Only a JSON-RPC request's answer is read (MCP), and only one that can be JSON.
            None if method == "POST" && mcp::request(&json).is_some() => exchange
                .response
                .as_ref()
                .filter(|r| can_matter(r))
                .map(decode),
            None => None,
        };
        let view = decoded_response.and_then(Result::ok);
        http.body_decoded_truncated =
            request_truncated || view.as_ref().is_some_and(|v| v.decoded_truncated);
        if method == "POST" {
            if let Some(mcp) = mcp::parse(&json, exchange, view.as_ref()) {
                return Some(Ok(Call::Mcp(Box::new(McpExchange {
                    transport: McpTransport::Http(http),
                    mcp,
                }))));
            }
        }
        return Some(Ok(Call::Http(http)));
    };
    let decoded_response =
        decoded_response.unwrap_or_else(|| exchange.response.as_ref().map(decode));
    let http = http_call(exchange, path);
    let mut call = LlmCall {
        provider: provider::provider_name(http.server_address.as_deref(), dialect).to_string(),
        http,
        operation: "chat",
        api_type: None,
        request: LlmRequest::default(),
        response: LlmResponse::default(),
        error: None,
        first_chunk_ns: None,
    };
    let view = response_view(exchange, decoded_response, &mut call);
    call.http.body_decoded_truncated =
        request_truncated || view.as_ref().is_some_and(|v| v.decoded_truncated);
    dialect.parse(path, &json, view.as_ref(), config, &mut call);
    call.request.history = dialect.history(&json, config.capture_content);
    if let ExchangeEnd::Interrupted(reason) = exchange.end {
        if call.response.reached_end {
            // The answer is whole; only the transport's own end was never read.
            call.http.interrupted = None;
        } else {
            call.error.get_or_insert(LlmError {
                error_type: reason.to_string(),
                message: Some(match &exchange.response {
                    Some(_) => "the response was cut short".to_string(),
                    None => "no response was received".to_string(),
                }),
            });
        }
    }
    Some(Ok(Call::Llm(Box::new(call))))
}

/// The MCP call a JSON-RPC exchange on a process's stdio makes.
pub fn recognise_rpc(exchange: &RpcExchange) -> Option<Call> {
    let mcp = mcp::from_messages(
        &exchange.request,
        exchange.response.as_ref(),
        exchange.protocol_version.clone(),
    )?;
    Some(Call::Mcp(Box::new(McpExchange {
        transport: McpTransport::Stdio(StdioCall {
            conn: exchange.conn,
            start_ns: exchange.start_ns,
            end_ns: exchange.end_ns,
            bytes_lost: exchange.bytes_lost,
            interrupted: match exchange.end {
                ExchangeEnd::Interrupted(reason) => Some(reason),
                ExchangeEnd::Complete => None,
            },
        }),
        mcp,
    })))
}

fn is_json(headers: &Headers) -> bool {
    header(headers, "content-type").is_some_and(|ct| ct.contains("json"))
}

/// Exchanges with a JSON API (by either side's content type) become generic HTTP calls; the rest
/// of a host's HTTP (package managers, health checks) is not reported.
fn generic_http(exchange: &HttpExchange, path: &str) -> Option<HttpCall> {
    let req = &exchange.request;
    let response = exchange.response.as_ref();
    let headers_unknown =
        req.http2_incomplete_headers || response.is_some_and(|r| r.http2_incomplete_headers);
    let json_api = is_json(&req.headers)
        || response.is_some_and(|r| is_json(&r.headers))
        // Content types HPACK could not decode: the bodies tell.
        || (headers_unknown
            && (looks_json(&req.body) || response.is_some_and(|r| looks_json(&r.body))));
    json_api.then(|| http_call(exchange, path))
}

/// What the exchange says about itself over HTTP.
fn http_call(exchange: &HttpExchange, path: &str) -> HttpCall {
    let req = &exchange.request;
    let headers_unknown = req.http2_incomplete_headers
        || exchange
            .response
            .as_ref()
            .is_some_and(|r| r.http2_incomplete_headers);
    let (server_address, server_port) = provider::server_of(
        header(&req.headers, "host"),
        &exchange.peer,
        exchange.conn.source == Source::Tls,
    );
    HttpCall {
        conn: exchange.conn,
        method: req.method.clone(),
        url_path: crate::model::redact::redact_text(path).into_owned(),
        // 0: an HTTP/2 `:status` that could not be decoded.
        status: exchange
            .response
            .as_ref()
            .map(|r| r.status)
            .filter(|s| *s != 0),
        server_address,
        server_port,
        start_ns: req.start_ns,
        end_ns: exchange
            .response
            .as_ref()
            .map(|r| r.end_ns)
            .unwrap_or(req.end_ns),
        request_body_bytes: req.body_len,
        response_body_bytes: exchange.response.as_ref().map(|r| r.body_len).unwrap_or(0),
        bytes_lost: req.bytes_lost
            + exchange
                .response
                .as_ref()
                .map(|r| r.bytes_lost)
                .unwrap_or(0),
        interrupted: match exchange.end {
            ExchangeEnd::Interrupted(reason) => Some(reason),
            ExchangeEnd::Complete => None,
        },
        http2_joined_mid_connection: exchange.http2_joined_mid_connection,
        http2_incomplete_headers: headers_unknown,
        body_decoded_truncated: false,
        request_body_cut: req.body_cut,
        response_body_cut: exchange.response.as_ref().and_then(|r| r.body_cut),
    }
}

/// A JSON document, or server-sent events (whose data is JSON in every API we know).
fn looks_json(body: &[u8]) -> bool {
    let text = body.trim_ascii_start();
    text.starts_with(b"data:")
        || text.starts_with(b"event:")
        || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// The decoded response (`decoded`, None when there is none) for a dialect parser; a body that
/// cannot be decoded records an error on the call (unless capture lost bytes of it, which the
/// span reports instead).
fn response_view<'a>(
    exchange: &HttpExchange,
    decoded: Option<DecodedResponse<'a>>,
    call: &mut LlmCall,
) -> Option<ResponseView<'a>> {
    let view = match decoded? {
        Ok(view) => view,
        Err(_) if exchange.response.as_ref().is_some_and(|r| r.bytes_lost > 0) => return None,
        Err(e) => {
            call.error = Some(LlmError {
                error_type: "body_decode".to_string(),
                message: Some(e.to_string()),
            });
            return None;
        }
    };
    if view.status >= 400 {
        call.error = Some(api_error(view.status, &view.body));
    }
    Some(view)
}

/// The error in an API error body, in any provider's shape: OpenAI `{"error":{"code","type",
/// "message"}}`, Anthropic `{"type":"error","error":{"type","message"}}`, Gemini
/// `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message"}}`, Ollama `{"error":"..."}`.
pub fn api_error(status: u16, body: &[u8]) -> LlmError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let fallback = status.to_string();
    match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(err @ Value::Object(_)) => error_from_object(err, &fallback),
        Some(Value::String(message)) => LlmError {
            error_type: fallback,
            message: Some(message.clone()),
        },
        _ => LlmError {
            error_type: fallback,
            message: None,
        },
    }
}

/// The most specific identifier an error object carries.
pub fn error_from_object(err: &Value, fallback: &str) -> LlmError {
    let text = |k: &str| err.get(k).and_then(Value::as_str).map(str::to_string);
    let code = match err.get("code") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    LlmError {
        error_type: code
            .or_else(|| text("status"))
            .or_else(|| text("type"))
            .unwrap_or_else(|| fallback.to_string()),
        message: text("message"),
    }
}

/// A string field.
pub(crate) fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Strings from a string or an array of strings.
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_providers_error_shape() {
        let e = |body: &str| api_error(429, body.as_bytes());
        assert_eq!(e(r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#).error_type, "rate_limit_exceeded");
        assert_eq!(
            e(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
                .error_type,
            "overloaded_error"
        );
        assert_eq!(
            e(r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#)
                .error_type,
            "RESOURCE_EXHAUSTED"
        );
        let ollama = e(r#"{"error":"model not found"}"#);
        assert_eq!(
            (ollama.error_type.as_str(), ollama.message.as_deref()),
            ("429", Some("model not found"))
        );
        assert_eq!(e("<html>").error_type, "429");
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn empty_call() -> LlmCall {
        LlmCall {
            http: HttpCall {
                conn: ConnKey {
                    pid: 1,
                    source: Source::Tls,
                    conn_id: 1,
                },
                method: "POST".into(),
                url_path: "/".into(),
                status: Some(200),
                server_address: None,
                server_port: None,
                start_ns: 0,
                end_ns: 0,
                request_body_bytes: 0,
                response_body_bytes: 0,
                bytes_lost: 0,
                interrupted: None,
                http2_joined_mid_connection: false,
                http2_incomplete_headers: false,
                body_decoded_truncated: false,
                request_body_cut: None,
                response_body_cut: None,
            },
            provider: "openai".into(),
            operation: "chat",
            api_type: None,
            request: LlmRequest::default(),
            response: LlmResponse::default(),
            error: None,
            first_chunk_ns: None,
        }
    }
}
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod fixture_tests;
