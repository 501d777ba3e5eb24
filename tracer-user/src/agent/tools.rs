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

    /// Closes a tool's window at `end_ns`: its execute_tool span, the activity seen inside it,
    /// and the runs that started in it (parallel sessions, or the tool's sub-agents).
    pub(super) fn end_tool(
        &mut self,
        index: usize,
        tool: OpenTool,
        end_ns: u64,
        result: Option<&ToolResult>,
        unfinished: bool,
        out: &mut Vec<Span>,
    ) {
        self.runs[index].tool_executions += 1;
        let span = self.tool_span(&self.runs[index], &tool, end_ns, result, unfinished);
        let end_unix = span.end_unix_ns;
        self.emit(index, span, out);
        self.release_tool_children(index, tool.children, end_unix, out);
        let parent = Parent {
            run: self.runs[index].key,
            span: tool.span_id,
        };
        self.detach_parallel_runs(parent, out);
        // One that ended inside it was the tool's sub-agent, if the tool's result came back.
        self.settle_sub_agents(index, parent, !unfinished && result.is_some(), out);
    }

    /// Closes the windows of the tools still open when their run ends, where their activity
    /// ended.
    pub(super) fn end_unfinished_tools(&mut self, index: usize, out: &mut Vec<Span>) {
        let tools = std::mem::take(&mut self.runs[index].open_tools);
        for tool in tools {
            let end = tool.latest_ns.max(tool.start_ns);
            self.end_tool(index, tool, end, None, true, out);
        }
    }

    /// Activity that started after the next request went out (`end_unix`) is the run's, not
    /// the tool's.
    fn release_tool_children(
        &mut self,
        index: usize,
        children: Vec<Span>,
        end_unix: u64,
        out: &mut Vec<Span>,
    ) {
        let (trace_id, root) = (self.runs[index].trace_id, self.runs[index].root_span_id);
        for mut child in children {
            child.trace_id = trace_id;
            if child.start_unix_ns >= end_unix {
                child.parent_span_id = Some(root);
            }
            self.emit(index, child, out);
        }
    }

    /// A run started in the window `parent` that is still going is a parallel session: its own
    /// trace.
    fn detach_parallel_runs(&mut self, parent: Parent, out: &mut Vec<Span>) {
        for i in 0..self.runs.len() {
            if self.runs[i].tentative && self.runs[i].nested_under == Some(parent) {
                self.detach(i, out);
            }
        }
    }

    /// Runs that ended inside the window `parent`: the tool's sub-agents when `confirmed` (its
    /// result came back), else traces of their own, sampled as such.
    fn settle_sub_agents(
        &mut self,
        index: usize,
        parent: Parent,
        confirmed: bool,
        out: &mut Vec<Span>,
    ) {
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
