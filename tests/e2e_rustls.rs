//! End-to-end for rustls in stripped Rust binaries: a client on rustls (tests/clients/rustls,
//! built here from crates.io, in release, stripped, in two optimisation levels) POSTs JSON over
//! HTTPS to the local OpenAI-compatible server while the real agent-tracer binary runs. The
//! tracer must locate aws-lc's AEAD seal/open without symbols (the same code for both builds),
//! reassemble the TLS records it sees there into the byte streams, and export the call as a
//! GenAI span; the recorded plaintext must be exactly what the client wrote and read.

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
    otlp::as_int,
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
fn spawn_client(binary: &Path, server: &MockOpenAi) -> Result<HeldClient> {
    let mut command = Command::new(binary);
    command
        .arg(server.base_url())
        .arg("--wait-stdin")
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

    let Traced {
        receiver,
        tracer: running,
        record_dir: streams_dir,
    } = start_traced_with(tracer_bin(), TRACER_NAME, &TraceOptions::default()).await?;
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

/// Deno `version` from the npm registry (the package Deno's own npm installer uses), unpacked
/// under the test's work directory once.
fn install_deno(version: &str) -> Result<PathBuf> {
    let dir = work_dir().join(format!("deno-{version}"));
    let binary = dir.join("node_modules/@deno/linux-x64-glibc/deno");
    if !binary.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("package.json"), "{}")?;
        let output = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
            ])
            .arg(format!("@deno/linux-x64-glibc@{version}"))
            .current_dir(&dir)
            .output()
            .context("running npm (install Node.js and npm)")?;
        if !output.status.success() {
            bail!(
                "npm install of deno {version} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    let binary = std::fs::canonicalize(binary)?;
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
    let denos = [install_deno("2.9.6")?, install_deno("2.5.6")?];
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
