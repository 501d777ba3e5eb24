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
mod ownership;
mod runs;
mod spans;
mod tools;

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

use self::{
    lineage::Lineage,
    ownership::ExecEnd,
    runs::{add_usage, sampled_by_ratio},
    tools::pick_tool,
};
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
    processes::{redact_args, ProcessInfo},
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
                self.end_exec(*pid, *timestamp_ns, ExecEnd::Replaced, out);
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
                exit_lost,
            } => {
                let how = if *exit_lost {
                    ExecEnd::ExitLost
                } else {
                    ExecEnd::Exited(*status)
                };
                self.end_exec(*pid, *timestamp_ns, how, out);
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
}

#[cfg(test)]
mod tests;
