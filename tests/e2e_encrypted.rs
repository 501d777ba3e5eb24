//! The honest fallback, end to end with real eBPF: a program whose TLS no hook can reach (Mbed TLS
//! linked statically into a stripped binary, built here with the OS's gcc and libmbedtls-dev)
//! still yields a client span per connection, with the host from its ClientHello's SNI, the bytes
//! it moved on the wire and the timing, marked `agent_tracer.capture.encrypted`; its output is the
//! same with the tracer attached. Programs whose plaintext is captured (curl on libssl, node on
//! its static OpenSSL, which writes its ciphertext outside the hooked call) get no such span.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tracer_testkit::{
    e2e::{self, clients_dir, of_pid, require_root, start_traced, SERIAL},
    mock_openai::{self, MockOpenAi},
    otlp::{as_bool, as_int, as_str, ReceivedSpan},
};

const WAIT: Duration = Duration::from_secs(30);
const SNI: &str = "api.openai.com";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn client(bin: &Path, server: &MockOpenAi, model: &str) -> Command {
    let mut c = Command::new(bin);
    c.arg(server.addr.port().to_string()).args([SNI, model]);
    c
}

/// `pid=N wire_sent=N wire_received=N` from the client's stderr.
fn wire(out: &Output) -> Result<(u32, u64, u64)> {
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.starts_with("pid="))
        .with_context(|| format!("no counts in {text:?}"))?;
    let field = |name: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .context(name.to_string())?
            .parse()
            .context("a number")
    };
    Ok((
        field("pid=")? as u32,
        field("wire_sent=")?,
        field("wire_received=")?,
    ))
}

fn encrypted(span: &ReceivedSpan) -> bool {
    as_bool(span.attr("agent_tracer.capture.encrypted")) == Some(true)
}

/// What every encrypted-only span of the client says, whatever happened on its connection.
fn assert_fallback_span(span: &ReceivedSpan, server: &MockOpenAi) {
    assert_eq!(span.span.name, format!("tls {SNI}"));
    assert!(encrypted(span), "{span:#?}");
    assert_eq!(span.span.kind, 3, "a client span");
    assert_eq!(as_str(span.attr("server.address")), Some(SNI));
    assert_eq!(as_str(span.attr("tls.client.server_name")), Some(SNI));
    assert_eq!(
        as_int(span.attr("server.port")),
        Some(server.addr.port() as i64)
    );
    assert_eq!(as_str(span.attr("network.peer.address")), Some("127.0.0.1"));
    assert_eq!(as_str(span.attr("gen_ai.provider.name")), Some("openai"));
    assert!(
        span.resource_attr("process.executable.name").is_some()
            || span.resource_attr("process.command").is_some(),
        "process resource: {:#?}",
        span.resource
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_where_location_fails_yields_the_encrypted_span() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let bin = tracer_testkit::c_client::mbedtls_post()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let untraced = e2e::run(client(&bin, &server, "gpt-4o-mini")).await?;
    let stdout = String::from_utf8_lossy(&untraced.stdout);
    assert!(stdout.starts_with("HTTP/1.1 200 OK\n"), "{stdout}");
    assert!(stdout.contains("chatcmpl-mock-nonstream"), "{stdout}");

    let traced = start_traced(tracer_bin(), "encrypted_mbedtls", &[]).await?;
    let out = e2e::run(client(&bin, &server, "gpt-4o-mini")).await?;
    assert_eq!(
        out.stdout, untraced.stdout,
        "the client's output is unchanged by the tracer"
    );
    let (pid, sent, received) = wire(&out)?;
    let spans = traced
        .receiver
        .wait_for("the encrypted span", WAIT, |s| !of_pid(s, pid).is_empty())
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert_eq!(server.received().len(), 2, "both runs reached the server");

    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 1, "one connection, one span: {mine:#?}");
    let span = &mine[0];
    assert_fallback_span(span, &server);
    // Exactly what the client's own socket callbacks counted, TLS framing included.
    assert_eq!(
        as_int(span.attr("agent_tracer.tls.sent_bytes")),
        Some(sent as i64)
    );
    assert_eq!(
        as_int(span.attr("agent_tracer.tls.received_bytes")),
        Some(received as i64)
    );
    // TLS 1.2's two handshake round trips, then the request and its response.
    assert!(
        as_int(span.attr("agent_tracer.tls.turns")).is_some_and(|t| t >= 2),
        "{span:#?}"
    );
    let first = span
        .span
        .events
        .iter()
        .find(|e| e.name == "agent_tracer.tls.first_response")
        .context("first response event")?;
    assert!(
        span.span.start_time_unix_nano < first.time_unix_nano
            && first.time_unix_nano <= span.span.end_time_unix_nano,
        "{span:#?}"
    );
    assert!(
        !e2e::contains(&traced.receiver.raw_bytes(), b"sk-test-mbedtls"),
        "nothing of the plaintext is exported"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_connection_still_reports_it() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let bin = tracer_testkit::c_client::mbedtls_post()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let traced = start_traced(tracer_bin(), "encrypted_killed", &[]).await?;
    // `hang`: the server reads the request and never answers.
    let mut child = client(&bin, &server, "hang")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let deadline = std::time::Instant::now() + WAIT;
    while server.received().is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("the request never reached the server");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill()?;
    child.wait()?;
    let spans = traced
        .receiver
        .wait_for("the killed client's span", WAIT, |s| {
            !of_pid(s, pid).is_empty()
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_fallback_span(&mine[0], &server);
    // The request went out after the handshake: more than a ClientHello was sent.
    let sent = as_int(mine[0].attr("agent_tracer.tls.sent_bytes")).unwrap_or(0);
    assert!(sent > 300, "{sent}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooked_programs_get_no_encrypted_span() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let port = server.addr.port();
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hooked"}]}"#;
    let traced = start_traced(tracer_bin(), "encrypted_hooked", &[]).await?;
    // curl on the shared libssl, asking for the provider's name: linked to its hooked SSL object.
    // `sh` prints its pid, which curl keeps by exec.
    let curl_child = {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$; exec curl -sS --http1.1 -k -H 'content-type: application/json' -d '{body}' --resolve {SNI}:{port}:127.0.0.1 https://{SNI}:{port}/v1/chat/completions"
            ));
        c
    };
    let curl_out = e2e::run(curl_child).await?;
    let curl_text = String::from_utf8_lossy(&curl_out.stdout);
    let curl_pid: u32 = curl_text
        .lines()
        .next()
        .context("curl's pid")?
        .trim()
        .parse()?;
    assert!(curl_text.contains("chatcmpl-mock-nonstream"), "{curl_text}");
    // node: its OpenSSL writes the ciphertext from a memory BIO, outside the hooked call.
    let node_out = e2e::run({
        let mut c = Command::new("node");
        c.arg(clients_dir().join("node_fetch.mjs"))
            .arg(server.base_url())
            .env("NODE_EXTRA_CA_CERTS", &server.cert_path);
        c
    })
    .await?;
    let node_pid = e2e::json_lines(&node_out)
        .first()
        .and_then(|l| l["pid"].as_u64())
        .context("node's pid")? as u32;
    let spans = traced
        .receiver
        .wait_for("both hooked calls", WAIT, |s| {
            !of_pid(s, curl_pid).is_empty() && !of_pid(s, node_pid).is_empty()
        })
        .await?;
    // Encrypted-only spans would be reported at the same moment as the calls' or before (close
    // or exit): a little longer for any straggler.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans = {
        let later = traced.receiver.spans();
        if later.len() >= spans.len() {
            later
        } else {
            spans
        }
    };
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    for pid in [curl_pid, node_pid] {
        let mine = of_pid(&spans, pid);
        assert!(
            mine.iter().any(|s| s.span.name.starts_with("chat")),
            "{pid}: {mine:#?}"
        );
        assert!(
            !mine.iter().any(encrypted),
            "a hooked connection is not reported encrypted-only: {mine:#?}"
        );
    }
    Ok(())
}
