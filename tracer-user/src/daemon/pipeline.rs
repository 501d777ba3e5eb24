//! The processing chain from capture events to spans, one stage after the other on one task,
//! fed by the capture queue; the finished spans go to the exporters' queues (the sinks, in
//! `app`). Each stage owns its state and data only flows forward; the process catalogue
//! (`processes`) is not a stage but a reference every stage may ask, and the pipeline fills each
//! finished span's resource from it. See [`Pipeline::handle`] for the order.

mod lost_exits;

use std::{collections::HashSet, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tracing::debug;

use self::lost_exits::LostExits;
use crate::{
    agent::{encrypted::EncryptedConnection, AgentAssembler, AgentConfig},
    capture::{CaptureEvent, Clock, HookCoverage},
    genai::{self, Call, GenAiConfig},
    model::{span::Span, HttpExchange},
    processes::{InterestSink, Processes, ProcessesConfig},
    protocols::{
        jsonrpc::{JsonRpcTracker, RpcExchange},
        memory::BodyBudget,
        HttpTracker,
    },
    streams::{ConnKey, Source, StreamAssembler, StreamEvent, StreamRecorder},
    telemetry::{health::Health, metrics::coverage::Coverage},
};

/// Largest HTTP body kept in memory per message, the default of `--max-body-bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// A connection silent this long with a request unanswered is closed as interrupted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The stages' settings: the protocols' bounds, genai's and the agent's, the catalogue's.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Largest HTTP or JSON-RPC body kept per message (the protocols).
    pub max_body_bytes: usize,
    /// What the bodies in progress on every connection may hold together (the protocols): a
    /// quarter of `--memory-budget-mib`.
    pub body_budget_bytes: u64,
    /// What every connection's parsers may hold together besides bodies (buffered heads and
    /// frames, HPACK tables, timelines; JSON-RPC lines and waiting requests; the protocols): a
    /// quarter of `--memory-budget-mib`, three quarters of it for HTTP, one for JSON-RPC.
    pub connection_state_budget_bytes: u64,
    /// Idle connections with a request unanswered are closed after this (the protocols).
    pub idle_timeout: Duration,
    /// Debugging: every reassembled stream is written under this directory (the streams).
    pub record_streams: Option<PathBuf>,
    pub genai: GenAiConfig,
    pub agent: AgentConfig,
    pub processes: ProcessesConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_budget_bytes: crate::daemon::config::DEFAULT_MEMORY_BUDGET_MIB * 1024 * 1024 / 4,
            connection_state_budget_bytes: crate::daemon::config::DEFAULT_MEMORY_BUDGET_MIB
                * 1024
                * 1024
                / 4,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            record_streams: None,
            genai: GenAiConfig {
                capture_content: false,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            },
            agent: AgentConfig::default(),
            processes: ProcessesConfig::default(),
        }
    }
}

/// The HTTP connections' part of the connection-state budget (three quarters); the JSON-RPC
/// sessions on processes' stdio get the rest.
fn http_state_budget(connection_state_budget_bytes: u64) -> u64 {
    connection_state_budget_bytes.saturating_sub(connection_state_budget_bytes / 4)
}

impl PipelineConfig {
    pub fn validate(&self) -> Result<()> {
        self.agent.validate()?;
        self.processes.validate()
    }
}

pub struct Pipeline {
    streams: StreamAssembler,
    http: HttpTracker,
    /// JSON-RPC over processes' stdio (MCP stdio servers).
    jsonrpc: JsonRpcTracker,
    genai: GenAiConfig,
    agent: AgentAssembler,
    processes: Processes,
    health: Arc<Health>,
    idle_timeout_ns: u64,
    recorder: Option<StreamRecorder>,
    stream_events: Vec<StreamEvent>,
    exchanges: Vec<HttpExchange>,
    rpc_exchanges: Vec<RpcExchange>,
    /// Processes a TLS hook captured plaintext from: their counted TLS connections are not
    /// reported encrypted-only (libraries writing ciphertext through a memory BIO, as Node's
    /// OpenSSL does, never link their socket to the hooked call).
    tls_plaintext_pids: HashSet<u32>,
    /// When each process's TLS hooks were in place (the attacher writes it).
    hook_coverage: HookCoverage,
    /// What is captured of each process, for the coverage metrics.
    seen: Coverage,
    /// The processes every stage holds state for, to end those whose exit record was lost.
    lost_exits: LostExits,
}

impl Pipeline {
    /// `interest` is where per-process selection decisions go (the kernel's map; none in
    /// tests).
    pub fn new(
        config: PipelineConfig,
        clock: Clock,
        health: Arc<Health>,
        interest: Option<InterestSink>,
    ) -> Result<Self> {
        let recorder = config
            .record_streams
            .map(StreamRecorder::new)
            .transpose()
            .context("--record-streams directory")?;
        Ok(Pipeline {
            streams: StreamAssembler::new(),
            http: HttpTracker::new(config.max_body_bytes, health.clone())
                .with_budget(BodyBudget::new(config.body_budget_bytes))
                .with_state_limit(http_state_budget(config.connection_state_budget_bytes)),
            jsonrpc: JsonRpcTracker::new(config.max_body_bytes, health.clone()).with_state_limit(
                config
                    .connection_state_budget_bytes
                    .saturating_sub(http_state_budget(config.connection_state_budget_bytes)),
            ),
            genai: config.genai,
            agent: AgentAssembler::new(config.agent, clock, health.clone()),
            processes: Processes::with_config(config.processes, interest),
            health,
            idle_timeout_ns: config.idle_timeout.as_nanos() as u64,
            recorder,
            stream_events: Vec::new(),
            exchanges: Vec::new(),
            rpc_exchanges: Vec::new(),
            tls_plaintext_pids: HashSet::new(),
            hook_coverage: HookCoverage::default(),
            seen: Coverage::default(),
            lost_exits: LostExits::for_this_host(),
        })
    }

    /// Applies the selection rules to processes already running at start-up (see
    /// `Processes::observe_running`).
    pub fn observe_running(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.processes.observe_running(pids);
    }

    /// Shares the attacher's record of when each process was hooked.
    pub fn set_hook_coverage(&mut self, coverage: HookCoverage) {
        self.hook_coverage = coverage;
    }

    /// Shares the metrics' per-process coverage, which counts the plaintext captured here.
    pub fn set_metrics_coverage(&mut self, coverage: Coverage) {
        self.seen = coverage;
    }

    /// One capture record through the stages, in order; the spans it finishes are appended to
    /// `out`, for the caller to hand to the sinks.
    ///
    /// 1. Selection gate: connection records of a process the rules leave out stop here.
    /// 2. Streams: bytes reassembled per connection, in order, gaps counted.
    /// 3. Protocols: HTTP/1, HTTP/2, WebSocket and JSON-RPC exchanges from the streams.
    /// 4. GenAI: exchanges recognised as model, MCP or plain HTTP calls.
    /// 5. Agent: calls, and connections seen only encrypted, arranged into runs and tools.
    /// 6. Process lifecycle: exec, its arguments, fork and exit reach the agent and the
    ///    catalogue here, and only here: after the record's own calls (a process's last calls
    ///    land in its runs before its exit ends them; streams and protocols have no use for
    ///    them, beyond an exit closing the process's connections in step 2).
    /// 7. Resource: each new span's process, from the catalogue, which then forgets a process
    ///    that exited (its description stays for spans reported after it).
    pub fn handle(&mut self, event: CaptureEvent, out: &mut Vec<Span>) {
        // Left-out processes too: the catalogue and the lineage keep state for them.
        self.lost_exits.heard(&event);
        if self.left_out(&event) {
            Health::add(&self.health.ignored_records, 1);
            return;
        }
        let first_new = out.len();
        let lifecycle = is_lifecycle(&event).then(|| event.clone());
        let encrypted = self.encrypted_only(&event);
        self.streams_and_protocols(event);
        self.finish_exchanges(out);
        if let Some(conn) = encrypted {
            self.agent.encrypted_call(&conn, out);
        }
        let exited = lifecycle.and_then(|event| self.deliver_lifecycle(&event, out));
        self.describe(&mut out[first_new..]);
        if let Some(pid) = exited {
            self.forget(pid);
        }
    }

    /// Connection records of a process the selection rules leave out (its lifecycle still
    /// flows: an exec may change the decision, an exit ends it). Data decides a process seen
    /// for the first time.
    fn left_out(&mut self, event: &CaptureEvent) -> bool {
        let pid = match event {
            CaptureEvent::Data(chunk) => {
                self.processes.observe(chunk.pid);
                chunk.pid
            }
            CaptureEvent::Connect { pid, .. }
            | CaptureEvent::Close { pid, .. }
            | CaptureEvent::TlsLink { pid, .. }
            | CaptureEvent::ClientHello { pid, .. }
            | CaptureEvent::TlsSummary { pid, .. } => *pid,
            _ => return false,
        };
        self.processes.is_ignored(pid)
    }

    /// Notes the processes TLS plaintext was captured from, and takes a TLS connection's
    /// totals aside when it gets an encrypted-only span (see `fallback_wanted`). Its peer is
    /// read now: the totals come before the close that makes the streams forget it.
    fn encrypted_only(&mut self, event: &CaptureEvent) -> Option<EncryptedConnection> {
        match event {
            CaptureEvent::Data(chunk) if chunk.source == Source::Tls => {
                self.tls_plaintext_pids.insert(chunk.pid);
                self.seen.plaintext(chunk.pid, chunk.data.len() as u64);
                None
            }
            CaptureEvent::TlsSummary {
                pid, fd, totals, ..
            } => {
                let wanted = fallback_wanted(
                    self.tls_plaintext_pids.contains(pid),
                    self.hook_coverage.hooked_at(*pid),
                    totals.start_ns,
                );
                if !wanted {
                    Health::add(&self.health.encrypted_skipped_hooked, 1);
                    return None;
                }
                Health::add(&self.health.encrypted_connections, 1);
                Some(EncryptedConnection {
                    pid: *pid,
                    fd: *fd,
                    peer: self.streams.peer(*pid, *fd).cloned().unwrap_or_default(),
                    totals: *totals,
                })
            }
            _ => None,
        }
    }

    /// Streams, then protocols: the exchanges completed wait in `exchanges` and
    /// `rpc_exchanges` for `finish_exchanges`.
    fn streams_and_protocols(&mut self, event: CaptureEvent) {
        self.streams.push(event, &mut self.stream_events);
        for stream_event in self.stream_events.drain(..) {
            if let Some(recorder) = &mut self.recorder {
                recorder.record(&stream_event);
            }
            match stream_conn(&stream_event) {
                Some(conn) if conn.source == Source::Stdio => {
                    self.jsonrpc.push(&stream_event, &mut self.rpc_exchanges)
                }
                Some(_) => self.http.push(&stream_event, &mut self.exchanges),
                None => {
                    self.jsonrpc.push(&stream_event, &mut self.rpc_exchanges);
                    self.http.push(&stream_event, &mut self.exchanges);
                }
            }
        }
        self.health.attached_late_bytes.store(
            self.streams.attached_late_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.health.stream_count_restarts.store(
            self.streams.count_restarts,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Step 6 of `handle`: the lifecycle event to the agent (lineage, the programs a tool ran,
    /// runs ended by their process's exit) and to the catalogue (a new program is read at its
    /// exec, while it surely runs: a short-lived client may be gone by the time its call
    /// completes). Returns the pid of a process that exited.
    fn deliver_lifecycle(&mut self, event: &CaptureEvent, out: &mut Vec<Span>) -> Option<u32> {
        self.agent.process_event(event, out);
        match event {
            CaptureEvent::Exec {
                pid,
                filename,
                cgroup_id,
                ..
            } => {
                self.processes.observe_exec(*pid, filename, *cgroup_id);
                None
            }
            CaptureEvent::ProcessExit { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// An exited process, once its spans are described.
    fn forget(&mut self, pid: u32) {
        self.processes.forget(pid);
        self.tls_plaintext_pids.remove(&pid);
        self.hook_coverage.forget(pid);
        self.seen.exited(pid);
    }

    /// The resource: each span's process from the catalogue.
    fn describe(&mut self, spans: &mut [Span]) {
        for span in spans {
            self.processes.describe(span);
        }
    }

    /// Periodic work: closes connections idle past the timeout, catches up with the pod store.
    pub fn tick(&mut self, now_monotonic_ns: u64, out: &mut Vec<Span>) {
        // Also when no span is made: a process left out for want of its pod's labels is let
        // in here once they arrive.
        self.processes.refresh_pods();
        for exit in self.lost_exits.sweep(now_monotonic_ns) {
            Health::add(&self.health.process_exits_lost, 1);
            self.handle(exit, out);
        }
        let first_new = out.len();
        self.http
            .sweep_idle(now_monotonic_ns, self.idle_timeout_ns, &mut self.exchanges);
        self.jsonrpc.sweep_idle(
            now_monotonic_ns,
            self.idle_timeout_ns,
            &mut self.rpc_exchanges,
        );
        self.finish_exchanges(out);
        self.agent.tick(now_monotonic_ns, out);
        self.describe(&mut out[first_new..]);
    }

    /// Shutdown: everything still open becomes a span marked interrupted.
    pub fn close_all(&mut self, out: &mut Vec<Span>) {
        let first_new = out.len();
        self.http.close_all(&mut self.exchanges);
        self.jsonrpc.close_all(&mut self.rpc_exchanges);
        self.finish_exchanges(out);
        self.agent.close_all(out);
        self.describe(&mut out[first_new..]);
    }

    fn finish_exchanges(&mut self, out: &mut Vec<Span>) {
        for exchange in self.rpc_exchanges.drain(..) {
            if let Some(Call::Mcp(m)) = genai::recognise_rpc(&exchange) {
                Health::add(&self.health.mcp_calls, 1);
                self.agent.mcp_call(&m, out);
            }
        }
        for exchange in self.exchanges.drain(..) {
            let call = genai::recognise(&exchange, &self.genai);
            if let Some(Ok(call)) = &call {
                if call.body_decoded_truncated() {
                    Health::add(&self.health.bodies_decoded_truncated, 1);
                }
            }
            match call {
                Some(Ok(call)) => match &call {
                    Call::Llm(llm) => {
                        Health::add(&self.health.llm_calls, 1);
                        self.agent.llm_call(llm, out);
                    }
                    Call::Mcp(m) => {
                        Health::add(&self.health.mcp_calls, 1);
                        self.agent.mcp_call(m, out);
                    }
                    Call::Http(http) => {
                        Health::add(&self.health.http_calls, 1);
                        self.agent.http_call(http, out);
                    }
                },
                Some(Err(e)) => {
                    debug!("LLM exchange on {:?} did not parse: {e}", exchange.conn);
                    Health::add(&self.health.llm_parse_errors, 1);
                }
                None => {}
            }
        }
    }
}

/// Whether a record is about a process's life rather than its I/O (step 6 of `handle`).
fn is_lifecycle(event: &CaptureEvent) -> bool {
    matches!(
        event,
        CaptureEvent::Fork { .. }
            | CaptureEvent::ExecArgs { .. }
            | CaptureEvent::Exec { .. }
            | CaptureEvent::ProcessExit { .. }
    )
}

/// The connection a stream event is about; `None` for a whole process.
fn stream_conn(event: &StreamEvent) -> Option<ConnKey> {
    match event {
        StreamEvent::Data { conn, .. }
        | StreamEvent::Gap { conn, .. }
        | StreamEvent::Peer { conn, .. }
        | StreamEvent::Closed { conn, .. } => Some(*conn),
        StreamEvent::ProcessExit { .. } => None,
    }
}

/// Whether a TLS connection no hook linked to its socket gets its encrypted-only span. A process
/// whose plaintext was captured is reported from it, unless the connection started (its
/// ClientHello, `conn_start_ns`) before the process's hooks were in place (`hooked_at`): then
/// its first bytes, or all of them, went by unseen, and the span is all there is of them.
fn fallback_wanted(had_plaintext: bool, hooked_at: Option<u64>, conn_start_ns: u64) -> bool {
    !had_plaintext || hooked_at.is_some_and(|at| at > conn_start_ns)
}

#[cfg(test)]
mod fallback_tests {
    use super::fallback_wanted;
    use crate::capture::HookCoverage;

    #[test]
    fn a_connection_opened_before_the_hooks_keeps_its_span() {
        // Never hooked: always.
        assert!(fallback_wanted(false, None, 100));
        // Hooked before the connection, plaintext seen: the plaintext reports it.
        assert!(!fallback_wanted(true, Some(50), 100));
        assert!(!fallback_wanted(true, None, 100));
        // Hooked after the ClientHello: the hooks saw part of it at most.
        assert!(fallback_wanted(true, Some(150), 100));
        // Hooked after, but no plaintext at all: the span, as for any unhooked process.
        assert!(fallback_wanted(false, Some(150), 100));
    }

    #[test]
    fn coverage_keeps_the_latest_hooks_and_stands_in_for_unscanned_processes() {
        let coverage = HookCoverage::default();
        assert_eq!(coverage.hooked_at(7), None);
        coverage.record(7, 100);
        coverage.record(7, 80);
        assert_eq!(coverage.hooked_at(7), Some(100));
        // A process never scanned (gone before its exec was looked at) falls back on the last
        // placement on any file.
        coverage.placed(300);
        assert_eq!(coverage.hooked_at(8), Some(300));
        assert_eq!(coverage.hooked_at(7), Some(100));
        coverage.forget(7);
        assert_eq!(coverage.hooked_at(7), Some(300));
    }
}

#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod lost_exit_tests;
