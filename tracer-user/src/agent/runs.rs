//! Runs: which run a model call continues, starting one, folding side requests into the
//! tool loop they came with, and ending a run (its root span and where its spans go).

use super::*;

impl AgentAssembler {
    pub(super) fn find_run(&self, call: &LlmCall) -> Option<usize> {
        let h = &call.request.history;
        let mut best: Option<(usize, usize)> = None;
        for (i, run) in self.runs.iter().enumerate() {
            if run.pid != call.http.conn.pid || run.parked_at.is_some() {
                continue;
            }
            let answers_tools = h.tool_results.iter().any(|r| {
                r.call_id.is_some()
                    && run
                        .open_tools
                        .iter()
                        .any(|t| t.call.id.is_some() && t.call.id == r.call_id)
            });
            let score = if h.previous_response_id.is_some()
                && h.previous_response_id == run.last_response_id
            {
                usize::MAX
            } else if answers_tools {
                usize::MAX - 1
            } else if !run.last_items.is_empty() && h.items.starts_with(&run.last_items) {
                run.last_items.len()
            } else {
                continue;
            };
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    pub(super) fn start_run(&mut self, call: &LlmCall, out: &mut Vec<Span>) -> usize {
        let pid = call.http.conn.pid;
        let loop_starts = !call.request.tool_names.is_empty();
        if !loop_starts {
            // Another one-off conversation: the side requests before it were runs of their own
            // (ended first, so this one can take up their conversation).
            self.finish_parked(pid, out);
        }
        let nested_under = self.owner_at(pid, call.http.start_ns, Hint::None, false);
        let mut rng = rand::rng();
        let (trace_id, sampled) = match nested_under.and_then(|p| self.run(p.run)) {
            Some(parent) => (parent.trace_id, parent.sampled),
            None => {
                let trace_id: [u8; 16] = rng.random();
                (
                    trace_id,
                    sampled_by_ratio(&trace_id, self.config.sample_ratio),
                )
            }
        };
        let items = &call.request.history.items;
        let conversation_id = call.request.conversation_id.clone().or_else(|| {
            self.ended_conversations
                .iter()
                .rev()
                .find(|(p, prior, _)| *p == pid && !prior.is_empty() && items.starts_with(prior))
                .and_then(|(_, _, id)| id.clone())
                .or_else(|| history::conversation_id(items))
        });
        let args = self.lineage.args(pid);
        let executable = self.lineage.executable(pid).unwrap_or_default();
        let agent_name = self.config.names.name_of(&args, &executable);
        let key = self.next_run_key;
        self.next_run_key += 1;
        self.runs.push(Run {
            key,
            pid,
            trace_id,
            root_span_id: rng.random(),
            nested_under,
            // Under a process the tool spawned, lineage proves the nesting; under the same
            // process's tool window it is a guess until the window closes.
            tentative: nested_under
                .is_some_and(|p| !self.execs.values().any(|e| e.span_id == p.span)),
            sampled,
            held: VecDeque::new(),
            early_execs: Vec::new(),
            agent_name,
            conversation_id,
            start_ns: call.http.start_ns,
            last_activity_ns: call.http.end_ns,
            last_items: Vec::new(),
            last_response_id: None,
            open_tools: Vec::new(),
            usage: Usage::default(),
            cost_usd: 0.0,
            all_costs_known: true,
            llm_calls: 0,
            tool_executions: 0,
            error_type: None,
            last_call_failed: false,
            provider: None,
            model: None,
            last_tool_signature: None,
            tool_repeats: 0,
            repeated_requests: 0,
            events: Vec::new(),
            offers_tools: loop_starts,
            parked_at: None,
        });
        if loop_starts {
            self.fold_parked_into(key, pid, out);
        }
        self.runs
            .iter()
            .position(|r| r.key == key)
            .unwrap_or(self.runs.len() - 1)
    }

    /// A side request that just ended: part of the tool loop already running in its process,
    /// or parked for the loop about to start (Gemini CLI's model router classifies the prompt
    /// before the loop's first call; Claude Code probes its quota). One user request is one
    /// run: the loop's root holds them. Without a loop they end as runs of their own.
    pub(super) fn park_side(&mut self, index: usize, out: &mut Vec<Span>) {
        let (pid, key) = (self.runs[index].pid, self.runs[index].key);
        let agent_loop = self
            .runs
            .iter()
            .find(|r| r.pid == pid && r.key != key && r.offers_tools && r.parked_at.is_none())
            .map(|r| r.key);
        if let Some(loop_key) = agent_loop {
            self.fold(index, loop_key, out);
        }
    }

    pub(super) fn fold_parked_into(&mut self, loop_key: u64, pid: u32, out: &mut Vec<Span>) {
        while let Some(i) = self
            .runs
            .iter()
            .position(|r| r.pid == pid && r.parked_at.is_some())
        {
            self.fold(i, loop_key, out);
        }
    }

    /// Moves the side run at `index` into the run `loop_key`: its spans under the loop's root,
    /// its calls, tokens and cost into the loop's totals.
    pub(super) fn fold(&mut self, index: usize, loop_key: u64, out: &mut Vec<Span>) {
        let side = self.runs.remove(index);
        let Some(target) = self.runs.iter().position(|r| r.key == loop_key) else {
            return;
        };
        let run = &mut self.runs[target];
        run.start_ns = run.start_ns.min(side.start_ns);
        run.llm_calls += side.llm_calls;
        add_usage(&mut run.usage, &side.usage);
        run.cost_usd += side.cost_usd;
        run.all_costs_known &= side.all_costs_known;
        run.events.extend(side.events);
        let (trace_id, root) = (run.trace_id, run.root_span_id);
        for mut span in side.held {
            span.trace_id = trace_id;
            if span.parent_span_id == Some(side.root_span_id) {
                span.parent_span_id = Some(root);
            }
            self.emit(target, span, out);
        }
    }

    /// Ends `pid`'s parked side requests as runs of their own.
    pub(super) fn finish_parked(&mut self, pid: u32, out: &mut Vec<Span>) {
        while let Some(i) = self
            .runs
            .iter()
            .position(|r| r.pid == pid && r.parked_at.is_some())
        {
            let end = self.runs[i]
                .parked_at
                .unwrap_or(self.runs[i].last_activity_ns);
            self.finish(i, end, Outcome::Completed, out);
        }
    }

    pub(super) fn detach(&mut self, index: usize, out: &mut Vec<Span>) {
        let run = &mut self.runs[index];
        run.tentative = false;
        run.nested_under = None;
        run.trace_id = rand::rng().random();
        run.sampled = sampled_by_ratio(&run.trace_id, self.config.sample_ratio);
        let trace_id = run.trace_id;
        for span in run.held.iter_mut() {
            span.trace_id = trace_id;
        }
        for tool in run.open_tools.iter_mut() {
            for child in tool.children.iter_mut() {
                child.trace_id = trace_id;
            }
        }
        if run.sampled {
            out.extend(run.held.drain(..));
        }
    }

    /// Ends the run at `index`: its held programs and unfinished tools are placed, its root
    /// span built, and its spans sent where its outcome and nesting say.
    pub(super) fn finish(
        &mut self,
        index: usize,
        end_ns: u64,
        outcome: Outcome,
        out: &mut Vec<Span>,
    ) {
        self.place_early_execs(index, None, out);
        self.end_unfinished_tools(index, out);
        let root = self.root_span(&self.runs[index], end_ns, outcome);
        self.count_run_end(outcome);
        let mut run = self.runs.remove(index);
        let mut spans: Vec<Span> = run.held.drain(..).collect();
        spans.push(self.conventions(root));
        self.release_run_spans(&run, spans, outcome, out);
        self.remember_ended(run);
    }

    fn count_run_end(&self, outcome: Outcome) {
        Health::add(&self.health.agent_runs, 1);
        Health::add(
            match outcome {
                Outcome::Completed => &self.health.agent_runs_completed,
                Outcome::Error => &self.health.agent_runs_failed,
                Outcome::Abandoned => &self.health.agent_runs_abandoned,
            },
            1,
        );
    }

    /// An ended run's spans: held for the tool window it may be the sub-agent of, dropped when
    /// sampled out, else out (a sub-agent's through its parent run, whose fate they follow).
    fn release_run_spans(
        &mut self,
        run: &Run,
        spans: Vec<Span>,
        outcome: Outcome,
        out: &mut Vec<Span>,
    ) {
        // Errors are always kept, whatever the sampling said.
        let keep = run.sampled || run.error_type.is_some() || outcome == Outcome::Error;
        let had_error = run.error_type.is_some() || outcome == Outcome::Error;
        if run.tentative {
            if let Some(parent) = run.nested_under {
                self.pending_nested.push(PendingNested {
                    parent,
                    spans,
                    root_span_id: run.root_span_id,
                    had_error,
                });
            }
        } else if !keep {
            Health::add(&self.health.sampled_out_spans, spans.len() as u64);
        } else if let Some(parent) = run.nested_under {
            // A sub-agent's spans follow its parent run's fate.
            match self.runs.iter().position(|r| r.key == parent.run) {
                Some(p) => {
                    for span in spans {
                        self.emit(p, span, out);
                    }
                }
                None => out.extend(spans),
            }
        } else {
            out.extend(spans);
        }
    }

    /// What later work needs of an ended run: its trace (a process outliving it) and its
    /// conversation (the user's next turn keeps the conversation id).
    fn remember_ended(&mut self, run: Run) {
        self.ended_runs.insert(run.key, run.trace_id);
        self.ended_order.push_back(run.key);
        if self.ended_order.len() > MAX_ENDED_CONVERSATIONS {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended_runs.remove(&old);
            }
        }
        self.ended_conversations
            .push_back((run.pid, run.last_items, run.conversation_id));
        if self.ended_conversations.len() > MAX_ENDED_CONVERSATIONS {
            self.ended_conversations.pop_front();
        }
    }

    pub(super) fn run(&self, key: u64) -> Option<&Run> {
        self.runs.iter().find(|r| r.key == key)
    }

    pub(super) fn run_mut(&mut self, key: u64) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.key == key)
    }
}

pub(super) fn add_usage(total: &mut Usage, call: &Usage) {
    let add = |t: &mut Option<i64>, c: Option<i64>| {
        if let Some(c) = c {
            *t = Some(t.unwrap_or(0) + c);
        }
    };
    add(&mut total.input_tokens, call.input_tokens);
    add(&mut total.output_tokens, call.output_tokens);
    add(
        &mut total.cache_read_input_tokens,
        call.cache_read_input_tokens,
    );
    add(
        &mut total.cache_creation_input_tokens,
        call.cache_creation_input_tokens,
    );
    add(
        &mut total.reasoning_output_tokens,
        call.reasoning_output_tokens,
    );
}

/// Keeps `ratio` of traces, the same decision for every span of one trace.
pub(super) fn sampled_by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) as f64) < ratio * u64::MAX as f64
}
