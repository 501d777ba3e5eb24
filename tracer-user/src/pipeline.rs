//! The processing chain from capture events to spans: streams → protocols → genai → agent →
//! enrich. Each stage owns its state; data only flows forward. It runs on one task, fed by the
//! capture queue, and hands finished spans to the exporters' queues.

use std::{collections::HashSet, sync::Arc};

use tracing::debug;

use crate::{
    agent::{cost::PriceTable, AgentAssembler, AgentConfig, AgentNames},
    capture::{CaptureEvent, Clock},
    encrypted::EncryptedConnection,
    enrich::{EnrichConfig, InterestSink, ProcessCache},
    genai::{self, semconv::ContentPolicy, Call, GenAiConfig},
    health::Health,
    protocols::{
        jsonrpc::{JsonRpcTracker, RpcExchange},
        HttpExchange, HttpTracker,
    },
    span::Span,
    streams::{Source, StreamAssembler, StreamEvent, StreamRecorder},
};

pub struct PipelineConfig {
    pub capture_content: bool,
    pub content_max_bytes: usize,
    pub max_body_bytes: usize,
    pub idle_timeout_ns: u64,
    pub record_streams: Option<StreamRecorder>,
    pub run_idle_timeout_ns: u64,
    pub prices: PriceTable,
    pub sample_ratio: f64,
    pub genai_attributes: bool,
    pub openinference_attributes: bool,
    pub agent_names: AgentNames,
    pub processes: EnrichConfig,
    /// Where per-process interest decisions go (the kernel's map); none in tests.
    pub interest: Option<InterestSink>,
}

pub struct Pipeline {
    streams: StreamAssembler,
    http: HttpTracker,
    /// JSON-RPC over processes' stdio (MCP stdio servers).
    jsonrpc: JsonRpcTracker,
    genai: GenAiConfig,
    agent: AgentAssembler,
    processes: ProcessCache,
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
    hook_coverage: crate::capture::HookCoverage,
    /// What is captured of each process, for the coverage metrics.
    seen: crate::metrics::coverage::Coverage,
}

impl Pipeline {
    pub fn new(config: PipelineConfig, clock: Clock, health: Arc<Health>) -> Self {
        Pipeline {
            streams: StreamAssembler::new(),
            http: HttpTracker::new(config.max_body_bytes, health.clone()),
            jsonrpc: JsonRpcTracker::new(config.max_body_bytes, health.clone()),
            genai: GenAiConfig {
                capture_content: config.capture_content,
            },
            agent: AgentAssembler::new(
                AgentConfig {
                    content: ContentPolicy {
                        capture: config.capture_content,
                        max_bytes: config.content_max_bytes,
                    },
                    run_idle_timeout_ns: config.run_idle_timeout_ns,
                    prices: config.prices,
                    sample_ratio: config.sample_ratio,
                    genai_attributes: config.genai_attributes,
                    openinference_attributes: config.openinference_attributes,
                    names: config.agent_names,
                },
                clock,
                health.clone(),
            ),
            processes: ProcessCache::with_config(config.processes, config.interest),
            health,
            idle_timeout_ns: config.idle_timeout_ns,
            recorder: config.record_streams,
            stream_events: Vec::new(),
            exchanges: Vec::new(),
            rpc_exchanges: Vec::new(),
            tls_plaintext_pids: HashSet::new(),
            hook_coverage: crate::capture::HookCoverage::default(),
            seen: crate::metrics::coverage::Coverage::default(),
        }
    }

    /// Applies the selection rules to processes already running at start-up (see
    /// `ProcessCache::observe_running`).
    pub fn observe_running(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.processes.observe_running(pids);
    }

    /// Shares the attacher's record of when each process was hooked.
    pub fn set_hook_coverage(&mut self, coverage: crate::capture::HookCoverage) {
        self.hook_coverage = coverage;
    }

    /// Shares the metrics' per-process coverage, which counts the plaintext captured here.
    pub fn set_metrics_coverage(&mut self, coverage: crate::metrics::coverage::Coverage) {
        self.seen = coverage;
    }

    pub fn handle(&mut self, event: CaptureEvent, out: &mut Vec<Span>) {
        if self.left_out(&event) {
            Health::add(&self.health.ignored_records, 1);
            return;
        }
        let first_new = out.len();
        match &event {
            // Lineage only: nothing for the streams.
            CaptureEvent::Fork { .. } | CaptureEvent::ExecArgs { .. } => {
                self.agent.process_event(&event, out);
                return;
            }
            CaptureEvent::Exec { .. } => self.agent.process_event(&event, out),
            _ => {}
        }
        let exited = match &event {
            // A new program: read it now, while it surely runs: a short-lived client may be gone
            // by the time its call completes. (Data was observed by `left_out`.)
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
        };
        match &event {
            CaptureEvent::Data(chunk) if chunk.source == Source::Tls => {
                self.tls_plaintext_pids.insert(chunk.pid);
                self.seen.plaintext(chunk.pid, chunk.data.len() as u64);
            }
            CaptureEvent::TlsSummary {
                pid, fd, totals, ..
            } => {
                // Before the close reaches the streams: they still know the peer.
                let peer = self.streams.peer(*pid, *fd).cloned().unwrap_or_default();
                let wanted = fallback_wanted(
                    self.tls_plaintext_pids.contains(pid),
                    self.hook_coverage.hooked_at(*pid),
                    totals.start_ns,
                );
                if !wanted {
                    Health::add(&self.health.encrypted_skipped_hooked, 1);
                } else {
                    Health::add(&self.health.encrypted_connections, 1);
                    let conn = EncryptedConnection {
                        pid: *pid,
                        fd: *fd,
                        peer,
                        totals: *totals,
                    };
                    self.agent.encrypted_call(&conn, out);
                }
            }
            _ => {}
        }
        let exit_event = matches!(event, CaptureEvent::ProcessExit { .. }).then(|| event.clone());
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
        self.finish_exchanges(out);
        // After the exchanges: a process's last calls land in its runs before they end.
        if let Some(exit) = &exit_event {
            self.agent.process_event(exit, out);
        }
        self.enrich(&mut out[first_new..]);
        if let Some(pid) = exited {
            self.processes.forget(pid);
            self.tls_plaintext_pids.remove(&pid);
            self.hook_coverage.forget(pid);
            self.seen.exited(pid);
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

    fn enrich(&mut self, spans: &mut [Span]) {
        for span in spans {
            self.processes.enrich(span);
        }
    }

    /// Periodic work: closes connections idle past the timeout, catches up with the pod store.
    pub fn tick(&mut self, now_monotonic_ns: u64, out: &mut Vec<Span>) {
        // Also when no span is made: a process left out for want of its pod's labels is let
        // in here once they arrive.
        self.processes.refresh_pods();
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
        self.enrich(&mut out[first_new..]);
    }

    /// Shutdown: everything still open becomes a span marked interrupted.
    pub fn close_all(&mut self, out: &mut Vec<Span>) {
        let first_new = out.len();
        self.http.close_all(&mut self.exchanges);
        self.jsonrpc.close_all(&mut self.rpc_exchanges);
        self.finish_exchanges(out);
        self.agent.close_all(out);
        self.enrich(&mut out[first_new..]);
    }

    fn finish_exchanges(&mut self, out: &mut Vec<Span>) {
        for exchange in self.rpc_exchanges.drain(..) {
            if let Some(Call::Mcp(m)) = genai::recognise_rpc(&exchange) {
                Health::add(&self.health.mcp_calls, 1);
                self.agent.mcp_call(&m, out);
            }
        }
        for exchange in self.exchanges.drain(..) {
            match genai::recognise(&exchange, &self.genai) {
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

/// The connection a stream event is about; `None` for a whole process.
fn stream_conn(event: &StreamEvent) -> Option<crate::streams::ConnKey> {
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
