//! MCP end to end: a real MCP server (the official `mcp` SDK) and the official client SDK calling
//! two tools, one of which fails, over Streamable HTTP on 127.0.0.1 and over stdio (the client
//! spawns the server with pipes). Every JSON-RPC request of the client becomes a span per the MCP
//! conventions; the session id never leaves the process.

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
    otlp::{as_int, as_str, ReceivedSpan},
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sdk_tools_over_stdio() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let traced = start_traced(
        Path::new(env!("CARGO_BIN_EXE_agent-tracer")),
        "mcp-stdio",
        &["--capture-content"],
    )
    .await?;
    // The SDK's stdio_client spawns server.py with its stdin and stdout on pipes; the server
    // prints its pid to stderr, which the client passes through.
    let out = e2e::run({
        let mut c = Command::new(&python);
        c.arg(clients_dir().join("mcp/client.py")).arg("--stdio");
        c
    })
    .await?;
    // Another process whose stdin and stdout are pipes, carrying lines that are not JSON-RPC:
    // the kernel looks at its first read and write and copies nothing of it.
    let plain = e2e::run({
        let mut c = Command::new(&python);
        c.args([
            "-c",
            "import subprocess, sys\n\
             p = subprocess.Popen(['cat'], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n\
             out, _ = p.communicate(b'not json-rpc\\n' * 1000)\n\
             assert len(out) == 13000\n\
             print(p.pid)",
        ]);
        c
    })
    .await?;
    let client: Value = e2e::json_lines(&out)
        .into_iter()
        .next()
        .context("client output")?;
    assert_eq!(client["weather"], "It is sunny in Paris.");
    assert_eq!(client["failed_is_error"], true);
    let client_pid = client["pid"].as_u64().context("pid")? as i64;
    let server_pid: u32 = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("mcp stdio server pid "))
        .context("the server prints its pid")?
        .trim()
        .parse()?;
    let cat_pid: u32 = String::from_utf8_lossy(&plain.stdout).trim().parse()?;
    let spans = traced
        .receiver
        .wait_for("the server's MCP calls", Duration::from_secs(30), |s| {
            of_pid(s, server_pid)
                .iter()
                .filter(|s| s.span.name.starts_with("tools/call"))
                .count()
                >= 2
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    // The calls are seen on the server's stdin and stdout: its spans, its client as its parent.
    let mine = of_pid(&spans, server_pid);
    let names: Vec<&str> = mine.iter().map(|s| s.span.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "initialize",
            "tools/list",
            "tools/call get_weather",
            "tools/call fail_always"
        ]
    );
    for (span, id) in mine.iter().zip(["1", "2", "3", "4"]) {
        let name = &span.span.name;
        assert_eq!(span.span.kind, 3, "{name}: CLIENT");
        assert_eq!(
            as_int(span.resource_attr("process.parent_pid")),
            Some(client_pid),
            "{name}"
        );
        assert!(
            as_str(span.resource_attr("process.command_line"))
                .is_some_and(|c| c.contains("server.py stdio")),
            "{name}"
        );
        assert_eq!(as_str(span.attr("jsonrpc.request.id")), Some(id), "{name}");
        assert_eq!(
            as_str(span.attr("network.transport")),
            Some("pipe"),
            "{name}"
        );
        assert_eq!(
            as_str(span.attr("mcp.protocol.version")),
            client["protocol_version"].as_str(),
            "{name}"
        );
        for http in [
            "network.protocol.name",
            "http.request.method",
            "url.path",
            "server.address",
            "mcp.session.id",
        ] {
            assert_eq!(span.attr(http), None, "{name}: {http}");
        }
        assert!(
            span.span.end_time_unix_nano > span.span.start_time_unix_nano,
            "{name}: a duration"
        );
    }
    assert_eq!(as_str(mine[0].attr("mcp.method.name")), Some("initialize"));
    assert_eq!(mine[0].attr("gen_ai.operation.name"), None);
    assert_eq!(as_str(mine[1].attr("mcp.method.name")), Some("tools/list"));

    let weather = &mine[2];
    assert_eq!(as_str(weather.attr("mcp.method.name")), Some("tools/call"));
    assert_eq!(
        as_str(weather.attr("gen_ai.operation.name")),
        Some("execute_tool")
    );
    assert_eq!(
        as_str(weather.attr("gen_ai.tool.name")),
        Some("get_weather")
    );
    assert_eq!(
        as_str(weather.attr("gen_ai.tool.call.arguments")),
        Some(r#"{"city":"Paris"}"#)
    );
    assert_eq!(
        as_str(weather.attr("gen_ai.tool.call.result")),
        Some(r#"{"result":"It is sunny in Paris."}"#)
    );
    assert_eq!(weather.attr("error.type"), None);
    assert_eq!(
        weather.span.status.as_ref().map(|s| s.code),
        Some(0),
        "UNSET"
    );

    let failed = &mine[3];
    assert_eq!(as_str(failed.attr("gen_ai.tool.name")), Some("fail_always"));
    assert_eq!(
        as_str(failed.attr("gen_ai.tool.call.arguments")),
        Some(r#"{"reason":"testing"}"#)
    );
    assert_eq!(as_str(failed.attr("error.type")), Some("tool_error"));
    assert_eq!(failed.attr("rpc.response.status_code"), None);
    assert_eq!(
        failed.span.status.as_ref().map(|s| s.code),
        Some(2),
        "ERROR status"
    );

    // Both directions of the server's stdio were one stream each; the client made no span.
    let ingress = e2e::recorded(&traced.record_dir, server_pid, "ingress");
    assert!(contains(&ingress, br#""method":"tools/call""#));
    let egress = e2e::recorded(&traced.record_dir, server_pid, "egress");
    assert!(contains(&egress, br#""isError":true"#));
    assert!(of_pid(&spans, client_pid as u32).is_empty());
    // The plain pipe was dropped in the kernel: not a byte of it reached userspace.
    assert!(e2e::recorded(&traced.record_dir, cat_pid, "ingress").is_empty());
    assert!(e2e::recorded(&traced.record_dir, cat_pid, "egress").is_empty());
    assert!(of_pid(&spans, cat_pid).is_empty());
    // At least cat's stdin and stdout were looked at and let go; of all the stdio on the host
    // (every program's is looked at when it starts), only the server's was copied.
    assert!(
        stopped.counter("kernel_ignored_stdio")? >= 2,
        "{}",
        stopped.summary
    );
    let stdio_streams: Vec<String> = std::fs::read_dir(&traced.record_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-stdio"))
        .collect();
    assert_eq!(
        stdio_streams.len(),
        2,
        "the server's stdin and stdout only: {stdio_streams:?}"
    );
    assert!(
        stdio_streams
            .iter()
            .all(|n| n.starts_with(&format!("{server_pid}-stdio0-"))),
        "{stdio_streams:?}"
    );
    Ok(())
}
