//! Codex CLI, the real one (`@openai/codex`, a stripped static Rust executable carrying a static
//! OpenSSL 3 and rustls on aws-lc), running `codex exec` through a whole tool loop against the
//! mock model API over HTTPS with the tracer's real eBPF programs loaded: the model asks for
//! `exec_command`, Codex runs the command (a real shell and a real `uname`), the model's final
//! text comes back. In each of Codex's transports:
//! - its default, the Responses API over a WebSocket (permessage-deflate, as the real server)
//!   through `openai_base_url`, on rustls;
//! - a custom model provider over SSE (`wire_api = "responses"`) with the mock's CA in
//!   `SSL_CERT_DIR`: Codex's OpenSSL path;
//! - the same provider with the CA in `CODEX_CA_CERTIFICATE`: its rustls path.
//!
//! The model API is the project's mock (`responses_loop.rs`): no real model can run here.
//! Every call it served must come out as one span with its exact numbers and no error.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    codex,
    e2e::{
        self, contains, of_trace, require_root, start_traced, wait_until_hooked, HeldClient, SERIAL,
    },
    mock_openai::{self, MockOpenAi},
    otlp::{as_int, as_str, as_strs, ReceivedSpan},
    responses_loop::{self, ServedCall},
};

const WAIT: Duration = Duration::from_secs(60);
const STATUS_ERROR: i32 = 2;
/// The fake key Codex sends; it must appear nowhere in what the tracer exports.
const FAKE_KEY: &str = "sk-codex-e2e-fake-key-5Jd81Q";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// Codex's executable, by its real path (the tracer reports that one).
fn codex_binary() -> Result<PathBuf> {
    Ok(std::fs::canonicalize(codex::install()?)?)
}

/// How Codex reaches the mock.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    /// The default: Responses over a WebSocket, `openai_base_url` pointing at the mock.
    WebSocket,
    /// A custom provider over SSE, the CA in `SSL_CERT_DIR` (OpenSSL).
    SseOpenSsl,
    /// A custom provider over SSE, the CA in `CODEX_CA_CERTIFICATE` (rustls).
    SseRustls,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::SseOpenSsl => "sse-openssl",
            Transport::SseRustls => "sse-rustls",
        }
    }

    /// What the mock records as the call's transport.
    fn wire(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            _ => "sse",
        }
    }
}

/// A throwaway directory under target/.
fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = tracer_testkit::target_dir()
        .join("e2e-codex")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A directory with the mock's certificate under its OpenSSL subject-hash name, as
/// `SSL_CERT_DIR` wants (`openssl rehash` names it).
fn hashed_cert_dir(mock: &MockOpenAi, dir: &Path) -> Result<PathBuf> {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(&mock.cert_path, certs.join("mock.pem"))?;
    let status = Command::new("openssl")
        .arg("rehash")
        .arg(&certs)
        .status()
        .context("running openssl rehash")?;
    ensure!(status.success(), "openssl rehash failed");
    Ok(certs)
}

/// `codex exec` for `transport`, held on its stdin (Codex reads stdin to its end before it
/// connects), its state in a throwaway CODEX_HOME.
fn codex_command(codex: &Path, mock: &MockOpenAi, transport: Transport) -> Result<Command> {
    let dir = fresh_dir(transport.name())?;
    let home = dir.join("home");
    let work = dir.join("work");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&work)?;
    let mut c = Command::new(codex);
    c.arg("exec")
        .arg("--skip-git-repo-check")
        // Codex sandboxes commands (bubblewrap, Landlock) by default; here it runs as root in a
        // test machine, where the sandbox cannot be set up.
        .arg("--dangerously-bypass-approvals-and-sandbox")
        .arg("--color")
        .arg("never")
        .arg("-C")
        .arg(&work)
        .args(["-m", responses_loop::LOOP_MODEL])
        .env("CODEX_HOME", &home)
        // `codex exec` authenticates with CODEX_API_KEY, the custom provider with env_key's.
        .env("OPENAI_API_KEY", FAKE_KEY)
        .env("CODEX_API_KEY", FAKE_KEY)
        .env("RUST_LOG", "warn")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let base_url = mock.base_url();
    let provider = || {
        [
            "-c".to_string(),
            "model_provider=\"mock\"".to_string(),
            "-c".to_string(),
            format!(
                "model_providers.mock={{name=\"mock\",base_url=\"{base_url}\",\
                 env_key=\"OPENAI_API_KEY\",wire_api=\"responses\"}}"
            ),
        ]
    };
    match transport {
        Transport::WebSocket => {
            c.arg("-c")
                .arg(format!("openai_base_url=\"{base_url}\""))
                .env("CODEX_CA_CERTIFICATE", &mock.cert_path);
        }
        Transport::SseOpenSsl => {
            c.args(provider())
                .env("SSL_CERT_DIR", hashed_cert_dir(mock, &dir)?);
        }
        Transport::SseRustls => {
            c.args(provider())
                .env("CODEX_CA_CERTIFICATE", &mock.cert_path);
        }
    }
    c.arg("Run the command the tool asks for, then say what it printed.");
    Ok(c)
}

fn is_root_of(span: &ReceivedSpan, pid: u32) -> bool {
    as_str(span.attr("gen_ai.operation.name")) == Some("invoke_agent")
        && as_int(span.resource_attr("process.pid")) == Some(pid as i64)
}

fn with_response_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| as_str(s.attr("gen_ai.response.id")) == Some(id))
        .collect()
}

/// Every descendant of `parent` in `spans`.
fn descendants<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut out: Vec<&ReceivedSpan> = Vec::new();
    let mut frontier = vec![parent.span.span_id.clone()];
    while let Some(id) = frontier.pop() {
        for s in spans.iter().filter(|s| s.span.parent_span_id == id) {
            frontier.push(s.span.span_id.clone());
            out.push(s);
        }
    }
    out
}

async fn codex_tool_loop(transport: Transport) -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let codex = codex_binary()?;
    let mock = mock_openai::start(&e2e::certs_dir()).await?;
    let name = format!("codex-{}", transport.name());
    let traced = start_traced(tracer_bin(), &name, &[]).await?;

    let held = HeldClient::spawn(codex_command(&codex, &mock, transport)?)?;
    // The attacher looks at Codex once it runs; its first call waits for stdin's end.
    wait_until_hooked(&name, &codex, WAIT).await?;
    let before = responses_loop::served().len();
    let (pid, stdout) = held.release().await?;
    assert!(
        stdout.contains(responses_loop::FINAL_TEXT),
        "Codex printed the model's final text: {stdout}"
    );
    let served: Vec<ServedCall> = responses_loop::served()[before..].to_vec();
    assert!(
        served.iter().any(|c| c.tool_call) && served.iter().any(|c| !c.tool_call && !c.prewarm),
        "the mock asked for the tool and then answered: {served:#?}"
    );
    assert!(
        served.iter().all(|c| c.transport == transport.wire()),
        "every call went over {}: {served:#?}",
        transport.wire()
    );
    let received = mock.received();
    assert!(
        received
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {FAKE_KEY}"))),
        "Codex sent the key (so its absence from the export means something): {received:#?}"
    );

    let all = traced
        .receiver
        .wait_for("Codex's run and every call's span", WAIT, |spans| {
            spans.iter().any(|s| is_root_of(s, pid))
                && served
                    .iter()
                    .all(|c| !with_response_id(spans, &c.response_id).is_empty())
        })
        .await;
    let stopped = traced.tracer.stop()?;
    let all = all.with_context(|| {
        let mine: Vec<ReceivedSpan> = traced
            .receiver
            .spans()
            .into_iter()
            .filter(|s| as_int(s.resource_attr("process.pid")) == Some(pid as i64))
            .collect();
        format!(
            "served {served:#?}\nCodex's spans {mine:#?}\ntracer log:\n{}",
            stopped.stderr
        )
    })?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // Which of Codex's two stacks carried the calls: the hooks whose first bytes were judged.
    let codex_path = codex.display().to_string();
    let trusted: Vec<&str> = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("inferred TLS hook trusted") && l.contains(&codex_path))
        .collect();
    let through_openssl = trusted.iter().any(|l| l.contains("ssl_write_internal"));
    assert_eq!(
        through_openssl,
        transport == Transport::SseOpenSsl,
        "the transport's own stack carried it: {trusted:#?}"
    );
    assert!(
        through_openssl || trusted.iter().any(|l| l.contains("seal")),
        "rustls's record sealing was trusted: {trusted:#?}"
    );

    // One run, completed.
    let roots: Vec<&ReceivedSpan> = all.iter().filter(|s| is_root_of(s, pid)).collect();
    assert_eq!(roots.len(), 1, "one invoke_agent root: {roots:#?}");
    let root = roots[0];
    assert!(root.span.parent_span_id.is_empty());
    assert_eq!(
        as_str(root.attr("agent_tracer.run.outcome")),
        Some("completed"),
        "{root:#?}"
    );
    let trace = of_trace(&all, &root.span.trace_id);

    // Every call the mock served: one span, its exact numbers, no error.
    for call in &served {
        let spans = with_response_id(&all, &call.response_id);
        assert_eq!(spans.len(), 1, "one span for {call:?}: {spans:#?}");
        let span = spans[0];
        let what = format!("{call:?}: {span:#?}");
        assert_eq!(span.span.trace_id, root.span.trace_id, "{what}");
        assert_eq!(
            as_int(span.resource_attr("process.pid")),
            Some(pid as i64),
            "{what}"
        );
        assert_eq!(
            as_str(span.attr("gen_ai.request.model")),
            Some(responses_loop::LOOP_MODEL),
            "{what}"
        );
        assert_eq!(
            as_str(span.attr("gen_ai.response.model")),
            Some(responses_loop::RESPONSE_MODEL),
            "{what}"
        );
        assert_eq!(
            as_int(span.attr("gen_ai.usage.input_tokens")),
            Some(call.input_tokens),
            "{what}"
        );
        assert_eq!(
            as_int(span.attr("gen_ai.usage.output_tokens")),
            Some(call.output_tokens),
            "{what}"
        );
        assert_eq!(
            as_int(span.attr("gen_ai.usage.cache_read.input_tokens")),
            Some(call.cached_tokens),
            "{what}"
        );
        assert_ne!(
            span.span.status.as_ref().map(|s| s.code),
            Some(STATUS_ERROR),
            "{what}"
        );
        assert_eq!(span.attr("error.type"), None, "{what}");
        if call.tool_call {
            assert_eq!(
                as_strs(span.attr("agent_tracer.response.tool_call.ids")),
                Some(vec![responses_loop::TOOL_CALL_ID.to_string()]),
                "{what}"
            );
        }
    }
    // Nothing of Codex's went uncaptured (an unhooked stack shows as an encrypted-only span).
    let encrypted: Vec<&ReceivedSpan> = all
        .iter()
        .filter(|s| as_int(s.resource_attr("process.pid")) == Some(pid as i64))
        .filter(|s| s.attr("agent_tracer.capture.encrypted").is_some())
        .collect();
    assert!(encrypted.is_empty(), "encrypted-only: {encrypted:#?}");

    // The tool: its span, and the processes that ran the command beneath it.
    let tools: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.span.name == format!("execute_tool {}", responses_loop::TOOL_NAME))
        .collect();
    assert_eq!(tools.len(), 1, "one tool execution: {trace:#?}");
    let tool = tools[0];
    assert_eq!(
        as_str(tool.attr("gen_ai.tool.call.id")),
        Some(responses_loop::TOOL_CALL_ID)
    );
    assert_eq!(tool.span.parent_span_id, root.span.span_id);
    // Codex starts `/proc/self/exe --codex-run-as-process-setup ... /bin/bash -lc CMD`, which
    // execs the shell; the shell runs `uname`.
    let beneath = descendants(&trace, tool);
    let shell = beneath
        .iter()
        .find(|s| {
            s.span.name == "exec bash"
                && as_strs(s.attr("process.command_args"))
                    .is_some_and(|a| a.iter().any(|a| a.contains(responses_loop::TOOL_COMMAND)))
        })
        .with_context(|| format!("the shell that ran the command, beneath {beneath:#?}"))?;
    assert_eq!(
        as_int(shell.attr("process.exit.code")),
        Some(0),
        "{shell:#?}"
    );
    assert!(
        beneath.iter().any(|s| s.span.name == "exec uname"),
        "the command's own program: {beneath:#?}"
    );

    // The key Codex sent never left the host.
    assert!(!contains(&traced.receiver.raw_bytes(), FAKE_KEY.as_bytes()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_default_websocket_transport_tool_loop() -> Result<()> {
    codex_tool_loop(Transport::WebSocket).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_custom_provider_sse_over_openssl_tool_loop() -> Result<()> {
    codex_tool_loop(Transport::SseOpenSsl).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_custom_provider_sse_over_rustls_tool_loop() -> Result<()> {
    codex_tool_loop(Transport::SseRustls).await
}

/// `agent-tracer locate` lists both of Codex's stacks, and `agent-tracer check` shows both for a
/// running Codex, each hooked by inference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_and_check_list_both_of_codexs_stacks() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let codex = codex_binary()?;
    let cache = fresh_dir("locate-cache")?;
    let out = Command::new(tracer_bin())
        .arg("locate")
        .arg("--cache-dir")
        .arg(&cache)
        .arg(&codex)
        .output()?;
    ensure!(
        out.status.success(),
        "locate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let kinds: Vec<&str> = report["found"]
        .as_array()
        .context("found")?
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["openssl", "rustls"], "{report:#}");
    assert_eq!(report["failed"], serde_json::json!([]), "{report:#}");
    for found in report["found"].as_array().context("found")? {
        assert!(
            found["hooks"].as_array().is_some_and(|h| h.len() >= 4),
            "{found:#}"
        );
    }

    // A running Codex, held on its stdin before it connects anywhere.
    let mock = mock_openai::start(&e2e::certs_dir()).await?;
    let mut held = codex_command(&codex, &mock, Transport::WebSocket)?;
    let child = held
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let check = Command::new(tracer_bin())
        .arg("check")
        .env("AGENT_TRACER_CACHE_DIR", &cache)
        .output()?;
    let text = String::from_utf8_lossy(&check.stdout);
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{pid} ")))
        .collect();
    assert_eq!(mine.len(), 2, "one line per stack for pid {pid}:\n{text}");
    assert!(
        mine[0].ends_with("OpenSsl (executable): inferred"),
        "{text}"
    );
    assert!(mine[1].ends_with("Rustls (executable): inferred"), "{text}");
    Ok(())
}
