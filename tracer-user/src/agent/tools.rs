//! Tool windows: from the answer that asked for a tool to the request that carries its
//! result; the execute_tool span, and the activity and sub-agents seen inside the window.

use super::*;

impl AgentAssembler {
    pub(super) fn open_tool(
        &mut self,
        index: usize,
        call: ToolCall,
        start_ns: u64,
        content: bool,
        max_bytes: usize,
    ) {
        let run = &mut self.runs[index];
        let mut hasher = DefaultHasher::new();
        (&call.name, &call.arguments).hash(&mut hasher);
        let signature = hasher.finish();
        if run.last_tool_signature == Some(signature) {
            run.tool_repeats += 1;
        } else {
            run.last_tool_signature = Some(signature);
            run.tool_repeats = 1;
        }
        if run.tool_repeats == LOOP_REPEATS {
            Health::add(&self.health.agent_loops, 1);
            let mut attributes = vec![
                ("gen_ai.tool.name", call.name.clone().into()),
                ("agent_tracer.loop.repeats", u64::from(LOOP_REPEATS).into()),
            ];
            if content {
                attributes.push((
                    "gen_ai.tool.call.arguments",
                    capped_text(&call.arguments, max_bytes).into(),
                ));
            }
            run.events.push(SpanEvent {
                name: LOOP_EVENT,
                time_unix_ns: self.clock.unix_ns(start_ns),
                attributes,
            });
        }
        run.open_tools.push(OpenTool {
            span_id: rand::rng().random(),
            call,
            start_ns,
            children: Vec::new(),
            latest_ns: start_ns,
        });
    }

    /// The request at `end_ns` carries the results of the run's open tools: their windows close.
    pub(super) fn close_tools(
        &mut self,
        index: usize,
        end_ns: u64,
        results: &[ToolResult],
        out: &mut Vec<Span>,
    ) {
        let tools = std::mem::take(&mut self.runs[index].open_tools);
        for tool in tools {
            let result = results.iter().find(|r| match (&r.call_id, &tool.call.id) {
                (Some(a), Some(b)) => a == b,
                _ => r.name.as_deref() == Some(tool.call.name.as_str()),
            });
            self.end_tool(index, tool, end_ns, result, false, out);
        }
    }

    pub(super) fn end_tool(
        &mut self,
        index: usize,
        tool: OpenTool,
        end_ns: u64,
        result: Option<&ToolResult>,
        unfinished: bool,
        out: &mut Vec<Span>,
    ) {
        let (content, max_bytes) = (self.config.content.capture, self.config.content.max_bytes);
        let run = &mut self.runs[index];
        run.tool_executions += 1;
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
        let span = Span {
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
        };
        let (trace_id, root) = (run.trace_id, run.root_span_id);
        self.emit(index, span, out);
        // Activity that started after the next request went out is the run's, not the tool's.
        for mut child in tool.children {
            child.trace_id = trace_id;
            if child.start_unix_ns >= end_unix {
                child.parent_span_id = Some(root);
            }
            self.emit(index, child, out);
        }
        // A run started in this window that is still going is a parallel session: its own trace.
        let parent = Parent {
            run: self.runs[index].key,
            span: tool.span_id,
        };
        for i in 0..self.runs.len() {
            if self.runs[i].tentative && self.runs[i].nested_under == Some(parent) {
                self.detach(i, out);
            }
        }
        // One that ended inside it was the tool's sub-agent, if the tool's result came back.
        let confirmed = !unfinished && result.is_some();
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_nested)
            .into_iter()
            .partition(|p| p.parent == parent);
        self.pending_nested = others;
        for pending in mine {
            if confirmed {
                for span in pending.spans {
                    self.emit(index, span, out);
                }
                continue;
            }
            let trace_id: [u8; 16] = rand::rng().random();
            if !(pending.had_error || sampled_by_ratio(&trace_id, self.config.sample_ratio)) {
                Health::add(&self.health.sampled_out_spans, pending.spans.len() as u64);
                continue;
            }
            for mut span in pending.spans {
                span.trace_id = trace_id;
                if span.span_id == pending.root_span_id {
                    span.parent_span_id = None;
                }
                out.push(span);
            }
        }
    }
}

/// The open tool whose window contains `at_ns` that the hint points at, else the first one.
pub(super) fn pick_tool(tools: &[OpenTool], at_ns: u64, hint: &Hint) -> Option<usize> {
    let open: Vec<usize> = (0..tools.len())
        .filter(|&i| tools[i].start_ns <= at_ns)
        .collect();
    let first = *open.first()?;
    let chosen = match hint {
        Hint::ToolName(name) => open.iter().copied().find(|&i| {
            let t = &tools[i].call.name;
            t == name || t.ends_with(&format!("__{name}")) || t.ends_with(&format!("_{name}"))
        }),
        Hint::Text(text) if !text.is_empty() => open.iter().copied().find(|&i| {
            let args = &tools[i].call.arguments;
            // The command's words or the path appear in the arguments (`{"cmd": "ls -l"}`).
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 2)
                .any(|w| args.contains(w))
        }),
        _ => None,
    };
    Some(chosen.unwrap_or(first))
}
