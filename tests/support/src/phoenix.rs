//! A real Arize Phoenix (`arize-phoenix` from PyPI) for the tests: its own venv under
//! target/e2e-phoenix-venv, built once and reused (file lock + version stamp, like [`crate::python`]),
//! and a [`Phoenix`] server on 127.0.0.1 with a fresh database per run, read back through Phoenix's
//! REST API (`GET /v1/projects/{project}/spans`) and GraphQL (`POST /graphql`).
//!
//! Costs measured on the 2-core dev machine: building the venv (PyPI download and install of ~200
//! packages) takes about 70 s when the machine is quiet, 135 s at a load of 12, paid once by the
//! first test that needs it; starting the server (imports, migrations of a new SQLite database)
//! takes about 10 s quiet, 26-36 s at a load of 12.
//!
//! # What Phoenix (20.26.1) does with what it receives
//!
//! Read from its source (`phoenix/trace/otel.py`, `trace/gen_ai/conversion.py`,
//! `db/insertion/span.py`, `server/api/routers/v1/{traces,spans}.py`) and checked by
//! tests/support/tests/phoenix.rs:
//!
//! * **Transport.** OTLP/HTTP at `POST /v1/traces` on the UI port takes only
//!   `content-type: application/x-protobuf` (JSON gets 415), optionally gzip or deflate; it answers
//!   200 before storing (spans are queued and written in the background, so read back with
//!   [`Phoenix::wait_for_spans`]). OTLP/gRPC is a separate port (`PHOENIX_GRPC_PORT`).
//! * **Project.** Chosen per `ResourceSpans`: the `x-project-name` HTTP header if sent, else the
//!   resource attribute `openinference.project.name` (a string), else `default`. A trace belongs
//!   to the project of its first stored span; later spans of the same trace id land in that trace
//!   whatever their resource says. The project is created on first use.
//! * **Span kind.** The span attribute `openinference.span.kind` (`LLM`, `TOOL`, `AGENT`, `CHAIN`,
//!   …; lower case is upper-cased, anything unknown or missing is `UNKNOWN`). When it is absent and
//!   the span has any `gen_ai.*` attribute, Phoenix infers it from `gen_ai.operation.name`
//!   (`chat`/`text_completion`/`generate_content` → LLM, `execute_tool` → TOOL,
//!   `invoke_agent`/`create_agent` → AGENT, `embeddings`, `retrieval`), or without an operation
//!   from `gen_ai.tool.name` (TOOL) or messages/`gen_ai.request.model` (LLM). The REST API reports
//!   the kind as `span_kind` and removes `openinference.span.kind` from `attributes`.
//! * **gen_ai → OpenInference.** Phoenix synthesizes OpenInference attributes from `gen_ai.*`
//!   (`gen_ai.request.model` → `llm.model_name`, `gen_ai.usage.input_tokens`/`output_tokens` →
//!   `llm.token_count.prompt`/`completion` and their sum as `.total`, `gen_ai.conversation.id` →
//!   `session.id`, `gen_ai.provider.name` → `llm.provider`/`llm.system`, tool name/id/arguments
//!   on TOOL spans, messages), but only fills gaps: an attribute the span already carries wins.
//!   The synthesized ones are stored and returned as if sent.
//! * **Token counts.** Only LLM-kind spans get token columns: `llm.token_count.prompt` and
//!   `llm.token_count.completion` (ints; numeric strings are accepted), or the synthesized ones; an
//!   LLM span without them counts 0. Phoenix's own total (GraphQL `tokenCountTotal`, the UI) is
//!   prompt + completion: a sent `llm.token_count.total` is kept as an attribute but not used for
//!   it. Each span's prompt/completion are also summed up its ancestors
//!   (`cumulativeTokenCountPrompt`/`Completion`), which is what the UI shows on the AGENT root.
//!   Token counts on non-LLM spans are kept as attributes only.
//! * **Sessions.** `session.id` (or the synthesized one) puts the trace into a project session;
//!   the first span of the trace stored with a session id decides it.
//! * **Ids.** Trace and span ids are returned as lower-case hex; a root has `parent_id: null`.
//!
//! # Kept off the internet
//!
//! `PHOENIX_TELEMETRY_ENABLED=false` (no FullStory / Scarf pixels in the UI),
//! `PHOENIX_ALLOW_EXTERNAL_RESOURCES=false` (no web fonts, no WASM sandbox download),
//! `PHOENIX_DISABLE_AGENT_ASSISTANT=true` (no docs MCP server), `PHOENIX_ENABLE_MCP_SERVER=false`,
//! `PHOENIX_ALLOWED_SANDBOX_PROVIDERS=NONE`. Checked with `strace -e connect` over a start, an
//! OTLP/HTTP and an OTLP/gRPC export and REST/GraphQL reads: the server made no `connect` at all
//! (its model cost table is built in). Phoenix binds OTLP/gRPC on every interface (`[::]`, not
//! configurable), so `LAUNCHER` rebinds it to 127.0.0.1 before starting the server.
//!
//! The server is a plain-HTTP Python process: a test that runs the tracer at the same time sees
//! its sockets too, so filter by [`Phoenix::pid`] where that matters.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// Pinned so a test run is reproducible; bump deliberately (and re-check the module notes).
pub const PACKAGES: &[&str] = &["arize-phoenix==20.26.1"];

/// Long enough for a start on a 2-core machine busy with builds (10 s when quiet, 26-36 s at a
/// load of 12; one start under such load took about 200 s).
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `phoenix serve` with OTLP/gRPC on loopback only. Phoenix's GrpcServer calls
/// `add_insecure_port("[::]:PORT")`; anything else means Phoenix changed and this must be
/// revisited, so it fails loudly rather than binding on every interface.
const LAUNCHER: &str = r#"
import sys
import grpc.aio._server as _server

_add_insecure_port = _server.Server.add_insecure_port

def _loopback_only(self, address):
    if not address.startswith("[::]:"):
        raise RuntimeError(f"unexpected gRPC bind address {address!r}")
    return _add_insecure_port(self, "127.0.0.1:" + address[len("[::]:"):])

_server.Server.add_insecure_port = _loopback_only

from phoenix.server.main import main

sys.argv = ["phoenix", "serve"]
sys.exit(main())
"#;

/// Path of the Phoenix venv's python, creating the venv if needed.
pub fn venv_python() -> Result<PathBuf> {
    let dir = crate::target_dir().join("e2e-phoenix-venv");
    std::fs::create_dir_all(crate::target_dir())?;
    let lock = File::create(crate::target_dir().join("e2e-phoenix-venv.lock"))?;
    // Safety: valid fd for the life of `lock`.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking the Phoenix venv: {}",
            std::io::Error::last_os_error()
        );
    }
    let python = dir.join("bin/python");
    let stamp = dir.join(".installed");
    let wanted = PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return Ok(python);
    }
    // A half-built venv from an interrupted run would otherwise be reused as is.
    let _ = std::fs::remove_file(&stamp);
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A Phoenix server on 127.0.0.1 with its own database; killed (with its process group) and its
/// working directory removed when dropped.
pub struct Phoenix {
    child: Child,
    http_port: u16,
    grpc_port: u16,
    dir: PathBuf,
    client: reqwest::Client,
}

impl Phoenix {
    /// Builds the venv if needed, starts the server and waits until it answers `/healthz`.
    pub async fn start() -> Result<Phoenix> {
        let python = tokio::task::spawn_blocking(venv_python)
            .await
            .context("building the Phoenix venv")??;
        let http_port = crate::e2e::free_port()?;
        let grpc_port = loop {
            let port = crate::e2e::free_port()?;
            if port != http_port {
                break port;
            }
        };
        let dir =
            std::env::temp_dir().join(format!("tracer-phoenix-{}-{http_port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = File::create(dir.join("server.log"))?;
        let working_dir = dir.join("working");
        std::fs::create_dir_all(&working_dir)?;

        let mut command = Command::new(&python);
        command
            .args(["-c", LAUNCHER])
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", http_port.to_string())
            .env("PHOENIX_GRPC_PORT", grpc_port.to_string())
            .env("PHOENIX_WORKING_DIR", &working_dir)
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .env("PHOENIX_ALLOW_EXTERNAL_RESOURCES", "false")
            .env("PHOENIX_DISABLE_AGENT_ASSISTANT", "true")
            .env("PHOENIX_ENABLE_MCP_SERVER", "false")
            .env("PHOENIX_ALLOWED_SANDBOX_PROVIDERS", "NONE")
            // The migrations' SQL would fill the log.
            .env("PHOENIX_LOG_MIGRATIONS", "false")
            // Whatever the developer's shell has must not point this server elsewhere.
            .env_remove("PHOENIX_SQL_DATABASE_URL")
            .env_remove("PHOENIX_COLLECTOR_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("PHOENIX_ENABLE_AUTH")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, so Drop can end everything it started.
            .process_group(0);
        let child = command.spawn().context("starting Phoenix")?;
        let mut phoenix = Phoenix {
            child,
            http_port,
            grpc_port,
            dir,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        let started = Instant::now();
        phoenix.wait_ready().await?;
        eprintln!(
            "Phoenix {} ready in {:.1?} (pid {})",
            phoenix.base_url(),
            started.elapsed(),
            phoenix.pid()
        );
        Ok(phoenix)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let health = format!("{}/healthz", self.base_url());
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "Phoenix exited before it was ready ({status}):\n{}",
                    self.log_tail()
                );
            }
            let answered = self.client.get(&health).send().await;
            if matches!(&answered, Ok(r) if r.status().is_success())
                && std::net::TcpStream::connect(("127.0.0.1", self.grpc_port)).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "Phoenix was not ready within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The server's pid (e.g. to tell its own traffic apart in a capture).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`: the UI, `/v1` REST API and `/graphql`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// OTLP/HTTP (protobuf only) endpoint for traces.
    pub fn otlp_http_endpoint(&self) -> String {
        format!("{}/v1/traces", self.base_url())
    }

    /// OTLP/gRPC endpoint (plain text).
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Where the server's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 40)
    }

    /// Every span Phoenix stored in `project` (name or id), newest first, as its REST API gives
    /// them: `name`, `span_kind`, `context.trace_id`, `context.span_id`, `parent_id`,
    /// `start_time`, `end_time`, `status_code`, `attributes` (flat `key: value`, without
    /// `openinference.span.kind`), `events`. An unknown project (nothing received yet) is empty.
    pub async fn spans(&self, project: &str) -> Result<Vec<Value>> {
        let url = format!("{}/v1/projects/{project}/spans", self.base_url());
        let mut spans = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self.client.get(&url).query(&[("limit", "1000")]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c)]);
            }
            let response = request.send().await.with_context(|| format!("GET {url}"))?;
            let status = response.status();
            let body = response.bytes().await?;
            if status == reqwest::StatusCode::NOT_FOUND && spans.is_empty() {
                return Ok(spans);
            }
            if !status.is_success() {
                bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
            }
            let page: Value = serde_json::from_slice(&body).with_context(|| {
                format!("GET {url}: not JSON: {}", String::from_utf8_lossy(&body))
            })?;
            let data = page["data"]
                .as_array()
                .with_context(|| format!("GET {url}: no data array in {page}"))?;
            spans.extend(data.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(spans),
            }
        }
    }

    /// Waits until `project` holds at least `n` spans; returns them all.
    pub async fn wait_for_spans(
        &self,
        project: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans(project).await?;
            if spans.len() >= n {
                return Ok(spans);
            }
            if Instant::now() > deadline {
                bail!(
                    "Phoenix holds {} span(s) in project {project:?} after {timeout:?}, \
                     wanted {n}: {spans:#?}\nserver log:\n{}",
                    spans.len(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a GraphQL query against Phoenix's own API (what its UI reads: computed token counts,
    /// trace counts, sessions); returns `data`, or an error carrying the GraphQL errors.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value> {
        let url = format!("{}/graphql", self.base_url());
        let body = serde_json::json!({ "query": query, "variables": variables });
        let response = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let answer: Value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "POST {url}: {status}, not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        if !status.is_success() || answer.get("errors").is_some_and(|e| !e.is_null()) {
            bail!("POST {url}: {status}: {answer}");
        }
        Ok(answer["data"].clone())
    }

    /// Sends an OTLP/HTTP protobuf export request (already encoded) to the server.
    pub async fn post_otlp(&self, encoded: Vec<u8>) -> Result<()> {
        let url = self.otlp_http_endpoint();
        let response = self
            .client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(encoded)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            bail!("POST {url}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        // Safety: kill has no memory preconditions; the child leads its own process group (set at
        // spawn), so this ends it and anything it started, and only those.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
