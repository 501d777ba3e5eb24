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
        HttpCall, LlmCall, McpExchange,
    },
    span::{Span, SpanKind, SpanStatus},
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
        let mut span = self.http_call(&call.http);
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
            // HTTP semconv: `HTTP` when the method is not known (HPACK could not decode it).
            name: if call.method.is_empty() {
                "HTTP".to_string()
            } else {
                call.method.clone()
            },
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
