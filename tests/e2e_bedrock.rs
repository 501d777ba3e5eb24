//! AWS Bedrock Runtime end to end with real eBPF and the real client: boto3's `bedrock-runtime`
//! (SigV4-signed with fake credentials, over HTTPS to the mock Bedrock server on 127.0.0.1, since
//! the real service cannot be reached here) doing Converse with a toolUse answer, ConverseStream
//! with text and a toolUse, InvokeModel and InvokeModelWithResponseStream with Anthropic bodies,
//! a ConverseStream ending in a throttlingException message, and a throttled Converse (429).

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use tracer_testkit::{
    e2e::{self, clients_dir, contains, of_pid, require_root, start_traced, SERIAL},
    mock_openai::{self, STREAM_EVENT_GAP},
    mock_providers::{ANTHROPIC_MODEL, BEDROCK_REQUEST_ID},
    otlp::{as_bool, as_f64, as_int, as_str, as_strs, ReceivedSpan},
    python,
};

const WAIT: Duration = Duration::from_secs(30);
const SCENARIOS: &[&str] = &[
    "converse",
    "converse_stream",
    "invoke_model",
    "invoke_model_stream",
    "converse_stream_exception",
    "converse_throttled",
];
const CONVERSE_MODEL: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
const INVOKE_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const ACCESS_KEY: &str = "AKIATESTBEDROCK0042";
const SECRET_KEY: &str = "test-secret-key-bedrock-0042";
const SESSION_TOKEN: &str = "test-session-token-bedrock-0042";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn output_messages(span: &ReceivedSpan) -> Value {
    as_str(span.attr("gen_ai.output.messages"))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_bedrock_runtime_calls() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let python = python::venv_python()?;
    let traced = start_traced(tracer_bin(), "bedrock", &["--capture-content"]).await?;
    let endpoint = format!("https://127.0.0.1:{}", server.addr.port());
    let out = e2e::run({
        let mut c = Command::new(&python);
        c.arg(clients_dir().join("bedrock_calls.py"))
            .arg(&endpoint)
            .args(SCENARIOS)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CA_BUNDLE", &server.cert_path)
            // Nothing but the environment: no profile files, no instance metadata lookups.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    })
    .await?;
    let lines = e2e::json_lines(&out);
    assert_eq!(lines.len(), SCENARIOS.len(), "{lines:#?}");
    let pid = lines[0]["pid"].as_u64().context("pid")? as u32;
    // What the client saw: the mock's answers reached it intact through the SDK.
    assert_eq!(lines[0]["tool_uses"][0]["toolUseId"], "tooluse_mock_1");
    assert_eq!(
        lines[1]["tool_uses"][0]["input"],
        "{\"location\": \"Paris\"}"
    );
    assert_eq!(lines[2]["id"], "msg_bdrk_mock_1");
    assert_eq!(lines[3]["tool_input"], "{\"location\": \"Paris\"}");
    assert_eq!(lines[4]["error"], "throttlingException");
    assert_eq!(
        (lines[5]["error"].as_str(), lines[5]["status"].as_u64()),
        (Some("ThrottlingException"), Some(429))
    );

    let spans = traced
        .receiver
        .wait_for("six bedrock spans", WAIT, |s| {
            of_pid(s, pid).len() >= SCENARIOS.len()
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), SCENARIOS.len(), "one span per call: {mine:#?}");
    for span in &mine {
        assert_eq!(
            as_str(span.attr("gen_ai.provider.name")),
            Some("aws.bedrock")
        );
        assert_eq!(as_str(span.attr("gen_ai.operation.name")), Some("chat"));
        assert_eq!(as_str(span.attr("server.address")), Some("127.0.0.1"));
    }

    // Converse: parameters from inferenceConfig, a toolUse answer.
    let converse = &mine[0];
    assert_eq!(converse.span.name, format!("chat {CONVERSE_MODEL}"));
    assert_eq!(
        as_str(converse.attr("url.path")),
        Some("/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse")
    );
    assert_eq!(
        as_str(converse.attr("gen_ai.request.model")),
        Some(CONVERSE_MODEL)
    );
    assert_eq!(as_bool(converse.attr("gen_ai.request.stream")), None);
    assert_eq!(
        as_int(converse.attr("gen_ai.request.max_tokens")),
        Some(512)
    );
    assert_eq!(
        as_f64(converse.attr("gen_ai.request.temperature")),
        Some(0.5)
    );
    assert_eq!(as_f64(converse.attr("gen_ai.request.top_p")), Some(0.9));
    assert_eq!(
        as_strs(converse.attr("gen_ai.request.stop_sequences")),
        strs(&["\n\nHuman:"])
    );
    assert_eq!(
        as_str(converse.attr("gen_ai.response.id")),
        Some(BEDROCK_REQUEST_ID)
    );
    assert_eq!(as_str(converse.attr("gen_ai.response.model")), None);
    assert_eq!(
        as_strs(converse.attr("gen_ai.response.finish_reasons")),
        strs(&["tool_use"])
    );
    assert_eq!(
        as_int(converse.attr("gen_ai.usage.input_tokens")),
        Some(390)
    );
    assert_eq!(
        as_int(converse.attr("gen_ai.usage.output_tokens")),
        Some(61)
    );
    assert_eq!(
        as_strs(converse.attr("agent_tracer.request.tool_names")),
        strs(&["get_weather"])
    );
    assert_eq!(
        as_strs(converse.attr("agent_tracer.response.tool_call.ids")),
        strs(&["tooluse_mock_1"])
    );
    assert_eq!(
        as_strs(converse.attr("agent_tracer.response.tool_call.names")),
        strs(&["get_weather"])
    );
    assert_eq!(
        output_messages(converse),
        json!([{"role": "assistant", "finish_reason": "tool_call", "parts": [
            {"type": "text", "content": "I'll look that up."},
            {"type": "tool_call", "id": "tooluse_mock_1", "name": "get_weather", "arguments": {"location": "Paris"}}]}])
    );
    assert_eq!(
        as_str(converse.attr("gen_ai.system_instructions")),
        Some(r#"[{"content":"You are a weather bot.","type":"text"}]"#)
    );
    assert_eq!(as_str(converse.attr("error.type")), None);

    // ConverseStream: event-stream frames, text then a toolUse, cache reads counted as input.
    let stream = &mine[1];
    assert_eq!(stream.span.name, format!("chat {CONVERSE_MODEL}"));
    assert_eq!(as_bool(stream.attr("gen_ai.request.stream")), Some(true));
    assert_eq!(
        as_str(stream.attr("gen_ai.response.id")),
        Some(BEDROCK_REQUEST_ID)
    );
    assert_eq!(
        as_strs(stream.attr("gen_ai.response.finish_reasons")),
        strs(&["tool_use"])
    );
    assert_eq!(
        as_int(stream.attr("gen_ai.usage.input_tokens")),
        Some(412 + 128)
    );
    assert_eq!(
        as_int(stream.attr("gen_ai.usage.cache_read.input_tokens")),
        Some(128)
    );
    assert_eq!(
        as_int(stream.attr("gen_ai.usage.cache_creation.input_tokens")),
        Some(0)
    );
    assert_eq!(as_int(stream.attr("gen_ai.usage.output_tokens")), Some(58));
    assert_eq!(
        as_strs(stream.attr("agent_tracer.response.tool_call.ids")),
        strs(&["tooluse_mock_stream"])
    );
    assert_eq!(
        output_messages(stream),
        json!([{"role": "assistant", "finish_reason": "tool_call", "parts": [
            {"type": "text", "content": "Let me check the weather."},
            {"type": "tool_call", "id": "tooluse_mock_stream", "name": "get_weather", "arguments": {"location": "Paris"}}]}])
    );
    // Time to first chunk is the first contentBlockDelta, the second of ten messages sent
    // STREAM_EVENT_GAP apart: after at least half a gap, and at least half of the remaining
    // eight gaps before the end.
    let gap = STREAM_EVENT_GAP.as_secs_f64();
    let duration = (stream.span.end_time_unix_nano - stream.span.start_time_unix_nano) as f64 / 1e9;
    let ttfc = as_f64(stream.attr("gen_ai.response.time_to_first_chunk")).context("ttfc")?;
    assert!(
        ttfc >= gap * 0.5 && duration - ttfc >= 8.0 * gap * 0.5,
        "ttfc {ttfc}, duration {duration}"
    );
    assert_eq!(as_str(stream.attr("error.type")), None);

    // InvokeModel with an Anthropic body: the Anthropic dialect's reading, the model from the
    // path, the provider still Bedrock.
    let invoke = &mine[2];
    assert_eq!(invoke.span.name, format!("chat {INVOKE_MODEL}"));
    assert_eq!(as_int(invoke.attr("gen_ai.request.max_tokens")), Some(256));
    assert_eq!(as_f64(invoke.attr("gen_ai.request.temperature")), Some(0.7));
    assert_eq!(
        as_str(invoke.attr("gen_ai.response.id")),
        Some("msg_bdrk_mock_1")
    );
    assert_eq!(
        as_str(invoke.attr("gen_ai.response.model")),
        Some("claude-3-5-sonnet-20240620")
    );
    assert_eq!(
        as_strs(invoke.attr("gen_ai.response.finish_reasons")),
        strs(&["end_turn"])
    );
    assert_eq!(as_int(invoke.attr("gen_ai.usage.input_tokens")), Some(25));
    assert_eq!(as_int(invoke.attr("gen_ai.usage.output_tokens")), Some(12));
    assert_eq!(
        output_messages(invoke)[0]["parts"],
        json!([{"type": "text", "content": "Hello from Bedrock."}])
    );

    // InvokeModelWithResponseStream: Anthropic events base64-wrapped in `chunk` messages.
    let invoke_stream = &mine[3];
    assert_eq!(invoke_stream.span.name, format!("chat {INVOKE_MODEL}"));
    assert_eq!(
        as_bool(invoke_stream.attr("gen_ai.request.stream")),
        Some(true)
    );
    assert_eq!(
        as_str(invoke_stream.attr("gen_ai.response.id")),
        Some("msg_mock_1")
    );
    assert_eq!(
        as_str(invoke_stream.attr("gen_ai.response.model")),
        Some(ANTHROPIC_MODEL)
    );
    assert_eq!(
        as_strs(invoke_stream.attr("gen_ai.response.finish_reasons")),
        strs(&["tool_use"])
    );
    assert_eq!(
        as_int(invoke_stream.attr("gen_ai.usage.input_tokens")),
        Some(377 + 100 + 10)
    );
    assert_eq!(
        as_int(invoke_stream.attr("gen_ai.usage.output_tokens")),
        Some(65)
    );
    assert_eq!(
        as_strs(invoke_stream.attr("agent_tracer.response.tool_call.ids")),
        strs(&["toolu_mock_1"])
    );
    assert_eq!(
        output_messages(invoke_stream)[0]["parts"][1],
        json!({"type": "tool_call", "id": "toolu_mock_1", "name": "get_weather", "arguments": {"location": "Paris"}})
    );
    assert!(as_f64(invoke_stream.attr("gen_ai.response.time_to_first_chunk")).is_some());

    // An exception message inside a 200 stream is the call's error.
    let exception = &mine[4];
    assert_eq!(
        as_int(exception.attr("http.response.status_code")),
        Some(200)
    );
    assert_eq!(
        as_str(exception.attr("error.type")),
        Some("throttlingException")
    );

    // A throttled call: the error type from x-amzn-errortype.
    let throttled = &mine[5];
    assert_eq!(throttled.span.name, "chat us.anthropic.throttled-v1:0");
    assert_eq!(
        as_int(throttled.attr("http.response.status_code")),
        Some(429)
    );
    assert_eq!(
        as_str(throttled.attr("error.type")),
        Some("ThrottlingException")
    );

    // SigV4 credentials never leave: not in the export, not on the console.
    let exported = traced.receiver.raw_bytes();
    for secret in [
        ACCESS_KEY,
        SECRET_KEY,
        SESSION_TOKEN,
        "AWS4-HMAC-SHA256",
        "Signature=",
    ] {
        assert!(!contains(&exported, secret.as_bytes()), "{secret} exported");
        assert!(!stopped.stdout.contains(secret), "{secret} on the console");
        assert!(!stopped.stderr.contains(secret), "{secret} in the log");
    }
    // The recording proves the secrets were on the wire the tracer read.
    let sent = e2e::recorded(&traced.record_dir, pid, "egress");
    assert!(contains(&sent, ACCESS_KEY.as_bytes()) && contains(&sent, b"AWS4-HMAC-SHA256"));
    Ok(())
}
