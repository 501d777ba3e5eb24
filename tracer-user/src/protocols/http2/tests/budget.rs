//! Hostile header blocks: an HPACK bomb (one large dynamic-table entry referenced thousands of
//! times) decodes to at most one head's budget, is marked and counted, and leaves the dynamic
//! table in step for the blocks after it.

use std::sync::atomic::Ordering;

use super::exchanges::{frame, run_with, Wire, PATH};
use crate::{
    alloc_probe::peak_during,
    model::{Direction, MAX_HEADER_FIELDS, MAX_HEAD_BYTES},
    protocols::http2::hpack::Hpack,
};

const ENTRY_VALUE: usize = 4000;
const REFERENCES: usize = 4000;

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1) whose first byte carries `flags`.
fn integer(flags: u8, n: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block that adds one 4000-byte entry to the dynamic table (it fits the default
/// 4096-byte table) and then refers to it 4000 times: 8 KB on the wire, 16 MB decoded. When
/// `status` is set, a `:status` from the static table comes first.
fn bomb(status: bool) -> Vec<u8> {
    let mut block = Vec::new();
    if status {
        block.push(0x88); // :status 200
    }
    // Literal with incremental indexing, new name.
    block.push(0x40);
    integer(0, 7, "x-bomb".len(), &mut block);
    block.extend_from_slice(b"x-bomb");
    integer(0, 7, ENTRY_VALUE, &mut block);
    block.extend(std::iter::repeat_n(b'a', ENTRY_VALUE));
    // Indexed: dynamic entry 62, the newest.
    block.extend(std::iter::repeat_n(0x80 | 62, REFERENCES));
    block
}

fn assert_within_budget(fields: &[(String, String)]) {
    assert!(fields.len() <= MAX_HEADER_FIELDS, "{} fields", fields.len());
    let bytes: usize = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(bytes <= MAX_HEAD_BYTES, "{bytes} bytes");
}

#[test]
fn an_hpack_bomb_decodes_to_one_heads_budget_with_no_large_allocation() {
    for lost in [false, true] {
        let mut hpack = Hpack::new();
        if lost {
            // Decoded without the loona decoder: what is added since the loss is known.
            hpack.lose();
        }
        let block = bomb(false);
        let (decoded, peak) = peak_during(|| hpack.decode(&block));
        assert!(decoded.capped, "lost {lost}");
        assert!(decoded.missing_fields());
        assert!(
            !decoded.incomplete,
            "every field was decodable; some were left out"
        );
        assert_within_budget(&decoded.fields);
        // The fields kept are whole ones: 16 of 4006 bytes fit 64 KiB.
        assert_eq!(decoded.fields.len(), MAX_HEAD_BYTES / (6 + ENTRY_VALUE));
        assert!(
            peak < 256 * 1024,
            "lost {lost}: {peak} bytes allocated at once"
        );
        // The whole block was walked: the next one's reference to the entry still decodes.
        let next = hpack.decode(&[0x80 | 62]);
        assert!(!next.capped && !next.incomplete, "lost {lost}");
        assert_eq!(next.fields.len(), 1);
        assert_eq!(next.fields[0].1.len(), ENTRY_VALUE);
    }
}

#[test]
fn more_than_128_small_fields_are_capped_too() {
    let mut hpack = Hpack::new();
    // :method GET, 200 times.
    let decoded = hpack.decode(&[0x82; 200]);
    assert!(decoded.capped);
    assert_eq!(decoded.fields.len(), MAX_HEADER_FIELDS);
    // At the budget exactly: not capped.
    let decoded = hpack.decode(&[0x82; MAX_HEADER_FIELDS]);
    assert!(!decoded.capped);
    assert_eq!(decoded.fields.len(), MAX_HEADER_FIELDS);
}

#[test]
fn a_response_with_an_hpack_bomb_is_marked_counted_and_the_next_one_is_whole() {
    let mut w = Wire::new();
    w.request(1, PATH, true);
    w.send(
        Direction::Ingress,
        frame(0x1, 0x4, 1, &bomb(true)), // HEADERS, END_HEADERS
    );
    w.send(Direction::Ingress, frame(0x0, 0x1, 1, b"{\"ok\":1}"));
    w.request(3, PATH, true);
    // The next response refers to the bomb's entry once: decoded whole.
    w.send(Direction::Ingress, frame(0x1, 0x4, 3, &[0x88, 0x80 | 62]));
    w.send(Direction::Ingress, frame(0x0, 0x1, 3, b"{\"ok\":2}"));
    let (exchanges, health) = run_with(1 << 20, &w.events);
    assert_eq!(exchanges.len(), 2);
    let bombed = exchanges[0].response.as_ref().unwrap();
    assert_eq!(bombed.status, 200, "the fields within the budget are kept");
    assert!(
        bombed.http2_incomplete_headers,
        "the rest is marked missing"
    );
    assert!(bombed.headers.len() < MAX_HEADER_FIELDS);
    assert_eq!(&bombed.body[..], b"{\"ok\":1}");
    assert!(!exchanges[0].request.http2_incomplete_headers);
    let next = exchanges[1].response.as_ref().unwrap();
    assert!(!next.http2_incomplete_headers);
    assert_eq!(
        next.headers,
        vec![("x-bomb".to_string(), "a".repeat(ENTRY_VALUE))]
    );
    assert_eq!(health.http2_header_blocks_capped.load(Ordering::Relaxed), 1);
    assert_eq!(health.http_parse_errors.load(Ordering::Relaxed), 0);
}

/// Issue 17 item 11: frames of a stream beyond the most one connection may hold open are
/// counted, not silently passed over.
#[test]
fn frames_of_streams_past_the_open_bound_are_counted() {
    let mut w = Wire::new();
    let open = crate::protocols::http2::connection::MAX_OPEN_STREAMS as u32;
    for n in 0..=open {
        w.request(2 * n + 1, PATH, false);
    }
    let (_, health) = run_with(1 << 20, &w.events);
    assert_eq!(
        health
            .http2_dropped_too_many_streams
            .load(Ordering::Relaxed),
        1
    );
}

/// A DATA frame for a stream whose exchange already ended is counted.
#[test]
fn frames_of_a_stream_that_ended_are_counted() {
    let mut w = Wire::new();
    w.request(1, PATH, true);
    w.respond(1, "200", b"{}");
    w.send(Direction::Ingress, frame(0x0, 0x1, 1, b"late"));
    let (exchanges, health) = run_with(1 << 20, &w.events);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(health.http2_dropped_stream_ended.load(Ordering::Relaxed), 1);
}

/// A connection joined late whose first frames opened a stream, then shows the traced process
/// answering: the stream in progress is dropped, and counted.
#[test]
fn streams_dropped_when_a_joined_connection_turns_out_server_side_are_counted() {
    let mut w = Wire::new();
    let join = w.events.len();
    // Two DATA frames: one alone is no proof of HTTP/2 (see frame_chain).
    let mut frames = frame(0x0, 0x0, 1, b"{\"q\":");
    frames.extend(frame(0x0, 0x0, 1, b"1}"));
    w.send(Direction::Ingress, frames);
    let block = w.block(Direction::Egress, &[(":status", "200")]);
    w.send(Direction::Egress, frame(0x1, 0x4, 1, &block));
    let (exchanges, health) = run_with(1 << 20, &w.events[join..]);
    assert!(exchanges.is_empty(), "{exchanges:#?}");
    assert_eq!(health.http2_dropped_server_side.load(Ordering::Relaxed), 1);
}

/// Issue 17 item 7: HTTP/2 response bodies draw from the bodies' memory budget; what it cannot
/// hold is counted, and the stream's bytes are given back when its exchange is emitted.
#[test]
fn stream_bodies_draw_from_the_memory_budget() {
    use crate::protocols::{memory::BodyBudget, HttpTracker};
    let mut w = Wire::new();
    w.request(1, PATH, true);
    w.request(3, PATH, true);
    let block = w.block(Direction::Ingress, &[(":status", "200")]);
    w.send(Direction::Ingress, frame(0x1, 0x4, 1, &block));
    let block = w.block(Direction::Ingress, &[(":status", "200")]);
    w.send(Direction::Ingress, frame(0x1, 0x4, 3, &block));
    w.send(Direction::Ingress, frame(0x0, 0x0, 1, &[b'x'; 80]));
    w.send(Direction::Ingress, frame(0x0, 0x0, 3, &[b'y'; 80]));
    let health = std::sync::Arc::new(crate::telemetry::health::Health::default());
    let budget = BodyBudget::new(100);
    let mut tracker = HttpTracker::new(1 << 20, health.clone()).with_budget(budget.clone());
    let mut out = Vec::new();
    for event in &w.events {
        tracker.push(event, &mut out);
    }
    assert_eq!(budget.held(), 100);
    assert_eq!(health.body_bytes_over_budget.load(Ordering::Relaxed), 60);
    tracker.push(
        &super::exchanges::data(Direction::Ingress, &frame(0x0, 0x1, 1, b"")),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(budget.held(), 20);
    tracker.close_all(&mut out);
    assert_eq!(budget.held(), 0);
    let second = out[1].response.as_ref().unwrap();
    assert_eq!((second.body.len(), second.body_len), (20, 80));
    assert_eq!(second.body_cut, Some(crate::model::BodyCut::MemoryBudget));
    assert_eq!(out[0].response.as_ref().and_then(|r| r.body_cut), None);
}

/// Issue 17 item 7: a hundred HTTP/2 connections, each allowing 1 MiB HPACK tables both ways and
/// waiting for an answer, hold no more than the connection-state budget together. The least
/// recently active are ended first, each call they carried reported interrupted
/// (`memory_budget`) and each eviction counted; the newest connection still gives its exchange.
#[test]
fn many_connections_state_stays_within_its_budget_the_oldest_ended_first() {
    use super::exchanges::settings;
    use crate::{
        model::{ConnKey, ExchangeEnd, Source, StreamEvent},
        protocols::{http2::PREFACE, HttpTracker},
        telemetry::health::Health,
    };

    const LIMIT: u64 = 16 << 20;
    const CONNECTIONS: u64 = 100;
    let health = std::sync::Arc::new(Health::default());
    let mut tracker = HttpTracker::new(1 << 20, health.clone()).with_state_limit(LIMIT);
    let mut out = Vec::new();
    let conn_of = |i: u64| ConnKey {
        pid: 1,
        source: Source::Tls,
        conn_id: i,
    };
    // One connection's events, as its own connection, later than every earlier one's.
    let as_conn = |i: u64, events: Vec<StreamEvent>| -> Vec<StreamEvent> {
        events
            .into_iter()
            .enumerate()
            .map(|(k, e)| match e {
                StreamEvent::Data {
                    direction, bytes, ..
                } => StreamEvent::Data {
                    conn: conn_of(i),
                    direction,
                    timestamp_ns: 1_000 * (i + 1) + k as u64,
                    bytes,
                },
                other => other,
            })
            .collect()
    };
    let mut newest = None;
    for i in 0..CONNECTIONS {
        let mut w = Wire::new();
        let mut preface = PREFACE.to_vec();
        preface.extend(settings(&[(0x1, 1 << 20)]));
        w.events = vec![];
        w.send(Direction::Egress, preface);
        w.send(Direction::Ingress, settings(&[(0x1, 1 << 20)]));
        w.request(1, PATH, true);
        for event in as_conn(i, std::mem::take(&mut w.events)) {
            tracker.push(&event, &mut out);
            assert!(
                tracker.state_bytes_held() <= LIMIT,
                "connection {i}: {} bytes held",
                tracker.state_bytes_held()
            );
        }
        newest = Some(w);
    }
    let evicted = health
        .connections_evicted_memory_budget
        .load(Ordering::Relaxed);
    // Each holds its two 1 MiB tables: at most 8 fit 16 MiB.
    assert!(tracker.connections() <= 8, "{}", tracker.connections());
    assert_eq!(evicted, CONNECTIONS - tracker.connections() as u64);
    assert_eq!(
        out.len() as u64,
        evicted,
        "one interrupted call per evicted connection"
    );
    assert!(out
        .iter()
        .all(|e| e.end == ExchangeEnd::Interrupted("memory_budget")));
    // The oldest went first: the survivors are the newest connections.
    let survivors = CONNECTIONS - tracker.connections() as u64;
    assert!(out.iter().all(|e| e.conn.conn_id < survivors));
    // The newest connection's call completes.
    let mut w = newest.expect("a connection");
    w.respond(1, "200", b"{}");
    out.clear();
    for event in as_conn(CONNECTIONS - 1, std::mem::take(&mut w.events)) {
        tracker.push(&event, &mut out);
    }
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].end, ExchangeEnd::Complete);
    assert_eq!(out[0].request.target, PATH);
    // Everything closed: nothing is charged any more.
    tracker.close_all(&mut out);
    assert_eq!(tracker.state_bytes_held(), 0);
}
