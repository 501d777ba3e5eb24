//! End-to-end agent runs, everything real: the eBPF programs loaded by the agent-tracer binary,
//! an unmodified Python agent on the official `openai` SDK running a tool loop over HTTPS
//! against a local model API, its tool running a shell command (a real child process) and
//! calling a local JSON API over plain HTTP, and a real OTLP receiver. The test checks the
//! whole tree: root → chat → execute_tool (exec of the shell, HTTP call beneath) → chat.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{self, of_trace, require_root, KIND_INTERNAL, SERIAL},
    mock_openai::{self, AGENT_TOOL_CALL_ID, AGENT_TOOL_COMMAND},
    mock_providers::ANTHROPIC_TOOL_USE_ID,
    otlp::{self, as_bool, as_f64, as_int, as_str, as_strs, ReceivedSpan},
    phoenix::Phoenix,
    python, tracer,
};

const SPAN_WAIT: Duration = Duration::from_secs(30);
const STATUS_ERROR: i32 = 2;
const KIND_CLIENT: i32 = 3;

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/clients")
        .join(name)
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.span.name == name).collect()
}

fn only<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "exactly one {name:?} in {spans:#?}");
    found[0]
}

fn is_root_of(span: &ReceivedSpan, pid: u32) -> bool {
    as_str(span.attr("gen_ai.operation.name")) == Some("invoke_agent")
        && as_int(span.resource_attr("process.pid")) == Some(pid as i64)
}

/// Runs a client agent script to its end; returns its pid (its first line) and its output lines.
fn run_agent(python: &Path, script: &str, args: &[String], ca: &Path) -> Result<(u32, Vec<Value>)> {
    let output = Command::new(python)
        .arg(client_script(script))
        .args(args)
        .env("SSL_CERT_FILE", ca)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .context("running the agent")?;
    assert!(
        output.status.success(),
        "agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = e2e::json_lines(&output);
    let pid = lines
        .first()
        .and_then(|l| l["pid"].as_u64())
        .context("agent pid")? as u32;
    Ok((pid, lines))
}

/// The trace of `pid`'s run once it holds `spans` spans (children may come in later batches
/// than the root).
async fn run_trace(
    receiver: &otlp::OtlpReceiver,
    pid: u32,
    spans: usize,
) -> Result<Vec<ReceivedSpan>> {
    let all = receiver
        .wait_for("the agent's run", SPAN_WAIT, |s| {
            s.iter().any(|s| is_root_of(s, pid))
        })
        .await?;
    let root_trace = all
        .iter()
        .find(|s| is_root_of(s, pid))
        .map(|s| s.span.trace_id.clone())
        .context("root")?;
    let all = receiver
        .wait_for(&format!("the run's {spans} spans"), SPAN_WAIT, |s| {
            of_trace(s, &root_trace).len() >= spans
        })
        .await?;
    Ok(of_trace(&all, &root_trace))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_agent_tool_loop_is_one_trace_with_tool_process_and_http_beneath() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let model_api = mock_openai::start(&e2e::certs_dir()).await?;
    let tool_api = mock_openai::start_plain().await?;
    let receiver = otlp::start_grpc().await?;
    let running = tracer::start(
        tracer_bin(),
        "agent-openai",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--console",
            "always",
            "--capture-content",
        ],
        &[],
    )?;

    let (pid, lines) = run_agent(
        &python,
        "openai_agent.py",
        &[model_api.base_url(), format!("http://{}", tool_api.addr)],
        &model_api.cert_path,
    )?;
    assert_eq!(lines[1]["answer"], "The task ran.");
    assert_eq!(lines[1]["steps"][0]["sh_pid_exit"], 3);
    let trace = run_trace(&receiver, pid, 6).await?;
    let stopped = running.stop()?;
    assert!(stopped.status.success(), "tracer: {}", stopped.stderr);
    assert_eq!(
        trace.len(),
        6,
        "root, two chats, the tool, its process and its HTTP call: {trace:#?}"
    );

    // The root: the run as a whole.
    let root = only(&trace, "invoke_agent openai_agent");
    assert!(root.span.parent_span_id.is_empty());
    assert_eq!(root.span.kind, KIND_INTERNAL);
    assert_eq!(as_str(root.attr("gen_ai.agent.name")), Some("openai_agent"));
    assert_eq!(
        as_str(root.attr("agent_tracer.run.outcome")),
        Some("completed")
    );
    assert_eq!(as_int(root.attr("agent_tracer.run.llm_calls")), Some(2));
    assert_eq!(
        as_int(root.attr("agent_tracer.run.tool_executions")),
        Some(1)
    );
    assert_eq!(as_str(root.attr("openinference.span.kind")), Some("AGENT"));
    let conversation = as_str(root.attr("gen_ai.conversation.id")).context("conversation id")?;
    assert_eq!(as_str(root.attr("session.id")), Some(conversation));
    assert_eq!(as_str(root.attr("gen_ai.provider.name")), Some("openai"));

    // Two model calls, children of the root, the first asking for the tool.
    let mut chats = named(&trace, "chat agent-loop");
    chats.sort_by_key(|s| s.span.start_time_unix_nano);
    assert_eq!(chats.len(), 2);
    let received = model_api.received();
    assert_eq!(received.len(), 2);
    for (chat, request) in chats.iter().zip(&received) {
        assert_eq!(chat.span.parent_span_id, root.span.span_id);
        assert_eq!(chat.span.kind, KIND_CLIENT);
        assert_eq!(
            as_str(chat.attr("gen_ai.conversation.id")),
            Some(conversation)
        );
        assert_eq!(
            as_int(chat.attr("gen_ai.usage.input_tokens")),
            Some(mock_openai::prompt_tokens_for(request.body_len))
        );
        assert_eq!(as_int(chat.attr("gen_ai.usage.output_tokens")), Some(7));
    }
    assert_eq!(
        as_strs(chats[0].attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_calls".into()])
    );
    assert_eq!(
        as_strs(chats[1].attr("gen_ai.response.finish_reasons")),
        Some(vec!["stop".into()])
    );
    let input: i64 = received
        .iter()
        .map(|r| mock_openai::prompt_tokens_for(r.body_len))
        .sum();
    assert_eq!(as_int(root.attr("gen_ai.usage.input_tokens")), Some(input));
    assert_eq!(as_int(root.attr("gen_ai.usage.output_tokens")), Some(14));
    // gpt-4o-mini list price: 0.15 in, 0.60 out per million tokens.
    let cost = as_f64(root.attr("agent_tracer.cost.usd")).context("run cost")?;
    let want = (input as f64 * 0.15 + 14.0 * 0.6) / 1e6;
    assert!((cost - want).abs() < 1e-12, "cost {cost} want {want}");

    // The tool: from the response that asked to the request that answered.
    let tool = only(&trace, "execute_tool run_task");
    assert_eq!(tool.span.parent_span_id, root.span.span_id);
    assert_eq!(tool.span.kind, KIND_INTERNAL);
    assert_eq!(
        as_str(tool.attr("gen_ai.tool.call.id")),
        Some(AGENT_TOOL_CALL_ID)
    );
    assert_eq!(as_str(tool.attr("openinference.span.kind")), Some("TOOL"));
    assert_eq!(as_str(tool.attr("tool.name")), Some("run_task"));
    assert_eq!(
        as_str(tool.attr("gen_ai.tool.call.result")),
        Some("exit 3: agent-step value 42")
    );
    let args: Value = serde_json::from_str(
        as_str(tool.attr("gen_ai.tool.call.arguments")).context("arguments")?,
    )?;
    assert_eq!(args["cmd"], AGENT_TOOL_COMMAND);
    assert_eq!(
        tool.span.start_time_unix_nano,
        chats[0].span.end_time_unix_nano
    );
    assert_eq!(
        tool.span.end_time_unix_nano,
        chats[1].span.start_time_unix_nano
    );

    // What the tool did: the shell it spawned, with its exit status...
    let shell = only(&trace, "exec sh");
    assert_eq!(shell.span.parent_span_id, tool.span.span_id);
    assert_eq!(as_int(shell.attr("process.exit.code")), Some(3));
    assert_eq!(as_int(shell.attr("process.parent_pid")), Some(pid as i64));
    assert_eq!(
        as_strs(shell.attr("process.command_args")),
        Some(vec!["sh".into(), "-c".into(), AGENT_TOOL_COMMAND.into()])
    );
    assert_eq!(
        shell.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
    // ...and its call to the tool API.
    let http = only(&trace, "GET");
    assert_eq!(http.span.parent_span_id, tool.span.span_id);
    assert_eq!(as_str(http.attr("url.path")), Some("/tool/lookup"));
    assert_eq!(
        as_int(http.attr("server.port")),
        Some(tool_api.addr.port() as i64)
    );
    assert_eq!(as_int(http.attr("http.response.status_code")), Some(200));
    assert_eq!(as_bool(http.attr("agent_tracer.capture.partial")), None);

    // Timing order: chat → tool [shell, then HTTP] → chat, all inside the root.
    let t = |s: &ReceivedSpan| (s.span.start_time_unix_nano, s.span.end_time_unix_nano);
    let order = [
        t(chats[0]).0,
        t(chats[0]).1,
        t(shell).0,
        t(shell).1,
        t(http).0,
        t(http).1,
        t(chats[1]).0,
        t(chats[1]).1,
    ];
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {order:?}"
    );
    assert!(t(tool).0 <= t(shell).0 && t(http).1 <= t(tool).1);
    assert_eq!(t(root).0, t(chats[0]).0);
    assert_eq!(t(root).1, t(chats[1]).1);
    let mut ids: Vec<_> = trace.iter().map(|s| s.span.span_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), trace.len(), "span ids are unique");
    assert!(
        !e2e::contains(&receiver.raw_bytes(), b"sk-test-secret-do-not-export"),
        "the API key is never exported"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_agent_failing_tool_is_marked_and_its_run_still_completes() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let model_api = mock_openai::start(&e2e::certs_dir()).await?;
    let receiver = otlp::start_grpc().await?;
    let running = tracer::start(
        tracer_bin(),
        "agent-anthropic",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
        ],
        &[],
    )?;
    let (pid, lines) = run_agent(
        &python,
        "anthropic_agent.py",
        &[model_api.base_url().trim_end_matches("/v1").to_string()],
        &model_api.cert_path,
    )?;
    assert_eq!(lines[1]["answer"], "The task failed; reported.");
    let trace = run_trace(&receiver, pid, 5).await?;
    let stopped = running.stop()?;
    assert!(stopped.status.success(), "tracer: {}", stopped.stderr);
    assert_eq!(
        trace.len(),
        5,
        "root, two chats, the tool, its shell: {trace:#?}"
    );

    let root = only(&trace, "invoke_agent anthropic_agent");
    assert_eq!(
        as_str(root.attr("agent_tracer.run.outcome")),
        Some("completed")
    );
    assert_eq!(as_str(root.attr("gen_ai.provider.name")), Some("anthropic"));
    // Anthropic's input_tokens exclude the cache; the conventions' count includes it.
    assert_eq!(
        as_int(root.attr("gen_ai.usage.input_tokens")),
        Some(2 * 220)
    );
    assert_eq!(
        as_int(root.attr("gen_ai.usage.cache_read.input_tokens")),
        Some(2 * 100)
    );
    // claude-sonnet-4-5: 3.00 in, 0.30 cached, 15.00 out per million tokens.
    let want = 2.0 * (120.0 * 3.0 + 100.0 * 0.3 + 30.0 * 15.0) / 1e6;
    let cost = as_f64(root.attr("agent_tracer.cost.usd")).context("cost")?;
    assert!((cost - want).abs() < 1e-12, "cost {cost} want {want}");
    let chats = named(&trace, "chat agent-loop");
    assert_eq!(chats.len(), 2);
    assert!(chats
        .iter()
        .all(|c| c.span.parent_span_id == root.span.span_id));

    let tool = only(&trace, "execute_tool run_task");
    assert_eq!(
        as_str(tool.attr("gen_ai.tool.call.id")),
        Some(ANTHROPIC_TOOL_USE_ID)
    );
    assert_eq!(as_str(tool.attr("error.type")), Some("tool_error"));
    assert_eq!(
        tool.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
    // Content capture is off: no arguments or results.
    assert_eq!(tool.attr("gen_ai.tool.call.arguments"), None);
    assert_eq!(tool.attr("gen_ai.tool.call.result"), None);
    let shell = only(&trace, "exec sh");
    assert_eq!(shell.span.parent_span_id, tool.span.span_id);
    assert_eq!(as_int(shell.attr("process.exit.code")), Some(3));
    assert!(
        !e2e::contains(&receiver.raw_bytes(), b"sk-ant-test-secret"),
        "the API key is never exported"
    );
    Ok(())
}

/// The same agent run exported to a real Arize Phoenix (from PyPI, on 127.0.0.1) over
/// OTLP/HTTP, read back through Phoenix's REST API: one trace, the kinds Phoenix shows, the
/// token counts the model API reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_renders_in_arize_phoenix_as_agent_llm_and_tool_spans() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let phoenix = Phoenix::start().await?;
    let model_api = mock_openai::start(&e2e::certs_dir()).await?;
    let tool_api = mock_openai::start_plain().await?;
    let project = format!("agent-tracer-e2e-{}", std::process::id());
    let endpoint = phoenix.otlp_http_endpoint();
    let resource = format!("openinference.project.name={project}");
    let running = tracer::start(
        tracer_bin(),
        "agent-phoenix",
        &["run"],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_RESOURCE_ATTRIBUTES", resource.as_str()),
        ],
    )?;
    let (pid, _) = run_agent(
        &python,
        "openai_agent.py",
        &[model_api.base_url(), format!("http://{}", tool_api.addr)],
        &model_api.cert_path,
    )?;
    let root_name = "invoke_agent openai_agent";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let trace = loop {
        // Phoenix's own HTTP traffic is traced too (its pid): only the agent's trace counts.
        let spans = phoenix.spans(&project).await?;
        let root_trace = spans
            .iter()
            .find(|s| s["name"] == root_name)
            .map(|s| s["context"]["trace_id"].clone());
        if let Some(trace_id) = root_trace {
            let trace: Vec<Value> = spans
                .into_iter()
                .filter(|s| s["context"]["trace_id"] == trace_id)
                .collect();
            if trace.len() >= 6 {
                break trace;
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "Phoenix did not get the run of pid {pid}:\n{}",
                phoenix.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let stopped = running.stop()?;
    assert!(stopped.status.success(), "tracer: {}", stopped.stderr);
    assert_eq!(trace.len(), 6, "{trace:#?}");
    let kinds = |kind: &str| trace.iter().filter(|s| s["span_kind"] == kind).count();
    assert_eq!(kinds("AGENT"), 1, "{trace:#?}");
    assert_eq!(kinds("LLM"), 2, "{trace:#?}");
    assert_eq!(kinds("TOOL"), 1, "{trace:#?}");
    let root = trace
        .iter()
        .find(|s| s["name"] == root_name)
        .context("root")?;
    assert_eq!(root["parent_id"], Value::Null);
    assert_eq!(root["attributes"]["agent.name"], "openai_agent");
    let root_id = root["context"]["span_id"].clone();
    let mut llms: Vec<&Value> = trace.iter().filter(|s| s["span_kind"] == "LLM").collect();
    llms.sort_by_key(|s| s["start_time"].as_str().unwrap_or_default().to_string());
    let received = model_api.received();
    assert_eq!(received.len(), 2);
    for (llm, request) in llms.iter().zip(&received) {
        assert_eq!(llm["parent_id"], root_id);
        assert_eq!(
            llm["attributes"]["llm.token_count.prompt"],
            mock_openai::prompt_tokens_for(request.body_len)
        );
        assert_eq!(llm["attributes"]["llm.token_count.completion"], 7);
        assert_eq!(
            llm["attributes"]["llm.model_name"],
            mock_openai::RESPONSE_MODEL
        );
    }
    let tool = trace
        .iter()
        .find(|s| s["span_kind"] == "TOOL")
        .context("tool")?;
    assert_eq!(tool["name"], "execute_tool run_task");
    assert_eq!(tool["parent_id"], root_id);
    assert_eq!(tool["attributes"]["tool.name"], "run_task");
    assert_eq!(tool["attributes"]["tool.id"], AGENT_TOOL_CALL_ID);
    let tool_id = tool["context"]["span_id"].clone();
    let beneath: Vec<&Value> = trace.iter().filter(|s| s["parent_id"] == tool_id).collect();
    assert_eq!(beneath.len(), 2, "the shell and the HTTP call: {trace:#?}");
    Ok(())
}

/// An agent launching an agent: the openai agent's tool runs the anthropic agent as a child
/// process; the child's run nests under that process, which nests under the tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_launched_by_a_tool_nests_its_run_under_that_tool() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let model_api = mock_openai::start(&e2e::certs_dir()).await?;
    let tool_api = mock_openai::start_plain().await?;
    let receiver = otlp::start_grpc().await?;
    let running = tracer::start(
        tracer_bin(),
        "agent-nested",
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
    let (pid, _) = run_agent(
        &python,
        "openai_agent.py",
        &[
            model_api.base_url(),
            format!("http://{}", tool_api.addr),
            model_api.base_url().trim_end_matches("/v1").to_string(),
        ],
        &model_api.cert_path,
    )?;
    let trace = run_trace(&receiver, pid, 12).await?;
    let stopped = running.stop()?;
    assert!(stopped.status.success(), "tracer: {}", stopped.stderr);
    assert_eq!(
        trace.len(),
        12,
        "outer: root, 2 chats, tool, sh, GET, the child agent's process; inner: root, 2 chats, \
         tool, sh: {trace:#?}"
    );
    let outer = only(&trace, "invoke_agent openai_agent");
    let inner = only(&trace, "invoke_agent anthropic_agent");
    assert!(outer.span.parent_span_id.is_empty());
    let outer_tool = trace
        .iter()
        .find(|s| {
            s.span.name == "execute_tool run_task" && s.span.parent_span_id == outer.span.span_id
        })
        .context("outer tool")?;
    let child_process = trace
        .iter()
        .find(|s| {
            as_strs(s.attr("process.command_args"))
                .is_some_and(|a| a.iter().any(|a| a.ends_with("anthropic_agent.py")))
        })
        .context("the child agent's exec span")?;
    assert_eq!(child_process.span.parent_span_id, outer_tool.span.span_id);
    assert_eq!(as_int(child_process.attr("process.exit.code")), Some(0));
    assert_eq!(inner.span.parent_span_id, child_process.span.span_id);
    let inner_tool = trace
        .iter()
        .find(|s| {
            s.span.name == "execute_tool run_task" && s.span.parent_span_id == inner.span.span_id
        })
        .context("inner tool")?;
    let inner_shell = trace
        .iter()
        .find(|s| s.span.name == "exec sh" && s.span.parent_span_id == inner_tool.span.span_id)
        .context("the inner tool's shell")?;
    assert_eq!(as_int(inner_shell.attr("process.exit.code")), Some(3));
    let inner_chats = trace
        .iter()
        .filter(|s| s.span.parent_span_id == inner.span.span_id && s.span.kind == KIND_CLIENT)
        .count();
    assert_eq!(inner_chats, 2);
    // The inner run lies inside the outer tool's window.
    assert!(outer_tool.span.start_time_unix_nano <= inner.span.start_time_unix_nano);
    assert!(inner.span.end_time_unix_nano <= outer_tool.span.end_time_unix_nano);
    Ok(())
}

/// Credentials an agent takes on its command line, and hands to its tool's shell, never leave
/// the host; the console draws the tool's processes under it, one line each. A real Python agent
/// is started with a positional key, a keyed Gemini URL and JSON settings holding a key; its tool
/// runs a multi-line bash script that pipes through tee (which ends before its bash) and runs a
/// real curl with a password, a bearer token and a key in its URL's query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_secrets_never_leave_and_the_console_draws_each_process_under_its_parent(
) -> Result<()> {
    const OPENAI_KEY: &str = "sk-proj-e2eDoNotExport0123456789abcdefABCDEF";
    const GEMINI_KEY: &str = "AIzaSyE2eDoNotExport0123456789abcdefABC";
    const CURL_KEY: &str = "AIzaSyE2eCurlDoNotExport0123456789abcdef";
    const SETTINGS_SECRET: &str = "e2e-settings-secret-do-not-export";
    const PASSWORD: &str = "e2e-curl-password-do-not-export";
    const BEARER: &str = "e2e-bearer-token-do-not-export";
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let model_api = mock_openai::start(&e2e::certs_dir()).await?;
    let tool_api = mock_openai::start_plain().await?;
    let receiver = otlp::start_grpc().await?;
    let running = tracer::start(
        tracer_bin(),
        "agent-secrets",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--console",
            "always",
            "--capture-content",
        ],
        &[],
    )?;
    // Never called: it only sits on the agent's command line.
    let gemini_url = format!(
        "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={GEMINI_KEY}"
    );
    let settings = serde_json::json!({"model": "agent-loop", "api_key": SETTINGS_SECRET});
    let curl = serde_json::json!({"password": PASSWORD, "token": BEARER, "key": CURL_KEY});
    // The agent stays until its stdin closes: the tracer reads its command line from /proc
    // when its first call is processed, which a loaded host may do after a quick agent exited.
    let mut agent = Command::new(&python)
        .arg(client_script("secret_args_agent.py"))
        .args([
            model_api.base_url(),
            format!("http://{}", tool_api.addr),
            OPENAI_KEY.to_string(),
            gemini_url,
            settings.to_string(),
            curl.to_string(),
        ])
        .env("SSL_CERT_FILE", &model_api.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let mut agent_out = BufReader::new(agent.stdout.take().context("the agent's stdout")?);
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        agent_out.read_line(&mut line)?;
        lines
            .push(serde_json::from_str(&line).with_context(|| format!("the agent said {line:?}"))?);
    }
    let pid = lines[0]["pid"].as_u64().context("the agent's pid")? as u32;
    receiver
        .wait_for("the agent's first model call", SPAN_WAIT, |s| {
            s.iter().any(|s| {
                as_int(s.resource_attr("process.pid")) == Some(pid as i64)
                    && s.span.name.starts_with("chat")
            })
        })
        .await?;
    drop(agent.stdin.take());
    assert!(agent.wait()?.success(), "the agent failed");
    assert_eq!(lines[1]["answer"], "The task ran.");
    assert_eq!(lines[1]["steps"][0]["bash_exit"], 0);
    assert_eq!(lines[1]["steps"][0]["stdout"][0], "agent-step");
    let trace = run_trace(&receiver, pid, 8).await?;
    let stopped = running.stop()?;
    assert!(stopped.status.success(), "tracer: {}", stopped.stderr);

    // Nothing secret in any byte exported or printed.
    let exported = receiver.raw_bytes();
    for secret in [
        OPENAI_KEY,
        GEMINI_KEY,
        CURL_KEY,
        SETTINGS_SECRET,
        PASSWORD,
        BEARER,
    ] {
        assert!(
            !e2e::contains(&exported, secret.as_bytes()),
            "{secret:?} was exported"
        );
        assert!(
            !stopped.stdout.contains(secret),
            "{secret:?} was printed:\n{}",
            stopped.stdout
        );
    }

    // What stays tells what ran.
    let root = only(&trace, "invoke_agent secret_args_agent");
    let command_line =
        as_str(root.resource_attr("process.command_line")).context("the agent's command line")?;
    assert!(
        command_line.contains("secret_args_agent.py")
            && command_line.contains(" REDACTED ")
            && command_line.contains(":streamGenerateContent?alt=sse&key=REDACTED")
            && command_line.contains(r#""api_key":"REDACTED""#)
            && command_line.contains(r#""password":"REDACTED""#),
        "{command_line}"
    );
    let tool = only(&trace, "execute_tool run_task");
    let bash = only(&trace, "exec bash");
    let tee = only(&trace, "exec tee");
    let curl_exec = only(&trace, "exec curl");
    assert_eq!(bash.span.parent_span_id, tool.span.span_id);
    assert_eq!(tee.span.parent_span_id, bash.span.span_id);
    assert_eq!(curl_exec.span.parent_span_id, bash.span.span_id);
    assert!(tee.span.end_time_unix_nano <= bash.span.end_time_unix_nano);
    let curl_args = as_strs(curl_exec.attr("process.command_args")).context("curl's args")?;
    assert_eq!(
        curl_args,
        [
            "curl".to_string(),
            "-s".into(),
            "-u".into(),
            "alice:REDACTED".into(),
            "-H".into(),
            "Authorization: REDACTED".into(),
            format!("http://{}/tool/lookup?alt=sse&key=REDACTED", tool_api.addr),
        ]
    );
    let lookup = trace
        .iter()
        .find(|s| s.span.name == "GET" && s.span.parent_span_id == curl_exec.span.span_id)
        .context("curl's call")?;
    // The query, key and all, is not part of url.path.
    assert_eq!(as_str(lookup.attr("url.path")), Some("/tool/lookup"));

    // The console: the run's tree, every process under its parent, each on one line.
    let out = &stopped.stdout;
    let console: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains(&format!("▶ run secret_args_agent pid {pid}")))
        .take_while(|l| !l.contains("■ run completed  secret_args_agent"))
        .collect();
    let line_of = |needle: &str| {
        console
            .iter()
            .position(|l| l.contains(needle))
            .with_context(|| format!("{needle:?} in the console:\n{out}"))
    };
    let indent = |i: usize| console[i].len() - console[i].trim_start().len();
    let tool_at = line_of("├─ execute_tool run_task")?;
    // Needles only this run's processes match: other tracers' agents may share the console.
    let bash_at = line_of("├─ exec bash  bash -c (echo agent-step; exit 3) | tee ")?;
    let tee_at = line_of("/task.log  exit 0")?;
    let curl_at = line_of("├─ exec curl  curl -s -u alice:REDACTED -H Authorization: REDACTED")?;
    assert!(
        tool_at < bash_at && bash_at < tee_at && bash_at < curl_at,
        "{out}"
    );
    assert_eq!(indent(bash_at), indent(tool_at) + 3, "{out}");
    assert_eq!(indent(tee_at), indent(bash_at) + 3, "{out}");
    assert_eq!(indent(curl_at), indent(bash_at) + 3, "{out}");
    // The bash script's newlines are escaped on its one line, which is cut with its length.
    let bash_line = console[bash_at];
    assert!(
        bash_line.contains(" | tee ")
            && bash_line.contains("\\ncurl -s -u 'alice:REDACTED' -H 'Authorization: REDACTED'")
            && bash_line.contains(" chars)"),
        "{bash_line}"
    );
    Ok(())
}
