//! Stage 5, agent: arranges calls into traces. For now each LLM call is its own trace under its
//! process; run assembly (invoke_agent roots, tool executions) builds on this.

use std::sync::Arc;

use rand::Rng;

use crate::{
    capture::Clock,
    enrich::ProcessInfo,
    genai::{
        mcp,
        semconv::{call_attributes, http_attributes, span_name, unix_times, ContentPolicy},
        HttpCall, LlmCall, McpExchange, McpTransport, StdioCall,
    },
    span::{AttrValue, Span, SpanKind, SpanStatus},
};

pub struct AgentAssembler {
    content: ContentPolicy,
    clock: Clock,
}

impl AgentAssembler {
    pub fn new(content: ContentPolicy, clock: Clock) -> Self {
        AgentAssembler { content, clock }
    }

    /// An MCP request: `{mcp.method.name} {target}` per the MCP conventions.
    pub fn mcp_call(&mut self, call: &McpExchange) -> Span {
        let mut span = match &call.transport {
            McpTransport::Http(http) => self.http_call(http),
            McpTransport::Stdio(stdio) => self.stdio_call(stdio),
        };
        span.name = mcp::span_name(&call.mcp);
        let mut attributes =
            mcp::attributes(&call.mcp, self.content.capture, self.content.max_bytes);
        // Once the response with the request's id arrived the call is over: a client closing the
        // SSE stream afterwards is not a failure. Only an unanswered request keeps the
        // transport's error; an MCP error replaces it.
        let transport_error_counts = call.mcp.unanswered && mcp::error_type(&call.mcp).is_none();
        attributes.extend(
            span.attributes
                .drain(..)
                .filter(|(k, _)| *k != "error.type" || transport_error_counts),
        );
        span.attributes = attributes;
        if !transport_error_counts {
            span.status = SpanStatus::Unset;
        }
        if let Some(kind) = mcp::error_type(&call.mcp) {
            span.status = SpanStatus::Error(call.mcp.error_message.clone().unwrap_or(kind));
        }
        span
    }

    /// What the stdio transport gives an MCP span: its times, its loss, and why no answer came
    /// (`process_exit`, `idle_timeout`, `shutdown`, `cancelled`).
    fn stdio_call(&mut self, call: &StdioCall) -> Span {
        let mut rng = rand::rng();
        let mut attributes: Vec<(&'static str, AttrValue)> = Vec::new();
        let mut status = SpanStatus::Unset;
        if let Some(reason) = call.interrupted {
            attributes.push(("error.type", reason.into()));
            status = SpanStatus::Error(reason.to_string());
        }
        if call.bytes_lost > 0 {
            attributes.push(("agent_tracer.capture.bytes_lost", call.bytes_lost.into()));
        }
        Span {
            trace_id: rng.random(),
            span_id: rng.random(),
            parent_span_id: None,
            name: String::new(),
            kind: SpanKind::Client,
            start_unix_ns: self.clock.unix_ns(call.start_ns),
            end_unix_ns: self.clock.unix_ns(call.end_ns.max(call.start_ns)),
            attributes,
            status,
            process: Arc::new(ProcessInfo::unknown(call.conn.pid)),
        }
    }

    /// A call to a JSON API that is not a model: `{method}` per the HTTP conventions.
    pub fn http_call(&mut self, call: &HttpCall) -> Span {
        let mut rng = rand::rng();
        let status = match (call.status, call.interrupted) {
            (_, Some(reason)) => SpanStatus::Error(reason.to_string()),
            (Some(s), None) if s >= 400 => SpanStatus::Error(s.to_string()),
            _ => SpanStatus::Unset,
        };
        Span {
            trace_id: rng.random(),
            span_id: rng.random(),
            parent_span_id: None,
            name: call.method.clone(),
            kind: SpanKind::Client,
            start_unix_ns: self.clock.unix_ns(call.start_ns),
            end_unix_ns: self.clock.unix_ns(call.end_ns.max(call.start_ns)),
            attributes: http_attributes(call),
            status,
            process: Arc::new(ProcessInfo::unknown(call.conn.pid)),
        }
    }

    pub fn llm_call(&mut self, call: &LlmCall) -> Span {
        let mut rng = rand::rng();
        let (start, end) = unix_times(call, &self.clock);
        let status = match &call.error {
            Some(e) => SpanStatus::Error(e.message.clone().unwrap_or_else(|| e.error_type.clone())),
            None => SpanStatus::Unset,
        };
        Span {
            trace_id: rng.random(),
            span_id: rng.random(),
            parent_span_id: None,
            name: span_name(call),
            kind: SpanKind::Client,
            start_unix_ns: start,
            end_unix_ns: end,
            attributes: call_attributes(call, &self.content),
            status,
            process: Arc::new(ProcessInfo::unknown(call.conn.pid)),
        }
    }
}
