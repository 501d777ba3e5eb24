//! HTTP/1.1 and OpenAI parsing fed with bytes the tracer captured from the real `openai` SDK
//! (tests/fixtures/openai, recorded with `--record-streams`). Any way of cutting the same bytes
//! into reads must give the same exchanges and the same call.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::HttpTracker;
use crate::{
    genai::{self, GenAiConfig, LlmCall},
    model::{ConnKey, Direction, ExchangeEnd, HttpExchange, StreamEvent},
    telemetry::health::Health,
};

struct Fixture {
    request: &'static [u8],
    response: &'static [u8],
}

const PLAIN: Fixture = Fixture {
    request: include_bytes!("../../../tests/fixtures/openai/chat_plain.request"),
    response: include_bytes!("../../../tests/fixtures/openai/chat_plain.response"),
};
const STREAM: Fixture = Fixture {
    request: include_bytes!("../../../tests/fixtures/openai/chat_stream_tools.request"),
    response: include_bytes!("../../../tests/fixtures/openai/chat_stream_tools.response"),
};
const RATE_LIMITED: Fixture = Fixture {
    request: include_bytes!("../../../tests/fixtures/openai/chat_429.request"),
    response: include_bytes!("../../../tests/fixtures/openai/chat_429.response"),
};

const CONN: ConnKey = ConnKey {
    pid: 1,
    source: crate::model::Source::Tls,
    conn_id: 2,
};

fn data(direction: Direction, bytes: &[u8]) -> StreamEvent {
    StreamEvent::Data {
        conn: CONN,
        direction,
        timestamp_ns: 7,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

/// Feeds the pieces in order, then closes everything (as at shutdown).
fn run(events: &[StreamEvent]) -> (Vec<HttpExchange>, Arc<Health>) {
    let health = Arc::new(Health::default());
    let mut tracker = HttpTracker::new(64 << 20, health.clone());
    let mut out = Vec::new();
    for e in events {
        tracker.push(e, &mut out);
    }
    tracker.close_all(&mut out);
    (out, health)
}

fn whole(f: &Fixture) -> Vec<StreamEvent> {
    vec![
        data(Direction::Egress, f.request),
        data(Direction::Ingress, f.response),
    ]
}

fn split_at(f: &Fixture, direction: Direction, at: usize) -> Vec<StreamEvent> {
    let (req, resp) = (f.request, f.response);
    match direction {
        Direction::Egress => vec![
            data(Direction::Egress, &req[..at]),
            data(Direction::Egress, &req[at..]),
            data(Direction::Ingress, resp),
        ],
        Direction::Ingress => vec![
            data(Direction::Egress, req),
            data(Direction::Ingress, &resp[..at]),
            data(Direction::Ingress, &resp[at..]),
        ],
    }
}

fn call(exchange: &HttpExchange) -> LlmCall {
    match genai::recognise(
        exchange,
        &GenAiConfig {
            capture_content: true,
            max_body_bytes: crate::daemon::pipeline::DEFAULT_MAX_BODY_BYTES,
        },
    ) {
        Some(Ok(genai::Call::Llm(call))) => *call,
        other => panic!("not an LLM call: {other:?}"),
    }
}

#[test]
fn every_single_split_gives_the_same_exchange() {
    for f in [PLAIN, STREAM, RATE_LIMITED] {
        let (expected, _) = run(&whole(&f));
        assert_eq!(expected.len(), 1);
        assert_eq!(expected[0].end, ExchangeEnd::Complete);
        for at in 0..=f.request.len() {
            assert_eq!(
                run(&split_at(&f, Direction::Egress, at)).0,
                expected,
                "request split at {at}"
            );
        }
        for at in 0..=f.response.len() {
            assert_eq!(
                run(&split_at(&f, Direction::Ingress, at)).0,
                expected,
                "response split at {at}"
            );
        }
    }
}

/// Cuts `bytes` at the given points into Data events.
fn pieces(direction: Direction, bytes: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
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

proptest! {
    /// Three calls on one keep-alive connection, each direction cut anywhere, requests and
    /// responses interleaved as a client does it.
    #[test]
    fn keep_alive_connection_any_chunking(cuts in proptest::collection::vec(proptest::collection::vec(any::<usize>(), 0..6), 6)) {
        let fixtures = [PLAIN, STREAM, RATE_LIMITED];
        let mut events = Vec::new();
        for (i, f) in fixtures.iter().enumerate() {
            events.extend(pieces(Direction::Egress, f.request, &cuts[2 * i]));
            events.extend(pieces(Direction::Ingress, f.response, &cuts[2 * i + 1]));
        }
        let (exchanges, health) = run(&events);
        let expected: Vec<HttpExchange> = fixtures.iter().flat_map(|f| run(&whole(f)).0).collect();
        prop_assert_eq!(exchanges, expected);
        prop_assert_eq!(health.http_parse_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// Pipelining: all requests first, then all responses.
    #[test]
    fn pipelined_requests_pair_in_order(cut in any::<usize>()) {
        let fixtures = [PLAIN, STREAM, RATE_LIMITED];
        let requests: Vec<u8> = fixtures.iter().flat_map(|f| f.request.iter().copied()).collect();
        let responses: Vec<u8> = fixtures.iter().flat_map(|f| f.response.iter().copied()).collect();
        let mut events = pieces(Direction::Egress, &requests, &[cut]);
        events.extend(pieces(Direction::Ingress, &responses, &[cut / 2]));
        let (exchanges, _) = run(&events);
        let statuses: Vec<u16> = exchanges.iter().map(|e| e.response.as_ref().map(|r| r.status).unwrap_or(0)).collect();
        prop_assert_eq!(statuses, vec![200, 200, 429]);
        prop_assert!(exchanges.iter().all(|e| e.request.method == "POST"));
    }

    /// Arbitrary bytes in either direction never panic and never produce an exchange out of
    /// nothing.
    #[test]
    fn arbitrary_bytes_never_panic(egress in proptest::collection::vec(any::<u8>(), 0..512), ingress in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (exchanges, _) = run(&[data(Direction::Egress, &egress), data(Direction::Ingress, &ingress)]);
        prop_assert!(exchanges.iter().all(|e| !e.request.method.is_empty()));
    }
}

#[test]
fn plain_call_golden() {
    let (exchanges, _) = run(&whole(&PLAIN));
    let c = call(&exchanges[0]);
    assert_eq!(c.provider, "openai");
    assert_eq!(c.operation, "chat");
    assert_eq!(c.request.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(c.request.temperature, Some(0.2));
    assert_eq!(c.request.max_tokens, Some(64));
    assert!(!c.request.stream);
    assert_eq!(c.response.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(c.response.id.as_deref(), Some("chatcmpl-mock-nonstream"));
    assert_eq!(c.response.finish_reasons, vec!["stop"]);
    assert_eq!(c.response.usage.output_tokens, Some(5));
    assert_eq!(c.http.status, Some(200));
    assert_eq!(c.http.server_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.error, None);
    assert_eq!(
        c.response.output_messages,
        Some(
            serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello from the mock."}], "finish_reason": "stop"}])
        )
    );
}

#[test]
fn streamed_tool_call_golden() {
    let (exchanges, _) = run(&whole(&STREAM));
    let c = call(&exchanges[0]);
    assert!(c.request.stream);
    assert_eq!(c.request.tool_names, vec!["get_weather"]);
    assert_eq!(c.response.id.as_deref(), Some("chatcmpl-mock-stream"));
    assert_eq!(c.response.finish_reasons, vec!["tool_calls"]);
    assert_eq!(c.response.usage.input_tokens, Some(57));
    assert_eq!(c.response.usage.output_tokens, Some(17));
    assert_eq!(c.response.usage.cache_read_input_tokens, Some(32));
    assert_eq!(c.response.tool_calls.len(), 1);
    assert_eq!(
        c.response.tool_calls[0].id.as_deref(),
        Some("call_mock_weather")
    );
    assert_eq!(c.response.tool_calls[0].name, "get_weather");
    assert_eq!(c.response.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
    assert!(c.first_chunk_ns.is_some());
    assert_eq!(c.error, None);
}

#[test]
fn rate_limit_golden() {
    let (exchanges, _) = run(&whole(&RATE_LIMITED));
    let c = call(&exchanges[0]);
    assert_eq!(c.http.status, Some(429));
    let err = c.error.expect("an error");
    assert_eq!(err.error_type, "rate_limit_exceeded");
    assert_eq!(
        err.message.as_deref(),
        Some("Rate limit reached for requests")
    );
}

#[test]
fn stream_cut_short_is_interrupted_with_error_finish() {
    let cut = STREAM.response.len() / 2;
    let (exchanges, _) = run(&[
        data(Direction::Egress, STREAM.request),
        data(Direction::Ingress, &STREAM.response[..cut]),
    ]);
    assert_eq!(exchanges[0].end, ExchangeEnd::Interrupted("shutdown"));
    let c = call(&exchanges[0]);
    assert_eq!(c.response.finish_reasons, vec!["error"]);
    assert_eq!(
        c.error.map(|e| e.error_type),
        Some("stream_interrupted".to_string())
    );
}

#[test]
fn attach_mid_connection_resynchronises_at_the_next_request() {
    // The tracer started while the previous response's body was in flight.
    let mut events = vec![data(Direction::Ingress, &PLAIN.response[40..])];
    events.extend(whole(&STREAM));
    let (exchanges, _) = run(&events);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(
        call(&exchanges[0]).response.id.as_deref(),
        Some("chatcmpl-mock-stream")
    );

    // Or in the middle of a request body: the garbage is skipped, the next request parses.
    let mut events = vec![data(
        Direction::Egress,
        &PLAIN.request[PLAIN.request.len() - 30..],
    )];
    events.extend(whole(&RATE_LIMITED));
    let (exchanges, _) = run(&events);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].response.as_ref().map(|r| r.status), Some(429));
}

#[test]
fn gap_inside_a_length_delimited_body_is_counted_not_invented() {
    let head_len = PLAIN
        .request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    let events = vec![
        data(Direction::Egress, &PLAIN.request[..head_len + 10]),
        StreamEvent::Gap {
            conn: CONN,
            direction: Direction::Egress,
            timestamp_ns: 7,
            len: 20,
        },
        data(Direction::Egress, &PLAIN.request[head_len + 30..]),
        data(Direction::Ingress, PLAIN.response),
    ];
    let (exchanges, _) = run(&events);
    assert_eq!(exchanges.len(), 1);
    let req = &exchanges[0].request;
    assert_eq!(req.bytes_lost, 20);
    assert_eq!(req.body_len as usize, PLAIN.request.len() - head_len);
    assert_eq!(req.body.len(), PLAIN.request.len() - head_len - 20);
    // The damaged body cannot be parsed: the call is still reported, with the loss and with
    // what the intact response says, never with guessed request parameters.
    let call = call(&exchanges[0]);
    assert_eq!(call.http.bytes_lost, 20);
    assert_eq!(call.request.model, None);
    assert_eq!(call.response.id.as_deref(), Some("chatcmpl-mock-nonstream"));
    assert_eq!(call.error, None);
}

#[test]
fn bodyless_responses_and_interim_continue() {
    let get = b"GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\nHEAD /x HTTP/1.1\r\nHost: h\r\n\r\nPOST /y HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}";
    let resp = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (exchanges, _) = run(&[data(Direction::Egress, get), data(Direction::Ingress, resp)]);
    let summary: Vec<(String, u16, usize)> = exchanges
        .iter()
        .map(|e| {
            let r = e.response.as_ref().unwrap();
            (e.request.method.clone(), r.status, r.body.len())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("GET".into(), 204, 0),
            ("HEAD".into(), 200, 0),
            ("POST".into(), 200, 2)
        ]
    );
    assert!(exchanges.iter().all(|e| e.end == ExchangeEnd::Complete));
}

#[test]
fn response_delimited_by_close_completes_at_close() {
    let (exchanges, _) = run(&[
        data(Direction::Egress, b"GET / HTTP/1.0\r\n\r\n"),
        data(Direction::Ingress, b"HTTP/1.0 200 OK\r\n\r\nall of it"),
    ]);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].end, ExchangeEnd::Complete);
    assert_eq!(
        &exchanges[0].response.as_ref().unwrap().body[..],
        b"all of it"
    );
}

#[test]
fn bad_chunk_size_and_huge_heads_are_errors_not_panics() {
    let (exchanges, health) = run(&[
        data(Direction::Egress, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        data(
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ),
    ]);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].end, ExchangeEnd::Interrupted("shutdown"));
    assert_eq!(exchanges[0].response, None);
    assert!(
        health
            .http_parse_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    let mut huge = b"POST / HTTP/1.1\r\n".to_vec();
    huge.extend(
        std::iter::repeat_n(
            b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                .iter()
                .copied(),
            2000,
        )
        .flatten(),
    );
    let (exchanges, health) = run(&[data(Direction::Egress, &huge)]);
    assert!(exchanges.is_empty());
    assert_eq!(
        health
            .http_parse_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn server_side_connections_are_not_reported_as_calls() {
    // A local model server: it reads the request and writes the response.
    let (exchanges, health) = run(&[
        data(Direction::Ingress, PLAIN.request),
        data(Direction::Egress, PLAIN.response),
    ]);
    assert!(exchanges.is_empty());
    assert_eq!(
        health
            .unparsed_bytes
            .load(std::sync::atomic::Ordering::Relaxed) as usize,
        PLAIN.request.len() + PLAIN.response.len()
    );
}

#[test]
fn an_answered_request_whose_tail_was_lost_is_reported_with_the_loss() {
    // The last 50 request bytes never reached us; the loss only shows later (at exit), but the
    // server's answer proves the request was sent whole.
    let cut = PLAIN.request.len() - 50;
    let (exchanges, _) = run(&[
        data(Direction::Egress, &PLAIN.request[..cut]),
        data(Direction::Ingress, PLAIN.response),
    ]);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].request.bytes_lost, 50);
    assert_eq!(
        exchanges[0].request.body_len as usize,
        PLAIN.request.len()
            - PLAIN
                .request
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap()
            - 4
    );
    assert_eq!(exchanges[0].response.as_ref().map(|r| r.status), Some(200));
    let call = call(&exchanges[0]);
    assert_eq!(call.http.bytes_lost, 50);
    assert_eq!(call.response.id.as_deref(), Some("chatcmpl-mock-nonstream"));
}

#[test]
fn a_gap_that_ends_a_body_completes_the_message() {
    let head_len = PLAIN
        .request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    let events = vec![
        data(Direction::Egress, &PLAIN.request[..head_len + 10]),
        StreamEvent::Gap {
            conn: CONN,
            direction: Direction::Egress,
            timestamp_ns: 7,
            len: (PLAIN.request.len() - head_len - 10) as u64,
        },
        data(Direction::Ingress, PLAIN.response),
    ];
    let (exchanges, _) = run(&events);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].end, ExchangeEnd::Complete);
}

fn data_at(direction: Direction, bytes: &[u8], timestamp_ns: u64) -> StreamEvent {
    StreamEvent::Data {
        conn: CONN,
        direction,
        timestamp_ns,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

#[test]
fn a_response_that_reaches_us_before_its_request_is_paired() {
    // Written at t=10 on one thread, answered and read at t=20 on another, whose record got to
    // the ring first.
    let (exchanges, health) = run(&[
        data_at(Direction::Ingress, PLAIN.response, 20),
        data_at(Direction::Egress, PLAIN.request, 10),
    ]);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].end, ExchangeEnd::Complete);
    assert_eq!(
        call(&exchanges[0]).response.id.as_deref(),
        Some("chatcmpl-mock-nonstream")
    );
    assert_eq!(
        health
            .unparsed_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_stale_response_is_never_paired_with_a_later_request() {
    // Attached mid-exchange: a response to a request we never saw, then a new exchange.
    let (exchanges, _) = run(&[
        data_at(Direction::Ingress, RATE_LIMITED.response, 5),
        data_at(Direction::Egress, PLAIN.request, 10),
        data_at(Direction::Ingress, PLAIN.response, 20),
    ]);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].response.as_ref().map(|r| r.status), Some(200));
}
