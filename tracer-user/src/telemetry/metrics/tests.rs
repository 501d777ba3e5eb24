//! The recorder's aggregation, over spans shaped like the agent stage's.

use super::*;
use crate::{model::span::SpanKind, model::span::SpanStatus, processes::ProcessInfo};

pub fn span(attributes: Vec<(&'static str, AttrValue)>, duration_ms: u64) -> Span {
    let mut process = ProcessInfo::unknown(42);
    process.executable_name = "python3".to_string();
    Span {
        trace_id: [1; 16],
        span_id: [2; 8],
        parent_span_id: None,
        name: "chat m".to_string(),
        kind: SpanKind::Client,
        start_unix_ns: 1_000_000_000,
        end_unix_ns: 1_000_000_000 + duration_ms * 1_000_000,
        attributes,
        status: SpanStatus::Unset,
        events: Vec::new(),
        process: Arc::new(process),
    }
}

/// An ended run's `invoke_agent` span with `loops` loop events.
pub fn run_span(outcome: &str, loops: usize, repeated: u64) -> Span {
    let mut s = span(
        vec![
            ("gen_ai.operation.name", "invoke_agent".into()),
            ("agent_tracer.run.outcome", outcome.into()),
            ("agent_tracer.run.repeated_requests", repeated.into()),
        ],
        10,
    );
    for _ in 0..loops {
        s.events.push(crate::model::span::SpanEvent {
            name: "agent_tracer.loop_detected",
            time_unix_ns: 1,
            attributes: Vec::new(),
        });
    }
    s
}

pub fn chat(model: &str, input: i64, output: i64) -> Vec<(&'static str, AttrValue)> {
    vec![
        ("gen_ai.operation.name", "chat".into()),
        ("gen_ai.provider.name", "openai".into()),
        ("gen_ai.request.model", model.into()),
        ("gen_ai.response.model", format!("{model}-2024").into()),
        ("server.address", "127.0.0.1".into()),
        ("server.port", 8443u16.into()),
        ("gen_ai.usage.input_tokens", input.into()),
        ("gen_ai.usage.output_tokens", output.into()),
        ("http.request.method", "POST".into()),
    ]
}

fn family<'a>(s: &'a Snapshot, name: &str) -> &'a HistogramFamily {
    s.histograms
        .iter()
        .find(|f| f.def.instrument.name == name)
        .unwrap()
}

fn counter<'a>(s: &'a Snapshot, name: &str) -> &'a CounterFamily {
    s.counters.iter().find(|f| f.name == name).unwrap()
}

fn label<'a>(attrs: &'a Attributes, key: &str) -> Option<&'a Label> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[test]
fn llm_spans_become_duration_token_and_call_metrics() {
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    r.observe(&span(chat("gpt-4o", 10, 5), 300));
    r.observe(&span(chat("gpt-4o", 1000, 64), 30));
    let mut failed = chat("gpt-4o", 0, 0);
    failed.retain(|(k, _)| !k.starts_with("gen_ai.usage"));
    failed.push(("error.type", "rate_limit_exceeded".into()));
    r.observe(&span(failed, 5));
    let s = r.snapshot();

    let duration = family(&s, "gen_ai.client.operation.duration");
    assert_eq!(duration.points.len(), 2, "ok and failed are two series");
    let (attrs, ok) = duration
        .points
        .iter()
        .find(|(a, _)| label(a, "error.type").is_none())
        .unwrap();
    assert_eq!(
        attrs,
        &vec![
            ("gen_ai.operation.name", Label::Str("chat".into())),
            ("gen_ai.provider.name", Label::Str("openai".into())),
            ("gen_ai.request.model", Label::Str("gpt-4o".into())),
            ("gen_ai.response.model", Label::Str("gpt-4o-2024".into())),
            ("server.address", Label::Str("127.0.0.1".into())),
            ("server.port", Label::Int(8443)),
            ("gen_ai.agent.name", Label::Str("python3".into())),
        ]
    );
    assert_eq!(ok.count, 2);
    assert!((ok.sum - 0.33).abs() < 1e-9);
    // 0.03 s in (0.02, 0.04], 0.3 s in (0.16, 0.32].
    let mut expected = vec![0; DURATION_BUCKETS.len() + 1];
    expected[2] = 1;
    expected[5] = 1;
    assert_eq!(ok.bucket_counts, expected);
    assert_eq!((ok.min, ok.max), (0.03, 0.3));
    let (attrs, err) = duration
        .points
        .iter()
        .find(|(a, _)| label(a, "error.type").is_some())
        .unwrap();
    assert_eq!(
        label(attrs, "error.type"),
        Some(&Label::Str("rate_limit_exceeded".into()))
    );
    assert_eq!(err.count, 1);
    assert_eq!(err.bucket_counts[0], 1, "0.005 s is in the first bucket");

    let tokens = family(&s, "gen_ai.client.token.usage");
    assert_eq!(
        tokens.points.len(),
        2,
        "input and output; none for the failure"
    );
    let input = tokens
        .points
        .iter()
        .find(|(a, _)| label(a, "gen_ai.token.type") == Some(&Label::Str("input".into())))
        .unwrap();
    assert_eq!(label(&input.0, "error.type"), None);
    assert_eq!((input.1.count, input.1.sum), (2, 1010.0));
    // 10 in (4, 16], 1000 in (256, 1024].
    assert_eq!(input.1.bucket_counts[2], 1);
    assert_eq!(input.1.bucket_counts[5], 1);
    assert_eq!(input.1.bucket_counts.iter().sum::<u64>(), 2);
    let output = tokens
        .points
        .iter()
        .find(|(a, _)| label(a, "gen_ai.token.type") == Some(&Label::Str("output".into())))
        .unwrap();
    assert_eq!((output.1.count, output.1.sum), (2, 69.0));
    // 5 in (4, 16]; 64 is a bound: it belongs to (16, 64], not the next bucket.
    assert_eq!(output.1.bucket_counts[2], 1);
    assert_eq!(output.1.bucket_counts[3], 1);
    assert_eq!(output.1.bucket_counts[4], 0);

    let calls = counter(&s, "agent_tracer.model.calls");
    let values: Vec<(Option<&Label>, f64)> = calls
        .points
        .iter()
        .map(|(a, v)| (label(a, "error.type"), *v))
        .collect();
    assert_eq!(
        values,
        vec![
            (Some(&Label::Str("rate_limit_exceeded".into())), 1.0),
            (None, 2.0)
        ]
    );
    assert!(family(&s, "gen_ai.client.operation.time_to_first_chunk")
        .points
        .is_empty());
    assert!(counter(&s, "agent_tracer.model.cost").points.is_empty());
}

#[test]
fn streaming_timing_cost_and_agent_name() {
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    let mut attrs = chat("claude", 7, 3);
    attrs.push(("gen_ai.response.time_to_first_chunk", 0.25.into()));
    attrs.push(("agent_tracer.time_per_output_token", 0.06.into()));
    attrs.push(("agent_tracer.cost.usd", 0.0125.into()));
    attrs.push(("gen_ai.agent.name", "researcher".into()));
    r.observe(&span(attrs.clone(), 900));
    attrs.retain(|(k, _)| *k != "agent_tracer.cost.usd");
    attrs.push(("agent_tracer.cost.usd", 0.0075.into()));
    r.observe(&span(attrs, 900));
    let s = r.snapshot();

    let ttfc = &family(&s, "gen_ai.client.operation.time_to_first_chunk").points;
    assert_eq!(ttfc.len(), 1);
    assert_eq!((ttfc[0].1.count, ttfc[0].1.sum), (2, 0.5));
    assert_eq!(ttfc[0].1.bucket_counts[5], 2, "(0.16, 0.32]");
    assert_eq!(
        label(&ttfc[0].0, "gen_ai.agent.name"),
        Some(&Label::Str("researcher".into()))
    );
    let tpot = &family(&s, "agent_tracer.model.time_per_output_token").points;
    assert_eq!(tpot[0].1.bucket_counts[3], 2, "(0.05, 0.075]");
    let cost = &counter(&s, "agent_tracer.model.cost").points;
    assert_eq!(cost.len(), 1);
    assert!((cost[0].1 - 0.02).abs() < 1e-12);
    assert_eq!(
        label(&cost[0].0, "gen_ai.request.model"),
        Some(&Label::Str("claude".into()))
    );
}

#[test]
fn mcp_spans_and_non_llm_spans() {
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    r.observe(&span(
        vec![
            ("mcp.method.name", "tools/call".into()),
            ("jsonrpc.request.id", "7".into()),
            ("gen_ai.operation.name", "execute_tool".into()),
            ("gen_ai.tool.name", "add".into()),
            ("error.type", "tool_error".into()),
        ],
        150,
    ));
    // A generic HTTP span and an agent span feed nothing.
    r.observe(&span(vec![("http.request.method", "GET".into())], 10));
    r.observe(&span(
        vec![("gen_ai.operation.name", "invoke_agent".into())],
        10,
    ));
    let s = r.snapshot();
    let mcp = &family(&s, "mcp.client.operation.duration").points;
    assert_eq!(mcp.len(), 1);
    assert_eq!(
        mcp[0].0,
        vec![
            ("mcp.method.name", Label::Str("tools/call".into())),
            ("gen_ai.operation.name", Label::Str("execute_tool".into())),
            ("gen_ai.tool.name", Label::Str("add".into())),
            ("error.type", Label::Str("tool_error".into())),
            ("gen_ai.agent.name", Label::Str("python3".into())),
        ]
    );
    assert_eq!(mcp[0].1.bucket_counts[4], 1, "0.15 s in (0.1, 0.2]");
    assert!(family(&s, "gen_ai.client.operation.duration")
        .points
        .is_empty());
    assert!(counter(&s, "agent_tracer.model.calls").points.is_empty());
}

#[test]
fn health_counters_and_unsupported_tls() {
    let health = Arc::new(Health::default());
    Health::add(&health.records, 12);
    Health::add(
        health.kernel(tracer_common::counter::RINGBUF_FULL_RECORDS),
        3,
    );
    health.unsupported_tls("/usr/bin/rustls-app", "rustls");
    health.unsupported_tls("/usr/bin/rustls-app", "rustls");
    let s = MetricsRecorder::new(health).snapshot();
    let records = counter(&s, "agent_tracer.records");
    assert_eq!(records.points, vec![(Vec::new(), 12.0)]);
    assert_eq!(records.description, "Ring-buffer records read.");
    assert_eq!(records.unit, "1");
    assert_eq!(
        counter(&s, "agent_tracer.kernel_ringbuf_full_records").points[0].1,
        3.0
    );
    assert_eq!(counter(&s, "agent_tracer.bytes").unit, "By");
    assert_eq!(
        counter(&s, "agent_tracer.unsupported_tls").points,
        vec![(
            vec![
                ("binary", Label::Str("/usr/bin/rustls-app".into())),
                ("stack", Label::Str("rustls".into())),
            ],
            2.0
        )]
    );
}

#[test]
fn model_calls_carry_the_pods_namespace_workload_and_container() {
    use crate::processes::{kube_api::Workload, PodInfo, PodMeta};
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    let mut s = span(chat("gpt-4o", 10, 5), 100);
    let mut process = ProcessInfo::unknown(42);
    process.executable_name = "python3".to_string();
    process.pod = Some(Arc::new(PodInfo {
        uid: "u".into(),
        name: Some("api-1".into()),
        namespace: Some("team-a".into()),
        container_name: Some("api".into()),
    }));
    process.pod_api = Some(Arc::new(PodMeta {
        namespace: "team-a".into(),
        workload: Workload {
            statefulset: Some("api".into()),
            ..Default::default()
        },
        ..Default::default()
    }));
    s.process = Arc::new(process);
    s.attributes.push(("agent_tracer.cost.usd", 0.5.into()));
    r.observe(&s);
    let snap = r.snapshot();
    let who = [
        ("k8s.namespace.name", Label::Str("team-a".into())),
        ("k8s.statefulset.name", Label::Str("api".into())),
        ("k8s.container.name", Label::Str("api".into())),
    ];
    for name in ["agent_tracer.model.cost", "agent_tracer.model.calls"] {
        let (attrs, _) = &counter(&snap, name).points[0];
        assert!(who.iter().all(|w| attrs.contains(w)), "{name}: {attrs:?}");
    }
    for name in [
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
    ] {
        let (attrs, _) = &family(&snap, name).points[0];
        assert!(who.iter().all(|w| attrs.contains(w)), "{name}: {attrs:?}");
    }
    assert_eq!(
        label(
            &counter(&snap, "agent_tracer.model.cost").points[0].0,
            "k8s.pod.name"
        ),
        None,
        "pods come and go: not a series key"
    );
}

#[test]
fn runs_loops_repeats_and_tool_errors_become_counters() {
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    r.observe(&run_span("completed", 0, 0));
    r.observe(&run_span("completed", 1, 2));
    r.observe(&run_span("abandoned", 0, 0));
    for error in [None, Some("tool_error"), Some("tool_error")] {
        let mut a = vec![
            ("gen_ai.operation.name", "execute_tool".into()),
            ("gen_ai.tool.name", "run_task".into()),
        ];
        if let Some(e) = error {
            a.push(("error.type", e.into()));
        }
        r.observe(&span(a, 5));
    }
    let s = r.snapshot();
    let outcome = |o: &str| {
        counter(&s, "agent_tracer.runs")
            .points
            .iter()
            .find(|(a, _)| label(a, "agent_tracer.run.outcome") == Some(&Label::Str(o.into())))
            .map(|(_, v)| *v)
    };
    assert_eq!(outcome("completed"), Some(2.0));
    assert_eq!(outcome("abandoned"), Some(1.0));
    assert_eq!(outcome("error"), None);
    assert_eq!(counter(&s, "agent_tracer.run.loops").points[0].1, 1.0);
    assert_eq!(
        counter(&s, "agent_tracer.run.repeated_requests").points[0].1,
        2.0
    );
    let executions: f64 = counter(&s, "agent_tracer.tool.executions")
        .points
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(executions, 3.0);
    let errors = &counter(&s, "agent_tracer.tool.errors").points;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].1, 2.0);
    assert_eq!(
        label(&errors[0].0, "gen_ai.tool.name"),
        Some(&Label::Str("run_task".into()))
    );
    // Runs and tools are not model calls.
    assert!(counter(&s, "agent_tracer.model.calls").points.is_empty());
}

#[test]
fn encrypted_only_connections_to_model_apis_count_as_blind() {
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    r.observe(&span(
        vec![
            ("agent_tracer.capture.encrypted", true.into()),
            ("gen_ai.provider.name", "openai".into()),
            ("agent_tracer.tls.sent_bytes", 1000u64.into()),
            ("agent_tracer.tls.received_bytes", 3000u64.into()),
        ],
        5,
    ));
    let s = r.snapshot();
    let gauge = |name: &str| {
        s.gauges
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.points.first())
            .map(|(_, v)| *v)
    };
    assert_eq!(gauge("agent_tracer.coverage.encrypted_bytes"), Some(4000.0));
    assert_eq!(
        gauge("agent_tracer.coverage.blind_model_connections"),
        Some(1.0)
    );
    assert_eq!(gauge("agent_tracer.coverage.plaintext_bytes"), Some(0.0));
}

#[test]
fn series_beyond_the_limit_fold_into_overflow() {
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    for i in 0..MAX_SERIES_PER_METRIC + 5 {
        r.observe(&span(chat(&format!("m{i}"), 1, 1), 1));
    }
    let s = r.snapshot();
    let calls = &counter(&s, "agent_tracer.model.calls").points;
    assert_eq!(calls.len(), MAX_SERIES_PER_METRIC + 1);
    let overflow = calls
        .iter()
        .find(|(a, _)| a == &vec![(OVERFLOW_ATTRIBUTE, Label::Bool(true))])
        .unwrap();
    assert_eq!(overflow.1, 5.0);
    let total: f64 = calls.iter().map(|(_, v)| v).sum();
    assert_eq!(total, (MAX_SERIES_PER_METRIC + 5) as f64);
}

#[test]
fn label_values_from_the_wire_are_cut_to_a_bound() {
    let r = MetricsRecorder::new(Arc::new(Health::default()));
    // A model name of 1 MiB, multi-byte characters straddling the cut.
    let huge = "é".repeat(512 * 1024);
    r.observe(&span(chat(&huge, 1, 1), 1));
    let s = r.snapshot();
    let (attrs, _) = &counter(&s, "agent_tracer.model.calls").points[0];
    let Some(Label::Str(model)) = label(attrs, "gen_ai.request.model") else {
        panic!("no model label: {attrs:?}");
    };
    assert_eq!(model.len(), MAX_LABEL_BYTES);
    assert!(huge.starts_with(model.as_str()));
}
