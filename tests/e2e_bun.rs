//! Bun from the npm registry: one stripped 100 MB executable with BoringSSL linked in, no
//! symbols, no `.eh_frame`. The tracer locates `SSL_write`/`SSL_read` from BoringSSL's own error
//! reports (capture/locate/boringssl.rs) and hooks them with the OpenSSL kernel programs. Two
//! releases a year apart, found by the same code, each running an unmodified script that POSTs
//! a streaming chat request with `fetch` over HTTPS and reads the events as they arrive.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tracer_testkit::{
    bun,
    e2e::{
        self, clients_dir, of_pid, recorded, require_root, start_traced_with_env, without_pid,
        Traced, SERIAL,
    },
    mock_openai::{self, RESPONSE_MODEL},
    otlp::{as_bool, as_int, as_str, as_strs},
};

const WAIT: Duration = Duration::from_secs(30);

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// A tracer whose PATH has `bun` on it, as on a machine where Bun is installed: the attacher
/// analyses the runtimes on PATH at start-up, before any of them runs.
async fn start_traced_with_bun(bun: &Path, name: &str) -> Result<Traced> {
    let dir = bun.parent().context("bun's directory")?;
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    start_traced_with_env(tracer_bin(), name, &[], &[("PATH", &path)]).await
}

/// An HTTP/1.1 message split into its head and its body, de-chunked when it was sent chunked.
fn split_message(bytes: &[u8]) -> Result<(String, Vec<u8>)> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of head")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    let mut rest = &bytes[end + 4..];
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((head, rest.to_vec()));
    }
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((head, body));
        }
        if rest.len() < size + 2 {
            bail!("chunk of {size} bytes cut short");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

async fn bun_fetch_streams_through_stripped_boringssl(version: &str) -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let bun: PathBuf = bun::install(version)?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let client = || {
        let mut c = Command::new(&bun);
        c.arg(clients_dir().join("bun_fetch.mjs"))
            .arg(server.base_url())
            .env("NODE_EXTRA_CA_CERTS", &server.cert_path);
        c
    };
    let untraced = e2e::json_lines(&e2e::run(client()).await?);
    assert_eq!(
        untraced.len(),
        1,
        "the client prints one line: {untraced:?}"
    );

    let name = format!("bun-{version}");
    let traced = start_traced_with_bun(&bun, &name).await?;
    let out = e2e::json_lines(&e2e::run(client()).await?);
    assert_eq!(
        without_pid(&out),
        without_pid(&untraced),
        "bun's output is unchanged by the tracer"
    );
    assert_eq!(out[0]["status"], 200);
    assert_eq!(out[0]["streamed"], true, "the response arrived in pieces");
    let pid = out[0]["pid"].as_u64().context("pid")? as u32;
    let spans = traced
        .receiver
        .wait_for("bun's call", WAIT, |s| !of_pid(s, pid).is_empty())
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("attached 4 TLS hooks (BoringSsl)"),
        "hooked by inference: {}",
        stopped.stderr
    );

    let request_body = out[0]["request_body"].as_str().context("request body")?;
    let response_body = out[0]["body"].as_str().context("response body")?;

    // The exact bytes: the request as Bun sent it, the response as Bun read it.
    let egress = recorded(&traced.record_dir, pid, "egress");
    let ingress = recorded(&traced.record_dir, pid, "ingress");
    let (request_head, sent) = split_message(&egress)?;
    assert!(
        request_head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{request_head}"
    );
    assert_eq!(String::from_utf8_lossy(&sent), request_body);
    let (response_head, received) = split_message(&ingress)?;
    assert!(
        response_head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{response_head}"
    );
    assert_eq!(String::from_utf8_lossy(&received), response_body);

    // One call, read as what it was.
    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 1, "one call, one span: {mine:#?}");
    let span = &mine[0];
    let received_requests = server.received();
    let last = received_requests
        .last()
        .context("the server saw the call")?;
    assert_eq!(as_str(span.attr("http.request.method")), Some("POST"));
    assert_eq!(as_str(span.attr("url.path")), Some("/v1/chat/completions"));
    assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
    assert_eq!(
        as_int(span.attr("http.request.body.size")),
        Some(request_body.len() as i64)
    );
    assert_eq!(last.body_len, request_body.len());
    assert_eq!(
        as_str(span.attr("gen_ai.request.model")),
        Some("gpt-4o-mini")
    );
    assert_eq!(as_bool(span.attr("gen_ai.request.stream")), Some(true));
    assert_eq!(
        as_str(span.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-stream")
    );
    assert_eq!(
        as_str(span.attr("gen_ai.response.model")),
        Some(RESPONSE_MODEL)
    );
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_calls".to_string()])
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.input_tokens")), Some(57));
    assert_eq!(as_int(span.attr("gen_ai.usage.output_tokens")), Some(17));
    assert_eq!(
        as_str(span.resource_attr("process.executable.name")),
        Some("bun")
    );
    assert!(!e2e::contains(
        &traced.receiver.raw_bytes(),
        b"sk-bun-secret"
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bun_current_fetch_streams_through_stripped_boringssl() -> Result<()> {
    bun_fetch_streams_through_stripped_boringssl(bun::CURRENT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bun_older_release_is_found_by_the_same_code() -> Result<()> {
    bun_fetch_streams_through_stripped_boringssl(bun::OLDER).await
}
