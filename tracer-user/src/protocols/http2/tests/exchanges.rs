//! HTTP/2 parsing fed with bytes the tracer captured from `curl --http2` over TLS against the
//! mock server (tests/fixtures/http2, recorded with `--record-streams`): one call, one streamed
//! call, and three calls multiplexed on one connection. Any way of cutting the same bytes into
//! reads must give the same exchanges; lost bytes and arbitrary bytes must never give a wrong
//! one. Hand-built frames (encoded with the same crate's HPACK encoder) cover what curl does not
//! send: CONTINUATION, padding, priority, resets, GOAWAY, interim responses, table size updates.

use std::sync::{atomic::Ordering, Arc};

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use crate::{
    model::{
        header, ConnKey, Direction, ExchangeEnd, HttpExchange, HttpResponse, Peer, StreamEvent,
    },
    protocols::{
        http2::{Http2Connection, PREFACE},
        HttpTracker,
    },
    telemetry::health::Health,
};

#[derive(Clone, Copy)]
pub(super) struct Fixture {
    pub(super) request: &'static [u8],
    pub(super) response: &'static [u8],
}

pub(super) const PLAIN: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/chat_plain.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/chat_plain.response"),
};
pub(super) const STREAM: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/chat_stream_tools.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/chat_stream_tools.response"),
};
/// Streams 1 (JSON), 3 (SSE with a tool call) and 5 (429) on one connection; the responses
/// come back 1, 5, 3, and the later requests' headers refer to the HPACK dynamic table.
pub(super) const MULTIPLEXED: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/multiplexed.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/multiplexed.response"),
};

pub(super) const PATH: &str = "/v1/chat/completions";

pub(super) const CONN: ConnKey = ConnKey {
    pid: 1,
    source: crate::model::Source::Tls,
    conn_id: 2,
};

pub(super) fn data_at(direction: Direction, bytes: &[u8], timestamp_ns: u64) -> StreamEvent {
    StreamEvent::Data {
        conn: CONN,
        direction,
        timestamp_ns,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

pub(super) fn data(direction: Direction, bytes: &[u8]) -> StreamEvent {
    data_at(direction, bytes, 7)
}

pub(super) fn gap(direction: Direction, len: u64) -> StreamEvent {
    StreamEvent::Gap {
        conn: CONN,
        direction,
        timestamp_ns: 7,
        len,
    }
}

pub(super) fn run_with(
    max_body: usize,
    events: &[StreamEvent],
) -> (Vec<HttpExchange>, Arc<Health>) {
    let health = Arc::new(Health::default());
    let mut tracker = HttpTracker::new(max_body, health.clone());
    let mut out = Vec::new();
    for e in events {
        tracker.push(e, &mut out);
    }
    tracker.close_all(&mut out);
    (out, health)
}

/// Feeds the events through the tracker, as the pipeline does, then shuts down.
pub(super) fn run(events: &[StreamEvent]) -> Vec<HttpExchange> {
    run_with(64 << 20, events).0
}

pub(super) fn whole(f: &Fixture) -> Vec<StreamEvent> {
    vec![
        data(Direction::Egress, f.request),
        data(Direction::Ingress, f.response),
    ]
}

pub(super) fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

pub(super) fn response(e: &HttpExchange) -> &HttpResponse {
    e.response.as_ref().expect("a response")
}

#[test]
fn a_call_becomes_the_exchange_http1_would_give() {
    let exchanges = run(&whole(&PLAIN));
    assert_eq!(exchanges.len(), 1);
    let e = &exchanges[0];
    assert_eq!(e.end, ExchangeEnd::Complete);
    assert_eq!(e.request.method, "POST");
    assert_eq!(e.request.target, PATH);
    assert!(!e.request.http2_incomplete_headers);
    // `:authority` stands in for the Host header, first, like HTTP/1.1's.
    assert_eq!(e.request.headers[0].0, "host");
    assert!(header(&e.request.headers, "host").is_some_and(|h| h.starts_with("127.0.0.1:")));
    assert_eq!(
        header(&e.request.headers, "content-type"),
        Some("application/json")
    );
    assert!(e.request.headers.iter().all(|(k, _)| !k.starts_with(':')));
    let request = json(&e.request.body);
    assert_eq!(request["model"], "gpt-4o-mini");
    assert_eq!(e.request.body_len, e.request.body.len() as u64);

    let r = response(e);
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(!r.http2_incomplete_headers);
    assert_eq!(header(&r.headers, "content-type"), Some("application/json"));
    assert_eq!(json(&r.body)["id"], "chatcmpl-mock-nonstream");
    assert_eq!(r.body_len, r.body.len() as u64);
    assert_eq!(r.first_body_ns, Some(7));
    assert_eq!(r.body_timeline, vec![(r.body_len, 7)]);
}

#[test]
fn a_streamed_call_keeps_when_each_event_arrived() {
    // One read per frame, each a millisecond after the last, as the events trickled in.
    let mut events = vec![data_at(Direction::Egress, STREAM.request, 1)];
    let frames = frame_bounds(STREAM.response);
    for (i, (start, end)) in frames.iter().enumerate() {
        events.push(data_at(
            Direction::Ingress,
            &STREAM.response[*start..*end],
            1_000_000 * (i as u64 + 2),
        ));
    }
    let exchanges = run(&events);
    assert_eq!(exchanges.len(), 1);
    let e = &exchanges[0];
    assert_eq!(e.end, ExchangeEnd::Complete);
    assert_eq!(json(&e.request.body)["stream"], true);
    let r = response(e);
    assert_eq!(r.status, 200);
    assert!(header(&r.headers, "content-type").is_some_and(|t| t.starts_with("text/event-stream")));
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.starts_with("data: {"));
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert!(body.contains("call_mock_weather"));
    // Six DATA frames with bytes: six points on the timeline, the first one the first chunk.
    assert_eq!(r.body_timeline.len(), 6);
    assert_eq!(r.first_body_ns, Some(r.body_timeline[0].1));
    assert!(r.first_body_ns < Some(r.end_ns));
    assert_eq!(
        r.body_timeline.last().map(|(reached, _)| *reached),
        Some(r.body_len)
    );
    assert!(r.time_at_offset(1) < r.time_at_offset(r.body_len));
}

#[test]
fn multiplexed_calls_are_told_apart() {
    let exchanges = run(&whole(&MULTIPLEXED));
    let summary: Vec<(String, u16, Value)> = exchanges
        .iter()
        .map(|e| {
            assert_eq!(e.end, ExchangeEnd::Complete);
            assert_eq!(e.request.target, PATH);
            assert!(!e.request.http2_incomplete_headers);
            assert!(header(&e.request.headers, "host").is_some());
            let r = response(e);
            let id = if r.status == 200 && json(&e.request.body)["stream"] == true {
                Value::from(String::from_utf8_lossy(&r.body).contains("chatcmpl-mock-stream"))
            } else {
                json(&r.body)["id"].clone()
            };
            (
                json(&e.request.body)["model"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r.status,
                id,
            )
        })
        .collect();
    // In the order they completed: 1, then 5 (the 429), then 3 (the stream).
    assert_eq!(
        summary,
        vec![
            ("gpt-4o-mini".into(), 200, "chatcmpl-mock-nonstream".into()),
            ("rate-limited".into(), 429, Value::Null),
            ("gpt-4o-mini".into(), 200, true.into()),
        ]
    );
    assert!(String::from_utf8_lossy(&response(&exchanges[1]).body).contains("rate_limit_exceeded"));
}

fn every_single_split_gives_the_same_exchanges(f: Fixture) {
    let expected = run(&whole(&f));
    assert!(!expected.is_empty());
    for at in 0..=f.request.len() {
        let events = [
            data(Direction::Egress, &f.request[..at]),
            data(Direction::Egress, &f.request[at..]),
            data(Direction::Ingress, f.response),
        ];
        assert_eq!(run(&events), expected, "request split at {at}");
    }
    for at in 0..=f.response.len() {
        let events = [
            data(Direction::Egress, f.request),
            data(Direction::Ingress, &f.response[..at]),
            data(Direction::Ingress, &f.response[at..]),
        ];
        assert_eq!(run(&events), expected, "response split at {at}");
    }
}

#[test]
fn every_single_split_of_a_call_gives_the_same_exchange() {
    every_single_split_gives_the_same_exchanges(PLAIN);
}

#[test]
fn every_single_split_of_a_streamed_call_gives_the_same_exchange() {
    every_single_split_gives_the_same_exchanges(STREAM);
}

#[test]
fn every_single_split_of_multiplexed_calls_gives_the_same_exchanges() {
    every_single_split_gives_the_same_exchanges(MULTIPLEXED);
}

/// Cuts `bytes` at the given points into Data events.
pub(super) fn pieces(direction: Direction, bytes: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        out.push(data(direction, &bytes[last..cut]));
        last = cut;
    }
    out
}

/// Exchanges in a stable order, to compare runs whose streams completed in different orders.
pub(super) fn sorted(mut exchanges: Vec<HttpExchange>) -> Vec<HttpExchange> {
    exchanges.sort_by(|a, b| a.request.body.cmp(&b.request.body));
    exchanges
}

/// Where each frame of a recorded direction starts and ends (after the preface, if any).
pub(super) fn frame_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = if bytes.starts_with(PREFACE) {
        PREFACE.len()
    } else {
        0
    };
    let mut out = Vec::new();
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        out.push((at, at + 9 + len));
        at += 9 + len;
    }
    out
}

/// A valid HPACK-bearing connection's frames, for the fuzzing tests.
pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

pub(super) fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect();
    frame(0x4, 0, 0, &payload)
}

proptest! {
    /// Both directions cut anywhere and interleaved in any order that keeps each direction's
    /// own order: the same exchanges.
    #[test]
    fn any_chunking_and_interleaving_gives_the_same_exchanges(
        which in 0usize..3,
        request_cuts in proptest::collection::vec(any::<usize>(), 0..12),
        response_cuts in proptest::collection::vec(any::<usize>(), 0..12),
        order in proptest::collection::vec(any::<bool>(), 0..30),
    ) {
        let f = [PLAIN, STREAM, MULTIPLEXED][which];
        // The preface goes first, whole, as clients write it: the tracker knows HTTP/2 by it.
        let mut events = vec![data(Direction::Egress, &f.request[..PREFACE.len()])];
        let mut requests = pieces(Direction::Egress, &f.request[PREFACE.len()..], &request_cuts).into_iter().peekable();
        let mut responses = pieces(Direction::Ingress, f.response, &response_cuts).into_iter().peekable();
        let mut order = order.into_iter();
        while requests.peek().is_some() || responses.peek().is_some() {
            let egress = order.next().unwrap_or(true);
            let next = if egress { requests.next().or_else(|| responses.next()) } else { responses.next().or_else(|| requests.next()) };
            events.extend(next);
        }
        let (exchanges, health) = run_with(64 << 20, &events);
        prop_assert_eq!(sorted(exchanges), sorted(run(&whole(&f))));
        prop_assert_eq!(health.http_parse_errors.load(Ordering::Relaxed), 0);
    }

    /// Arbitrary bytes after a preface, or arbitrary frames with arbitrary payloads (HPACK
    /// included), never panic and never make an exchange with a head out of nothing.
    #[test]
    fn arbitrary_bytes_and_frames_never_panic(
        egress in proptest::collection::vec(any::<u8>(), 0..512),
        ingress in proptest::collection::vec(any::<u8>(), 0..512),
        frames in proptest::collection::vec((0u8..11, any::<u8>(), 0u32..8, proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..24),
    ) {
        let mut client = PREFACE.to_vec();
        client.extend(settings(&[]));
        let mut server = settings(&[(1, 65536)]);
        for (kind, flags, stream, payload, egress) in &frames {
            let f = frame(*kind, *flags, *stream, payload);
            if *egress { client.extend(f) } else { server.extend(f) }
        }
        let mut raw = PREFACE.to_vec();
        raw.extend(&egress);
        for events in [
            vec![data(Direction::Egress, &client), data(Direction::Ingress, &server)],
            vec![data(Direction::Egress, &raw), data(Direction::Ingress, &ingress)],
        ] {
            for e in run(&events) {
                prop_assert!(e.request.method.is_empty() || e.request.method.is_ascii());
            }
        }
    }

    /// The tracer joined the connection late, after `skip` bytes of one direction: nothing
    /// panics, and nothing is ever attributed to the wrong call.
    #[test]
    fn a_late_start_never_gives_a_wrong_exchange(which in 0usize..3, skip in any::<usize>(), skip_egress in any::<bool>()) {
        let f = [PLAIN, STREAM, MULTIPLEXED][which];
        let (request, response) = if skip_egress {
            (&f.request[skip % f.request.len()..], f.response)
        } else {
            (f.request, &f.response[skip % f.response.len()..])
        };
        let health = Arc::new(Health::default());
        let mut h2 = Http2Connection::new(CONN, 64 << 20, health);
        let mut out = Vec::new();
        h2.push(Direction::Egress, 7, request, &Peer::default(), &mut out);
        h2.push(Direction::Ingress, 7, response, &Peer::default(), &mut out);
        h2.close("shutdown", &Peer::default(), &mut out);
        let expected = run(&whole(&f));
        for e in &out {
            prop_assert!(e.request.target.is_empty() || e.request.target == PATH);
            prop_assert!(e.request.method.is_empty() || e.request.method == "POST");
            // A response is only ever the one its request got.
            if let (Some(r), false) = (&e.response, e.request.body.is_empty()) {
                let twin = expected.iter().find(|x| x.request.body == e.request.body);
                prop_assert_eq!(twin.and_then(|x| x.response.as_ref()).map(|x| x.status), Some(r.status));
            }
        }
    }

    /// Dropping any one stretch of the response direction never panics nor pairs wrongly.
    #[test]
    fn a_gap_anywhere_is_survived(which in 0usize..3, start in any::<usize>(), len in 1usize..200, egress_side in any::<bool>()) {
        let f = [PLAIN, STREAM, MULTIPLEXED][which];
        let bytes = if egress_side { f.request } else { f.response };
        let start = 24 + start % (bytes.len() - 24);
        let end = (start + len).min(bytes.len());
        let direction = if egress_side { Direction::Egress } else { Direction::Ingress };
        let mut events = Vec::new();
        if egress_side {
            events.extend([data(direction, &bytes[..start]), gap(direction, (end - start) as u64), data(direction, &bytes[end..]), data(Direction::Ingress, f.response)]);
        } else {
            events.extend([data(Direction::Egress, f.request), data(direction, &bytes[..start]), gap(direction, (end - start) as u64), data(direction, &bytes[end..])]);
        }
        let exchanges = run(&events);
        let expected = run(&whole(&f));
        // A loss inside connection frames (SETTINGS, WINDOW_UPDATE) touches no exchange.
        prop_assume!(exchanges != expected);
        let lost: u64 = exchanges.iter().map(|e| e.request.bytes_lost + e.response.as_ref().map_or(0, |r| r.bytes_lost)).sum();
        let visible = lost > 0
            || exchanges.len() < expected.len()
            || exchanges.iter().any(|e| e.end != ExchangeEnd::Complete || e.request.http2_incomplete_headers);
        prop_assert!(visible, "a loss is visible");
        for e in &exchanges {
            prop_assert!(e.request.target.is_empty() || e.request.target == PATH);
            if let Some(r) = &e.response {
                if let Some(twin) = expected.iter().find(|x| !e.request.body.is_empty() && x.request.body == e.request.body) {
                    prop_assert!(r.status == 0 || Some(r.status) == twin.response.as_ref().map(|x| x.status));
                }
            }
        }
    }
}

#[test]
fn a_gap_inside_a_data_frame_is_counted_and_the_call_still_completes() {
    // The request's DATA frame is its last frame; lose 20 of its bytes.
    let (start, end) = *frame_bounds(PLAIN.request).last().unwrap();
    assert_eq!(PLAIN.request[start + 3], 0, "a DATA frame");
    let cut = start + 9 + 30;
    let events = [
        data(Direction::Egress, &PLAIN.request[..cut]),
        gap(Direction::Egress, 20),
        data(Direction::Egress, &PLAIN.request[cut + 20..]),
        data(Direction::Ingress, PLAIN.response),
    ];
    let exchanges = run(&events);
    assert_eq!(exchanges.len(), 1);
    let e = &exchanges[0];
    assert_eq!(e.end, ExchangeEnd::Complete);
    assert_eq!(e.request.bytes_lost, 20);
    assert_eq!(e.request.body_len as usize, end - start - 9);
    assert_eq!(e.request.body.len(), end - start - 9 - 20);
    assert_eq!(json(&response(e).body)["id"], "chatcmpl-mock-nonstream");
}

#[test]
fn a_lost_header_block_never_yields_a_guessed_header() {
    // The first request's HEADERS frame loses bytes: what it added to the client's HPACK table
    // is unknown, and the next requests refer to it.
    let frames = frame_bounds(MULTIPLEXED.request);
    let (start, _) = frames
        .iter()
        .copied()
        .find(|(s, _)| MULTIPLEXED.request[s + 3] == 0x1)
        .unwrap();
    let cut = start + 9 + 10;
    let events = [
        data(Direction::Egress, &MULTIPLEXED.request[..cut]),
        gap(Direction::Egress, 5),
        data(Direction::Egress, &MULTIPLEXED.request[cut + 5..]),
        data(Direction::Ingress, MULTIPLEXED.response),
    ];
    let exchanges = run(&events);
    assert_eq!(exchanges.len(), 3);
    let expected = run(&whole(&MULTIPLEXED));
    for e in &exchanges {
        assert!(e.request.http2_incomplete_headers);
        assert_eq!(e.end, ExchangeEnd::Complete);
        // `:method: POST` is in the static table: it survives. The path was a dynamic-table
        // entry of the lost block: it is left out, never taken from another entry.
        assert!(e.request.method.is_empty() || e.request.method == "POST");
        assert!(e.request.target.is_empty() || e.request.target == PATH);
        for (name, value) in &e.request.headers {
            let twin = expected
                .iter()
                .find(|x| x.request.body == e.request.body)
                .unwrap();
            assert_eq!(header(&twin.request.headers, name), Some(value.as_str()));
        }
        // The other direction's table is intact.
        let twin = expected
            .iter()
            .find(|x| x.request.body == e.request.body)
            .unwrap();
        assert_eq!(e.response, twin.response);
    }
    assert!(exchanges.iter().any(|e| e.request.target.is_empty()));
    assert_eq!(exchanges[0].request.bytes_lost, 5);
}

#[test]
fn a_gap_across_frames_cuts_that_direction_and_keeps_the_other() {
    // Lose the request direction from the middle of the first DATA frame to past the next
    // HEADERS: where frames start is unknown from there on.
    let frames = frame_bounds(MULTIPLEXED.request);
    let data_frame = frames
        .iter()
        .copied()
        .find(|(s, _)| MULTIPLEXED.request[*s + 3] == 0x0)
        .unwrap();
    let cut = data_frame.0 + 20;
    let events = [
        data(Direction::Egress, &MULTIPLEXED.request[..cut]),
        gap(Direction::Egress, (data_frame.1 - cut + 20) as u64),
        data(Direction::Egress, &MULTIPLEXED.request[data_frame.1 + 20..]),
        data(Direction::Ingress, MULTIPLEXED.response),
    ];
    let (exchanges, health) = run_with(64 << 20, &events);
    assert!(health.http_parse_errors.load(Ordering::Relaxed) >= 1);
    // Stream 1's request was cut, but its response came whole: complete, with the loss. The
    // responses to the requests never seen are reported too, with nothing invented for them.
    assert_eq!(exchanges.len(), 3);
    assert!(exchanges[0].request.bytes_lost > 0);
    assert_eq!(exchanges[0].request.target, PATH);
    assert_eq!(
        json(&response(&exchanges[0]).body)["id"],
        "chatcmpl-mock-nonstream"
    );
    for e in &exchanges[1..] {
        assert_eq!(e.request.method, "");
        assert!(e.request.http2_incomplete_headers);
        assert!(e.response.is_some());
    }
}

#[test]
fn a_stream_cut_short_at_close_is_emitted_with_what_arrived() {
    // The SSE terminator arrived, the empty END_STREAM frame did not.
    let (last, _) = *frame_bounds(STREAM.response).last().unwrap();
    let events = [
        data(Direction::Egress, STREAM.request),
        data(Direction::Ingress, &STREAM.response[..last]),
        StreamEvent::Closed {
            conn: CONN,
            timestamp_ns: 9,
        },
    ];
    let exchanges = run(&events);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(
        exchanges[0].end,
        ExchangeEnd::Interrupted("connection_closed")
    );
    let r = response(&exchanges[0]);
    assert!(!r.complete);
    assert!(String::from_utf8_lossy(&r.body).ends_with("data: [DONE]\n\n"));

    // The same at process exit.
    let events = [
        data(Direction::Egress, STREAM.request),
        data(Direction::Ingress, &STREAM.response[..last]),
        StreamEvent::ProcessExit {
            pid: 1,
            timestamp_ns: 9,
        },
    ];
    assert_eq!(
        run(&events)[0].end,
        ExchangeEnd::Interrupted("process_exit")
    );
}

#[test]
fn bodies_keep_the_configured_maximum_and_count_the_rest() {
    let (exchanges, _) = run_with(10, &whole(&STREAM));
    let e = &exchanges[0];
    assert_eq!(e.request.body.len(), 10);
    assert!(e.request.body_len > 10);
    let r = response(e);
    assert_eq!(r.body.len(), 10);
    assert_eq!(
        r.body_len,
        run(&whole(&STREAM))[0].response.as_ref().unwrap().body_len
    );
}

#[test]
fn the_server_side_of_http2_is_not_reported() {
    let (exchanges, health) = run_with(
        1 << 20,
        &[
            data(Direction::Ingress, PLAIN.request),
            data(Direction::Egress, PLAIN.response),
        ],
    );
    assert!(exchanges.is_empty());
    assert!(health.unparsed_bytes.load(Ordering::Relaxed) > 0);
}

/// A client and a server speaking HTTP/2 frame by frame, with real HPACK encoders.
pub(super) struct Wire {
    pub(super) client: loona_hpack::Encoder<'static>,
    pub(super) server: loona_hpack::Encoder<'static>,
    pub(super) events: Vec<StreamEvent>,
}

impl Wire {
    pub(super) fn new() -> Self {
        let mut client = PREFACE.to_vec();
        client.extend(settings(&[(0x2, 0)]));
        Wire {
            client: loona_hpack::Encoder::new(),
            server: loona_hpack::Encoder::new(),
            events: vec![
                data(Direction::Egress, &client),
                data(Direction::Ingress, &settings(&[(0x3, 100)])),
            ],
        }
    }

    pub(super) fn block(&mut self, direction: Direction, fields: &[(&str, &str)]) -> Vec<u8> {
        let encoder = match direction {
            Direction::Egress => &mut self.client,
            Direction::Ingress => &mut self.server,
        };
        encoder.encode(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    pub(super) fn send(&mut self, direction: Direction, bytes: Vec<u8>) {
        self.events.push(data(direction, &bytes));
    }

    pub(super) fn request(&mut self, stream: u32, path: &str, end_stream: bool) {
        let block = self.block(
            Direction::Egress,
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "api.example.com"),
                (":path", path),
                ("content-type", "application/json"),
                // Not in the static table: indexed in the dynamic one, referred to afterwards.
                ("x-client", "agent"),
            ],
        );
        let flags = 0x4 | if end_stream { 0x1 } else { 0 };
        self.send(Direction::Egress, frame(0x1, flags, stream, &block));
    }

    pub(super) fn respond(&mut self, stream: u32, status: &str, body: &[u8]) {
        let block = self.block(
            Direction::Ingress,
            &[(":status", status), ("content-type", "application/json")],
        );
        self.send(Direction::Ingress, frame(0x1, 0x4, stream, &block));
        self.send(Direction::Ingress, frame(0x0, 0x1, stream, body));
    }

    pub(super) fn run(&self) -> Vec<HttpExchange> {
        run(&self.events)
    }
}

#[test]
fn continuation_padding_and_priority_are_read_through() {
    let mut w = Wire::new();
    let block = w.block(
        Direction::Egress,
        &[
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "api.example.com"),
            (":path", "/v1/chat/completions"),
            ("x-long", &"v".repeat(300)),
        ],
    );
    // HEADERS, padded and with a priority, holding the first 50 bytes; two CONTINUATIONs.
    let mut first = vec![3u8];
    first.extend([0x80, 0, 0, 1, 200]);
    first.extend(&block[..50]);
    first.extend([0, 0, 0]);
    w.send(Direction::Egress, frame(0x1, 0x8 | 0x20, 1, &first));
    w.send(Direction::Egress, frame(0x9, 0, 1, &block[50..100]));
    w.send(Direction::Egress, frame(0x9, 0x4, 1, &block[100..]));
    // A padded DATA frame, then an empty one that ends the stream.
    let mut body = vec![4u8];
    body.extend(b"{\"a\":1}");
    body.extend([0; 4]);
    w.send(Direction::Egress, frame(0x0, 0x8, 1, &body));
    w.send(Direction::Egress, frame(0x0, 0x1, 1, &[]));
    // Frames that change nothing: PING, WINDOW_UPDATE, PRIORITY, an unknown type.
    w.send(Direction::Ingress, frame(0x6, 0, 0, &[0; 8]));
    w.send(Direction::Ingress, frame(0x8, 0, 1, &[0, 0, 1, 0]));
    w.send(Direction::Egress, frame(0x2, 0, 1, &[0, 0, 0, 0, 9]));
    w.send(Direction::Egress, frame(0xfa, 0, 0, b"whatever"));
    w.respond(1, "200", b"{\"id\":\"x\"}");
    let exchanges = w.run();
    assert_eq!(exchanges.len(), 1);
    let e = &exchanges[0];
    assert_eq!(e.end, ExchangeEnd::Complete);
    assert_eq!(e.request.target, "/v1/chat/completions");
    assert_eq!(header(&e.request.headers, "host"), Some("api.example.com"));
    assert_eq!(
        header(&e.request.headers, "x-long").map(str::len),
        Some(300)
    );
    assert_eq!(&e.request.body[..], b"{\"a\":1}");
    assert_eq!(&response(e).body[..], b"{\"id\":\"x\"}");
}

#[test]
fn interim_responses_and_trailers_are_not_the_head() {
    let mut w = Wire::new();
    w.request(1, "/a", true);
    let early = w.block(Direction::Ingress, &[(":status", "103"), ("link", "</x>")]);
    w.send(Direction::Ingress, frame(0x1, 0x4, 1, &early));
    let head = w.block(Direction::Ingress, &[(":status", "200")]);
    w.send(Direction::Ingress, frame(0x1, 0x4, 1, &head));
    w.send(Direction::Ingress, frame(0x0, 0, 1, b"body"));
    let trailers = w.block(Direction::Ingress, &[("grpc-status", "0")]);
    w.send(Direction::Ingress, frame(0x1, 0x4 | 0x1, 1, &trailers));
    let exchanges = w.run();
    assert_eq!(exchanges.len(), 1);
    let r = response(&exchanges[0]);
    assert_eq!(r.status, 200);
    assert!(r.headers.is_empty());
    assert_eq!(&r.body[..], b"body");
    assert!(r.complete);
}

#[test]
fn resets_goaway_and_close_end_streams_as_interrupted() {
    let mut w = Wire::new();
    w.request(1, "/reset", true);
    w.send(Direction::Ingress, frame(0x3, 0, 1, &[0, 0, 0, 8]));
    w.request(3, "/answered", true);
    w.request(5, "/refused", true);
    w.request(7, "/pending", true);
    // The server processes up to stream 3 and answers it, then 7 is dropped at close.
    w.send(
        Direction::Ingress,
        frame(0x7, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]),
    );
    w.respond(3, "200", b"ok");
    // A late frame for a finished stream opens nothing.
    w.send(Direction::Ingress, frame(0x0, 0x1, 1, b"late"));
    let exchanges = w.run();
    let ends: Vec<(&str, ExchangeEnd)> = exchanges
        .iter()
        .map(|e| (e.request.target.as_str(), e.end))
        .collect();
    assert_eq!(
        ends,
        vec![
            ("/reset", ExchangeEnd::Interrupted("stream_reset")),
            ("/refused", ExchangeEnd::Interrupted("goaway")),
            ("/pending", ExchangeEnd::Interrupted("goaway")),
            ("/answered", ExchangeEnd::Complete),
        ]
    );
    assert!(exchanges
        .iter()
        .all(|e| header(&e.request.headers, "host") == Some("api.example.com")));
}

#[test]
fn a_reset_after_a_complete_response_keeps_it_complete() {
    let mut w = Wire::new();
    // The server answers before the request body ends, then the client resets its upload.
    w.request(1, "/early", false);
    w.respond(1, "413", b"too large");
    w.send(Direction::Egress, frame(0x3, 0, 1, &[0, 0, 0, 8]));
    let exchanges = w.run();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].end, ExchangeEnd::Complete);
    assert_eq!(response(&exchanges[0]).status, 413);
}

#[test]
fn header_table_size_settings_and_updates_are_followed() {
    let mut w = Wire::new();
    // The server lets the client's encoder grow its table to 8 KiB, and it does.
    w.send(Direction::Ingress, settings(&[(0x1, 8192)]));
    w.client.set_max_table_size(8192);
    let mut block = vec![0x3f, 0xe1, 0x3f]; // size update to 8192
    block.extend(w.block(
        Direction::Egress,
        &[
            (":method", "POST"),
            (":path", "/big"),
            ("x-a", &"a".repeat(5000)),
        ],
    ));
    w.send(Direction::Egress, frame(0x1, 0x5, 1, &block));
    // The second request refers to the 5000-byte entry, which only fits a table over 4 KiB.
    let block = w.block(
        Direction::Egress,
        &[
            (":method", "POST"),
            (":path", "/big"),
            ("x-a", &"a".repeat(5000)),
        ],
    );
    assert!(block.len() < 10, "indexed from the dynamic table");
    w.send(Direction::Egress, frame(0x1, 0x5, 3, &block));
    // A size update past anything allowed cannot be followed: decoded without the table.
    let mut block = vec![0x3f, 0xe1, 0xff, 0x7f]; // 2 MiB and more
    block.extend(w.block(
        Direction::Egress,
        &[
            (":method", "GET"),
            (":path", "/big"),
            ("x-a", &"a".repeat(5000)),
        ],
    ));
    w.send(Direction::Egress, frame(0x1, 0x5, 5, &block));
    for id in [1, 3, 5] {
        w.respond(id, "200", b"ok");
    }
    let exchanges = w.run();
    assert_eq!(exchanges.len(), 3);
    for e in &exchanges[..2] {
        assert!(!e.request.http2_incomplete_headers);
        assert_eq!(e.request.target, "/big");
        assert_eq!(header(&e.request.headers, "x-a").map(str::len), Some(5000));
    }
    let third = &exchanges[2].request;
    assert!(third.http2_incomplete_headers);
    // Static-table and literal fields decode; `x-a` was a dynamic-table reference: left out
    // rather than guessed.
    assert_eq!(
        (third.method.as_str(), third.target.as_str()),
        ("GET", "/big")
    );
    assert_eq!(header(&third.headers, "x-a"), None);
}

#[test]
fn the_table_is_known_again_after_a_size_update_to_zero() {
    let mut w = Wire::new();
    w.request(1, "/one", true);
    // A malformed block (an index past both tables) loses the client's table.
    w.send(Direction::Egress, frame(0x1, 0x5, 3, &[0xff, 0x7f]));
    // The encoder empties its table: from here on everything decodes again.
    w.client.set_max_table_size(0);
    w.client.set_max_table_size(4096);
    let mut block = vec![0x20, 0x3f, 0xe1, 0x1f];
    block.extend(w.block(Direction::Egress, &[(":method", "POST"), (":path", "/two")]));
    w.send(Direction::Egress, frame(0x1, 0x5, 5, &block));
    for id in [1, 3, 5] {
        w.respond(id, "200", b"ok");
    }
    let exchanges = w.run();
    let targets: Vec<(&str, bool)> = exchanges
        .iter()
        .map(|e| {
            (
                e.request.target.as_str(),
                e.request.http2_incomplete_headers,
            )
        })
        .collect();
    assert_eq!(targets, vec![("/one", false), ("", true), ("/two", false)]);
}

#[test]
fn idle_sweeps_end_streams_but_keep_the_connection() {
    let health = Arc::new(Health::default());
    let mut tracker = HttpTracker::new(1 << 20, health);
    let mut out = Vec::new();
    let mut w = Wire::new();
    w.request(1, "/slow", true);
    for e in &w.events {
        tracker.push(e, &mut out);
    }
    tracker.sweep_idle(1_000_000, 10, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end, ExchangeEnd::Interrupted("idle_timeout"));
    // The next call on the connection refers to the table the first one built.
    w.events.clear();
    w.request(3, "/slow", true);
    w.respond(3, "200", b"ok");
    for e in &w.events {
        tracker.push(e, &mut out);
    }
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].request.target, "/slow");
    assert!(!out[1].request.http2_incomplete_headers);
    assert_eq!(out[1].end, ExchangeEnd::Complete);
}

#[test]
fn the_peer_is_kept_on_the_exchanges() {
    let peer = Peer {
        address: Some("127.0.0.1:443".parse().unwrap()),
        server_name: Some("api.example.com".into()),
    };
    let mut events = vec![StreamEvent::Peer {
        conn: CONN,
        peer: peer.clone(),
    }];
    events.extend(whole(&PLAIN));
    let exchanges = run(&events);
    assert_eq!(exchanges[0].peer, peer);
}
