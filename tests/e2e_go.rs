//! End-to-end for Go's crypto/tls: an unmodified Go HTTPS client (stdlib only, built here by the
//! real Go toolchain, once with its symbol table and once stripped with `-ldflags="-s -w"`)
//! calls the local OpenAI-compatible server while the real agent-tracer binary runs. The tracer
//! must find `crypto/tls.(*Conn).Write`/`Read` in each executable, probe their entries and RETs
//! (never uretprobes: they crash Go), and export the call as a GenAI span, without changing what
//! the client does.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tracer_testkit::{
    e2e::{
        contains, of_pid, require_root, start_traced_with, wait_until_hooked, HeldClient,
        TraceOptions, Traced, SERIAL,
    },
    go,
    mock_openai::{self, MockOpenAi},
    otlp::{as_int, as_str},
};

/// What tests/clients/go/https_client.go sends, byte for byte.
const REQUEST_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from go"}]}"#;
const API_KEY: &str = "sk-go-secret";
const SPAN_WAIT: Duration = Duration::from_secs(30);
const ATTACH_WAIT: Duration = Duration::from_secs(30);
const TRACER_NAME: &str = "go";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn work_dir() -> PathBuf {
    tracer_testkit::target_dir().join("e2e-go")
}

/// What the client printed, and who it was.
#[derive(Debug, PartialEq, Eq)]
struct ClientOutcome {
    status: i64,
    body: String,
}

/// Starts the client held before its request (`--wait-stdin`).
fn spawn_client(binary: &Path, server: &MockOpenAi) -> Result<HeldClient> {
    let mut command = Command::new(binary);
    command
        .arg(server.base_url())
        .arg("--wait-stdin")
        .env("SSL_CERT_FILE", &server.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY");
    HeldClient::spawn(command)
}

/// Lets the held client send its request and collects its one line of output.
async fn release_client(client: HeldClient) -> Result<(u32, ClientOutcome)> {
    let (pid, line) = client.release_line().await?;
    Ok((
        pid,
        ClientOutcome {
            status: line["status"].as_i64().context("status")?,
            body: line["body"].as_str().context("body")?.to_string(),
        },
    ))
}

/// The bytes recorded for `pid` in `direction` ("egress"/"ingress"), one entry per connection.
fn recorded_streams(dir: &Path, pid: u32, direction: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let prefix = format!("{pid}-");
    let suffix = format!("-{direction}.bin");
    let mut streams = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(&suffix) {
            streams.push((name, std::fs::read(entry.path())?));
        }
    }
    Ok(streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_crypto_tls_calls_become_genai_spans() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let dir = work_dir();
    let source = go::https_client_source();
    let binaries = [
        go::build(&source, &dir.join("https_client"), false)?,
        go::build(&source, &dir.join("https_client-stripped"), true)?,
    ];
    let binaries = binaries
        .iter()
        .map(std::fs::canonicalize)
        .collect::<std::io::Result<Vec<_>>>()?;
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;

    // What the clients do untraced: the tracer must not change it.
    let mut untraced = Vec::new();
    for binary in &binaries {
        let (_, outcome) = release_client(spawn_client(binary, &server)?).await?;
        assert_eq!(outcome.status, 200, "{outcome:?}");
        untraced.push(outcome);
    }

    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(tracer_bin(), TRACER_NAME, &TraceOptions::default()).await?;

    let mut traced = Vec::new();
    for (binary, before) in binaries.iter().zip(&untraced) {
        let child = spawn_client(binary, &server)?;
        wait_until_hooked(TRACER_NAME, binary, ATTACH_WAIT).await?;
        let (pid, outcome) = release_client(child).await?;
        assert_eq!(
            &outcome,
            before,
            "{} behaves the same traced",
            binary.display()
        );
        receiver
            .wait_for(
                &format!("the span of {} (pid {pid})", binary.display()),
                SPAN_WAIT,
                |s| !of_pid(s, pid).is_empty(),
            )
            .await?;
        traced.push((binary, pid, outcome));
    }
    let output = running.stop()?;
    assert!(
        output.status.success(),
        "tracer exit: {}\n{}",
        output.status,
        output.stderr
    );

    let received = server.received();
    assert_eq!(received.len(), 2 * binaries.len(), "one request per run");
    for request in &received {
        assert_eq!(request.body_len, REQUEST_BODY.len());
        assert_eq!(
            request.authorization.as_deref(),
            Some(&format!("Bearer {API_KEY}")[..])
        );
    }

    let spans = receiver.spans();
    for (binary, pid, outcome) in &traced {
        let what = binary.display();
        let mine = of_pid(&spans, *pid);
        assert_eq!(mine.len(), 1, "{what}: one span per call: {mine:#?}");
        let span = &mine[0];
        assert_eq!(span.span.name, "chat gpt-4o-mini", "{what}");
        assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
        assert_eq!(
            as_int(span.attr("http.request.body.size")),
            Some(REQUEST_BODY.len() as i64),
            "{what}: the server received {} body bytes",
            REQUEST_BODY.len()
        );
        assert_eq!(
            as_str(span.attr("gen_ai.response.id")),
            Some("chatcmpl-mock-nonstream")
        );
        assert_eq!(
            span.attr("agent_tracer.capture.bytes_lost"),
            None,
            "{what}: nothing may be lost"
        );

        // The plaintext itself, as the tracer reassembled it.
        let egress = recorded_streams(&streams_dir, *pid, "egress")?;
        assert!(
            egress
                .iter()
                .any(|(_, bytes)| contains(bytes, REQUEST_BODY.as_bytes())
                    && contains(bytes, b"POST /v1/chat/completions HTTP/1.1\r\n")),
            "{what}: the request is recorded whole: {:?}",
            egress.iter().map(|(n, b)| (n, b.len())).collect::<Vec<_>>()
        );
        let ingress = recorded_streams(&streams_dir, *pid, "ingress")?;
        assert!(
            ingress
                .iter()
                .any(|(_, bytes)| contains(bytes, outcome.body.as_bytes())
                    && contains(bytes, b"HTTP/1.1 200 OK\r\n")),
            "{what}: the response is recorded whole: {:?}",
            ingress
                .iter()
                .map(|(n, b)| (n, b.len()))
                .collect::<Vec<_>>()
        );
    }

    let exported = receiver.raw_bytes();
    assert!(
        !contains(&exported, API_KEY.as_bytes()),
        "the API key was exported"
    );
    assert!(!output.stdout.contains(API_KEY), "the API key was printed");
    Ok(())
}
