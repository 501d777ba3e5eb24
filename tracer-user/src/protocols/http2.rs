//! HTTP/2 (RFC 9113) over a captured connection: the frames of both directions, reassembled per
//! stream into the same [`HttpExchange`]s HTTP/1.1 gives, so that what reads exchanges (genai,
//! spans) does not care which protocol carried them. Over TLS (ALPN `h2`, what curl and Go
//! choose by default), on plain sockets with prior knowledge (h2c), and after an HTTP/1.1
//! `Upgrade: h2c`. `HttpTracker` hands a connection here when its client sends the connection
//! preface, when its server switches protocols to h2c, or when the first bytes it sees of a
//! connection read as HTTP/2 frames (the tracer joined it after its preface).
//!
//! Header blocks are decoded with the `loona-hpack` crate. It is the maintained successor of
//! `fluke-hpack`, itself a fork of the unmaintained `hpack`: a decoder over whole header blocks
//! with no I/O and no unsafe code, that returns errors rather than panicking on malformed input
//! (its 0.4.3 fixed the last known panic) and can refuse dynamic-table size updates above a
//! bound, which keeps a peer from growing our memory. `h2`'s decoder is private to that crate
//! even with its `unstable` feature.
//!
//! HPACK state is per direction and must be seen from the start of the connection. When it was
//! not (the tracer joined late, or a header block was lost in a gap), header blocks are still
//! decoded, but only with what does not depend on the unknown dynamic-table entries: static
//! entries, literals, and entries added since the table was lost, whose positions are known
//! because every addition since was seen. The messages say so (`http2_incomplete_headers`,
//! `http2_joined_mid_connection`), and nothing is ever guessed.
//!
//! Where frames start is only known from the preface on. A connection joined later, or a
//! direction whose framing was lost to a gap, is picked up again at the start of a read whose
//! bytes, alone or with the reads after it, are exactly a chain of plausible whole frames
//! ([`FrameFinder`]): clients and servers write whole frames per call when they go idle, so the
//! next exchange on a joined connection starts at such a read.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Arc, OnceLock},
};

use base64::Engine as _;
use bytes::BytesMut;
use loona_hpack::{huffman::HuffmanDecoder, Decoder};
use thiserror::Error;
use tracing::debug;

use super::http1::{ExchangeEnd, Headers, HttpExchange, HttpRequest, HttpResponse};
use crate::{
    streams::{ConnKey, Direction, Peer},
    telemetry::health::Health,
};

/// What a client sends first on every HTTP/2 connection (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The dynamic table size every HPACK context starts with (RFC 9113 §6.5.2).
const DEFAULT_HEADER_TABLE_SIZE: usize = 4096;
/// Largest dynamic table kept per direction, whatever a peer advertises.
const MAX_HEADER_TABLE_SIZE: usize = 1 << 20;
/// Largest header block (HEADERS and its CONTINUATIONs) assembled; larger ones are not decoded.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// SETTINGS payload kept: 64 settings, more than RFC 9113 defines.
const MAX_SETTINGS_LEN: usize = 6 * 64;
/// Streams tracked at once on one connection (servers allow 100 to 250 concurrent streams).
const MAX_OPEN_STREAMS: usize = 1024;
/// Entries of the HPACK static table: higher indices refer to the dynamic table.
const HPACK_STATIC_ENTRIES: usize = 61;
/// Largest frame taken for one when looking for frames without the preface. Peers send frames
/// up to 16 KiB unless told they may send more, and Go's server allows 1 MiB; the bound also
/// makes every byte from 0x11 up, so any text and any TLS record, impossible as a first byte.
const MAX_FOUND_FRAME_LEN: u32 = 1 << 20;
/// Bytes held while looking for frames: one largest frame and some.
const MAX_FIND_HOLD: usize = MAX_FOUND_FRAME_LEN as usize + (64 << 10);
/// Error codes RFC 9113 §7 defines; a RST_STREAM or GOAWAY with another is taken for noise.
const MAX_ERROR_CODE: u32 = 0xd;

/// Why a direction's framing can no longer be followed. Each is a protocol error a real peer
/// would have torn the connection down for, or bytes the capture lost across a frame boundary:
/// either way, where the next frame starts is unknown.
#[derive(Debug, Error, PartialEq, Eq)]
enum FramingError {
    #[error("the client's first bytes are not the HTTP/2 connection preface")]
    Preface,
    #[error("the first frame is not SETTINGS")]
    FirstFrame,
    #[error("frame type {kind} with length {len} on stream {stream} is malformed")]
    Malformed { kind: u8, len: u32, stream: u32 },
    #[error("a header block is interrupted by frame type {0}")]
    UnfinishedHeaderBlock(u8),
    #[error("CONTINUATION without a header block to continue")]
    StrayContinuation,
    #[error("{0} bytes lost across a frame boundary")]
    Gap(u64),
}

#[derive(Clone, Copy, Debug)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved top bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The shape rules of RFC 9113 §6 that cost nothing to check: a frame breaking one means the
    /// stream is not where we think it is.
    fn well_formed(&self) -> bool {
        let on_stream = self.stream != 0;
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && !(self.has(FLAG_ACK) && self.len > 0)
            }
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            // Unknown types must be ignored (RFC 9113 §4.1).
            _ => true,
        }
    }

    /// How much of the payload to keep for [`Http2Connection::whole_frame`]; `None` for frames
    /// whose payload is skipped.
    fn kept_len(&self) -> Option<usize> {
        match self.kind {
            // A larger header block is not decoded: there is no need to hold it.
            HEADERS | CONTINUATION | PUSH_PROMISE => {
                Some((self.len as usize).min(MAX_HEADER_BLOCK))
            }
            SETTINGS => Some((self.len as usize).min(MAX_SETTINGS_LEN)),
            RST_STREAM => Some(4),
            // Only the last stream id and the error code; the debug data is not needed.
            GOAWAY => Some(8),
            _ => None,
        }
    }
}

/// How bytes read from their first one as HTTP/2 frames, for a connection joined after its
/// preface or a direction whose framing was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameChain {
    /// Plausible whole frames back to back, ending exactly where the bytes end.
    Whole,
    /// Plausible frames so far, the last one (or its header block) not complete yet.
    Partial,
    /// Not frames.
    No,
}

/// Whether `bytes` are HTTP/2 frames from their first byte: each frame header plausible (see
/// [`plausible_frame`]), CONTINUATION exactly where a header block needs one, header blocks
/// made of whole HPACK field representations, and the frames reaching the end. A read cut from
/// the middle of a frame, text (HTTP/1.1, which starts with a byte over 0x10, too long a
/// length) or TLS records do not pass. The bytes of real connections are full of zeros, so a
/// cut inside one can look like a frame header: a lone DATA frame, whose payload can be
/// anything, is not taken for proof, and waits for the next frame to be seen too.
pub fn frame_chain(direction: Direction, bytes: &[u8]) -> FrameChain {
    let mut at = 0;
    // The stream of a header block awaiting CONTINUATION, and the block so far.
    let mut open_block: Option<u32> = None;
    let mut block: Vec<u8> = Vec::new();
    let mut frames = 0usize;
    let mut only_data = true;
    loop {
        let rest = &bytes[at..];
        let Some(head) = rest.first_chunk::<FRAME_HEADER_LEN>() else {
            // What there is of the next header must fit one.
            let mut padded = [0; FRAME_HEADER_LEN];
            padded[..rest.len()].copy_from_slice(rest);
            let header = FrameHeader::parse(&padded);
            let plausible = match rest.len() {
                0 => true,
                1..=2 => rest[0] <= (MAX_FOUND_FRAME_LEN >> 16) as u8,
                3 => header.len <= MAX_FOUND_FRAME_LEN,
                _ => {
                    let kind_only = FrameHeader {
                        flags: if rest.len() == 4 { 0 } else { header.flags },
                        ..header
                    };
                    plausible_kind_and_flags(direction, kind_only)
                        && header.len <= MAX_FOUND_FRAME_LEN
                        && (rest.len() < 6 || rest[5] & 0x80 == 0)
                }
            };
            return match (rest.is_empty(), open_block) {
                _ if !plausible => FrameChain::No,
                (true, None) if frames > 1 || (frames == 1 && !only_data) => FrameChain::Whole,
                _ => FrameChain::Partial,
            };
        };
        let header = FrameHeader::parse(head);
        // The reserved bit is sent as zero (RFC 9113 §4.1).
        if head[5] & 0x80 != 0 || !plausible_frame(direction, header) {
            return FrameChain::No;
        }
        match (open_block, header.kind) {
            (Some(stream), CONTINUATION) if header.stream == stream => {}
            (Some(_), _) | (None, CONTINUATION) => return FrameChain::No,
            _ => {}
        }
        open_block = match header.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION if !header.has(FLAG_END_HEADERS) => {
                Some(header.stream)
            }
            _ => None,
        };
        let end = FRAME_HEADER_LEN + header.len as usize;
        let Some(payload) = rest.get(FRAME_HEADER_LEN..end) else {
            return FrameChain::Partial;
        };
        if !plausible_payload(header, payload) {
            return FrameChain::No;
        }
        if matches!(header.kind, HEADERS | PUSH_PROMISE | CONTINUATION) {
            let fragment = match header.kind {
                CONTINUATION => Some(payload),
                _ => header_fragment(header, payload),
            };
            let Some(fragment) = fragment else {
                return FrameChain::No;
            };
            if block.len() + fragment.len() <= MAX_HEADER_BLOCK {
                block.extend_from_slice(fragment);
            }
            if header.has(FLAG_END_HEADERS) {
                if !whole_representations(&block) {
                    return FrameChain::No;
                }
                block.clear();
            }
        }
        frames += 1;
        only_data &= header.kind == DATA;
        at += end;
    }
}

/// Whether a header block is a sequence of whole HPACK field representations.
fn whole_representations(block: &[u8]) -> bool {
    let mut rest = block;
    while !rest.is_empty() {
        match field_extent(rest).and_then(|rep| rest.get(rep.len..)) {
            Some(next) => rest = next,
            None => return false,
        }
    }
    true
}

/// A frame header as real peers send it: a known type, only the flags that type defines, the
/// shape RFC 9113 §6 requires, no larger than peers allow. Pushes come from servers only, and
/// the traced side is taken for the client (a server shows itself later, by its headers).
fn plausible_frame(direction: Direction, header: FrameHeader) -> bool {
    plausible_kind_and_flags(direction, header)
        && header.len <= MAX_FOUND_FRAME_LEN
        && header.well_formed()
}

fn plausible_kind_and_flags(direction: Direction, header: FrameHeader) -> bool {
    let flags = match header.kind {
        DATA => FLAG_END_STREAM | FLAG_PADDED,
        HEADERS => FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
        SETTINGS | PING => FLAG_ACK,
        PUSH_PROMISE if direction == Direction::Ingress => FLAG_END_HEADERS | FLAG_PADDED,
        CONTINUATION => FLAG_END_HEADERS,
        PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
        _ => return false,
    };
    header.flags & !flags == 0
}

/// What a whole frame's payload must hold for the frame to be real.
fn plausible_payload(header: FrameHeader, payload: &[u8]) -> bool {
    let u32_at = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match header.kind {
        DATA | HEADERS | PUSH_PROMISE if header.has(FLAG_PADDED) => {
            let fixed = match header.kind {
                HEADERS if header.has(FLAG_PRIORITY) => 5,
                PUSH_PROMISE => 4,
                _ => 0,
            };
            payload
                .first()
                .is_some_and(|pad| usize::from(*pad) + 1 + fixed <= payload.len())
        }
        HEADERS if header.has(FLAG_PRIORITY) => payload.len() >= 5,
        PUSH_PROMISE => payload.len() >= 4,
        // A stream cannot depend on itself.
        PRIORITY => u32_at(0).is_some_and(|d| d & 0x7fff_ffff != header.stream),
        RST_STREAM => u32_at(0).is_some_and(|code| code <= MAX_ERROR_CODE),
        GOAWAY => u32_at(4).is_some_and(|code| code <= MAX_ERROR_CODE),
        WINDOW_UPDATE => u32_at(0).is_some_and(|inc| inc != 0 && inc & 0x8000_0000 == 0),
        SETTINGS => payload.chunks_exact(6).all(|setting| {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                SETTINGS_ENABLE_PUSH => value <= 1,
                SETTINGS_INITIAL_WINDOW_SIZE => value <= 0x7fff_ffff,
                SETTINGS_MAX_FRAME_SIZE => (1 << 14..1 << 24).contains(&value),
                _ => true,
            }
        }),
        _ => true,
    }
}

/// Reads of one direction held until frames are found: from the start of one read, that read
/// and the ones after it make a [`FrameChain::Whole`]. A peer that goes idle has flushed whole
/// frames, so the first read or write of the next exchange starts a frame (the recorded Go and
/// curl connections do); one cut mid-frame (a large frame read in pieces) only delays finding
/// them to the next read that starts one.
#[derive(Debug, Default)]
pub struct FrameFinder {
    held: Vec<u8>,
}

impl FrameFinder {
    /// The next read. Returns the frames when found (the held reads and this one, or this one
    /// alone), and how many bytes were given up for not being frames.
    pub fn push(&mut self, direction: Direction, bytes: &[u8]) -> (Option<Vec<u8>>, u64) {
        let mut dropped = 0;
        if !self.held.is_empty() {
            self.held.extend_from_slice(bytes);
            match frame_chain(direction, &self.held) {
                FrameChain::Whole => return (Some(std::mem::take(&mut self.held)), 0),
                FrameChain::Partial if self.held.len() <= MAX_FIND_HOLD => return (None, 0),
                // The held reads did not start a frame after all; this read may.
                _ => dropped = self.clear() - bytes.len() as u64,
            }
        }
        match frame_chain(direction, bytes) {
            FrameChain::Whole => (Some(bytes.to_vec()), dropped),
            FrameChain::Partial if bytes.len() <= MAX_FIND_HOLD => {
                self.held.extend_from_slice(bytes);
                (None, dropped)
            }
            _ => (None, dropped + bytes.len() as u64),
        }
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// What is held, given up.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Gives up what is held; returns how many bytes that was.
    pub fn clear(&mut self) -> u64 {
        let len = self.held.len() as u64;
        self.held.clear();
        len
    }
}

/// Where a direction's parser is in its byte stream.
enum Framing {
    /// Before the end of the client's connection preface: how many of its bytes were seen.
    Preface(usize),
    /// Reading a frame header.
    Header,
    /// Inside a DATA frame's payload, which is passed on as it arrives.
    Data(DataFrame),
    /// Inside a frame whose payload is used once whole.
    Whole {
        header: FrameHeader,
        payload: Vec<u8>,
        left: u32,
    },
    /// Inside a frame whose payload is not needed.
    Skip(u32),
    /// Where frames start is unknown (the connection was joined after its preface, or bytes
    /// were lost across a frame boundary): reads are held until frames are found again.
    Resync(FrameFinder),
}

#[derive(Clone, Copy, Debug)]
struct DataFrame {
    stream: u32,
    /// A padded frame whose pad length byte has not arrived yet.
    pad_len_unread: bool,
    data_left: u32,
    pad_left: u32,
    end_stream: bool,
}

impl DataFrame {
    fn left(&self) -> u64 {
        u64::from(self.pad_len_unread) + u64::from(self.data_left) + u64::from(self.pad_left)
    }
}

/// A header block waiting for its CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    /// PUSH_PROMISE blocks are decoded only to keep the HPACK table in step.
    promise: bool,
    end_stream: bool,
    start_ns: u64,
    fragment: Vec<u8>,
    /// Part of it was lost or it grew too large: it cannot be decoded.
    damaged: bool,
}

/// One direction of the connection.
struct Reader {
    framing: Framing,
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    /// When the frame being read started to arrive.
    frame_start_ns: u64,
    /// The first frame must be SETTINGS (RFC 9113 §3.4): a cheap proof we are at a frame start.
    expect_settings: bool,
    block: Option<PendingBlock>,
    hpack: Hpack,
    /// Header blocks this direction carried so far.
    blocks: u64,
}

impl Reader {
    fn new(framing: Framing) -> Self {
        Reader {
            framing,
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            frame_start_ns: 0,
            expect_settings: true,
            block: None,
            hpack: Hpack::new(),
            blocks: 0,
        }
    }

    /// A direction of a connection joined after its preface: frames are yet to be found, and
    /// the HPACK table holds entries from before.
    fn joined() -> Self {
        let mut reader = Reader::new(Framing::Resync(FrameFinder::default()));
        reader.expect_settings = false;
        reader.hpack.lose();
        reader
    }

    fn is_resyncing(&self) -> bool {
        matches!(self.framing, Framing::Resync(_))
    }
}

/// A decoded message head.
#[derive(Clone, Debug, Default)]
struct Head {
    method: String,
    path: String,
    status: u16,
    headers: Headers,
}

/// One direction of one stream: the request or the response.
#[derive(Debug, Default)]
struct Half {
    head: Option<Head>,
    /// Some header fields could not be decoded.
    incomplete: bool,
    body: BytesMut,
    body_len: u64,
    bytes_lost: u64,
    start_ns: Option<u64>,
    first_body_ns: Option<u64>,
    last_ns: u64,
    timeline: Vec<(u64, u64)>,
    /// END_STREAM was seen.
    ended: bool,
    /// The direction's framing was lost before END_STREAM: nothing more will come.
    cut: bool,
}

impl Half {
    fn done(&self) -> bool {
        self.ended || self.cut
    }

    fn is_empty(&self) -> bool {
        self.head.is_none() && self.body_len == 0
    }

    fn touch(&mut self, start_ns: u64, now_ns: u64) {
        self.start_ns.get_or_insert(start_ns);
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// As HTTP/1's bodies: the first `max_body` bytes kept, all counted, and when each arrived.
    fn append_body(&mut self, data: &[u8], timestamp_ns: u64, max_body: usize) {
        if data.is_empty() {
            return;
        }
        self.first_body_ns.get_or_insert(timestamp_ns);
        let room = max_body.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..data.len().min(room)]);
        self.body_len += data.len() as u64;
        match self.timeline.last_mut() {
            Some((reached, t)) if *t == timestamp_ns => *reached = self.body_len,
            _ => self.timeline.push((self.body_len, timestamp_ns)),
        }
    }
}

#[derive(Debug, Default)]
struct Stream {
    request: Half,
    response: Half,
}

impl Stream {
    fn half(&mut self, direction: Direction) -> &mut Half {
        match direction {
            Direction::Egress => &mut self.request,
            Direction::Ingress => &mut self.response,
        }
    }
}

/// What one step of reading a direction's bytes produced.
enum Step<'a> {
    Nothing,
    Header(FrameHeader),
    Data(DataFrame, &'a [u8]),
    Whole(FrameHeader, Vec<u8>),
    Lost(FramingError),
}

/// One HTTP/2 connection seen from its client: requests are written (egress), responses read.
pub struct Http2Connection {
    conn: ConnKey,
    max_body: usize,
    health: Arc<Health>,
    /// Indexed by `Direction as usize`.
    readers: [Reader; 2],
    streams: BTreeMap<u32, Stream>,
    /// The client opens streams in increasing order: one at or below the highest it opened that
    /// is not open any more has ended, and late frames for it are ignored. Responses can reach
    /// us before their request (reads and writes on different threads), so a higher stream may
    /// be opened by its response.
    max_request_stream: u32,
    /// The tracer joined the connection after its preface: every exchange says so.
    joined: bool,
    /// Joined connections: the first stream seen opened by a request. Streams below it (all
    /// streams, until it is known) may have been open before the tracer joined: their frames
    /// open them whatever `max_request_stream` says.
    first_new_stream: Option<u32>,
    /// Joined connections: streams from before the join already emitted, so that late frames
    /// do not open them again.
    finished_old: BTreeSet<u32>,
    /// Joined connections: the traced process turned out to be the server (its header blocks
    /// are responses, or its peer's requests). Servers are not traced as calls.
    server_side: bool,
}

impl Http2Connection {
    /// A connection whose client preface is about to be pushed (egress) from its first byte.
    pub fn new(conn: ConnKey, max_body: usize, health: Arc<Health>) -> Self {
        Http2Connection {
            conn,
            max_body,
            health,
            readers: [
                Reader::new(Framing::Preface(0)),
                Reader::new(Framing::Header),
            ],
            streams: BTreeMap::new(),
            max_request_stream: 0,
            joined: false,
            first_new_stream: None,
            finished_old: BTreeSet::new(),
            server_side: false,
        }
    }

    /// A connection the tracer joined after its preface, found by [`frame_chain`]: each
    /// direction's frames are looked for from the next read pushed, and its header blocks
    /// decoded without the dynamic-table entries from before.
    pub fn joined(conn: ConnKey, max_body: usize, health: Arc<Health>) -> Self {
        let mut h2 = Http2Connection::new(conn, max_body, health);
        h2.readers = [Reader::joined(), Reader::joined()];
        h2.joined = true;
        h2
    }

    /// A plain HTTP/1.1 connection whose server answered `request` (asking `Upgrade: h2c`) with
    /// `101 Switching Protocols` (RFC 7540 §3.2): the request is stream 1, its response comes
    /// in HTTP/2 frames after the server's SETTINGS, and the client sends its preface next.
    /// `http2_settings` is the request's `HTTP2-Settings` header, the client's SETTINGS payload.
    pub fn upgraded(
        conn: ConnKey,
        max_body: usize,
        health: Arc<Health>,
        request: HttpRequest,
        http2_settings: Option<&str>,
    ) -> Self {
        let mut h2 = Http2Connection::new(conn, max_body, health);
        if let Some(payload) = http2_settings.and_then(|s| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim().trim_end_matches('='))
                .ok()
        }) {
            h2.apply_settings(Direction::Egress, &payload);
        }
        let mut half = Half {
            head: Some(Head {
                method: request.method,
                path: request.target,
                status: 0,
                headers: request.headers,
            }),
            body_len: request.body_len,
            bytes_lost: request.bytes_lost,
            start_ns: Some(request.start_ns),
            last_ns: request.end_ns,
            ended: true,
            ..Half::default()
        };
        half.body.extend_from_slice(&request.body);
        h2.streams.insert(
            1,
            Stream {
                request: half,
                response: Half::default(),
            },
        );
        h2.max_request_stream = 1;
        h2
    }

    /// Whether `bytes`, the client's, start with the preface while nothing of the client was
    /// read yet and the server sent no header block: a connection taken for joined because its
    /// server's first frames arrived first.
    fn preface_after_all(&self, bytes: &[u8]) -> bool {
        let client = &self.readers[Direction::Egress as usize];
        let n = bytes.len().min(PREFACE.len());
        n > 0
            && bytes[..n] == PREFACE[..n]
            && matches!(&client.framing, Framing::Resync(f) if f.is_empty())
            && client.blocks == 0
            && self.readers[Direction::Ingress as usize].blocks == 0
            && self.streams.is_empty()
    }

    /// The next bytes of one direction.
    pub fn push(
        &mut self,
        direction: Direction,
        timestamp_ns: u64,
        bytes: &[u8],
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        if self.server_side {
            Health::add(&self.health.unparsed_bytes, bytes.len() as u64);
            return;
        }
        if self.joined && direction == Direction::Egress && self.preface_after_all(bytes) {
            // The server's first frames were seen before the client's preface (reads and
            // writes reach us in either order): the connection was not joined late after all.
            debug!("HTTP/2 on {:?}: the preface came after all", self.conn);
            self.joined = false;
            let allowed = self.readers[Direction::Egress as usize]
                .hpack
                .allowed_table_size;
            let mut client = Reader::new(Framing::Preface(0));
            client.hpack.allow_table_size(allowed);
            self.readers[Direction::Egress as usize] = client;
            let server = &mut self.readers[Direction::Ingress as usize].hpack;
            let allowed = server.allowed_table_size;
            *server = Hpack::new();
            server.allow_table_size(allowed);
        }
        let found;
        let mut bytes = bytes;
        let reader = &mut self.readers[direction as usize];
        if let Framing::Resync(finder) = &mut reader.framing {
            let (frames, dropped) = finder.push(direction, bytes);
            if dropped > 0 {
                // What those bytes added to the HPACK table is unknown.
                Health::add(&self.health.unparsed_bytes, dropped);
                reader.hpack.lose();
            }
            let Some(frames) = frames else {
                return;
            };
            debug!("HTTP/2 on {:?}, {direction:?}: frames found", self.conn);
            reader.framing = Framing::Header;
            reader.head_len = 0;
            found = frames;
            bytes = &found;
        }
        while !bytes.is_empty() {
            if self.server_side || self.readers[direction as usize].is_resyncing() {
                // Lost within this read: the next frame can only be looked for at a read's
                // start.
                Health::add(&self.health.unparsed_bytes, bytes.len() as u64);
                return;
            }
            let step = self.read(direction, timestamp_ns, &mut bytes);
            match step {
                Step::Nothing => {}
                Step::Header(header) => self.start_frame(direction, header, peer, out),
                Step::Data(frame, data) => {
                    self.data(direction, frame, data, timestamp_ns, peer, out)
                }
                Step::Whole(header, payload) => {
                    self.whole_frame(direction, header, &payload, timestamp_ns, peer, out)
                }
                Step::Lost(why) => self.lose(direction, why, peer, out),
            }
        }
    }

    /// `len` bytes of one direction were lost here.
    pub fn gap(
        &mut self,
        direction: Direction,
        len: u64,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        if len == 0 {
            return;
        }
        let reader = &mut self.readers[direction as usize];
        match &mut reader.framing {
            Framing::Resync(finder) => {
                // Held reads cannot be continued across the hole.
                Health::add(&self.health.unparsed_bytes, finder.clear());
                reader.hpack.lose();
            }
            Framing::Data(frame) if len <= frame.left() => {
                // Inside one DATA frame: the body lost bytes, the framing holds. A lost pad
                // length byte is taken as no padding: the loss may be over-counted, never hidden.
                let mut lost = len;
                if frame.pad_len_unread {
                    frame.pad_len_unread = false;
                    lost -= 1;
                }
                let data_lost = lost.min(u64::from(frame.data_left));
                frame.data_left -= data_lost as u32;
                frame.pad_left -= (lost - data_lost) as u32;
                let frame = *frame;
                let frame_done = frame.left() == 0;
                if frame_done {
                    reader.framing = Framing::Header;
                }
                if let Some(stream) = self.stream(frame.stream, direction) {
                    let half = stream.half(direction);
                    half.bytes_lost += len;
                    half.body_len += data_lost;
                }
                if frame_done {
                    self.end_data_frame(direction, frame, peer, out);
                }
            }
            Framing::Whole { header, left, .. } if len <= u64::from(*left) => {
                // The frame is unusable but the next one starts where expected.
                let header = *header;
                reader.framing = Framing::Skip(*left - len as u32);
                self.damaged_frame(direction, header, len, peer, out);
            }
            Framing::Skip(left) if len <= u64::from(*left) => *left -= len as u32,
            framing => {
                // The loss belongs to the frame's stream when there is one, else to whichever
                // message in this direction it may have cut: counted, never hidden.
                let current = match framing {
                    Framing::Data(frame) => Some(frame.stream),
                    Framing::Whole { header, .. } if header.stream != 0 => Some(header.stream),
                    _ => None,
                };
                for (id, stream) in self.streams.iter_mut() {
                    let half = stream.half(direction);
                    if current.map_or(!half.ended, |c| c == *id) {
                        half.bytes_lost += len;
                    }
                }
                self.lose(direction, FramingError::Gap(len), peer, out)
            }
        }
    }

    /// Ends every open stream: what was decoded is emitted, marked `Interrupted(reason)` unless
    /// its response ended. The HPACK state is kept, so the connection can go on being fed (after
    /// an idle sweep) or be dropped (it closed).
    pub fn close(&mut self, reason: &'static str, peer: &Peer, out: &mut Vec<HttpExchange>) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.finish(id, reason, peer, out);
        }
    }

    /// Consumes bytes from the front of `bytes` for one step of the direction's framing.
    fn read<'a>(
        &mut self,
        direction: Direction,
        timestamp_ns: u64,
        bytes: &mut &'a [u8],
    ) -> Step<'a> {
        let reader = &mut self.readers[direction as usize];
        match &mut reader.framing {
            Framing::Resync(_) => {
                *bytes = &[];
                Step::Nothing
            }
            Framing::Preface(seen) => {
                let expected = &PREFACE[*seen..];
                let n = expected.len().min(bytes.len());
                if bytes[..n] != expected[..n] {
                    return Step::Lost(FramingError::Preface);
                }
                *seen += n;
                *bytes = &bytes[n..];
                if *seen == PREFACE.len() {
                    reader.framing = Framing::Header;
                }
                Step::Nothing
            }
            Framing::Header => {
                if reader.head_len == 0 {
                    reader.frame_start_ns = timestamp_ns;
                }
                let n = (FRAME_HEADER_LEN - reader.head_len).min(bytes.len());
                reader.head[reader.head_len..reader.head_len + n].copy_from_slice(&bytes[..n]);
                reader.head_len += n;
                *bytes = &bytes[n..];
                if reader.head_len < FRAME_HEADER_LEN {
                    return Step::Nothing;
                }
                reader.head_len = 0;
                Step::Header(FrameHeader::parse(&reader.head))
            }
            Framing::Data(frame) => {
                let mut data: &[u8] = &[];
                if frame.pad_len_unread {
                    let pad = u32::from(bytes[0]);
                    *bytes = &bytes[1..];
                    frame.pad_len_unread = false;
                    if pad > frame.data_left {
                        return Step::Lost(FramingError::Malformed {
                            kind: DATA,
                            len: frame.data_left + 1,
                            stream: frame.stream,
                        });
                    }
                    frame.data_left -= pad;
                    frame.pad_left = pad;
                } else if frame.data_left > 0 {
                    let n = (frame.data_left as usize).min(bytes.len());
                    data = &bytes[..n];
                    *bytes = &bytes[n..];
                    frame.data_left -= n as u32;
                } else {
                    let n = (frame.pad_left as usize).min(bytes.len());
                    *bytes = &bytes[n..];
                    frame.pad_left -= n as u32;
                }
                let frame = *frame;
                if frame.left() == 0 {
                    reader.framing = Framing::Header;
                }
                Step::Data(frame, data)
            }
            Framing::Whole {
                header,
                payload,
                left,
            } => {
                let n = (*left as usize).min(bytes.len());
                let keep = header
                    .kept_len()
                    .unwrap_or(0)
                    .saturating_sub(payload.len())
                    .min(n);
                payload.extend_from_slice(&bytes[..keep]);
                *bytes = &bytes[n..];
                *left -= n as u32;
                if *left > 0 {
                    return Step::Nothing;
                }
                let (header, payload) = (*header, std::mem::take(payload));
                reader.framing = Framing::Header;
                Step::Whole(header, payload)
            }
            Framing::Skip(left) => {
                let n = (*left as usize).min(bytes.len());
                *bytes = &bytes[n..];
                *left -= n as u32;
                if *left == 0 {
                    reader.framing = Framing::Header;
                }
                Step::Nothing
            }
        }
    }

    /// A frame header arrived: checks it and sets up reading its payload.
    fn start_frame(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        let reader = &mut self.readers[direction as usize];
        if reader.expect_settings {
            reader.expect_settings = false;
            if header.kind != SETTINGS || header.has(FLAG_ACK) {
                return self.lose(direction, FramingError::FirstFrame, peer, out);
            }
        }
        if !header.well_formed() {
            let why = FramingError::Malformed {
                kind: header.kind,
                len: header.len,
                stream: header.stream,
            };
            return self.lose(direction, why, peer, out);
        }
        // CONTINUATION frames follow their header block's first frame directly, and only them.
        match (reader.block.is_some(), header.kind == CONTINUATION) {
            (true, false) => {
                let why = FramingError::UnfinishedHeaderBlock(header.kind);
                return self.lose(direction, why, peer, out);
            }
            (false, true) => {
                return self.lose(direction, FramingError::StrayContinuation, peer, out)
            }
            _ => {}
        }
        reader.framing = match header.kind {
            DATA => {
                let padded = header.has(FLAG_PADDED) && header.len > 0;
                Framing::Data(DataFrame {
                    stream: header.stream,
                    pad_len_unread: padded,
                    data_left: header.len - u32::from(padded),
                    pad_left: 0,
                    end_stream: header.has(FLAG_END_STREAM),
                })
            }
            _ if header.kept_len().is_some() => Framing::Whole {
                header,
                payload: Vec::new(),
                left: header.len,
            },
            _ => Framing::Skip(header.len),
        };
        // A frame with nothing to read is complete now.
        if header.len == 0 {
            let frame = match reader.framing {
                Framing::Data(frame) => Some(frame),
                _ => None,
            };
            reader.framing = Framing::Header;
            let start_ns = reader.frame_start_ns;
            match frame {
                Some(frame) => self.data(direction, frame, &[], start_ns, peer, out),
                None if header.kept_len().is_some() => {
                    self.whole_frame(direction, header, &[], start_ns, peer, out)
                }
                None => {}
            }
        }
    }

    /// Body bytes of a DATA frame (`frame` as it is after them).
    fn data(
        &mut self,
        direction: Direction,
        frame: DataFrame,
        data: &[u8],
        timestamp_ns: u64,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        let start_ns = self.readers[direction as usize].frame_start_ns;
        let max_body = self.max_body;
        if let Some(stream) = self.stream(frame.stream, direction) {
            let half = stream.half(direction);
            half.touch(start_ns, timestamp_ns);
            half.append_body(data, timestamp_ns, max_body);
        }
        if frame.left() == 0 {
            self.end_data_frame(direction, frame, peer, out);
        }
    }

    fn end_data_frame(
        &mut self,
        direction: Direction,
        frame: DataFrame,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        if !frame.end_stream {
            return;
        }
        if let Some(stream) = self.streams.get_mut(&frame.stream) {
            stream.half(direction).ended = true;
            self.finish_if_done(frame.stream, peer, out);
        }
    }

    /// A frame whose payload was kept arrived whole.
    fn whole_frame(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        payload: &[u8],
        timestamp_ns: u64,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        let malformed = FramingError::Malformed {
            kind: header.kind,
            len: header.len,
            stream: header.stream,
        };
        let start_ns = self.readers[direction as usize].frame_start_ns;
        match header.kind {
            HEADERS | PUSH_PROMISE => {
                let too_large = header.len as usize > MAX_HEADER_BLOCK;
                let fragment = match header_fragment(header, payload) {
                    _ if too_large => Vec::new(),
                    Some(fragment) => fragment.to_vec(),
                    None => return self.lose(direction, malformed, peer, out),
                };
                let block = PendingBlock {
                    stream: header.stream,
                    promise: header.kind == PUSH_PROMISE,
                    end_stream: header.kind == HEADERS && header.has(FLAG_END_STREAM),
                    start_ns,
                    fragment,
                    damaged: too_large,
                };
                self.header_fragment_done(direction, block, header, timestamp_ns, peer, out);
            }
            CONTINUATION => {
                let reader = &mut self.readers[direction as usize];
                let Some(mut block) = reader.block.take() else {
                    return self.lose(direction, FramingError::StrayContinuation, peer, out);
                };
                if block.stream != header.stream {
                    return self.lose(direction, malformed, peer, out);
                }
                if block.fragment.len() + header.len as usize > MAX_HEADER_BLOCK {
                    block.damaged = true;
                    block.fragment = Vec::new();
                } else if !block.damaged {
                    block.fragment.extend_from_slice(payload);
                }
                self.header_fragment_done(direction, block, header, timestamp_ns, peer, out);
            }
            SETTINGS if !header.has(FLAG_ACK) => self.apply_settings(direction, payload),
            RST_STREAM => self.finish(header.stream, "stream_reset", peer, out),
            GOAWAY if direction == Direction::Ingress => {
                // The server will not process streams above the last one it names: they never
                // get an answer.
                let last = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                    .unwrap_or(0);
                let unanswered: Vec<u32> =
                    self.streams.range(last + 1..).map(|(id, _)| *id).collect();
                for id in unanswered {
                    self.finish(id, "goaway", peer, out);
                }
            }
            _ => {}
        }
    }

    /// A SETTINGS payload `direction` sent. Each side's SETTINGS_HEADER_TABLE_SIZE bounds what
    /// the other side's encoder may use: it applies to the opposite direction's header blocks.
    fn apply_settings(&mut self, direction: Direction, payload: &[u8]) {
        let other = &mut self.readers[direction.opposite() as usize].hpack;
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            if id == SETTINGS_HEADER_TABLE_SIZE {
                other.allow_table_size(value as usize);
            }
        }
    }

    /// A HEADERS, PUSH_PROMISE or CONTINUATION frame added to a header block: decodes it when it
    /// is complete, else keeps it for the next CONTINUATION.
    fn header_fragment_done(
        &mut self,
        direction: Direction,
        block: PendingBlock,
        header: FrameHeader,
        timestamp_ns: u64,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        let reader = &mut self.readers[direction as usize];
        if !header.has(FLAG_END_HEADERS) {
            reader.block = Some(block);
            return;
        }
        reader.blocks += 1;
        let decoded = if block.damaged {
            // Whatever it added to the dynamic table is unknown from here on.
            reader.hpack.lose();
            None
        } else {
            Some(reader.hpack.decode(&block.fragment))
        };
        if self.joined && self.is_server_side(direction, &block, decoded.as_ref()) {
            debug!(
                "HTTP/2 on {:?}: the traced process is the server",
                self.conn
            );
            self.server_side = true;
            self.streams.clear();
            return;
        }
        if block.promise {
            return;
        }
        let id = block.stream;
        let opens = direction == Direction::Egress
            && !self.streams.contains_key(&id)
            && !self.finished_old.contains(&id);
        if opens && self.joined && self.first_new_stream.is_none() && id % 2 == 1 {
            self.first_new_stream = Some(id);
        }
        let Some(stream) = self.stream(id, direction) else {
            return;
        };
        let half = stream.half(direction);
        half.touch(block.start_ns, timestamp_ns);
        match decoded {
            Some((fields, incomplete)) => {
                // Heads carry pseudo-header fields, trailers never do. A block of a joined
                // stream whose head was before the join may be its trailers: one without any
                // decoded pseudo-header is only taken for a head whose pseudo-headers could not
                // be decoded when it does not end the stream (trailers always do).
                let pseudo = fields.iter().any(|(name, _)| name.starts_with(':'));
                let trailers = !pseudo && (!incomplete || block.end_stream);
                let head = head_of(fields);
                let interim = direction == Direction::Ingress && (100..200).contains(&head.status);
                // The first block is the head; a later one holds trailers, which are not kept.
                // Interim responses (100 Continue, 103 Early Hints) precede the real one.
                if half.head.is_none() && half.body_len == 0 && !interim && !trailers {
                    half.incomplete |= incomplete;
                    half.head = Some(head);
                    half.start_ns = Some(block.start_ns);
                }
            }
            None => half.incomplete = true,
        }
        if block.end_stream {
            half.ended = true;
        }
        if direction == Direction::Egress {
            // Request heads of streams below this one will not be seen any more.
            self.settle_unseen_requests(peer, out);
        }
        self.finish_if_done(id, peer, out);
    }

    /// Whether a header block shows the traced process answering requests: it sends responses
    /// or promises, or receives requests. Only asked of joined connections, whose client is
    /// not known from a preface.
    fn is_server_side(
        &self,
        direction: Direction,
        block: &PendingBlock,
        decoded: Option<&(Vec<(String, String)>, bool)>,
    ) -> bool {
        if block.promise {
            return direction == Direction::Egress;
        }
        let Some((fields, _)) = decoded else {
            return false;
        };
        fields.iter().any(|(name, _)| match direction {
            Direction::Egress => name == ":status",
            Direction::Ingress => matches!(name.as_str(), ":method" | ":path" | ":scheme"),
        })
    }

    /// A gap fell inside a frame whose payload was needed whole.
    fn damaged_frame(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        len: u64,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        match header.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                let reader = &mut self.readers[direction as usize];
                let start_ns = reader.frame_start_ns;
                let mut block = reader.block.take().unwrap_or(PendingBlock {
                    stream: header.stream,
                    promise: header.kind == PUSH_PROMISE,
                    end_stream: header.kind == HEADERS && header.has(FLAG_END_STREAM),
                    start_ns,
                    fragment: Vec::new(),
                    damaged: true,
                });
                block.damaged = true;
                block.fragment = Vec::new();
                if !block.promise {
                    if let Some(stream) = self.stream(block.stream, direction) {
                        stream.half(direction).bytes_lost += len;
                    }
                }
                self.header_fragment_done(direction, block, header, start_ns, peer, out);
            }
            // The table size the other side may use is unknown: allow the most we keep.
            SETTINGS => self.readers[direction.opposite() as usize]
                .hpack
                .allow_table_size(MAX_HEADER_TABLE_SIZE),
            // A lost RST_STREAM or GOAWAY: the streams end at close instead.
            _ => {}
        }
    }

    /// The direction's framing is lost: its messages in progress will get no more bytes.
    fn lose(
        &mut self,
        direction: Direction,
        why: FramingError,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        debug!("HTTP/2 on {:?}, {direction:?}: {why}", self.conn);
        Health::add(&self.health.http_parse_errors, 1);
        let reader = &mut self.readers[direction as usize];
        reader.framing = Framing::Resync(FrameFinder::default());
        reader.head_len = 0;
        reader.block = None;
        // Header blocks may be among what is skipped until frames are found again.
        reader.hpack.lose();
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.half(direction).cut = true;
            }
            self.finish_if_done(id, peer, out);
        }
    }

    /// The stream a frame of `direction` belongs to, opened on first sight; `None` for the
    /// connection (0), server-initiated (pushed, even) streams and streams that already ended.
    /// On a joined connection, a stream from before the join is opened by whichever of its
    /// frames comes first (its request may have been sent before): a partial exchange.
    fn stream(&mut self, id: u32, direction: Direction) -> Option<&mut Stream> {
        if id.is_multiple_of(2) {
            return None;
        }
        if direction == Direction::Egress {
            self.max_request_stream = self.max_request_stream.max(id);
        }
        if !self.streams.contains_key(&id) {
            let ended = if self.is_old(id) {
                self.finished_old.contains(&id)
            } else {
                id < self.max_request_stream
                    || (id == self.max_request_stream && direction == Direction::Ingress)
            };
            if ended || self.streams.len() >= MAX_OPEN_STREAMS {
                return None;
            }
            self.streams.insert(id, Stream::default());
        }
        self.streams.get_mut(&id)
    }

    /// Whether a stream may have been opened before the tracer joined the connection.
    fn is_old(&self, id: u32) -> bool {
        self.joined && self.first_new_stream.is_none_or(|first| id < first)
    }

    fn finish_if_done(&mut self, id: u32, peer: &Peer, out: &mut Vec<HttpExchange>) {
        let settled = self.max_request_stream;
        let done = self.streams.get_mut(&id).is_some_and(|s| {
            // A response ended whose request head was never seen, while the client has since
            // opened a later stream: that head was written before the later one's, so it was
            // lost or sent before the tracer joined. Nothing more of it will be seen.
            if s.response.ended && s.request.head.is_none() && id < settled {
                s.request.cut = true;
            }
            s.request.done() && s.response.done()
        });
        if done {
            // Both sides are done without the response's END_STREAM: its end was not captured.
            self.finish(id, "capture_gap", peer, out);
        }
    }

    /// The client opened a new stream: responses that ended while waiting for a request head
    /// that will not come are emitted.
    fn settle_unseen_requests(&mut self, peer: &Peer, out: &mut Vec<HttpExchange>) {
        let settled = self.max_request_stream;
        let waiting: Vec<u32> = self
            .streams
            .range(..settled)
            .filter(|(_, s)| s.response.ended && s.request.head.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.finish_if_done(id, peer, out);
        }
    }

    /// Emits the stream's exchange: complete if its response ended, else interrupted.
    fn finish(&mut self, id: u32, reason: &'static str, peer: &Peer, out: &mut Vec<HttpExchange>) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        if self.is_old(id) {
            if self.finished_old.len() >= MAX_OPEN_STREAMS {
                self.finished_old.pop_first();
            }
            self.finished_old.insert(id);
        }
        if stream.request.is_empty() && stream.response.is_empty() {
            return;
        }
        let end = if stream.response.ended {
            Health::add(&self.health.http_exchanges, 1);
            ExchangeEnd::Complete
        } else {
            Health::add(&self.health.http_interrupted, 1);
            ExchangeEnd::Interrupted(reason)
        };
        let Stream { request, response } = stream;
        let request_start = request.start_ns.or(response.start_ns).unwrap_or(0);
        let response = (!response.is_empty()).then(|| {
            let incomplete = response.incomplete || response.head.is_none();
            let head = response.head.unwrap_or_default();
            let start_ns = response.start_ns.unwrap_or(request_start);
            HttpResponse {
                status: head.status,
                headers: head.headers,
                body: response.body.freeze(),
                body_len: response.body_len,
                start_ns,
                first_body_ns: response.first_body_ns,
                end_ns: response.last_ns.max(start_ns),
                body_timeline: response.timeline,
                complete: response.ended,
                bytes_lost: response.bytes_lost,
                http2_incomplete_headers: incomplete,
            }
        });
        let incomplete = request.incomplete || request.head.is_none();
        let head = request.head.unwrap_or_default();
        out.push(HttpExchange {
            conn: self.conn,
            peer: peer.clone(),
            request: HttpRequest {
                method: head.method,
                target: head.path,
                headers: head.headers,
                body: request.body.freeze(),
                body_len: request.body_len,
                start_ns: request_start,
                end_ns: request.last_ns.max(request_start),
                bytes_lost: request.bytes_lost,
                http2_incomplete_headers: incomplete,
            },
            response,
            end,
            http2_joined_mid_connection: self.joined,
        });
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload, without padding, priority
/// or promised stream id; `None` when the lengths do not add up.
fn header_fragment(header: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    let (pad, mut rest) = if header.has(FLAG_PADDED) {
        let (pad, rest) = payload.split_first()?;
        (usize::from(*pad), rest)
    } else {
        (0, payload)
    };
    let skip = match header.kind {
        HEADERS if header.has(FLAG_PRIORITY) => 5,
        PUSH_PROMISE => 4,
        _ => 0,
    };
    rest = rest.get(skip..)?;
    rest.get(..rest.len().checked_sub(pad)?)
}

/// Pseudo-header fields become the head's method, path and status; `:authority` becomes the
/// `host` header HTTP/1.1 would have carried, so the server address is found the same way. A
/// method that is not an HTTP token (RFC 9110 §9.1: visible ASCII, no separators) is malformed
/// and left out, as HTTP/1.1's parser would refuse it, rather than exported as garbage.
fn head_of(fields: Vec<(String, String)>) -> Head {
    let mut head = Head::default();
    let mut authority = None;
    for (name, value) in fields {
        match name.as_str() {
            ":method" if is_token(&value) => head.method = value,
            ":method" => {}
            ":path" => head.path = value,
            ":status" => head.status = value.parse().unwrap_or(0),
            ":authority" => authority = Some(value),
            _ if name.starts_with(':') => {}
            _ => head.headers.push((name, value)),
        }
    }
    if let Some(authority) = authority {
        if !head.headers.iter().any(|(k, _)| k == "host") {
            head.headers.insert(0, ("host".to_string(), authority));
        }
    }
    head
}

/// RFC 9110 §5.6.2 `token`: one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The HPACK decoding context of one direction.
struct Hpack {
    decoder: Decoder<'static>,
    /// False once a header block was lost or failed to decode, or when the connection was
    /// joined late: the dynamic table may differ from the encoder's, so `decoder`'s entries are
    /// never used, and `known` takes its place.
    synced: bool,
    /// While not synced: the entries added since the table was lost.
    known: KnownEntries,
    allowed_table_size: usize,
}

impl Hpack {
    fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(DEFAULT_HEADER_TABLE_SIZE);
        Hpack {
            decoder,
            synced: true,
            known: KnownEntries::default(),
            allowed_table_size: DEFAULT_HEADER_TABLE_SIZE,
        }
    }

    /// The decoding side advertised SETTINGS_HEADER_TABLE_SIZE. The table itself only changes
    /// size through the encoder's size updates (RFC 7541 §4.2); the setting bounds them. Never
    /// below the default: a reduction takes effect only once acknowledged, and the SETTINGS frame
    /// and the header blocks travel in opposite directions, so we cannot tell which came first.
    fn allow_table_size(&mut self, advertised: usize) {
        self.allowed_table_size =
            advertised.clamp(DEFAULT_HEADER_TABLE_SIZE, MAX_HEADER_TABLE_SIZE);
        self.decoder
            .set_max_allowed_table_size(self.allowed_table_size);
    }

    /// Some header block was not seen: from here on only what is added next is known.
    fn lose(&mut self) {
        self.synced = false;
        self.known = KnownEntries::default();
    }

    /// Decodes a whole header block: its fields (names in lower case), and whether some could
    /// not be decoded.
    fn decode(&mut self, block: &[u8]) -> (Vec<(String, String)>, bool) {
        if !self.synced && starts_with_table_reset(block) {
            // A size update to zero empties the table: it is known again from here.
            self.decoder = Decoder::new();
            self.decoder
                .set_max_allowed_table_size(self.allowed_table_size);
            self.synced = true;
        }
        if self.synced {
            let mut fields = Vec::new();
            match self
                .decoder
                .decode_with_cb(block, |name, value| fields.push(field(&name, &value)))
            {
                Ok(()) => return (fields, false),
                Err(e) => {
                    debug!("HPACK decoding failed, dynamic table lost: {e}");
                    // Entries this block added before the error are added again below, in
                    // their places.
                    self.lose();
                }
            }
        }
        decode_partially(block, &mut self.known)
    }
}

fn field(name: &[u8], value: &[u8]) -> (String, String) {
    (
        String::from_utf8_lossy(name).to_ascii_lowercase(),
        String::from_utf8_lossy(value).into_owned(),
    )
}

/// The dynamic-table entries an encoder added since its decoder's table was lost, newest first.
/// They sit at the same indices in the encoder's table: index 62 is always the newest entry
/// (RFC 7541 §2.3.3), and evictions only ever remove the oldest ones, so as long as every
/// addition since is seen, index 62 + i is the i-th entry here, or one the encoder has evicted
/// and will not refer to. Entries older than these are unknown. An entry whose name was itself
/// an unknown reference is held as `None`, to keep the positions of the others.
#[derive(Default)]
struct KnownEntries {
    entries: VecDeque<Option<(String, String)>>,
    /// Sizes as RFC 7541 §4.1 counts them, unknown names counting as empty: a lower bound of
    /// the encoder's, so this never keeps fewer entries than the encoder's table holds.
    size: usize,
}

impl KnownEntries {
    fn add(&mut self, name: Option<String>, value: String) {
        self.size += 32 + name.as_ref().map_or(0, String::len) + value.len();
        self.entries.push_front(name.map(|name| (name, value)));
        while self.size > MAX_HEADER_TABLE_SIZE {
            let Some(oldest) = self.entries.pop_back() else {
                break;
            };
            self.size -= 32 + oldest.map_or(0, |(n, v)| n.len() + v.len());
        }
    }

    /// The field at a table index, if it is known.
    fn get(&self, index: usize) -> Option<(String, String)> {
        match index {
            0 => None,
            1..=HPACK_STATIC_ENTRIES => static_table().get(index - 1).cloned(),
            _ => self
                .entries
                .get(index - HPACK_STATIC_ENTRIES - 1)
                .cloned()
                .flatten(),
        }
    }
}

/// The HPACK static table (RFC 7541 Appendix A), taken from the decoder that holds it.
fn static_table() -> &'static [(String, String)] {
    static TABLE: OnceLock<Vec<(String, String)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (1..=HPACK_STATIC_ENTRIES as u8)
            .map(|index| {
                let mut entry = None;
                // A one-byte indexed field representation of each static index.
                let _ = Decoder::new().decode_with_cb(&[0x80 | index], |name, value| {
                    entry = Some(field(&name, &value));
                });
                entry.unwrap_or_default()
            })
            .collect()
    })
}

/// Decodes a header block against a table of which only `known` is known: static entries,
/// literals, and references to `known`, which it keeps up to date. The rest is skipped, never
/// guessed; the second value says whether anything was.
fn decode_partially(block: &[u8], known: &mut KnownEntries) -> (Vec<(String, String)>, bool) {
    let mut fields = Vec::new();
    let mut incomplete = false;
    let mut rest = block;
    while !rest.is_empty() {
        let Some((rep, this, next)) = field_extent(rest)
            .and_then(|rep| rest.split_at_checked(rep.len).map(|(a, b)| (rep, a, b)))
        else {
            // Malformed: whether it added an entry is unknown (the peer would have torn the
            // connection down; the positions of what follows cannot be trusted either way).
            *known = KnownEntries::default();
            return (fields, true);
        };
        rest = next;
        match rep.kind {
            // Resizes only evict entries the encoder will not refer to any more.
            Representation::SizeUpdate => {}
            Representation::Indexed => match known.get(rep.index) {
                Some(field) => fields.push(field),
                None => incomplete = true,
            },
            Representation::Literal | Representation::Incremental => {
                let Some((name, value)) = literal(this, &rep, known) else {
                    if rep.kind == Representation::Incremental {
                        *known = KnownEntries::default();
                    }
                    incomplete = true;
                    continue;
                };
                if rep.kind == Representation::Incremental {
                    known.add(name.clone(), value.clone());
                }
                match name {
                    Some(name) => fields.push((name, value)),
                    None => incomplete = true,
                }
            }
        }
    }
    (fields, incomplete)
}

/// A literal field representation's name (`None` when it refers to an unknown entry) and
/// value; `None` when its strings do not decode.
fn literal(
    this: &[u8],
    rep: &FieldExtent,
    known: &KnownEntries,
) -> Option<(Option<String>, String)> {
    let prefix = if rep.kind == Representation::Incremental {
        6
    } else {
        4
    };
    let (_, mut at) = hpack_integer(this, prefix)?;
    let name = if rep.index == 0 {
        let (name, used) = string_literal(this.get(at..)?)?;
        at += used;
        Some(String::from_utf8_lossy(&name).to_ascii_lowercase())
    } else {
        known.get(rep.index).map(|(name, _)| name)
    };
    let (value, _) = string_literal(this.get(at..)?)?;
    Some((name, String::from_utf8_lossy(&value).into_owned()))
}

/// An HPACK string literal (RFC 7541 §5.2) at the start of `buf`, Huffman-decoded if it is
/// encoded so, and the bytes it took.
fn string_literal(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    thread_local! {
        static HUFFMAN: RefCell<HuffmanDecoder> = RefCell::new(HuffmanDecoder::new());
    }
    let huffman = buf.first()? & 0x80 != 0;
    let (len, used) = hpack_integer(buf, 7)?;
    let end = used.checked_add(len)?;
    let raw = buf.get(used..end)?;
    let decoded = if huffman {
        HUFFMAN.with(|h| h.borrow_mut().decode(raw).ok())?
    } else {
        raw.to_vec()
    };
    Some((decoded, end))
}

/// Whether a header block starts with dynamic table size updates one of which is to zero.
fn starts_with_table_reset(block: &[u8]) -> bool {
    let mut rest = block;
    while let Some(rep) = field_extent(rest) {
        if rep.kind != Representation::SizeUpdate {
            return false;
        }
        if rep.index == 0 {
            return true;
        }
        rest = rest.get(rep.len..).unwrap_or_default();
    }
    false
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Representation {
    Indexed,
    Incremental,
    SizeUpdate,
    Literal,
}

/// One field representation at the start of a header block (RFC 7541 §6): its kind, its
/// length, and the table index it names (for a size update, the new size).
struct FieldExtent {
    kind: Representation,
    len: usize,
    index: usize,
}

/// Only the extent, which is all that is needed to split a block into its fields.
fn field_extent(block: &[u8]) -> Option<FieldExtent> {
    let first = *block.first()?;
    let (kind, prefix) = if first & 0x80 != 0 {
        (Representation::Indexed, 7)
    } else if first & 0x40 != 0 {
        (Representation::Incremental, 6)
    } else if first & 0x20 != 0 {
        (Representation::SizeUpdate, 5)
    } else {
        (Representation::Literal, 4)
    };
    let (index, mut len) = hpack_integer(block, prefix)?;
    if matches!(kind, Representation::Incremental | Representation::Literal) {
        if index == 0 {
            len += string_extent(block.get(len..)?)?;
        }
        len += string_extent(block.get(len..)?)?;
    }
    Some(FieldExtent { kind, len, index })
}

/// An HPACK integer (RFC 7541 §5.1) and the bytes it took; at most four continuation bytes, as
/// the decoder allows.
fn hpack_integer(buf: &[u8], prefix_bits: u32) -> Option<(usize, usize)> {
    let mask = (1usize << prefix_bits) - 1;
    let mut value = usize::from(*buf.first()?) & mask;
    if value < mask {
        return Some((value, 1));
    }
    for (i, b) in buf.iter().enumerate().skip(1).take(4) {
        value += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The length of an HPACK string literal (RFC 7541 §5.2) at the start of `buf`.
fn string_extent(buf: &[u8]) -> Option<usize> {
    let (len, used) = hpack_integer(buf, 7)?;
    let total = used.checked_add(len)?;
    (total <= buf.len()).then_some(total)
}
