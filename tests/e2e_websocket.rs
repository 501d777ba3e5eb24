//! The Responses API over a WebSocket (as Codex CLI streams it), end to end: the real
//! `websockets` library on both sides, permessage-deflate negotiated (its default), plain ws://
//! on 127.0.0.1 so the socket tracepoints capture it.

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
    otlp::{as_int, as_str, as_strs},
    python,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_over_a_deflated_websocket() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let port = free_port()?;
    let _server = start_listening(
        {
            let mut c = Command::new(&python);
            c.arg(clients_dir().join("ws_responses.py"))
                .args(["server", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        },
        port,
    )
    .await?;
    let traced = start_traced(
        Path::new(env!("CARGO_BIN_EXE_agent-tracer")),
        "websocket",
        &[],
    )
    .await?;
    let out = e2e::run({
        let mut c = Command::new(&python);
        c.arg(clients_dir().join("ws_responses.py"))
            .args(["client", &format!("ws://127.0.0.1:{port}/v1/responses")]);
        c
    })
    .await?;
    let client: Value = e2e::json_lines(&out)
        .into_iter()
        .next()
        .context("client output")?;
    assert_eq!(client["calls"][0], "call_ws_1");
    let pid = client["pid"].as_u64().context("pid")? as u32;
    let spans = traced
        .receiver
        .wait_for("the WebSocket call", Duration::from_secs(30), |s| {
            !of_pid(s, pid).is_empty()
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 1, "one call: {mine:#?}");
    let span = &mine[0];
    assert_eq!(span.span.name, "chat gpt-5.4");
    assert_eq!(as_str(span.attr("openai.api.type")), Some("responses"));
    assert_eq!(as_str(span.attr("gen_ai.response.id")), Some("resp_ws_1"));
    assert_eq!(
        as_str(span.attr("gen_ai.response.model")),
        Some("gpt-5.4-2026")
    );
    assert_eq!(
        as_strs(span.attr("gen_ai.response.finish_reasons")),
        Some(vec!["tool_call".to_string()])
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.input_tokens")), Some(321));
    assert_eq!(
        as_int(span.attr("gen_ai.usage.cache_read.input_tokens")),
        Some(300)
    );
    assert_eq!(as_int(span.attr("gen_ai.usage.output_tokens")), Some(45));
    assert_eq!(
        as_strs(span.attr("agent_tracer.response.tool_call.ids")),
        Some(vec!["call_ws_1".to_string()])
    );
    assert_eq!(as_int(span.attr("server.port")), Some(port as i64));
    assert!(span.attr("gen_ai.response.time_to_first_chunk").is_some());
    assert!(!contains(&traced.receiver.raw_bytes(), b"sk-ws-secret-77"));
    Ok(())
}
