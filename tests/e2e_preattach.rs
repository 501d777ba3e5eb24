//! End-to-end for pre-attach and the encrypted-only fallback of early calls: a statically linked
//! Go HTTPS client (real Go toolchain, real crypto/tls) that the tracer has never seen appears
//! in a directory on the tracer's PATH after the tracer started, and runs at once, 20 times in a
//! row, each run making one call right after its exec and exiting. Every call must be exported:
//! as the GenAI span of its plaintext when the hooks were in place in time, else as the
//! encrypted-only span of its connection (SNI or address, bytes, timing), never as nothing.
//! Then a second new copy, left alone until the tracer says it hooked it, shows that a file is
//! hooked when it appears, before anything runs it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use tracer_testkit::{
    e2e::{
        of_pid, require_root, start_traced_with, tracer_log, wait_for_log, wait_until_hooked,
        TraceOptions, Traced, SERIAL,
    },
    go,
    mock_openai::{self, MockOpenAi},
    otlp::{as_bool, as_int, ReceivedSpan},
};

const RUNS: usize = 20;
const SPAN_WAIT: Duration = Duration::from_secs(60);
const HOOK_WAIT: Duration = Duration::from_secs(60);
const TRACER_NAME: &str = "preattach";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn work_dir() -> PathBuf {
    tracer_testkit::target_dir().join("e2e-preattach")
}

/// Runs the client once, to its end; returns its pid (it prints it) after checking the call
/// succeeded.
fn run_client(binary: &Path, server: &MockOpenAi) -> Result<u32> {
    let out = Command::new(binary)
        .arg(server.base_url())
        .env("SSL_CERT_FILE", &server.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{:?}", String::from_utf8_lossy(&out.stdout)))?;
    ensure!(line["status"].as_i64() == Some(200), "{line}");
    line["pid"]
        .as_u64()
        .map(|p| p as u32)
        .context("the client's pid")
}

fn encrypted(span: &ReceivedSpan) -> bool {
    as_bool(span.attr("agent_tracer.capture.encrypted")) == Some(true)
}

fn chat(span: &ReceivedSpan) -> bool {
    span.span.name.starts_with("chat")
}

/// How one run's call was exported.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    plaintext: bool,
    encrypted: bool,
}

fn seen(spans: &[ReceivedSpan], pid: u32) -> Seen {
    let mine = of_pid(spans, pid);
    Seen {
        plaintext: mine.iter().any(chat),
        encrypted: mine.iter().any(encrypted),
    }
}

/// Copies `from` to a new file `to` the way an installer does (written, closed, executable):
/// a file the tracer has never seen, with its own inode.
fn install(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).with_context(|| format!("copying to {}", to.display()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_go_binary_run_at_once_has_every_call_exported() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let dir = work_dir();
    let built = go::build(&go::https_client_source(), &dir.join("https_client"), false)?;
    // A directory of its own on the tracer's PATH, made before the tracer starts (as ~/.local/bin
    // is), empty: what appears in it later is new to the tracer.
    let bin_dir = dir.join(format!("bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bin_dir);
    std::fs::create_dir_all(&bin_dir)?;
    let bin_dir = std::fs::canonicalize(&bin_dir)?;
    let path = std::env::join_paths(std::iter::once(bin_dir.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let path = path.to_str().context("PATH")?.to_string();
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;

    let Traced {
        receiver,
        tracer: running,
        ..
    } = start_traced_with(
        tracer_bin(),
        TRACER_NAME,
        &TraceOptions {
            envs: &[("PATH", &path)],
            ..TraceOptions::default()
        },
    )
    .await?;
    // The watcher is up (a user's install comes after the tracer started, too).
    wait_for_log(
        TRACER_NAME,
        &["pre-attach: watching for new executables"],
        HOOK_WAIT,
    )
    .await?;

    // Installed, then run at once, 20 times: the first runs race the analysis.
    let cli = bin_dir.join("agent-cli");
    install(&built, &cli)?;
    let installed = Instant::now();
    let mut pids = Vec::new();
    for _ in 0..RUNS {
        pids.push(run_client(&cli, &server)?);
    }
    let ran_for = installed.elapsed();

    let spans = receiver
        .wait_for("a span for every run", SPAN_WAIT, |s| {
            pids.iter().all(|pid| !of_pid(s, *pid).is_empty())
        })
        .await;
    // Encrypted-only spans come at the close or exit, plaintext ones at the response: a little
    // longer for a run that has both.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans_now = receiver.spans();

    // The second copy: left alone until the tracer hooked it, then run once.
    let second = bin_dir.join("agent-cli-2");
    install(&built, &second)?;
    wait_until_hooked(TRACER_NAME, &second, HOOK_WAIT).await?;
    let second_pid = run_client(&second, &server)?;
    let second_spans = receiver
        .wait_for("the pre-attached copy's span", SPAN_WAIT, |s| {
            seen(s, second_pid).plaintext
        })
        .await;

    let log = std::fs::read_to_string(tracer_log(TRACER_NAME)).unwrap_or_default();
    let stopped = running.stop()?;
    ensure!(stopped.status.success(), "tracer exit: {}", stopped.stderr);

    let by_run: Vec<(u32, Seen)> = pids.iter().map(|p| (*p, seen(&spans_now, *p))).collect();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in &by_run {
        let kind = match (s.plaintext, s.encrypted) {
            (true, false) => "plaintext",
            (false, true) => "encrypted-only",
            (true, true) => "both",
            (false, false) => "nothing",
        };
        *tally.entry(kind).or_default() += 1;
    }
    let hooked_line = log
        .lines()
        .find(|l| l.contains("attached") && l.contains(cli.to_str().unwrap_or("agent-cli")))
        .unwrap_or("(no attach line)");
    // For the README: how often the first calls beat the hooks, and by how much.
    println!(
        "{RUNS} runs in {ran_for:?} after the install: {tally:?}; runs in order: {:?}\n{hooked_line}",
        by_run
            .iter()
            .map(|(_, s)| match (s.plaintext, s.encrypted) {
                (true, false) => 'P',
                (false, true) => 'E',
                (true, true) => 'B',
                (false, false) => '-',
            })
            .collect::<String>()
    );
    spans.with_context(|| format!("runs: {by_run:?}\n{log}"))?;
    second_spans.with_context(|| format!("the pre-attached copy (pid {second_pid})"))?;
    ensure!(
        !tally.contains_key("nothing"),
        "a call with no span at all: {by_run:?}"
    );

    // Each encrypted-only span is the client's one connection, its bytes counted.
    for (pid, s) in &by_run {
        let mine = of_pid(&spans_now, *pid);
        if s.encrypted {
            let span = mine.iter().find(|s| encrypted(s)).context("encrypted")?;
            let sent = as_int(span.attr("agent_tracer.tls.sent_bytes")).unwrap_or(0);
            let received = as_int(span.attr("agent_tracer.tls.received_bytes")).unwrap_or(0);
            // A ClientHello and a request; a server's handshake and a response.
            ensure!(sent > 300 && received > 300, "{pid}: {span:#?}");
            ensure!(
                span.span.end_time_unix_nano > span.span.start_time_unix_nano,
                "{span:#?}"
            );
        }
        if s.plaintext {
            ensure!(
                mine.iter().filter(|s| chat(s)).count() == 1,
                "{pid}: one call, one chat span: {mine:#?}"
            );
        }
    }
    // The copy hooked before it ran: its call in plaintext, and no fallback span.
    let second = seen(&receiver.spans(), second_pid);
    ensure!(
        second
            == Seen {
                plaintext: true,
                encrypted: false
            },
        "{second:?}"
    );
    Ok(())
}
