//! MCP end to end: a real MCP server (the official `mcp` SDK, Streamable HTTP on 127.0.0.1) and
//! the official client SDK calling two tools, one of which fails. Every JSON-RPC request of the
//! client becomes a span per the MCP conventions; the session id never leaves the process.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tracer_testkit::{
    e2e::{
        self, clients_dir, contains, free_port, of_pid, require_root, start_listening,
        start_traced, SERIAL,
    },
    otlp::{as_str, ReceivedSpan},
    python,
};

fn find<'a>(spans: &'a [ReceivedSpan], name: &str) -> Result<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span.name == name).with_context(|| {
        format!(
            "no span {name:?} in {:?}",
            spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sdk_tools_over_streamable_http() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let port = free_port()?;
    let server_log = tracer_testkit::target_dir().join("e2e-logs/mcp-server.log");
    let server = start_listening(
        {
            let mut c = Command::new(&python);
            c.arg(clients_dir().join("mcp/server.py"))
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&server_log)?);
            c
        },
        port,
    )
    .await?;

    let traced = start_traced(
        Path::new(env!("CARGO_BIN_EXE_agent-tracer")),
        "mcp",
        &["--capture-content"],
    )
    .await?;
    let out = e2e::run({
        let mut c = Command::new(&python);
        c.arg(clients_dir().join("mcp/client.py"))
            .arg(format!("http://127.0.0.1:{port}/mcp"));
        c
    })
    .await?;
    let client: Value = e2e::json_lines(&out)
        .into_iter()
        .next()
        .context("client output")?;
    assert_eq!(client["weather"], "It is sunny in Paris.");
    assert_eq!(client["failed_is_error"], true);
    let pid = client["pid"].as_u64().context("pid")? as u32;
    let spans = traced
        .receiver
        .wait_for("the client's MCP requests", Duration::from_secs(30), |s| {
            of_pid(s, pid)
                .iter()
                .filter(|s| s.span.name.starts_with("tools/call"))
                .count()
                >= 2
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(server);

    let mine = of_pid(&spans, pid);
    let init = find(&mine, "initialize")?;
    assert_eq!(as_str(init.attr("mcp.method.name")), Some("initialize"));
    assert_eq!(
        as_str(init.attr("mcp.protocol.version")),
        client["protocol_version"].as_str()
    );
    find(&mine, "tools/list")?;

    let weather = find(&mine, "tools/call get_weather")?;
    assert_eq!(weather.span.kind, 3, "CLIENT");
    assert_eq!(
        as_str(weather.attr("gen_ai.operation.name")),
        Some("execute_tool")
    );
    assert_eq!(
        as_str(weather.attr("gen_ai.tool.name")),
        Some("get_weather")
    );
    assert_eq!(
        as_str(weather.attr("openinference.span.kind")),
        Some("TOOL")
    );
    assert!(as_str(weather.attr("jsonrpc.request.id")).is_some());
    assert_eq!(weather.attr("error.type"), None);
    assert_eq!(
        as_str(weather.attr("gen_ai.tool.call.arguments")),
        Some(r#"{"city":"Paris"}"#)
    );
    assert!(as_str(weather.attr("gen_ai.tool.call.result"))
        .is_some_and(|r| r.contains("It is sunny in Paris.")));

    let failed = find(&mine, "tools/call fail_always")?;
    assert_eq!(as_str(failed.attr("error.type")), Some("tool_error"));
    assert_eq!(
        failed.span.status.as_ref().map(|s| s.code),
        Some(2),
        "ERROR status"
    );

    // The session id is a bearer-like handle: never exported.
    let log = std::fs::read_to_string(&server_log)?;
    let session = log
        .lines()
        .find_map(|l| l.split("Terminating session: ").nth(1))
        .map(str::trim)
        .context("the server logs its session id")?;
    assert!(
        !contains(&traced.receiver.raw_bytes(), session.as_bytes()),
        "Mcp-Session-Id was exported"
    );
    Ok(())
}
