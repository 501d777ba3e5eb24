//! End-to-end capture across the ways agents talk: node (static OpenSSL), curl (libssl, and
//! plain HTTP), Python over plain HTTP with a process already running before the tracer, a
//! client inside a PID namespace and a container-named cgroup, a 16 MiB body, and a ring buffer
//! too small for the traffic. Each asserts the exact request and response the tracer captured,
//! and that the client's own behaviour is unchanged by it.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{
        self, clients_dir, contains, of_pid, recorded, require_root, start_traced,
        start_traced_with_env, without_pid, SERIAL,
    },
    mock_openai::{self, MockOpenAi},
    otlp::{as_int, as_str, ReceivedSpan},
};

const WAIT: Duration = Duration::from_secs(30);

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn python() -> Command {
    Command::new("python3")
}

fn http_post(server: &MockOpenAi, extra: &[&str]) -> Command {
    let mut c = python();
    c.arg(clients_dir().join("http_post.py"))
        .arg(format!("{}/chat/completions", server.base_url()))
        .args(extra)
        .env("SSL_CERT_FILE", &server.cert_path);
    c
}

/// The span of the one call a client made, after checking what every captured call must show.
fn the_call(spans: &[ReceivedSpan], pid: u32, body_len: usize, status: i64) -> ReceivedSpan {
    let mine = of_pid(spans, pid);
    assert_eq!(mine.len(), 1, "one call, one span: {mine:#?}");
    let span = mine[0].clone();
    assert_eq!(as_str(span.attr("http.request.method")), Some("POST"));
    assert_eq!(as_str(span.attr("url.path")), Some("/v1/chat/completions"));
    assert_eq!(as_int(span.attr("http.response.status_code")), Some(status));
    assert_eq!(
        as_int(span.attr("http.request.body.size")),
        Some(body_len as i64)
    );
    span
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_over_https_through_its_static_openssl() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let node = || {
        let mut c = Command::new("node");
        c.arg(clients_dir().join("node_fetch.mjs"))
            .arg(server.base_url())
            .env("NODE_EXTRA_CA_CERTS", &server.cert_path);
        c
    };
    let untraced = e2e::json_lines(&e2e::run(node()).await?);

    let traced = start_traced(tracer_bin(), "node", &[]).await?;
    let out = e2e::json_lines(&e2e::run(node()).await?);
    assert_eq!(
        without_pid(&out),
        without_pid(&untraced),
        "node's output is unchanged by the tracer"
    );
    let pid = out[0]["pid"].as_u64().context("pid")? as u32;
    let spans = traced
        .receiver
        .wait_for("node's call", WAIT, |s| !of_pid(s, pid).is_empty())
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let received = server.received();
    let span = the_call(&spans, pid, received[1].body_len, 200);
    assert_eq!(
        as_str(span.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-nonstream")
    );
    assert_eq!(
        as_str(span.resource_attr("process.executable.name")),
        Some("node")
    );
    let request_body = out[0]["request_body"].as_str().context("request body")?;
    let response_body = out[0]["body"].as_str().context("response body")?;
    assert!(contains(
        &recorded(&traced.record_dir, pid, "egress"),
        request_body.as_bytes()
    ));
    assert!(contains(
        &recorded(&traced.record_dir, pid, "ingress"),
        response_body.as_bytes()
    ));
    assert!(!contains(&traced.receiver.raw_bytes(), b"sk-node-secret"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_https_and_over_plain_http() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    curl_calls_exported_byte_exact("curl", None).await
}

/// The syscall hook paths a kernel falls back to (`capture/compat.rs`), each forced in turn
/// and held to the same byte-exact capture as the path this kernel picks (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_each_fallback_syscall_hook_path() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    for path in ["raw_tp", "tracepoints"] {
        curl_calls_exported_byte_exact(&format!("curl-{path}"), Some(path)).await?;
    }
    Ok(())
}

/// curl's HTTPS call (libssl hooks, linked to its socket) and plain-HTTP call (socket capture
/// alone), each exported with its bytes as sent and received; `hooks` forces a syscall path.
async fn curl_calls_exported_byte_exact(name: &str, hooks: Option<&str>) -> Result<()> {
    let tls = mock_openai::start(&e2e::certs_dir()).await?;
    let plain = mock_openai::start_plain().await?;
    let body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from curl"}]}"#;
    let curl = |server: &MockOpenAi| {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--http1.1",
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ]);
        if server.tls {
            c.arg("--cacert").arg(&server.cert_path);
        }
        c.arg(format!("{}/chat/completions", server.base_url()));
        c
    };
    let untraced = [
        e2e::run(curl(&tls)).await?.stdout,
        e2e::run(curl(&plain)).await?.stdout,
    ];

    let envs: Vec<(&str, &str)> = hooks
        .map(|h| ("AGENT_TRACER_SYSCALL_HOOKS", h))
        .into_iter()
        .collect();
    let traced = start_traced_with_env(tracer_bin(), name, &[], &envs).await?;
    let mut pids = Vec::new();
    for (i, server) in [&tls, &plain].into_iter().enumerate() {
        let child = curl(server).stdout(Stdio::piped()).spawn()?;
        let pid = child.id();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        assert!(out.status.success());
        assert_eq!(
            out.stdout, untraced[i],
            "curl's output is unchanged by the tracer"
        );
        pids.push((pid, out.stdout));
    }
    let spans = traced
        .receiver
        .wait_for("both curl calls", WAIT, |s| {
            pids.iter().all(|(pid, _)| !of_pid(s, *pid).is_empty())
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    if let Some(path) = hooks {
        let hooked = stopped
            .stderr
            .lines()
            .find_map(|l| l.split("syscalls hooked by ").nth(1))
            .unwrap_or_default();
        let expected = match path {
            "tracepoints" => "syscalls:sys_enter_*",
            other => other,
        };
        assert!(
            hooked.starts_with(expected),
            "forced onto {path}, hooked by {hooked:?}"
        );
    }

    for ((pid, response), server) in pids.iter().zip([&tls, &plain]) {
        let span = the_call(&spans, *pid, body.len(), 200);
        assert_eq!(
            as_int(span.attr("server.port")),
            Some(server.addr.port() as i64)
        );
        assert_eq!(as_str(span.attr("server.address")), Some("127.0.0.1"));
        assert!(contains(
            &recorded(&traced.record_dir, *pid, "egress"),
            body.as_bytes()
        ));
        assert!(contains(
            &recorded(&traced.record_dir, *pid, "ingress"),
            response
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_keep_alive_of_a_process_started_before_the_tracer() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start_plain().await?;
    // The client makes its first request and opens its connection before the tracer exists.
    let mut child = http_post(&server, &["--repeat", "3", "--wait-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let first: Value = serde_json::from_str(&line)?;
    assert_eq!(first["status"], 200);

    let traced = start_traced(tracer_bin(), "before", &[]).await?;
    let mut responses = Vec::new();
    for _ in 0..2 {
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        line.clear();
        stdout.read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line)?;
        assert_eq!(v["status"], 200);
        responses.push(v["body"].as_str().context("body")?.to_string());
    }
    drop(stdin);
    assert!(child.wait()?.success());
    let spans = traced
        .receiver
        .wait_for("the two calls made after start-up", WAIT, |s| {
            of_pid(s, pid).len() >= 2
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let mine = of_pid(&spans, pid);
    assert_eq!(
        mine.len(),
        2,
        "the call before start-up is not invented, the two after are seen"
    );
    let received = server.received();
    assert_eq!(received.len(), 3, "one connection carried all three");
    for span in &mine {
        assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
        assert_eq!(
            as_int(span.attr("http.request.body.size")),
            Some(received[1].body_len as i64)
        );
        assert_eq!(
            as_int(span.attr("server.port")),
            Some(server.addr.port() as i64)
        );
    }
    let ingress = recorded(&traced.record_dir, pid, "ingress");
    for body in responses {
        assert!(contains(&ingress, body.as_bytes()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_client_in_a_pid_namespace_and_container_cgroup() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let container_id = format!("{:064x}", 0xa9e7_u128 << 64 | std::process::id() as u128);
    let cgroup = Path::new("/sys/fs/cgroup/unified").join(format!("docker-{container_id}.scope"));
    std::fs::create_dir_all(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;

    let traced = start_traced(tracer_bin(), "namespace", &[]).await?;
    // The shell joins the cgroup, then unshare starts the client as PID 1 of a new namespace.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare -p -f --mount-proc python3 {} {}/chat/completions",
        cgroup.display(),
        clients_dir().join("http_post.py").display(),
        server.base_url()
    );
    let out = e2e::run({
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .env("SSL_CERT_FILE", &server.cert_path);
        c
    })
    .await?;
    let lines = e2e::json_lines(&out);
    let ns_pid = lines[0]["pid"].as_i64().context("pid")?;
    assert_eq!(ns_pid, 1, "the client is PID 1 in its namespace");
    let spans = traced
        .receiver
        .wait_for("the namespaced call", WAIT, |s| {
            s.iter()
                .any(|s| as_str(s.resource_attr("container.id")) == Some(container_id.as_str()))
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let _ = std::fs::remove_dir(&cgroup);

    let span = spans
        .iter()
        .find(|s| as_str(s.resource_attr("container.id")) == Some(container_id.as_str()))
        .context("span")?;
    let host_pid = as_int(span.resource_attr("process.pid")).context("host pid")?;
    assert_ne!(host_pid, ns_pid, "process.pid is the host PID");
    assert_eq!(
        as_int(span.resource_attr("agent_tracer.process.namespace_pid")),
        Some(ns_pid)
    );
    assert_eq!(
        as_str(span.resource_attr("container.runtime")),
        Some("docker")
    );
    assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
    assert!(
        stopped.stdout.contains(&format!(
            "pid {host_pid} (ns pid 1) container {}",
            &container_id[..12]
        )),
        "{}",
        stopped.stdout
    );
    Ok(())
}

const SIXTEEN_MIB: usize = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_request_body_is_captured_byte_exact() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let size = SIXTEEN_MIB.to_string();
    let untraced = e2e::json_lines(&e2e::run(http_post(&server, &["--size", &size])).await?);
    let traced = start_traced(tracer_bin(), "16mib", &[]).await?;
    let out = e2e::run(http_post(&server, &["--size", &size])).await?;
    let lines = e2e::json_lines(&out);
    assert_eq!(
        without_pid(&lines),
        without_pid(&untraced),
        "Python's output is unchanged by the tracer"
    );
    let pid = lines[0]["pid"].as_u64().context("pid")? as u32;
    assert_eq!(lines[0]["request_len"].as_u64(), Some(SIXTEEN_MIB as u64));
    let spans = traced
        .receiver
        .wait_for("the 16 MiB call", WAIT, |s| !of_pid(s, pid).is_empty())
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let span = the_call(&spans, pid, SIXTEEN_MIB, 200);
    assert_eq!(
        span.attr("agent_tracer.capture.bytes_lost"),
        None,
        "{}",
        stopped.stderr
    );
    assert_eq!(
        as_int(span.attr("gen_ai.usage.input_tokens")),
        Some(mock_openai::prompt_tokens_for(SIXTEEN_MIB))
    );
    // Byte-exact: the recorded request body is exactly what the client sent.
    let egress = recorded(&traced.record_dir, pid, "egress");
    let head_end = egress
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("request head")?
        + 4;
    let sent = {
        let empty = r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ""}]}"#;
        let pad = SIXTEEN_MIB - empty.len();
        empty.replace(
            r#""content": """#,
            &format!(r#""content": "{}""#, "x".repeat(pad)),
        )
    };
    assert_eq!(egress.len() - head_end, SIXTEEN_MIB);
    assert!(
        egress[head_end..] == *sent.as_bytes(),
        "the captured body differs from the one sent"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_buffer_overflow_is_reported_and_survived() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    // 256 KiB of ring for a 16 MiB body: most of it cannot fit. The mock server runs in this
    // test's own process, on rustls, whose plaintext the tracer captures too; it is left out so
    // that the flood is the client's alone, as the assertions below assume.
    let me = std::env::current_exe()?.display().to_string();
    let traced = start_traced(
        tracer_bin(),
        "overflow",
        &["--ring-buffer-bytes", "262144", "--exclude-exe", &me],
    )
    .await?;
    // The ring's data pages are mapped once into the reader: RSS counts them once. (Mapped
    // twice, as aya and libbpf map them, a 32 MiB ring showed as 64 MiB of RSS.)
    // (aya-log's own 128 KiB ring is mapped by aya, twice: 4 KiB + 256 KiB, beside ours.)
    let mappings = bpf_map_mapping_sizes(traced.tracer.pid())?;
    assert!(
        mappings.contains(&(4096 + 262144)) && !mappings.contains(&(4096 + 2 * 262144)),
        "{mappings:?}"
    );
    let flood = e2e::run(http_post(&server, &["--size", &SIXTEEN_MIB.to_string()])).await?;
    let pid = e2e::json_lines(&flood)[0]["pid"].as_u64().context("pid")? as u32;
    let spans = traced
        .receiver
        .wait_for("the flooded call", WAIT, |s| !of_pid(s, pid).is_empty())
        .await?;
    // The tracer keeps working: a small call afterwards is complete.
    let after = e2e::run(http_post(&server, &[])).await?;
    let after_pid = e2e::json_lines(&after)[0]["pid"].as_u64().context("pid")? as u32;
    let all = traced
        .receiver
        .wait_for("the call after", WAIT, |s| !of_pid(s, after_pid).is_empty())
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let flooded = &of_pid(&spans, pid)[0];
    let lost = as_int(flooded.attr("agent_tracer.capture.bytes_lost"))
        .context("bytes lost on the span")?;
    assert!(lost > 0 && lost < SIXTEEN_MIB as i64, "lost {lost}");
    assert_eq!(
        as_int(flooded.attr("http.request.body.size")),
        Some(SIXTEEN_MIB as i64)
    );
    assert_eq!(as_int(flooded.attr("http.response.status_code")), Some(200));
    // Non-zero counters only, as the log line lists them.
    let counters = stopped.counters()?;
    assert!(
        counters.contains_key("kernel_ringbuf_full_bytes"),
        "{counters:?}"
    );
    assert!(counters.contains_key("stream_gap_bytes"), "{counters:?}");

    let fine = &of_pid(&all, after_pid)[0];
    assert_eq!(fine.attr("agent_tracer.capture.bytes_lost"), None);
    assert_eq!(
        as_str(fine.attr("gen_ai.response.id")),
        Some("chatcmpl-mock-nonstream")
    );
    Ok(())
}

/// Sizes of the process's mappings of BPF maps (ring buffers' pages), sorted.
fn bpf_map_mapping_sizes(pid: u32) -> Result<Vec<u64>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut sizes = maps
        .lines()
        .filter(|line| line.ends_with("anon_inode:bpf-map"))
        .map(|line| {
            let (start, end) = line
                .split_whitespace()
                .next()
                .and_then(|range| range.split_once('-'))
                .context("address range")?;
            Ok(u64::from_str_radix(end, 16)? - u64::from_str_radix(start, 16)?)
        })
        .collect::<Result<Vec<u64>>>()?;
    sizes.sort_unstable();
    Ok(sizes)
}

/// The programs built for kernels without `bpf_loop` (Linux before 5.17: Amazon Linux 2,
/// Ubuntu 22.04), forced on this kernel: they load and verify here, capture a call within their
/// 256 KiB per-call bound byte-exact, and count what a larger call loses past it. (The kernel
/// matrix, `cargo xtask vmtest`, runs them where the kernel itself lacks the helper.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounded_loop_programs_capture_exactly_up_to_their_bound() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let check = Command::new(tracer_bin())
        .arg("check")
        .env("AGENT_TRACER_LOOPS", "bounded")
        .output()?;
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("loops   bounded loops"),
        "check names the path: {report}"
    );
    let traced = start_traced_with_env(
        tracer_bin(),
        "bounded-loops",
        &[],
        &[("AGENT_TRACER_LOOPS", "bounded")],
    )
    .await?;
    const WITHIN: usize = 250 * 1024;
    const BEYOND: usize = 1 << 20;
    let mut pids = Vec::new();
    for size in [WITHIN, BEYOND] {
        let out = e2e::run(http_post(&server, &["--size", &size.to_string()])).await?;
        let lines = e2e::json_lines(&out);
        pids.push(lines[0]["pid"].as_u64().context("pid")? as u32);
    }
    let spans = traced
        .receiver
        .wait_for("both calls", WAIT, |s| {
            pids.iter().all(|pid| !of_pid(s, *pid).is_empty())
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("kernel programs: bounded loops"),
        "{}",
        stopped.stderr
    );

    let span = the_call(&spans, pids[0], WITHIN, 200);
    assert_eq!(span.attr("agent_tracer.capture.bytes_lost"), None);
    let egress = recorded(&traced.record_dir, pids[0], "egress");
    let head_end = egress
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("request head")?
        + 4;
    assert_eq!(egress.len() - head_end, WITHIN, "the whole body, no more");

    let counters = stopped.counters()?;
    let truncated = counters.get("kernel_truncated_bytes").copied().unwrap_or(0);
    assert!(
        truncated >= (BEYOND - (256 << 10)) as u64,
        "what the 1 MiB call carried past 256 KiB is counted: {counters:?}"
    );
    Ok(())
}
