//! The real coding agents, unmodified, from the npm registry at the versions pinned in
//! tests/support/real-agents.txt (installed once into the user's cache by `cargo xtask setup`
//! or by the first test that needs them): Claude Code (a Bun executable with BoringSSL linked in
//! and no TLS symbols, Anthropic Messages streamed over SSE) and Gemini CLI (node relaunching itself as
//! a child node, `streamGenerateContent` over SSE). Each runs one complete tool loop against
//! the project's mock model API over HTTPS (tests/support/src/mock_agents.rs): the model asks
//! for a shell command, the agent really runs it, the model's final text quotes its output and
//! comes back on the agent's stdout. The mock stands in for the providers' APIs only because
//! nothing outside this machine may be reached; everything else is real: the eBPF programs,
//! the agents, their shells, the OTLP receiver.
//!
//! For every model call the mock served the trace must hold one span with that call's response
//! id, request and response model, exact token counts and no error; the tool's `execute_tool`
//! span with the `exec` of the command beneath it; one `invoke_agent` root for the prompt, side
//! requests included, its outcome `completed`; and the fake API key
//! nowhere in the exported bytes, the console or the tracer's log.
//!
//! `cargo xtask test --latest-agents` runs these against each agent's newest release.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tracer_testkit::{
    e2e::{self, of_trace, require_root, start_traced_with, HeldClient, TraceOptions, SERIAL},
    mock_agents::{
        ServedCall, CLAUDE_CODE_TOOL, CLAUDE_CODE_TOOL_USE_ID, FINAL_TEXT_PREFIX, GEMINI_CLI_TOOL,
        TOOL_COMMAND, TOOL_OUTPUT,
    },
    mock_openai::{self, MockOpenAi},
    otlp::{as_int, as_str, as_strs, OtlpReceiver, ReceivedSpan},
    real_agents,
};

/// Generous: the first run of a 400 MB Bun executable is analysed before it is let go, and a
/// debug tracer on two shared cores is slow at that.
const HOOK_WAIT: Duration = Duration::from_secs(420);
const SPAN_WAIT: Duration = Duration::from_secs(60);
const STATUS_ERROR: i32 = 2;

const CLAUDE_KEY: &str = "sk-ant-api03-real-agent-secret-never-exported";
const GEMINI_KEY: &str = "AIzaSy-real-agent-secret-never-exported";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// A throwaway home and working directory for one agent run (its config, sessions, caches).
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let root = tracer_testkit::target_dir()
            .join("e2e-real-agents")
            .join(name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home"))?;
        std::fs::create_dir_all(root.join("work"))?;
        Ok(Self { root })
    }
    fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    fn work(&self) -> PathBuf {
        self.root.join("work")
    }
}

/// An agent's command with nothing of the test's environment but a plain PATH: no proxy, no
/// real credentials, no config of the machine's user.
fn agent_command(program: &Path, scratch: &Scratch, ca: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .current_dir(scratch.work())
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", scratch.home())
        .env("NODE_EXTRA_CA_CERTS", ca)
        .env("LANG", "C.UTF-8")
        .env("TERM", "dumb")
        .env("NO_COLOR", "1");
    c
}

/// The mock's base URL without the `/v1` the OpenAI clients want.
fn origin(server: &MockOpenAi) -> String {
    format!("https://127.0.0.1:{}", server.addr.port())
}

/// Runs `command` with stdin closed to its end; its pid and stdout, once it exited 0.
async fn run_to_end(mut command: Command) -> Result<(u32, String)> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let pid = child.id();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    if !output.status.success() {
        bail!(
            "the agent exited {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((pid, String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The model calls the mock served, in order.
fn served_calls(server: &MockOpenAi) -> Vec<ServedCall> {
    server
        .received()
        .into_iter()
        .filter_map(|r| r.served)
        .collect()
}

fn span_with_response_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| as_str(s.attr("gen_ai.response.id")) == Some(id))
        .collect()
}

/// Waits until every call the mock served has its span and the run's root is exported; returns
/// everything received by then.
async fn wait_for_run(
    receiver: &OtlpReceiver,
    served: &[ServedCall],
    pids: &BTreeSet<i64>,
) -> Result<Vec<ReceivedSpan>> {
    let wanted: Vec<String> = served.iter().map(|c| c.response_id.clone()).collect();
    receiver
        .wait_for(
            "a span for each call and the run's root",
            SPAN_WAIT,
            |spans| {
                wanted
                    .iter()
                    .all(|id| !span_with_response_id(spans, id).is_empty())
                    && spans.iter().any(|s| is_root(s, pids))
            },
        )
        .await
}

fn pid_of(span: &ReceivedSpan) -> Option<i64> {
    as_int(span.resource_attr("process.pid"))
}

fn is_root(span: &ReceivedSpan, pids: &BTreeSet<i64>) -> bool {
    as_str(span.attr("gen_ai.operation.name")) == Some("invoke_agent")
        && span.span.parent_span_id.is_empty()
        && pid_of(span).is_some_and(|p| pids.contains(&p))
}

/// The pids of the run: the agent's own and those of the processes it started that made model
/// calls (Gemini CLI relaunches itself as a child node).
fn run_pids(spans: &[ReceivedSpan], agent: u32, served: &[ServedCall]) -> BTreeSet<i64> {
    let mut pids = BTreeSet::from([agent as i64]);
    for call in served {
        for span in span_with_response_id(spans, &call.response_id) {
            if let Some(pid) = pid_of(span) {
                pids.insert(pid);
            }
        }
    }
    pids
}

/// Token counts as the GenAI conventions define them, from what the provider reported.
struct Expected {
    input: i64,
    output: i64,
    cache_read: i64,
    cache_creation: Option<i64>,
}

/// Anthropic's `input_tokens` exclude the cache; the conventions' input count includes it.
fn anthropic_expected(call: &ServedCall) -> Expected {
    let u = call.usage;
    Expected {
        input: u.input + u.cache_read + u.cache_creation,
        output: u.output,
        cache_read: u.cache_read,
        cache_creation: Some(u.cache_creation),
    }
}

/// Gemini's prompt count includes the cache; its thoughts are output not counted in the
/// candidates.
fn gemini_expected(call: &ServedCall) -> Expected {
    let u = call.usage;
    Expected {
        input: u.input,
        output: u.output + u.thoughts,
        cache_read: u.cache_read,
        cache_creation: None,
    }
}

/// The checks every served model call must pass: one span, its ids, models, tokens, no error,
/// in the run's trace.
fn check_calls(
    spans: &[ReceivedSpan],
    served: &[ServedCall],
    runs: &Runs,
    expected: fn(&ServedCall) -> Expected,
) {
    for call in served {
        let found = span_with_response_id(spans, &call.response_id);
        assert_eq!(
            found.len(),
            1,
            "one span for the call answered {}: {found:#?}",
            call.response_id
        );
        let span = found[0];
        let what = format!("{} ({})", call.response_id, call.step);
        assert_eq!(
            span.span.trace_id, runs.agent_loop.span.trace_id,
            "{what} is in the prompt's run"
        );
        assert_eq!(
            span.span.parent_span_id, runs.agent_loop.span.span_id,
            "{what} hangs under the run's root"
        );
        assert_eq!(
            as_str(span.attr("gen_ai.request.model")),
            Some(call.request_model.as_str()),
            "{what}"
        );
        assert_eq!(
            as_str(span.attr("gen_ai.response.model")),
            Some(call.response_model.as_str()),
            "{what}"
        );
        let want = expected(call);
        assert_eq!(
            as_int(span.attr("gen_ai.usage.input_tokens")),
            Some(want.input),
            "{what}: input tokens"
        );
        assert_eq!(
            as_int(span.attr("gen_ai.usage.output_tokens")),
            Some(want.output),
            "{what}: output tokens"
        );
        assert_eq!(
            as_int(span.attr("gen_ai.usage.cache_read.input_tokens")),
            Some(want.cache_read),
            "{what}: cache read tokens"
        );
        if let Some(creation) = want.cache_creation {
            assert_eq!(
                as_int(span.attr("gen_ai.usage.cache_creation.input_tokens")),
                Some(creation),
                "{what}: cache creation tokens"
            );
        }
        assert_eq!(
            as_strs(span.attr("gen_ai.response.finish_reasons")).map(|r| r.len()),
            Some(1),
            "{what}: finish reasons"
        );
        assert_eq!(
            span.attr("error.type"),
            None,
            "{what} is no error: {span:#?}"
        );
        assert_ne!(
            span.span.status.as_ref().map(|s| s.code),
            Some(STATUS_ERROR),
            "{what} is no error: {span:#?}"
        );
    }
}

/// The root of what the agent did for the one prompt it was given.
struct Runs<'a> {
    agent_loop: &'a ReceivedSpan,
}

/// One `invoke_agent` root for the prompt, completed. Side requests around the tool loop
/// (Gemini CLI's model-routing classifier: another system prompt, no tools; Claude Code's
/// quota probe and title) belong to the same run: the user asked one thing.
fn check_roots<'a>(
    spans: &'a [ReceivedSpan],
    pids: &BTreeSet<i64>,
    served: &[ServedCall],
) -> Runs<'a> {
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| is_root(s, pids)).collect();
    let side_calls = served.iter().filter(|c| c.step == "side").count();
    assert_eq!(
        roots.len(),
        1,
        "one invoke_agent root for the prompt, its {side_calls} side requests included \
         (pids {pids:?}): {roots:#?}"
    );
    let root = roots[0];
    assert_eq!(
        as_str(root.attr("agent_tracer.run.outcome")),
        Some("completed"),
        "{root:#?}"
    );
    assert_eq!(
        as_int(root.attr("agent_tracer.run.llm_calls")),
        Some(served.len() as i64),
        "every call the mock served is one of the run's: {root:#?}"
    );
    Runs { agent_loop: root }
}

/// The tool's span (a child of the root, for the call the model asked for) and, beneath it,
/// the exec of the command: the external program the shell ran, exited 0.
fn check_tool<'a>(
    trace: &'a [ReceivedSpan],
    root: &ReceivedSpan,
    tool: &str,
    call_id: Option<&str>,
) -> &'a ReceivedSpan {
    let name = format!("execute_tool {tool}");
    let tools: Vec<&ReceivedSpan> = trace.iter().filter(|s| s.span.name == name).collect();
    assert_eq!(tools.len(), 1, "one {name:?} in {trace:#?}");
    let tool_span = tools[0];
    assert_eq!(tool_span.span.parent_span_id, root.span.span_id);
    assert_eq!(as_str(tool_span.attr("gen_ai.tool.name")), Some(tool));
    if let Some(id) = call_id {
        assert_eq!(as_str(tool_span.attr("gen_ai.tool.call.id")), Some(id));
    }
    assert_ne!(
        tool_span.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR),
        "{tool_span:#?}"
    );
    // The processes the tool started, at any depth (the agent's shell, then the program).
    let mut beneath = vec![tool_span.span.span_id.clone()];
    let mut execs = Vec::new();
    while let Some(parent) = beneath.pop() {
        for child in trace.iter().filter(|s| s.span.parent_span_id == parent) {
            beneath.push(child.span.span_id.clone());
            if child.span.name.starts_with("exec ") {
                execs.push(child);
            }
        }
    }
    let program = TOOL_COMMAND.split_whitespace().next().unwrap_or_default();
    let ran = execs
        .iter()
        .find(|s| {
            as_strs(s.attr("process.command_args"))
                .is_some_and(|args| args.first().map(String::as_str) == Some(program))
        })
        .unwrap_or_else(|| panic!("an exec of {program:?} beneath the tool: {execs:#?}"));
    assert_eq!(
        as_strs(ran.attr("process.command_args")),
        Some(TOOL_COMMAND.split_whitespace().map(String::from).collect())
    );
    assert_eq!(as_int(ran.attr("process.exit.code")), Some(0));
    tool_span
}

/// The fake key is nowhere in what the tracer exported or printed.
fn check_no_key(receiver: &OtlpReceiver, console: &str, log: &str, key: &str) {
    assert!(
        !e2e::contains(&receiver.raw_bytes(), key.as_bytes()),
        "the API key is never exported"
    );
    assert!(!console.contains(key), "the API key is never printed");
    assert!(!log.contains(key), "the API key is never logged");
}

fn final_answer() -> String {
    format!("{FINAL_TEXT_PREFIX}{TOOL_OUTPUT}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_tool_loop_is_traced_call_by_call() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let claude = real_agents::claude_code()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let scratch = Scratch::new("claude-code")?;
    let name = "real-claude-code";
    let traced = start_traced_with(
        tracer_bin(),
        name,
        &TraceOptions {
            console: true,
            ..Default::default()
        },
    )
    .await?;

    // Driven the way the Agent SDK drives it: the prompt as a stream-json message on stdin,
    // where the agent waits, before any request, until the tracer has analysed its executable
    // and hooked BoringSSL in it. (A plain `-p` gives up on stdin after 3 s.)
    let mut command = agent_command(&claude.executable, &scratch, &server.cert_path);
    command
        .args(["-p", "--dangerously-skip-permissions", "--verbose"])
        .args([
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
        ])
        .env("ANTHROPIC_BASE_URL", origin(&server))
        .env("ANTHROPIC_API_KEY", CLAUDE_KEY)
        .env("CLAUDE_CONFIG_DIR", scratch.home().join(".claude"))
        // As root Claude Code refuses to skip permissions unless told it is in a sandbox.
        .env("IS_SANDBOX", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1");
    let held = HeldClient::spawn(command)?;
    e2e::wait_until_hooked(name, &claude.executable, HOOK_WAIT).await?;
    let prompt = serde_json::json!({"type": "user", "message": {"role": "user",
        "content": format!("Run `{TOOL_COMMAND}` and tell me what it printed.")}});
    let (pid, stdout) = held.release_with(format!("{prompt}\n").as_bytes()).await?;
    assert!(
        stdout.contains(&final_answer()),
        "Claude Code {} printed the model's final text quoting the command's output: {stdout:?}",
        claude.version
    );

    let served = served_calls(&server);
    let steps: Vec<&str> = served.iter().map(|c| c.step).collect();
    assert!(
        steps.contains(&"tool_call") && steps.contains(&"final"),
        "the mock served the loop: {served:#?}"
    );
    let pids = BTreeSet::from([pid as i64]);
    let spans = wait_for_run(&traced.receiver, &served, &pids).await;
    let stopped = traced.tracer.stop()?;
    let spans = spans.with_context(|| format!("tracer log:\n{}", stopped.stderr))?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let runs = check_roots(&spans, &pids, &served);
    let root = runs.agent_loop;
    assert_eq!(as_str(root.attr("gen_ai.provider.name")), Some("anthropic"));
    check_calls(&spans, &served, &runs, anthropic_expected);
    let trace = of_trace(&spans, &root.span.trace_id);
    check_tool(
        &trace,
        root,
        CLAUDE_CODE_TOOL,
        Some(CLAUDE_CODE_TOOL_USE_ID),
    );
    check_no_key(
        &traced.receiver,
        &stopped.stdout,
        &stopped.stderr,
        CLAUDE_KEY,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_tool_loop_is_traced_call_by_call() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let gemini = real_agents::gemini_cli()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let scratch = Scratch::new("gemini-cli")?;
    // API-key auth without asking, no usage statistics or update checks (they would leave the
    // machine), no telemetry.
    let settings = scratch.home().join(".gemini");
    std::fs::create_dir_all(&settings)?;
    std::fs::write(
        settings.join("settings.json"),
        serde_json::json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
            "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
        })
        .to_string(),
    )?;
    // node is on the tracer's PATH: analysed at start-up, hooked before the agent runs.
    let name = "real-gemini-cli";
    let traced = start_traced_with(
        tracer_bin(),
        name,
        &TraceOptions {
            console: true,
            ..Default::default()
        },
    )
    .await?;

    let mut command = agent_command(Path::new("node"), &scratch, &server.cert_path);
    command
        .arg(&gemini.executable)
        .args([
            "-p",
            &format!("Run `{TOOL_COMMAND}` and tell me what it printed."),
            "--yolo",
        ])
        .env("GOOGLE_GEMINI_BASE_URL", origin(&server))
        .env("GEMINI_API_KEY", GEMINI_KEY)
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true");
    let (pid, stdout) = run_to_end(command).await?;
    assert!(
        stdout.contains(&final_answer()),
        "Gemini CLI {} printed the model's final text quoting the command's output: {stdout:?}",
        gemini.version
    );

    let served = served_calls(&server);
    let steps: Vec<&str> = served.iter().map(|c| c.step).collect();
    assert!(
        steps.contains(&"tool_call") && steps.contains(&"final"),
        "the mock served the loop: {served:#?}"
    );
    let spans = traced
        .receiver
        .wait_for("the calls' spans", SPAN_WAIT, |spans| {
            served
                .iter()
                .all(|c| !span_with_response_id(spans, &c.response_id).is_empty())
        })
        .await;
    let spans = match spans {
        Ok(spans) => spans,
        Err(e) => {
            let stopped = traced.tracer.stop()?;
            return Err(e.context(format!("tracer log:\n{}", stopped.stderr)));
        }
    };
    let pids = run_pids(&spans, pid, &served);
    let spans = wait_for_run(&traced.receiver, &served, &pids).await;
    let stopped = traced.tracer.stop()?;
    let spans = spans.with_context(|| format!("tracer log:\n{}", stopped.stderr))?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let runs = check_roots(&spans, &pids, &served);
    let root = runs.agent_loop;
    assert_eq!(
        as_str(root.attr("gen_ai.provider.name")),
        Some("gcp.gemini")
    );
    check_calls(&spans, &served, &runs, gemini_expected);
    let trace = of_trace(&spans, &root.span.trace_id);
    check_tool(&trace, root, GEMINI_CLI_TOOL, None);
    check_no_key(
        &traced.receiver,
        &stopped.stdout,
        &stopped.stderr,
        GEMINI_KEY,
    );
    Ok(())
}
