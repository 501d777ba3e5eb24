//! Issue 17 item 11: every byte range, message and connection state the HTTP/1 and JSON-RPC
//! trackers drop is counted under its reason. Each test feeds the input that makes one drop
//! and checks that its counter (and only the expected ones) moved.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use bytes::Bytes;

use super::{
    jsonrpc::{JsonRpcTracker, RpcExchange},
    HttpTracker,
};
use crate::{
    model::{ConnKey, Direction, ExchangeEnd, HttpExchange, Peer, Source, StreamEvent},
    telemetry::health::Health,
};

const HTTP: ConnKey = ConnKey {
    pid: 1,
    source: Source::Tls,
    conn_id: 2,
};
const STDIO: ConnKey = ConnKey {
    pid: 9,
    source: Source::Stdio,
    conn_id: 0,
};

fn data(conn: ConnKey, direction: Direction, bytes: &[u8]) -> StreamEvent {
    StreamEvent::Data {
        conn,
        direction,
        timestamp_ns: 7,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

fn gap(conn: ConnKey, direction: Direction, len: u64) -> StreamEvent {
    StreamEvent::Gap {
        conn,
        direction,
        timestamp_ns: 8,
        len,
    }
}

fn closed(conn: ConnKey) -> StreamEvent {
    StreamEvent::Closed {
        conn,
        timestamp_ns: 9,
    }
}

fn http(events: &[StreamEvent]) -> (Vec<HttpExchange>, Arc<Health>) {
    let health = Arc::new(Health::default());
    let mut tracker = HttpTracker::new(1 << 20, health.clone());
    let mut out = Vec::new();
    for e in events {
        tracker.push(e, &mut out);
    }
    (out, health)
}

fn rpc(events: &[StreamEvent]) -> (Vec<RpcExchange>, Arc<Health>) {
    let health = Arc::new(Health::default());
    let mut tracker = JsonRpcTracker::new(1 << 20, health.clone());
    let mut out = Vec::new();
    for e in events {
        tracker.push(e, &mut out);
    }
    (out, health)
}

const EMPTY_POST: &[u8] = b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[test]
fn bytes_passed_over_after_a_bad_head_are_counted() {
    use Direction::Egress;
    let bad = b"NOT A HEAD\r\n\r\n";
    let mut second = bad.to_vec();
    second.extend_from_slice(EMPTY_POST);
    let (_, health) = http(&[data(HTTP, Egress, EMPTY_POST), data(HTTP, Egress, &second)]);
    assert_eq!(health.http_parse_errors.load(Relaxed), 1);
    assert_eq!(health.http1_dropped_resync.load(Relaxed), bad.len() as u64);
}

#[test]
fn a_head_cut_by_a_gap_is_counted() {
    use Direction::Egress;
    let head = b"POST / HTTP/1.1\r\ncontent-len";
    let (_, health) = http(&[
        data(HTTP, Egress, EMPTY_POST),
        data(HTTP, Egress, head),
        gap(HTTP, Egress, 10),
    ]);
    assert_eq!(health.http1_dropped_gap.load(Relaxed), head.len() as u64);
    assert_eq!(health.stream_gap_bytes.load(Relaxed), 10);
}

#[test]
fn bytes_buffered_after_a_request_cut_short_by_its_answer_are_counted() {
    use Direction::{Egress, Ingress};
    // A chunked body whose next size line ("3") is in progress when the answer comes.
    let request = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3";
    let (out, health) = http(&[data(HTTP, Egress, request), data(HTTP, Ingress, OK)]);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].request.body[..], b"hello");
    assert_eq!(health.http1_dropped_cut_short.load(Relaxed), 1);
}

#[test]
fn a_request_unfinished_at_close_is_counted() {
    use Direction::Egress;
    let request = b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc";
    let (out, health) = http(&[data(HTTP, Egress, request), closed(HTTP)]);
    assert!(out.is_empty());
    assert_eq!(health.http1_dropped_unfinished_request.load(Relaxed), 1);
}

#[test]
fn responses_without_a_request_are_counted_evicted_and_at_close() {
    use Direction::Ingress;
    // Six answers to requests never seen: four are kept for a request that may still come,
    // the two oldest are let go; the four go at close.
    let mut events: Vec<StreamEvent> = (0..6).map(|_| data(HTTP, Ingress, OK)).collect();
    events.push(closed(HTTP));
    let (out, health) = http(&events);
    assert!(out.is_empty());
    assert_eq!(health.http1_dropped_unanswered_response.load(Relaxed), 6);
}

#[test]
fn a_response_still_arriving_at_close_without_its_request_is_counted() {
    use Direction::Ingress;
    let (out, health) = http(&[
        data(
            HTTP,
            Ingress,
            b"HTTP/1.1 200 OK\r\n\r\nno length: until close",
        ),
        closed(HTTP),
    ]);
    assert!(out.is_empty());
    assert_eq!(health.http1_dropped_unanswered_response.load(Relaxed), 1);
}

#[test]
fn bytes_too_few_to_tell_the_protocol_are_counted_at_close() {
    let (_, health) = http(&[data(HTTP, Direction::Egress, b"PO"), closed(HTTP)]);
    assert_eq!(health.unparsed_bytes.load(Relaxed), 2);
}

#[test]
fn peers_of_silent_connections_past_the_bound_are_counted() {
    let peers: Vec<StreamEvent> = (0..65_537)
        .map(|conn_id| StreamEvent::Peer {
            conn: ConnKey { conn_id, ..HTTP },
            peer: Peer::default(),
        })
        .collect();
    let (_, health) = http(&peers);
    assert_eq!(health.connection_peers_evicted.load(Relaxed), 65_536);
}

#[test]
fn a_normal_exchange_drops_nothing() {
    use Direction::{Egress, Ingress};
    let (out, health) = http(&[
        data(HTTP, Egress, EMPTY_POST),
        data(HTTP, Ingress, OK),
        closed(HTTP),
    ]);
    assert_eq!(out.len(), 1);
    for (name, value) in health.snapshot() {
        if name.contains("dropped") || name.contains("evicted") || name == "unparsed_bytes" {
            assert_eq!(value, 0, "{name}");
        }
    }
}

fn line(json: &str) -> String {
    format!("{json}\n")
}

#[test]
fn stdio_lines_cut_by_a_gap_are_counted_with_the_gap() {
    use Direction::Egress;
    let head = r#"{"jsonrpc":"2.0","id":1,"meth"#;
    let tail = r#"od":"x"}"#;
    let whole = line(r#"{"jsonrpc":"2.0","id":2,"method":"y"}"#);
    let (_, health) = rpc(&[
        data(
            STDIO,
            Egress,
            line(r#"{"jsonrpc":"2.0","method":"a"}"#).as_bytes(),
        ),
        data(STDIO, Egress, head.as_bytes()),
        gap(STDIO, Egress, 5),
        data(STDIO, Egress, format!("{tail}\n{whole}").as_bytes()),
    ]);
    assert_eq!(health.stream_gap_bytes.load(Relaxed), 5);
    assert_eq!(
        health.jsonrpc_dropped_gap_bytes.load(Relaxed),
        (head.len() + tail.len()) as u64
    );
    assert_eq!(health.jsonrpc_messages.load(Relaxed), 2);
    assert_eq!(health.jsonrpc_parse_errors.load(Relaxed), 0);
}

#[test]
fn requests_past_the_pending_bound_are_counted() {
    let events: Vec<StreamEvent> = (0..4097)
        .map(|id| {
            let request = line(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#));
            data(STDIO, Direction::Egress, request.as_bytes())
        })
        .collect();
    let (_, health) = rpc(&events);
    assert_eq!(health.jsonrpc_dropped_pending_full.load(Relaxed), 1);
    assert_eq!(health.jsonrpc_dropped_id_reused.load(Relaxed), 0);
}

#[test]
fn a_request_whose_id_is_reused_while_it_waits_is_counted() {
    use Direction::{Egress, Ingress};
    let (out, health) = rpc(&[
        data(
            STDIO,
            Egress,
            line(r#"{"jsonrpc":"2.0","id":1,"method":"first"}"#).as_bytes(),
        ),
        data(
            STDIO,
            Egress,
            line(r#"{"jsonrpc":"2.0","id":1,"method":"second"}"#).as_bytes(),
        ),
        data(
            STDIO,
            Ingress,
            line(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).as_bytes(),
        ),
    ]);
    assert_eq!(health.jsonrpc_dropped_id_reused.load(Relaxed), 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method, "second");
}

#[test]
fn idle_sessions_let_go_past_the_bound_are_counted() {
    let events: Vec<StreamEvent> = (0..16_385)
        .map(|conn_id| data(ConnKey { conn_id, ..STDIO }, Direction::Egress, b"{"))
        .collect();
    let (_, health) = rpc(&events);
    assert_eq!(health.jsonrpc_sessions_evicted.load(Relaxed), 16_384);
}

/// Issue 17 item 7: bodies in progress on every connection draw from one budget. A body that
/// finds it spent keeps what it got and counts the rest; a body leaving the parser (its
/// exchange emitted) or dropped with its connection gives its bytes back.
#[test]
fn bodies_in_progress_share_the_memory_budget() {
    use super::memory::BodyBudget;
    use Direction::{Egress, Ingress};
    let a = HTTP;
    let b = ConnKey { conn_id: 3, ..HTTP };
    let head = b"POST / HTTP/1.1\r\ncontent-length: 100\r\n\r\n";
    let health = Arc::new(Health::default());
    let budget = BodyBudget::new(100);
    let mut tracker = HttpTracker::new(1 << 20, health.clone()).with_budget(budget.clone());
    let mut out = Vec::new();
    let mut feed = |tracker: &mut HttpTracker, event: StreamEvent| tracker.push(&event, &mut out);

    let mut first = head.to_vec();
    first.extend([b'a'; 60]);
    feed(&mut tracker, data(a, Egress, &first));
    let mut second = head.to_vec();
    second.extend([b'b'; 100]);
    feed(&mut tracker, data(b, Egress, &second));
    assert_eq!(budget.held(), 100);
    assert_eq!(health.body_bytes_over_budget.load(Relaxed), 60);

    // The rest of A's body finds the budget spent: A keeps the 60 bytes it had.
    feed(&mut tracker, data(a, Egress, &[b'a'; 40]));
    assert_eq!(health.body_bytes_over_budget.load(Relaxed), 100);
    // A is answered: its exchange goes, and its 60 bytes come back. B's complete request
    // still waits for its answer, its 40 bytes still charged.
    feed(&mut tracker, data(a, Ingress, OK));
    assert_eq!(budget.held(), 40);
    // Its answer's two body bytes came while the budget was still spent.
    assert_eq!(health.body_bytes_over_budget.load(Relaxed), 102);
    feed(&mut tracker, data(b, Ingress, OK));
    assert_eq!(budget.held(), 0);
    assert_eq!(out.len(), 2);
    // Whole in length, cut in their kept bytes.
    assert_eq!(&out[0].request.body[..], &[b'a'; 60][..]);
    assert_eq!(&out[1].request.body[..], &[b'b'; 40][..]);
    assert_eq!(out[0].request.body_len, 100);
    assert_eq!(out[1].request.body_len, 100);
    // And say so, for the span; the answers, kept whole, don't.
    use crate::model::BodyCut::MemoryBudget;
    assert_eq!(out[0].request.body_cut, Some(MemoryBudget));
    assert_eq!(out[1].request.body_cut, Some(MemoryBudget));
    assert_eq!(out[1].response.as_ref().and_then(|r| r.body_cut), None);

    // A body still arriving when its connection closes gives its bytes back too.
    let mut third = head.to_vec();
    third.extend([b'c'; 30]);
    tracker.push(&data(a, Egress, &third), &mut Vec::new());
    assert_eq!(budget.held(), 30);
    tracker.push(&closed(a), &mut Vec::new());
    assert_eq!(budget.held(), 0);
    assert_eq!(health.body_bytes_over_budget.load(Relaxed), 102);
    assert_eq!(health.body_bytes_over_limit.load(Relaxed), 0);
}

/// Issue 17 item 7: the HTTP/1 queue of requests waiting for their answers is bounded; past it
/// the oldest is reported interrupted and counted.
#[test]
fn requests_waiting_past_the_bound_are_reported_interrupted() {
    let requests: Vec<StreamEvent> = (0..260)
        .map(|_| data(HTTP, Direction::Egress, EMPTY_POST))
        .collect();
    let (out, health) = http(&requests);
    assert_eq!(out.len(), 4);
    assert!(out
        .iter()
        .all(|e| e.end == crate::model::ExchangeEnd::Interrupted("too_many_pending")));
    assert_eq!(health.http1_pending_evicted.load(Relaxed), 4);
    assert_eq!(health.http_interrupted.load(Relaxed), 4);
}

/// Issue 17 item 7: a thousand connections each holding 60 KiB of a head that never ends hold
/// no more than the connection-state budget together; the oldest are ended, counted, and a
/// later connection's call still comes out whole.
#[test]
fn half_sent_heads_on_many_connections_stay_within_the_state_budget() {
    const LIMIT: u64 = 8 << 20;
    let health = Arc::new(Health::default());
    let mut tracker = HttpTracker::new(1 << 20, health.clone()).with_state_limit(LIMIT);
    let mut out = Vec::new();
    let mut head = b"POST /v1/chat/completions HTTP/1.1\r\nx-pad: ".to_vec();
    head.resize(60 * 1024, b'a');
    for i in 0..1_000u64 {
        let conn = ConnKey {
            pid: 1,
            source: Source::Tls,
            conn_id: 100 + i,
        };
        tracker.push(
            &StreamEvent::Data {
                conn,
                direction: Direction::Egress,
                timestamp_ns: i,
                bytes: Bytes::copy_from_slice(&head),
            },
            &mut out,
        );
        assert!(tracker.state_bytes_held() <= LIMIT);
    }
    let evicted = health.connections_evicted_memory_budget.load(Relaxed);
    assert!(evicted >= 1_000 - (LIMIT / (60 * 1024)), "{evicted}");
    assert_eq!(evicted + tracker.connections() as u64, 1_000);
    assert_eq!(
        health.http1_dropped_unfinished_head.load(Relaxed),
        evicted * head.len() as u64,
        "each evicted head's bytes counted"
    );
    for e in [
        data(HTTP, Direction::Egress, EMPTY_POST),
        data(HTTP, Direction::Ingress, OK),
    ] {
        tracker.push(&e, &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.method, "POST");
}

/// Issue 17 item 7: a thousand stdio streams each holding 100 KiB of a line that never ends
/// hold no more than the JSON-RPC share of the state budget; the oldest sessions are ended and
/// counted, their waiting requests reported interrupted, and a later exchange still comes out.
#[test]
fn unfinished_json_rpc_lines_on_many_streams_stay_within_the_state_budget() {
    const LIMIT: u64 = 8 << 20;
    let health = Arc::new(Health::default());
    let mut tracker = JsonRpcTracker::new(1 << 20, health.clone()).with_state_limit(LIMIT);
    let mut out = Vec::new();
    let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}\n";
    let mut partial = b"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":\"".to_vec();
    partial.resize(100 * 1024, b'a');
    for i in 0..1_000u64 {
        let conn = ConnKey {
            pid: 10 + i as u32,
            source: Source::Stdio,
            conn_id: 0,
        };
        for bytes in [&request[..], &partial[..]] {
            tracker.push(
                &StreamEvent::Data {
                    conn,
                    direction: Direction::Egress,
                    timestamp_ns: i,
                    bytes: Bytes::copy_from_slice(bytes),
                },
                &mut out,
            );
            assert!(tracker.state_bytes_held() <= LIMIT);
        }
    }
    let evicted = health.connections_evicted_memory_budget.load(Relaxed);
    assert!(evicted >= 900, "{evicted}");
    // Each evicted session's request was waiting: reported, interrupted.
    assert_eq!(out.len() as u64, evicted);
    assert!(out
        .iter()
        .all(|e| e.response.is_none() && e.end == ExchangeEnd::Interrupted("memory_budget")));
    out.clear();
    for e in [
        data(STDIO, Direction::Egress, request),
        data(
            STDIO,
            Direction::Ingress,
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n",
        ),
    ] {
        tracker.push(&e, &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].conn, STDIO);
    assert!(out[0].response.is_some());
}
