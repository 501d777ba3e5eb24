//! Issue 17 item 7: ten thousand short HTTP/2 connections whose processes' exit records were
//! all lost (a full ring buffer) leave nothing behind once those processes are found gone:
//! every stage's state is ended as the exits would have ended it, and the requests they left
//! unanswered are reported interrupted rather than kept until shutdown.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use bytes::Bytes;

use super::{lost_exits::SWEEP_INTERVAL_NS, Pipeline, PipelineConfig};
use crate::{
    capture::{CaptureEvent, Clock, DataChunk},
    model::{Direction, Source},
    telemetry::health::Health,
};

const CONNECTIONS: u32 = 10_000;
/// Above the kernel's PID_MAX_LIMIT (4 Mi): no process on this host has these pids.
const FIRST_PID: u32 = 5_000_000;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// A client's first write on an HTTP/2 connection: the preface, its settings, a model call's
/// headers and the start of its body (the rest never comes: the process is gone).
fn first_write() -> Bytes {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[]));
    let block = loona_hpack::Encoder::new().encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"https"),
        (b":authority", b"api.openai.com"),
        (b":path", b"/v1/chat/completions"),
        (b"content-type", b"application/json"),
    ]);
    bytes.extend(frame(0x1, 0x4, 1, &block));
    bytes.extend(frame(
        0x0,
        0,
        1,
        br#"{"model":"gpt-4o","messages":[{"role":"user","#,
    ));
    Bytes::from(bytes)
}

/// A pipeline as the daemon builds it, and its health counters.
fn pipeline() -> (Pipeline, Arc<Health>) {
    let health = Arc::new(Health::default());
    let pipeline = Pipeline::new(
        PipelineConfig::default(),
        Clock::new(),
        health.clone(),
        None,
    )
    .unwrap();
    (pipeline, health)
}

/// `write` as process `pid`'s first TLS write on its connection, at `at`.
fn written(pid: u32, at: u64, write: &Bytes) -> CaptureEvent {
    CaptureEvent::Data(DataChunk {
        pid,
        source: Source::Tls,
        conn_id: 1,
        direction: Direction::Egress,
        timestamp_ns: at,
        call_len: write.len() as u64,
        offset: 0,
        stream_offset: 0,
        cookie: 0,
        data: write.clone(),
    })
}

#[test]
fn ten_thousand_connections_of_processes_whose_exits_were_lost_leave_nothing_behind() {
    let (mut pipeline, health) = pipeline();
    let mut spans = Vec::new();
    let write = first_write();
    let t0 = 1_000_000_000_000;
    pipeline.tick(t0, &mut spans);
    for i in 0..CONNECTIONS {
        pipeline.handle(
            written(FIRST_PID + i, t0 + u64::from(i), &write),
            &mut spans,
        );
    }
    assert_eq!(pipeline.http.connections(), CONNECTIONS as usize);
    assert_eq!(pipeline.streams.streams(), CONNECTIONS as usize);
    assert!(pipeline.http.body_bytes_held() > 0);
    assert_eq!(pipeline.lost_exits.len(), CONNECTIONS as usize);

    // Heard from during the first interval: left alone by its sweep.
    pipeline.tick(t0 + SWEEP_INTERVAL_NS, &mut spans);
    assert_eq!(health.process_exits_lost.load(Relaxed), 0);
    assert_eq!(pipeline.http.connections(), CONNECTIONS as usize);
    // Silent through the second, and gone from /proc: ended. Long before the idle timeout
    // could close their connections: it is the exits that end them.
    pipeline.tick(t0 + 2 * SWEEP_INTERVAL_NS, &mut spans);
    assert_eq!(
        health.process_exits_lost.load(Relaxed),
        u64::from(CONNECTIONS)
    );
    assert_eq!(pipeline.http.connections(), 0);
    assert_eq!(pipeline.streams.streams(), 0);
    assert_eq!(pipeline.http.body_bytes_held(), 0);
    assert_eq!(pipeline.processes.cached(), 0);
    assert!(pipeline.lost_exits.is_empty());
    // Each unanswered call is reported, interrupted by its process's exit, once.
    assert_eq!(
        health.http_interrupted.load(Relaxed),
        u64::from(CONNECTIONS)
    );
    pipeline.tick(t0 + 3 * SWEEP_INTERVAL_NS, &mut spans);
    assert_eq!(
        health.process_exits_lost.load(Relaxed),
        u64::from(CONNECTIONS)
    );
}

#[test]
fn a_live_process_is_never_ended_for_a_lost_exit() {
    let (mut pipeline, health) = pipeline();
    let mut spans = Vec::new();
    let t0 = 1_000_000_000_000;
    pipeline.tick(t0, &mut spans);
    let write = first_write();
    pipeline.handle(written(std::process::id(), t0, &write), &mut spans);
    for i in 1..=3 {
        pipeline.tick(t0 + i * SWEEP_INTERVAL_NS, &mut spans);
    }
    assert_eq!(health.process_exits_lost.load(Relaxed), 0);
    assert_eq!(pipeline.lost_exits.len(), 1);
}
