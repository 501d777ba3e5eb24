//! JSON-RPC 2.0 over a process's stdio, as MCP's stdio transport carries it: one UTF-8 JSON
//! message per line, no embedded newlines, in both directions of one connection (the process's
//! stdin and stdout). Requests are paired with their responses by id; each way has its own id
//! space (a server may ask its client too: sampling, roots, elicitation).
//!
//! A stream may be joined mid-message (the tracer attached late, or bytes were lost): every line
//! is parsed on its own, so a fragment fails to parse, is counted, and the stream is back in step
//! at the next newline. Batches (JSON arrays, MCP 2025-03-26 only) are taken apart.

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

use super::state_bytes::{total, StateBytes, StateTotal, CONNECTION_OVERHEAD_BYTES};
use crate::{
    model::{ConnKey, Direction, ExchangeEnd, StreamEvent},
    telemetry::health::Health,
};

/// Requests waiting for an answer per connection; beyond this new ones are not tracked.
const MAX_PENDING: usize = 4096;
/// Connections known at once.
const MAX_SESSIONS: usize = 16_384;

/// One line of a stream, without its newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// When the line's first byte arrived (reads) or left (writes).
    pub start_ns: u64,
    /// When the line's newline did.
    pub end_ns: u64,
    pub bytes: Vec<u8>,
    /// Bytes were lost right before this line, or it is the first of a stream the tracer may
    /// have joined mid-message: it may be the tail of a message.
    pub after_gap: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Line(Line),
    /// A line longer than the cap ended; its bytes were not kept.
    Oversized,
}

/// Splits one direction's bytes into lines, keeping at most `max_line` bytes of one.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    start_ns: u64,
    /// The line in progress is over the cap: its bytes are dropped up to its end.
    oversized: bool,
    after_gap: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        LineFramer {
            buf: Vec::new(),
            start_ns: 0,
            oversized: false,
            after_gap: true,
        }
    }
}

impl LineFramer {
    pub fn push(
        &mut self,
        timestamp_ns: u64,
        mut data: &[u8],
        max_line: usize,
        out: &mut Vec<Frame>,
    ) {
        while !data.is_empty() {
            if self.buf.is_empty() && !self.oversized {
                self.start_ns = timestamp_ns;
            }
            let (piece, ended) = match memchr::memchr(b'\n', data) {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            data = &data[piece.len() + usize::from(ended)..];
            if !self.oversized {
                if self.buf.len() + piece.len() > max_line {
                    self.oversized = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(piece);
                }
            }
            if ended {
                self.end_line(timestamp_ns, out);
            }
        }
    }

    fn end_line(&mut self, end_ns: u64, out: &mut Vec<Frame>) {
        if std::mem::take(&mut self.oversized) {
            out.push(Frame::Oversized);
        } else {
            let mut bytes = std::mem::take(&mut self.buf);
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                out.push(Frame::Line(Line {
                    start_ns: self.start_ns,
                    end_ns,
                    bytes,
                    after_gap: self.after_gap,
                }));
            }
        }
        self.after_gap = false;
    }

    /// Bytes are missing here: the line in progress cannot be completed. Returns its bytes,
    /// dropped.
    pub fn gap(&mut self) -> u64 {
        let dropped = self.buf.len() as u64;
        self.buf.clear();
        self.after_gap = true;
        dropped
    }

    /// The stream ended: a last line without its newline still counts.
    pub fn finish(&mut self, timestamp_ns: u64, out: &mut Vec<Frame>) {
        if !self.buf.is_empty() || self.oversized {
            self.end_line(timestamp_ns, out);
        }
    }
}

/// What one JSON-RPC message is.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Request { id: RpcId, method: String },
    Notification { method: String },
    Response { id: RpcId },
}

/// A request id: numbers and strings are different ids (`1` is not `"1"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RpcId {
    Number(String),
    Str(String),
}

impl RpcId {
    fn of(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => Some(RpcId::Number(n.to_string())),
            Value::String(s) => Some(RpcId::Str(s.clone())),
            _ => None,
        }
    }

    /// `jsonrpc.request.id`: the id as a string.
    pub fn as_str(&self) -> &str {
        match self {
            RpcId::Number(s) | RpcId::Str(s) => s,
        }
    }
}

/// Classifies a JSON value as a JSON-RPC 2.0 message, if it is one.
pub fn classify(v: &Value) -> Option<Message> {
    if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return None;
    }
    let id = v.get("id").and_then(RpcId::of);
    match (v.get("method").and_then(Value::as_str), id) {
        (Some(method), Some(id)) => Some(Message::Request {
            id,
            method: method.to_string(),
        }),
        (Some(method), None) => Some(Message::Notification {
            method: method.to_string(),
        }),
        (None, Some(id)) if v.get("result").is_some() || v.get("error").is_some() => {
            Some(Message::Response { id })
        }
        _ => None,
    }
}

/// The JSON-RPC messages on a line: one object, or the objects of a batch. `None` when the line is
/// not JSON or holds no JSON-RPC message.
pub fn parse_line(bytes: &[u8]) -> Option<Vec<(Message, Value)>> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let values = match value {
        Value::Array(items) => items,
        v => vec![v],
    };
    let messages: Vec<(Message, Value)> = values
        .into_iter()
        .filter_map(|v| classify(&v).map(|m| (m, v)))
        .collect();
    (!messages.is_empty()).then_some(messages)
}

/// A request and its outcome on one stdio connection.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcExchange {
    pub conn: ConnKey,
    /// The way the request went, seen from the traced process: `Ingress` when the process was
    /// asked (a stdio server reading its stdin), `Egress` when it asked.
    pub request_direction: Direction,
    pub id: RpcId,
    pub method: String,
    /// The whole request message.
    pub request: Value,
    /// The whole response message, when one came.
    pub response: Option<Value>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// From the connection's `initialize` result.
    pub protocol_version: Option<String>,
    pub end: ExchangeEnd,
    /// Bytes the capture lost on the connection while the request was waiting.
    pub bytes_lost: u64,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    method: String,
    request: Value,
    start_ns: u64,
    bytes_lost: u64,
    /// The request's line length: what its parsed value is charged as (twice it).
    line_bytes: u64,
}

#[derive(Debug, Default)]
struct Session {
    /// Indexed by `dir_index`.
    framers: [LineFramer; 2],
    pending: HashMap<(usize, RpcId), Pending>,
    next_seq: u64,
    protocol_version: Option<String>,
    last_activity_ns: u64,
    /// What [`StateBytes`] said last, as charged to the tracker's state total.
    charged: u64,
}

impl StateBytes for Session {
    /// Lines in progress, and each waiting request's parsed value (twice its line: a
    /// `serde_json::Value` takes about that much).
    fn state_bytes(&self) -> u64 {
        total(
            self.framers
                .iter()
                .map(|f| f.buf.len() as u64)
                .chain(self.pending.values().map(|p| {
                    total([
                        PENDING_OVERHEAD_BYTES,
                        p.method.len() as u64,
                        p.line_bytes.saturating_mul(2),
                    ])
                }))
                .chain([CONNECTION_OVERHEAD_BYTES]),
        )
    }
}

/// The structures of one waiting request.
const PENDING_OVERHEAD_BYTES: u64 = 128;

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

fn dir_of(i: usize) -> Direction {
    if i == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// Every stdio connection's JSON-RPC state; emits exchanges as responses arrive and when
/// connections end with requests unanswered.
pub struct JsonRpcTracker {
    sessions: HashMap<ConnKey, Session>,
    max_line: usize,
    health: Arc<Health>,
    frames: Vec<Frame>,
    /// What every session's lines in progress and waiting requests hold together, against
    /// its limit.
    state: StateTotal,
}

impl JsonRpcTracker {
    pub fn new(max_line: usize, health: Arc<Health>) -> Self {
        JsonRpcTracker {
            sessions: HashMap::new(),
            max_line,
            health,
            frames: Vec::new(),
            state: StateTotal::new(u64::MAX),
        }
    }

    /// What every session's lines in progress and waiting requests may hold together: past it
    /// the least recently active sessions are ended (else no bound beyond each session's own).
    pub fn with_state_limit(mut self, bytes: u64) -> Self {
        self.state = StateTotal::new(bytes);
        self
    }

    /// What every session holds together now.
    pub fn state_bytes_held(&self) -> u64 {
        self.state.held()
    }

    /// Charges the session's state anew; past the limit, ends the least recently active
    /// sessions until a quarter of the limit is free again.
    fn recharge(&mut self, conn: ConnKey, out: &mut Vec<RpcExchange>) {
        if let Some(session) = self.sessions.get_mut(&conn) {
            let now = session.state_bytes();
            self.state.recharge(&mut session.charged, now);
        }
        let evict = self.state.to_evict(
            self.sessions
                .iter()
                .map(|(k, s)| ((*k, s.last_activity_ns), s.last_activity_ns, s.charged)),
        );
        for (conn, last_activity_ns) in evict {
            self.close(conn, last_activity_ns, "memory_budget", out);
            Health::add(&self.health.connections_evicted_memory_budget, 1);
        }
    }

    pub fn push(&mut self, event: &StreamEvent, out: &mut Vec<RpcExchange>) {
        match event {
            StreamEvent::Data {
                conn,
                direction,
                timestamp_ns,
                bytes,
            } => {
                let max_line = self.max_line;
                let mut frames = std::mem::take(&mut self.frames);
                let session = self.session(*conn);
                session.last_activity_ns = *timestamp_ns;
                session.framers[dir_index(*direction)].push(
                    *timestamp_ns,
                    bytes,
                    max_line,
                    &mut frames,
                );
                self.frames = frames;
                self.take_frames(*conn, *direction, out);
                self.recharge(*conn, out);
            }
            StreamEvent::Gap {
                conn,
                direction,
                timestamp_ns,
                len,
            } => {
                Health::add(&self.health.stream_gap_bytes, *len);
                let session = self.session(*conn);
                session.last_activity_ns = *timestamp_ns;
                let dropped = session.framers[dir_index(*direction)].gap();
                Health::add(&self.health.jsonrpc_dropped_gap_bytes, dropped);
                let session = self.session(*conn);
                // The lost bytes may have held any waiting request's answer.
                for p in session.pending.values_mut() {
                    p.bytes_lost += len;
                }
                self.recharge(*conn, out);
            }
            StreamEvent::Closed { conn, timestamp_ns } => {
                self.close(*conn, *timestamp_ns, "connection_closed", out)
            }
            StreamEvent::ProcessExit { pid, timestamp_ns } => {
                let mut conns: Vec<ConnKey> = self
                    .sessions
                    .keys()
                    .filter(|c| c.pid == *pid)
                    .copied()
                    .collect();
                conns.sort_by_key(|c| c.conn_id);
                for conn in conns {
                    self.close(conn, *timestamp_ns, "process_exit", out);
                }
            }
            StreamEvent::Peer { .. } => {}
        }
    }

    /// Ends the waiting requests of connections quiet for longer than `idle_ns`. The connection
    /// stays known (a stdio server may idle for hours between calls, and its protocol version
    /// came once, at `initialize`); its process's exit forgets it.
    pub fn sweep_idle(&mut self, now_ns: u64, idle_ns: u64, out: &mut Vec<RpcExchange>) {
        let mut idle: Vec<ConnKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.pending.is_empty() && now_ns.saturating_sub(s.last_activity_ns) > idle_ns
            })
            .map(|(c, _)| *c)
            .collect();
        idle.sort_by_key(|c| (c.pid, c.conn_id));
        for conn in idle {
            if let Some(session) = self.sessions.get_mut(&conn) {
                let protocol_version = session.protocol_version.clone();
                interrupt(conn, session, now_ns, "idle_timeout", protocol_version, out);
            }
        }
    }

    /// The session of a connection, made when it first carries bytes. Bounded: should process
    /// exits go missing (a full ring buffer), sessions waiting for nothing are let go.
    fn session(&mut self, conn: ConnKey) -> &mut Session {
        if self.sessions.len() >= MAX_SESSIONS && !self.sessions.contains_key(&conn) {
            let before = self.sessions.len();
            let mut freed = 0u64;
            self.sessions.retain(|_, s| {
                let keep = !s.pending.is_empty();
                if !keep {
                    freed = freed.saturating_add(s.charged);
                }
                keep
            });
            self.state.release(freed);
            let evicted = before.saturating_sub(self.sessions.len());
            Health::add(&self.health.jsonrpc_sessions_evicted, evicted as u64);
        }
        self.sessions.entry(conn).or_default()
    }

    /// Shutdown: every request still waiting ends interrupted.
    pub fn close_all(&mut self, out: &mut Vec<RpcExchange>) {
        let mut conns: Vec<ConnKey> = self.sessions.keys().copied().collect();
        conns.sort_by_key(|c| (c.pid, c.conn_id));
        for conn in conns {
            let end_ns = self.sessions[&conn].last_activity_ns;
            self.close(conn, end_ns, "shutdown", out);
        }
    }

    fn close(
        &mut self,
        conn: ConnKey,
        end_ns: u64,
        reason: &'static str,
        out: &mut Vec<RpcExchange>,
    ) {
        for i in 0..2 {
            let Some(session) = self.sessions.get_mut(&conn) else {
                return;
            };
            session.framers[i].finish(end_ns, &mut self.frames);
            self.take_frames(conn, dir_of(i), out);
        }
        if let Some(mut session) = self.sessions.remove(&conn) {
            self.state.release(session.charged);
            let protocol_version = session.protocol_version.clone();
            interrupt(conn, &mut session, end_ns, reason, protocol_version, out);
        }
    }

    fn take_frames(&mut self, conn: ConnKey, direction: Direction, out: &mut Vec<RpcExchange>) {
        let frames = std::mem::take(&mut self.frames);
        for frame in &frames {
            match frame {
                Frame::Oversized => Health::add(&self.health.jsonrpc_oversized, 1),
                Frame::Line(line) => match parse_line(&line.bytes) {
                    Some(messages) => {
                        for (message, value) in messages {
                            Health::add(&self.health.jsonrpc_messages, 1);
                            self.message(conn, direction, line, message, value, out);
                        }
                    }
                    // A fragment after a gap is expected, not a parse error; its bytes are
                    // lost all the same.
                    None if line.after_gap => Health::add(
                        &self.health.jsonrpc_dropped_gap_bytes,
                        line.bytes.len() as u64,
                    ),
                    None => Health::add(&self.health.jsonrpc_parse_errors, 1),
                },
            }
        }
        self.frames = frames;
        self.frames.clear();
    }

    fn message(
        &mut self,
        conn: ConnKey,
        direction: Direction,
        line: &Line,
        message: Message,
        value: Value,
        out: &mut Vec<RpcExchange>,
    ) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let here = dir_index(direction);
        match message {
            Message::Request { id, method } => {
                let key = (here, id);
                if session.pending.len() >= MAX_PENDING && !session.pending.contains_key(&key) {
                    Health::add(&self.health.jsonrpc_dropped_pending_full, 1);
                    return;
                }
                let seq = session.next_seq;
                session.next_seq += 1;
                let replaced = session.pending.insert(
                    key,
                    Pending {
                        seq,
                        method,
                        request: value,
                        start_ns: line.start_ns,
                        bytes_lost: 0,
                        line_bytes: line.bytes.len() as u64,
                    },
                );
                if replaced.is_some() {
                    Health::add(&self.health.jsonrpc_dropped_id_reused, 1);
                }
            }
            Message::Response { id } => {
                // The answer goes the other way.
                let Some(p) = session.pending.remove(&(1 - here, id.clone())) else {
                    Health::add(&self.health.jsonrpc_unmatched_responses, 1);
                    return;
                };
                if p.method == "initialize" {
                    if let Some(v) = value
                        .pointer("/result/protocolVersion")
                        .and_then(Value::as_str)
                    {
                        session.protocol_version = Some(v.to_string());
                    }
                }
                out.push(RpcExchange {
                    conn,
                    request_direction: dir_of(1 - here),
                    id,
                    method: p.method,
                    request: p.request,
                    response: Some(value),
                    start_ns: p.start_ns,
                    end_ns: line.end_ns.max(p.start_ns),
                    protocol_version: session.protocol_version.clone(),
                    end: ExchangeEnd::Complete,
                    bytes_lost: p.bytes_lost,
                });
            }
            Message::Notification { method } => {
                // The sender gave up on one of its own requests: it is over.
                if method != "notifications/cancelled" {
                    return;
                }
                let Some(id) = value.pointer("/params/requestId").and_then(RpcId::of) else {
                    return;
                };
                if let Some(p) = session.pending.remove(&(here, id.clone())) {
                    out.push(RpcExchange {
                        conn,
                        request_direction: direction,
                        id,
                        method: p.method,
                        request: p.request,
                        response: None,
                        start_ns: p.start_ns,
                        end_ns: line.end_ns.max(p.start_ns),
                        protocol_version: session.protocol_version.clone(),
                        end: ExchangeEnd::Interrupted("cancelled"),
                        bytes_lost: p.bytes_lost,
                    });
                }
            }
        }
    }
}

/// Ends every request a session is waiting on, in the order they were made.
fn interrupt(
    conn: ConnKey,
    session: &mut Session,
    end_ns: u64,
    reason: &'static str,
    protocol_version: Option<String>,
    out: &mut Vec<RpcExchange>,
) {
    let mut pending: Vec<((usize, RpcId), Pending)> = session.pending.drain().collect();
    pending.sort_by_key(|(_, p)| p.seq);
    for ((dir, id), p) in pending {
        out.push(RpcExchange {
            conn,
            request_direction: dir_of(dir),
            id,
            method: p.method,
            request: p.request,
            response: None,
            start_ns: p.start_ns,
            end_ns: end_ns.max(p.start_ns),
            protocol_version: protocol_version.clone(),
            end: ExchangeEnd::Interrupted(reason),
            bytes_lost: p.bytes_lost,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::default();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            f.push(i as u64, c, 16, &mut out);
        }
        f.finish(99, &mut out);
        out
    }

    fn line(start_ns: u64, end_ns: u64, bytes: &[u8]) -> Frame {
        Frame::Line(Line {
            start_ns,
            end_ns,
            bytes: bytes.to_vec(),
            after_gap: false,
        })
    }

    fn first(frame: Frame) -> Frame {
        match frame {
            Frame::Line(l) => Frame::Line(Line {
                after_gap: true,
                ..l
            }),
            f => f,
        }
    }

    #[test]
    fn lines_split_across_reads_and_several_in_one_read() {
        assert_eq!(
            lines(&[b"{\"a\":", b"1}\n{\"b\":2}\r\n{\"c\"", b":3}\n\n"]),
            vec![
                first(line(0, 1, b"{\"a\":1}")),
                line(1, 1, b"{\"b\":2}"),
                line(1, 2, b"{\"c\":3}"),
            ]
        );
        assert_eq!(lines(&[b"{}"]), vec![first(line(0, 99, b"{}"))]);
    }

    #[test]
    fn an_oversized_line_is_dropped_whole_and_the_next_one_kept() {
        assert_eq!(
            lines(&[b"0123456789", b"0123456789", b"01\n{}\n"]),
            vec![Frame::Oversized, line(2, 2, b"{}")]
        );
    }

    #[test]
    fn classifies_messages_and_batches() {
        let m = |s: &str| {
            parse_line(s.as_bytes()).map(|v| v.into_iter().map(|(m, _)| m).collect::<Vec<_>>())
        };
        assert_eq!(
            m(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Some(vec![Message::Request {
                id: RpcId::Number("1".into()),
                method: "tools/list".into()
            }])
        );
        assert_eq!(
            m(
                r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","result":{}}]"#
            ),
            Some(vec![
                Message::Notification {
                    method: "notifications/initialized".into()
                },
                Message::Response {
                    id: RpcId::Str("a".into())
                }
            ])
        );
        assert_eq!(m(r#"{"id":1,"method":"x"}"#), None, "no jsonrpc member");
        assert_eq!(
            m(r#"{"jsonrpc":"2.0","id":1}"#),
            None,
            "neither result nor error"
        );
        assert_eq!(m(r#"ing","id":1}"#), None);
        assert_ne!(RpcId::Number("1".into()), RpcId::Str("1".into()));
    }

    const CONN: ConnKey = ConnKey {
        pid: 9,
        source: crate::model::Source::Stdio,
        conn_id: 0,
    };

    fn data(direction: Direction, t: u64, s: &str) -> StreamEvent {
        StreamEvent::Data {
            conn: CONN,
            direction,
            timestamp_ns: t,
            bytes: bytes::Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    fn run(events: &[StreamEvent]) -> (Vec<RpcExchange>, Arc<Health>) {
        let health = Arc::new(Health::default());
        let mut t = JsonRpcTracker::new(1 << 20, health.clone());
        let mut out = Vec::new();
        for e in events {
            t.push(e, &mut out);
        }
        (out, health)
    }

    #[test]
    fn pairs_by_id_per_direction_and_interrupts_the_rest_at_exit() {
        use Direction::{Egress, Ingress};
        let (out, health) = run(&[
            data(Ingress, 1, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}\n"),
            data(Egress, 2, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-11-25\"}}\n"),
            // Two requests in one read, answered out of order; a server-to-client request with
            // the same id as a client request.
            data(Ingress, 3, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}\n{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}\n"),
            data(Egress, 4, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"roots/list\"}\n"),
            data(Egress, 5, "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"result\":{\"isError\":true}}\n"),
            data(Ingress, 6, "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"roots\":[]}}\n"),
            data(Egress, 7, "{\"jsonrpc\":\"2.0\",\"id\":99,\"result\":{}}\n"),
            StreamEvent::ProcessExit {
                pid: 9,
                timestamp_ns: 8,
            },
        ]);
        let summary: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    e.method.as_str(),
                    e.request_direction,
                    e.id.as_str(),
                    e.start_ns,
                    e.end_ns,
                    e.protocol_version.as_deref(),
                    e.end,
                )
            })
            .collect();
        let v = Some("2025-11-25");
        assert_eq!(
            summary,
            vec![
                ("initialize", Ingress, "1", 1, 2, v, ExchangeEnd::Complete),
                ("tools/call", Ingress, "x", 3, 5, v, ExchangeEnd::Complete),
                ("roots/list", Egress, "2", 4, 6, v, ExchangeEnd::Complete),
                (
                    "tools/list",
                    Ingress,
                    "2",
                    3,
                    8,
                    v,
                    ExchangeEnd::Interrupted("process_exit")
                ),
            ]
        );
        assert_eq!(out[1].response.as_ref().unwrap()["result"]["isError"], true);
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(health.jsonrpc_unmatched_responses.load(Relaxed), 1);
        assert_eq!(health.jsonrpc_messages.load(Relaxed), 8);
    }

    #[test]
    fn a_quiet_server_times_out_its_waiting_requests_but_keeps_its_version() {
        use Direction::{Egress, Ingress};
        let health = Arc::new(Health::default());
        let mut t = JsonRpcTracker::new(1 << 20, health);
        let mut out = Vec::new();
        for e in [
            data(
                Ingress,
                1,
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}\n",
            ),
            data(
                Egress,
                2,
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"v\"}}\n",
            ),
            data(
                Ingress,
                3,
                "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\"}\n",
            ),
        ] {
            t.push(&e, &mut out);
        }
        t.sweep_idle(50, 100, &mut out);
        assert_eq!(out.len(), 1, "not idle yet");
        t.sweep_idle(200, 100, &mut out);
        assert_eq!(
            (out[1].id.as_str(), out[1].end, out[1].end_ns),
            ("2", ExchangeEnd::Interrupted("idle_timeout"), 200)
        );
        // Hours later, the same server answers a new call: still known, version and all.
        t.sweep_idle(10_000, 100, &mut out);
        t.push(
            &data(
                Ingress,
                20_000,
                "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n",
            ),
            &mut out,
        );
        t.push(
            &data(
                Egress,
                20_001,
                "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n",
            ),
            &mut out,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].protocol_version.as_deref(), Some("v"));
        assert_eq!(out[2].end, ExchangeEnd::Complete);
    }

    #[test]
    fn a_fragment_after_a_gap_is_skipped_and_the_next_line_pairs() {
        use Direction::{Egress, Ingress};
        let (out, health) = run(&[
            data(Ingress, 1, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n"),
            StreamEvent::Gap {
                conn: CONN,
                direction: Egress,
                timestamp_ns: 2,
                len: 10,
            },
            data(Egress, 2, "\"x\"}}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n"),
            // A line that is not JSON-RPC at all is counted.
            data(Ingress, 3, "hello\n"),
            // Cancelled by its sender.
            data(Ingress, 4, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\"}\n"),
            data(Ingress, 5, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":5}}\n"),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].method.as_str(), out[0].bytes_lost), ("ping", 10));
        assert_eq!(out[0].end, ExchangeEnd::Complete);
        assert_eq!(out[1].end, ExchangeEnd::Interrupted("cancelled"));
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(health.jsonrpc_parse_errors.load(Relaxed), 1);
    }
}
