//! End-to-end HTTP/2: unmodified clients that choose HTTP/2 by themselves call the local
//! OpenAI-compatible server while the real agent-tracer binary runs, and each call must come out
//! as the same GenAI span HTTP/1.1 gives. curl (libssl, nghttp2) over TLS with ALPN `h2`, a
//! JSON and a streamed (SSE) call; curl over a plain socket with prior knowledge (h2c), and with
//! an HTTP/1.1 `Upgrade: h2c` (against the testkit's upgrading server, and one that ignores the
//! header); Go's net/http, whose HTTP/2 transport carries both calls on one connection; and a Go
//! connection the tracer joins after its first call, whose later calls come out with what could
//! be decoded and the mark that says the rest was not.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{
        self, clients_dir, contains, of_pid, recorded, require_root, start_traced,
        wait_until_hooked, HeldClient, SERIAL,
    },
    go,
    mock_openai::{self, MockOpenAi},
    otlp::{as_bool, as_f64, as_int, as_str, as_strs, ReceivedSpan},
};

const WAIT: Duration = Duration::from_secs(30);
const ATTACH_WAIT: Duration = Duration::from_secs(30);
const API_KEY: &str = "sk-h2-secret-never-exported";
const PLAIN_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello over h2"}]}"#;
const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"messages":[{"role":"user","content":"weather in Paris?"}]}"#;
/// What every HTTP/2 client writes first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// The API key as a curl header file: a command line is exported (`process.command_line`), and
/// a header given there is not recognised as a secret to redact.
fn auth_header_file() -> Result<PathBuf> {
    let path = e2e::certs_dir().join("http2-curl-auth.headers");
    std::fs::create_dir_all(e2e::certs_dir())?;
    std::fs::write(&path, format!("authorization: Bearer {API_KEY}\n"))?;
    Ok(path)
}

/// curl asked for HTTP/2: ALPN `h2` over TLS, prior knowledge on a plain socket.
fn curl(server: &MockOpenAi, body: &str, auth: &Path) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--fail-with-body",
        "-N",
        "-H",
        "content-type: application/json",
        "-H",
        &format!("@{}", auth.display()),
        "-d",
        body,
    ]);
    if server.tls {
        c.arg("--http2").arg("--cacert").arg(&server.cert_path);
    } else {
        c.arg("--http2-prior-knowledge");
    }
    c.arg(format!("{}/chat/completions", server.base_url()))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY");
    c
}

/// What one call's span must show, whatever the client.
fn assert_call(span: &ReceivedSpan, server: &MockOpenAi, body_len: usize, what: &str) {
    assert_eq!(span.span.name, "chat gpt-4o-mini", "{what}");
    assert_eq!(
        as_str(span.attr("http.request.method")),
        Some("POST"),
        "{what}"
    );
    assert_eq!(
        as_str(span.attr("url.path")),
        Some("/v1/chat/completions"),
        "{what}"
    );
    assert_eq!(
        as_int(span.attr("http.response.status_code")),
        Some(200),
        "{what}"
    );
    assert_eq!(
        as_int(span.attr("http.request.body.size")),
        Some(body_len as i64),
        "{what}"
    );
    // From `:authority`, as HTTP/1.1's Host header gives it.
    assert_eq!(
        as_str(span.attr("server.address")),
        Some("127.0.0.1"),
        "{what}"
    );
    assert_eq!(
        as_int(span.attr("server.port")),
        Some(server.addr.port() as i64),
        "{what}"
    );
    assert_eq!(span.attr("agent_tracer.capture.bytes_lost"), None, "{what}");
}

fn assert_plain(span: &ReceivedSpan, what: &str) {
    assert_eq!(
        as_str(span.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-nonstream"),
        "{what}"
    );
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["stop".to_string()]),
        "{what}"
    );
    assert_eq!(
        span.attr("gen_ai.response.time_to_first_chunk"),
        None,
        "{what}"
    );
}

fn assert_stream(span: &ReceivedSpan, what: &str) {
    assert_eq!(
        as_str(span.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-stream"),
        "{what}"
    );
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_calls".to_string()]),
        "{what}"
    );
    assert_eq!(
        as_strs(span.attr("agent_tracer.response.tool_call.ids")),
        Some(vec!["call_mock_weather".to_string()]),
        "{what}"
    );
    assert_eq!(
        as_int(span.attr("gen_ai.usage.output_tokens")),
        Some(17),
        "{what}"
    );
    let duration_s = (span.span.end_time_unix_nano - span.span.start_time_unix_nano) as f64 / 1e9;
    let ttfc = as_f64(span.attr("gen_ai.response.time_to_first_chunk"))
        .unwrap_or_else(|| panic!("{what}: no time to first chunk"));
    // The mock spaces its events: the first arrives well before the last.
    let gaps = mock_openai::STREAM_EVENT_GAP.as_secs_f64();
    assert!(
        ttfc > 0.0 && duration_s - ttfc >= 3.0 * gaps,
        "{what}: ttfc {ttfc} s, duration {duration_s} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_over_tls_and_h2c_become_genai_spans() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let tls = mock_openai::start_h2(&e2e::certs_dir()).await?;
    let h2c = mock_openai::start_h2c().await?;
    let auth = auth_header_file()?;
    let calls: [(&MockOpenAi, &str); 3] =
        [(&tls, PLAIN_BODY), (&tls, STREAM_BODY), (&h2c, PLAIN_BODY)];
    let mut untraced = Vec::new();
    for (server, body) in calls {
        untraced.push(e2e::run(curl(server, body, &auth)).await?.stdout);
    }

    let traced = start_traced(tracer_bin(), "http2-curl", &[]).await?;
    let mut pids = Vec::new();
    for (i, (server, body)) in calls.into_iter().enumerate() {
        let child = curl(server, body, &auth)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout, untraced[i],
            "curl's output is unchanged by the tracer"
        );
        pids.push(pid);
    }
    let spans = traced
        .receiver
        .wait_for("the three curl calls", WAIT, |s| {
            pids.iter().all(|pid| !of_pid(s, *pid).is_empty())
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let what = [
        "curl --http2 JSON",
        "curl --http2 SSE",
        "curl --http2-prior-knowledge",
    ];
    for (((pid, (server, body)), what), response) in pids.iter().zip(calls).zip(what).zip(&untraced)
    {
        let mine = of_pid(&spans, *pid);
        assert_eq!(mine.len(), 1, "{what}: one call, one span: {mine:#?}");
        assert_call(&mine[0], server, body.len(), what);
        if body == STREAM_BODY {
            assert_stream(&mine[0], what);
        } else {
            assert_plain(&mine[0], what);
        }
        // The tracer saw HTTP/2 itself: the preface, then the body in a DATA frame.
        let egress = recorded(&traced.record_dir, *pid, "egress");
        assert!(
            egress.starts_with(PREFACE),
            "{what}: {} bytes recorded",
            egress.len()
        );
        assert!(contains(&egress, body.as_bytes()), "{what}");
        let ingress = recorded(&traced.record_dir, *pid, "ingress");
        if body == PLAIN_BODY {
            assert!(contains(&ingress, response), "{what}");
        }
    }
    let sent = [tls.received(), h2c.received()].concat();
    assert_eq!(sent.len(), 6, "three calls untraced, three traced");
    assert!(
        sent.iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {API_KEY}")[..])),
        "curl sent the key"
    );
    assert!(
        !contains(&traced.receiver.raw_bytes(), API_KEY.as_bytes()),
        "the API key was exported"
    );
    assert!(!stopped.stdout.contains(API_KEY), "the API key was printed");
    Ok(())
}

const GO_TRACER_NAME: &str = "http2-go";
/// What tests/clients/go/h2_client.go sends, byte for byte.
const GO_BODIES: [&str; 2] = [
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from go over h2"}]}"#,
    STREAM_BODY,
];

fn go_client(binary: &Path, server: &MockOpenAi) -> Result<HeldClient> {
    let mut command = Command::new(binary);
    command
        .arg(server.base_url())
        .arg("--wait-stdin")
        .env("SSL_CERT_FILE", &server.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("GODEBUG");
    HeldClient::spawn(command)
}

/// Lets the held client make its calls; returns its pid and the JSON lines it printed.
async fn release(client: HeldClient) -> Result<(u32, Vec<Value>)> {
    let (pid, stdout) = client.release().await?;
    let lines = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()
        .with_context(|| format!("the client's output {stdout:?}"))?;
    Ok((pid, lines))
}

/// The client's lines without its pid, to compare runs with and without the tracer.
fn outcomes(lines: &[Value]) -> Vec<(String, i64, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["proto"].as_str().unwrap_or_default().to_string(),
                l["status"].as_i64().unwrap_or_default(),
                l["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_net_http_over_http2_becomes_genai_spans() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let dir: PathBuf = tracer_testkit::target_dir().join("e2e-go");
    let binary = go::build(
        &clients_dir().join("go/h2_client.go"),
        &dir.join("h2_client"),
        false,
    )?;
    let binary = std::fs::canonicalize(binary)?;
    let server = mock_openai::start_h2(&e2e::certs_dir()).await?;

    let (_, untraced) = release(go_client(&binary, &server)?).await?;
    let untraced = outcomes(&untraced);
    assert_eq!(untraced.len(), 2);
    assert!(
        untraced
            .iter()
            .all(|(proto, status, _)| proto == "HTTP/2.0" && *status == 200),
        "Go chose HTTP/2: {untraced:?}"
    );

    let traced = start_traced(tracer_bin(), GO_TRACER_NAME, &[]).await?;
    let child = go_client(&binary, &server)?;
    wait_until_hooked(GO_TRACER_NAME, &binary, ATTACH_WAIT).await?;
    let (pid, lines) = release(child).await?;
    assert_eq!(
        outcomes(&lines),
        untraced,
        "the client behaves the same traced"
    );
    let spans = traced
        .receiver
        .wait_for("the Go client's two calls", WAIT, |s| {
            of_pid(s, pid).len() >= 2
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 2, "two calls, two spans: {mine:#?}");
    assert_call(&mine[0], &server, GO_BODIES[0].len(), "Go JSON call");
    assert_plain(&mine[0], "Go JSON call");
    assert_call(&mine[1], &server, GO_BODIES[1].len(), "Go streamed call");
    assert_stream(&mine[1], "Go streamed call");
    let egress = recorded(&traced.record_dir, pid, "egress");
    assert!(
        egress.starts_with(PREFACE),
        "{} bytes recorded",
        egress.len()
    );
    assert_eq!(
        egress
            .windows(PREFACE.len())
            .filter(|w| *w == PREFACE)
            .count(),
        1,
        "both calls on one HTTP/2 connection, its HPACK tables shared"
    );
    for body in GO_BODIES {
        assert!(contains(&egress, body.as_bytes()));
    }
    let exported = traced.receiver.raw_bytes();
    assert!(
        !contains(&exported, b"sk-go-h2-secret"),
        "the API key was exported"
    );
    Ok(())
}

/// curl asked for HTTP/2 on an `http://` URL: it sends the request in HTTP/1.1 asking
/// `Upgrade: h2c`, and switches if the server answers 101. `%{http_version}` goes to stderr.
fn curl_upgrade(server: &MockOpenAi, body: &str, auth: &Path) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--fail-with-body",
        "-N",
        "--http2",
        "-w",
        "%{stderr}%{http_version}",
        "-H",
        "content-type: application/json",
        "-H",
        &format!("@{}", auth.display()),
        "-d",
        body,
    ])
    .arg(format!("{}/chat/completions", server.base_url()))
    .env_remove("HTTP_PROXY")
    .env_remove("http_proxy")
    .env_remove("ALL_PROXY");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_by_upgrade_h2c_becomes_genai_spans() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let upgrading = mock_openai::start_h2c_upgrade(true).await?;
    let ignoring = mock_openai::start_h2c_upgrade(false).await?;
    let auth = auth_header_file()?;
    let calls: [(&MockOpenAi, &str, &str); 3] = [
        (&upgrading, PLAIN_BODY, "2"),
        (&upgrading, STREAM_BODY, "2"),
        // No 101: the exchange, and the connection, stay HTTP/1.1.
        (&ignoring, PLAIN_BODY, "1.1"),
    ];
    let mut untraced = Vec::new();
    for (server, body, version) in calls {
        let out = e2e::run(curl_upgrade(server, body, &auth)).await?;
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            version,
            "curl's HTTP version"
        );
        untraced.push(out.stdout);
    }

    let traced = start_traced(tracer_bin(), "http2-upgrade", &[]).await?;
    let mut pids = Vec::new();
    for (i, (server, body, version)) in calls.into_iter().enumerate() {
        let child = curl_upgrade(server, body, &auth)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), version);
        assert_eq!(
            out.stdout, untraced[i],
            "curl's output is unchanged by the tracer"
        );
        pids.push(pid);
    }
    let spans = traced
        .receiver
        .wait_for("the three upgrade calls", WAIT, |s| {
            pids.iter().all(|pid| !of_pid(s, *pid).is_empty())
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let what = [
        "Upgrade: h2c, JSON",
        "Upgrade: h2c, SSE",
        "Upgrade: h2c ignored",
    ];
    for ((pid, (server, body, version)), what) in pids.iter().zip(calls).zip(what) {
        let mine = of_pid(&spans, *pid);
        assert_eq!(mine.len(), 1, "{what}: one call, one span: {mine:#?}");
        let span = &mine[0];
        assert_call(span, server, body.len(), what);
        if body == STREAM_BODY {
            assert_stream(span, what);
        } else {
            assert_plain(span, what);
        }
        // Nothing was missed: no marks.
        assert_eq!(span.attr("agent_tracer.http2.joined_mid_connection"), None);
        assert_eq!(span.attr("agent_tracer.http2.incomplete_headers"), None);
        // The tracer saw the upgrade itself: the HTTP/1.1 request asking for it, then (when
        // the server agreed) the 101 and HTTP/2 frames.
        let egress = recorded(&traced.record_dir, *pid, "egress");
        assert!(
            egress.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n"),
            "{what}"
        );
        assert!(contains(&egress, b"\r\nUpgrade: h2c\r\n"), "{what}");
        assert!(contains(&egress, body.as_bytes()), "{what}");
        let ingress = recorded(&traced.record_dir, *pid, "ingress");
        if version == "2" {
            assert!(contains(&egress, PREFACE), "{what}");
            assert!(
                ingress.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"),
                "{what}"
            );
        } else {
            assert!(!contains(&egress, PREFACE), "{what}");
            assert!(ingress.starts_with(b"HTTP/1.1 200 OK\r\n"), "{what}");
        }
    }
    assert_eq!(
        upgrading.received().len(),
        4,
        "two calls untraced, two traced"
    );
    assert_eq!(ignoring.received().len(), 2);
    assert!(
        !contains(&traced.receiver.raw_bytes(), API_KEY.as_bytes()),
        "the API key was exported"
    );
    Ok(())
}

const JOINED_TRACER_NAME: &str = "http2-go-joined";
/// What tests/clients/go/h2_reuse_client.go sends, byte for byte.
const REUSE_BODIES: [&str; 3] = [
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"first call, before the tracer"}]}"#,
    STREAM_BODY,
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"third call, on the joined connection"}]}"#,
];

/// The Go client of the joined test, its stdin and its stdout lines.
struct ReuseClient {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ReuseClient {
    fn start(binary: &Path, server: &MockOpenAi) -> Result<Self> {
        let mut child = Command::new(binary)
            .arg(server.base_url())
            .env("SSL_CERT_FILE", &server.cert_path)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("GODEBUG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(ReuseClient {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Lets the next call go; returns the line the client printed for it.
    async fn call(mut self) -> Result<(Self, Value)> {
        tokio::task::spawn_blocking(move || {
            self.stdin.write_all(b"go\n")?;
            self.stdin.flush()?;
            let line = self.lines.next().context("the client ended early")??;
            let value = serde_json::from_str(&line).with_context(|| line.clone())?;
            Ok((self, value))
        })
        .await?
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_http2_joined_mid_connection_gives_what_could_be_decoded_and_says_so() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let dir: PathBuf = tracer_testkit::target_dir().join("e2e-go");
    let binary = go::build(
        &clients_dir().join("go/h2_reuse_client.go"),
        &dir.join("h2_reuse_client"),
        false,
    )?;
    let binary = std::fs::canonicalize(binary)?;
    let server = mock_openai::start_h2(&e2e::certs_dir()).await?;

    // The first call before the tracer runs: the connection's preface, SETTINGS and the HPACK
    // entries Go's encoder adds for it are never seen.
    let client = ReuseClient::start(&binary, &server)?;
    let pid = client.child.id();
    let (client, first) = client.call().await?;
    let traced = start_traced(tracer_bin(), JOINED_TRACER_NAME, &[]).await?;
    wait_until_hooked(JOINED_TRACER_NAME, &binary, ATTACH_WAIT).await?;
    let (client, second) = client.call().await?;
    let (mut client, third) = client.call().await?;
    let status = tokio::task::spawn_blocking(move || client.child.wait()).await??;
    assert!(status.success());
    for (i, line) in [&first, &second, &third].into_iter().enumerate() {
        assert_eq!(line["proto"], "HTTP/2.0");
        assert_eq!(line["status"], 200);
        assert_eq!(line["reused"], i > 0, "one connection for the three calls");
    }

    let spans = traced
        .receiver
        .wait_for("the two calls after the join", WAIT, |s| {
            of_pid(s, pid).len() >= 2
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 2, "the two calls after the join: {mine:#?}");

    for (span, body) in mine.iter().zip(&REUSE_BODIES[1..]) {
        let what = &span.span.name;
        // Recognised by its bodies: the path was not decoded.
        assert_eq!(span.span.name, "chat gpt-4o-mini");
        assert_eq!(as_str(span.attr("gen_ai.provider.name")), Some("openai"));
        assert_eq!(
            as_str(span.attr("gen_ai.request.model")),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            as_bool(span.attr("agent_tracer.http2.joined_mid_connection")),
            Some(true),
            "{what}"
        );
        assert_eq!(
            as_bool(span.attr("agent_tracer.http2.incomplete_headers")),
            Some(true),
            "{what}"
        );
        // `:method POST` is a static-table entry; `:path` refers to the entry the first call
        // added to Go's table: left out, not guessed.
        assert_eq!(as_str(span.attr("http.request.method")), Some("POST"));
        assert_eq!(span.attr("url.path"), None);
        assert_eq!(
            as_int(span.attr("http.request.body.size")),
            Some(body.len() as i64)
        );
        // `:authority` was a table reference too; whatever else names the server is right.
        if let Some(address) = as_str(span.attr("server.address")) {
            assert_eq!(address, "127.0.0.1");
        }
        assert_eq!(span.attr("agent_tracer.capture.bytes_lost"), None);
    }
    // The second call: Go's read loop was inside a read when the hooks went in, so that read,
    // which carried the response's HEADERS, was not captured: no status, and the body from
    // the next DATA frame on (the events that followed: id, finish reason, usage).
    let second = &mine[0];
    assert_eq!(second.attr("http.response.status_code"), None);
    assert_eq!(
        as_str(second.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-stream")
    );
    assert_eq!(
        as_strs(second.attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_calls".to_string()])
    );
    assert_eq!(as_int(second.attr("gen_ai.usage.output_tokens")), Some(17));
    assert_eq!(
        as_strs(second.attr("agent_tracer.request.tool_names")),
        Some(vec!["get_weather".to_string()])
    );
    // The third: all of it was seen after the join; `:status 200` is a static-table entry.
    let third_span = &mine[1];
    assert_eq!(
        as_int(third_span.attr("http.response.status_code")),
        Some(200)
    );
    assert_plain(third_span, "the third call");

    // What the tracer saw: no preface, the later calls' bodies, not the first's.
    let egress = recorded(&traced.record_dir, pid, "egress");
    assert!(!contains(&egress, PREFACE));
    assert!(!contains(&egress, REUSE_BODIES[0].as_bytes()));
    assert!(contains(&egress, REUSE_BODIES[1].as_bytes()));
    assert!(contains(&egress, REUSE_BODIES[2].as_bytes()));
    assert_eq!(server.received().len(), 3);
    assert!(
        !contains(&traced.receiver.raw_bytes(), b"sk-go-h2-reuse-secret"),
        "the API key was exported"
    );
    Ok(())
}
