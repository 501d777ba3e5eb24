//! WebSocket (RFC 6455) after an HTTP/1.1 upgrade, with permessage-deflate (RFC 7692).
//!
//! Some agents (OpenAI's Codex CLI) stream the Responses API over a WebSocket: the client sends
//! `{"type": "response.create", ...}` and the server answers with the same `response.*` events
//! the SSE transport carries. Each such sequence is turned into an exchange whose response body
//! is those events in SSE form, with each event's arrival time on the body timeline, so the
//! Responses parser reads it exactly as it reads the HTTP transport.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use serde_json::Value;

use crate::{
    model::{
        ConnKey, Direction, ExchangeEnd, Headers, HttpExchange, HttpRequest, HttpResponse, Peer,
    },
    protocols::memory::{BodyBudget, KeptBody, NotKept},
    telemetry::health::Health,
};

/// A message longer than this, on the wire or inflated, is not something we follow (and would let
/// a peer grow our buffers); the body limit lowers it.
const MAX_MESSAGE: usize = 64 << 20;

/// Inflated output is produced this many bytes at a time and kept as it comes.
const INFLATE_CHUNK: usize = 16 * 1024;

/// permessage-deflate as the server accepted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deflate {
    pub client_no_context_takeover: bool,
    pub server_no_context_takeover: bool,
}

/// The extension parameters in a `Sec-WebSocket-Extensions` response header.
pub fn negotiated_deflate(extensions: Option<&str>) -> Option<Deflate> {
    let ext = extensions?
        .split(',')
        .map(str::trim)
        .find(|e| e.starts_with("permessage-deflate"))?;
    let has = |p: &str| ext.split(';').any(|x| x.trim() == p);
    Some(Deflate {
        client_no_context_takeover: has("client_no_context_takeover"),
        server_no_context_takeover: has("server_no_context_takeover"),
    })
}

/// One direction: bytes not yet a whole frame, the message being assembled, the inflater.
struct Reader {
    buf: BytesMut,
    message: Vec<u8>,
    compressed: bool,
    in_message: bool,
    inflater: Option<Decompress>,
    no_context_takeover: bool,
    /// Most bytes of one message, framed or inflated.
    max_message: usize,
    /// Framing lost (a gap, an oversized frame): nothing more is read in this direction.
    lost: bool,
    /// Messages over `max_message` since the connection last counted them.
    oversized: u64,
}

impl Reader {
    fn new(deflate: bool, no_context_takeover: bool) -> Self {
        Reader {
            buf: BytesMut::new(),
            message: Vec::new(),
            compressed: false,
            in_message: false,
            inflater: deflate.then(|| Decompress::new(false)),
            no_context_takeover,
            max_message: MAX_MESSAGE,
            lost: false,
            oversized: 0,
        }
    }

    fn with_max_message(mut self, max_message: usize) -> Self {
        self.max_message = max_message.min(MAX_MESSAGE);
        self
    }

    /// Complete data messages (text or binary, decompressed) in what arrived.
    fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) {
        if self.lost {
            return;
        }
        self.buf.extend_from_slice(data);
        while let Some(frame) = self.next_frame() {
            let Some((fin, rsv1, opcode, payload)) = frame else {
                self.lose();
                return;
            };
            match opcode {
                // Control frames (close, ping, pong) may sit between fragments.
                0x8..=0xf => continue,
                0x1 | 0x2 => {
                    self.message.clear();
                    self.compressed = rsv1;
                    self.in_message = true;
                }
                0x0 if self.in_message => {}
                _ => {
                    self.lose();
                    return;
                }
            }
            if self.message.len().saturating_add(payload.len()) > self.max_message {
                self.oversized = self.oversized.saturating_add(1);
                self.lose();
                return;
            }
            self.message.extend_from_slice(&payload);
            if fin {
                self.in_message = false;
                let raw = std::mem::take(&mut self.message);
                match self.finish(raw) {
                    Some(m) => out.push(m),
                    None => {
                        self.lose();
                        return;
                    }
                }
            }
        }
    }

    fn lose(&mut self) {
        self.lost = true;
        self.buf.clear();
        self.message.clear();
    }

    fn finish(&mut self, raw: Vec<u8>) -> Option<Vec<u8>> {
        if !self.compressed {
            return Some(raw);
        }
        let max_message = self.max_message;
        let inflater = self.inflater.as_mut()?;
        // RFC 7692 §7.2.2: the sender removed the final empty block's tail; put it back.
        let mut input = raw;
        input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        // Output is kept as it is produced, never sized by the input: a few KiB of deflate can
        // inflate to gigabytes, and is refused once past the cap, not allocated ahead of it.
        let mut output = Vec::new();
        let mut chunk = vec![0u8; INFLATE_CHUNK];
        let mut consumed = 0usize;
        loop {
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(
                    input.get(consumed..).unwrap_or_default(),
                    &mut chunk,
                    FlushDecompress::Sync,
                )
                .ok()?;
            let taken = inflater.total_in().saturating_sub(before_in);
            let produced = usize::try_from(inflater.total_out().saturating_sub(before_out)).ok()?;
            consumed = consumed.saturating_add(usize::try_from(taken).unwrap_or(usize::MAX));
            if output.len().saturating_add(produced) > max_message {
                self.oversized = self.oversized.saturating_add(1);
                return None;
            }
            crate::protocols::body::reserve_capped(&mut output, produced, max_message);
            output.extend_from_slice(chunk.get(..produced)?);
            if status == Status::StreamEnd {
                break;
            }
            // All input taken is not the end: a highly compressed message (Codex's follow-up
            // requests inflate 13-fold) can still hold output that did not fit the chunk, and
            // leaving it in the inflater corrupts this message and every later one.
            let room_left = produced < chunk.len();
            if consumed >= input.len() && room_left {
                break;
            }
            if taken == 0 && produced == 0 {
                break;
            }
        }
        if self.no_context_takeover {
            inflater.reset(false);
        }
        Some(output)
    }

    /// The next whole frame: None when more bytes are needed, Some(None) when it is malformed.
    #[allow(clippy::type_complexity)]
    fn next_frame(&mut self) -> Option<Option<(bool, bool, u8, Vec<u8>)>> {
        let b = &self.buf;
        let &[b0, b1] = b.first_chunk::<2>()?;
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = b0 & 0x0f;
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(*b.get(2..)?.first_chunk::<2>()?)),
                4,
            ),
            127 => (u64::from_be_bytes(*b.get(2..)?.first_chunk::<8>()?), 10),
            n => (n as u64, 2),
        };
        if len > MAX_MESSAGE as u64 {
            return Some(None);
        }
        let mask = if masked {
            let m = *b.get(at..)?.first_chunk::<4>()?;
            at = at.saturating_add(4);
            Some(m)
        } else {
            None
        };
        let end = at.saturating_add(len as usize);
        let mut payload = b.get(at..end)?.to_vec();
        if let Some(m) = mask {
            for (byte, key) in payload.iter_mut().zip(m.iter().cycle()) {
                *byte ^= key;
            }
        }
        self.buf.advance(end);
        Some(Some((fin, rsv1, opcode, payload)))
    }
}

/// A `response.create` and the events answering it so far. The events, in SSE form, are a
/// body like any other: kept up to the body limit and as far as the memory budget allows, all
/// counted in its length; the timeline stops where the kept bytes stop (only they are parsed).
struct Pending {
    request: Vec<u8>,
    start_ns: u64,
    body: KeptBody,
    body_len: u64,
    timeline: Vec<(u64, u64)>,
    /// When the first and the last event arrived.
    first_ns: Option<u64>,
    last_ns: u64,
}

pub struct WebSocketConnection {
    key: ConnKey,
    /// The upgrade request's path and host.
    path: String,
    host: Option<String>,
    readers: [Reader; 2],
    pending: Option<Pending>,
    /// The body limit, which bounds the events of one response as a whole too.
    max_body: usize,
    budget: BodyBudget,
}

impl WebSocketConnection {
    /// `max_message`: the body limit, which bounds each message, framed or inflated.
    pub fn new(
        key: ConnKey,
        path: &str,
        host: Option<&str>,
        deflate: Option<Deflate>,
        max_message: usize,
    ) -> Self {
        let d = deflate.unwrap_or_default();
        WebSocketConnection {
            key,
            path: path.split('?').next().unwrap_or_default().to_string(),
            host: host.map(str::to_string),
            readers: [
                Reader::new(deflate.is_some(), d.client_no_context_takeover)
                    .with_max_message(max_message),
                Reader::new(deflate.is_some(), d.server_no_context_takeover)
                    .with_max_message(max_message),
            ],
            pending: None,
            max_body: max_message,
            budget: BodyBudget::default(),
        }
    }

    /// Response events drawn from `budget` (else bounded by the body limit only).
    pub fn with_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = budget;
        self
    }

    pub fn push(
        &mut self,
        direction: Direction,
        timestamp_ns: u64,
        data: &[u8],
        peer: &Peer,
        health: &Health,
        out: &mut Vec<HttpExchange>,
    ) {
        let mut messages = Vec::new();
        let reader = self.reader(direction);
        reader.push(data, &mut messages);
        Health::add(
            &health.websocket_messages_oversized,
            std::mem::take(&mut reader.oversized),
        );
        for message in messages {
            let Ok(json) = serde_json::from_slice::<Value>(&message) else {
                continue;
            };
            let kind = json
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match direction {
                Direction::Egress if kind == "response.create" => {
                    // Fields may sit beside `type` or inside a `response` object.
                    let mut request = json.get("response").cloned().unwrap_or(json);
                    if let Some(o) = request.as_object_mut() {
                        o.remove("type");
                        o.entry("stream").or_insert(Value::Bool(true));
                    }
                    if let Some(unfinished) = self.pending.take() {
                        out.push(self.exchange(
                            unfinished,
                            peer,
                            ExchangeEnd::Interrupted("superseded"),
                        ));
                    }
                    self.pending = Some(Pending {
                        request: request.to_string().into_bytes(),
                        start_ns: timestamp_ns,
                        body: KeptBody::default(),
                        body_len: 0,
                        timeline: Vec::new(),
                        first_ns: None,
                        last_ns: timestamp_ns,
                    });
                }
                Direction::Ingress => {
                    let Some(pending) = &mut self.pending else {
                        continue;
                    };
                    let mut event = Vec::with_capacity(
                        message.len().saturating_add(kind.len()).saturating_add(16),
                    );
                    event.extend_from_slice(b"event: ");
                    event.extend_from_slice(kind.as_bytes());
                    event.extend_from_slice(b"\ndata: ");
                    event.extend_from_slice(&message);
                    event.extend_from_slice(b"\n\n");
                    let not_kept = pending.body.extend(&event, self.max_body, &self.budget);
                    not_kept.count_in(health);
                    pending.body_len = pending.body_len.saturating_add(event.len() as u64);
                    pending.first_ns.get_or_insert(timestamp_ns);
                    pending.last_ns = timestamp_ns;
                    if not_kept == NotKept::default() {
                        pending
                            .timeline
                            .push((pending.body.len() as u64, timestamp_ns));
                    }
                    if matches!(
                        kind.as_str(),
                        "response.completed" | "response.incomplete" | "response.failed" | "error"
                    ) {
                        if let Some(done) = self.pending.take() {
                            Health::add(&health.http_exchanges, 1);
                            out.push(self.exchange(done, peer, ExchangeEnd::Complete));
                        }
                    }
                }
                Direction::Egress => {}
            }
        }
    }

    fn reader(&mut self, direction: Direction) -> &mut Reader {
        let [egress, ingress] = &mut self.readers;
        match direction {
            Direction::Egress => egress,
            Direction::Ingress => ingress,
        }
    }

    /// Bytes lost in one direction: its framing cannot be trusted any more.
    pub fn gap(&mut self, direction: Direction) {
        self.reader(direction).lose();
    }

    pub fn close(
        &mut self,
        reason: &'static str,
        peer: &Peer,
        health: &Health,
        out: &mut Vec<HttpExchange>,
    ) {
        if let Some(pending) = self.pending.take() {
            Health::add(&health.http_interrupted, 1);
            out.push(self.exchange(pending, peer, ExchangeEnd::Interrupted(reason)));
        }
    }

    fn exchange(&self, p: Pending, peer: &Peer, end: ExchangeEnd) -> HttpExchange {
        // The message type names the API, whatever the socket's URL.
        let target = if self.path.ends_with("/responses") {
            self.path.clone()
        } else {
            "/v1/responses".to_string()
        };
        let mut headers: Headers = vec![("content-type".into(), "application/json".into())];
        if let Some(h) = &self.host {
            headers.push(("host".into(), h.clone()));
        }
        let end_ns = p.last_ns;
        let request = HttpRequest {
            method: "POST".into(),
            target,
            headers,
            body_len: p.request.len() as u64,
            body: Bytes::from(p.request),
            start_ns: p.start_ns,
            end_ns: p.start_ns,
            bytes_lost: 0,
            body_cut: None,
            http2_incomplete_headers: false,
        };
        let first_body_ns = p.first_ns;
        let response = first_body_ns.map(|first_body_ns| HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body_len: p.body_len,
            body_cut: p.body.cut(),
            body: p.body.freeze(),
            start_ns: first_body_ns,
            first_body_ns: Some(first_body_ns),
            end_ns,
            body_timeline: p.timeline,
            complete: end == ExchangeEnd::Complete,
            bytes_lost: 0,
            http2_incomplete_headers: false,
        });
        HttpExchange {
            conn: self.key,
            peer: peer.clone(),
            request,
            response,
            end,
            http2_joined_mid_connection: false,
        }
    }
}

/// An inflater's window and state (zlib's 32 KiB window and its tables).
const INFLATER_BYTES: u64 = 48 * 1024;

impl super::state_bytes::StateBytes for WebSocketConnection {
    fn state_bytes(&self) -> u64 {
        use super::state_bytes::{timeline_bytes, total};
        let readers = self.readers.iter().map(|r| {
            total([
                r.buf.len() as u64,
                r.message.len() as u64,
                if r.inflater.is_some() {
                    INFLATER_BYTES
                } else {
                    0
                },
            ])
        });
        let pending = self.pending.as_ref().map_or(0, |p| {
            total([p.request.len() as u64, timeline_bytes(&p.timeline)])
        });
        total(readers.chain([
            self.path.len() as u64,
            self.host.as_ref().map_or(0, |h| h.len() as u64),
            pending,
        ]))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::alloc_probe::peak_during;
    use std::io::Write;

    /// A frame as a client (masked) or server sends it.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    /// permessage-deflate with context takeover: one compressor for the whole direction.
    fn deflate_messages(messages: &[&str]) -> Vec<Vec<u8>> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        messages
            .iter()
            .map(|m| {
                let mut out = Vec::with_capacity(m.len() + 64);
                c.compress_vec(m.as_bytes(), &mut out, flate2::FlushCompress::Sync)
                    .unwrap();
                assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
                out.truncate(out.len() - 4);
                out
            })
            .collect()
    }

    const CONN: ConnKey = ConnKey {
        pid: 1,
        source: crate::model::Source::Socket,
        conn_id: 3,
    };

    fn responses_conversation(deflate: bool) -> (Vec<u8>, Vec<u8>) {
        let create = r#"{"type":"response.create","model":"gpt-5.4","input":"hi","tools":[{"type":"function","name":"shell"}]}"#;
        let events = [
            r#"{"type":"response.created","response":{"id":"resp_ws","model":"gpt-5.4","status":"in_progress"}}"#,
            r#"{"type":"response.output_item.added","item":{"type":"function_call","call_id":"call_ws","name":"shell","arguments":""}}"#,
            r#"{"type":"response.completed","response":{"id":"resp_ws","model":"gpt-5.4","status":"completed","output":[{"type":"function_call","call_id":"call_ws","name":"shell","arguments":"{\"cmd\":\"ls\"}"}],"usage":{"input_tokens":12,"output_tokens":7}}}"#,
        ];
        let (client, server): (Vec<Vec<u8>>, Vec<Vec<u8>>) = if deflate {
            (deflate_messages(&[create]), deflate_messages(&events))
        } else {
            (
                vec![create.as_bytes().to_vec()],
                events.iter().map(|e| e.as_bytes().to_vec()).collect(),
            )
        };
        let egress = frame(true, deflate, 1, &client[0], Some([1, 2, 3, 4]));
        let mut ingress = frame(true, false, 9, b"ping", None);
        for (i, e) in server.iter().enumerate() {
            if i == 1 {
                // A fragmented message: two frames, a pong between them.
                let half = e.len() / 2;
                ingress.extend(frame(false, deflate, 1, &e[..half], None));
                ingress.extend(frame(true, false, 10, b"", None));
                ingress.extend(frame(true, false, 0, &e[half..], None));
            } else {
                ingress.extend(frame(true, deflate, 1, e, None));
            }
        }
        (egress, ingress)
    }

    /// Issue 17 item 7: a server streaming events without end grows no body past the body
    /// limit, and the events' bytes draw from the memory budget, given back with the exchange.
    #[test]
    fn response_events_are_bounded_by_the_body_limit_and_the_budget() {
        let create = r#"{"type":"response.create","model":"gpt-5.4","input":"hi"}"#;
        let delta = r#"{"type":"response.output_text.delta","delta":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let done = r#"{"type":"response.completed","response":{"id":"r","status":"completed"}}"#;
        let event_len = "event: response.output_text.delta\ndata: \n\n".len() + delta.len();
        let budget = BodyBudget::new(u64::MAX);
        let mut ws = WebSocketConnection::new(CONN, "/v1/responses", None, None, 1000)
            .with_budget(budget.clone());
        let (peer, health, mut out) = (Peer::default(), Health::default(), Vec::new());
        let egress = frame(true, false, 1, create.as_bytes(), Some([1, 2, 3, 4]));
        ws.push(Direction::Egress, 1, &egress, &peer, &health, &mut out);
        for t in 0..100 {
            let ingress = frame(true, false, 1, delta.as_bytes(), None);
            ws.push(
                Direction::Ingress,
                10 + t,
                &ingress,
                &peer,
                &health,
                &mut out,
            );
        }
        assert!(budget.held() <= 1000, "{}", budget.held());
        assert!(budget.held() > 0);
        let ingress = frame(true, false, 1, done.as_bytes(), None);
        ws.push(Direction::Ingress, 200, &ingress, &peer, &health, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(budget.held(), 0, "given back with the exchange");
        let response = out[0].response.as_ref().unwrap();
        assert_eq!(response.body.len(), 1000);
        let done_len = "event: response.completed\ndata: \n\n".len() + done.len();
        assert_eq!(response.body_len, (100 * event_len + done_len) as u64);
        assert_eq!(response.end_ns, 200);
        assert_eq!(
            health
                .body_bytes_over_limit
                .load(std::sync::atomic::Ordering::Relaxed),
            response.body_len - 1000
        );
        // The timeline stops where the kept bytes stop.
        assert!(response
            .body_timeline
            .iter()
            .all(|(reached, _)| *reached <= 1000));
    }

    #[test]
    fn response_events_past_the_memory_budget_are_counted() {
        let create = r#"{"type":"response.create","model":"gpt-5.4","input":"hi"}"#;
        let delta = r#"{"type":"response.output_text.delta","delta":"b"}"#;
        let budget = BodyBudget::new(100);
        let mut ws = WebSocketConnection::new(CONN, "/v1/responses", None, None, 1 << 20)
            .with_budget(budget.clone());
        let (peer, health, mut out) = (Peer::default(), Health::default(), Vec::new());
        let egress = frame(true, false, 1, create.as_bytes(), Some([1, 2, 3, 4]));
        ws.push(Direction::Egress, 1, &egress, &peer, &health, &mut out);
        for t in 0..10 {
            let ingress = frame(true, false, 1, delta.as_bytes(), None);
            ws.push(
                Direction::Ingress,
                10 + t,
                &ingress,
                &peer,
                &health,
                &mut out,
            );
        }
        assert_eq!(budget.held(), 100);
        let over = health
            .body_bytes_over_budget
            .load(std::sync::atomic::Ordering::Relaxed);
        let event_len = "event: response.output_text.delta\ndata: \n\n".len() + delta.len();
        assert_eq!(over, (10 * event_len - 100) as u64);
        ws.close("shutdown", &peer, &health, &mut out);
        assert_eq!(budget.held(), 0);
        let response = out[0].response.as_ref().unwrap();
        assert_eq!(response.body.len(), 100);
        assert_eq!(response.body_cut, Some(crate::model::BodyCut::MemoryBudget));
    }

    fn run(deflate: bool, cuts: usize) -> Vec<HttpExchange> {
        let (egress, ingress) = responses_conversation(deflate);
        let d = deflate.then_some(Deflate::default());
        let mut ws = WebSocketConnection::new(
            CONN,
            "/v1/responses",
            Some("api.openai.com"),
            d,
            MAX_MESSAGE,
        );
        let mut out = Vec::new();
        let peer = Peer::default();
        let health = Health::default();
        ws.push(Direction::Egress, 1, &egress, &peer, &health, &mut out);
        let step = (ingress.len() / cuts.max(1)).max(1);
        for (i, piece) in ingress.chunks(step).enumerate() {
            ws.push(
                Direction::Ingress,
                10 + i as u64,
                piece,
                &peer,
                &health,
                &mut out,
            );
        }
        ws.close("shutdown", &peer, &health, &mut out);
        out
    }

    #[test]
    fn a_responses_conversation_becomes_one_exchange_plain_and_deflated() {
        for deflate in [false, true] {
            for cuts in [1, 3, 17, 1000] {
                let out = run(deflate, cuts);
                assert_eq!(out.len(), 1, "deflate {deflate}, cuts {cuts}");
                let x = &out[0];
                assert_eq!(x.end, ExchangeEnd::Complete);
                assert_eq!(x.request.target, "/v1/responses");
                let request: Value = serde_json::from_slice(&x.request.body).unwrap();
                assert_eq!(request["model"], "gpt-5.4");
                assert_eq!(request["stream"], true);
                let call = match crate::genai::recognise(
                    x,
                    &crate::genai::GenAiConfig {
                        capture_content: false,
                        max_body_bytes: crate::daemon::pipeline::DEFAULT_MAX_BODY_BYTES,
                    },
                ) {
                    Some(Ok(crate::genai::Call::Llm(c))) => c,
                    other => panic!("{other:?}"),
                };
                assert_eq!(call.response.id.as_deref(), Some("resp_ws"));
                assert_eq!(call.response.tool_calls[0].id.as_deref(), Some("call_ws"));
                assert_eq!(call.response.usage.output_tokens, Some(7));
                assert!(call.first_chunk_ns.is_some());
            }
        }
    }

    /// Codex's requests on one socket: each later one repeats most of the one before, so with
    /// context takeover it deflates to a small fraction of its size; every one must come out
    /// whole, and so must the messages after it.
    #[test]
    fn consecutive_highly_compressed_messages_inflate_whole() {
        let tools = "{\"type\":\"function\",\"name\":\"exec_command\"},".repeat(400);
        let creates: Vec<String> = (1..=3)
            .map(|n| {
                format!(
                    r#"{{"type":"response.create","model":"m{n}","input":[{tools}{{"n":{n}}}]}}"#
                )
            })
            .collect();
        let refs: Vec<&str> = creates.iter().map(String::as_str).collect();
        let wire = deflate_messages(&refs);
        assert!(wire[1].len() * 8 < creates[1].len(), "a high ratio");
        let mut r = Reader::new(true, false);
        let mut out = Vec::new();
        for w in &wire {
            r.push(&frame(true, true, 1, w, Some([9, 8, 7, 6])), &mut out);
        }
        let got: Vec<String> = out
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        assert_eq!(got, creates);
    }

    #[test]
    fn extension_negotiation() {
        assert_eq!(negotiated_deflate(None), None);
        assert_eq!(negotiated_deflate(Some("x-webkit-deflate-frame")), None);
        assert_eq!(
            negotiated_deflate(Some(
                "permessage-deflate; client_no_context_takeover; server_max_window_bits=15"
            )),
            Some(Deflate {
                client_no_context_takeover: true,
                server_no_context_takeover: false
            })
        );
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let mut r = Reader::new(true, false);
        let mut out = Vec::new();
        r.push(
            &[0xc1, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &mut out,
        );
        assert!(r.lost && out.is_empty());
        let mut r = Reader::new(true, false);
        r.push(&frame(true, true, 1, b"not deflate at all", None), &mut out);
        assert!(out.is_empty());
        let _ = std::io::sink().write(b"");
    }

    /// Raw deflate of `mib` MiB of zeros, as permessage-deflate sends it (sync-flushed, tail
    /// removed): one sync-flushed MiB repeated, which stays a valid stream because its blocks
    /// are not final and refer back one byte at most.
    fn deflate_bomb(mib: usize) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut one = Vec::with_capacity(1 << 20);
        c.compress_vec(&vec![0u8; 1 << 20], &mut one, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(one.ends_with(&[0, 0, 0xff, 0xff]));
        let mut bomb = one.repeat(mib);
        bomb.truncate(bomb.len() - 4);
        bomb
    }

    #[test]
    fn a_deflate_bomb_is_refused_at_the_cap_without_a_large_allocation() {
        // 1 GiB inflated from about 1 MiB, against a 4 MiB body limit.
        let bomb = deflate_bomb(1024);
        assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
        let cap = 4 << 20;
        let wire = frame(true, true, 1, &bomb, None);
        let mut r = Reader::new(true, false).with_max_message(cap);
        let mut out = Vec::new();
        let ((), peak) = peak_during(|| r.push(&wire, &mut out));
        assert!(out.is_empty());
        assert!(
            r.lost,
            "the direction is not followed past a message it could not read"
        );
        assert_eq!(r.oversized, 1);
        // A few copies of the frame (the reader's buffer, the payload, the message) and the
        // output's last doubling, old and new buffers at once, to the cap; before, the output
        // grew to 64 MiB before it was refused.
        assert!(
            peak < 4 * wire.len() + 3 * cap,
            "{peak} bytes allocated at once"
        );
        // Below the cap the same kind of message inflates whole, in memory it produced.
        let mut r = Reader::new(true, false).with_max_message(cap);
        let small = frame(true, true, 1, &deflate_bomb(2), None);
        let ((), peak) = peak_during(|| r.push(&small, &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 2 << 20);
        assert!(out[0].capacity() <= cap, "{}", out[0].capacity());
        assert!(peak < 3 * (2 << 20), "{peak} bytes allocated at once");
        // Output is sized by what it holds, not by the input: incompressible bytes inflate to
        // their own size, which the old 4x-the-input buffer quadrupled.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut wire = Vec::with_capacity(noise.len() + 1024);
        c.compress_vec(&noise, &mut wire, flate2::FlushCompress::Sync)
            .unwrap();
        wire.truncate(wire.len() - 4);
        let mut r = Reader::new(true, false).with_max_message(cap);
        let mut out = Vec::new();
        r.push(&frame(true, true, 2, &wire, None), &mut out);
        assert_eq!(out, vec![noise.clone()]);
        assert!(
            out[0].capacity() < 2 * noise.len(),
            "{} bytes kept for {}",
            out[0].capacity(),
            noise.len()
        );
    }

    #[test]
    fn an_oversized_message_is_counted_on_the_connection() {
        let d = Some(Deflate::default());
        let mut ws = WebSocketConnection::new(CONN, "/v1/responses", None, d, 1 << 20);
        let health = Health::default();
        let mut out = Vec::new();
        let wire = frame(true, true, 1, &deflate_bomb(8), None);
        ws.push(
            Direction::Ingress,
            1,
            &wire,
            &Peer::default(),
            &health,
            &mut out,
        );
        assert_eq!(
            health
                .websocket_messages_oversized
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(out.is_empty());
    }
}
