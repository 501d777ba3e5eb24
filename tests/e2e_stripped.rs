//! End-to-end for static OpenSSL 3 without symbols (issue 7, item 2) and the self-validation of
//! inferred hooks (item 5), with real eBPF and real programs:
//! - a Rust HTTPS client using the `openssl` crate with vendored OpenSSL, built by this test from
//!   crates.io in release mode with `strip = true`, in two variants locked to different OpenSSL
//!   releases (3.6 and 3.3): found by the same locator code, no per-build table;
//! - a C client linked against the OS's libssl.a (OpenSSL 3.0, the other argument layout of
//!   `ssl_write_internal`) and stripped.
//!
//! Each posts JSON to the local mock OpenAI server, once plain and once streamed (SSE), and
//! prints exactly the bytes it sent and received; the tracer's recorded plaintext must equal
//! them byte for byte, and each call must become one GenAI span.
//!
//! The locator is right on every real binary, so a wrong inference cannot be produced by it:
//! the rejection test simulates one with a cache entry (the locator's on-disk results) that
//! points the hooks at `BIO_write`/`BIO_read`, real functions of the same binary that see the
//! TLS records (ciphertext) instead of the plaintext. The tracer must detach those hooks after
//! their first bytes, report them, and leave the program's behaviour unchanged.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use object::{Object as _, ObjectSymbol as _};
use tracer_testkit::{
    e2e::{
        contains, of_pid, recorded, require_root, start_traced_with, wait_for_log, HeldClient,
        TraceOptions, Traced, SERIAL,
    },
    mock_openai::{self, MockOpenAi},
    otlp::{as_bool, as_int, as_str},
    stripped::{self, RUST_VARIANTS},
};
use tracer_user::capture::locate::{CacheKey, DiskCache, Image, Located, LocatedHook, Outcome};

const PLAIN_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from a stripped binary"}]}"#;
const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"stream to a stripped binary"}]}"#;
const SPAN_WAIT: Duration = Duration::from_secs(30);
const ATTACH_WAIT: Duration = Duration::from_secs(60);

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn work_dir() -> PathBuf {
    tracer_testkit::target_dir().join("e2e-stripped")
}

/// What a client sent and received, as it says.
#[derive(Debug)]
struct Exchange {
    pid: u32,
    sent: Vec<u8>,
    received: Vec<u8>,
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).context("odd hex")?, 16).map_err(Into::into))
        .collect()
}

/// Starts a client held before it connects (it waits for a line on stdin).
fn spawn_client(binary: &Path, server: &MockOpenAi, body: &str) -> Result<HeldClient> {
    let mut command = Command::new(binary);
    command
        .arg(server.addr.port().to_string())
        .arg(&server.cert_path)
        .arg(body);
    HeldClient::spawn(command)
}

async fn release_client(client: HeldClient) -> Result<Exchange> {
    let (pid, line) = client.release_line().await?;
    Ok(Exchange {
        pid,
        sent: unhex(line["sent"].as_str().context("sent")?)?,
        received: unhex(line["received"].as_str().context("received")?)?,
    })
}

/// The status code and the body after the headers (the Date header differs between runs).
fn status_and_body(response: &[u8]) -> (String, Vec<u8>) {
    let status = response
        .split(|b| *b == b'\r')
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    let body = memchr::memmem::find(response, b"\r\n\r\n")
        .map(|at| response[at + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// The stream's body with the timing-dependent parts left out: chunk sizes are the same, the
/// SSE events are fixed by the mock, so the whole body must match. Dates live in headers.
fn binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for variant in &RUST_VARIANTS {
        out.push((
            format!("rust openssl {}", variant.openssl),
            std::fs::canonicalize(stripped::build_rust_client(variant)?)?,
        ));
    }
    let (_, c) = stripped::build_c_client()?;
    out.push(("c libssl.a".to_string(), std::fs::canonicalize(c)?));
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_static_openssl_is_captured_exactly() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let binaries = binaries()?;
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;

    // Untraced: what each program does without the tracer.
    let mut untraced = Vec::new();
    for (label, binary) in &binaries {
        for body in [PLAIN_BODY, STREAM_BODY] {
            let ex = release_client(spawn_client(binary, &server, body)?).await?;
            let (status, _) = status_and_body(&ex.received);
            assert_eq!(status, "HTTP/1.1 200 OK", "{label}");
            untraced.push(status_and_body(&ex.received));
        }
    }

    let dir = work_dir();
    let cache_dir = dir.join("locate-cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let cache_arg = cache_dir.display().to_string();
    let name = "stripped";
    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(
        tracer_bin(),
        name,
        &TraceOptions {
            envs: &[("AGENT_TRACER_CACHE_DIR", &cache_arg)],
            ..TraceOptions::default()
        },
    )
    .await?;

    let mut traced = Vec::new();
    for (label, binary) in &binaries {
        for body in [PLAIN_BODY, STREAM_BODY] {
            let child = spawn_client(binary, &server, body)?;
            wait_for_log(
                name,
                &["attached 4 TLS hooks", &binary.display().to_string()],
                ATTACH_WAIT,
            )
            .await?;
            let ex = release_client(child).await?;
            receiver
                .wait_for(&format!("the span of {label}"), SPAN_WAIT, |s| {
                    !of_pid(s, ex.pid).is_empty()
                })
                .await?;
            traced.push((label.clone(), body, ex));
        }
    }
    // Both hooks of every binary were judged on their first bytes and trusted.
    for (_, binary) in &binaries {
        for function in ["ssl_write_internal", "ssl_read_internal"] {
            wait_for_log(
                name,
                &[
                    "inferred TLS hook trusted",
                    &binary.display().to_string(),
                    function,
                ],
                SPAN_WAIT,
            )
            .await?;
        }
    }
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    let counters = output.counters()?;
    assert_eq!(
        counters.get("inferred_hooks_trusted"),
        Some(&(2 * binaries.len() as u64)),
        "{counters:?}"
    );
    assert_eq!(
        counters.get("inferred_hooks_rejected"),
        None,
        "{counters:?}"
    );
    // The two OpenSSL releases of the Rust client, and the OS's 3.0 in the C one.
    for (_, binary) in &binaries {
        assert!(
            output
                .stderr
                .lines()
                .any(|l| l.contains("attached 4 TLS hooks")
                    && l.contains(&binary.display().to_string())),
            "{}",
            binary.display()
        );
    }

    let spans = receiver.spans();
    for ((label, body, ex), before) in traced.iter().zip(&untraced) {
        let what = format!(
            "{label} ({})",
            if *body == STREAM_BODY {
                "stream"
            } else {
                "plain"
            }
        );
        assert_eq!(
            &status_and_body(&ex.received).0,
            &before.0,
            "{what}: unchanged"
        );
        if *body == PLAIN_BODY {
            assert_eq!(
                &status_and_body(&ex.received).1,
                &before.1,
                "{what}: unchanged"
            );
        }
        // Exactly the bytes the program wrote and read: nothing lost, nothing twice.
        assert_eq!(
            recorded(&streams_dir, ex.pid, "egress"),
            ex.sent,
            "{what}: request bytes"
        );
        assert_eq!(
            recorded(&streams_dir, ex.pid, "ingress"),
            ex.received,
            "{what}: response bytes"
        );
        let mine = of_pid(&spans, ex.pid);
        assert_eq!(mine.len(), 1, "{what}: one span: {mine:#?}");
        let span = &mine[0];
        assert_eq!(span.span.name, "chat gpt-4o-mini", "{what}");
        assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
        assert_eq!(
            as_int(span.attr("http.request.body.size")),
            Some(body.len() as i64),
            "{what}"
        );
        let id = if *body == STREAM_BODY {
            "chatcmpl-mock-stream"
        } else {
            "chatcmpl-mock-nonstream"
        };
        assert_eq!(as_str(span.attr("gen_ai.response.id")), Some(id), "{what}");
        assert_eq!(span.attr("agent_tracer.capture.bytes_lost"), None, "{what}");
    }
    let exported = receiver.raw_bytes();
    assert!(!contains(&exported, b"sk-rust-openssl-secret"));
    assert!(!contains(&exported, b"sk-c-libssl-secret"));

    // The second start reads every analysis back from the on-disk cache.
    let cached = std::fs::read_dir(&cache_dir)?.count();
    assert!(cached >= binaries.len(), "{cached} cache entries");
    Ok(())
}

/// The ids of the BPF links the tracer holds (one per attached probe). Ids are never reused,
/// so links attached meanwhile for other programs on the host cannot hide a detach.
fn link_ids(pid: u32) -> std::collections::BTreeSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("link_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_inferred_hook_is_detached_and_reported() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let (full, binary) = stripped::build_c_client()?;
    let binary = std::fs::canonicalize(binary)?;
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;
    let untraced = release_client(spawn_client(&binary, &server, PLAIN_BODY)?).await?;

    // The simulated wrong inference: BIO_write/BIO_read have the signature of SSL_write/SSL_read
    // (int return = bytes) but carry TLS records. Their offsets come from the unstripped build.
    let full = std::fs::read(full)?;
    let elf = object::File::parse(&*full)?;
    let address = |name: &str| {
        elf.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .with_context(|| format!("{name} in the unstripped build"))
    };
    let data = std::fs::read(&binary)?;
    let image = Image::parse(&data)?;
    let offset = |name: &str| -> Result<u64> {
        image
            .file_offset(address(name)?)
            .with_context(|| format!("{name} not in the file"))
    };
    let hook = |program: &str, function: &str| -> Result<LocatedHook> {
        Ok(LocatedHook {
            program: program.into(),
            function: function.into(),
            offset: offset(function)?,
        })
    };
    let wrong = Outcome::Found(Located {
        stack: "OpenSSL (wrongly inferred on purpose)".into(),
        kind: "openssl".into(),
        hooks: vec![
            hook("ssl_write", "BIO_write")?,
            hook("ssl_write_ret", "BIO_write")?,
            hook("ssl_read", "BIO_read")?,
            hook("ssl_read_ret", "BIO_read")?,
        ],
    });
    let cache_dir = work_dir().join("wrong-cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let key = CacheKey::of_content(&data);
    let locator = &tracer_user::capture::locate::LOCATORS[0];
    DiskCache::at(&cache_dir).put(&key, locator.name, locator.version, &wrong)?;

    let name = "stripped-wrong";
    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(
        tracer_bin(),
        name,
        &TraceOptions {
            envs: &[("AGENT_TRACER_CACHE_DIR", &cache_dir.display().to_string())],
            ..TraceOptions::default()
        },
    )
    .await?;
    let child = spawn_client(&binary, &server, PLAIN_BODY)?;
    wait_for_log(
        name,
        &["attached 4 TLS hooks", &binary.display().to_string()],
        ATTACH_WAIT,
    )
    .await?;
    let attached = link_ids(running.pid());
    let ex = release_client(child).await?;
    for function in ["BIO_write", "BIO_read"] {
        let line = wait_for_log(name, &["inferred TLS hook rejected", function], SPAN_WAIT).await?;
        // The report shows what was judged: BIO_write's first bytes are the ClientHello record;
        // BIO_read's first are whatever the program read through a BIO first (the CA file's
        // DER, then the server's records).
        let expected = if function == "BIO_write" {
            "first_bytes=\"16030"
        } else {
            "first_bytes=\""
        };
        assert!(line.contains(expected), "{line}");
    }
    // Both functions' entry and return probes are gone from the kernel (the attacher detaches
    // between analyses, which take seconds for a large debug build of another program).
    let deadline = Instant::now() + Duration::from_secs(60);
    let gone = loop {
        let now = link_ids(running.pid());
        let gone = attached.difference(&now).count();
        if gone >= 4 || Instant::now() > deadline {
            break gone;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        gone, 4,
        "the 4 probes of BIO_write and BIO_read are detached"
    );
    // A second run is not hooked at all now, and still works.
    let again = release_client(spawn_client(&binary, &server, PLAIN_BODY)?).await?;
    // Both runs are still reported, as encrypted-only connections: the one whose hook was
    // rejected as well as the one that ran unhooked.
    let spans = receiver
        .wait_for("both runs' encrypted-only spans", SPAN_WAIT, |s| {
            [ex.pid, again.pid]
                .iter()
                .all(|pid| !of_pid(s, *pid).is_empty())
        })
        .await?;
    for run in [&ex, &again] {
        let mine = of_pid(&spans, run.pid);
        assert_eq!(mine.len(), 1, "pid {}: {mine:#?}", run.pid);
        assert_eq!(
            as_bool(mine[0].attr("agent_tracer.capture.encrypted")),
            Some(true),
            "{:#?}",
            mine[0]
        );
        assert_eq!(
            as_int(mine[0].attr("server.port")),
            Some(server.addr.port() as i64)
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    let counters = output.counters()?;
    assert_eq!(
        counters.get("inferred_hooks_rejected"),
        Some(&2),
        "{counters:?}"
    );
    assert_eq!(counters.get("inferred_hooks_trusted"), None, "{counters:?}");

    // The program behaved the same, and none of the ciphertext reached the pipeline.
    for run in [&ex, &again] {
        assert_eq!(
            status_and_body(&run.received),
            status_and_body(&untraced.received)
        );
        assert!(recorded(&streams_dir, run.pid, "egress").is_empty());
        assert!(recorded(&streams_dir, run.pid, "ingress").is_empty());
    }
    Ok(())
}
