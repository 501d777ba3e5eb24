//! The other model APIs, end to end with real eBPF and real clients: the official anthropic SDK
//! streaming a tool_use, the openai SDK's Responses API streaming a function call, a Gemini
//! streamGenerateContent exchange, and an Ollama NDJSON stream over plain HTTP.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{self, clients_dir, contains, of_pid, require_root, start_traced, SERIAL},
    mock_openai::{self, MockOpenAi, STREAM_EVENT_GAP},
    mock_providers::{ANTHROPIC_MODEL, GEMINI_MODEL_VERSION},
    otlp::{as_bool, as_f64, as_int, as_str, as_strs, ReceivedSpan},
    python,
};

const WAIT: Duration = Duration::from_secs(30);

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn origin(server: &MockOpenAi) -> String {
    server.base_url().trim_end_matches("/v1").to_string()
}

/// Runs one scenario of providers.py under the tracer; returns the client's output and its span.
async fn traced_scenario(
    server: &MockOpenAi,
    scenario: &str,
) -> Result<(Value, ReceivedSpan, Vec<u8>)> {
    let python = python::venv_python()?;
    let traced = start_traced(tracer_bin(), scenario, &["--capture-content"]).await?;
    let out = e2e::run({
        let mut c = Command::new(&python);
        c.arg(clients_dir().join("providers.py"))
            .args([scenario, &origin(server)])
            .env("SSL_CERT_FILE", &server.cert_path);
        c
    })
    .await?;
    let line: Value = e2e::json_lines(&out)
        .into_iter()
        .next()
        .context("client output")?;
    let pid = line["pid"].as_u64().context("pid")? as u32;
    let spans = traced
        .receiver
        .wait_for(scenario, WAIT, |s| !of_pid(s, pid).is_empty())
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 1, "one call, one span: {mine:#?}");
    Ok((line, mine[0].clone(), traced.receiver.raw_bytes()))
}

fn streamed_timing(span: &ReceivedSpan, events: usize) {
    let duration = (span.span.end_time_unix_nano - span.span.start_time_unix_nano) as f64 / 1e9;
    let ttfc =
        as_f64(span.attr("gen_ai.response.time_to_first_chunk")).expect("time to first chunk");
    let gaps = (events - 1) as f64 * STREAM_EVENT_GAP.as_secs_f64();
    // Measured at the first event, not the last: at least half the events' spacing separates them
    // (the client may read the first event a little late).
    assert!(
        ttfc > 0.0 && duration - ttfc >= gaps * 0.5,
        "ttfc {ttfc}, duration {duration}, {events} events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_streaming_a_tool_use() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let (client, span, exported) = traced_scenario(&server, "anthropic_stream").await?;
    assert_eq!(client["tool_uses"][0]["id"], "toolu_mock_1");
    assert_eq!(client["tool_uses"][0]["input"]["location"], "Paris");

    assert_eq!(span.span.name, format!("chat {ANTHROPIC_MODEL}"));
    assert_eq!(as_str(span.attr("gen_ai.provider.name")), Some("anthropic"));
    assert_eq!(as_str(span.attr("gen_ai.operation.name")), Some("chat"));
    assert_eq!(as_bool(span.attr("gen_ai.request.stream")), Some(true));
    assert_eq!(as_int(span.attr("gen_ai.request.max_tokens")), Some(1024));
    assert_eq!(as_str(span.attr("gen_ai.response.id")), Some("msg_mock_1"));
    assert_eq!(
        as_str(span.attr("gen_ai.response.model")),
        Some(ANTHROPIC_MODEL)
    );
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_use".to_string()])
    );
    // Semconv: input = input_tokens + cache reads + cache writes.
    assert_eq!(
        as_int(span.attr("gen_ai.usage.input_tokens")),
        Some(377 + 100 + 10)
    );
    assert_eq!(
        as_int(span.attr("gen_ai.usage.cache_read.input_tokens")),
        Some(100)
    );
    assert_eq!(
        as_int(span.attr("gen_ai.usage.cache_creation.input_tokens")),
        Some(10)
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.output_tokens")), Some(65));
    assert_eq!(
        as_strs(span.attr("agent_tracer.response.tool_call.ids")),
        Some(vec!["toolu_mock_1".to_string()])
    );
    assert_eq!(
        as_strs(span.attr("agent_tracer.request.tool_names")),
        Some(vec!["get_weather".to_string()])
    );
    streamed_timing(&span, 12);
    let output: Value =
        serde_json::from_str(as_str(span.attr("gen_ai.output.messages")).context("output")?)?;
    assert_eq!(
        output[0]["parts"][1],
        serde_json::json!({"type": "tool_call", "id": "toolu_mock_1", "name": "get_weather", "arguments": {"location": "Paris"}})
    );
    assert_eq!(output[0]["finish_reason"], "tool_call");
    assert_eq!(
        as_str(span.attr("gen_ai.system_instructions")),
        Some(r#"[{"content":"You are a weather bot.","type":"text"}]"#)
    );
    assert!(
        !contains(&exported, b"sk-ant-test-secret-0042"),
        "x-api-key must never be exported"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_overloaded_is_an_error_span() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let (client, span, _) = traced_scenario(&server, "anthropic_overloaded").await?;
    assert_eq!(client["status"], 529);
    assert_eq!(as_int(span.attr("http.response.status_code")), Some(529));
    assert_eq!(as_str(span.attr("error.type")), Some("overloaded_error"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_responses_api_streaming_a_function_call() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let (client, span, exported) = traced_scenario(&server, "responses_stream").await?;
    assert_eq!(client["function_calls"][0]["call_id"], "call_mock_resp");

    assert_eq!(span.span.name, "chat gpt-5.4");
    assert_eq!(as_str(span.attr("openai.api.type")), Some("responses"));
    assert_eq!(as_str(span.attr("gen_ai.provider.name")), Some("openai"));
    assert_eq!(as_str(span.attr("gen_ai.response.id")), Some("resp_mock_1"));
    assert_eq!(
        as_str(span.attr("gen_ai.response.model")),
        Some("gpt-5.4-2026-03-01")
    );
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_call".to_string()])
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.input_tokens")), Some(37));
    assert_eq!(
        as_int(span.attr("gen_ai.usage.cache_read.input_tokens")),
        Some(16)
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.output_tokens")), Some(11));
    assert_eq!(
        as_int(span.attr("gen_ai.usage.reasoning.output_tokens")),
        Some(4)
    );
    assert_eq!(
        as_strs(span.attr("agent_tracer.response.tool_call.names")),
        Some(vec!["get_current_weather".to_string()])
    );
    assert_eq!(
        as_strs(span.attr("agent_tracer.response.tool_call.ids")),
        Some(vec!["call_mock_resp".to_string()])
    );
    streamed_timing(&span, 7);
    assert!(as_str(span.attr("gen_ai.system_instructions"))
        .is_some_and(|s| s.contains("You are a helpful assistant.")));
    assert!(!contains(&exported, b"sk-test-secret-responses"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_stream_generate_content() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let (client, span, exported) = traced_scenario(&server, "gemini_stream").await?;
    assert_eq!(client["status"], 200);

    assert_eq!(span.span.name, "generate_content gemini-2.5-flash");
    assert_eq!(
        as_str(span.attr("gen_ai.operation.name")),
        Some("generate_content")
    );
    assert_eq!(
        as_str(span.attr("gen_ai.provider.name")),
        Some("gcp.gemini")
    );
    assert_eq!(as_bool(span.attr("gen_ai.request.stream")), Some(true));
    assert_eq!(as_f64(span.attr("gen_ai.request.temperature")), Some(0.2));
    assert_eq!(as_int(span.attr("gen_ai.request.max_tokens")), Some(256));
    assert_eq!(
        as_str(span.attr("gen_ai.response.id")),
        Some("gemini-mock-response-1")
    );
    assert_eq!(
        as_str(span.attr("gen_ai.response.model")),
        Some(GEMINI_MODEL_VERSION)
    );
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["STOP".to_string()])
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.input_tokens")), Some(42));
    // Thoughts are output tokens too.
    assert_eq!(as_int(span.attr("gen_ai.usage.output_tokens")), Some(7 + 5));
    assert_eq!(
        as_int(span.attr("gen_ai.usage.reasoning.output_tokens")),
        Some(5)
    );
    assert_eq!(
        as_strs(span.attr("agent_tracer.response.tool_call.names")),
        Some(vec!["get_weather".to_string()])
    );
    streamed_timing(&span, 4);
    assert!(
        !contains(&exported, b"AIza-test-secret-gemini"),
        "x-goog-api-key must never be exported"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_ndjson_stream_over_plain_http() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start_plain().await?;
    let (client, span, _) = traced_scenario(&server, "ollama_chat").await?;
    assert_eq!(client["status"], 200);

    assert_eq!(span.span.name, "chat llama3.2");
    assert_eq!(as_str(span.attr("gen_ai.provider.name")), Some("ollama"));
    assert_eq!(as_bool(span.attr("gen_ai.request.stream")), Some(true));
    assert_eq!(as_int(span.attr("gen_ai.request.max_tokens")), Some(64));
    assert_eq!(as_str(span.attr("gen_ai.response.model")), Some("llama3.2"));
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["stop".to_string()])
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.input_tokens")), Some(169));
    assert_eq!(as_int(span.attr("gen_ai.usage.output_tokens")), Some(15));
    assert_eq!(
        as_int(span.attr("server.port")),
        Some(server.addr.port() as i64)
    );
    streamed_timing(&span, 3);
    let output: Value =
        serde_json::from_str(as_str(span.attr("gen_ai.output.messages")).context("output")?)?;
    assert_eq!(output[0]["parts"][0]["content"], "The weather is sunny.");
    Ok(())
}
