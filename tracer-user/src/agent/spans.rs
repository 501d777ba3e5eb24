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

    /// The root `invoke_agent` span of `run`, ending at `end_ns` with `outcome`.
    pub(super) fn root_span(&self, run: &Run, end_ns: u64, outcome: Outcome) -> Span {
        let mut a: Vec<(&'static str, AttrValue)> = vec![
            ("gen_ai.operation.name", "invoke_agent".into()),
            ("gen_ai.agent.name", run.agent_name.clone().into()),
            ("agent_tracer.run.outcome", outcome.as_str().into()),
            ("agent_tracer.run.llm_calls", run.llm_calls.into()),
            (
                "agent_tracer.run.tool_executions",
                run.tool_executions.into(),
            ),
            ("openinference.span.kind", "AGENT".into()),
            ("agent.name", run.agent_name.clone().into()),
        ];
        if let Some(c) = &run.conversation_id {
            a.push(("gen_ai.conversation.id", c.clone().into()));
            a.push(("session.id", c.clone().into()));
        }
        if let Some(p) = &run.provider {
            a.push(("gen_ai.provider.name", p.clone().into()));
        }
        if let Some(m) = &run.model {
            a.push(("gen_ai.request.model", m.clone().into()));
        }
        let u = &run.usage;
        for (key, value) in [
            ("gen_ai.usage.input_tokens", u.input_tokens),
            ("gen_ai.usage.output_tokens", u.output_tokens),
            (
                "gen_ai.usage.cache_read.input_tokens",
                u.cache_read_input_tokens,
            ),
            (
                "gen_ai.usage.cache_creation.input_tokens",
                u.cache_creation_input_tokens,
            ),
            (
                "gen_ai.usage.reasoning.output_tokens",
                u.reasoning_output_tokens,
            ),
        ] {
            if let Some(v) = value {
                a.push((key, v.into()));
            }
        }
        if run.all_costs_known && run.llm_calls > 0 {
            a.push(("agent_tracer.cost.usd", run.cost_usd.into()));
        }
        if run.events.iter().any(|e| e.name == LOOP_EVENT) {
            a.push(("agent_tracer.run.loop_detected", true.into()));
        }
        if run.repeated_requests > 0 {
            a.push((
                "agent_tracer.run.repeated_requests",
                run.repeated_requests.into(),
            ));
        }
        if let Some(e) = &run.error_type {
            a.push(("error.type", e.clone().into()));
        }
        let status = match (outcome, &run.error_type) {
            (Outcome::Error, Some(e)) => SpanStatus::Error(e.clone()),
            (Outcome::Error, None) => SpanStatus::Error("the run failed".into()),
            _ => SpanStatus::Unset,
        };
        Span {
            trace_id: run.trace_id,
            span_id: run.root_span_id,
            parent_span_id: run.nested_under.map(|p| p.span),
            name: format!("invoke_agent {}", run.agent_name),
            kind: SpanKind::Internal,
            start_unix_ns: self.clock.unix_ns(run.start_ns),
            end_unix_ns: self.clock.unix_ns(end_ns.max(run.start_ns)),
            attributes: a,
            status,
            events: run.events.clone(),
            process: Arc::new(ProcessInfo::unknown(run.pid)),
        }
    }

    /// The `execute_tool` span of `tool`, whose window closed at `end_ns`, with its result (if
    /// it came back).
    pub(super) fn tool_span(
        &self,
        run: &Run,
        tool: &OpenTool,
        end_ns: u64,
        result: Option<&ToolResult>,
        unfinished: bool,
    ) -> Span {
        let (content, max_bytes) = (self.config.content.capture, self.config.content.max_bytes);
        let end_unix = self.clock.unix_ns(end_ns.max(tool.start_ns));
        let mut a: Vec<(&'static str, AttrValue)> = vec![
            ("gen_ai.operation.name", "execute_tool".into()),
            ("gen_ai.tool.name", tool.call.name.clone().into()),
            ("gen_ai.tool.type", "function".into()),
            ("gen_ai.agent.name", run.agent_name.clone().into()),
            ("openinference.span.kind", "TOOL".into()),
            ("tool.name", tool.call.name.clone().into()),
        ];
        if let Some(id) = &tool.call.id {
            a.push(("gen_ai.tool.call.id", id.clone().into()));
            a.push(("tool.id", id.clone().into()));
        }
        if let Some(c) = &run.conversation_id {
            a.push(("gen_ai.conversation.id", c.clone().into()));
            a.push(("session.id", c.clone().into()));
        }
        if content {
            let args = capped_text(&tool.call.arguments, max_bytes);
            a.push(("gen_ai.tool.call.arguments", args.clone().into()));
            a.push(("tool.parameters", args.clone().into()));
            a.push(("input.value", args.into()));
            a.push(("input.mime_type", "application/json".into()));
            if let Some(text) = result.and_then(|r| r.content.as_deref()) {
                let text = capped_text(text, max_bytes);
                if !result.is_some_and(|r| r.is_error) {
                    a.push(("gen_ai.tool.call.result", text.clone().into()));
                }
                a.push(("output.value", text.into()));
            }
        }
        let mut status = SpanStatus::Unset;
        if result.is_some_and(|r| r.is_error) {
            a.push(("error.type", "tool_error".into()));
            status = SpanStatus::Error("the tool reported an error".into());
        }
        if result.is_none() {
            a.push(("agent_tracer.tool.result_seen", false.into()));
        }
        if unfinished {
            a.push(("agent_tracer.tool.unfinished", true.into()));
        }
        Span {
            trace_id: run.trace_id,
            span_id: tool.span_id,
            parent_span_id: Some(run.root_span_id),
            name: format!("execute_tool {}", tool.call.name),
            kind: SpanKind::Internal,
            start_unix_ns: self.clock.unix_ns(tool.start_ns),
            end_unix_ns: end_unix,
            attributes: a,
            status,
            events: Vec::new(),
            process: Arc::new(ProcessInfo::unknown(run.pid)),
        }
    }
}
