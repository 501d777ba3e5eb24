//! Stage 5, agent: arranges calls into traces. For now each LLM call is its own trace under its
//! process; run assembly (invoke_agent roots, tool executions) builds on this.

use std::sync::Arc;

use rand::Rng;

use crate::{
    capture::Clock,
    enrich::ProcessInfo,
    genai::{
        semconv::{call_attributes, span_name, unix_times, ContentPolicy},
        LlmCall,
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
