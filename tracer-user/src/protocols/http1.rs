//! HTTP/1.1 messages of one direction of a captured connection, with bodies framed by
//! Content-Length, chunked transfer coding or connection close. `tracker` pairs them in order
//! (keep-alive and pipelining) and hands connections that switch protocols on.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use bytes::{Buf, BytesMut};
use thiserror::Error;

use super::{
    memory::{BodyBudget, Held, KeptBody, NotKept},
    sniff::{looks_like_request, HTTP2_PREFACE},
};
// Larger heads are not HTTP we can use (and would let a peer grow our buffers).
use crate::model::{header, Headers, HttpRequest, HttpResponse, MAX_HEADER_FIELDS, MAX_HEAD_BYTES};

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
pub(super) enum Kind {
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
    body: KeptBody,
    body_len: u64,
    start_ns: u64,
    first_body_ns: Option<u64>,
    last_ns: u64,
    timeline: Vec<(u64, u64)>,
    bytes_lost: u64,
}

/// What [`MessageParser::resync`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Resync {
    /// This begins a new bad stretch (to be counted once as a parse error).
    pub(super) new_stretch: bool,
    /// Bytes passed over to the next plausible message start.
    pub(super) skipped: u64,
}

/// A complete (or, at close, partial) parsed message before it is typed as request/response.
#[derive(Debug)]
pub(super) struct Message {
    partial: Partial,
    pub(super) complete: bool,
}

/// Incremental parser for one direction of one connection.
#[derive(Debug)]
pub(super) struct MessageParser {
    kind: Kind,
    buf: BytesMut,
    head_start_ns: u64,
    current: Option<Partial>,
    pub(super) max_body: usize,
    /// What every connection's bodies in progress may hold together.
    pub(super) budget: BodyBudget,
    /// Body bytes not kept since [`MessageParser::take_not_kept`], for the tracker's counters.
    not_kept: NotKept,
    /// Set while passing over bytes after an error, so one bad stretch counts as one error.
    resyncing: bool,
}

impl MessageParser {
    pub(super) fn new(kind: Kind, max_body: usize) -> Self {
        MessageParser {
            kind,
            buf: BytesMut::new(),
            head_start_ns: 0,
            current: None,
            max_body,
            budget: BodyBudget::default(),
            not_kept: NotKept::default(),
            resyncing: false,
        }
    }

    /// Bodies drawn from `budget` (else bounded by the body limit only).
    pub(super) fn with_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Body bytes not kept (past the body limit or the budget) since the last call.
    pub(super) fn take_not_kept(&mut self) -> NotKept {
        std::mem::take(&mut self.not_kept)
    }

    pub(super) fn buffer(&mut self, timestamp_ns: u64, data: &[u8]) {
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
    pub(super) fn step(
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
                    let not_kept =
                        append_body(partial, &data, timestamp_ns, self.max_body, &self.budget);
                    self.not_kept.add(not_kept);
                    partial.framing = Framing::Length(remaining.saturating_sub(take as u64));
                    remaining == take as u64
                }
                Framing::Chunked(_) => {
                    let body = BodyBounds {
                        max_body: self.max_body,
                        budget: &self.budget,
                        not_kept: &mut self.not_kept,
                    };
                    if !step_chunked(partial, &mut self.buf, timestamp_ns, body)? {
                        return Ok(None);
                    }
                    true
                }
                Framing::UntilClose => {
                    let data = self.buf.split();
                    let not_kept =
                        append_body(partial, &data, timestamp_ns, self.max_body, &self.budget);
                    self.not_kept.add(not_kept);
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
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADER_FIELDS];
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
            body: KeptBody::default(),
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
    pub(super) fn resync(&mut self) -> Resync {
        self.current = None;
        let new_stretch = !self.resyncing;
        self.resyncing = true;
        let start = find_message_start(self.kind, self.buf.get(1..).unwrap_or_default())
            .map(|i| i.saturating_add(1))
            .unwrap_or(self.buf.len());
        self.buf.advance(start);
        Resync {
            new_stretch,
            skipped: start as u64,
        }
    }

    /// `len` bytes are missing from the stream here. Ok: the buffered bytes the gap made
    /// useless and dropped (a head cut in two, or what followed the last message).
    pub(super) fn gap(&mut self, len: u64) -> Result<u64, ParseError> {
        let Some(partial) = &mut self.current else {
            // Between messages or inside a head: whatever is buffered cannot be trusted.
            let dropped = self.buf.len() as u64;
            self.buf.clear();
            return Ok(dropped);
        };
        partial.bytes_lost = partial.bytes_lost.saturating_add(len);
        match partial.framing {
            Framing::Length(remaining) if self.buf.is_empty() && len <= remaining => {
                partial.body_len = partial.body_len.saturating_add(len);
                partial.framing = Framing::Length(remaining.saturating_sub(len));
                Ok(0)
            }
            Framing::UntilClose => {
                partial.body_len = partial.body_len.saturating_add(len);
                Ok(0)
            }
            _ => Err(ParseError::Gap),
        }
    }

    /// Whatever is buffered, for the protocol that takes over the connection.
    pub(super) fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// Nothing in progress and what is buffered is (the start of) the HTTP/2 preface.
    pub(super) fn holds_preface(&self) -> bool {
        let n = self.buf.len().min(HTTP2_PREFACE.len());
        self.current.is_none() && n > 0 && self.buf.get(..n) == HTTP2_PREFACE.get(..n)
    }

    /// No message in progress and nothing buffered.
    pub(super) fn is_between_messages(&self) -> bool {
        self.current.is_none() && self.buf.is_empty()
    }

    /// The message in progress ended early (its peer answered it): the bytes it still owed are
    /// counted as lost. Also returns the bytes buffered after it, dropped (a chunk-size line
    /// or trailers in progress: no message can start in them).
    pub(super) fn cut_short(&mut self) -> Option<(Message, u64)> {
        let mut partial = self.current.take()?;
        if let Framing::Length(remaining) = partial.framing {
            partial.bytes_lost = partial.bytes_lost.saturating_add(remaining);
            partial.body_len = partial.body_len.saturating_add(remaining);
        }
        let dropped = self.buf.len() as u64;
        self.buf.clear();
        Some((
            Message {
                partial,
                complete: false,
            },
            dropped,
        ))
    }

    /// The connection ended: a body delimited by close is complete, anything else is cut short.
    /// Bytes buffered of a head not yet whole (nothing when a message is in progress).
    pub(super) fn unfinished_head_bytes(&self) -> u64 {
        if self.current.is_none() {
            self.buf.len() as u64
        } else {
            0
        }
    }

    pub(super) fn close(&mut self) -> Option<Message> {
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

/// How much of a body may be kept, and where what is not kept is counted.
struct BodyBounds<'a> {
    max_body: usize,
    budget: &'a BodyBudget,
    not_kept: &'a mut NotKept,
}

fn append_body(
    partial: &mut Partial,
    data: &[u8],
    timestamp_ns: u64,
    max_body: usize,
    budget: &BodyBudget,
) -> NotKept {
    if data.is_empty() {
        return NotKept::default();
    }
    partial.first_body_ns.get_or_insert(timestamp_ns);
    partial.last_ns = timestamp_ns;
    let not_kept = partial.body.extend(data, max_body, budget);
    partial.body_len = partial.body_len.saturating_add(data.len() as u64);
    match partial.timeline.last_mut() {
        Some((reached, t)) if *t == timestamp_ns => *reached = partial.body_len,
        _ => partial.timeline.push((partial.body_len, timestamp_ns)),
    }
    not_kept
}

/// Advances chunked decoding; true when the message (including trailers) is complete.
fn step_chunked(
    partial: &mut Partial,
    buf: &mut BytesMut,
    timestamp_ns: u64,
    body: BodyBounds<'_>,
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
                let line = buf.get(..eol).unwrap_or_default();
                let size_text = line
                    .split(|b| *b == b';')
                    .next()
                    .map(|s| String::from_utf8_lossy(s).trim().to_string())
                    .unwrap_or_default();
                let size =
                    u64::from_str_radix(&size_text, 16).map_err(|_| ParseError::ChunkSize)?;
                buf.advance(eol.saturating_add(1));
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
                let not_kept =
                    append_body(partial, &data, timestamp_ns, body.max_body, body.budget);
                body.not_kept.add(not_kept);
                let left = remaining.saturating_sub(take as u64);
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
                let blank = buf
                    .get(..eol)
                    .is_some_and(|line| line.iter().all(|b| *b == b'\r'));
                buf.advance(eol.saturating_add(1));
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
        .map(|(i, _)| i.saturating_add(1))
        .find(|i| buf.get(*i..).is_some_and(starts))
}

/// The request, still charged to the body budget while it waits for its answer.
pub(super) fn into_request(msg: Message) -> Held<HttpRequest> {
    let p = msg.partial;
    let body_cut = p.body.cut();
    let (body, charge) = p.body.into_charged();
    let request = HttpRequest {
        method: p.method,
        target: p.target,
        headers: p.headers,
        body,
        body_len: p.body_len,
        start_ns: p.start_ns,
        end_ns: p.last_ns,
        bytes_lost: p.bytes_lost,
        body_cut,
        http2_incomplete_headers: false,
    };
    Held::new(request, charge)
}

/// The response, still charged to the body budget while it may wait for its request.
pub(super) fn into_response(msg: Message) -> Held<HttpResponse> {
    let p = msg.partial;
    let body_cut = p.body.cut();
    let (body, charge) = p.body.into_charged();
    let response = HttpResponse {
        status: p.status,
        headers: p.headers,
        body,
        body_len: p.body_len,
        start_ns: p.start_ns,
        first_body_ns: p.first_body_ns,
        end_ns: p.last_ns,
        body_timeline: p.timeline,
        complete: msg.complete,
        bytes_lost: p.bytes_lost,
        body_cut,
        http2_incomplete_headers: false,
    };
    Held::new(response, charge)
}

impl super::state_bytes::StateBytes for MessageParser {
    fn state_bytes(&self) -> u64 {
        use super::state_bytes::{head_bytes, timeline_bytes, total};
        let partial = self.current.as_ref().map_or(0, |p| {
            total([
                head_bytes(&p.method, &p.target, &p.headers),
                timeline_bytes(&p.timeline),
            ])
        });
        total([self.buf.len() as u64, partial])
    }
}
