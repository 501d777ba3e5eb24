//! Run assembly over call sequences shaped like real agents' (the requests are the JSON bodies
//! the SDKs send; each dialect's `history` reads them as the genai stage does).

use serde_json::{json, Value};

use super::{cost::PriceTable, *};
use crate::{
    genai::{openai, semconv::ContentPolicy, Dialect, LlmError, LlmRequest, LlmResponse},
    streams::{ConnKey, Source},
};

const AGENT: u32 = 4_100_000;
const MS: u64 = 1_000_000;

fn assembler(content: bool) -> AgentAssembler {
    AgentAssembler::new(
        AgentConfig {
            content: ContentPolicy {
                capture: content,
                max_bytes: 1024,
            },
            run_idle_timeout_ns: 60_000 * MS,
            prices: PriceTable::builtin(),
            sample_ratio: 1.0,
            genai_attributes: true,
            openinference_attributes: true,
            names: AgentNames::default(),
        },
        Clock::new(),
        Arc::new(Health::default()),
    )
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn asks(id: &str, name: &str, args: &str) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": id, "type": "function", "function": {"name": name, "arguments": args}}]})
}

fn result(id: &str, text: &str) -> Value {
    json!({"role": "tool", "tool_call_id": id, "content": text})
}

/// An OpenAI chat call of `pid` from `start` to `end` ms with `messages`, answered with
/// `tool_calls` (id, name, arguments) or, when empty, a final answer.
fn call(
    pid: u32,
    start: u64,
    end: u64,
    messages: &[Value],
    tool_calls: &[(&str, &str, &str)],
) -> LlmCall {
    let body = json!({"model": "gpt-4o-mini", "messages": messages});
    LlmCall {
        http: HttpCall {
            conn: ConnKey {
                pid,
                source: Source::Tls,
                conn_id: 1,
            },
            method: "POST".into(),
            url_path: "/v1/chat/completions".into(),
            status: Some(200),
            server_address: Some("127.0.0.1".into()),
            server_port: Some(443),
            start_ns: start * MS,
            end_ns: end * MS,
            request_body_bytes: 10,
            response_body_bytes: 10,
            bytes_lost: 0,
            interrupted: None,
            http2_joined_mid_connection: false,
            http2_incomplete_headers: false,
            body_decoded_truncated: false,
            request_body_cut: None,
            response_body_cut: None,
        },
        provider: "openai".into(),
        operation: "chat",
        api_type: None,
        request: LlmRequest {
            model: Some("gpt-4o-mini".into()),
            history: openai::Chat.history(&body, true),
            ..Default::default()
        },
        response: LlmResponse {
            model: Some("gpt-4o-mini-2024-07-18".into()),
            usage: Usage {
                input_tokens: Some(100),
                output_tokens: Some(10),
                ..Default::default()
            },
            tool_calls: tool_calls
                .iter()
                .map(|(id, name, args)| ToolCall {
                    id: Some(id.to_string()),
                    name: name.to_string(),
                    arguments: args.to_string(),
                })
                .collect(),
            finish_reasons: vec![if tool_calls.is_empty() {
                "stop".into()
            } else {
                "tool_calls".into()
            }],
            ..Default::default()
        },
        error: None,
        first_chunk_ns: None,
    }
}

fn named<'a>(spans: &'a [Span], prefix: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .collect()
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    match span.attr(key)? {
        AttrValue::Str(s) => Some(s.clone()),
        AttrValue::Int(i) => Some(i.to_string()),
        AttrValue::Bool(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn exec(pid: u32, parent: u32, at: u64, args: &[&str]) -> Vec<CaptureEvent> {
    vec![
        CaptureEvent::Fork {
            parent,
            child: pid,
            timestamp_ns: at * MS,
        },
        CaptureEvent::ExecArgs {
            pid,
            tid: pid,
            args: args.iter().map(|a| a.to_string()).collect(),
        },
        CaptureEvent::Exec {
            pid,
            filename: format!("/bin/{}", args[0]),
            timestamp_ns: at * MS,
            cgroup_id: 0,
        },
    ]
}

fn exit(pid: u32, at: u64, status: Option<i32>) -> CaptureEvent {
    CaptureEvent::ProcessExit {
        pid,
        timestamp_ns: at * MS,
        status,
        exit_lost: false,
    }
}

#[test]
fn linear_tool_loop_is_one_trace_with_the_tool_and_its_process_beneath() {
    let mut a = assembler(true);
    let mut out = Vec::new();
    let q = [user("list files")];
    a.llm_call(
        &call(
            AGENT,
            0,
            100,
            &q,
            &[("call_1", "shell", r#"{"cmd":"ls -l"}"#)],
        ),
        &mut out,
    );
    for e in exec(AGENT + 1, AGENT, 110, &["ls", "-l"]) {
        a.process_event(&e, &mut out);
    }
    a.process_event(&exit(AGENT + 1, 130, Some(0)), &mut out);
    let q2 = [
        user("list files"),
        asks("call_1", "shell", r#"{"cmd":"ls -l"}"#),
        result("call_1", "a b c"),
    ];
    a.llm_call(&call(AGENT, 150, 200, &q2, &[]), &mut out);

    let root = named(&out, "invoke_agent")[0];
    assert!(out.iter().all(|s| s.trace_id == root.trace_id));
    assert_eq!(root.parent_span_id, None);
    let chats = named(&out, "chat");
    assert_eq!(chats.len(), 2);
    assert!(chats.iter().all(|c| c.parent_span_id == Some(root.span_id)));
    let tool = named(&out, "execute_tool shell")[0];
    assert_eq!(tool.parent_span_id, Some(root.span_id));
    assert_eq!(tool.start_unix_ns, chats[0].end_unix_ns);
    assert_eq!(tool.end_unix_ns, chats[1].start_unix_ns);
    assert_eq!(
        str_attr(tool, "gen_ai.tool.call.id").as_deref(),
        Some("call_1")
    );
    assert_eq!(
        str_attr(tool, "gen_ai.tool.call.result").as_deref(),
        Some("a b c")
    );
    let ls = named(&out, "exec ls")[0];
    assert_eq!(ls.parent_span_id, Some(tool.span_id));
    assert_eq!(str_attr(ls, "process.exit.code").as_deref(), Some("0"));
    assert_eq!(ls.duration_ns(), 20 * MS);
    assert_eq!(
        str_attr(root, "agent_tracer.run.outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(
        str_attr(root, "agent_tracer.run.llm_calls").as_deref(),
        Some("2")
    );
    assert_eq!(
        str_attr(root, "agent_tracer.run.tool_executions").as_deref(),
        Some("1")
    );
    assert_eq!(
        str_attr(root, "gen_ai.usage.input_tokens").as_deref(),
        Some("200")
    );
    assert_eq!(
        str_attr(root, "gen_ai.conversation.id"),
        str_attr(chats[1], "gen_ai.conversation.id")
    );
    // gpt-4o-mini: 0.15 in, 0.60 out per million.
    let want = 2.0 * (100.0 * 0.15 + 10.0 * 0.6) / 1e6;
    match root.attr("agent_tracer.cost.usd") {
        Some(AttrValue::F64(c)) => assert!((c - want).abs() < 1e-12, "{c}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(root.start_unix_ns, chats[0].start_unix_ns);
    assert_eq!(root.end_unix_ns, chats[1].end_unix_ns);
}

/// A tool's process whose exit record was lost, found gone later: its exec span ends when it
/// was last heard from, says the exit was lost, and is no error (nothing says it failed).
#[test]
fn a_tool_process_whose_exit_was_lost_ends_unknown_not_failed() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let q = [user("list files")];
    a.llm_call(
        &call(AGENT, 0, 100, &q, &[("call_1", "shell", r#"{"cmd":"ls"}"#)]),
        &mut out,
    );
    for e in exec(AGENT + 1, AGENT, 110, &["ls"]) {
        a.process_event(&e, &mut out);
    }
    a.process_event(
        &CaptureEvent::ProcessExit {
            pid: AGENT + 1,
            timestamp_ns: 130 * MS,
            status: None,
            exit_lost: true,
        },
        &mut out,
    );
    let q2 = [
        user("list files"),
        asks("call_1", "shell", r#"{"cmd":"ls"}"#),
        result("call_1", "a b c"),
    ];
    a.llm_call(&call(AGENT, 150, 200, &q2, &[]), &mut out);
    let ls = named(&out, "exec ls")[0];
    assert_eq!(ls.status, SpanStatus::Unset, "{ls:#?}");
    assert_eq!(
        str_attr(ls, "agent_tracer.process.exit_lost").as_deref(),
        Some("true")
    );
    assert!(ls.attr("error.type").is_none());
    assert!(ls.attr("process.exit.code").is_none());
    assert_eq!(ls.duration_ns(), 20 * MS);
}

#[test]
fn parallel_tool_calls_each_get_a_span_and_matching_children() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let q = [user("weather in two cities")];
    a.llm_call(
        &call(
            AGENT,
            0,
            100,
            &q,
            &[
                ("call_a", "weather", r#"{"city":"paris"}"#),
                ("call_b", "weather", r#"{"city":"oslo"}"#),
            ],
        ),
        &mut out,
    );
    for e in exec(AGENT + 2, AGENT, 120, &["curl", "wttr/oslo"]) {
        a.process_event(&e, &mut out);
    }
    a.process_event(&exit(AGENT + 2, 140, Some(6)), &mut out);
    let q2 = [
        user("weather in two cities"),
        json!({"role": "assistant", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
            {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}),
        result("call_a", "sunny"),
        result("call_b", "snow"),
    ];
    a.llm_call(&call(AGENT, 200, 250, &q2, &[]), &mut out);
    let tools = named(&out, "execute_tool");
    assert_eq!(tools.len(), 2);
    let oslo = tools
        .iter()
        .find(|t| str_attr(t, "gen_ai.tool.call.id").as_deref() == Some("call_b"))
        .unwrap();
    let curl = named(&out, "exec curl")[0];
    assert_eq!(
        curl.parent_span_id,
        Some(oslo.span_id),
        "the arguments name oslo"
    );
    assert!(matches!(curl.status, SpanStatus::Error(_)));
    assert_eq!(str_attr(curl, "process.exit.code").as_deref(), Some("6"));
    // No content capture: no results on the spans.
    assert!(tools
        .iter()
        .all(|t| t.attr("gen_ai.tool.call.result").is_none()));
}

#[test]
fn two_concurrent_conversations_in_one_process_are_two_traces() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let (qa, qb) = ([user("task A")], [user("task B")]);
    a.llm_call(&call(AGENT, 0, 50, &qa, &[("ca", "f", "{}")]), &mut out);
    a.llm_call(&call(AGENT, 10, 60, &qb, &[("cb", "g", "{}")]), &mut out);
    let qa2 = [user("task A"), asks("ca", "f", "{}"), result("ca", "1")];
    let qb2 = [user("task B"), asks("cb", "g", "{}"), result("cb", "2")];
    a.llm_call(&call(AGENT, 70, 90, &qb2, &[]), &mut out);
    a.llm_call(&call(AGENT, 80, 120, &qa2, &[]), &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 2);
    assert_ne!(roots[0].trace_id, roots[1].trace_id);
    for root in roots {
        let in_trace: Vec<_> = out.iter().filter(|s| s.trace_id == root.trace_id).collect();
        assert_eq!(in_trace.len(), 4, "root, two chats, one tool");
        assert_eq!(root.parent_span_id, None);
    }
    assert_ne!(
        str_attr(named(&out, "invoke_agent")[0], "gen_ai.conversation.id"),
        str_attr(named(&out, "invoke_agent")[1], "gen_ai.conversation.id")
    );
}

#[test]
fn a_sub_agent_started_by_a_tool_nests_under_it() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let q = [user("research")];
    a.llm_call(
        &call(AGENT, 0, 100, &q, &[("c1", "delegate", "{}")]),
        &mut out,
    );
    // The tool runs a child agent process with its own conversation.
    let child = AGENT + 5;
    for e in exec(child, AGENT, 110, &["python3", "helper.py"]) {
        a.process_event(&e, &mut out);
    }
    let sq = [user("sub task")];
    a.llm_call(&call(child, 120, 150, &sq, &[]), &mut out);
    a.process_event(&exit(child, 160, Some(0)), &mut out);
    let q2 = [
        user("research"),
        asks("c1", "delegate", "{}"),
        result("c1", "done"),
    ];
    a.llm_call(&call(AGENT, 200, 250, &q2, &[]), &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 2);
    let outer = roots.iter().find(|r| r.parent_span_id.is_none()).unwrap();
    let inner = roots.iter().find(|r| r.parent_span_id.is_some()).unwrap();
    assert_eq!(inner.trace_id, outer.trace_id);
    let exec_span = named(&out, "exec python3")[0];
    let tool = named(&out, "execute_tool delegate")[0];
    assert_eq!(exec_span.parent_span_id, Some(tool.span_id));
    assert_eq!(
        inner.parent_span_id,
        Some(exec_span.span_id),
        "the child agent's run hangs under the process the tool spawned"
    );
    assert_eq!(
        str_attr(inner, "gen_ai.agent.name").as_deref(),
        Some("helper")
    );
    assert!(out.iter().all(|s| s.trace_id == outer.trace_id));
}

#[test]
fn a_session_that_outlives_the_tool_window_gets_its_own_trace() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    a.llm_call(
        &call(AGENT, 0, 10, &[user("A")], &[("c1", "wait", "{}")]),
        &mut out,
    );
    // Another session of the same process starts while A waits on its tool...
    a.llm_call(
        &call(AGENT, 20, 30, &[user("B")], &[("c2", "f", "{}")]),
        &mut out,
    );
    assert!(
        named(&out, "chat").len() == 1,
        "B's nesting is undecided: held"
    );
    // ...and A's window closes while B still runs: B is a parallel session.
    let qa2 = [user("A"), asks("c1", "wait", "{}"), result("c1", "x")];
    a.llm_call(&call(AGENT, 40, 50, &qa2, &[]), &mut out);
    let qb2 = [user("B"), asks("c2", "f", "{}"), result("c2", "y")];
    a.llm_call(&call(AGENT, 60, 70, &qb2, &[]), &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 2);
    assert!(roots.iter().all(|r| r.parent_span_id.is_none()));
    assert_ne!(roots[0].trace_id, roots[1].trace_id);
    assert_eq!(named(&out, "chat").len(), 4);
}

#[test]
fn an_abandoned_run_ends_at_its_last_activity() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    a.llm_call(
        &call(AGENT, 0, 100, &[user("x")], &[("c1", "slow", "{}")]),
        &mut out,
    );
    a.tick(100 * MS + 1000 * MS, &mut out);
    assert!(
        named(&out, "invoke_agent").is_empty(),
        "not idle long enough"
    );
    a.tick(100 * MS + 60_001 * MS, &mut out);
    let root = named(&out, "invoke_agent")[0];
    assert_eq!(
        str_attr(root, "agent_tracer.run.outcome").as_deref(),
        Some("abandoned")
    );
    let tool = named(&out, "execute_tool slow")[0];
    assert_eq!(
        str_attr(tool, "agent_tracer.tool.unfinished").as_deref(),
        Some("true")
    );
    assert_eq!(
        a.health
            .agent_runs_abandoned
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_run_whose_process_exits_after_an_error_fails() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let mut failed = call(AGENT, 0, 10, &[user("x")], &[]);
    failed.error = Some(LlmError {
        error_type: "rate_limit_exceeded".into(),
        message: Some("slow down".into()),
    });
    failed.http.status = Some(429);
    a.llm_call(&failed, &mut out);
    assert!(named(&out, "invoke_agent").is_empty());
    // The identical retry belongs to the same run and is flagged.
    let mut retry = failed.clone();
    retry.http.start_ns = 20 * MS;
    retry.http.end_ns = 30 * MS;
    a.llm_call(&retry, &mut out);
    a.process_event(&exit(AGENT, 40, Some(1)), &mut out);
    let root = named(&out, "invoke_agent")[0];
    assert_eq!(
        str_attr(root, "agent_tracer.run.outcome").as_deref(),
        Some("error")
    );
    assert_eq!(
        str_attr(root, "error.type").as_deref(),
        Some("rate_limit_exceeded")
    );
    assert_eq!(
        str_attr(root, "agent_tracer.run.repeated_requests").as_deref(),
        Some("1")
    );
    assert!(root
        .events
        .iter()
        .any(|e| e.name == "agent_tracer.request_repeated"));
    assert!(matches!(root.status, SpanStatus::Error(_)));
    assert_eq!(named(&out, "chat").len(), 2);
}

#[test]
fn the_same_tool_call_three_times_in_a_row_is_a_loop() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let mut messages = vec![user("find it")];
    for i in 0..3 {
        let id = format!("c{i}");
        a.llm_call(
            &call(
                AGENT,
                i * 100,
                i * 100 + 50,
                &messages,
                &[(&id, "search", r#"{"q":"x"}"#)],
            ),
            &mut out,
        );
        messages.push(asks(&id, "search", r#"{"q":"x"}"#));
        messages.push(result(&id, "nothing"));
    }
    a.llm_call(&call(AGENT, 300, 350, &messages, &[]), &mut out);
    let root = named(&out, "invoke_agent")[0];
    assert_eq!(
        str_attr(root, "agent_tracer.run.loop_detected").as_deref(),
        Some("true")
    );
    let event = root
        .events
        .iter()
        .find(|e| e.name == "agent_tracer.loop_detected")
        .unwrap();
    assert!(event
        .attributes
        .contains(&("gen_ai.tool.name", AttrValue::from("search"))));
    assert_eq!(
        a.health
            .agent_loops
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(named(&out, "execute_tool").len(), 3);
}

#[test]
fn unrelated_http_outside_runs_is_its_own_trace_and_sampling_keeps_runs_whole() {
    let mut a = assembler(false);
    a.config.sample_ratio = 0.0;
    let mut out = Vec::new();
    a.llm_call(
        &call(AGENT, 0, 10, &[user("x")], &[("c", "t", "{}")]),
        &mut out,
    );
    let q2 = [user("x"), asks("c", "t", "{}"), result("c", "r")];
    a.llm_call(&call(AGENT, 20, 30, &q2, &[]), &mut out);
    assert!(out.is_empty(), "a sampled-out run exports nothing");
    assert_eq!(
        a.health
            .sampled_out_spans
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // An erroring run is kept whole despite the ratio.
    let mut failed = call(AGENT, 40, 50, &[user("y")], &[]);
    failed.error = Some(LlmError {
        error_type: "500".into(),
        message: None,
    });
    a.llm_call(&failed, &mut out);
    a.process_event(&exit(AGENT, 60, None), &mut out);
    assert_eq!(named(&out, "invoke_agent").len(), 1);
    assert_eq!(named(&out, "chat").len(), 1);
}

#[test]
fn conventions_can_be_turned_off() {
    let mut a = assembler(false);
    a.config.openinference_attributes = false;
    let mut out = Vec::new();
    a.llm_call(&call(AGENT, 0, 10, &[user("x")], &[]), &mut out);
    assert!(out
        .iter()
        .all(|s| s.attr("openinference.span.kind").is_none()));
    assert!(out
        .iter()
        .all(|s| s.attr("gen_ai.operation.name").is_some()));
    let mut b = assembler(false);
    b.config.genai_attributes = false;
    let mut out = Vec::new();
    b.llm_call(&call(AGENT, 0, 10, &[user("x")], &[]), &mut out);
    assert!(out
        .iter()
        .all(|s| s.attr("gen_ai.operation.name").is_none()));
    assert!(out
        .iter()
        .all(|s| s.attr("openinference.span.kind").is_some()));
}

#[test]
fn a_same_process_sub_agent_nests_once_the_tool_result_comes_back() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    a.llm_call(
        &call(AGENT, 0, 10, &[user("plan")], &[("c1", "research", "{}")]),
        &mut out,
    );
    // The tool runs a sub-agent in the same process: its own conversation, done in the window.
    a.llm_call(&call(AGENT, 20, 30, &[user("sub question")], &[]), &mut out);
    assert!(
        named(&out, "invoke_agent").is_empty(),
        "held until the window closes"
    );
    let q2 = [
        user("plan"),
        asks("c1", "research", "{}"),
        result("c1", "found"),
    ];
    a.llm_call(&call(AGENT, 40, 50, &q2, &[]), &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 2);
    let tool = named(&out, "execute_tool research")[0];
    let inner = roots.iter().find(|r| r.parent_span_id.is_some()).unwrap();
    assert_eq!(inner.parent_span_id, Some(tool.span_id));
    assert!(out.iter().all(|s| s.trace_id == tool.trace_id));
}

#[test]
fn calls_made_while_a_tool_call_is_never_answered_are_not_its_sub_agent() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    // A script that ignores the tool call it got, then makes an unrelated call.
    a.llm_call(
        &call(
            AGENT,
            0,
            10,
            &[user("weather")],
            &[("c1", "get_weather", "{}")],
        ),
        &mut out,
    );
    a.llm_call(&call(AGENT, 20, 30, &[user("other")], &[]), &mut out);
    a.process_event(&exit(AGENT, 40, Some(0)), &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 2);
    assert!(roots.iter().all(|r| r.parent_span_id.is_none()));
    assert_ne!(roots[0].trace_id, roots[1].trace_id);
    let other = roots
        .iter()
        .find(|r| str_attr(r, "agent_tracer.run.outcome").as_deref() == Some("completed"))
        .unwrap();
    assert_eq!(
        out.iter().filter(|s| s.trace_id == other.trace_id).count(),
        2,
        "its chat moved to its own trace with it"
    );
}

fn mcp_tools_call(pid: u32, start: u64, end: u64, tool: &str) -> McpExchange {
    McpExchange {
        transport: McpTransport::Http(HttpCall {
            conn: ConnKey {
                pid,
                source: Source::Socket,
                conn_id: 9,
            },
            method: "POST".into(),
            url_path: "/mcp".into(),
            status: Some(200),
            server_address: Some("127.0.0.1".into()),
            server_port: Some(8000),
            start_ns: start * MS,
            end_ns: end * MS,
            request_body_bytes: 10,
            response_body_bytes: 10,
            bytes_lost: 0,
            interrupted: None,
            http2_joined_mid_connection: false,
            http2_incomplete_headers: false,
            body_decoded_truncated: false,
            request_body_cut: None,
            response_body_cut: None,
        }),
        mcp: mcp::McpCall {
            method: "tools/call".into(),
            request_id: "3".into(),
            target: Some(tool.into()),
            resource_uri: None,
            protocol_version: None,
            arguments: None,
            result: None,
            error_code: None,
            error_message: None,
            tool_error: false,
            unanswered: false,
        },
    }
}

#[test]
fn mcp_tool_calls_hang_under_the_tool_of_the_same_name() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    // The model asks for two tools at once; the agent serves one through an MCP server whose
    // tool is prefixed the way agents name MCP tools.
    a.llm_call(
        &call(
            AGENT,
            0,
            10,
            &[user("x")],
            &[
                ("c1", "mcp__files__read_file", "{}"),
                ("c2", "search", "{}"),
            ],
        ),
        &mut out,
    );
    a.mcp_call(&mcp_tools_call(AGENT, 20, 25, "search"), &mut out);
    a.mcp_call(&mcp_tools_call(AGENT, 26, 30, "read_file"), &mut out);
    // Before any run, an MCP call is its own trace.
    let mut lone = Vec::new();
    assembler(false).mcp_call(&mcp_tools_call(AGENT, 0, 1, "search"), &mut lone);
    assert_eq!(lone.len(), 1);
    assert_eq!(lone[0].parent_span_id, None);
    let q2 = [
        user("x"),
        json!({"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "mcp__files__read_file", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "search", "arguments": "{}"}}]}),
        result("c1", "text"),
        result("c2", "hits"),
    ];
    a.llm_call(&call(AGENT, 40, 50, &q2, &[]), &mut out);
    let search = named(&out, "execute_tool search")[0];
    let read = named(&out, "execute_tool mcp__files__read_file")[0];
    let mcp_search = named(&out, "tools/call search")[0];
    let mcp_read = named(&out, "tools/call read_file")[0];
    assert_eq!(mcp_search.parent_span_id, Some(search.span_id));
    assert_eq!(mcp_read.parent_span_id, Some(read.span_id));
    assert!(out.iter().all(|s| s.trace_id == search.trace_id));
}

/// A Responses call of the agent (Codex's shape: later requests continue the previous response
/// by id and send only new items), answered by `response_id` with `tool_calls`.
fn responses_call(
    start: u64,
    end: u64,
    body: Value,
    response_id: &str,
    tool_calls: &[(&str, &str, &str)],
) -> LlmCall {
    let mut c = call(AGENT, start, end, &[], tool_calls);
    c.http.url_path = "/v1/responses".into();
    c.request.history = openai::Responses.history(&body, true);
    c.response.id = Some(response_id.into());
    c
}

#[test]
fn a_prewarm_does_not_end_the_run_it_opens() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let first = json!({"generate": false, "input": [user("run it")]});
    a.llm_call(&responses_call(0, 10, first, "resp_1", &[]), &mut out);
    assert!(named(&out, "invoke_agent").is_empty(), "still running");
    let turn = json!({"previous_response_id": "resp_1", "input": [user("run it")]});
    a.llm_call(
        &responses_call(20, 40, turn, "resp_2", &[("call_1", "exec_command", "{}")]),
        &mut out,
    );
    let answer = json!({"previous_response_id": "resp_2", "input": [
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]});
    a.llm_call(&responses_call(60, 80, answer, "resp_3", &[]), &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 1, "{out:#?}");
    assert_eq!(
        str_attr(roots[0], "agent_tracer.run.llm_calls").as_deref(),
        Some("3")
    );
    assert_eq!(named(&out, "execute_tool exec_command").len(), 1);
    assert!(out.iter().all(|s| s.trace_id == roots[0].trace_id));
}

/// Codex runs a tool as soon as the call's item is complete in the stream, and the pipeline can
/// deliver that program's whole life before the answer that asked for it: the program still
/// belongs to the tool, whose window opens when the call was complete. A program of the agent's
/// own before that stays under the run.
#[test]
fn a_tool_program_seen_before_the_answer_that_asked_for_it_is_the_tools() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let first = json!({"generate": false, "input": [user("run it")]});
    a.llm_call(&responses_call(0, 10, first, "resp_1", &[]), &mut out);
    // The agent's own helper, before any tool was asked for.
    for e in exec(AGENT + 1, AGENT, 15, &["pyenv", "init"]) {
        a.process_event(&e, &mut out);
    }
    a.process_event(&exit(AGENT + 1, 18, Some(0)), &mut out);
    // The tool's program, exec'd at 32 ms: after the call was complete (30 ms), before the
    // answer ended (40 ms), and delivered before that answer.
    for e in exec(AGENT + 2, AGENT, 32, &["bash", "-lc", "uname -s"]) {
        a.process_event(&e, &mut out);
    }
    a.process_event(&exit(AGENT + 2, 36, Some(0)), &mut out);
    assert!(
        named(&out, "exec").is_empty(),
        "held until the answer is in"
    );
    let turn = json!({"previous_response_id": "resp_1", "input": [user("run it")]});
    let mut asking = responses_call(
        20,
        40,
        turn,
        "resp_2",
        &[("call_1", "exec_command", r#"{"cmd":"uname -s"}"#)],
    );
    asking.response.tools_requested_ns = Some(30 * MS);
    a.llm_call(&asking, &mut out);
    let answer = json!({"previous_response_id": "resp_2", "input": [
        {"type": "function_call_output", "call_id": "call_1", "output": "Linux"}]});
    a.llm_call(&responses_call(60, 80, answer, "resp_3", &[]), &mut out);

    let root = named(&out, "invoke_agent")[0];
    let tool = named(&out, "execute_tool exec_command")[0];
    assert_eq!(
        tool.start_unix_ns,
        named(&out, "chat")[1].end_unix_ns - 10 * MS
    );
    let bash = named(&out, "exec bash")[0];
    assert_eq!(bash.parent_span_id, Some(tool.span_id), "{out:#?}");
    let pyenv = named(&out, "exec pyenv")[0];
    assert_eq!(pyenv.parent_span_id, Some(root.span_id));
    assert!(out.iter().all(|s| s.trace_id == root.trace_id));
}

/// The agent acts on the stream's terminal event, but the exchange (and with it the run's first
/// model call) ends here only when the transport's own end arrives: the tool's whole program can
/// come first, before any run of the agent exists. It is still the tool's; a program the agent
/// ran before its request was sent is not the run's.
#[test]
fn a_tool_program_seen_before_the_run_existed_is_the_tools() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    for e in exec(AGENT + 1, AGENT, 5, &["git", "status"]) {
        a.process_event(&e, &mut out);
    }
    a.process_event(&exit(AGENT + 1, 8, Some(0)), &mut out);
    for e in exec(AGENT + 2, AGENT, 105, &["bash", "-c", "ls -l"]) {
        a.process_event(&e, &mut out);
    }
    a.process_event(&exit(AGENT + 2, 109, Some(0)), &mut out);
    // Still running when the call comes in.
    for e in exec(AGENT + 3, AGENT, 106, &["tee", "log"]) {
        a.process_event(&e, &mut out);
    }
    let q = [user("list files")];
    let mut asking = call(
        AGENT,
        10,
        110,
        &q,
        &[("call_1", "shell", r#"{"cmd":"ls -l"}"#)],
    );
    asking.response.tools_requested_ns = Some(100 * MS);
    a.llm_call(&asking, &mut out);
    a.process_event(&exit(AGENT + 3, 112, Some(0)), &mut out);
    let q2 = [
        user("list files"),
        asks("call_1", "shell", r#"{"cmd":"ls -l"}"#),
        result("call_1", "a b c"),
    ];
    a.llm_call(&call(AGENT, 150, 200, &q2, &[]), &mut out);

    let root = named(&out, "invoke_agent")[0];
    let tool = named(&out, "execute_tool shell")[0];
    assert_eq!(
        named(&out, "exec bash")[0].parent_span_id,
        Some(tool.span_id),
        "{out:#?}"
    );
    assert_eq!(
        named(&out, "exec tee")[0].parent_span_id,
        Some(tool.span_id)
    );
    assert!(
        named(&out, "exec git").is_empty(),
        "before the run: {out:#?}"
    );
    assert!(out.iter().all(|s| s.trace_id == root.trace_id));
}

fn offering_tools(mut c: LlmCall) -> LlmCall {
    c.request.tool_names = vec!["run_shell_command".into()];
    c
}

/// Gemini CLI classifies the prompt with its model router (another system prompt, no tools,
/// one JSON answer) right before the loop's first call: one user request, one run.
#[test]
fn a_side_request_before_the_tool_loop_is_part_of_its_run() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let router = [
        json!({"role": "system", "content": "You are a router; answer with JSON."}),
        user("list the files"),
    ];
    a.llm_call(&call(AGENT, 0, 40, &router, &[]), &mut out);
    assert!(
        named(&out, "invoke_agent").is_empty(),
        "the router's answer alone ends no run: {out:#?}"
    );
    let turn = [
        json!({"role": "system", "content": "You are a coding agent."}),
        user("list the files"),
    ];
    let first = offering_tools(call(AGENT, 50, 100, &turn, &[("c1", "shell", "ls")]));
    a.llm_call(&first, &mut out);
    let mut with_result = turn.to_vec();
    with_result.push(asks("c1", "shell", "ls"));
    with_result.push(result("c1", "a b"));
    a.llm_call(
        &offering_tools(call(AGENT, 200, 260, &with_result, &[])),
        &mut out,
    );
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 1, "{out:#?}");
    let root = roots[0];
    assert_eq!(
        str_attr(root, "agent_tracer.run.outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(
        root.attr("agent_tracer.run.llm_calls"),
        Some(&AttrValue::Int(3))
    );
    assert_eq!(
        root.attr("gen_ai.usage.input_tokens"),
        Some(&AttrValue::Int(300))
    );
    let chats = named(&out, "chat");
    assert_eq!(chats.len(), 3, "{out:#?}");
    for chat in chats {
        assert_eq!(chat.trace_id, root.trace_id);
        assert_eq!(chat.parent_span_id, Some(root.span_id));
    }
    assert!(root.start_unix_ns <= out.iter().map(|s| s.start_unix_ns).min().unwrap_or(0));
}

/// A side request whose loop never comes (or a one-off question) is a completed run of its own
/// once its process exits or the window passes.
#[test]
fn a_side_request_without_a_loop_is_its_own_completed_run() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    a.llm_call(&call(AGENT, 0, 40, &[user("hello")], &[]), &mut out);
    a.tick(40 * MS + SIDE_REQUEST_WINDOW_NS / 2, &mut out);
    assert!(named(&out, "invoke_agent").is_empty());
    a.tick(41 * MS + SIDE_REQUEST_WINDOW_NS, &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 1, "{out:#?}");
    assert_eq!(
        str_attr(roots[0], "agent_tracer.run.outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(
        named(&out, "chat")[0].parent_span_id,
        Some(roots[0].span_id)
    );

    let mut b = assembler(false);
    let mut out = Vec::new();
    b.llm_call(&call(AGENT, 0, 40, &[user("hello")], &[]), &mut out);
    b.process_event(&exit(AGENT, 5_000, Some(0)), &mut out);
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 1, "{out:#?}");
    assert_eq!(
        str_attr(roots[0], "agent_tracer.run.outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(roots[0].end_unix_ns - roots[0].start_unix_ns, 40 * MS);
}

/// A side request answered while the loop's first call is already in (Claude Code's quota
/// probe runs beside it) joins the loop at once.
#[test]
fn a_side_request_during_the_loop_joins_it() {
    let mut a = assembler(false);
    let mut out = Vec::new();
    let turn = [user("list the files")];
    a.llm_call(
        &offering_tools(call(AGENT, 0, 50, &turn, &[("c1", "shell", "ls")])),
        &mut out,
    );
    a.llm_call(&call(AGENT, 10, 60, &[user("quota")], &[]), &mut out);
    let mut with_result = turn.to_vec();
    with_result.push(asks("c1", "shell", "ls"));
    with_result.push(result("c1", "a b"));
    a.llm_call(
        &offering_tools(call(AGENT, 200, 260, &with_result, &[])),
        &mut out,
    );
    let roots = named(&out, "invoke_agent");
    assert_eq!(roots.len(), 1, "{out:#?}");
    assert!(named(&out, "chat")
        .iter()
        .all(|c| c.parent_span_id == Some(roots[0].span_id)));
}
