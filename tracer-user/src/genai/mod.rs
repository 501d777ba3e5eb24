//! Stage 4, genai: recognises LLM API calls among HTTP exchanges and extracts the call record.
//! One module per provider dialect; `recognise` picks by path and body shape, so an
//! OpenAI-compatible server on any host still parses.

pub mod content;
pub mod openai;
pub mod provider;
pub mod semconv;

use serde_json::Value;

use crate::{
    protocols::{http1::header, ExchangeEnd, HttpExchange},
    streams::ConnKey,
};

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
    /// Arguments as the model sent them (a JSON text for OpenAI).
    pub arguments: String,
}

/// Request parameters, as sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LlmRequest {
    pub model: Option<String>,
    pub stream: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub choice_count: Option<i64>,
    pub stop_sequences: Vec<String>,
    /// Names of the tools offered to the model.
    pub tool_names: Vec<String>,
    /// `gen_ai.input.messages`, only built when content capture is on.
    pub input_messages: Option<Value>,
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
    pub conn: ConnKey,
    pub provider: String,
    /// `gen_ai.operation.name`.
    pub operation: &'static str,
    /// `openai.api.type` for OpenAI dialects.
    pub api_type: Option<&'static str>,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    pub http_method: String,
    pub url_path: String,
    pub http_status: Option<u16>,
    pub request: LlmRequest,
    pub response: LlmResponse,
    pub error: Option<LlmError>,
    /// CLOCK_MONOTONIC nanoseconds: first request byte, first response chunk, end.
    pub start_ns: u64,
    pub first_chunk_ns: Option<u64>,
    pub end_ns: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// Bytes of this exchange the capture lost.
    pub bytes_lost: u64,
}

#[derive(Clone, Debug)]
pub struct GenAiConfig {
    pub capture_content: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GenAiError {
    #[error("request body is not JSON: {0}")]
    RequestJson(String),
}

/// The LLM call this exchange is, if it is one. `Err` when it looks like one but does not parse.
pub fn recognise(
    exchange: &HttpExchange,
    config: &GenAiConfig,
) -> Option<Result<LlmCall, GenAiError>> {
    let req = &exchange.request;
    if req.method != "POST" {
        return None;
    }
    let path = req.target.split('?').next().unwrap_or_default();
    let dialect = if path.ends_with("/chat/completions") {
        openai::Dialect::ChatCompletions
    } else {
        return None;
    };
    let body = match crate::protocols::body::decode_content(
        header(&req.headers, "content-encoding"),
        &req.body,
    ) {
        Ok(b) => b,
        Err(_) if req.bytes_lost > 0 => std::borrow::Cow::Borrowed(&b""[..]),
        Err(e) => return Some(Err(GenAiError::RequestJson(e.to_string()))),
    };
    // The path names the API; the body confirms it. A body that lost bytes in capture still
    // makes a call (with what the response says), so the loss shows on a span.
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) if req.bytes_lost > 0 => Value::Null,
        Err(e) => return Some(Err(GenAiError::RequestJson(e.to_string()))),
    };
    if !json.is_null() && !json.get("messages").is_some_and(Value::is_array) {
        return None;
    }
    let (server_address, server_port) = provider::server_of(
        header(&req.headers, "host"),
        &exchange.peer,
        exchange.conn.source == crate::streams::Source::Tls,
    );
    let mut call = LlmCall {
        conn: exchange.conn,
        provider: provider::provider_name(server_address.as_deref(), path).to_string(),
        operation: "chat",
        api_type: None,
        server_address,
        server_port,
        http_method: req.method.clone(),
        url_path: path.to_string(),
        http_status: exchange.response.as_ref().map(|r| r.status),
        request: LlmRequest::default(),
        response: LlmResponse::default(),
        error: None,
        start_ns: req.start_ns,
        first_chunk_ns: None,
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
    };
    openai::parse(dialect, &json, exchange, config, &mut call);
    if let ExchangeEnd::Interrupted(reason) = exchange.end {
        call.error.get_or_insert(LlmError {
            error_type: reason.to_string(),
            message: Some(match &exchange.response {
                Some(_) => "the response was cut short".to_string(),
                None => "no response was received".to_string(),
            }),
        });
    }
    Some(Ok(call))
}
