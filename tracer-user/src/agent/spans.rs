//! Span output: holding spans back for sampling or undecided nesting, the attribute
//! families the user chose, and the spans of single calls.

use super::*;

impl AgentAssembler {
    pub(super) fn emit(&mut self, index: usize, span: Span, out: &mut Vec<Span>) {
        let span = self.conventions(span);
        let run = &mut self.runs[index];
        if run.tentative || !run.sampled || run.parked_at.is_some() {
            if run.held.len() >= MAX_HELD_SPANS {
                run.held.pop_front();
                Health::add(&self.health.sampled_out_spans, 1);
            }
            run.held.push_back(span);
        } else {
            out.push(span);
        }
    }

    /// Drops the attribute family the user turned off.
    pub(super) fn conventions(&self, mut span: Span) -> Span {
        let (genai, oi) = (
            self.config.genai_attributes,
            self.config.openinference_attributes,
        );
        if !(genai && oi) {
            span.attributes.retain(|(k, _)| {
                let is_oi = k.starts_with("openinference.")
                    || k.starts_with("llm.")
                    || k.starts_with("input.")
                    || k.starts_with("output.")
                    || k.starts_with("tool.")
                    || k.starts_with("session.")
                    || k.starts_with("agent.");
                let is_genai = k.starts_with("gen_ai.");
                (genai || !is_genai) && (oi || !is_oi)
            });
        }
        span
    }

    /// What the stdio transport gives an MCP span: its times, its loss, and why no answer came
    /// (`process_exit`, `idle_timeout`, `shutdown`, `cancelled`).
    pub(super) fn stdio_span(&self, call: &StdioCall) -> Span {
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
            events: Vec::new(),
            process: Arc::new(ProcessInfo::unknown(call.conn.pid)),
        }
    }

    pub(super) fn http_span(&self, call: &HttpCall) -> Span {
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
            events: Vec::new(),
            process: Arc::new(ProcessInfo::unknown(call.conn.pid)),
        }
    }

    pub(super) fn llm_span(&self, call: &LlmCall) -> Span {
        let mut rng = rand::rng();
        let (start, end) = unix_times(call, &self.clock);
        let status = match &call.error {
            Some(e) => SpanStatus::Error(e.message.clone().unwrap_or_else(|| e.error_type.clone())),
            None => SpanStatus::Unset,
        };
        let mut attributes = call_attributes(call, &self.config.content);
        let model = call.response.model.as_ref().or(call.request.model.as_ref());
        if let Some(usd) = model.and_then(|m| self.config.prices.cost(m, &call.response.usage)) {
            attributes.push(("agent_tracer.cost.usd", usd.into()));
            attributes.push(("llm.cost.total", usd.into()));
        }
        Span {
            trace_id: rng.random(),
            span_id: rng.random(),
            parent_span_id: None,
            name: span_name(call),
            kind: SpanKind::Client,
            start_unix_ns: start,
            end_unix_ns: end,
            attributes,
            status,
            events: Vec::new(),
            process: Arc::new(ProcessInfo::unknown(call.http.conn.pid)),
        }
    }
}
