//! The kernel programs' own debug messages, through aya-log into the tracer's log: with
//! `AGENT_TRACER_LOG=debug`, a traced program whose received bytes the kernel cannot read
//! (`clients/recv_unreadable.py`) makes the real tracer log why, naming the process; without the
//! variable, the same loss is only counted, and no kernel message appears.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tracer_testkit::e2e::{
    self, clients_dir, require_root, start_traced_with_env, wait_for_log, SERIAL,
};

const WAIT: Duration = Duration::from_secs(30);
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// Serves one HTTP response to one connection, on a thread; returns the port.
fn serve_once() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request)?;
        conn.write_all(RESPONSE)?;
        // Until the client has taken the response and closed.
        let _ = conn.read(&mut request)?;
        Ok(())
    });
    Ok(port)
}

/// Runs the client; returns its pid and the bytes its recv discarded.
async fn unreadable_response() -> Result<(u32, u64)> {
    let port = serve_once()?;
    let mut client = Command::new("python3");
    client
        .arg(clients_dir().join("recv_unreadable.py"))
        .arg(port.to_string());
    let out = e2e::run(client).await?;
    let line = &e2e::json_lines(&out)[0];
    let pid = line["pid"].as_u64().context("pid")? as u32;
    let received = line["received"].as_u64().context("received")?;
    assert_eq!(received, RESPONSE.len() as u64);
    Ok((pid, received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_of_user_memory_is_logged_from_the_kernel_with_debug_on() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let name = "kernel-log-debug";
    let traced =
        start_traced_with_env(tracer_bin(), name, &[], &[("AGENT_TRACER_LOG", "debug")]).await?;
    let (pid, received) = unreadable_response().await?;
    wait_for_log(
        name,
        &[
            // The programs' messages come under their own target.
            "DEBUG tracer_ebpf::report:",
            &format!("pid {pid} "),
            &format!("a call lost {received} bytes unreadable (error -14)"),
        ],
        WAIT,
    )
    .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(stopped.counter("kernel_read_failed_bytes")? >= received);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_variable_the_loss_is_only_counted() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    // What the tracer's default filter gives the programs (info), whatever this test runs under.
    let traced = start_traced_with_env(
        tracer_bin(),
        "kernel-log-off",
        &[],
        &[("AGENT_TRACER_LOG", "info")],
    )
    .await?;
    let (_, received) = unreadable_response().await?;
    // The counters are read at stop: by then the kernel has long run the path that failed.
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.counter("kernel_read_failed_bytes")? >= received,
        "the loss happened and was counted: {:?}",
        stopped.counters()?
    );
    assert!(
        !stopped.stderr.contains("tracer_ebpf::") && !stopped.stderr.contains("a call lost"),
        "a kernel message with the messages off:\n{}",
        stopped.stderr
    );
    Ok(())
}
