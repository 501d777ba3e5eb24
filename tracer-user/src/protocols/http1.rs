//! HTTP/1.1 over a captured connection: requests from one direction, responses from the other,
//! paired in order (keep-alive and pipelining), with bodies framed by Content-Length, chunked
//! transfer coding or connection close.

use std::{collections::HashMap, collections::VecDeque, sync::Arc};

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::{
    http2::{FrameFinder, Http2Connection, PREFACE},
    websocket::{self, WebSocketConnection},
};
use crate::{
    streams::{ConnKey, Direction, Peer, StreamEvent},
    telemetry::health::Health,
};

/// Larger heads are not HTTP we can use (and would let a peer grow our buffers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const MAX_PENDING_PEERS: usize = 65_536;
const MAX_EARLY_RESPONSES: usize = 4;
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];

pub type Headers = Vec<(String, String)>;

/// The value of the first header called `name` (lower case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub target: String,
    /// Header names in lower case.
    pub headers: Headers,
    /// The body after transfer decoding, still content-encoded; at most the configured cap.
    pub body: Bytes,
    /// Body bytes seen, including any past the cap or lost in gaps.
    pub body_len: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes_lost: u64,
    /// HTTP/2 only: some header fields could not be decoded (HPACK state the capture missed), so
    /// the method, target or headers may be empty. What is there is never guessed.
    pub http2_incomplete_headers: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
    pub body_len: u64,
    pub start_ns: u64,
    pub first_body_ns: Option<u64>,
    pub end_ns: u64,
    /// `(body offset reached, time)` per arrival, to time events inside streamed bodies.
    pub body_timeline: Vec<(u64, u64)>,
    /// False when the body was cut short (process exit, idle timeout, shutdown, gap).
    pub complete: bool,
    pub bytes_lost: u64,
    /// HTTP/2 only: some header fields could not be decoded; the status may be 0.
    pub http2_incomplete_headers: bool,
}

impl HttpResponse {
    /// When the body had reached `offset` bytes.
    pub fn time_at_offset(&self, offset: u64) -> Option<u64> {
        self.body_timeline
            .iter()
            .find(|(reached, _)| *reached >= offset)
            .map(|(_, t)| *t)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeEnd {
    Complete,
    /// The response never completed; the reason is low-cardinality (`process_exit`, ...).
    Interrupted(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpExchange {
    pub conn: ConnKey,
    /// The other end, as far as it is known.
    pub peer: Peer,
    pub request: HttpRequest,
    pub response: Option<HttpResponse>,
    pub end: ExchangeEnd,
    /// HTTP/2 only: the tracer joined the connection after it started (its first captured bytes
    /// were frames, not the preface). Streams already open then are partial, and header fields
    /// encoded against the HPACK table built before may be missing (see
    /// `http2_incomplete_headers`); the bodies are whole from where capture began.
    pub http2_joined_mid_connection: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed message head: {0}")]
    Head(String),
    #[error("message head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("malformed chunk size line")]
    ChunkSize,
    #[error("bytes lost inside a message")]
    Gap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

/// A message whose head is parsed and whose body is arriving.
#[derive(Debug)]
struct Partial {
    method: String,
    target: String,
    status: u16,
    headers: Headers,
    framing: Framing,
    body: BytesMut,
    body_len: u64,
    start_ns: u64,
    first_body_ns: Option<u64>,
    last_ns: u64,
    timeline: Vec<(u64, u64)>,
    bytes_lost: u64,
}

/// A complete (or, at close, partial) parsed message before it is typed as request/response.
#[derive(Debug)]
struct Message {
    partial: Partial,
    complete: bool,
}

/// Incremental parser for one direction of one connection.
#[derive(Debug)]
struct MessageParser {
    kind: Kind,
    buf: BytesMut,
    head_start_ns: u64,
    current: Option<Partial>,
    max_body: usize,
    /// Set while passing over bytes after an error, so one bad stretch counts as one error.
    resyncing: bool,
}

impl MessageParser {
    fn new(kind: Kind, max_body: usize) -> Self {
        MessageParser {
            kind,
            buf: BytesMut::new(),
            head_start_ns: 0,
            current: None,
            max_body,
            resyncing: false,
        }
    }

    fn buffer(&mut self, timestamp_ns: u64, data: &[u8]) {
        if self.buf.is_empty() && self.current.is_none() {
            self.head_start_ns = timestamp_ns;
        }
        if let Some(p) = &mut self.current {
            p.last_ns = timestamp_ns;
        }
        self.buf.extend_from_slice(data);
    }

    /// Parses as far as the buffer allows; returns a message when one completes.
    /// `answers_head` says the response being parsed answers a HEAD request (no body).
    fn step(
        &mut self,
        timestamp_ns: u64,
        answers_head: bool,
    ) -> Result<Option<Message>, ParseError> {
        loop {
            let Some(partial) = &mut self.current else {
                if !self.start_message(timestamp_ns, answers_head)? {
                    return Ok(None);
                }
                continue;
            };
            if self.resyncing {
                self.resyncing = false;
            }
            let done = match partial.framing {
                Framing::Length(remaining) => {
                    let take = remaining.min(self.buf.len() as u64) as usize;
                    let data = self.buf.split_to(take);
                    append_body(partial, &data, timestamp_ns, self.max_body);
                    partial.framing = Framing::Length(remaining - take as u64);
                    remaining == take as u64
                }
                Framing::Chunked(_) => {
                    if !step_chunked(partial, &mut self.buf, timestamp_ns, self.max_body)? {
                        return Ok(None);
                    }
                    true
                }
                Framing::UntilClose => {
                    let data = self.buf.split();
                    append_body(partial, &data, timestamp_ns, self.max_body);
                    return Ok(None);
                }
            };
            if !done {
                return Ok(None);
            }
            let partial = self.current.take().expect("checked above");
            if !self.buf.is_empty() {
                self.head_start_ns = timestamp_ns;
            }
            return Ok(Some(Message {
                partial,
                complete: true,
            }));
        }
    }

    /// Parses a head from the buffer; false when more bytes are needed.
    fn start_message(&mut self, timestamp_ns: u64, answers_head: bool) -> Result<bool, ParseError> {
        // Stray line ends between messages are allowed (RFC 9112 §2.2).
        while self.buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n') {
            self.buf.advance(1);
        }
        if self.buf.is_empty() {
            return Ok(false);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (head_len, method, target, status, parsed_headers) = match self.kind {
            Kind::Request => {
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => (
                        n,
                        req.method.unwrap_or_default().to_string(),
                        req.path.unwrap_or_default().to_string(),
                        0,
                        collect_headers(req.headers),
                    ),
                    Ok(httparse::Status::Partial) => return self.need_more(),
                    Err(e) => return Err(ParseError::Head(e.to_string())),
                }
            }
            Kind::Response => {
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => (
                        n,
                        String::new(),
                        String::new(),
                        resp.code.unwrap_or_default(),
                        collect_headers(resp.headers),
                    ),
                    Ok(httparse::Status::Partial) => return self.need_more(),
                    Err(e) => return Err(ParseError::Head(e.to_string())),
                }
            }
        };
        self.buf.advance(head_len);
        let framing = framing(self.kind, &method, status, answers_head, &parsed_headers);
        self.current = Some(Partial {
            method,
            target,
            status,
            headers: parsed_headers,
            framing,
            body: BytesMut::new(),
            body_len: 0,
            start_ns: self.head_start_ns,
            first_body_ns: None,
            last_ns: timestamp_ns,
            timeline: Vec::new(),
            bytes_lost: 0,
        });
        Ok(true)
    }

    fn need_more(&self) -> Result<bool, ParseError> {
        if self.buf.len() > MAX_HEAD_BYTES {
            Err(ParseError::HeadTooLarge)
        } else {
            Ok(false)
        }
    }

    /// After an error: drop the current message and skip to the next line that could start one.
    /// Returns true when this begins a new bad stretch (to be counted once).
    fn resync(&mut self) -> bool {
        self.current = None;
        let first = !self.resyncing;
        self.resyncing = true;
        let start = find_message_start(self.kind, &self.buf[1.min(self.buf.len())..])
            .map(|i| i + 1)
            .unwrap_or(self.buf.len());
        self.buf.advance(start);
        first
    }

    /// `len` bytes are missing from the stream here.
    fn gap(&mut self, len: u64) -> Result<(), ParseError> {
        let Some(partial) = &mut self.current else {
            // Between messages or inside a head: whatever is buffered cannot be trusted.
            self.buf.clear();
            return Ok(());
        };
        partial.bytes_lost += len;
        match partial.framing {
            Framing::Length(remaining) if self.buf.is_empty() && len <= remaining => {
                partial.body_len += len;
                partial.framing = Framing::Length(remaining - len);
                Ok(())
            }
            Framing::UntilClose => {
                partial.body_len += len;
                Ok(())
            }
            _ => Err(ParseError::Gap),
        }
    }

    /// Whatever is buffered, for the protocol that takes over the connection.
    fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// Nothing in progress and what is buffered is (the start of) the HTTP/2 preface.
    fn holds_preface(&self) -> bool {
        let n = self.buf.len().min(PREFACE.len());
        self.current.is_none() && n > 0 && self.buf[..n] == PREFACE[..n]
    }

    /// No message in progress and nothing buffered.
    fn is_between_messages(&self) -> bool {
        self.current.is_none() && self.buf.is_empty()
    }

    /// The message in progress ended early (its peer answered it): the bytes it still owed are
    /// counted as lost.
    fn cut_short(&mut self) -> Option<Message> {
        let mut partial = self.current.take()?;
        if let Framing::Length(remaining) = partial.framing {
            partial.bytes_lost += remaining;
            partial.body_len += remaining;
        }
        self.buf.clear();
        Some(Message {
            partial,
            complete: false,
        })
    }

    /// The connection ended: a body delimited by close is complete, anything else is cut short.
    fn close(&mut self) -> Option<Message> {
        let partial = self.current.take()?;
        let complete = partial.framing == Framing::UntilClose;
        Some(Message { partial, complete })
    }
}

fn collect_headers(headers: &[httparse::Header<'_>]) -> Headers {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

fn framing(
    kind: Kind,
    method: &str,
    status: u16,
    answers_head: bool,
    headers: &Headers,
) -> Framing {
    if kind == Kind::Response
        && (answers_head || (100..200).contains(&status) || status == 204 || status == 304)
    {
        return Framing::Length(0);
    }
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Framing::Chunked(ChunkState::Size);
    }
    if let Some(len) = header(headers, "content-length").and_then(|v| v.trim().parse().ok()) {
        return Framing::Length(len);
    }
    match kind {
        // A request without length has no body (RFC 9112 §6.3).
        Kind::Request => {
            let _ = method;
            Framing::Length(0)
        }
        Kind::Response => Framing::UntilClose,
    }
}

fn append_body(partial: &mut Partial, data: &[u8], timestamp_ns: u64, max_body: usize) {
    if data.is_empty() {
        return;
    }
    partial.first_body_ns.get_or_insert(timestamp_ns);
    partial.last_ns = timestamp_ns;
    let room = max_body.saturating_sub(partial.body.len());
    partial
        .body
        .extend_from_slice(&data[..data.len().min(room)]);
    partial.body_len += data.len() as u64;
    match partial.timeline.last_mut() {
        Some((reached, t)) if *t == timestamp_ns => *reached = partial.body_len,
        _ => partial.timeline.push((partial.body_len, timestamp_ns)),
    }
}

/// Advances chunked decoding; true when the message (including trailers) is complete.
fn step_chunked(
    partial: &mut Partial,
    buf: &mut BytesMut,
    timestamp_ns: u64,
    max_body: usize,
) -> Result<bool, ParseError> {
    loop {
        let Framing::Chunked(state) = partial.framing else {
            return Ok(true);
        };
        match state {
            ChunkState::Size => {
                let Some(eol) = find(buf, b"\n") else {
                    return if buf.len() > 1024 {
                        Err(ParseError::ChunkSize)
                    } else {
                        Ok(false)
                    };
                };
                let line = &buf[..eol];
                let size_text = line
                    .split(|b| *b == b';')
                    .next()
                    .map(|s| String::from_utf8_lossy(s).trim().to_string())
                    .unwrap_or_default();
                let size =
                    u64::from_str_radix(&size_text, 16).map_err(|_| ParseError::ChunkSize)?;
                buf.advance(eol + 1);
                partial.framing = Framing::Chunked(if size == 0 {
                    ChunkState::Trailers
                } else {
                    ChunkState::Data(size)
                });
            }
            ChunkState::Data(remaining) => {
                if buf.is_empty() {
                    return Ok(false);
                }
                let take = remaining.min(buf.len() as u64) as usize;
                let data = buf.split_to(take);
                append_body(partial, &data, timestamp_ns, max_body);
                let left = remaining - take as u64;
                partial.framing = Framing::Chunked(if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                });
            }
            ChunkState::DataEnd => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                } else if buf.starts_with(b"\n") {
                    buf.advance(1);
                } else if buf.len() < 2 {
                    return Ok(false);
                } else {
                    return Err(ParseError::ChunkSize);
                }
                partial.framing = Framing::Chunked(ChunkState::Size);
            }
            ChunkState::Trailers => {
                let Some(eol) = find(buf, b"\n") else {
                    return Ok(false);
                };
                let blank = buf[..eol].iter().all(|b| *b == b'\r');
                buf.advance(eol + 1);
                if blank {
                    return Ok(true);
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where the next plausible message start is: a line beginning with a method (requests) or
/// `HTTP/1.` (responses).
fn find_message_start(kind: Kind, buf: &[u8]) -> Option<usize> {
    let starts = |at: &[u8]| match kind {
        Kind::Request => looks_like_request(at),
        Kind::Response => at.starts_with(b"HTTP/1."),
    };
    if starts(buf) {
        return Some(0);
    }
    buf.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .find(|i| starts(&buf[*i..]))
}

pub fn looks_like_request(data: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| data.len() > m.len() && data.starts_with(m.as_bytes()) && data[m.len()] == b' ')
}

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

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The role the first bytes of a direction reveal; `Unknown` when they cannot tell yet.
fn detect_role(direction: Direction, data: &[u8]) -> Role {
    let request = looks_like_request(data);
    let response = data.starts_with(b"HTTP/1.");
    match (direction, request, response) {
        _ if data.starts_with(H2_PREFACE) => match direction {
            Direction::Egress => Role::Http2,
            Direction::Ingress => Role::Server,
        },
        (Direction::Egress, true, _) | (Direction::Ingress, _, true) => Role::Client,
        (Direction::Ingress, true, _) | (Direction::Egress, _, true) => Role::Server,
        _ => Role::Unknown,
    }
}

/// Whether more bytes could still make `data` the start of an HTTP/1 message or the HTTP/2
/// preface (a first write may be a single byte).
fn could_become_http(data: &[u8]) -> bool {
    let is_prefix_of = |token: &[u8]| data.len() < token.len() && token.starts_with(data);
    METHODS
        .iter()
        .any(|m| is_prefix_of(format!("{m} ").as_bytes()))
        || is_prefix_of(b"HTTP/1.")
        || is_prefix_of(H2_PREFACE)
}

struct Connection {
    role: Role,
    peer: Peer,
    /// Responses that arrived before the request they answer. Reads and writes made on different
    /// threads (Go's transport, async runtimes) reach the ring in either order; a request that
    /// started before such a response is the one it answers.
    early_responses: VecDeque<HttpResponse>,
    /// Bytes held per direction while they are too few to decide the role.
    undecided: [Vec<u8>; 2],
    /// Per direction, reads that are not HTTP/1 held while they may be HTTP/2 frames of a
    /// connection joined after its preface.
    frames: [FrameFinder; 2],
    requests: MessageParser,
    responses: MessageParser,
    pending: VecDeque<HttpRequest>,
    last_activity_ns: u64,
    /// The HTTP/2 parser, set with `Role::Http2`.
    h2: Option<Box<Http2Connection>>,
    /// The WebSocket parser, set with `Role::WebSocket`.
    ws: Option<Box<WebSocketConnection>>,
}

/// Tracks every HTTP/1.x connection and emits exchanges as they complete; HTTP/2 connections
/// are handed to [`Http2Connection`].
pub struct HttpTracker {
    conns: HashMap<ConnKey, Connection>,
    /// Peers of connections that have not carried data yet.
    peers_pending: HashMap<ConnKey, Peer>,
    max_body: usize,
    health: Arc<Health>,
}

impl HttpTracker {
    pub fn new(max_body: usize, health: Arc<Health>) -> Self {
        HttpTracker {
            conns: HashMap::new(),
            peers_pending: HashMap::new(),
            max_body,
            health,
        }
    }

    pub fn push(&mut self, event: &StreamEvent, out: &mut Vec<HttpExchange>) {
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
        let peers_pending = &mut self.peers_pending;
        let conn = self.conns.entry(key).or_insert_with(|| Connection {
            role: Role::Unknown,
            peer: peers_pending.remove(&key).unwrap_or_default(),
            early_responses: VecDeque::new(),
            undecided: [Vec::new(), Vec::new()],
            frames: Default::default(),
            requests: MessageParser::new(Kind::Request, max_body),
            responses: MessageParser::new(Kind::Response, max_body),
            pending: VecDeque::new(),
            last_activity_ns: timestamp_ns,
            h2: None,
            ws: None,
        });
        conn.last_activity_ns = timestamp_ns;
        if conn.role == Role::Unknown {
            let held = &mut conn.undecided[direction as usize];
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
                let (frames, dropped) = conn.frames[direction as usize].push(direction, &not_http);
                Health::add(&self.health.unparsed_bytes, dropped);
                let Some(frames) = frames else {
                    return;
                };
                conn.role = Role::Http2;
                joined_frames = Some(frames);
            }
            let held = std::mem::take(&mut conn.undecided[direction as usize]);
            // What the other direction held goes on to the protocol now known, in order: for
            // HTTP/2 the reads kept as possible frames, then those kept as possible HTTP/1.
            let other = direction.opposite();
            let mut other_held = Vec::new();
            if conn.role == Role::Http2 {
                other_held = conn.frames[other as usize].take();
            }
            other_held.extend(std::mem::take(&mut conn.undecided[other as usize]));
            Health::add(
                &self.health.unparsed_bytes,
                conn.frames[other as usize].clear(),
            );
            conn.frames = Default::default();
            if let Some(frames) = joined_frames {
                let mut h2 = Http2Connection::joined(key, max_body, self.health.clone());
                h2.push(direction, timestamp_ns, &frames, &conn.peer, out);
                h2.push(other, timestamp_ns, &other_held, &conn.peer, out);
                conn.h2 = Some(Box::new(h2));
                return;
            }
            if conn.role == Role::Http2 {
                conn.h2 = Some(Box::new(Http2Connection::new(
                    key,
                    max_body,
                    self.health.clone(),
                )));
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
            }
            Direction::Ingress => {
                if conn.responses.is_between_messages() && starts_final_response(bytes) {
                    // The server answers: the request it answers was sent whole, even if its tail
                    // was lost in capture and the loss is only reported later.
                    if let Some(request) = conn.requests.cut_short() {
                        conn.pending.push_back(into_request(request));
                    }
                }
                conn.responses.buffer(timestamp_ns, bytes);
                parse_responses(key, conn, timestamp_ns, &self.health, out);
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
            let held = std::mem::take(&mut conn.undecided[direction as usize]);
            let finder = conn.frames[direction as usize].clear();
            Health::add(&self.health.unparsed_bytes, held.len() as u64 + finder);
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
        if parser.gap(len).is_err() {
            // The framing is lost: the message in progress cannot be completed.
            parser.resync();
            Health::add(&self.health.http_parse_errors, 1);
            return;
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
        if let Some(h2) = &mut conn.h2 {
            h2.close(reason, &conn.peer, out);
            return;
        }
        if let Some(ws) = &mut conn.ws {
            ws.close(reason, &conn.peer, &self.health, out);
            return;
        }
        if conn.role != Role::Client {
            return;
        }
        let mut response = conn.responses.close().map(|msg| {
            let complete = msg.complete;
            let mut r = into_response(msg);
            r.complete = complete;
            r
        });
        for request in conn.pending.drain(..) {
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
        if conn.requests.holds_preface() && conn.pending.back().is_some_and(asks_h2c) {
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
                    }
                }
                match conn.early_responses.pop_front() {
                    Some(response) if conn.pending.is_empty() => {
                        Health::add(&health.http_exchanges, 1);
                        out.push(HttpExchange {
                            conn: key,
                            peer: conn.peer.clone(),
                            request,
                            response: Some(response),
                            end: ExchangeEnd::Complete,
                            http2_joined_mid_connection: false,
                        });
                    }
                    early => {
                        if let Some(response) = early {
                            conn.early_responses.push_front(response);
                        }
                        conn.pending.push_back(request);
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                if conn.requests.resync() {
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
                                request,
                                settings.as_deref(),
                            );
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
                            );
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
                            request,
                            response: Some(response),
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
                if conn.responses.resync() {
                    Health::add(&health.http_parse_errors, 1);
                }
            }
        }
    }
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
    data.len() >= 10 && data.starts_with(b"HTTP/1.") && data[8] == b' ' && data[9] != b'1'
}

fn into_request(msg: Message) -> HttpRequest {
    let p = msg.partial;
    HttpRequest {
        method: p.method,
        target: p.target,
        headers: p.headers,
        body: p.body.freeze(),
        body_len: p.body_len,
        start_ns: p.start_ns,
        end_ns: p.last_ns,
        bytes_lost: p.bytes_lost,
        http2_incomplete_headers: false,
    }
}

fn into_response(msg: Message) -> HttpResponse {
    let p = msg.partial;
    HttpResponse {
        status: p.status,
        headers: p.headers,
        body: p.body.freeze(),
        body_len: p.body_len,
        start_ns: p.start_ns,
        first_body_ns: p.first_body_ns,
        end_ns: p.last_ns,
        body_timeline: p.timeline,
        complete: msg.complete,
        bytes_lost: p.bytes_lost,
        http2_incomplete_headers: false,
    }
}
