//! End-to-end: a hostile HTTPS server answers a traced, unmodified curl with bombs built to
//! decode to far more than they weigh, while the real agent-tracer binary runs with its
//! defaults. Over HTTP/2 (ALPN `h2`) its response header block adds one 4000-byte HPACK entry
//! and refers to it 4000 times (16 MB decoded); over HTTP/1.1 its JSON body is a gzip bomb
//! (1 MiB on the wire, 1 GiB decoded). The tracer must stay alive and within its memory, report
//! both calls with the marks saying what it left out, count them, and go on exporting: the next
//! normal call comes out as always. The bombs may cost the tracer one decoded body at the body
//! limit, measured from its peak RSS (VmHWM, reset once the tracer is ready).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tracer_testkit::{
    e2e::{self, of_pid, require_root, start_traced_with_env, SERIAL},
    hostile, mock_openai,
    otlp::{as_bool, as_str, ReceivedSpan},
};

const WAIT: Duration = Duration::from_secs(30);
const BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello, hostile"}]}"#;
/// The default `--max-body-bytes`: the most a decoded body may take.
const BODY_LIMIT: u64 = 64 << 20;
/// Beyond the decoded body: the compressed one (1 MiB), the decoder's state, the parsers, the
/// allocator's arenas, and what else the tracer does meanwhile (a new curl analysed per call).
/// Measured: the bombs cost 74 to 85 MiB over the resident size before them; a decoder without
/// its budget costs 256 MiB more, which this still catches.
const SLACK: u64 = 32 << 20;

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// curl POSTing a chat completion over `http` (`--http2` or `--http1.1`), its answer discarded
/// undecoded (no `--compressed`): what the tracer reads is what the server sent.
fn curl(url: &str, cert: &Path, http: &str) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "/dev/null", http, "--cacert"])
        .arg(cert)
        .args(["-H", "content-type: application/json", "-d", BODY, url])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Runs the command to its end; its pid and whether it succeeded.
async fn run(mut command: Command) -> Result<(u32, bool, String)> {
    let child = command.spawn().context("starting curl")?;
    let pid = child.id();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    Ok((
        pid,
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A memory figure of the process's status (`VmHWM`, `VmRSS`), in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field}"))?;
    Ok(kib << 10)
}

/// The most memory the process has had resident since the last [`reset_peak_rss`].
fn peak_rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// Starts the peak over from what is resident now (proc(5), `clear_refs` 5): the tracer's
/// start-up (a debug build analysing every executable it meets) must not hide the bombs' cost.
fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting VmHWM")
}

fn one_span(spans: &[ReceivedSpan], pid: u32, what: &str) -> ReceivedSpan {
    let mine = of_pid(spans, pid);
    assert_eq!(mine.len(), 1, "{what}: one call, one span: {mine:#?}");
    mine[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_from_a_hostile_server_are_cut_marked_and_counted_and_tracing_goes_on() -> Result<()>
{
    require_root();
    let _serial = SERIAL.lock().await;
    let server = hostile::start(&e2e::certs_dir()).await?;
    let normal = mock_openai::start_h2(&e2e::certs_dir()).await?;
    let url = server.url("/v1/chat/completions");

    // Pre-attach off: its background analysis of every executable on the host draws from its
    // own byte budget (capture/safe_open.rs, tested there) and would blur what the bombs cost.
    let traced = start_traced_with_env(
        tracer_bin(),
        "hostile",
        &[],
        &[("AGENT_TRACER_PREATTACH", "off")],
    )
    .await?;
    let tracer_pid = traced.tracer.pid();
    reset_peak_rss(tracer_pid)?;
    let before = status_bytes(tracer_pid, "VmRSS")?;

    // The HPACK bomb. curl itself may give up on a header list this long (it caps response
    // headers): what it read is what the tracer saw either way.
    let (h2_pid, _, h2_err) = run(curl(&url, &server.cert_path, "--http2")).await?;
    // The gzip bomb: curl passes the body through undecoded.
    let (gzip_pid, gzip_ok, gzip_err) = run(curl(&url, &server.cert_path, "--http1.1")).await?;
    assert!(gzip_ok, "curl over HTTP/1.1: {gzip_err}");
    traced
        .receiver
        .wait_for("the two hostile calls", WAIT, |s| {
            !of_pid(s, h2_pid).is_empty() && !of_pid(s, gzip_pid).is_empty()
        })
        .await
        .with_context(|| format!("curl --http2 said: {h2_err}"))?;

    // A normal call after them is exported as always, and promptly.
    let normal_url = format!("{}/chat/completions", normal.base_url());
    let started = Instant::now();
    let (normal_pid, normal_ok, normal_err) =
        run(curl(&normal_url, &normal.cert_path, "--http2")).await?;
    assert!(normal_ok, "the normal call: {normal_err}");
    let spans = traced
        .receiver
        .wait_for("the normal call", WAIT, |s| {
            !of_pid(s, normal_pid).is_empty()
        })
        .await?;
    let after_normal = started.elapsed();
    let peak = peak_rss(tracer_pid)?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    eprintln!(
        "tracer RSS {} MiB before the bombs, peak {} MiB since; the next call exported {:?} \
         after it started",
        before >> 20,
        peak >> 20,
        after_normal
    );

    // HTTP/2: the fields within one head's budget (128 fields, 64 KiB) are kept, the rest is
    // marked missing and counted.
    let h2 = one_span(&spans, h2_pid, "HPACK bomb");
    assert_eq!(as_str(h2.attr("url.path")), Some("/v1/chat/completions"));
    assert_eq!(
        as_bool(h2.attr("agent_tracer.http2.incomplete_headers")),
        Some(true),
        "{h2:#?}"
    );
    assert!(stopped.counter("http2_header_blocks_capped")? >= 1);

    // HTTP/1.1: decoding stopped at the body limit, and the span says so.
    let gzip = one_span(&spans, gzip_pid, "gzip bomb");
    assert_eq!(as_str(gzip.attr("url.path")), Some("/v1/chat/completions"));
    assert_eq!(
        as_bool(gzip.attr("agent_tracer.body.decoded_truncated")),
        Some(true),
        "{gzip:#?}"
    );
    assert_eq!(stopped.counter("bodies_decoded_truncated")?, 1);

    let normal_span = one_span(&spans, normal_pid, "the normal call");
    assert_eq!(normal_span.span.name, "chat gpt-4o-mini");
    assert_eq!(
        normal_span.attr("agent_tracer.body.decoded_truncated"),
        None
    );
    assert_eq!(
        normal_span.attr("agent_tracer.http2.incomplete_headers"),
        None
    );
    assert!(
        after_normal < Duration::from_secs(5),
        "the next call took {after_normal:?} to be exported"
    );
    // The bombs cost at most one decoded body at the limit: before the budgets, the gzip bomb
    // alone was decoded to 256 MiB. (The issue's 160 MiB absolute peak is not asserted: this
    // debug build is already at about 106 MiB resident when the bombs arrive, and the default
    // body limit lets one decoded body take 64 MiB.)
    assert!(
        peak < before + BODY_LIMIT + SLACK,
        "tracer peak RSS {} MiB (resident before the bombs: {} MiB)",
        peak >> 20,
        before >> 20
    );
    Ok(())
}
