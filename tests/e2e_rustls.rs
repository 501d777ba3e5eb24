//! End-to-end for rustls in stripped Rust binaries: a client on rustls (tests/clients/rustls,
//! built here from crates.io, in release, stripped, in two optimisation levels, once with the
//! aws-lc-rs provider and once with ring) POSTs JSON over HTTPS to the local OpenAI-compatible
//! server while the real agent-tracer binary runs. The tracer must locate the provider's AEAD
//! seal/open without symbols (the same code for both builds), reassemble the TLS records it sees
//! there into the byte streams, and export the call as a GenAI span; the recorded plaintext must
//! be exactly what the client wrote and read.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};
use tracer_testkit::{
    e2e::{
        self, contains, of_pid, require_root, start_traced_with, HeldClient, TraceOptions, Traced,
        SERIAL,
    },
    mock_openai::{self, MockOpenAi},
    otlp::{as_int, as_str, as_strs},
};

const API_KEY: &str = "sk-rustls-secret";
const SPAN_WAIT: Duration = Duration::from_secs(30);
const ATTACH_WAIT: Duration = Duration::from_secs(60);
const TRACER_NAME: &str = "rustls";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn work_dir() -> PathBuf {
    tracer_testkit::target_dir().join("e2e-rustls")
}

/// Builds tests/clients/rustls/`provider` with `profile` (its own workspace and Cargo.lock, so
/// `--locked` pins every crate) and checks the result has no symbol table left.
fn build_client(provider: &str, profile: &str) -> Result<PathBuf> {
    build_stripped(provider, profile, "https_client")
}

fn build_stripped(provider: &str, profile: &str, bin: &str) -> Result<PathBuf> {
    let binary = build(provider, profile, bin)?;
    let data = std::fs::read(&binary)?;
    use object::Object as _;
    let elf = object::File::parse(&*data)?;
    ensure!(
        elf.symbols().next().is_none(),
        "{} still has a symbol table",
        binary.display()
    );
    Ok(binary)
}

fn build(provider: &str, profile: &str, bin: &str) -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/clients/rustls")
        .join(provider)
        .join("Cargo.toml");
    let target = work_dir().join(provider);
    let output = Command::new(env!("CARGO"))
        .args(["build", "--locked", "--quiet", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        // The workspace's own build settings must not leak into the client's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!(
            "building the {provider} client ({profile}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(std::fs::canonicalize(target.join(profile).join(bin))?)
}

/// What the client wrote and read through rustls.
#[derive(Debug)]
struct ClientOutcome {
    /// The negotiated cipher suite, as rustls names it ("TLS13_AES_256_GCM_SHA384").
    suite: String,
    request: Vec<u8>,
    response: Vec<u8>,
}

/// One call to trace: a client binary and the TLS settings it runs with (`TLS_VERSION`,
/// `TLS_CIPHER_SUITE`, see the client).
type Run<'a> = (&'a Path, &'a [(&'a str, &'a str)]);

/// Starts the client held before its request (`--wait-stdin`).
fn spawn_client((binary, tls): Run<'_>, server: &MockOpenAi) -> Result<HeldClient> {
    let mut command = Command::new(binary);
    command
        .arg(server.base_url())
        .arg("--wait-stdin")
        .envs(tls.iter().copied())
        .env("SSL_CERT_FILE", &server.cert_path);
    HeldClient::spawn(command)
}

/// Lets the held client send its request and collects its one line of output.
async fn release_client(client: HeldClient) -> Result<(u32, ClientOutcome)> {
    let (pid, line) = client.release_line().await?;
    // The client escapes every byte outside printable ASCII as \u00XX: back to bytes.
    let bytes = |field: &str| -> Result<Vec<u8>> {
        Ok(line[field]
            .as_str()
            .with_context(|| format!("{field} in {line}"))?
            .chars()
            .map(|c| c as u32 as u8)
            .collect())
    };
    Ok((
        pid,
        ClientOutcome {
            suite: String::from_utf8(bytes("suite")?)?,
            request: bytes("request")?,
            response: bytes("response")?,
        },
    ))
}

/// Waits until the tracer's log says it hooked `binary` (it can only once a process runs it).
async fn wait_until_hooked(binary: &Path) -> Result<()> {
    e2e::wait_until_hooked(TRACER_NAME, binary, ATTACH_WAIT).await
}

/// The bytes recorded for `pid` in `direction` ("egress"/"ingress"), one entry per connection.
fn recorded_streams(dir: &Path, pid: u32, direction: &str) -> Result<Vec<Vec<u8>>> {
    let prefix = format!("{pid}-");
    let suffix = format!("-{direction}.bin");
    let mut streams = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(&suffix) {
            streams.push(std::fs::read(entry.path())?);
        }
    }
    Ok(streams)
}

/// Runs each client under one tracer and checks the capture of each, byte for byte.
async fn traced_calls_are_captured_exactly(runs: &[Run<'_>]) -> Result<()> {
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;
    // What the clients do untraced: the tracer must not change it.
    for &(binary, tls) in runs {
        let (_, outcome) = release_client(spawn_client((binary, tls), &server)?).await?;
        ensure!(
            outcome.response.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{} {tls:?}: {:?}",
            binary.display(),
            String::from_utf8_lossy(&outcome.response)
        );
    }

    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(tracer_bin(), TRACER_NAME, &TraceOptions::default()).await?;
    let mut traced = Vec::new();
    for &(binary, tls) in runs {
        let child = spawn_client((binary, tls), &server)?;
        wait_until_hooked(binary).await?;
        let (pid, outcome) = release_client(child).await?;
        receiver
            .wait_for(
                &format!("the span of {} {tls:?} (pid {pid})", binary.display()),
                SPAN_WAIT,
                |s| !of_pid(s, pid).is_empty(),
            )
            .await?;
        traced.push(((binary, tls), pid, outcome));
    }
    let output = running.stop()?;
    assert!(
        output.status.success(),
        "tracer exit: {}\n{}",
        output.status,
        output.stderr
    );

    let spans = receiver.spans();
    for ((binary, tls), pid, outcome) in &traced {
        let what = format!("{} {tls:?}", binary.display());
        // The settings took effect: the call went over the cipher and TLS version asked for.
        for (setting, value) in tls.iter() {
            let ok = match *setting {
                "TLS_CIPHER_SUITE" => outcome.suite.contains(value),
                "TLS_VERSION" => outcome.suite.starts_with("TLS13_") == (*value == "1.3"),
                _ => false,
            };
            assert!(ok, "{what}: negotiated {}", outcome.suite);
        }
        assert!(
            outcome.response.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{what}"
        );
        // Exactly the bytes that crossed rustls's API, in one stream per direction.
        let egress = recorded_streams(&streams_dir, *pid, "egress")?;
        assert_eq!(
            egress,
            vec![outcome.request.clone()],
            "{what}: the request, exactly:\n{}",
            String::from_utf8_lossy(&egress.concat())
        );
        let ingress = recorded_streams(&streams_dir, *pid, "ingress")?;
        assert_eq!(
            ingress,
            vec![outcome.response.clone()],
            "{what}: the response, exactly:\n{}",
            String::from_utf8_lossy(&ingress.concat())
        );
        let mine = of_pid(&spans, *pid);
        assert_eq!(mine.len(), 1, "{what}: one span per call: {mine:#?}");
        let span = &mine[0];
        assert_eq!(span.span.name, "chat gpt-4o-mini", "{what}");
        assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
        assert_eq!(span.attr("agent_tracer.capture.bytes_lost"), None, "{what}");
    }
    assert!(
        !contains(&receiver.raw_bytes(), API_KEY.as_bytes()),
        "the API key was exported"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_with_aws_lc_rs_in_stripped_binaries() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    // Two builds of the same program (opt-level 3 and "s"): laid out and inlined differently,
    // found by the same locator.
    let fast = build_client("aws-lc", "release")?;
    let small = build_client("aws-lc", "release-small")?;
    traced_calls_are_captured_exactly(&[(&fast, &[]), (&small, &[])]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_with_ring_in_stripped_binaries() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    // ring's AES-GCM never hands a whole record to one C function: these are found from ring's
    // AEAD descriptors, in both builds, and every cipher and record format rustls offers with
    // ring carries a call: AES-256-GCM (its default), AES-128-GCM and ChaCha20-Poly1305, TLS 1.3
    // and 1.2 (whose additional data and explicit nonce differ).
    let fast = build_client("ring", "release")?;
    let small = build_client("ring", "release-small")?;
    traced_calls_are_captured_exactly(&[
        (&fast, &[]),
        (&small, &[]),
        (&fast, &[("TLS_CIPHER_SUITE", "CHACHA20")]),
        (&small, &[("TLS_CIPHER_SUITE", "AES_128_GCM")]),
        (&fast, &[("TLS_VERSION", "1.2")]),
        (
            &small,
            &[("TLS_VERSION", "1.2"), ("TLS_CIPHER_SUITE", "CHACHA20")],
        ),
    ])
    .await
}

/// Deno `version` from the npm registry (installed once by the testkit), checked to carry no
/// symbol table: what is found must be found without one.
fn install_deno(version: &str) -> Result<PathBuf> {
    let binary = tracer_testkit::deno::install(version)?;
    let data = std::fs::read(&binary)?;
    use object::Object as _;
    ensure!(
        object::File::parse(&*data)?.symbols().next().is_none(),
        "deno {version} has a symbol table"
    );
    Ok(binary)
}

/// What tests/clients/deno_fetch.ts printed.
#[derive(Debug)]
struct DenoOutcome {
    status: i64,
    request_body: String,
    body: String,
}

fn spawn_deno(deno: &Path, server: &MockOpenAi) -> Result<HeldClient> {
    let mut command = Command::new(deno);
    command
        .args(["run", "--allow-net", "--cert"])
        .arg(&server.cert_path)
        .arg(tracer_testkit::e2e::clients_dir().join("deno_fetch.ts"))
        .arg(server.base_url())
        .env("DENO_DIR", work_dir().join("deno-dir"))
        .env("DENO_NO_UPDATE_CHECK", "1")
        .env("NO_COLOR", "1");
    HeldClient::spawn(command)
}

async fn release_deno(client: HeldClient) -> Result<(u32, DenoOutcome)> {
    let (pid, line) = client.release_line().await?;
    let text = |f: &str| -> Result<String> {
        Ok(line[f]
            .as_str()
            .with_context(|| format!("{f} in {line}"))?
            .to_string())
    };
    Ok((
        pid,
        DenoOutcome {
            status: line["status"].as_i64().context("status")?,
            request_body: text("request_body")?,
            body: text("body")?,
        },
    ))
}

/// An HTTP/1.1 message's head and body (everything after the blank line).
fn split_message(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&bytes[..at + 4], &bytes[at + 4..]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deno_fetch_over_rustls_in_two_releases() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    // 2.9.6: no unwind tables at all (functions bounded by call targets); 2.5.6: an older
    // rustls (0.23.28) and aws-lc-rs (1.12.4), with unwind tables. The same locator finds both.
    let denos = [
        install_deno(tracer_testkit::deno::CURRENT)?,
        install_deno(tracer_testkit::deno::OLDER)?,
    ];
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;
    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(tracer_bin(), TRACER_NAME, &TraceOptions::default()).await?;
    let mut traced = Vec::new();
    for deno in &denos {
        let child = spawn_deno(deno, &server)?;
        wait_until_hooked(deno).await?;
        let (pid, outcome) = release_deno(child).await?;
        receiver
            .wait_for(
                &format!("the span of {} (pid {pid})", deno.display()),
                SPAN_WAIT,
                |s| !of_pid(s, pid).is_empty(),
            )
            .await?;
        traced.push((deno, pid, outcome));
    }
    let output = running.stop()?;
    assert!(output.status.success(), "tracer exit: {}", output.stderr);

    let spans = receiver.spans();
    for (deno, pid, outcome) in &traced {
        let what = deno.display();
        assert_eq!(outcome.status, 200, "{what}");
        let egress = recorded_streams(&streams_dir, *pid, "egress")?;
        assert_eq!(egress.len(), 1, "{what}: one connection");
        let (head, body) = split_message(&egress[0]).context("a whole request")?;
        assert!(
            head.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n"),
            "{what}: {}",
            String::from_utf8_lossy(head)
        );
        assert_eq!(
            body,
            outcome.request_body.as_bytes(),
            "{what}: the request body, exactly"
        );
        let ingress = recorded_streams(&streams_dir, *pid, "ingress")?;
        assert_eq!(ingress.len(), 1, "{what}: one connection");
        let (head, body) = split_message(&ingress[0]).context("a whole response")?;
        assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"), "{what}");
        assert_eq!(
            body,
            outcome.body.as_bytes(),
            "{what}: the response body, exactly"
        );
        let mine = of_pid(&spans, *pid);
        assert_eq!(mine.len(), 1, "{what}: one span per call: {mine:#?}");
        assert_eq!(mine[0].span.name, "chat gpt-4o-mini", "{what}");
        assert_eq!(as_int(mine[0].attr("http.response.status_code")), Some(200));
    }
    assert!(
        !contains(&receiver.raw_bytes(), API_KEY.as_bytes()),
        "the API key was exported"
    );
    Ok(())
}

/// `agent-tracer locate` on a build that keeps its symbol table: ring's seal and open must be
/// found exactly where the symbols say (`ring::aead::algorithm::{aes_gcm,chacha20_poly1305}_
/// {seal,open}`), from the AEAD descriptors alone; the stripped copy gives the same answers.
#[test]
fn ring_seal_and_open_are_found_where_the_symbols_say() -> Result<()> {
    use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
    let binary = build("ring", "release-symbols", "https_client")?;
    let data = std::fs::read(&binary)?;
    let elf = object::File::parse(&*data)?;
    let file_offset = |vaddr: u64| {
        elf.segments().find_map(|s| {
            let (offset, size) = s.file_range();
            (s.address()..s.address() + size)
                .contains(&vaddr)
                .then(|| offset + (vaddr - s.address()))
        })
    };
    // `ring::aead::algorithm::<name>`: Rust's manglings (legacy and v0) both spell each path
    // segment with its length before it.
    let symbol = |name: &str| -> Result<u64> {
        let segment = format!("{}{name}", name.len());
        let mut found = elf.symbols().filter(|s| {
            s.name()
                .is_ok_and(|n| n.contains("9algorithm") && n.contains(&segment))
        });
        let s = found.next().with_context(|| format!("no symbol {name}"))?;
        ensure!(found.next().is_none(), "two symbols {name}");
        file_offset(s.address()).with_context(|| format!("{name} is not in the file"))
    };
    let expected = [
        ("ring AES_GCM.seal", symbol("aes_gcm_seal")?),
        ("ring AES_GCM.open", symbol("aes_gcm_open")?),
        (
            "ring CHACHA20_POLY1305.seal",
            symbol("chacha20_poly1305_seal")?,
        ),
        (
            "ring CHACHA20_POLY1305.open",
            symbol("chacha20_poly1305_open")?,
        ),
    ];
    let stripped = work_dir().join("ring-symbols-stripped");
    let status = Command::new("objcopy")
        .arg("--strip-all")
        .arg(&binary)
        .arg(&stripped)
        .status()?;
    ensure!(status.success(), "objcopy --strip-all failed");
    let cache = work_dir().join("ring-locate-cache");
    let _ = std::fs::remove_dir_all(&cache);
    for file in [&binary, &stripped] {
        let output = Command::new(tracer_bin())
            .arg("locate")
            .arg("--cache-dir")
            .arg(&cache)
            .arg(file)
            .output()?;
        ensure!(output.status.success(), "locate: {output:?}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        // `found` lists every stack the binary carries: this client has ring's alone.
        let stacks = report["found"].as_array().context("found")?;
        assert_eq!(stacks.len(), 1, "{}: {report}", file.display());
        let found = &stacks[0];
        assert_eq!(
            found["stack"],
            "rustls (ring)",
            "{}: {report}",
            file.display()
        );
        let hooks = found["hooks"].as_array().context("hooks")?;
        for (function, offset) in expected {
            let at: Vec<(&str, u64)> = hooks
                .iter()
                .filter(|h| h["function"] == function)
                .filter_map(|h| Some((h["program"].as_str()?, h["offset"].as_u64()?)))
                .collect();
            let programs: &[&str] = if function.ends_with("seal") {
                &["ring_seal"]
            } else {
                &["ring_open", "ring_open_ret"]
            };
            assert_eq!(
                at,
                programs.iter().map(|p| (*p, offset)).collect::<Vec<_>>(),
                "{}: {function}",
                file.display()
            );
        }
    }
    Ok(())
}

/// The request bodies of tests/clients/rustls/reqwest: a JSON answer, then a streamed one.
const REQWEST_BODIES: [&str; 2] = [
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from reqwest"}]}"#,
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"weather?"}],"stream":true,"stream_options":{"include_usage":true}}"#,
];

/// reqwest on tokio with rustls and ring, the stack of most Rust agent CLIs: two calls on one
/// connection (JSON, then SSE read as it streams), over HTTP/2 chosen by ALPN and over
/// HTTP/1.1. Async I/O on a thread pool must still tie each record to its socket, and the
/// reassembled records must parse as HTTP/2 frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_on_ring_over_http2_and_http1() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let client = build_stripped("reqwest", "release", "reqwest_client")?;
    let certs = tracer_testkit::target_dir().join("e2e-certs");
    let h2 = mock_openai::start_h2(&certs).await?;
    let h1 = mock_openai::start(&certs).await?;
    let spawn = |server: &MockOpenAi| {
        let mut command = Command::new(&client);
        command
            .arg(server.base_url())
            .arg("--wait-stdin")
            .env("SSL_CERT_FILE", &server.cert_path);
        HeldClient::spawn(command)
    };
    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(tracer_bin(), TRACER_NAME, &TraceOptions::default()).await?;
    let mut traced = Vec::new();
    for (server, version) in [(&h2, "HTTP/2.0"), (&h1, "HTTP/1.1")] {
        let child = spawn(server)?;
        wait_until_hooked(&client).await?;
        let (pid, report) = child.release_line().await?;
        assert_eq!(report["version"], version, "{report}");
        assert_eq!(
            report["statuses"],
            serde_json::json!([200, 200]),
            "{report}"
        );
        receiver
            .wait_for(&format!("{version}: two spans"), SPAN_WAIT, |s| {
                of_pid(s, pid).len() >= 2
            })
            .await?;
        traced.push((version, pid, report));
    }
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);

    let spans = receiver.spans();
    for (version, pid, report) in &traced {
        let mine = of_pid(&spans, *pid);
        assert_eq!(mine.len(), 2, "{version}: one span per call: {mine:#?}");
        let by_id = |id: &str| {
            mine.iter()
                .find(|s| as_str(s.attr("gen_ai.response.id")) == Some(id))
                .unwrap_or_else(|| panic!("{version}: no span answered {id}: {mine:#?}"))
        };
        let plain = by_id("chatcmpl-mock-nonstream");
        let stream = by_id("chatcmpl-mock-stream");
        for span in [plain, stream] {
            assert_eq!(span.span.name, "chat gpt-4o-mini", "{version}");
            assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
            assert_eq!(
                span.attr("agent_tracer.capture.bytes_lost"),
                None,
                "{version}"
            );
        }
        assert_eq!(
            as_strs(stream.attr("agent_tracer.response.tool_call.ids")),
            Some(vec!["call_mock_weather".to_string()]),
            "{version}"
        );
        assert_eq!(as_int(stream.attr("gen_ai.usage.output_tokens")), Some(17));
        // The plaintext itself: both request bodies went out, the JSON answer came back.
        let egress = e2e::recorded(&streams_dir, *pid, "egress");
        if *version == "HTTP/2.0" {
            assert!(
                egress.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
                "{version}"
            );
        }
        for body in REQWEST_BODIES {
            assert!(contains(&egress, body.as_bytes()), "{version}: {body}");
        }
        let ingress = e2e::recorded(&streams_dir, *pid, "ingress");
        let answer = report["bodies"][0].as_str().context("bodies")?;
        assert!(contains(&ingress, answer.as_bytes()), "{version}");
    }
    assert!(
        !contains(&receiver.raw_bytes(), b"sk-reqwest-secret"),
        "the API key was exported"
    );
    Ok(())
}

/// A rustls connection opened, and used, before the tracer starts: rustls's records are tied to
/// their socket by the socket calls around them, which the tracer did not see for this one until
/// now. Its next call must still be captured whole, both ways, with no record left unassigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rustls_connection_open_before_the_tracer_starts_is_captured_from_its_next_call(
) -> Result<()> {
    use std::io::{BufRead as _, Read as _, Write as _};
    require_root();
    let _serial = SERIAL.lock().await;
    let client = build_stripped("reqwest", "release", "reqwest_client")?;
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;
    let mut child = Command::new(&client)
        .arg(server.base_url())
        .arg("--wait-between")
        .env("SSL_CERT_FILE", &server.cert_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let first = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        Ok((line, stdout))
    });
    let (line, mut stdout) = first.await??;
    ensure!(line.contains("first"), "the first call: {line:?}");

    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(tracer_bin(), TRACER_NAME, &TraceOptions::default()).await?;
    wait_until_hooked(&client).await?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let report = tokio::task::spawn_blocking(move || -> Result<serde_json::Value> {
        stdin.write_all(b"go\n")?;
        let mut rest = String::new();
        stdout.read_to_string(&mut rest)?;
        let status = child.wait()?;
        ensure!(status.success(), "reqwest client: {status}");
        Ok(serde_json::from_str(rest.trim())?)
    })
    .await??;
    assert_eq!(report["version"], "HTTP/1.1", "{report}");
    assert_eq!(
        report["statuses"],
        serde_json::json!([200, 200]),
        "{report}"
    );
    let spans = receiver
        .wait_for("the second call's span", SPAN_WAIT, |s| {
            !of_pid(s, pid).is_empty()
        })
        .await?;
    // Nothing more may come for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    let counters = output.counters()?;
    assert_eq!(counters.get("tls_records_unassigned"), None, "{counters:?}");

    let spans = of_pid(&spans, pid);
    assert_eq!(
        spans.len(),
        1,
        "only the call made while traced: {spans:#?}"
    );
    let span = &spans[0];
    assert_eq!(span.span.name, "chat gpt-4o-mini");
    assert_eq!(
        as_str(span.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-stream")
    );
    assert_eq!(
        as_strs(span.attr("agent_tracer.response.tool_call.ids")),
        Some(vec!["call_mock_weather".to_string()])
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.output_tokens")), Some(17));
    assert_eq!(span.attr("agent_tracer.capture.bytes_lost"), None);
    let egress = e2e::recorded(&streams_dir, pid, "egress");
    assert!(egress.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n"));
    assert!(contains(&egress, REQWEST_BODIES[1].as_bytes()));
    let ingress = e2e::recorded(&streams_dir, pid, "ingress");
    assert!(ingress.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // The stream's events (chunked on the wire, so compared by a piece every event carries).
    let events = report["bodies"][1].as_str().context("body")?;
    assert!(events.contains("chatcmpl-mock-stream"), "{events}");
    assert!(contains(&ingress, b"\"id\":\"chatcmpl-mock-stream\""));
    Ok(())
}

/// The tracer never analyses or hooks its own executable, even where pre-attach scans its
/// directory: it holds every locator's strings, and hooking it would hook every later tracer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracer_never_hooks_its_own_executable() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let tracer = tracer_bin().canonicalize()?;
    let dir = tracer.parent().context("the tracer's directory")?;
    let path = format!("{}:/usr/bin:/bin", dir.display());
    let Traced {
        tracer: running, ..
    } = e2e::start_traced_with_env(tracer_bin(), "own-executable", &[], &[("PATH", &path)]).await?;
    // Pre-attach has scanned PATH once the tracer says so.
    e2e::wait_for_log("own-executable", &["start-up scan done"], ATTACH_WAIT).await?;
    let output = running.stop()?;
    assert!(output.status.success(), "tracer exit: {}", output.status);
    let own = tracer.display().to_string();
    let mentions: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.contains(&format!("{own}:")) || line.contains(&format!("to {own}")))
        .collect();
    assert!(mentions.is_empty(), "{mentions:#?}");
    Ok(())
}

/// `--skip-executable`: a client named there is never hooked. Its calls are never decrypted
/// (its connection is only seen as TLS the tracer does not read), while a copy of the very same
/// program, another file, is hooked and traced as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_executable_is_never_hooked() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    const NAME: &str = "rustls-skip";
    // Canonical: the tracer names executables as the kernel does.
    let skipped = build_client("ring", "release")?.canonicalize()?;
    let copy = work_dir().join("https_client-not-skipped");
    std::fs::copy(&skipped, &copy)?;
    let copy = copy.canonicalize()?;
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;
    let skip = skipped.display().to_string();
    let Traced {
        receiver,
        tracer: running,
        ..
    } = start_traced_with(
        tracer_bin(),
        NAME,
        &TraceOptions {
            args: &["--skip-executable", &skip],
            ..TraceOptions::default()
        },
    )
    .await?;
    let traced_call = || async {
        let child = spawn_client((&copy, &[]), &server)?;
        e2e::wait_until_hooked(NAME, &copy, ATTACH_WAIT).await?;
        let (pid, _) = release_client(child).await?;
        receiver
            .wait_for(&format!("the copy's span (pid {pid})"), SPAN_WAIT, |s| {
                !of_pid(s, pid).is_empty()
            })
            .await?;
        anyhow::Ok(pid)
    };
    traced_call().await?;
    let (skipped_pid, outcome) = release_client(spawn_client((&skipped, &[]), &server)?).await?;
    ensure!(
        outcome.response.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "the skipped client's call failed: {:?}",
        String::from_utf8_lossy(&outcome.response)
    );
    // A later traced call's span: by then the skipped call would have been exported too.
    traced_call().await?;
    let output = running.stop()?;
    assert!(output.status.success(), "tracer exit: {}", output.status);
    // Its connection is still seen from the kernel's side, as one whose TLS is not hooked
    // (`tls <host>`); its plaintext, and so any model call, never.
    let skipped_spans = of_pid(&receiver.spans(), skipped_pid);
    let names: Vec<&str> = skipped_spans.iter().map(|s| s.span.name.as_str()).collect();
    assert!(
        names.iter().all(|n| n.starts_with("tls ")),
        "the skipped client's call was decrypted: {names:?}"
    );
    assert!(skipped_spans
        .iter()
        .all(|s| s.attr("gen_ai.request.model").is_none()));
    assert!(
        output.stderr.contains(&format!("never hooked: {skip}")),
        "{}",
        output.stderr
    );
    assert!(
        !output
            .stderr
            .lines()
            .any(|l| l.contains("attached") && l.contains(&skip)),
        "{}",
        output.stderr
    );
    Ok(())
}
