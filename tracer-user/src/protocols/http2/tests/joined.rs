//! HTTP/2 connections the tracer joined after their preface, and HTTP/1.1 connections switched
//! to HTTP/2 by `Upgrade: h2c`, fed with bytes the tracer captured (tests/fixtures/http2,
//! recorded with `--record-streams`):
//! - `go_joined`: what the tracer captured when it attached to tests/clients/go/h2_reuse_client.go
//!   between its first and second calls on one connection. The client's read loop was inside a
//!   `Read` when the hooks were placed, so that read (the second response's HEADERS) was lost;
//!   the capture starts at the request's HEADERS and at that response's next DATA frame.
//! - `go_reuse`: the same client's three calls captured from the preface on.
//! - `h2c_upgrade*`: `curl --http2` on `http://` URLs against the testkit's h2c-upgrade server
//!   (JSON, SSE), and against one that ignores the Upgrade header.
//!
//! Cutting the full captures at any point must never give a header value, a status or a body
//! that the full capture does not give for the same stream; only less, and marked.

use std::sync::{atomic::Ordering, Arc};

use proptest::prelude::*;

use super::exchanges::{
    data, frame, frame_bounds, gap, json, pieces, response, run, run_with, settings, sorted,
    Fixture, Wire, MULTIPLEXED, PATH, PLAIN, STREAM,
};
use crate::{
    genai::{self, semconv, GenAiConfig},
    model::{header, span::AttrValue, Direction, ExchangeEnd, HttpExchange, StreamEvent},
    protocols::{
        http2::{frame_chain, FrameChain, PREFACE},
        HttpTracker,
    },
    telemetry::health::Health,
};

const GO_JOINED: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/go_joined.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/go_joined.response"),
};
const GO_REUSE: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/go_reuse.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/go_reuse.response"),
};
const UPGRADE: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/h2c_upgrade.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/h2c_upgrade.response"),
};
const UPGRADE_STREAM: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/h2c_upgrade_stream.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/h2c_upgrade_stream.response"),
};
const UPGRADE_REFUSED: Fixture = Fixture {
    request: include_bytes!("../../../../../tests/fixtures/http2/h2c_upgrade_refused.request"),
    response: include_bytes!("../../../../../tests/fixtures/http2/h2c_upgrade_refused.response"),
};

/// What tests/clients/go/h2_reuse_client.go sends, byte for byte.
const GO_BODIES: [&str; 3] = [
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"first call, before the tracer"}]}"#,
    r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"messages":[{"role":"user","content":"weather in Paris?"}]}"#,
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"third call, on the joined connection"}]}"#,
];

const ALL: [Fixture; 4] = [GO_REUSE, MULTIPLEXED, PLAIN, STREAM];

fn llm(exchange: &HttpExchange) -> genai::LlmCall {
    match genai::recognise(
        exchange,
        &GenAiConfig {
            capture_content: false,
            max_body_bytes: crate::daemon::pipeline::DEFAULT_MAX_BODY_BYTES,
        },
    ) {
        Some(Ok(genai::Call::Llm(call))) => *call,
        other => panic!("not an LLM call: {other:?}"),
    }
}

fn attribute<'a>(attrs: &'a [(&'static str, AttrValue)], key: &str) -> Option<&'a AttrValue> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// The full capture's bytes of one direction from `at` on, as a tracer joining there sees them.
fn from(bytes: &[u8], at: usize) -> &[u8] {
    &bytes[at.min(bytes.len())..]
}

/// Where each frame starts, past the preface: the points a capture can join at.
fn starts(bytes: &[u8]) -> Vec<usize> {
    let mut points: Vec<usize> = frame_bounds(bytes).into_iter().map(|(s, _)| s).collect();
    points.push(bytes.len());
    points
}

/// Whether a late capture's exchanges agree with the full capture's: each has a twin among the
/// full exchanges (the same stream) of which it holds nothing but parts. Bodies may lack a
/// beginning (or, when they say so, bytes lost in a gap); heads, header fields and statuses
/// may be missing, never different.
fn agrees(joined: &[HttpExchange], full: &[HttpExchange]) -> Result<(), String> {
    agrees_marked(joined, full, true)
}

/// As [`agrees`]; `marked`: the capture did join late, so every exchange must say so.
fn agrees_marked(
    joined: &[HttpExchange],
    full: &[HttpExchange],
    marked: bool,
) -> Result<(), String> {
    for e in joined {
        if marked && !e.http2_joined_mid_connection {
            return Err(format!("not marked as joined: {e:?}"));
        }
        let twin = full.iter().find(|t| {
            let request = &e.request;
            let head_agrees = (request.method.is_empty() || request.method == t.request.method)
                && (request.target.is_empty() || request.target == t.request.target)
                && request
                    .headers
                    .iter()
                    .all(|h| t.request.headers.contains(h))
                // A body with bytes lost in a gap has a hole, which it reports.
                && (request.bytes_lost > 0 || t.request.body.ends_with(&request.body));
            let response_agrees = match (&e.response, &t.response) {
                (None, _) => true,
                (Some(r), Some(tr)) => {
                    (r.status == 0 || r.status == tr.status)
                        && r.headers.iter().all(|h| tr.headers.contains(h))
                        && (r.bytes_lost > 0 || tr.body.ends_with(&r.body))
                }
                (Some(_), None) => false,
            };
            head_agrees && response_agrees
        });
        if twin.is_none() {
            return Err(format!(
                "no exchange of the full capture agrees with {e:#?}"
            ));
        }
        let unknown = e.request.method.is_empty() || e.request.target.is_empty();
        if unknown && !e.request.http2_incomplete_headers {
            return Err(format!("a missing head is not marked: {e:#?}"));
        }
    }
    Ok(())
}

#[test]
fn a_go_connection_joined_after_its_first_call_gives_the_later_calls_marked() {
    let exchanges = run(&[
        data(Direction::Egress, GO_JOINED.request),
        data(Direction::Ingress, GO_JOINED.response),
    ]);
    assert_eq!(exchanges.len(), 2, "{exchanges:#?}");
    for e in &exchanges {
        assert!(e.http2_joined_mid_connection);
        assert_eq!(e.end, ExchangeEnd::Complete);
        // `:method POST` and `:scheme https` are static-table entries and `content-length` a
        // literal; `:authority`, `:path`, the content type, the key and the user agent refer
        // to entries the first call added to Go's table: left out, and said so.
        assert_eq!(e.request.method, "POST");
        assert_eq!(e.request.target, "");
        assert!(e.request.http2_incomplete_headers);
        assert_eq!(
            e.request.headers,
            vec![(
                "content-length".to_string(),
                e.request.body.len().to_string()
            )]
        );
        assert!(response(e).complete);
    }
    let (second, third) = (&exchanges[0], &exchanges[1]);
    assert_eq!(&second.request.body[..], GO_BODIES[1].as_bytes());
    assert_eq!(&third.request.body[..], GO_BODIES[2].as_bytes());

    // The second response's head was in the lost read: no status, no headers; its body from
    // the next DATA frame on.
    let r = response(second);
    assert_eq!(r.status, 0);
    assert!(r.headers.is_empty());
    assert!(r.http2_incomplete_headers);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.starts_with("data: {"), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert_eq!(r.body_len, r.body.len() as u64);

    // The third response's `:status 200` is a static-table entry.
    let r = response(third);
    assert_eq!(r.status, 200);
    assert!(r.http2_incomplete_headers);
    assert_eq!(json(&r.body)["id"], "chatcmpl-mock-nonstream");
    assert!(r
        .headers
        .iter()
        .all(|(name, _)| !name.starts_with(':') && name != "content-type"));
}

#[test]
fn the_same_calls_captured_from_the_preface_decode_whole() {
    let exchanges = run(&[
        data(Direction::Egress, GO_REUSE.request),
        data(Direction::Ingress, GO_REUSE.response),
    ]);
    assert_eq!(exchanges.len(), 3);
    for (e, body) in exchanges.iter().zip(GO_BODIES) {
        assert!(!e.http2_joined_mid_connection);
        assert!(!e.request.http2_incomplete_headers);
        assert_eq!(
            (e.request.method.as_str(), e.request.target.as_str()),
            ("POST", PATH)
        );
        assert_eq!(&e.request.body[..], body.as_bytes());
        assert_eq!(
            header(&e.request.headers, "user-agent"),
            Some("Go-http-client/2.0")
        );
        assert_eq!(response(e).status, 200);
    }
    // What the joined capture has of them, it has the same.
    let joined = run(&[
        data(Direction::Egress, GO_JOINED.request),
        data(Direction::Ingress, GO_JOINED.response),
    ]);
    // The third response's `date` header may differ: it was another run.
    let without_date = |mut e: HttpExchange| {
        if let Some(r) = &mut e.response {
            r.headers.retain(|(k, _)| k != "date");
        }
        e
    };
    let full: Vec<HttpExchange> = exchanges.into_iter().map(without_date).collect();
    let joined: Vec<HttpExchange> = joined.into_iter().map(without_date).collect();
    agrees(&joined, &full).unwrap();
}

#[test]
fn joined_calls_are_recognised_by_their_bodies_and_carry_the_marker() {
    let exchanges = run(&[
        data(Direction::Egress, GO_JOINED.request),
        data(Direction::Ingress, GO_JOINED.response),
    ]);
    let second = llm(&exchanges[0]);
    assert_eq!(second.provider, "openai");
    assert_eq!(second.api_type, Some("chat_completions"));
    assert_eq!(second.request.model.as_deref(), Some("gpt-4o-mini"));
    assert!(second.request.stream);
    assert_eq!(second.request.tool_names, vec!["get_weather".to_string()]);
    assert_eq!(second.http.method, "POST");
    assert_eq!(second.http.url_path, "");
    assert_eq!(second.http.status, None);
    assert_eq!(second.response.id.as_deref(), Some("chatcmpl-mock-stream"));
    assert_eq!(
        second.response.finish_reasons,
        vec!["tool_calls".to_string()]
    );
    assert_eq!(second.response.usage.output_tokens, Some(17));
    assert_eq!(second.http.request_body_bytes, GO_BODIES[1].len() as u64);
    assert!(second.http.http2_joined_mid_connection && second.http.http2_incomplete_headers);

    let attrs = semconv::call_attributes(
        &second,
        &semconv::ContentPolicy {
            capture: false,
            max_bytes: 0,
        },
    );
    assert_eq!(
        attribute(&attrs, "agent_tracer.http2.joined_mid_connection"),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(
        attribute(&attrs, "agent_tracer.http2.incomplete_headers"),
        Some(&AttrValue::Bool(true))
    );
    // Unknown, so absent: never an empty path or a zero status.
    assert_eq!(attribute(&attrs, "url.path"), None);
    assert_eq!(attribute(&attrs, "http.response.status_code"), None);
    assert_eq!(
        attribute(&attrs, "http.request.method"),
        Some(&AttrValue::Str("POST".into()))
    );

    let third = llm(&exchanges[1]);
    assert_eq!(third.http.status, Some(200));
    assert_eq!(
        third.response.id.as_deref(),
        Some("chatcmpl-mock-nonstream")
    );
    assert_eq!(third.response.finish_reasons, vec!["stop".to_string()]);
    assert_eq!(third.error, None);
}

#[test]
fn a_stream_already_open_at_the_join_is_a_partial_exchange() {
    // Join after the client sent its second request and the first DATA frame of its streamed
    // answer arrived: stream 3's request is never seen, its response has no head.
    let egress = starts(GO_REUSE.request);
    let ingress = starts(GO_REUSE.response);
    let frames = frame_bounds(GO_REUSE.response);
    let sse_data = frames
        .iter()
        .position(|(s, _)| GO_REUSE.response[s + 3] == 0 && GO_REUSE.response[s + 8] == 3)
        .unwrap();
    let stream5 = frame_bounds(GO_REUSE.request)
        .iter()
        .position(|(s, _)| GO_REUSE.request[s + 3] == 1 && GO_REUSE.request[s + 8] == 5)
        .unwrap();
    let exchanges = run(&[
        data(
            Direction::Ingress,
            from(GO_REUSE.response, ingress[sse_data + 1]),
        ),
        data(Direction::Egress, from(GO_REUSE.request, egress[stream5])),
    ]);
    assert_eq!(exchanges.len(), 2, "{exchanges:#?}");
    let old = &exchanges[0];
    assert!(old.http2_joined_mid_connection);
    assert_eq!(old.request.method, "");
    assert!(old.request.body.is_empty());
    assert!(old.request.http2_incomplete_headers);
    assert_eq!(old.end, ExchangeEnd::Complete);
    let r = response(old);
    assert_eq!(r.status, 0);
    assert!(String::from_utf8_lossy(&r.body).ends_with("data: [DONE]\n\n"));
    assert!(!String::from_utf8_lossy(&r.body).contains("get_weather"));
    // Such an exchange still makes a call, from its response body.
    let call = llm(old);
    assert_eq!(call.response.id.as_deref(), Some("chatcmpl-mock-stream"));
    assert_eq!(call.request.model, None);
    assert!(call.http.http2_joined_mid_connection);

    let new = &exchanges[1];
    assert_eq!(&new.request.body[..], GO_BODIES[2].as_bytes());
    assert_eq!(response(new).status, 200);

    let full = run(&[
        data(Direction::Egress, GO_REUSE.request),
        data(Direction::Ingress, GO_REUSE.response),
    ]);
    agrees(&exchanges, &full).unwrap();
}

#[test]
fn joining_at_any_frame_boundary_never_contradicts_the_full_capture() {
    for f in ALL {
        let full = run(&[
            data(Direction::Egress, f.request),
            data(Direction::Ingress, f.response),
        ]);
        for e in starts(f.request) {
            for i in starts(f.response) {
                for egress_first in [true, false] {
                    let request = data(Direction::Egress, from(f.request, e));
                    let response = data(Direction::Ingress, from(f.response, i));
                    let events = if egress_first {
                        [request, response]
                    } else {
                        [response, request]
                    };
                    let (joined, health) = run_with(64 << 20, &events);
                    agrees(&joined, &full).unwrap_or_else(|m| panic!("at {e}/{i}: {m}"));
                    assert_eq!(health.http_parse_errors.load(Ordering::Relaxed), 0);
                }
            }
        }
    }
}

#[test]
fn joined_at_the_next_call_every_later_call_is_there_with_its_body() {
    // Between calls (what an idle agent's connection looks like when the tracer starts):
    // every call after the join comes out, bodies whole, statuses decoded from the static table.
    let egress = frame_bounds(GO_REUSE.request);
    let ingress = frame_bounds(GO_REUSE.response);
    let headers_of = |frames: &[(usize, usize)], bytes: &[u8], id: u8| {
        frames
            .iter()
            .find(|(s, _)| bytes[s + 3] == 1 && bytes[s + 8] == id)
            .map(|(s, _)| *s)
            .unwrap()
    };
    let exchanges = run(&[
        data(
            Direction::Egress,
            from(GO_REUSE.request, headers_of(&egress, GO_REUSE.request, 3)),
        ),
        data(
            Direction::Ingress,
            from(
                GO_REUSE.response,
                headers_of(&ingress, GO_REUSE.response, 3),
            ),
        ),
    ]);
    let summary: Vec<(&str, &str, u16, &[u8])> = exchanges
        .iter()
        .map(|e| {
            (
                e.request.method.as_str(),
                e.request.target.as_str(),
                response(e).status,
                &e.request.body[..],
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("POST", "", 200, GO_BODIES[1].as_bytes()),
            ("POST", "", 200, GO_BODIES[2].as_bytes()),
        ]
    );
    // Here the server's HEADERS of stream 3 were seen: what hyper's encoder added then (the
    // event stream's content type) is known by position when stream 5 refers to it; what it
    // added for stream 1 is not.
    assert_eq!(
        header(&response(&exchanges[0]).headers, "content-type"),
        Some("text/event-stream; charset=utf-8")
    );
}

fn chunked_and_interleaved(
    request: &[u8],
    response: &[u8],
    request_cuts: &[usize],
    response_cuts: &[usize],
    order: &[bool],
) -> Vec<StreamEvent> {
    let mut requests = pieces(Direction::Egress, request, request_cuts)
        .into_iter()
        .peekable();
    let mut responses = pieces(Direction::Ingress, response, response_cuts)
        .into_iter()
        .peekable();
    let mut order = order.iter();
    let mut events = Vec::new();
    while requests.peek().is_some() || responses.peek().is_some() {
        let egress = order.next().copied().unwrap_or(true);
        let next = if egress {
            requests.next().or_else(|| responses.next())
        } else {
            responses.next().or_else(|| requests.next())
        };
        events.extend(next);
    }
    events
}

proptest! {
    /// A capture joined at frame boundaries, its reads cut anywhere and interleaved in any
    /// order: the same exchanges.
    #[test]
    fn any_chunking_of_a_joined_capture_gives_the_same_exchanges(
        which in 0usize..5,
        join in any::<(usize, usize)>(),
        request_cuts in proptest::collection::vec(any::<usize>(), 0..10),
        response_cuts in proptest::collection::vec(any::<usize>(), 0..10),
        order in proptest::collection::vec(any::<bool>(), 0..24),
    ) {
        let (request, response) = if which == 4 {
            (GO_JOINED.request, GO_JOINED.response)
        } else {
            let f = &ALL[which];
            let e = starts(f.request);
            let i = starts(f.response);
            (from(f.request, e[join.0 % e.len()]), from(f.response, i[join.1 % i.len()]))
        };
        let expected = sorted(run(&[data(Direction::Egress, request), data(Direction::Ingress, response)]));
        let events = chunked_and_interleaved(request, response, &request_cuts, &response_cuts, &order);
        prop_assert_eq!(sorted(run(&events)), expected);
    }

    /// Joined anywhere, even mid-frame, read in any pieces, with bytes lost on the way: never a
    /// panic, never anything the full capture does not say.
    #[test]
    fn joining_anywhere_never_contradicts_the_full_capture(
        which in 0usize..4,
        join in any::<(usize, usize)>(),
        request_cuts in proptest::collection::vec(any::<usize>(), 0..10),
        response_cuts in proptest::collection::vec(any::<usize>(), 0..10),
        order in proptest::collection::vec(any::<bool>(), 0..24),
        lose in proptest::option::of((any::<usize>(), 1u64..64, any::<bool>())),
    ) {
        let f = &ALL[which];
        let full = run(&[data(Direction::Egress, f.request), data(Direction::Ingress, f.response)]);
        let cut = join.0 % (f.request.len() + 1);
        let request = from(f.request, cut);
        let response = from(f.response, join.1 % (f.response.len() + 1));
        let mut events = chunked_and_interleaved(request, response, &request_cuts, &response_cuts, &order);
        if let Some((at, len, egress)) = lose {
            let direction = if egress { Direction::Egress } else { Direction::Ingress };
            events.insert(at % (events.len() + 1), gap(direction, len));
        }
        let joined = run(&events);
        // From the preface on, the connection was not joined late: it may even decode whole.
        if let Err(why) = agrees_marked(&joined, &full, cut > 0) {
            prop_assert!(false, "{}", why);
        }
    }

    /// Reads that are not frames (text, JSON, TLS records) are never taken for a joined HTTP/2
    /// connection.
    #[test]
    fn text_is_never_taken_for_frames(text in "[ -~\r\n]{4,200}") {
        prop_assert_eq!(frame_chain(Direction::Egress, text.as_bytes()), FrameChain::No);
        prop_assert_eq!(frame_chain(Direction::Ingress, text.as_bytes()), FrameChain::No);
    }
}

#[test]
fn what_is_not_frames_is_not_taken_for_http2() {
    let http1 = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n";
    let tls_record = [0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    let json_tail = br#"ish"}]}"#;
    for bytes in [&http1[..], &tls_record[..], &json_tail[..]] {
        assert_eq!(frame_chain(Direction::Egress, bytes), FrameChain::No);
    }
    // A frame cut short waits for the rest; one whole is enough.
    let ping = frame(0x6, 0, 0, &[0; 8]);
    assert_eq!(
        frame_chain(Direction::Ingress, &ping[..12]),
        FrameChain::Partial
    );
    assert_eq!(frame_chain(Direction::Ingress, &ping), FrameChain::Whole);
    // Not what the types require: a PING on a stream, a DATA frame on stream 0, unknown flags,
    // a server push from the client, a CONTINUATION that continues nothing, a zero increment.
    for (bytes, direction) in [
        (frame(0x6, 0, 1, &[0; 8]), Direction::Egress),
        (frame(0x0, 0, 0, b"x"), Direction::Egress),
        (frame(0x0, 0x40, 1, b"x"), Direction::Egress),
        (frame(0x5, 0x4, 1, &[0, 0, 0, 2]), Direction::Egress),
        (frame(0x9, 0x4, 1, b"x"), Direction::Ingress),
        (frame(0x8, 0, 0, &[0; 4]), Direction::Ingress),
    ] {
        assert_eq!(frame_chain(direction, &bytes), FrameChain::No, "{bytes:?}");
    }
    // A header block must be followed by its CONTINUATION, on its stream.
    let mut open = frame(0x1, 0, 1, &[0x82]);
    open.extend(frame(0x0, 0, 1, b"x"));
    assert_eq!(frame_chain(Direction::Egress, &open), FrameChain::No);
    let mut open = frame(0x1, 0, 1, &[0x82]);
    open.extend(frame(0x9, 0x4, 1, &[0x84]));
    assert_eq!(frame_chain(Direction::Egress, &open), FrameChain::Whole);
    // Every recorded connection after its preface is whole frames.
    for f in ALL {
        assert_eq!(
            frame_chain(Direction::Egress, &f.request[PREFACE.len()..]),
            FrameChain::Whole
        );
        assert_eq!(
            frame_chain(Direction::Ingress, f.response),
            FrameChain::Whole
        );
    }
}

#[test]
fn an_http1_connection_joined_mid_body_stays_http1() {
    let request =
        b"POST /v1/x HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let response =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let exchanges = run(&[
        data(Direction::Egress, br#"ish"}]}"#),
        data(Direction::Ingress, b"\x00\x00"),
        data(Direction::Egress, request),
        data(Direction::Ingress, response),
    ]);
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].request.target, "/v1/x");
    assert!(!exchanges[0].http2_joined_mid_connection);
}

#[test]
fn the_server_side_of_a_joined_connection_is_not_reported() {
    let e = starts(GO_REUSE.request);
    let i = starts(GO_REUSE.response);
    // A server's capture: requests come in, responses go out.
    let health = Arc::new(Health::default());
    let mut tracker = HttpTracker::new(1 << 20, health.clone());
    let mut out = Vec::new();
    for event in [
        data(Direction::Ingress, from(GO_REUSE.request, e[5])),
        data(Direction::Egress, from(GO_REUSE.response, i[5])),
    ] {
        tracker.push(&event, &mut out);
    }
    tracker.close_all(&mut out);
    assert!(out.is_empty(), "{out:#?}");
    assert!(health.unparsed_bytes.load(Ordering::Relaxed) > 0);
}

/// A Wire conversation joined after its first `skip` events (the preface and SETTINGS first).
fn joined_after(w: &Wire, skip: usize) -> Vec<HttpExchange> {
    run(&w.events[skip..])
}

#[test]
fn entries_added_after_the_join_are_decoded_by_position() {
    let mut w = Wire::new();
    w.request(1, "/one", true);
    w.respond(1, "200", b"{}");
    let join = w.events.len();
    // Refers to `x-client: agent` (added by stream 1, unknown here); adds `:path /two`.
    w.request(3, "/two", true);
    w.respond(3, "200", b"{}");
    // Refers to both.
    w.request(5, "/two", true);
    w.respond(5, "201", b"{}");
    let exchanges = joined_after(&w, join);
    let heads: Vec<(&str, &str, Option<&str>, u16)> = exchanges
        .iter()
        .map(|e| {
            (
                e.request.method.as_str(),
                e.request.target.as_str(),
                header(&e.request.headers, "x-client"),
                response(e).status,
            )
        })
        .collect();
    assert_eq!(
        heads,
        vec![("POST", "/two", None, 200), ("POST", "/two", None, 201)]
    );
    assert!(exchanges.iter().all(|e| e.request.http2_incomplete_headers));
}

#[test]
fn an_entry_whose_name_is_unknown_keeps_the_positions_of_the_later_ones() {
    let mut w = Wire::new();
    w.request(1, "/one", true);
    w.respond(1, "200", b"{}");
    let join = w.events.len();
    // `x-client: other` is indexed with the name of stream 1's entry, unknown here; `x-new`
    // is added after it. Stream 5 refers to both by index.
    let fields = [
        (":method", "POST"),
        (":path", "/p"),
        ("x-client", "other"),
        ("x-new", "1"),
    ];
    for id in [3, 5] {
        let block = w.block(Direction::Egress, &fields);
        w.send(Direction::Egress, frame(0x1, 0x5, id, &block));
        w.respond(id, "200", b"{}");
    }
    let exchanges = joined_after(&w, join);
    assert_eq!(exchanges.len(), 2);
    for e in &exchanges {
        assert_eq!(header(&e.request.headers, "x-new"), Some("1"));
        assert_eq!(header(&e.request.headers, "x-client"), None);
        assert_eq!(e.request.target, "/p");
        assert!(e.request.http2_incomplete_headers);
    }
}

#[test]
fn an_h2c_upgrade_gives_stream_one_the_http1_request_and_the_http2_response() {
    let exchanges = run(&[
        data(Direction::Egress, UPGRADE.request),
        data(Direction::Ingress, UPGRADE.response),
    ]);
    assert_eq!(exchanges.len(), 1, "{exchanges:#?}");
    let e = &exchanges[0];
    assert_eq!(e.end, ExchangeEnd::Complete);
    assert!(!e.http2_joined_mid_connection);
    assert_eq!(
        (e.request.method.as_str(), e.request.target.as_str()),
        ("POST", PATH)
    );
    assert_eq!(header(&e.request.headers, "upgrade"), Some("h2c"));
    assert!(header(&e.request.headers, "host").is_some_and(|h| h.starts_with("127.0.0.1:")));
    assert_eq!(
        json(&e.request.body)["messages"][0]["content"],
        "hello over an h2c upgrade"
    );
    let r = response(e);
    assert_eq!(r.status, 200);
    assert!(!r.http2_incomplete_headers);
    assert_eq!(header(&r.headers, "content-type"), Some("application/json"));
    assert_eq!(json(&r.body)["id"], "chatcmpl-mock-nonstream");
    assert!(r.complete);

    let call = llm(e);
    assert_eq!(
        (call.http.method.as_str(), call.http.url_path.as_str()),
        ("POST", PATH)
    );
    assert_eq!(call.http.status, Some(200));
    assert_eq!(call.response.id.as_deref(), Some("chatcmpl-mock-nonstream"));
    assert!(!call.http.http2_joined_mid_connection && !call.http.http2_incomplete_headers);
}

#[test]
fn an_h2c_upgrade_streams_its_events() {
    let exchanges = run(&[
        data(Direction::Egress, UPGRADE_STREAM.request),
        data(Direction::Ingress, UPGRADE_STREAM.response),
    ]);
    assert_eq!(exchanges.len(), 1);
    let call = llm(&exchanges[0]);
    assert!(call.request.stream);
    assert_eq!(call.http.status, Some(200));
    assert_eq!(call.response.id.as_deref(), Some("chatcmpl-mock-stream"));
    assert_eq!(call.response.finish_reasons, vec!["tool_calls".to_string()]);
    assert_eq!(call.response.usage.output_tokens, Some(17));
    assert_eq!(call.error, None);
}

#[test]
fn every_split_of_an_h2c_upgrade_gives_the_same_exchange() {
    for f in [UPGRADE, UPGRADE_STREAM] {
        let expected = run(&[
            data(Direction::Egress, f.request),
            data(Direction::Ingress, f.response),
        ]);
        assert_eq!(expected.len(), 1);
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
}

proptest! {
    /// The HTTP/1.1 request first (the client writes it before anything can answer it), then
    /// the rest of both directions in any pieces and any order: the same exchange. The preface
    /// may come before the 101 that asks for it has been read.
    #[test]
    fn any_chunking_of_an_h2c_upgrade_gives_the_same_exchange(
        stream in any::<bool>(),
        request_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        response_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        order in proptest::collection::vec(any::<bool>(), 0..20),
    ) {
        let f = if stream { UPGRADE_STREAM } else { UPGRADE };
        let expected = run(&[data(Direction::Egress, f.request), data(Direction::Ingress, f.response)]);
        let preface = f.request.windows(PREFACE.len()).position(|w| w == PREFACE).unwrap();
        let mut events = vec![data(Direction::Egress, &f.request[..preface])];
        events.extend(chunked_and_interleaved(&f.request[preface..], f.response, &request_cuts, &response_cuts, &order));
        prop_assert_eq!(run(&events), expected);
    }
}

#[test]
fn an_upgrade_the_server_ignores_stays_http1() {
    // The server answered in HTTP/1.1: no switch, and the next request on the connection is
    // HTTP/1.1 too.
    let exchanges = run(&[
        data(Direction::Egress, UPGRADE_REFUSED.request),
        data(Direction::Ingress, UPGRADE_REFUSED.response),
        data(Direction::Egress, UPGRADE_REFUSED.request),
        data(Direction::Ingress, UPGRADE_REFUSED.response),
    ]);
    assert_eq!(exchanges.len(), 2);
    for e in &exchanges {
        assert_eq!(e.end, ExchangeEnd::Complete);
        assert_eq!(e.request.target, PATH);
        assert_eq!(header(&e.request.headers, "upgrade"), Some("h2c"));
        let r = response(e);
        assert_eq!(r.status, 200);
        assert_eq!(json(&r.body)["id"], "chatcmpl-mock-nonstream");
        assert!(!e.http2_joined_mid_connection && !r.http2_incomplete_headers);
    }
    let call = llm(&exchanges[0]);
    assert_eq!(call.http.status, Some(200));
}

#[test]
fn a_101_for_h2c_with_http2_settings_applies_the_clients_table_size() {
    // The client's HTTP2-Settings lets the server's encoder use an 8 KiB table, and it does:
    // a 5000-byte header only fits a table over 4 KiB.
    let mut request =
        b"GET /big HTTP/1.1\r\nhost: h\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
            .to_vec();
    // SETTINGS_HEADER_TABLE_SIZE = 8192, base64url without padding.
    request.extend(b"http2-settings: AAEAACAA\r\n\r\n");
    let mut server = loona_hpack::Encoder::new();
    server.set_max_table_size(8192);
    let mut answer =
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n".to_vec();
    answer.extend(settings(&[]));
    let mut block = vec![0x3f, 0xe1, 0x3f]; // size update to 8192
    let big = "b".repeat(5000);
    block.extend(server.encode([(&b":status"[..], &b"200"[..]), (b"x-big", big.as_bytes())]));
    answer.extend(frame(0x1, 0x4, 1, &block));
    answer.extend(frame(0x0, 0x1, 1, b"{}"));
    let mut client = request.clone();
    client.extend(PREFACE);
    client.extend(settings(&[]));
    let exchanges = run(&[
        data(Direction::Egress, &client),
        data(Direction::Ingress, &answer),
    ]);
    assert_eq!(exchanges.len(), 1);
    let r = response(&exchanges[0]);
    assert_eq!(header(&r.headers, "x-big").map(str::len), Some(5000));
    assert!(!r.http2_incomplete_headers);
    assert_eq!(&r.body[..], b"{}");
}
