//! End-to-end, everything real but the model API: the eBPF programs loaded into this kernel,
//! the official `openai` Python SDK (pinned in tests/support/src/python.rs) over HTTPS with the
//! system OpenSSL, the real OTLP receiver. The mock server (the only stand-in: no model API
//! may be reached from here) streams as real servers do: each event in its own TLS record, and
//! the body's last chunk in a later record of its own, which the SDK never reads: it stops at
//! `[DONE]` (or, as agents do, at `response.completed`) and closes the connection. Every such
//! call must be exported complete, without error; a stream the server cuts before its terminal
//! event must stay an error.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{self, contains, of_pid, require_root, SERIAL},
    mock_openai::{self, MockOpenAi, COOKIE_SECRET, CUT_STREAM_MODEL, RESPONSE_MODEL},
    otlp::{self, as_int, as_str, ReceivedSpan},
    python, tracer,
};

/// The fake key the client sends (tests/clients/openai_streams.py).
const API_KEY: &str = "sk-test-streams-secret-do-not-export-5678";
const SPAN_WAIT: Duration = Duration::from_secs(30);
const STATUS_ERROR: i32 = 2;

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// Runs openai_streams.py with `scenarios`; its pid and the lines it printed, by scenario.
async fn run_client(
    python: &Path,
    server: &MockOpenAi,
    scenarios: &[&str],
) -> Result<(u32, Vec<Value>)> {
    let mut cmd = Command::new(python);
    cmd.arg(e2e::clients_dir().join("openai_streams.py"))
        .arg(server.base_url())
        .args(scenarios)
        .env("SSL_CERT_FILE", &server.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null());
    let out = e2e::run(cmd).await?;
    let lines = e2e::json_lines(&out);
    let pid = lines
        .first()
        .and_then(|l| l["pid"].as_u64())
        .context("the client's pid line")? as u32;
    Ok((pid, lines))
}

fn line<'a>(lines: &'a [Value], scenario: &str) -> Result<&'a Value> {
    lines
        .iter()
        .find(|l| l["scenario"] == scenario)
        .with_context(|| format!("no line for {scenario} in {lines:?}"))
}

/// The one span with this response id.
fn by_response_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| as_str(s.attr("gen_ai.response.id")) == Some(id))
        .collect();
    assert_eq!(found.len(), 1, "exactly one span answers {id}: {spans:#?}");
    found[0]
}

fn status_code(span: &ReceivedSpan) -> i32 {
    span.span.status.as_ref().map_or(0, |s| s.code)
}

/// A whole call: its own facts, as the SDK saw them, and no error anywhere.
fn assert_complete(span: &ReceivedSpan, request_model: &str, client: &Value) {
    let name = &span.span.name;
    assert_eq!(
        as_str(span.attr("gen_ai.request.model")),
        Some(request_model),
        "{name}"
    );
    assert_eq!(
        as_str(span.attr("gen_ai.response.model")),
        client["model"].as_str(),
        "{name}"
    );
    for (attribute, key) in [
        ("gen_ai.usage.input_tokens", "input"),
        ("gen_ai.usage.output_tokens", "output"),
        ("gen_ai.usage.cache_read.input_tokens", "cached"),
    ] {
        assert_eq!(
            as_int(span.attr(attribute)),
            client["usage"][key].as_i64(),
            "{name}: {attribute}"
        );
    }
    let id = as_str(span.attr("gen_ai.response.id"));
    assert_eq!(span.attr("error.type"), None, "{name} {id:?}: {span:#?}");
    assert_ne!(status_code(span), STATUS_ERROR, "{name} {id:?}: {span:#?}");
    assert_eq!(
        span.attr("agent_tracer.capture.bytes_lost"),
        None,
        "{name}: nothing may be lost"
    );
}

/// Every span of `pid`, the runs' own (internal) spans included.
fn all_of_pid(spans: &[ReceivedSpan], pid: u32) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| as_int(s.resource_attr("process.pid")) == Some(pid as i64))
        .cloned()
        .collect()
}

fn failed_runs(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.span.name.starts_with("invoke_agent") && status_code(s) == STATUS_ERROR)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_streams_closed_at_their_terminal_event_are_complete_calls() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let receiver = otlp::start_grpc().await?;
    // Only this test's clients: the run counters below must not count other processes.
    let running = tracer::start(
        tracer_bin(),
        "streams",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--include-cmdline",
            "openai_streams.py",
        ],
        &[],
    )?;

    let (good, good_lines) = run_client(
        &python,
        &server,
        &["plain", "chat_stream", "responses_stream"],
    )
    .await?;
    let (cut, cut_lines) = run_client(
        &python,
        &server,
        &["cut_chat_stream", "cut_responses_stream"],
    )
    .await?;
    for scenario in ["cut_chat_stream", "cut_responses_stream"] {
        assert_eq!(
            line(&cut_lines, scenario)?["error"],
            "APIConnectionError",
            "the SDK saw the stream cut"
        );
    }
    receiver
        .wait_for("every call's span", SPAN_WAIT, |s| {
            of_pid(s, good).len() >= 3 && of_pid(s, cut).len() >= 2
        })
        .await?;
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);

    let received = server.received();
    assert_eq!(received.len(), 5, "one request per call, no retry");
    let spans = receiver.spans();

    // The calls that reached their end: one span each, exact, without error.
    let calls = of_pid(&spans, good);
    assert_eq!(calls.len(), 3, "one span per call: {calls:#?}");
    let plain = line(&good_lines, "plain")?;
    assert_eq!(plain["id"], "chatcmpl-mock-nonstream");
    assert_eq!(
        plain["usage"]["input"].as_i64(),
        Some(mock_openai::prompt_tokens_for(received[0].body_len))
    );
    assert_complete(
        by_response_id(&calls, "chatcmpl-mock-nonstream"),
        "gpt-4o-mini",
        plain,
    );
    let chat = line(&good_lines, "chat_stream")?;
    assert_eq!(
        (chat["id"].as_str(), chat["model"].as_str()),
        (Some("chatcmpl-mock-stream"), Some(RESPONSE_MODEL))
    );
    assert_eq!(chat["usage"]["cached"], 32, "the mock sends cached tokens");
    assert_complete(
        by_response_id(&calls, "chatcmpl-mock-stream"),
        "gpt-4o-mini",
        chat,
    );
    let responses = line(&good_lines, "responses_stream")?;
    assert_eq!(responses["status"], "completed");
    assert_eq!(responses["usage"]["cached"], 16);
    let responses_span = by_response_id(&calls, "resp_mock_1");
    assert_complete(responses_span, "gpt-5.4", responses);
    assert_eq!(
        as_str(responses_span.attr("openai.api.type")),
        Some("responses")
    );

    // The streams cut before their terminal event: still failed calls.
    let cut_calls = of_pid(&spans, cut);
    assert_eq!(cut_calls.len(), 2, "one span per call: {cut_calls:#?}");
    for span in &cut_calls {
        assert_eq!(
            as_str(span.attr("gen_ai.request.model")),
            Some(CUT_STREAM_MODEL)
        );
        assert_eq!(
            as_str(span.attr("error.type")),
            Some("stream_interrupted"),
            "{span:#?}"
        );
        assert_eq!(status_code(span), STATUS_ERROR);
    }

    // Runs: the good client's are not failed; the counter counts exactly the failed runs
    // exported (the cut client's), so it is known to count.
    assert!(
        failed_runs(&all_of_pid(&spans, good)).is_empty(),
        "{spans:#?}"
    );
    let cut_failed = failed_runs(&all_of_pid(&spans, cut)).len() as u64;
    assert!(cut_failed >= 1, "the cut client's run failed: {spans:#?}");
    let counters = output.counters()?;
    assert_eq!(
        counters.get("agent_runs_failed").copied().unwrap_or(0),
        cut_failed,
        "{counters:?}"
    );

    // Privacy: the key the client sent and the server's cookie never leave.
    assert!(received
        .iter()
        .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {API_KEY}")[..])));
    let exported = receiver.raw_bytes();
    for secret in [API_KEY, COOKIE_SECRET] {
        assert!(
            !contains(&exported, secret.as_bytes()),
            "{secret:?} was exported"
        );
    }
    Ok(())
}
