//! End-to-end, everything real: the eBPF programs loaded into this kernel by the agent-tracer
//! binary, an unmodified Python program using the official `openai` SDK over HTTPS (system
//! OpenSSL) against a local OpenAI-compatible server, and real OTLP receivers (gRPC and
//! HTTP/protobuf). The assertions compare exported spans with what the client and server saw.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{self, contains, of_pid, require_root, SERIAL},
    mock_openai::{self, MockOpenAi, COOKIE_SECRET, RESPONSE_MODEL},
    otlp::{self, as_bool, as_f64, as_int, as_str, as_strs, ReceivedSpan},
    python, tracer,
};

const API_KEY: &str = "sk-test-secret-do-not-export-0123456789";
const SPAN_WAIT: Duration = Duration::from_secs(30);

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/openai_calls.py")
}

/// The client's stdout lines, parsed, once it has exited.
struct ClientRun {
    pid: u32,
    lines: Vec<Value>,
}

fn spawn_client(
    python: &Path,
    server: &MockOpenAi,
    scenarios: &[&str],
) -> Result<(Child, BufReader<std::process::ChildStdout>, u32)> {
    let mut child = Command::new(python)
        .arg(client_script())
        .arg(server.base_url())
        .args(scenarios)
        .env("SSL_CERT_FILE", &server.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the Python client")?;
    let mut stdout = BufReader::new(child.stdout.take().context("client stdout")?);
    let mut first = String::new();
    stdout.read_line(&mut first)?;
    let pid: Value =
        serde_json::from_str(&first).with_context(|| format!("client's first line {first:?}"))?;
    let pid = pid["pid"].as_u64().context("client pid")? as u32;
    assert_eq!(pid, child.id(), "the client reports its own pid");
    Ok((child, stdout, pid))
}

async fn run_client(python: &Path, server: &MockOpenAi, scenarios: &[&str]) -> Result<ClientRun> {
    let (mut child, stdout, pid) = spawn_client(python, server, scenarios)?;
    tokio::task::spawn_blocking(move || {
        let lines: Vec<Value> = stdout
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let status = child.wait()?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("client failed ({status}): {err}");
        }
        Ok(ClientRun { pid, lines })
    })
    .await?
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

const STATUS_UNSET: i32 = 0;
const STATUS_ERROR: i32 = 2;
const KIND_CLIENT: i32 = 3;

/// Attributes every LLM call span carries.
fn assert_common(span: &ReceivedSpan, server: &MockOpenAi, request_model: &str) {
    let s = &span.span;
    assert_eq!(s.name, format!("chat {request_model}"));
    assert_eq!(s.kind, KIND_CLIENT);
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    assert_eq!(as_str(span.attr("gen_ai.operation.name")), Some("chat"));
    assert_eq!(as_str(span.attr("gen_ai.provider.name")), Some("openai"));
    assert_eq!(
        as_str(span.attr("openai.api.type")),
        Some("chat_completions")
    );
    assert_eq!(
        as_str(span.attr("gen_ai.request.model")),
        Some(request_model)
    );
    assert_eq!(as_str(span.attr("server.address")), Some("127.0.0.1"));
    assert_eq!(
        as_int(span.attr("server.port")),
        Some(server.addr.port() as i64)
    );
    assert_eq!(as_str(span.attr("http.request.method")), Some("POST"));
    assert_eq!(as_str(span.attr("url.path")), Some("/v1/chat/completions"));
    assert_eq!(as_str(span.attr("openinference.span.kind")), Some("LLM"));
    assert_eq!(
        span.attr("agent_tracer.capture.bytes_lost"),
        None,
        "nothing may be lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_calls_become_genai_spans_over_grpc() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let receiver = otlp::start_grpc().await?;
    let running = tracer::start(
        tracer_bin(),
        "grpc",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--console",
            "always",
        ],
        &[],
    )?;

    let client = run_client(
        &python,
        &server,
        &["plain", "stream", "rate_limited", "big"],
    )
    .await?;
    let pid = client.pid;
    receiver
        .wait_for("the client's 4 calls", SPAN_WAIT, |s| {
            of_pid(s, pid).len() >= 4
        })
        .await?;
    let output = running.stop()?;
    assert!(
        output.status.success(),
        "tracer exit: {}\n{}",
        output.status,
        output.stderr
    );

    let spans = of_pid(&receiver.spans(), pid);
    assert_eq!(spans.len(), 4, "exactly one span per call: {spans:#?}");
    let received = server.received();
    assert_eq!(received.len(), 4, "the SDK must not retry");
    assert!(received
        .iter()
        .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {API_KEY}")[..])));

    // (a) non-streaming call, gzip-compressed JSON response.
    let plain = &spans[0];
    assert_common(plain, &server, "gpt-4o-mini");
    assert_eq!(
        as_str(plain.attr("gen_ai.response.model")),
        Some(RESPONSE_MODEL)
    );
    assert_eq!(
        as_str(plain.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-nonstream")
    );
    assert_eq!(
        as_strs(plain.attr("gen_ai.response.finish_reasons")),
        Some(vec!["stop".to_string()])
    );
    assert_eq!(as_f64(plain.attr("gen_ai.request.temperature")), Some(0.2));
    assert_eq!(as_int(plain.attr("gen_ai.request.max_tokens")), Some(64));
    assert_eq!(
        as_int(plain.attr("gen_ai.usage.input_tokens")),
        Some(mock_openai::prompt_tokens_for(received[0].body_len))
    );
    assert_eq!(as_int(plain.attr("gen_ai.usage.output_tokens")), Some(5));
    assert_eq!(as_int(plain.attr("http.response.status_code")), Some(200));
    assert_eq!(
        as_int(plain.attr("http.request.body.size")),
        Some(received[0].body_len as i64)
    );
    assert_eq!(
        as_str(plain.attr("openai.response.system_fingerprint")),
        Some("fp_mock")
    );
    assert_eq!(plain.attr("gen_ai.request.stream"), None);
    assert_eq!(plain.attr("gen_ai.response.time_to_first_chunk"), None);
    assert_eq!(plain.attr("error.type"), None);
    assert_eq!(
        plain.span.status.as_ref().map(|s| s.code),
        Some(STATUS_UNSET)
    );

    // (b) streaming call with a tool call and include_usage.
    let stream = &spans[1];
    assert_common(stream, &server, "gpt-4o-mini");
    assert_eq!(as_bool(stream.attr("gen_ai.request.stream")), Some(true));
    assert_eq!(
        as_str(stream.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-stream")
    );
    assert_eq!(
        as_str(stream.attr("gen_ai.response.model")),
        Some(RESPONSE_MODEL)
    );
    assert_eq!(
        as_strs(stream.attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_calls".to_string()])
    );
    assert_eq!(as_int(stream.attr("gen_ai.usage.input_tokens")), Some(57));
    assert_eq!(as_int(stream.attr("gen_ai.usage.output_tokens")), Some(17));
    assert_eq!(
        as_int(stream.attr("gen_ai.usage.cache_read.input_tokens")),
        Some(32)
    );
    assert_eq!(
        as_int(stream.attr("gen_ai.usage.reasoning.output_tokens")),
        Some(0)
    );
    assert_eq!(
        as_strs(stream.attr("agent_tracer.request.tool_names")),
        Some(vec!["get_weather".to_string()])
    );
    assert_eq!(
        as_strs(stream.attr("agent_tracer.response.tool_call.names")),
        Some(vec!["get_weather".to_string()])
    );
    assert_eq!(
        as_strs(stream.attr("agent_tracer.response.tool_call.ids")),
        Some(vec!["call_mock_weather".to_string()])
    );
    let client_calls = &client
        .lines
        .iter()
        .find(|l| l["scenario"] == "stream")
        .context("stream result")?["tool_calls"];
    assert_eq!(client_calls[0]["id"], "call_mock_weather");
    assert_eq!(client_calls[0]["arguments"], "{\"city\":\"Paris\"}");
    let duration_s =
        (stream.span.end_time_unix_nano - stream.span.start_time_unix_nano) as f64 / 1e9;
    let ttfc = as_f64(stream.attr("gen_ai.response.time_to_first_chunk"))
        .context("time to first chunk")?;
    let gaps = mock_openai::STREAM_EVENT_GAP.as_secs_f64();
    assert!(
        ttfc > 0.0 && ttfc < duration_s,
        "ttfc {ttfc} within duration {duration_s}"
    );
    assert!(
        duration_s - ttfc >= 4.0 * gaps * 0.9,
        "the stream's 5 events are {gaps}s apart: ttfc {ttfc}, duration {duration_s}"
    );

    // (c) HTTP 429.
    let limited = &spans[2];
    assert_common(limited, &server, "rate-limited");
    assert_eq!(as_int(limited.attr("http.response.status_code")), Some(429));
    assert_eq!(
        as_str(limited.attr("error.type")),
        Some("rate_limit_exceeded")
    );
    let status = limited.span.status.as_ref().context("status")?;
    assert_eq!(
        (status.code, status.message.as_str()),
        (STATUS_ERROR, "Rate limit reached for requests")
    );
    assert_eq!(limited.attr("gen_ai.usage.input_tokens"), None);

    // (d) a request body over 1 MiB, captured byte-exact.
    let big = &spans[3];
    assert_common(big, &server, "gpt-4o-mini");
    assert!(received[3].body_len > 1 << 20);
    assert_eq!(
        as_int(big.attr("http.request.body.size")),
        Some(received[3].body_len as i64)
    );
    assert_eq!(
        as_int(big.attr("gen_ai.usage.input_tokens")),
        Some(mock_openai::prompt_tokens_for(received[3].body_len))
    );
    assert_eq!(
        as_str(big.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-nonstream")
    );

    // Who: the process resource.
    let exe = std::fs::canonicalize(&python)?;
    for span in &spans {
        assert_eq!(
            as_str(span.resource_attr("process.executable.path")),
            exe.to_str()
        );
        assert_eq!(
            as_str(span.resource_attr("service.name")),
            exe.file_name().and_then(|n| n.to_str())
        );
        let cmd = as_str(span.resource_attr("process.command_line")).context("command line")?;
        assert!(
            cmd.contains("openai_calls.py") && cmd.contains(&server.base_url()),
            "{cmd}"
        );
        assert_eq!(
            as_str(span.resource_attr("host.name")),
            Some(host_name().as_str())
        );
    }

    // Privacy: no credential, cookie or (content capture being off) message text leaves.
    let exported = receiver.raw_bytes();
    for secret in [API_KEY, COOKIE_SECRET, "Say hello.", "Weather in Paris?"] {
        assert!(
            !contains(&exported, secret.as_bytes()),
            "{secret:?} was exported"
        );
        assert!(!output.stdout.contains(secret), "{secret:?} was printed");
    }
    assert!(spans
        .iter()
        .all(|s| s.attr("gen_ai.input.messages").is_none()));

    // The console view and the shutdown report.
    assert!(
        output.stdout.contains(&format!("pid {pid}")),
        "{}",
        output.stdout
    );
    assert_eq!(
        output.stdout.matches("chat gpt-4o-mini").count(),
        3,
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("✗ 429 rate_limit_exceeded"),
        "{}",
        output.stdout
    );
    assert!(
        output.stderr.contains("tracer stopped:") && output.stderr.contains("llm_calls="),
        "{}",
        output.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_configured_http_export_with_capped_content() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let receiver = otlp::start_http().await?;
    let endpoint = receiver.endpoint();
    let running = tracer::start(
        tracer_bin(),
        "http",
        &["run", "--capture-content", "--content-max-bytes", "600"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "e2e-agent"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=e2e,team=platform",
            ),
        ],
    )?;
    let client = run_client(&python, &server, &["content"]).await?;
    receiver
        .wait_for("the content call", SPAN_WAIT, |s| {
            !of_pid(s, client.pid).is_empty()
        })
        .await?;
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(
        output.stdout, "",
        "the console is off when an endpoint is configured"
    );

    let spans = of_pid(&receiver.spans(), client.pid);
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_common(span, &server, "gpt-4o-mini");
    assert_eq!(
        as_str(span.resource_attr("service.name")),
        Some("e2e-agent")
    );
    assert_eq!(
        as_str(span.resource_attr("deployment.environment")),
        Some("e2e")
    );
    assert_eq!(as_str(span.resource_attr("team")), Some("platform"));

    let input = as_str(span.attr("gen_ai.input.messages")).context("input messages")?;
    assert!(input.len() <= 600, "capped at 600 bytes: {}", input.len());
    let input: Value = serde_json::from_str(input)?;
    assert_eq!(
        input[0],
        serde_json::json!({"role": "system", "parts": [{"type": "text", "content": "You are terse."}]})
    );
    assert_eq!(input[1]["role"], "user");
    let user_text = input[1]["parts"][0]["content"]
        .as_str()
        .context("user text")?;
    assert!(
        user_text.starts_with("Say hello. padding") && user_text.contains("[truncated"),
        "{user_text}"
    );
    let output_messages: Value =
        serde_json::from_str(as_str(span.attr("gen_ai.output.messages")).context("output")?)?;
    assert_eq!(
        output_messages,
        serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello from the mock."}], "finish_reason": "stop"}])
    );
    let exported = receiver.raw_bytes();
    assert!(
        !contains(&exported, API_KEY.as_bytes()) && !contains(&exported, COOKIE_SECRET.as_bytes())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_killed_mid_request_yields_an_interrupted_span() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let receiver = otlp::start_grpc().await?;
    let running = tracer::start(
        tracer_bin(),
        "killed",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
        ],
        &[],
    )?;
    let (mut child, mut stdout, pid) = spawn_client(&python, &server, &["hang"])?;
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    assert!(line.contains("waiting"), "{line}");
    for _ in 0..100 {
        if server
            .received()
            .iter()
            .any(|r| r.model.as_deref() == Some("hang"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server
            .received()
            .iter()
            .any(|r| r.model.as_deref() == Some("hang")),
        "the request reached the server"
    );
    child.kill()?;
    child.wait()?;

    let spans = receiver
        .wait_for("the interrupted call", SPAN_WAIT, |s| {
            !of_pid(s, pid).is_empty()
        })
        .await?;
    let spans = of_pid(&spans, pid);
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_common(span, &server, "hang");
    assert_eq!(as_str(span.attr("error.type")), Some("process_exit"));
    assert_eq!(span.attr("http.response.status_code"), None);
    assert_eq!(
        span.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    Ok(())
}

/// Runs `openai_models.py`: one plain call per model name, in order; returns its pid and lines.
async fn run_models(python: &Path, server: &MockOpenAi, models: &[String]) -> Result<ClientRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/openai_models.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(server.base_url())
        .args(models)
        .env("SSL_CERT_FILE", &server.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY");
    let output = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !output.status.success() {
        bail!(
            "client failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let pid = lines
        .first()
        .and_then(|l| l["pid"].as_u64())
        .context("client pid")? as u32;
    Ok(ClientRun { pid, lines })
}

/// The proof for "export survives a backend outage": the receiver goes away for 10 s in the
/// middle of a sequence of calls and comes back on the same port. The calls made meanwhile are
/// captured (the console shows them), held by the tracer, and arrive after the restart, in
/// order; nothing is lost and the shutdown counters add up to exactly what the receiver got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_made_while_the_receiver_is_down_arrive_after_it_restarts() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let mut receiver = otlp::start_grpc().await?;
    let running = tracer::start(
        tracer_bin(),
        "outage",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--console",
            "always",
        ],
        &[],
    )?;
    let models = |phase: &str, n: usize| -> Vec<String> {
        (1..=n).map(|i| format!("outage-{phase}-{i}")).collect()
    };

    // Before: delivered as usual.
    let before_models = models("before", 2);
    let before = run_models(&python, &server, &before_models).await?;
    receiver
        .wait_for("the calls before the outage", SPAN_WAIT, |s| {
            of_pid(s, before.pid).len() >= 2
        })
        .await?;

    // The outage: the receiver's listener and connections are gone for 10 s.
    receiver.stop().await;
    let stopped_at = tokio::time::Instant::now();
    let delivered_before_outage = receiver.spans().len();
    let during_models = models("during", 5);
    let during = run_models(&python, &server, &during_models).await?;
    assert_eq!(during.lines.len(), 1 + 5, "{:?}", during.lines);
    // The tracer made the spans while the receiver was down: the console printed them.
    let last = format!("chat {}", during_models[4]);
    let deadline = tokio::time::Instant::now() + SPAN_WAIT;
    while !running.stdout_so_far().contains(&last) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tracer never printed {last:?}:\n{}",
            running.stdout_so_far()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let printed = running.stdout_so_far();
    for model in &during_models {
        assert!(printed.contains(&format!("chat {model}")), "{printed}");
    }
    tokio::time::sleep_until(stopped_at + Duration::from_secs(10)).await;
    assert_eq!(
        receiver.spans().len(),
        delivered_before_outage,
        "nothing can arrive while the receiver is down"
    );
    let restarted_at = std::time::Instant::now();
    receiver.restart().await?;

    // After the restart: everything held arrives, then a call made afterwards too.
    receiver
        .wait_for(
            "the calls made during the outage",
            Duration::from_secs(60),
            |s| of_pid(s, during.pid).len() >= 5,
        )
        .await?;
    let after_models = models("after", 1);
    let after = run_models(&python, &server, &after_models).await?;
    receiver
        .wait_for("the call after the outage", SPAN_WAIT, |s| {
            !of_pid(s, after.pid).is_empty()
        })
        .await?;
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);

    let all = receiver.spans();
    for (run, expected) in [
        (&before, &before_models),
        (&during, &during_models),
        (&after, &after_models),
    ] {
        let spans = of_pid(&all, run.pid);
        let got: Vec<&str> = spans
            .iter()
            .filter_map(|s| as_str(s.attr("gen_ai.request.model")))
            .collect();
        assert_eq!(&got, expected, "one span per call, each call once");
        for span in &spans {
            let model = as_str(span.attr("gen_ai.request.model")).context("model")?;
            assert_common(span, &server, model);
            assert_eq!(
                as_str(span.attr("gen_ai.response.id")),
                Some("chatcmpl-mock-nonstream")
            );
            assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
        }
    }
    // Received in the order they were made (one ordered buffer, one request at a time).
    let during_arrival: Vec<&str> = all
        .iter()
        .filter(|s| as_int(s.resource_attr("process.pid")) == Some(during.pid as i64))
        // The calls, not the runs they make up (which name their model too).
        .filter(|s| s.span.kind != e2e::KIND_INTERNAL)
        .filter_map(|s| as_str(s.attr("gen_ai.request.model")))
        .collect();
    assert_eq!(&during_arrival, &during_models);
    assert!(
        receiver.accepted_at().iter().any(|t| *t >= restarted_at),
        "deliveries after the restart"
    );
    let mut ids: Vec<&[u8]> = all.iter().map(|s| s.span.span_id.as_slice()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "no span delivered twice");

    // The counters the tracer printed at shutdown: every span it produced was exported (on a
    // shared host other processes' calls may be traced too; they count on both sides), none
    // dropped, and the receiver holds exactly that many.
    let counters = output.counters()?;
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert!(count("spans") >= 8, "{counters:?}");
    assert_eq!(count("exported_spans"), count("spans"), "{counters:?}");
    assert_eq!(count("exported_spans"), all.len() as u64, "{counters:?}");
    assert!(
        counters
            .keys()
            .all(|k| !k.starts_with("export_dropped_spans")),
        "{counters:?}"
    );
    assert!(count("export_retries") >= 1, "{counters:?}");
    Ok(())
}
