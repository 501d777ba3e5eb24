//! The processing chain from capture events to spans: streams → protocols → genai → agent →
//! enrich. Each stage owns its state; data only flows forward. It runs on one task, fed by the
//! capture queue, and hands finished spans to the exporters' queues.

use std::sync::Arc;

use tracing::debug;

use crate::{
    agent::AgentAssembler,
    capture::{CaptureEvent, Clock},
    enrich::ProcessCache,
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
                ContentPolicy {
                    capture: config.capture_content,
                    max_bytes: config.content_max_bytes,
                },
                clock,
            ),
            processes: ProcessCache::new(),
            health,
            idle_timeout_ns: config.idle_timeout_ns,
            recorder: config.record_streams,
            stream_events: Vec::new(),
            exchanges: Vec::new(),
            rpc_exchanges: Vec::new(),
        }
    }

    pub fn handle(&mut self, event: CaptureEvent, out: &mut Vec<Span>) {
        let exited = match &event {
            CaptureEvent::Data(chunk) => {
                self.processes.observe(chunk.pid);
                None
            }
            // A new program: what was read of the old one no longer describes the process.
            // Read it now, while it surely runs: a short-lived client may be gone by the time its
            // call completes.
            CaptureEvent::Exec { pid, filename } => {
                self.processes.forget(*pid);
                self.processes.observe_exec(*pid, filename);
                None
            }
            CaptureEvent::ProcessExit { pid, .. } => Some(*pid),
            _ => None,
        };
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
        if let Some(pid) = exited {
            self.processes.forget(pid);
        }
    }

    /// Periodic work: closes connections idle past the timeout.
    pub fn tick(&mut self, now_monotonic_ns: u64, out: &mut Vec<Span>) {
        self.http
            .sweep_idle(now_monotonic_ns, self.idle_timeout_ns, &mut self.exchanges);
        self.jsonrpc.sweep_idle(
            now_monotonic_ns,
            self.idle_timeout_ns,
            &mut self.rpc_exchanges,
        );
        self.finish_exchanges(out);
    }

    /// Shutdown: everything still open becomes a span marked interrupted.
    pub fn close_all(&mut self, out: &mut Vec<Span>) {
        self.http.close_all(&mut self.exchanges);
        self.jsonrpc.close_all(&mut self.rpc_exchanges);
        self.finish_exchanges(out);
    }

    fn finish_exchanges(&mut self, out: &mut Vec<Span>) {
        for exchange in self.rpc_exchanges.drain(..) {
            if let Some(Call::Mcp(m)) = genai::recognise_rpc(&exchange) {
                Health::add(&self.health.mcp_calls, 1);
                let mut span = self.agent.mcp_call(&m);
                self.processes.enrich(&mut span);
                out.push(span);
            }
        }
        for exchange in self.exchanges.drain(..) {
            match genai::recognise(&exchange, &self.genai) {
                Some(Ok(call)) => {
                    let mut span = match &call {
                        Call::Llm(llm) => {
                            Health::add(&self.health.llm_calls, 1);
                            self.agent.llm_call(llm)
                        }
                        Call::Mcp(m) => {
                            Health::add(&self.health.mcp_calls, 1);
                            self.agent.mcp_call(m)
                        }
                        Call::Http(http) => {
                            Health::add(&self.health.http_calls, 1);
                            self.agent.http_call(http)
                        }
                    };
                    self.processes.enrich(&mut span);
                    out.push(span);
                }
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
