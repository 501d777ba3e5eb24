//! The Phoenix testkit against a real Arize Phoenix: an agent run built by hand (AGENT root, LLM and
//! TOOL children) sent over OTLP/HTTP protobuf, read back through Phoenix's REST and GraphQL APIs;
//! and, over OTLP/gRPC, a span carrying only OTel GenAI attributes, to pin down what Phoenix derives
//! on its own (the notes in tracer_testkit::phoenix rely on both).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
    common::v1::{any_value::Value as Av, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;
use serde_json::{json, Value};
use tracer_testkit::phoenix::Phoenix;

const WAIT: Duration = Duration::from_secs(60);

fn kv(key: &str, value: Av) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, Av::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, Av::IntValue(value))
}

/// Ids unique per run and per `salt` (Phoenix keys spans by span id alone, across traces).
fn ids(salt: u8) -> ([u8; 16], impl FnMut() -> [u8; 8]) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
    trace[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    trace[15] = salt;
    let mut next = 0u8;
    let span_ids = move || {
        next += 1;
        let mut id = [0u8; 8];
        id[..4].copy_from_slice(&trace[4..8]);
        id[6] = salt;
        id[7] = next;
        id
    };
    (trace, span_ids)
}

fn span(
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &str,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

fn resource_spans(resource: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "agent-tracer-testkit".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_run_reads_back_from_a_real_phoenix() -> Result<()> {
    let phoenix = Phoenix::start().await?;
    let project = format!("testkit-{}", std::process::id());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let ms = 1_000_000;

    // The agent run: both attribute sets, as the tracer emits them.
    let (trace_id, mut next_id) = ids(1);
    let (root, llm, tool) = (next_id(), next_id(), next_id());
    let run = vec![
        span(
            trace_id,
            root,
            None,
            "invoke_agent weather-agent",
            now,
            now + 90 * ms,
            vec![
                s("openinference.span.kind", "AGENT"),
                s("gen_ai.operation.name", "invoke_agent"),
                s("gen_ai.agent.name", "weather-agent"),
                s("agent.name", "weather-agent"),
                s("session.id", "session-42"),
                s("gen_ai.conversation.id", "session-42"),
            ],
        ),
        span(
            trace_id,
            llm,
            Some(root),
            "chat gpt-4o-mini",
            now + 5 * ms,
            now + 40 * ms,
            vec![
                s("openinference.span.kind", "LLM"),
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.provider.name", "openai"),
                s("gen_ai.request.model", "gpt-4o-mini"),
                s("llm.model_name", "gpt-4o-mini"),
                s("llm.system", "openai"),
                s("llm.provider", "openai"),
                i("llm.token_count.prompt", 12),
                i("llm.token_count.completion", 5),
                i("llm.token_count.total", 17),
                i("gen_ai.usage.input_tokens", 12),
                i("gen_ai.usage.output_tokens", 5),
                s("session.id", "session-42"),
            ],
        ),
        span(
            trace_id,
            tool,
            Some(root),
            "execute_tool get_weather",
            now + 45 * ms,
            now + 60 * ms,
            vec![
                s("openinference.span.kind", "TOOL"),
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.name", "get_weather"),
                s("tool.name", "get_weather"),
                s("gen_ai.tool.call.id", "call_1"),
                s("session.id", "session-42"),
            ],
        ),
    ];

    // GenAI attributes only, no project name: what Phoenix derives by itself.
    let (bare_trace, mut bare_next) = ids(2);
    let bare_span = bare_next();
    let bare = vec![span(
        bare_trace,
        bare_span,
        None,
        "chat bare-model",
        now,
        now + 10 * ms,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "bare-model"),
            i("gen_ai.usage.input_tokens", 7),
            i("gen_ai.usage.output_tokens", 3),
        ],
    )];

    let request = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            vec![
                s("service.name", "weather-agent"),
                s("openinference.project.name", &project),
            ],
            run,
        )],
    };
    phoenix.post_otlp(request.encode_to_vec()).await?;
    // The other one over OTLP/gRPC, so both endpoints are proven.
    TraceServiceClient::connect(phoenix.otlp_grpc_endpoint())
        .await
        .context("connecting to Phoenix's OTLP/gRPC port")?
        .export(ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(vec![s("service.name", "bare")], bare)],
        })
        .await
        .context("OTLP/gRPC export to Phoenix")?;

    let spans = phoenix.wait_for_spans(&project, 3, WAIT).await?;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let trace_hex = hex(&trace_id);
    for s in &spans {
        assert_eq!(
            s["context"]["trace_id"],
            trace_hex.as_str(),
            "one trace: {s:#}"
        );
    }
    let root_span = by_name(&spans, "invoke_agent weather-agent");
    let llm_span = by_name(&spans, "chat gpt-4o-mini");
    let tool_span = by_name(&spans, "execute_tool get_weather");
    assert_eq!(root_span["span_kind"], "AGENT");
    assert_eq!(llm_span["span_kind"], "LLM");
    assert_eq!(tool_span["span_kind"], "TOOL");
    assert_eq!(root_span["context"]["span_id"], hex(&root).as_str());
    assert_eq!(root_span["parent_id"], Value::Null);
    assert_eq!(llm_span["parent_id"], hex(&root).as_str());
    assert_eq!(tool_span["parent_id"], hex(&root).as_str());
    assert_eq!(llm_span["attributes"]["llm.model_name"], "gpt-4o-mini");
    assert_eq!(llm_span["attributes"]["llm.token_count.prompt"], 12);
    assert_eq!(llm_span["attributes"]["llm.token_count.completion"], 5);
    assert_eq!(llm_span["attributes"]["llm.token_count.total"], 17);
    assert_eq!(tool_span["attributes"]["tool.name"], "get_weather");
    assert_eq!(root_span["attributes"]["session.id"], "session-42");
    // The REST API reports the kind separately and drops the attribute.
    assert_eq!(
        llm_span["attributes"].get("openinference.span.kind"),
        None,
        "{llm_span:#}"
    );

    // What Phoenix's UI reads: its own token columns, rolled up to the root, and the session.
    let ui = phoenix
        .graphql(
            r#"query ($project: String!, $traceId: String!) {
                 getProjectByName(name: $project) {
                   traceCount tokenCountPrompt tokenCountCompletion tokenCountTotal
                 }
                 getTraceByOtelId(traceId: $traceId) {
                   numSpans
                   project { name }
                   session { sessionId numTraces }
                   rootSpan {
                     name spanKind
                     cumulativeTokenCountPrompt cumulativeTokenCountCompletion
                     cumulativeTokenCountTotal
                   }
                   spans(first: 100) { edges { node {
                     name spanKind tokenCountPrompt tokenCountCompletion tokenCountTotal
                   } } }
                 }
               }"#,
            json!({ "project": project, "traceId": trace_hex }),
        )
        .await?;
    let p = &ui["getProjectByName"];
    assert_eq!(p["traceCount"], 1, "{ui:#}");
    assert_eq!(p["tokenCountPrompt"], 12.0, "{ui:#}");
    assert_eq!(p["tokenCountCompletion"], 5.0, "{ui:#}");
    assert_eq!(p["tokenCountTotal"], 17.0, "{ui:#}");
    let t = &ui["getTraceByOtelId"];
    assert_eq!(t["numSpans"], 3, "{ui:#}");
    assert_eq!(t["project"]["name"], project.as_str());
    assert_eq!(t["session"]["sessionId"], "session-42", "{ui:#}");
    assert_eq!(t["rootSpan"]["spanKind"], "agent", "{ui:#}");
    // The LLM child's counts, summed up to the root (GraphQL gives them as floats).
    assert_eq!(t["rootSpan"]["cumulativeTokenCountPrompt"], 12.0, "{ui:#}");
    assert_eq!(
        t["rootSpan"]["cumulativeTokenCountCompletion"], 5.0,
        "{ui:#}"
    );
    assert_eq!(t["rootSpan"]["cumulativeTokenCountTotal"], 17.0, "{ui:#}");
    let nodes: Vec<&Value> = t["spans"]["edges"]
        .as_array()
        .context("trace spans")?
        .iter()
        .map(|e| &e["node"])
        .collect();
    let node = |name: &str| {
        *nodes
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {ui:#}"))
    };
    let llm_node = node("chat gpt-4o-mini");
    assert_eq!(llm_node["tokenCountPrompt"], 12, "{ui:#}");
    assert_eq!(llm_node["tokenCountCompletion"], 5, "{ui:#}");
    assert_eq!(llm_node["tokenCountTotal"], 17, "{ui:#}");
    // Only LLM spans get token columns.
    assert_eq!(
        node("execute_tool get_weather")["tokenCountPrompt"],
        Value::Null
    );

    // Without openinference.project.name the span lands in "default"; without
    // openinference.span.kind or llm.* Phoenix derives both from gen_ai.*.
    let defaults = phoenix.wait_for_spans("default", 1, WAIT).await?;
    let bare = by_name(&defaults, "chat bare-model");
    assert_eq!(bare["context"]["span_id"], hex(&bare_span).as_str());
    assert_eq!(bare["span_kind"], "LLM", "{bare:#}");
    assert_eq!(
        bare["attributes"]["llm.model_name"], "bare-model",
        "{bare:#}"
    );
    assert_eq!(bare["attributes"]["llm.token_count.prompt"], 7, "{bare:#}");
    assert_eq!(
        bare["attributes"]["llm.token_count.completion"], 3,
        "{bare:#}"
    );
    assert_eq!(bare["attributes"]["llm.token_count.total"], 10, "{bare:#}");
    assert!(
        !phoenix
            .spans(&project)
            .await?
            .iter()
            .any(|s| s["name"] == "chat bare-model"),
        "the span without a project name stayed out of {project}"
    );
    Ok(())
}
