//! Ownership: which tool window, run or spawned program a process's work belongs to, by
//! process lineage, and the exec spans of programs spawned inside runs.

use super::*;

/// How a spawned program's exec span ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExecEnd {
    /// Its process exited with this status (`None`: a signal ended it).
    Exited(Option<i32>),
    /// Its process exec'd another program.
    Replaced,
    /// Its process is gone but its exit record was lost: how it ended is unknown.
    ExitLost,
}

impl AgentAssembler {
    /// What `pid`'s work at `at_ns` belongs to, nearest process first: an open tool window of
    /// the process, (with `or_run`) its running run, or the exec span of a process spawned inside
    /// a run; then the same for its parent, and so on up.
    pub(super) fn owner_at(
        &mut self,
        pid: u32,
        at_ns: u64,
        hint: Hint,
        or_run: bool,
    ) -> Option<Parent> {
        for p in self.lineage.lineage(pid) {
            let mut run_parent = None;
            for run in self
                .runs
                .iter()
                .rev()
                .filter(|r| r.pid == p && r.parked_at.is_none())
            {
                if let Some(tool) = pick_tool(&run.open_tools, at_ns, &hint) {
                    return Some(Parent {
                        run: run.key,
                        span: run.open_tools[tool].span_id,
                    });
                }
                if or_run && run.start_ns <= at_ns && run_parent.is_none() {
                    run_parent = Some(Parent {
                        run: run.key,
                        span: run.root_span_id,
                    });
                }
            }
            if run_parent.is_some() {
                return run_parent;
            }
            // A process spawned inside a run, doing work outside runs of its own.
            if let Some(exec) = self.execs.get(&p) {
                return Some(Parent {
                    run: exec.parent.run,
                    span: exec.span_id,
                });
            }
        }
        None
    }

    /// Programs of the run's process exec'd since the run began, before the run existed here:
    /// running ones become the run's (and `rehome_early_execs` may give them to a tool), ended
    /// ones join the run's held programs.
    pub(super) fn adopt_unowned(&mut self, index: usize) {
        let (pid, key, root, since) = {
            let r = &self.runs[index];
            (r.pid, r.key, r.root_span_id, r.start_ns)
        };
        let candidates: Vec<(u32, u64)> = self
            .unowned
            .iter()
            .filter(|(_, start)| **start >= since)
            .map(|(p, s)| (*p, *s))
            .collect();
        for (child, start_ns) in candidates {
            if self.lineage.lineage(child).contains(&pid) {
                self.unowned.remove(&child);
                self.execs.insert(
                    child,
                    ExecOwner {
                        span_id: rand::rng().random(),
                        parent: Parent {
                            run: key,
                            span: root,
                        },
                        start_ns,
                    },
                );
            }
        }
        let orphans = std::mem::take(&mut self.orphan_execs);
        for (start_ns, ancestors, hint, mut span) in orphans {
            if start_ns >= since && ancestors.contains(&pid) {
                span.parent_span_id = Some(root);
                self.runs[index].early_execs.push((start_ns, hint, span));
            } else {
                self.orphan_execs
                    .push_back((start_ns, ancestors, hint, span));
            }
        }
    }

    /// Programs the agent started after the model had asked for a tool but before the answer's
    /// end was read (Codex runs a tool as soon as its call is complete in the stream) were owned
    /// by the run when they were exec'd, no window being open yet: they belong to the tool. Their
    /// spans leave when they end, so the tool is their parent, and their children's.
    pub(super) fn rehome_early_execs(&mut self, index: usize, since_ns: u64) {
        let run = &self.runs[index];
        let (key, root) = (run.key, run.root_span_id);
        let early: Vec<u32> = self
            .execs
            .iter()
            .filter(|(_, o)| o.parent.run == key && o.parent.span == root && o.start_ns >= since_ns)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in early {
            let hint = self
                .lineage
                .running(pid)
                .map(|r| r.args.join(" "))
                .unwrap_or_default();
            let Some(owner) = self.execs.get(&pid) else {
                continue;
            };
            let tools = &self.runs[index].open_tools;
            if let Some(tool) = pick_tool(tools, owner.start_ns, &Hint::Text(&hint)) {
                let span = tools[tool].span_id;
                if let Some(owner) = self.execs.get_mut(&pid) {
                    owner.parent.span = span;
                }
            }
        }
    }

    /// Non-model work (HTTP, MCP, embeddings): a child of the tool or run it belongs to, else a
    /// trace of its own.
    pub(super) fn activity(
        &mut self,
        pid: u32,
        start_ns: u64,
        end_ns: u64,
        mut span: Span,
        hint: Hint,
        out: &mut Vec<Span>,
    ) {
        let Some(parent) = self.owner_at(pid, start_ns, hint, true) else {
            if sampled_by_ratio(&span.trace_id, self.config.sample_ratio)
                || span.status != SpanStatus::Unset
            {
                out.push(self.conventions(span));
            } else {
                Health::add(&self.health.sampled_out_spans, 1);
            }
            return;
        };
        span.parent_span_id = Some(parent.span);
        self.attach(parent, end_ns, span, out);
    }

    /// Hangs `span` under `parent`: into a tool's window (decided when it closes), into its run,
    /// or, the run having ended, straight out under the run's final trace.
    pub(super) fn attach(
        &mut self,
        parent: Parent,
        end_ns: u64,
        mut span: Span,
        out: &mut Vec<Span>,
    ) {
        match self.runs.iter().position(|r| r.key == parent.run) {
            Some(i) => {
                let run = &mut self.runs[i];
                span.trace_id = run.trace_id;
                run.last_activity_ns = run.last_activity_ns.max(end_ns);
                if let Some(tool) = run.open_tools.iter_mut().find(|t| t.span_id == parent.span) {
                    tool.latest_ns = tool.latest_ns.max(end_ns);
                    tool.children.push(span);
                } else {
                    self.emit(i, span, out);
                }
            }
            None => {
                if let Some(trace_id) = self.ended_runs.get(&parent.run) {
                    span.trace_id = *trace_id;
                }
                out.push(self.conventions(span));
            }
        }
    }

    pub(super) fn end_exec(&mut self, pid: u32, end_ns: u64, how: ExecEnd, out: &mut Vec<Span>) {
        let owner = self.execs.remove(&pid);
        let unowned_since = self.unowned.remove(&pid);
        if owner.is_none() && unowned_since.is_none() {
            return;
        }
        let Some(record) = self.lineage.running(pid).cloned() else {
            return;
        };
        let executable = record
            .filename
            .rsplit('/')
            .next()
            .unwrap_or(&record.filename)
            .to_string();
        let mut a: Vec<(&'static str, AttrValue)> = vec![
            ("process.pid", u64::from(pid).into()),
            ("process.executable.path", record.filename.clone().into()),
            ("process.executable.name", executable.clone().into()),
            ("process.command_args", redact_args(&record.args).into()),
        ];
        if let Some(parent) = record.parent {
            a.push(("process.parent_pid", u64::from(parent).into()));
        }
        let mut span_status = SpanStatus::Unset;
        match how {
            ExecEnd::Replaced => a.push(("agent_tracer.process.replaced_by_exec", true.into())),
            // Not an error: nothing is known of how it ended, only that it did.
            ExecEnd::ExitLost => a.push(("agent_tracer.process.exit_lost", true.into())),
            ExecEnd::Exited(Some(code)) => {
                a.push(("process.exit.code", i64::from(code).into()));
                if code != 0 {
                    a.push(("error.type", code.to_string().into()));
                    span_status = SpanStatus::Error(format!("exit status {code}"));
                }
            }
            ExecEnd::Exited(None) => {
                a.push(("error.type", "signal".into()));
                span_status = SpanStatus::Error("ended by a signal".into());
            }
        }
        let span = Span {
            // Its run's trace once attached; its own if the run is long forgotten.
            trace_id: rand::rng().random(),
            span_id: owner
                .as_ref()
                .map_or_else(|| rand::rng().random(), |o| o.span_id),
            parent_span_id: owner.as_ref().map(|o| o.parent.span),
            name: format!("exec {executable}"),
            kind: SpanKind::Internal,
            start_unix_ns: self.clock.unix_ns(record.start_ns),
            end_unix_ns: self.clock.unix_ns(end_ns.max(record.start_ns)),
            attributes: a,
            status: span_status,
            events: Vec::new(),
            process: Arc::new(ProcessInfo::unknown(pid)),
        };
        let Some(owner) = owner else {
            // No run yet: kept for the run whose first call may still be on its way.
            let ancestors = self.lineage.lineage(pid);
            if self.orphan_execs.len() >= MAX_UNOWNED_EXECS {
                self.orphan_execs.pop_front();
            }
            self.orphan_execs
                .push_back((record.start_ns, ancestors, record.args.join(" "), span));
            return;
        };
        // A program of the run's own, outside any window so far: it may yet turn out to be a
        // tool's, once the answer that asked for that tool is in.
        if let Some(i) = self.runs.iter().position(|r| r.key == owner.parent.run) {
            let run = &mut self.runs[i];
            if owner.parent.span == run.root_span_id {
                run.last_activity_ns = run.last_activity_ns.max(end_ns);
                if run.early_execs.len() >= MAX_HELD_SPANS {
                    let (_, _, oldest) = run.early_execs.remove(0);
                    self.emit(i, oldest, out);
                }
                let run = &mut self.runs[i];
                run.early_execs
                    .push((record.start_ns, record.args.join(" "), span));
                return;
            }
        }
        // Into the window it was spawned in: the tool's, even when the process outlives it.
        self.attach(owner.parent, end_ns, span, out);
    }

    /// The run's held programs: those exec'd once its tools had been asked for go under the
    /// tool they belong to, the rest under the run. With `tools_since` None, all under the run.
    pub(super) fn place_early_execs(
        &mut self,
        index: usize,
        tools_since: Option<u64>,
        out: &mut Vec<Span>,
    ) {
        let held = std::mem::take(&mut self.runs[index].early_execs);
        for (start_ns, hint, mut span) in held {
            let run = &mut self.runs[index];
            span.trace_id = run.trace_id;
            let tool = tools_since
                .filter(|since| start_ns >= *since)
                .and_then(|_| pick_tool(&run.open_tools, start_ns, &Hint::Text(&hint)));
            match tool {
                Some(t) => {
                    let tool = &mut run.open_tools[t];
                    span.parent_span_id = Some(tool.span_id);
                    tool.children.push(span);
                }
                None => self.emit(index, span, out),
            }
        }
    }
}
