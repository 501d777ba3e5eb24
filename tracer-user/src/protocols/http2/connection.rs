//! One HTTP/2 connection: its streams, assembled from both directions' frames into exchanges.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use base64::Engine as _;
use tracing::debug;

use super::{
    finder::FrameFinder,
    frames::{
        header_fragment, FrameHeader, FramingError, CONTINUATION, FLAG_ACK, FLAG_END_HEADERS,
        FLAG_END_STREAM, GOAWAY, HEADERS, MAX_HEADER_BLOCK, PREFACE, PUSH_PROMISE, RST_STREAM,
        SETTINGS, SETTINGS_HEADER_TABLE_SIZE,
    },
    hpack::{DecodedBlock, Hpack, MAX_HEADER_TABLE_SIZE},
    reader::{Framing, PendingBlock, Reader, Step},
    stream::{head_of, Half, Head, Stream},
};
use crate::{
    model::{ConnKey, Direction, ExchangeEnd, HttpExchange, HttpRequest, HttpResponse, Peer},
    protocols::memory::{BodyBudget, KeptBody},
    telemetry::health::Health,
};

pub(super) const MAX_OPEN_STREAMS: usize = 1024;

/// One HTTP/2 connection seen from its client: requests are written (egress), responses read.
pub struct Http2Connection {
    pub(super) conn: ConnKey,
    pub(super) max_body: usize,
    /// What every connection's bodies in progress may hold together.
    pub(super) budget: BodyBudget,
    pub(super) health: Arc<Health>,
    /// Indexed by `Direction as usize`.
    pub(super) readers: [Reader; 2],
    pub(super) streams: BTreeMap<u32, Stream>,
    /// The client opens streams in increasing order: one at or below the highest it opened that
    /// is not open any more has ended, and late frames for it are ignored. Responses can reach
    /// us before their request (reads and writes on different threads), so a higher stream may
    /// be opened by its response.
    pub(super) max_request_stream: u32,
    /// The tracer joined the connection after its preface: every exchange says so.
    pub(super) joined: bool,
    /// Joined connections: the first stream seen opened by a request. Streams below it (all
    /// streams, until it is known) may have been open before the tracer joined: their frames
    /// open them whatever `max_request_stream` says.
    pub(super) first_new_stream: Option<u32>,
    /// Joined connections: streams from before the join already emitted, so that late frames
    /// do not open them again.
    pub(super) finished_old: BTreeSet<u32>,
    /// Joined connections: the traced process turned out to be the server (its header blocks
    /// are responses, or its peer's requests). Servers are not traced as calls.
    pub(super) server_side: bool,
}

impl Http2Connection {
    /// A connection whose client preface is about to be pushed (egress) from its first byte.
    pub fn new(conn: ConnKey, max_body: usize, health: Arc<Health>) -> Self {
        Http2Connection {
            conn,
            max_body,
            budget: BodyBudget::default(),
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

    /// Bodies drawn from `budget` (else bounded by the body limit only).
    pub fn with_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = budget;
        self
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
        // Already charged, and given back, by the HTTP/1 parser that read it.
        half.body = KeptBody::from_bytes(&request.body);
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
    pub(super) fn preface_after_all(&self, bytes: &[u8]) -> bool {
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

    /// A frame whose payload was kept arrived whole.
    pub(super) fn whole_frame(
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
    pub(super) fn apply_settings(&mut self, direction: Direction, payload: &[u8]) {
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
    pub(super) fn header_fragment_done(
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
            let decoded = reader.hpack.decode(&block.fragment);
            if decoded.capped {
                debug!(
                    "HTTP/2 on {:?}, {direction:?}: header block over the head budget",
                    self.conn
                );
                Health::add(&self.health.http2_header_blocks_capped, 1);
            }
            Some(decoded)
        };
        if self.joined && self.is_server_side(direction, &block, decoded.as_ref()) {
            debug!(
                "HTTP/2 on {:?}: the traced process is the server",
                self.conn
            );
            self.server_side = true;
            Health::add(
                &self.health.http2_dropped_server_side,
                self.streams.len() as u64,
            );
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
            Some(decoded) => {
                let incomplete = decoded.missing_fields();
                let fields = decoded.fields;
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
    pub(super) fn is_server_side(
        &self,
        direction: Direction,
        block: &PendingBlock,
        decoded: Option<&DecodedBlock>,
    ) -> bool {
        if block.promise {
            return direction == Direction::Egress;
        }
        let Some(decoded) = decoded else {
            return false;
        };
        decoded.fields.iter().any(|(name, _)| match direction {
            Direction::Egress => name == ":status",
            Direction::Ingress => matches!(name.as_str(), ":method" | ":path" | ":scheme"),
        })
    }

    /// A gap fell inside a frame whose payload was needed whole.
    pub(super) fn damaged_frame(
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
    pub(super) fn lose(
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
    pub(super) fn stream(&mut self, id: u32, direction: Direction) -> Option<&mut Stream> {
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
            if ended {
                Health::add(&self.health.http2_dropped_stream_ended, 1);
                return None;
            }
            if self.streams.len() >= MAX_OPEN_STREAMS {
                Health::add(&self.health.http2_dropped_too_many_streams, 1);
                return None;
            }
            self.streams.insert(id, Stream::default());
        }
        self.streams.get_mut(&id)
    }

    /// Whether a stream may have been opened before the tracer joined the connection.
    pub(super) fn is_old(&self, id: u32) -> bool {
        self.joined && self.first_new_stream.is_none_or(|first| id < first)
    }

    pub(super) fn finish_if_done(&mut self, id: u32, peer: &Peer, out: &mut Vec<HttpExchange>) {
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
    pub(super) fn settle_unseen_requests(&mut self, peer: &Peer, out: &mut Vec<HttpExchange>) {
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
    pub(super) fn finish(
        &mut self,
        id: u32,
        reason: &'static str,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
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
                body_cut: response.body.cut(),
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
                body_cut: request.body.cut(),
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

impl crate::protocols::state_bytes::StateBytes for Http2Connection {
    fn state_bytes(&self) -> u64 {
        use crate::protocols::state_bytes::total;
        total(
            self.readers
                .iter()
                .map(|r| r.state_bytes())
                .chain(self.streams.values().map(|s| s.state_bytes()))
                .chain([(self.finished_old.len() as u64).saturating_mul(8)]),
        )
    }
}
