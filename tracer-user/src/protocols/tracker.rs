//! The switchboard for HTTP connections: decides from a connection's first bytes what it
//! speaks, and hands it to the HTTP/1.1 parser, to [`Http2Connection`] (the HTTP/2 preface, an
//! `Upgrade: h2c`, or frames of a connection joined late) or to [`WebSocketConnection`] (an
//! upgrade), which all emit the same [`HttpExchange`]s.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::{collections::HashMap, collections::VecDeque, sync::Arc};

use super::{
    http1::{into_request, into_response, Kind, MessageParser},
    http2::{FrameFinder, Http2Connection},
    memory::{BodyBudget, Held},
    sniff::{could_become_http, looks_like_request, HTTP2_PREFACE_START},
    state_bytes::{
        head_bytes, headers_bytes, timeline_bytes, total, StateBytes, StateTotal,
        CONNECTION_OVERHEAD_BYTES,
    },
    websocket::{self, WebSocketConnection},
};
use crate::{
    model::{
        header, ConnKey, Direction, ExchangeEnd, HttpExchange, HttpRequest, HttpResponse, Peer,
        StreamEvent,
    },
    telemetry::health::Health,
};

const MAX_PENDING_PEERS: usize = 65_536;
const MAX_EARLY_RESPONSES: usize = 4;
/// Requests one connection may have waiting for their answers. HTTP/1 clients pipeline a few at
/// most; past this the answers were lost, and holding on would grow without bound.
const MAX_PENDING_REQUESTS: usize = 256;

/// What a connection speaks, decided by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Unknown,
    /// This process sends requests: the side we trace.
    Client,
    /// This process answers requests (a local model server, a proxy): not traced as calls.
    Server,
    /// This process sent the HTTP/2 preface: `Connection::h2` parses the connection.
    Http2,
    /// Upgraded to WebSocket: `Connection::ws` parses the connection.
    WebSocket,
    /// Not a protocol parsed here: later parsers.
    Other,
}

/// The role the first bytes of a direction reveal; `Unknown` when they cannot tell yet.
fn detect_role(direction: Direction, data: &[u8]) -> Role {
    let request = looks_like_request(data);
    let response = data.starts_with(b"HTTP/1.");
    match (direction, request, response) {
        _ if data.starts_with(HTTP2_PREFACE_START) => match direction {
            Direction::Egress => Role::Http2,
            Direction::Ingress => Role::Server,
        },
        (Direction::Egress, true, _) | (Direction::Ingress, _, true) => Role::Client,
        (Direction::Ingress, true, _) | (Direction::Egress, _, true) => Role::Server,
        _ => Role::Unknown,
    }
}

/// The half of a per-direction pair (`[egress, ingress]`) that belongs to `direction`.
fn side<T>(pair: &mut [T; 2], direction: Direction) -> &mut T {
    let [egress, ingress] = pair;
    match direction {
        Direction::Egress => egress,
        Direction::Ingress => ingress,
    }
}

struct Connection {
    role: Role,
    peer: Peer,
    /// Responses that arrived before the request they answer. Reads and writes made on different
    /// threads (Go's transport, async runtimes) reach the ring in either order; a request that
    /// started before such a response is the one it answers.
    early_responses: VecDeque<Held<HttpResponse>>,
    /// Bytes held per direction while they are too few to decide the role.
    undecided: [Vec<u8>; 2],
    /// Per direction, reads that are not HTTP/1 held while they may be HTTP/2 frames of a
    /// connection joined after its preface.
    frames: [FrameFinder; 2],
    requests: MessageParser,
    responses: MessageParser,
    /// Requests waiting for their answers, their bodies still charged to the budget.
    pending: VecDeque<Held<HttpRequest>>,
    last_activity_ns: u64,
    /// The HTTP/2 parser, set with `Role::Http2`.
    h2: Option<Box<Http2Connection>>,
    /// The WebSocket parser, set with `Role::WebSocket`.
    ws: Option<Box<WebSocketConnection>>,
    /// What [`StateBytes`] said last, as charged to the tracker's state total.
    charged: u64,
}

impl StateBytes for Connection {
    fn state_bytes(&self) -> u64 {
        let request_heads = self
            .pending
            .iter()
            .map(|r| head_bytes(&r.method, &r.target, &r.headers));
        let response_heads = self
            .early_responses
            .iter()
            .map(|r| total([headers_bytes(&r.headers), timeline_bytes(&r.body_timeline)]));
        total(
            request_heads
                .chain(response_heads)
                .chain(self.undecided.iter().map(|u| u.len() as u64))
                .chain(self.frames.iter().map(StateBytes::state_bytes))
                .chain([
                    CONNECTION_OVERHEAD_BYTES,
                    self.requests.state_bytes(),
                    self.responses.state_bytes(),
                    self.h2.as_ref().map_or(0, |h2| h2.state_bytes()),
                    self.ws.as_ref().map_or(0, |ws| ws.state_bytes()),
                ]),
        )
    }
}

/// Tracks every HTTP/1.x connection and emits exchanges as they complete; HTTP/2 connections
/// are handed to [`Http2Connection`].
pub struct HttpTracker {
    conns: HashMap<ConnKey, Connection>,
    /// Peers of connections that have not carried data yet.
    peers_pending: HashMap<ConnKey, Peer>,
    max_body: usize,
    /// What every connection's bodies in progress may hold together.
    budget: BodyBudget,
    /// What every connection's parsers hold together besides bodies ([`StateBytes`]), against
    /// its limit.
    state: StateTotal,
    health: Arc<Health>,
}

impl HttpTracker {
    pub fn new(max_body: usize, health: Arc<Health>) -> Self {
        HttpTracker {
            conns: HashMap::new(),
            peers_pending: HashMap::new(),
            max_body,
            budget: BodyBudget::default(),
            state: StateTotal::new(u64::MAX),
            health,
        }
    }

    /// Bodies of every connection drawn from `budget` (else bounded by the body limit only).
    pub fn with_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = budget;
        self
    }

    /// What every connection's parsers may hold together besides bodies: past it the least
    /// recently active connections are ended (else no bound beyond each connection's own).
    pub fn with_state_limit(mut self, bytes: u64) -> Self {
        self.state = StateTotal::new(bytes);
        self
    }

    /// What every connection's parsers hold together now, bodies left out.
    pub fn state_bytes_held(&self) -> u64 {
        self.state.held()
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes the bodies in progress hold of the budget.
    pub fn body_bytes_held(&self) -> u64 {
        self.budget.held()
    }

    pub fn push(&mut self, event: &StreamEvent, out: &mut Vec<HttpExchange>) {
        self.handle(event, out);
        if let StreamEvent::Data { conn, .. } | StreamEvent::Gap { conn, .. } = event {
            self.recharge(*conn, out);
        }
    }

    /// Charges the connection's state anew; past the limit, ends the least recently active
    /// connections until a quarter of the limit is free again (a batch, not one per event).
    fn recharge(&mut self, key: ConnKey, out: &mut Vec<HttpExchange>) {
        if let Some(conn) = self.conns.get_mut(&key) {
            let now = conn.state_bytes();
            self.state.recharge(&mut conn.charged, now);
        }
        let evict = self.state.to_evict(
            self.conns
                .iter()
                .map(|(k, c)| (*k, c.last_activity_ns, c.charged)),
        );
        for key in evict {
            self.close(key, "memory_budget", out);
            Health::add(&self.health.connections_evicted_memory_budget, 1);
        }
    }

    fn handle(&mut self, event: &StreamEvent, out: &mut Vec<HttpExchange>) {
        match event {
            StreamEvent::Data {
                conn,
                direction,
                timestamp_ns,
                bytes,
            } => self.data(*conn, *direction, *timestamp_ns, bytes, out),
            StreamEvent::Gap {
                conn,
                direction,
                timestamp_ns,
                len,
            } => self.gap(*conn, *direction, *timestamp_ns, *len, out),
            StreamEvent::Peer { conn, peer } => {
                // Known before any data (connect) or learnt later (TLS link): keep for exchanges.
                match self.conns.get_mut(conn) {
                    Some(c) => c.peer = peer.clone(),
                    None => {
                        // Bounded: a flood of connections that never speak HTTP must not grow it.
                        if self.peers_pending.len() >= MAX_PENDING_PEERS {
                            Health::add(
                                &self.health.connection_peers_evicted,
                                self.peers_pending.len() as u64,
                            );
                            self.peers_pending.clear();
                        }
                        self.peers_pending.insert(*conn, peer.clone());
                    }
                }
            }
            StreamEvent::Closed { conn, .. } => {
                self.peers_pending.remove(conn);
                self.close(*conn, "connection_closed", out);
            }
            StreamEvent::ProcessExit { pid, .. } => {
                self.peers_pending.retain(|k, _| k.pid != *pid);
                let keys: Vec<ConnKey> = self
                    .conns
                    .keys()
                    .filter(|k| k.pid == *pid)
                    .copied()
                    .collect();
                for key in keys {
                    self.close(key, "process_exit", out);
                }
            }
        }
    }

    /// Closes connections quiet for longer than `idle_ns` that still owe a response.
    pub fn sweep_idle(&mut self, now_ns: u64, idle_ns: u64, out: &mut Vec<HttpExchange>) {
        let idle: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_activity_ns) > idle_ns)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            // An HTTP/2 connection cannot be picked up again without the HPACK state it has
            // built: only its streams end.
            if let Some(conn) = self.conns.get_mut(&key) {
                if let Some(h2) = &mut conn.h2 {
                    h2.close("idle_timeout", &conn.peer, out);
                    continue;
                }
            }
            self.close(key, "idle_timeout", out);
        }
    }

    /// Closes everything (shutdown).
    pub fn close_all(&mut self, out: &mut Vec<HttpExchange>) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key, "shutdown", out);
        }
    }

    fn data(
        &mut self,
        key: ConnKey,
        direction: Direction,
        timestamp_ns: u64,
        bytes: &[u8],
        out: &mut Vec<HttpExchange>,
    ) {
        let max_body = self.max_body;
        let budget = &self.budget;
        let peers_pending = &mut self.peers_pending;
        let conn = self.conns.entry(key).or_insert_with(|| Connection {
            role: Role::Unknown,
            peer: peers_pending.remove(&key).unwrap_or_default(),
            early_responses: VecDeque::new(),
            undecided: [Vec::new(), Vec::new()],
            frames: Default::default(),
            requests: MessageParser::new(Kind::Request, max_body).with_budget(budget.clone()),
            responses: MessageParser::new(Kind::Response, max_body).with_budget(budget.clone()),
            pending: VecDeque::new(),
            last_activity_ns: timestamp_ns,
            h2: None,
            ws: None,
            charged: 0,
        });
        conn.last_activity_ns = timestamp_ns;
        if conn.role == Role::Unknown {
            let held = side(&mut conn.undecided, direction);
            held.extend_from_slice(bytes);
            conn.role = detect_role(direction, held);
            let mut joined_frames = None;
            if conn.role == Role::Unknown {
                if could_become_http(held) {
                    return;
                }
                // Not the start of an HTTP/1 message nor the preface: HTTP/2 frames of a
                // connection joined after its preface, or the middle of a message (attached
                // mid-stream): wait for either.
                let not_http = std::mem::take(held);
                let (frames, dropped) =
                    side(&mut conn.frames, direction).push(direction, &not_http);
                Health::add(&self.health.unparsed_bytes, dropped);
                let Some(frames) = frames else {
                    return;
                };
                conn.role = Role::Http2;
                joined_frames = Some(frames);
            }
            let held = std::mem::take(side(&mut conn.undecided, direction));
            // What the other direction held goes on to the protocol now known, in order: for
            // HTTP/2 the reads kept as possible frames, then those kept as possible HTTP/1.
            let other = direction.opposite();
            let mut other_held = Vec::new();
            if conn.role == Role::Http2 {
                other_held = side(&mut conn.frames, other).take();
            }
            other_held.extend(std::mem::take(side(&mut conn.undecided, other)));
            Health::add(
                &self.health.unparsed_bytes,
                side(&mut conn.frames, other).clear(),
            );
            conn.frames = Default::default();
            if let Some(frames) = joined_frames {
                let mut h2 = Http2Connection::joined(key, max_body, self.health.clone())
                    .with_budget(self.budget.clone());
                h2.push(direction, timestamp_ns, &frames, &conn.peer, out);
                h2.push(other, timestamp_ns, &other_held, &conn.peer, out);
                conn.h2 = Some(Box::new(h2));
                return;
            }
            if conn.role == Role::Http2 {
                conn.h2 = Some(Box::new(
                    Http2Connection::new(key, max_body, self.health.clone())
                        .with_budget(self.budget.clone()),
                ));
            }
            self.data(key, direction, timestamp_ns, &held, out);
            if !other_held.is_empty() {
                self.data(key, other, timestamp_ns, &other_held, out);
            }
            return;
        }
        if let Some(h2) = &mut conn.h2 {
            h2.push(direction, timestamp_ns, bytes, &conn.peer, out);
            return;
        }
        if let Some(ws) = &mut conn.ws {
            ws.push(
                direction,
                timestamp_ns,
                bytes,
                &conn.peer,
                &self.health,
                out,
            );
            return;
        }
        if conn.role != Role::Client {
            Health::add(&self.health.unparsed_bytes, bytes.len() as u64);
            return;
        }
        match direction {
            Direction::Egress => {
                conn.requests.buffer(timestamp_ns, bytes);
                parse_requests(key, conn, timestamp_ns, &self.health, out);
                conn.requests.take_not_kept().count_in(&self.health);
            }
            Direction::Ingress => {
                if conn.responses.is_between_messages() && starts_final_response(bytes) {
                    // The server answers: the request it answers was sent whole, even if its tail
                    // was lost in capture and the loss is only reported later.
                    if let Some((request, dropped)) = conn.requests.cut_short() {
                        Health::add(&self.health.http1_dropped_cut_short, dropped);
                        wait_for_answer(key, conn, into_request(request), &self.health, out);
                    }
                }
                conn.responses.buffer(timestamp_ns, bytes);
                parse_responses(key, conn, timestamp_ns, &self.health, out);
                conn.responses.take_not_kept().count_in(&self.health);
            }
        }
    }

    fn gap(
        &mut self,
        key: ConnKey,
        direction: Direction,
        timestamp_ns: u64,
        len: u64,
        out: &mut Vec<HttpExchange>,
    ) {
        Health::add(&self.health.stream_gap_bytes, len);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.role == Role::Unknown {
            // Held bytes cannot be continued across the hole.
            let held = std::mem::take(side(&mut conn.undecided, direction));
            let finder = side(&mut conn.frames, direction).clear();
            Health::add(
                &self.health.unparsed_bytes,
                (held.len() as u64).saturating_add(finder),
            );
            return;
        }
        if let Some(ws) = &mut conn.ws {
            ws.gap(direction);
            return;
        }
        if let Some(h2) = &mut conn.h2 {
            h2.gap(direction, len, &conn.peer, out);
            return;
        }
        if conn.role != Role::Client {
            return;
        }
        let parser = match direction {
            Direction::Egress => &mut conn.requests,
            Direction::Ingress => &mut conn.responses,
        };
        match parser.gap(len) {
            Ok(dropped) => Health::add(&self.health.http1_dropped_gap, dropped),
            Err(_) => {
                // The framing is lost: the message in progress cannot be completed.
                let resync = parser.resync();
                Health::add(&self.health.http1_dropped_resync, resync.skipped);
                Health::add(&self.health.http_parse_errors, 1);
                return;
            }
        }
        // A gap can end a body: finish what it completes.
        match direction {
            Direction::Egress => parse_requests(key, conn, timestamp_ns, &self.health, out),
            Direction::Ingress => parse_responses(key, conn, timestamp_ns, &self.health, out),
        }
    }

    fn close(&mut self, key: ConnKey, reason: &'static str, out: &mut Vec<HttpExchange>) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        self.state.release(conn.charged);
        if let Some(h2) = &mut conn.h2 {
            h2.close(reason, &conn.peer, out);
            return;
        }
        if let Some(ws) = &mut conn.ws {
            ws.close(reason, &conn.peer, &self.health, out);
            return;
        }
        if conn.role == Role::Unknown {
            // Too few bytes ever came to tell what the connection speaks.
            let [egress, ingress] = &mut conn.frames;
            let held = conn
                .undecided
                .iter()
                .fold(0u64, |sum, h| sum.saturating_add(h.len() as u64));
            let finders = egress.clear().saturating_add(ingress.clear());
            Health::add(&self.health.unparsed_bytes, held.saturating_add(finders));
        }
        if conn.role != Role::Client {
            return;
        }
        Health::add(
            &self.health.http1_dropped_unfinished_head,
            conn.requests
                .unfinished_head_bytes()
                .saturating_add(conn.responses.unfinished_head_bytes()),
        );
        if conn.requests.close().is_some() {
            Health::add(&self.health.http1_dropped_unfinished_request, 1);
        }
        let without_request = conn.early_responses.len() as u64;
        Health::add(
            &self.health.http1_dropped_unanswered_response,
            without_request,
        );
        let mut response = conn.responses.close().map(|msg| {
            let complete = msg.complete;
            let mut r = into_response(msg).into_inner();
            r.complete = complete;
            r
        });
        for request in conn.pending.drain(..) {
            let request = request.into_inner();
            let response = response.take();
            let end = match &response {
                Some(r) if r.complete => ExchangeEnd::Complete,
                _ => ExchangeEnd::Interrupted(reason),
            };
            if end == ExchangeEnd::Complete {
                Health::add(&self.health.http_exchanges, 1);
            } else {
                Health::add(&self.health.http_interrupted, 1);
            }
            out.push(HttpExchange {
                conn: key,
                peer: conn.peer.clone(),
                request,
                response,
                end,
                http2_joined_mid_connection: false,
            });
        }
        if response.is_some() {
            Health::add(&self.health.http1_dropped_unanswered_response, 1);
        }
    }
}

fn parse_requests(
    key: ConnKey,
    conn: &mut Connection,
    timestamp_ns: u64,
    health: &Health,
    out: &mut Vec<HttpExchange>,
) {
    loop {
        if conn.requests.holds_preface() && conn.pending.back().is_some_and(|r| asks_h2c(r)) {
            // The preface of an `Upgrade: h2c` whose 101 has not been read yet: it belongs to
            // the HTTP/2 connection the answer will make of this one.
            break;
        }
        match conn.requests.step(timestamp_ns, false) {
            Ok(Some(msg)) => {
                let request = into_request(msg);
                // Responses older than this request answer requests we never saw.
                while conn
                    .early_responses
                    .front()
                    .is_some_and(|r| r.start_ns < request.start_ns)
                {
                    if let Some(stale) = conn.early_responses.pop_front() {
                        Health::add(&health.unparsed_bytes, stale.body_len);
                        Health::add(&health.http1_dropped_unanswered_response, 1);
                    }
                }
                match conn.early_responses.pop_front() {
                    Some(response) if conn.pending.is_empty() => {
                        Health::add(&health.http_exchanges, 1);
                        out.push(HttpExchange {
                            conn: key,
                            peer: conn.peer.clone(),
                            request: request.into_inner(),
                            response: Some(response.into_inner()),
                            end: ExchangeEnd::Complete,
                            http2_joined_mid_connection: false,
                        });
                    }
                    early => {
                        if let Some(response) = early {
                            conn.early_responses.push_front(response);
                        }
                        wait_for_answer(key, conn, request, health, out);
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                let resync = conn.requests.resync();
                Health::add(&health.http1_dropped_resync, resync.skipped);
                if resync.new_stretch {
                    Health::add(&health.http_parse_errors, 1);
                }
            }
        }
    }
}

fn parse_responses(
    key: ConnKey,
    conn: &mut Connection,
    timestamp_ns: u64,
    health: &Arc<Health>,
    out: &mut Vec<HttpExchange>,
) {
    loop {
        let answers_head = conn.pending.front().is_some_and(|r| r.method == "HEAD");
        match conn.responses.step(timestamp_ns, answers_head) {
            Ok(Some(msg)) => {
                let response = into_response(msg);
                let switched = response.status == 101;
                // Interim responses (100 Continue) precede the real one.
                if (100..200).contains(&response.status) && !switched {
                    continue;
                }
                match conn.pending.pop_front() {
                    Some(request) => {
                        if switched
                            && header(&response.headers, "upgrade")
                                .is_some_and(|u| u.trim().eq_ignore_ascii_case("h2c"))
                        {
                            // RFC 7540 §3.2: the request becomes stream 1, whose response comes
                            // in HTTP/2 frames, after the server's SETTINGS and the client's
                            // preface, which may already sit behind the heads.
                            let settings =
                                header(&request.headers, "http2-settings").map(str::to_string);
                            let mut h2 = Http2Connection::upgraded(
                                key,
                                conn.requests.max_body,
                                health.clone(),
                                request.into_inner(),
                                settings.as_deref(),
                            )
                            .with_budget(conn.requests.budget.clone());
                            let early_out = conn.requests.take_buffered();
                            let early_in = conn.responses.take_buffered();
                            h2.push(Direction::Egress, timestamp_ns, &early_out, &conn.peer, out);
                            h2.push(Direction::Ingress, timestamp_ns, &early_in, &conn.peer, out);
                            conn.h2 = Some(Box::new(h2));
                            conn.role = Role::Http2;
                            return;
                        }
                        if switched
                            && header(&response.headers, "upgrade")
                                .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
                        {
                            let deflate = websocket::negotiated_deflate(header(
                                &response.headers,
                                "sec-websocket-extensions",
                            ));
                            let mut ws = WebSocketConnection::new(
                                key,
                                &request.target,
                                header(&request.headers, "host"),
                                deflate,
                                conn.requests.max_body,
                            )
                            .with_budget(conn.requests.budget.clone());
                            // Frames may already sit behind the heads in the same reads.
                            let early_in = conn.responses.take_buffered();
                            let early_out = conn.requests.take_buffered();
                            ws.push(
                                Direction::Egress,
                                timestamp_ns,
                                &early_out,
                                &conn.peer,
                                health,
                                out,
                            );
                            ws.push(
                                Direction::Ingress,
                                timestamp_ns,
                                &early_in,
                                &conn.peer,
                                health,
                                out,
                            );
                            conn.ws = Some(Box::new(ws));
                            conn.role = Role::WebSocket;
                            return;
                        }
                        Health::add(&health.http_exchanges, 1);
                        out.push(HttpExchange {
                            conn: key,
                            peer: conn.peer.clone(),
                            request: request.into_inner(),
                            response: Some(response.into_inner()),
                            end: ExchangeEnd::Complete,
                            http2_joined_mid_connection: false,
                        });
                    }
                    // Not seen yet (written on another thread) or never (attached mid-exchange):
                    // keep it for a request that started before it.
                    None => {
                        if conn.early_responses.len() >= MAX_EARLY_RESPONSES {
                            if let Some(dropped) = conn.early_responses.pop_front() {
                                Health::add(&health.unparsed_bytes, dropped.body_len);
                                Health::add(&health.http1_dropped_unanswered_response, 1);
                            }
                        }
                        conn.early_responses.push_back(response);
                    }
                }
                if switched {
                    // Switched protocols: what follows is not HTTP/1.
                    conn.role = Role::Other;
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => {
                let resync = conn.responses.resync();
                Health::add(&health.http1_dropped_resync, resync.skipped);
                if resync.new_stretch {
                    Health::add(&health.http_parse_errors, 1);
                }
            }
        }
    }
}

/// Queues a request for its answer; past [`MAX_PENDING_REQUESTS`] the oldest waiting is
/// reported interrupted and counted.
fn wait_for_answer(
    key: ConnKey,
    conn: &mut Connection,
    request: Held<HttpRequest>,
    health: &Health,
    out: &mut Vec<HttpExchange>,
) {
    if conn.pending.len() >= MAX_PENDING_REQUESTS {
        if let Some(oldest) = conn.pending.pop_front() {
            Health::add(&health.http1_pending_evicted, 1);
            Health::add(&health.http_interrupted, 1);
            out.push(HttpExchange {
                conn: key,
                peer: conn.peer.clone(),
                request: oldest.into_inner(),
                response: None,
                end: ExchangeEnd::Interrupted("too_many_pending"),
                http2_joined_mid_connection: false,
            });
        }
    }
    conn.pending.push_back(request);
}

/// Whether a request asks to switch to HTTP/2 over plain TCP (RFC 7540 §3.2).
fn asks_h2c(request: &HttpRequest) -> bool {
    header(&request.headers, "upgrade").is_some_and(|protocols| {
        protocols
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("h2c"))
    })
}

/// `HTTP/1.x` followed by a status that is not 1xx.
fn starts_final_response(data: &[u8]) -> bool {
    data.starts_with(b"HTTP/1.")
        && data.get(8) == Some(&b' ')
        && data.get(9).is_some_and(|status| *status != b'1')
}
