//! JSON-RPC over stdio fed with the bytes the tracer captured on the stdin and stdout of a real
//! MCP server (the official `mcp` SDK's stdio transport, driven by its own `stdio_client`;
//! tests/fixtures/mcp-stdio, recorded with `--record-streams`). Any way of cutting the same bytes
//! into reads gives the same exchanges, and joining a stream anywhere loses only the messages cut.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;

use super::jsonrpc::{JsonRpcTracker, RpcExchange};
use crate::{
    agent::{AgentAssembler, AgentConfig},
    capture::Clock,
    genai::{self, mcp, semconv::ContentPolicy, Call, McpTransport},
    model::{
        span::{AttrValue, SpanStatus},
        ConnKey, Direction, ExchangeEnd, Source, StreamEvent,
    },
    telemetry::health::Health,
};

/// What the server read: the client's requests and notifications.
const INGRESS: &[u8] = include_bytes!("../../../tests/fixtures/mcp-stdio/sdk_session.ingress");
/// What it wrote: its responses.
const EGRESS: &[u8] = include_bytes!("../../../tests/fixtures/mcp-stdio/sdk_session.egress");

const CONN: ConnKey = ConnKey {
    pid: 4,
    source: Source::Stdio,
    conn_id: 0,
};

fn data(direction: Direction, timestamp_ns: u64, bytes: &[u8]) -> StreamEvent {
    StreamEvent::Data {
        conn: CONN,
        direction,
        timestamp_ns,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

/// Feeds the requests' reads (at t=10) then the responses' writes (at t=20), then the process
/// exits (t=30). One time per direction, so that the cut cannot change the times.
fn run(ingress: &[&[u8]], egress: &[&[u8]]) -> (Vec<RpcExchange>, Arc<Health>) {
    let health = Arc::new(Health::default());
    let mut tracker = JsonRpcTracker::new(64 << 20, health.clone());
    let mut out = Vec::new();
    for piece in ingress {
        tracker.push(&data(Direction::Ingress, 10, piece), &mut out);
    }
    for piece in egress {
        tracker.push(&data(Direction::Egress, 20, piece), &mut out);
    }
    tracker.push(
        &StreamEvent::ProcessExit {
            pid: CONN.pid,
            timestamp_ns: 30,
        },
        &mut out,
    );
    (out, health)
}

fn mcp_of(exchange: &RpcExchange) -> mcp::McpCall {
    match genai::recognise_rpc(exchange) {
        Some(Call::Mcp(m)) => {
            assert!(matches!(m.transport, McpTransport::Stdio(_)));
            m.mcp
        }
        other => panic!("not an MCP call: {other:?}"),
    }
}

#[test]
fn the_sdk_session_makes_four_calls_with_their_outcomes() {
    let (out, health) = run(&[INGRESS], &[EGRESS]);
    let summary: Vec<(&str, &str, Direction, u64, u64, ExchangeEnd)> = out
        .iter()
        .map(|e| {
            (
                e.method.as_str(),
                e.id.as_str(),
                e.request_direction,
                e.start_ns,
                e.end_ns,
                e.end,
            )
        })
        .collect();
    let asked = Direction::Ingress;
    assert_eq!(
        summary,
        vec![
            ("initialize", "1", asked, 10, 20, ExchangeEnd::Complete),
            ("tools/list", "2", asked, 10, 20, ExchangeEnd::Complete),
            ("tools/call", "3", asked, 10, 20, ExchangeEnd::Complete),
            ("tools/call", "4", asked, 10, 20, ExchangeEnd::Complete),
        ]
    );
    use std::sync::atomic::Ordering::Relaxed;
    // Five lines in (one a notification), four out; nothing unparsed or unmatched.
    assert_eq!(health.jsonrpc_messages.load(Relaxed), 9);
    assert_eq!(health.jsonrpc_parse_errors.load(Relaxed), 0);
    assert_eq!(health.jsonrpc_unmatched_responses.load(Relaxed), 0);

    let calls: Vec<mcp::McpCall> = out.iter().map(mcp_of).collect();
    let version = Some("2025-11-25".to_string());
    assert_eq!(calls[0].protocol_version, version);
    assert_eq!(
        (calls[0].method.as_str(), &calls[0].target),
        ("initialize", &None)
    );
    assert_eq!(calls[1].protocol_version, version);
    assert_eq!(
        calls[2],
        mcp::McpCall {
            method: "tools/call".into(),
            request_id: "3".into(),
            target: Some("get_weather".into()),
            resource_uri: None,
            protocol_version: version.clone(),
            arguments: Some(json!({"city": "Paris"})),
            result: Some(json!({"result": "It is sunny in Paris."})),
            error_code: None,
            error_message: None,
            tool_error: false,
            unanswered: false,
        }
    );
    assert_eq!(
        calls[3],
        mcp::McpCall {
            method: "tools/call".into(),
            request_id: "4".into(),
            target: Some("fail_always".into()),
            resource_uri: None,
            protocol_version: version,
            arguments: Some(json!({"reason": "testing"})),
            result: Some(json!([{"text": "Error executing tool fail_always", "type": "text"}])),
            error_code: None,
            error_message: None,
            tool_error: true,
            unanswered: false,
        }
    );
    assert_eq!(mcp::error_type(&calls[3]).as_deref(), Some("tool_error"));
}

#[test]
fn requests_unanswered_when_the_server_exits_are_interrupted() {
    // The server wrote only its first two answers before it died.
    let two = EGRESS
        .split_inclusive(|b| *b == b'\n')
        .take(2)
        .collect::<Vec<_>>()
        .concat();
    let (out, _) = run(&[INGRESS], &[&two]);
    let ends: Vec<(&str, ExchangeEnd, u64)> = out
        .iter()
        .map(|e| (e.id.as_str(), e.end, e.end_ns))
        .collect();
    let exit = ExchangeEnd::Interrupted("process_exit");
    assert_eq!(
        ends,
        vec![
            ("1", ExchangeEnd::Complete, 20),
            ("2", ExchangeEnd::Complete, 20),
            ("3", exit, 30),
            ("4", exit, 30),
        ]
    );
    let call = mcp_of(&out[2]);
    assert!(call.unanswered);
    assert_eq!(call.target.as_deref(), Some("get_weather"));

    // As a span: the transport's reason is the error, and nothing of HTTP is claimed.
    let Some(Call::Mcp(m)) = genai::recognise_rpc(&out[2]) else {
        panic!("not an MCP call")
    };
    let mut agent = AgentAssembler::new(
        AgentConfig::with_content(ContentPolicy {
            capture: false,
            max_bytes: 1024,
        }),
        Clock::new(),
        Arc::new(crate::telemetry::health::Health::default()),
    );
    let span_of = |agent: &mut AgentAssembler, m: &crate::genai::McpExchange| {
        let mut out = Vec::new();
        agent.mcp_call(m, &mut out);
        assert_eq!(out.len(), 1, "one span, outside any run");
        out.remove(0)
    };
    let span = span_of(&mut agent, &m);
    assert_eq!(span.name, "tools/call get_weather");
    assert_eq!(span.status, SpanStatus::Error("process_exit".into()));
    let attrs: Vec<(&str, AttrValue)> = span.attributes.clone();
    assert_eq!(
        attrs,
        vec![
            ("mcp.method.name", "tools/call".into()),
            ("jsonrpc.request.id", "3".into()),
            ("network.transport", "pipe".into()),
            ("mcp.protocol.version", "2025-11-25".into()),
            ("gen_ai.operation.name", "execute_tool".into()),
            ("gen_ai.tool.name", "get_weather".into()),
            ("tool.name", "get_weather".into()),
            ("openinference.span.kind", "TOOL".into()),
            ("error.type", "process_exit".into()),
        ]
    );
    assert_eq!(span.duration_ns(), 20);

    // Answered, it is not an error; content stays out unless asked for.
    let span = span_of(
        &mut agent,
        match &genai::recognise_rpc(&out[1]) {
            Some(Call::Mcp(m)) => m,
            _ => panic!("not an MCP call"),
        },
    );
    assert_eq!(
        (span.name.as_str(), &span.status),
        ("tools/list", &SpanStatus::Unset)
    );
    assert!(span.attr("error.type").is_none());
    assert!(span.attr("gen_ai.tool.call.result").is_none());
}

/// Cuts `bytes` at the sorted, deduplicated positions.
fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in at.into_iter().chain([bytes.len()]) {
        pieces.push(&bytes[start..c]);
        start = c;
    }
    pieces
}

proptest! {
    #[test]
    fn any_cut_into_reads_gives_the_same_exchanges(
        in_cuts in proptest::collection::vec(any::<usize>(), 0..40),
        out_cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let whole = run(&[INGRESS], &[EGRESS]).0;
        let pieces = run(&cut(INGRESS, &in_cuts), &cut(EGRESS, &out_cuts)).0;
        prop_assert_eq!(pieces, whole);
    }

    /// The tracer may join a server's stdin anywhere (it attached late, or bytes were lost): the
    /// requests whose line began before that point are lost, every later one still pairs.
    #[test]
    fn joining_mid_stream_loses_only_the_messages_cut(skip in 0..INGRESS.len()) {
        let (out, health) = run(&[&INGRESS[skip..]], &[EGRESS]);
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(INGRESS.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1))
            .collect();
        // Requests are lines 0, 2, 3, 4 (line 1 is a notification).
        let expected: Vec<&str> = ["1", "2", "3", "4"]
            .into_iter()
            .zip([0usize, 2, 3, 4])
            .filter(|(_, line)| line_starts[*line] >= skip)
            .map(|(id, _)| id)
            .collect();
        let got: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
        prop_assert_eq!(got, expected);
        prop_assert!(out.iter().all(|e| e.end == ExchangeEnd::Complete));
        use std::sync::atomic::Ordering::Relaxed;
        // The fragment the join began with is expected, not a parse error.
        prop_assert_eq!(health.jsonrpc_parse_errors.load(Relaxed), 0);
    }
}
