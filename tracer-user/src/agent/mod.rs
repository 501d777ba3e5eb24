//! Stage 5, agent: arranges calls into agent runs, one trace each.
//!
//! A run is one conversation's agent loop: consecutive model calls of a process whose request
//! repeats the previous request's items as its prefix (or answers its tool calls, or names its
//! response as `previous_response_id`), until a response that asks for no tool. Its root is an
//! `invoke_agent` span; each model call is a `chat` child; each tool call the model requested is
//! an `execute_tool` child lasting from the end of the response that asked for it to the start
//! of the request that carries its result. What happens in a tool's window underneath the agent
//! (processes it spawns, HTTP and MCP calls, a sub-agent's run) becomes the tool's children, by
//! process lineage: a grandchild's work belongs to the tool whose window spawned its ancestor.
//!
//! Spans leave as soon as their parent is known; the root leaves when the run ends. A run that
//! starts inside another run's tool window is held back until it is clear whether it is that
//! tool's sub-agent (it ends before the window closes) or a parallel session (it outlives it).

mod config;
pub mod cost;
pub mod encrypted;
pub mod lineage;
mod names;

use std::{
    collections::{HashMap, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use rand::Rng;

pub use config::{
    AgentConfig, DEFAULT_CONTENT_MAX_BYTES, DEFAULT_RUN_IDLE_TIMEOUT, DEFAULT_SAMPLE_RATIO,
};
pub use names::AgentNames;

use self::lineage::Lineage;
use crate::{
    capture::{CaptureEvent, Clock},
    genai::{
        content::capped_text,
        history::{self, ToolResult},
        mcp,
        semconv::{call_attributes, http_attributes, span_name, unix_times},
        HttpCall, LlmCall, McpExchange, McpTransport, StdioCall, ToolCall, Usage,
    },
    model::span::{AttrValue, Span, SpanEvent, SpanKind, SpanStatus},
    processes::{procfs, redact_args, ProcessInfo},
    telemetry::health::Health,
};

/// Programs exec'd outside any run kept (running, and ended) for a run that may yet claim them.
const MAX_UNOWNED_EXECS: usize = 512;
const UNOWNED_EXEC_WINDOW_NS: u64 = 30_000_000_000;
/// A tool call repeated (same name and arguments) this many times in a row is a loop.
const LOOP_REPEATS: u32 = 3;
const LOOP_EVENT: &str = "agent_tracer.loop_detected";
/// Spans one run may hold back (sampling, undecided nesting) before the oldest are dropped.
const MAX_HELD_SPANS: usize = 4096;
/// Ended conversations remembered per host, so a user's next turn keeps the conversation id.
const MAX_ENDED_CONVERSATIONS: usize = 1024;
/// How long a one-call side request (a model router's classifier, a title, a quota probe) waits
/// for the tool loop it precedes: agents send those right before the loop's first call.
const SIDE_REQUEST_WINDOW_NS: u64 = 10_000_000_000;

/// Where a span hangs: a run (by key, so it survives the run's trace id changing) and a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parent {
    run: u64,
    span: [u8; 8],
}

struct OpenTool {
    span_id: [u8; 8],
    call: ToolCall,
    start_ns: u64,
    /// Activity seen in the window, parented when the window's end is known.
    children: Vec<Span>,
    latest_ns: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Completed,
    Error,
    Abandoned,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Error => "error",
            Outcome::Abandoned => "abandoned",
        }
    }
}

struct Run {
    key: u64,
    pid: u32,
    trace_id: [u8; 16],
    root_span_id: [u8; 8],
    /// The tool span this run started under, until it is known to be its sub-agent.
    nested_under: Option<Parent>,
    /// Nesting undecided: spans wait in `held`.
    tentative: bool,
    sampled: bool,
    held: VecDeque<Span>,
    /// Programs the agent ran outside any tool window, each with when it was exec'd and its
    /// command line, kept until the run's next model call is in: the pipeline can deliver a
    /// process's end before the answer that asked for it as a tool (see `place_early_execs`).
    early_execs: Vec<(u64, String, Span)>,
    agent_name: String,
    conversation_id: Option<String>,
    start_ns: u64,
    last_activity_ns: u64,
    last_items: Vec<u64>,
    last_response_id: Option<String>,
    open_tools: Vec<OpenTool>,
    usage: Usage,
    cost_usd: f64,
    all_costs_known: bool,
    llm_calls: u64,
    tool_executions: u64,
    error_type: Option<String>,
    last_call_failed: bool,
    provider: Option<String>,
    model: Option<String>,
    last_tool_signature: Option<u64>,
    tool_repeats: u32,
    repeated_requests: u64,
    events: Vec<SpanEvent>,
    /// A call of this run offered the model tools: an agent's loop, not a one-off request.
    offers_tools: bool,
    /// A side request, answered (at this time) in one call that offered no tools: its spans
    /// wait in `held` for the tool loop of the same process it belongs to (see `park_side`).
    parked_at: Option<u64>,
}

/// A sub-agent run that ended inside its parent's tool window: exported once the window closes
/// with the tool's result (confirming it was the tool's work), or on its own if it never does.
struct PendingNested {
    parent: Parent,
    spans: Vec<Span>,
    root_span_id: [u8; 8],
    had_error: bool,
}

impl Run {
    /// How a run ends that no final answer ended: failed if its last call failed, else
    /// abandoned.
    fn unfinished_outcome(&self) -> Outcome {
        if self.parked_at.is_some() {
            Outcome::Completed
        } else if self.last_call_failed {
            Outcome::Error
        } else {
            Outcome::Abandoned
        }
    }
}

/// A process spawned inside a run: its exec span's id, and where that span hangs.
#[derive(Clone, Copy, Debug)]
struct ExecOwner {
    span_id: [u8; 8],
    parent: Parent,
    /// When the program was exec'd.
    start_ns: u64,
}

pub struct AgentAssembler {
    config: AgentConfig,
    clock: Clock,
    health: Arc<Health>,
    lineage: Lineage,
    runs: Vec<Run>,
    next_run_key: u64,
    /// Trace ids of ended runs, for work of theirs that ends later (a process outliving a run).
    ended_runs: HashMap<u64, [u8; 16]>,
    ended_order: VecDeque<u64>,
    /// (pid, items, conversation id) of ended runs.
    ended_conversations: VecDeque<(u32, Vec<u64>, Option<String>)>,
    execs: HashMap<u32, ExecOwner>,
    /// Programs exec'd when no run of their ancestors existed yet, by pid, with their exec
    /// time: the model call that starts the run can reach this stage after the tool it asked
    /// for has started (the agent acts on the stream's terminal event; the exchange ends later).
    unowned: HashMap<u32, u64>,
    /// The same programs once ended: (exec time, ancestors, command line, span), kept a short
    /// while for the run that may yet claim them.
    orphan_execs: VecDeque<(u64, Vec<u32>, String, Span)>,
    pending_nested: Vec<PendingNested>,
}

/// How an activity names the tool it may belong to.
enum Hint<'a> {
    None,
    /// An MCP `tools/call` of this tool.
    ToolName(&'a str),
    /// Text likely to appear in the tool call's arguments (a command, a URL path).
    Text(&'a str),
}

impl AgentAssembler {
    pub fn new(config: AgentConfig, clock: Clock, health: Arc<Health>) -> Self {
        AgentAssembler {
            config,
            clock,
            health,
            lineage: Lineage::default(),
            runs: Vec::new(),
            next_run_key: 1,
            ended_runs: HashMap::new(),
            ended_order: VecDeque::new(),
            ended_conversations: VecDeque::new(),
            execs: HashMap::new(),
            unowned: HashMap::new(),
            orphan_execs: VecDeque::new(),
            pending_nested: Vec::new(),
        }
    }

    // ----- inputs -----

    pub fn llm_call(&mut self, call: &LlmCall, out: &mut Vec<Span>) {
        let mut span = self.llm_span(call);
        let conversational = call.operation != "embeddings"
            && (!call.request.history.items.is_empty()
                || call.request.history.previous_response_id.is_some());
        if !conversational {
            let path = call.http.url_path.clone();
            self.activity(
                call.http.conn.pid,
                call.http.start_ns,
                call.http.end_ns,
                span,
                Hint::Text(&path),
                out,
            );
            return;
        }
        let index = match self.find_run(call) {
            Some(i) => i,
            None => self.start_run(call, out),
        };
        self.close_tools(
            index,
            call.http.start_ns,
            &call.request.history.tool_results,
            out,
        );
        let content = self.config.content.capture;
        let max_bytes = self.config.content.max_bytes;
        let run = &mut self.runs[index];
        let items = &call.request.history.items;
        if !items.is_empty() && *items == run.last_items && run.llm_calls > 0 {
            run.repeated_requests += 1;
            Health::add(&self.health.agent_repeated_requests, 1);
            run.events.push(SpanEvent {
                name: "agent_tracer.request_repeated",
                time_unix_ns: self.clock.unix_ns(call.http.start_ns),
                attributes: vec![("agent_tracer.request.items", (items.len() as u64).into())],
            });
        }
        span.trace_id = run.trace_id;
        span.parent_span_id = Some(run.root_span_id);
        if let Some(c) = &run.conversation_id {
            if span.attr("gen_ai.conversation.id").is_none() {
                span.attributes
                    .push(("gen_ai.conversation.id", c.clone().into()));
            }
            span.attributes.push(("session.id", c.clone().into()));
        }
        span.attributes
            .push(("gen_ai.agent.name", run.agent_name.clone().into()));
        run.llm_calls += 1;
        run.offers_tools |= !call.request.tool_names.is_empty();
        run.last_activity_ns = run.last_activity_ns.max(call.http.end_ns);
        add_usage(&mut run.usage, &call.response.usage);
        match span.attr("agent_tracer.cost.usd") {
            Some(AttrValue::F64(usd)) => run.cost_usd += usd,
            _ => run.all_costs_known = false,
        }
        run.provider.get_or_insert_with(|| call.provider.clone());
        if run.model.is_none() {
            run.model = call
                .request
                .model
                .clone()
                .or_else(|| call.response.model.clone());
        }
        run.last_items = items.clone();
        run.last_response_id = call.response.id.clone();
        run.last_call_failed = call.error.is_some();
        if let Some(e) = &call.error {
            run.error_type = Some(e.error_type.clone());
        }
        let end_ns = call.http.end_ns;
        let tools_start_ns = call
            .response
            .tools_requested_ns
            .map_or(end_ns, |requested| requested.min(end_ns));
        let tool_calls = call.response.tool_calls.clone();
        let failed = call.error.is_some();
        let run = &self.runs[index];
        let side_request = run.llm_calls == 1
            && !run.offers_tools
            && run.nested_under.is_none()
            && tool_calls.is_empty()
            && !failed
            && !call.request.history.warmup;
        if side_request {
            self.runs[index].parked_at = Some(end_ns);
        }
        self.emit(index, span, out);
        if side_request {
            self.adopt_unowned(index);
            self.place_early_execs(index, None, out);
            self.park_side(index, out);
            return;
        }
        if !tool_calls.is_empty() {
            for tool in tool_calls {
                self.open_tool(index, tool, tools_start_ns, content, max_bytes);
            }
            self.adopt_unowned(index);
            self.rehome_early_execs(index, tools_start_ns);
            self.place_early_execs(index, Some(tools_start_ns), out);
        } else {
            self.adopt_unowned(index);
            self.place_early_execs(index, None, out);
            if !failed && !call.request.history.warmup {
                self.finish(index, end_ns, Outcome::Completed, out);
            }
        }
    }

    pub fn http_call(&mut self, call: &HttpCall, out: &mut Vec<Span>) {
        let span = self.http_span(call);
        self.activity(
            call.conn.pid,
            call.start_ns,
            call.end_ns,
            span,
            Hint::Text(&call.url_path),
            out,
        );
    }

    /// A TLS connection whose plaintext was out of reach: its encrypted-only span.
    pub fn encrypted_call(&mut self, conn: &encrypted::EncryptedConnection, out: &mut Vec<Span>) {
        let span = encrypted::span(conn, &self.clock);
        self.activity(
            conn.pid,
            conn.start_ns(),
            conn.end_ns(),
            span,
            Hint::None,
            out,
        );
    }

    /// An MCP request: `{mcp.method.name} {target}` per the MCP conventions.
    pub fn mcp_call(&mut self, call: &McpExchange, out: &mut Vec<Span>) {
        let (mut span, pid, start_ns, end_ns) = match &call.transport {
            McpTransport::Http(http) => (
                self.http_span(http),
                http.conn.pid,
                http.start_ns,
                http.end_ns,
            ),
            McpTransport::Stdio(stdio) => (
                self.stdio_span(stdio),
                stdio.conn.pid,
                stdio.start_ns,
                stdio.end_ns,
            ),
        };
        span.name = mcp::span_name(&call.mcp);
        let c = &self.config.content;
        let mut attributes = mcp::attributes(&call.mcp, &call.transport, c.capture, c.max_bytes);
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
        let tool = (call.mcp.method == "tools/call")
            .then(|| call.mcp.target.clone())
            .flatten();
        let hint = match &tool {
            Some(t) => Hint::ToolName(t),
            None => Hint::None,
        };
        self.activity(pid, start_ns, end_ns, span, hint, out);
    }

    /// Forks, execs and exits: lineage, and exec spans for processes spawned inside a run.
    pub fn process_event(&mut self, event: &CaptureEvent, out: &mut Vec<Span>) {
        match event {
            CaptureEvent::Fork { parent, child, .. } => self.lineage.fork(*parent, *child),
            CaptureEvent::ExecArgs { pid, args, .. } => self.lineage.exec_args(*pid, args.clone()),
            CaptureEvent::Exec {
                pid,
                filename,
                timestamp_ns,
                ..
            } => {
                // A process that execs again (sh → the command) ends its previous program.
                self.end_exec(*pid, *timestamp_ns, None, true, out);
                let record = self.lineage.exec(*pid, filename, *timestamp_ns);
                let hint = record.args.join(" ");
                let owner = match record.parent {
                    Some(parent) => self.owner_at(parent, *timestamp_ns, Hint::Text(&hint), true),
                    None => None,
                };
                if owner.is_none() && self.unowned.len() < MAX_UNOWNED_EXECS {
                    self.unowned.insert(*pid, *timestamp_ns);
                }
                if let Some(parent) = owner {
                    self.execs.insert(
                        *pid,
                        ExecOwner {
                            span_id: rand::rng().random(),
                            parent,
                            start_ns: *timestamp_ns,
                        },
                    );
                    if let Some(run) = self.run_mut(parent.run) {
                        run.last_activity_ns = run.last_activity_ns.max(*timestamp_ns);
                    }
                }
            }
            CaptureEvent::ProcessExit {
                pid,
                timestamp_ns,
                status,
            } => {
                self.end_exec(*pid, *timestamp_ns, *status, false, out);
                self.lineage.exit(*pid);
                while let Some(i) = self.runs.iter().position(|r| r.pid == *pid) {
                    let outcome = self.runs[i].unfinished_outcome();
                    let end = self.runs[i].parked_at.unwrap_or(*timestamp_ns);
                    self.finish(i, end, outcome, out);
                }
            }
            _ => {}
        }
    }

    /// Runs idle past the timeout end as abandoned (or failed, when their last call failed).
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Span>) {
        // A model call reaches this stage well within this of the programs it caused.
        let recent = |start_ns: u64| now_ns.saturating_sub(start_ns) < UNOWNED_EXEC_WINDOW_NS;
        self.unowned.retain(|_, start_ns| recent(*start_ns));
        self.orphan_execs.retain(|(start_ns, ..)| recent(*start_ns));
        let timeout = self.config.run_idle_timeout_ns;
        while let Some(i) = self.runs.iter().position(|r| match r.parked_at {
            Some(at) => now_ns.saturating_sub(at) > SIDE_REQUEST_WINDOW_NS,
            None => now_ns.saturating_sub(r.last_activity_ns) > timeout,
        }) {
            let outcome = self.runs[i].unfinished_outcome();
            let end = self.runs[i].last_activity_ns;
            self.finish(i, end, outcome, out);
        }
    }

    /// Shutdown: every run still open ends where its activity ended.
    pub fn close_all(&mut self, out: &mut Vec<Span>) {
        while !self.runs.is_empty() {
            let i = self.runs.len() - 1;
            let end = self.runs[i].last_activity_ns;
            let outcome = self.runs[i].unfinished_outcome();
            self.finish(i, end, outcome, out);
        }
    }

    // ----- runs -----

    fn find_run(&self, call: &LlmCall) -> Option<usize> {
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

    fn start_run(&mut self, call: &LlmCall, out: &mut Vec<Span>) -> usize {
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
        let args = self
            .lineage
            .running(pid)
            .map(|r| r.args.clone())
            .unwrap_or_else(|| procfs::args(pid));
        let executable = procfs::executable(pid).unwrap_or_default();
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
    fn park_side(&mut self, index: usize, out: &mut Vec<Span>) {
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

    fn fold_parked_into(&mut self, loop_key: u64, pid: u32, out: &mut Vec<Span>) {
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
    fn fold(&mut self, index: usize, loop_key: u64, out: &mut Vec<Span>) {
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
    fn finish_parked(&mut self, pid: u32, out: &mut Vec<Span>) {
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

    fn open_tool(
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
    fn close_tools(
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

    fn end_tool(
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

    fn detach(&mut self, index: usize, out: &mut Vec<Span>) {
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

    fn finish(&mut self, index: usize, end_ns: u64, outcome: Outcome, out: &mut Vec<Span>) {
        self.place_early_execs(index, None, out);
        let tools = std::mem::take(&mut self.runs[index].open_tools);
        for tool in tools {
            let end = tool.latest_ns.max(tool.start_ns);
            self.end_tool(index, tool, end, None, true, out);
        }
        let run = &self.runs[index];
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
        let root = Span {
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
        };
        Health::add(&self.health.agent_runs, 1);
        Health::add(
            match outcome {
                Outcome::Completed => &self.health.agent_runs_completed,
                Outcome::Error => &self.health.agent_runs_failed,
                Outcome::Abandoned => &self.health.agent_runs_abandoned,
            },
            1,
        );
        let mut run = self.runs.remove(index);
        let mut spans: Vec<Span> = run.held.drain(..).collect();
        spans.push(self.conventions(root));
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

    // ----- ownership -----

    /// What `pid`'s work at `at_ns` belongs to, nearest process first: an open tool window of
    /// the process, (with `or_run`) its running run, or the exec span of a process spawned inside
    /// a run; then the same for its parent, and so on up.
    fn owner_at(&mut self, pid: u32, at_ns: u64, hint: Hint, or_run: bool) -> Option<Parent> {
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
    fn adopt_unowned(&mut self, index: usize) {
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
    fn rehome_early_execs(&mut self, index: usize, since_ns: u64) {
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
    fn activity(
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
    fn attach(&mut self, parent: Parent, end_ns: u64, mut span: Span, out: &mut Vec<Span>) {
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

    fn end_exec(
        &mut self,
        pid: u32,
        end_ns: u64,
        status: Option<i32>,
        replaced: bool,
        out: &mut Vec<Span>,
    ) {
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
        match (status, replaced) {
            (_, true) => a.push(("agent_tracer.process.replaced_by_exec", true.into())),
            (Some(code), false) => {
                a.push(("process.exit.code", i64::from(code).into()));
                if code != 0 {
                    a.push(("error.type", code.to_string().into()));
                    span_status = SpanStatus::Error(format!("exit status {code}"));
                }
            }
            (None, false) => {
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
    fn place_early_execs(&mut self, index: usize, tools_since: Option<u64>, out: &mut Vec<Span>) {
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

    // ----- output -----

    fn emit(&mut self, index: usize, span: Span, out: &mut Vec<Span>) {
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
    fn conventions(&self, mut span: Span) -> Span {
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

    fn run(&self, key: u64) -> Option<&Run> {
        self.runs.iter().find(|r| r.key == key)
    }

    fn run_mut(&mut self, key: u64) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.key == key)
    }

    // ----- spans of single calls -----

    /// What the stdio transport gives an MCP span: its times, its loss, and why no answer came
    /// (`process_exit`, `idle_timeout`, `shutdown`, `cancelled`).
    fn stdio_span(&self, call: &StdioCall) -> Span {
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

    fn http_span(&self, call: &HttpCall) -> Span {
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

    fn llm_span(&self, call: &LlmCall) -> Span {
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

/// The open tool whose window contains `at_ns` that the hint points at, else the first one.
fn pick_tool(tools: &[OpenTool], at_ns: u64, hint: &Hint) -> Option<usize> {
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

fn add_usage(total: &mut Usage, call: &Usage) {
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
fn sampled_by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) as f64) < ratio * u64::MAX as f64
}

#[cfg(test)]
mod tests;
