//! End-to-end for rustls in stripped Rust binaries: a client on rustls (tests/clients/rustls,
//! built here from crates.io, in release, stripped, in two optimisation levels) POSTs JSON over
//! HTTPS to the local OpenAI-compatible server while the real agent-tracer binary runs. The
//! tracer must locate aws-lc's AEAD seal/open without symbols (the same code for both builds),
//! reassemble the TLS records it sees there into the byte streams, and export the call as a
//! GenAI span; the recorded plaintext must be exactly what the client wrote and read.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{contains, of_pid, require_root, SERIAL},
    mock_openai::{self, MockOpenAi},
    otlp::{self, as_int},
    tracer,
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
    let binary = std::fs::canonicalize(target.join(profile).join("https_client"))?;
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

/// What the client wrote and read through rustls.
#[derive(Debug)]
struct ClientOutcome {
    request: Vec<u8>,
    response: Vec<u8>,
}

/// Starts the client held before its request (`--wait-stdin`).
fn spawn_client(binary: &Path, server: &MockOpenAi) -> Result<Child> {
    Command::new(binary)
        .arg(server.base_url())
        .arg("--wait-stdin")
        .env("SSL_CERT_FILE", &server.cert_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// Lets the held client send its request and collects its one line of output.
async fn release_client(mut child: Child) -> Result<(u32, ClientOutcome)> {
    let pid = child.id();
    tokio::task::spawn_blocking(move || {
        let mut stdin = child.stdin.take().context("client stdin")?;
        stdin.write_all(b"go\n")?;
        drop(stdin);
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .context("client stdout")?
            .read_to_string(&mut stdout)?;
        let status = child.wait()?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("rustls client failed ({status}): {err}");
        }
        let line: Value = serde_json::from_str(stdout.trim())
            .with_context(|| format!("the client's output {stdout:?}"))?;
        assert_eq!(line["pid"].as_u64(), Some(pid as u64));
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
                request: bytes("request")?,
                response: bytes("response")?,
            },
        ))
    })
    .await?
}

/// Waits until the tracer's log says it hooked `binary` (it can only once a process runs it).
async fn wait_until_hooked(binary: &Path) -> Result<()> {
    let log = tracer_testkit::target_dir()
        .join("e2e-logs")
        .join(format!("{TRACER_NAME}.err"));
    let path = binary.display().to_string();
    let deadline = Instant::now() + ATTACH_WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("attached") && l.contains(&path))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the tracer did not hook {path} within {ATTACH_WAIT:?}; its log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Runs each binary under one tracer and checks the capture of each, byte for byte.
async fn traced_calls_are_captured_exactly(binaries: &[PathBuf]) -> Result<()> {
    let server = mock_openai::start(&tracer_testkit::target_dir().join("e2e-certs")).await?;
    // What the clients do untraced: the tracer must not change it.
    for binary in binaries {
        let (_, outcome) = release_client(spawn_client(binary, &server)?).await?;
        ensure!(
            outcome.response.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{}: {:?}",
            binary.display(),
            String::from_utf8_lossy(&outcome.response)
        );
    }

    let receiver = otlp::start_grpc().await?;
    let streams_dir = work_dir().join("streams");
    let _ = std::fs::remove_dir_all(&streams_dir);
    let streams_arg = streams_dir.display().to_string();
    let running = tracer::start(
        tracer_bin(),
        TRACER_NAME,
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--record-streams",
            &streams_arg,
        ],
        &[],
    )?;
    let mut traced = Vec::new();
    for binary in binaries {
        let child = spawn_client(binary, &server)?;
        wait_until_hooked(binary).await?;
        let (pid, outcome) = release_client(child).await?;
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

    let spans = receiver.spans();
    for (binary, pid, outcome) in &traced {
        let what = binary.display();
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
    let binaries = [
        build_client("aws-lc", "release")?,
        build_client("aws-lc", "release-small")?,
    ];
    traced_calls_are_captured_exactly(&binaries).await
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

fn spawn_deno(deno: &Path, server: &MockOpenAi) -> Result<Child> {
    Command::new(deno)
        .args(["run", "--allow-net", "--cert"])
        .arg(&server.cert_path)
        .arg(tracer_testkit::e2e::clients_dir().join("deno_fetch.ts"))
        .arg(server.base_url())
        .env("DENO_DIR", work_dir().join("deno-dir"))
        .env("DENO_NO_UPDATE_CHECK", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", deno.display()))
}

async fn release_deno(mut child: Child) -> Result<(u32, DenoOutcome)> {
    let pid = child.id();
    tokio::task::spawn_blocking(move || {
        let mut stdin = child.stdin.take().context("deno stdin")?;
        stdin.write_all(b"go\n")?;
        drop(stdin);
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .context("deno stdout")?
            .read_to_string(&mut stdout)?;
        let status = child.wait()?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("deno failed ({status}): {err}");
        }
        let line: Value = serde_json::from_str(stdout.trim())
            .with_context(|| format!("deno's output {stdout:?}"))?;
        assert_eq!(line["pid"].as_u64(), Some(pid as u64));
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
    })
    .await?
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
    let receiver = otlp::start_grpc().await?;
    let streams_dir = work_dir().join("deno-streams");
    let _ = std::fs::remove_dir_all(&streams_dir);
    let streams_arg = streams_dir.display().to_string();
    let running = tracer::start(
        tracer_bin(),
        TRACER_NAME,
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--record-streams",
            &streams_arg,
        ],
        &[],
    )?;
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
