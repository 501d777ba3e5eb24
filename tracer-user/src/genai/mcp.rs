//! MCP (Model Context Protocol): JSON-RPC 2.0 requests and their responses, whichever transport
//! carried them. Over Streamable HTTP a request is a POST body, answered by one JSON response or
//! an SSE stream whose events may carry notifications before the response with the request's id;
//! over stdio both are lines of the server's stdin and stdout, paired by
//! `protocols::jsonrpc` (genai-spec §4).

use serde_json::Value;

use super::{content::capped_json, McpTransport, ResponseView};
use crate::{
    model::{header, span::AttrValue, HttpExchange},
    protocols::jsonrpc::{self, Message},
};

/// One JSON-RPC request and its outcome. What carried it is [`super::McpExchange::transport`].
#[derive(Clone, Debug, PartialEq)]
pub struct McpCall {
    pub method: String,
    /// `jsonrpc.request.id`, as a string.
    pub request_id: String,
    /// `params.name` of tools/call and prompts/get.
    pub target: Option<String>,
    pub resource_uri: Option<String>,
    pub protocol_version: Option<String>,
    pub arguments: Option<Value>,
    pub result: Option<Value>,
    /// The JSON-RPC error, when the request failed.
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// `CallToolResult.isError`.
    pub tool_error: bool,
    /// No response with the request's id was seen.
    pub unanswered: bool,
}

/// The method and id of a JSON-RPC request, if the message is one (notifications and responses
/// have no outcome to wait for and are not reported). The stdio tracker's classifier decides, so
/// both transports agree on what a request is.
pub fn request(json: &Value) -> Option<(String, String)> {
    match jsonrpc::classify(json)? {
        Message::Request { id, method } => Some((method, id.as_str().to_string())),
        Message::Notification { .. } | Message::Response { .. } => None,
    }
}

pub fn parse(
    json: &Value,
    exchange: &HttpExchange,
    view: Option<&ResponseView<'_>>,
) -> Option<McpCall> {
    let (_, request_id) = request(json)?;
    let protocol_version =
        header(&exchange.request.headers, "mcp-protocol-version").map(str::to_string);
    // One JSON message, or SSE events carrying messages: the response is the one with our id.
    let messages: Vec<Value> = match view {
        Some(view) if view.is_sse() => view
            .sse()
            .into_iter()
            .filter_map(|(e, _)| serde_json::from_str(&e.data).ok())
            .collect(),
        Some(view) => view.json().into_iter().collect(),
        None => Vec::new(),
    };
    let response = messages.iter().find(|m| {
        m.get("id").is_some_and(|id| match id {
            Value::String(s) => *s == request_id,
            Value::Number(n) => n.to_string() == request_id,
            _ => false,
        }) && (m.get("result").is_some() || m.get("error").is_some())
    });
    from_messages(json, response, protocol_version)
}

/// The call a JSON-RPC request and its response (when one came) make. `protocol_version` is what
/// the transport knows (a header, the connection's `initialize`); an `initialize` result's own
/// version wins.
pub fn from_messages(
    json: &Value,
    response: Option<&Value>,
    protocol_version: Option<String>,
) -> Option<McpCall> {
    let (method, request_id) = request(json)?;
    let params = json.get("params").unwrap_or(&Value::Null);
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut call = McpCall {
        target: matches!(method.as_str(), "tools/call" | "prompts/get")
            .then_some(name)
            .flatten(),
        resource_uri: params
            .get("uri")
            .and_then(Value::as_str)
            .map(|uri| crate::model::redact::redact_text(uri).into_owned()),
        protocol_version,
        arguments: params.get("arguments").cloned(),
        method,
        request_id,
        result: None,
        error_code: None,
        error_message: None,
        tool_error: false,
        unanswered: true,
    };
    let Some(response) = response else {
        return Some(call);
    };
    call.unanswered = false;
    if let Some(err) = response.get("error") {
        call.error_code = err.get("code").and_then(Value::as_i64);
        call.error_message = err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(result) = response.get("result") {
        call.tool_error = result
            .get("isError")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if call.method == "initialize" {
            call.protocol_version = result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(call.protocol_version);
        }
        call.result = Some(
            result
                .get("structuredContent")
                .or_else(|| result.get("content"))
                .unwrap_or(result)
                .clone(),
        );
    }
    Some(call)
}

/// `{mcp.method.name} {target}`.
pub fn span_name(call: &McpCall) -> String {
    match &call.target {
        Some(t) => format!("{} {t}", call.method),
        None => call.method.clone(),
    }
}

/// The error type per the MCP conventions: the JSON-RPC code, or `tool_error` for a tool result
/// flagged isError.
pub fn error_type(call: &McpCall) -> Option<String> {
    call.error_code
        .map(|c| c.to_string())
        .or_else(|| call.tool_error.then(|| "tool_error".to_string()))
}

pub fn attributes(
    call: &McpCall,
    transport: &McpTransport,
    capture_content: bool,
    max_bytes: usize,
) -> Vec<(&'static str, AttrValue)> {
    let mut a: Vec<(&'static str, AttrValue)> = vec![
        ("mcp.method.name", call.method.clone().into()),
        ("jsonrpc.request.id", call.request_id.clone().into()),
    ];
    match transport {
        McpTransport::Http(_) => {
            a.push(("network.transport", "tcp".into()));
            a.push(("network.protocol.name", "http".into()));
        }
        McpTransport::Stdio(_) => a.push(("network.transport", "pipe".into())),
    }
    if let Some(v) = &call.protocol_version {
        a.push(("mcp.protocol.version", v.clone().into()));
    }
    if let Some(uri) = &call.resource_uri {
        a.push(("mcp.resource.uri", uri.clone().into()));
    }
    if call.method == "tools/call" {
        a.push(("gen_ai.operation.name", "execute_tool".into()));
        if let Some(t) = &call.target {
            a.push(("gen_ai.tool.name", t.clone().into()));
            a.push(("tool.name", t.clone().into()));
        }
        a.push(("openinference.span.kind", "TOOL".into()));
    } else if call.method == "prompts/get" {
        if let Some(t) = &call.target {
            a.push(("gen_ai.prompt.name", t.clone().into()));
        }
    }
    if let Some(code) = call.error_code {
        a.push(("rpc.response.status_code", code.to_string().into()));
    }
    if let Some(e) = error_type(call) {
        a.push(("error.type", e.into()));
    }
    if capture_content {
        if let Some(args) = &call.arguments {
            a.push((
                "gen_ai.tool.call.arguments",
                capped_json(args, max_bytes).into(),
            ));
        }
        if let Some(result) = &call.result {
            a.push((
                "gen_ai.tool.call.result",
                capped_json(result, max_bytes).into(),
            ));
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_but_not_notifications_or_other_json() {
        assert_eq!(
            request(
                &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "add"}})
            ),
            Some(("tools/call".to_string(), "3".to_string()))
        );
        assert_eq!(
            request(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
            None
        );
        assert_eq!(
            request(&json!({"jsonrpc": "2.0", "id": 1, "result": {}})),
            None
        );
        assert_eq!(request(&json!({"model": "gpt"})), None);
        // An id that is neither a number nor a string makes no request.
        assert_eq!(
            request(&json!({"jsonrpc": "2.0", "id": null, "method": "tools/list"})),
            None
        );
    }

    #[test]
    fn resource_uris_lose_their_credentials() {
        let read = json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {
            "uri": "https://alice:pw@files.internal/report.csv?X-Amz-Signature=abc&v=2"}});
        let call = from_messages(&read, None, None).expect("a request");
        assert_eq!(
            call.resource_uri.as_deref(),
            Some("https://REDACTED@files.internal/report.csv?X-Amz-Signature=REDACTED&v=2")
        );
    }

    #[test]
    fn error_types() {
        let base = McpCall {
            method: "tools/call".into(),
            request_id: "1".into(),
            target: Some("add".into()),
            resource_uri: None,
            protocol_version: None,
            arguments: None,
            result: None,
            error_code: None,
            error_message: None,
            tool_error: true,
            unanswered: false,
        };
        assert_eq!(error_type(&base).as_deref(), Some("tool_error"));
        let rpc = McpCall {
            error_code: Some(-32602),
            tool_error: false,
            ..base.clone()
        };
        assert_eq!(error_type(&rpc).as_deref(), Some("-32602"));
        assert_eq!(span_name(&base), "tools/call add");
    }
}
