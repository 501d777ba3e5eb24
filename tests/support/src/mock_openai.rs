//! An OpenAI-compatible Chat Completions server over HTTPS on 127.0.0.1, built on rustls, so the
//! tracer's OpenSSL hooks never see its side of the traffic.
//!
//! Behaviour is chosen by the request's `model`:
//! - `rate-limited`: 429 with OpenAI's error body;
//! - `hang`: never answers (for processes that die mid-request);
//! - `cut-stream` with `"stream": true`: the stream's first events, then the connection is
//!   closed before the usage chunk and `[DONE]` (a server or proxy failing mid-answer);
//! - anything else with `"stream": true`: an SSE stream with a tool call and, when asked, usage;
//! - anything else: a JSON completion, gzip-compressed when the client accepts gzip.
//!
//! Streams behave as real servers' do in the ways that matter to a tracer: each event is
//! flushed on its own (its own TLS record, `STREAM_EVENT_GAP` after the previous one), and the
//! body's end (the last chunk `0\r\n\r\n`, or HTTP/2's END_STREAM) follows the terminal event
//! after another gap, in a record of its own. Clients that stop reading at the terminal event
//! (the openai SDK does) never read that end.
//!
//! Every response carries a `set-cookie` whose value must never reach exported telemetry.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

pub const COOKIE_SECRET: &str = "mock-session-cookie-value-7f3a";
pub const RESPONSE_MODEL: &str = "gpt-4o-mini-2024-07-18";
/// Gap between streamed events, so time to first chunk differs measurably from the duration.
pub const STREAM_EVENT_GAP: Duration = Duration::from_millis(30);
/// The `model` whose stream the mock cuts before its terminal event.
pub const CUT_STREAM_MODEL: &str = "cut-stream";

#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub path: String,
    /// Body bytes as received (after transfer decoding).
    pub body_len: usize,
    pub model: Option<String>,
    pub stream: bool,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    /// What a scripted agent loop (mock_agents.rs) answered, when this was one of its calls.
    pub served: Option<crate::mock_agents::ServedCall>,
}

pub struct MockOpenAi {
    pub addr: SocketAddr,
    /// False for the plain-HTTP variant.
    pub tls: bool,
    /// PEM of the server's self-signed certificate, for the client's trust store.
    pub cert_path: PathBuf,
    pub requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockOpenAi {
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/v1", self.addr.port())
    }

    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the server on an ephemeral port; its certificate is written under `cert_dir`.
pub async fn start(cert_dir: &std::path::Path) -> Result<MockOpenAi> {
    start_on("127.0.0.1:0", cert_dir).await
}

/// The same API over plain HTTP (local model servers and gateways speak it that way).
pub async fn start_plain() -> Result<MockOpenAi> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the mock server")?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let shared = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let requests = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, requests.clone()));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(MockOpenAi {
        addr,
        tls: false,
        cert_path: PathBuf::new(),
        requests,
        task,
    })
}

pub async fn start_on(addr: &str, cert_dir: &std::path::Path) -> Result<MockOpenAi> {
    let cert = crate::tls::self_signed()?;
    std::fs::create_dir_all(cert_dir)?;
    let listener = TcpListener::bind(addr)
        .await
        .context("binding the mock server")?;
    let addr = listener.local_addr()?;
    let cert_path = cert_dir.join(format!("mock-openai-{}.pem", addr.port()));
    cert.write_pem(&cert_path)?;
    let acceptor = TlsAcceptor::from(cert.server_config.clone());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let shared = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let requests = shared.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| handle(req, requests.clone()));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(MockOpenAi {
        addr,
        tls: true,
        cert_path,
        requests,
        task,
    })
}

/// The same API over HTTP/2 or HTTP/1.1 on TLS: ALPN offers `h2` first, so clients that speak
/// HTTP/2 (curl, Go's net/http) choose it.
pub async fn start_h2(cert_dir: &std::path::Path) -> Result<MockOpenAi> {
    let cert = crate::tls::self_signed()?;
    std::fs::create_dir_all(cert_dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the mock server")?;
    let addr = listener.local_addr()?;
    let cert_path = cert_dir.join(format!("mock-openai-h2-{}.pem", addr.port()));
    cert.write_pem(&cert_path)?;
    let mut config = (*cert.server_config).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    Ok(serve_auto(listener, addr, Some(acceptor), cert_path))
}

/// The same API over HTTP/2 with prior knowledge (h2c) or HTTP/1.1 on a plain socket: the
/// client's first bytes choose.
pub async fn start_h2c() -> Result<MockOpenAi> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the mock server")?;
    let addr = listener.local_addr()?;
    Ok(serve_auto(listener, addr, None, PathBuf::new()))
}

/// The same API over plain HTTP/1.1, where a request asking `Upgrade: h2c` (RFC 7540 §3.2) is
/// answered `101 Switching Protocols` and then in HTTP/2 frames on stream 1, as curl's
/// `--http2` on an `http://` URL asks. Requests that do not ask are answered in HTTP/1.1, and
/// so are all of them when `upgrade` is false (a server that ignores the header, as most do).
///
/// Neither hyper nor h2 does this upgrade (h2's server cannot adopt a stream it did not read),
/// so after hyper's 101 the HTTP/2 side is written here by hand: the server's SETTINGS, then,
/// once the client's preface arrived, stream 1's response as HEADERS (HPACK by loona-hpack) and
/// DATA frames as the body streams; client SETTINGS are acknowledged and PINGs answered until
/// the client goes away.
pub async fn start_h2c_upgrade(upgrade: bool) -> Result<MockOpenAi> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the mock server")?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let shared = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let requests = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    crate::h2c_upgrade::handle(req, requests.clone(), upgrade)
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(MockOpenAi {
        addr,
        tls: false,
        cert_path: PathBuf::new(),
        requests,
        task,
    })
}

/// Serves `handle` with hyper's protocol-detecting builder, over TLS when given an acceptor.
fn serve_auto(
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    cert_path: PathBuf,
) -> MockOpenAi {
    let tls = acceptor.is_some();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let shared = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let requests = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, requests.clone()));
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        builder.serve_connection(TokioIo::new(tls), service).await
                    }
                    None => builder.serve_connection(TokioIo::new(tcp), service).await,
                };
            });
        }
    });
    MockOpenAi {
        addr,
        tls,
        cert_path,
        requests,
        task,
    }
}

/// A response body. Its error ends a streamed body early: hyper then closes the connection
/// without the body's end, as a server failing mid-answer does.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// A body frame of a stream, or the failure that cuts the stream there.
pub(crate) type StreamFrame = Result<Frame<Bytes>, std::io::Error>;

/// The error that cuts a mock stream.
pub(crate) fn cut() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the mock cut the stream",
    )
}

/// A whole body.
pub(crate) fn whole(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from `frames`: each sent (and flushed: hyper flushes while the next one is
/// pending) `STREAM_EVENT_GAP` after the previous, and the body's end one gap after the last,
/// so it comes in a write of its own, as from real servers.
pub(crate) fn streamed_body(frames: Vec<StreamFrame>) -> Body {
    let (tx, rx) = mpsc::channel::<StreamFrame>(16);
    tokio::spawn(async move {
        for frame in frames {
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() || failed {
                return;
            }
            tokio::time::sleep(STREAM_EVENT_GAP).await;
        }
    });
    StreamBody::new(ReceiverStream::new(rx)).boxed()
}

pub(crate) fn full(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    gzip: bool,
) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header(
            "set-cookie",
            format!("session={COOKIE_SECRET}; Path=/; HttpOnly"),
        )
        .header("x-request-id", "req_mock_1");
    let body = if gzip {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = e.write_all(&body);
        builder = builder.header("content-encoding", "gzip");
        e.finish().unwrap_or_default()
    } else {
        body
    };
    builder
        .body(whole(body))
        .unwrap_or_else(|_| Response::new(whole(Bytes::new())))
}

pub(crate) async fn handle(
    req: Request<hyper::body::Incoming>,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
) -> Result<Response<Body>, Infallible> {
    // The Responses API over a WebSocket (Codex CLI's default transport).
    if crate::responses_loop::is_websocket_upgrade(&req) {
        return Ok(crate::responses_loop::accept_websocket(req, requests));
    }
    let path = req.uri().path().to_string();
    let accepts_gzip = req
        .headers()
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "text/plain",
                b"bad body".to_vec(),
                false,
            ))
        }
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = json
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    let stream = json.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // Real agents' tool loops (mock_agents.rs), recognised by their User-Agent.
    let scripted = crate::mock_agents::respond(&path, user_agent.as_deref(), &json);
    if let Ok(mut r) = requests.lock() {
        r.push(ReceivedRequest {
            path: path.clone(),
            body_len: body.len(),
            model: model.clone(),
            stream,
            authorization,
            user_agent,
            served: scripted.as_ref().and_then(|s| s.served.clone()),
        });
    }
    if let Some(scripted) = scripted {
        return Ok(scripted.response);
    }
    // Codex CLI's scripted tool loop over SSE (responses_loop.rs).
    if path.ends_with("/responses") && model.as_deref() == Some(crate::responses_loop::LOOP_MODEL) {
        return Ok(crate::responses_loop::sse(&json, body.len()));
    }
    // Other providers' APIs on the same server (mock_providers.rs).
    if let Some(response) = crate::mock_providers::respond(&path, &json, accepts_gzip) {
        return Ok(response);
    }
    // A plain JSON API an agent's tool calls (not a model).
    if path.starts_with("/tool/") {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            json!({"tool": path.trim_start_matches("/tool/"), "value": 42})
                .to_string()
                .into_bytes(),
            false,
        ));
    }
    if !path.ends_with("/chat/completions") {
        return Ok(full(StatusCode::NOT_FOUND, "application/json", br#"{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}"#.to_vec(), false));
    }
    match model.as_deref() {
        Some("rate-limited") => Ok(full(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                             "param": null, "code": "rate_limit_exceeded"}})
            .to_string()
            .into_bytes(),
            false,
        )),
        Some("hang") => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(full(
                StatusCode::GATEWAY_TIMEOUT,
                "text/plain",
                Vec::new(),
                false,
            ))
        }
        Some("agent-loop") => Ok(full(
            StatusCode::OK,
            "application/json",
            agent_step(&json, body.len()).to_string().into_bytes(),
            false,
        )),
        Some("agent-stuck") => Ok(full(
            StatusCode::OK,
            "application/json",
            stuck_step(&json, body.len()).to_string().into_bytes(),
            false,
        )),
        _ if stream => Ok(stream_response(&json)),
        _ => Ok(full(
            StatusCode::OK,
            "application/json",
            completion(&json, body.len()).to_string().into_bytes(),
            accepts_gzip,
        )),
    }
}

/// Prompt tokens the mock reports for a request body of `body_len` bytes (~4 bytes a token).
pub fn prompt_tokens_for(body_len: usize) -> i64 {
    (body_len / 4) as i64
}

fn completion(request: &Value, body_len: usize) -> Value {
    json!({
        "id": "chatcmpl-mock-nonstream",
        "object": "chat.completion",
        "created": 1727346182,
        "model": RESPONSE_MODEL,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
            "message": {"role": "assistant", "content": "Hello from the mock.", "refusal": null}}],
        "usage": {"prompt_tokens": prompt_tokens_for(body_len), "completion_tokens": 5,
                  "total_tokens": prompt_tokens_for(body_len) + 5,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
        "echo_model": request.get("model"),
    })
}

/// The command the `agent-loop` model asks its `run_task` tool to run, and the tool-call id.
pub const AGENT_TOOL_COMMAND: &str = "echo agent-step; exit 3";
pub const AGENT_TOOL_CALL_ID: &str = "call_agent_task_1";

/// A scripted agent turn: a request without tool results asks for `run_task`; one carrying its
/// result gets the final answer.
fn agent_step(request: &Value, body_len: usize) -> Value {
    let answered = request
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let (message, finish, id) = if answered {
        (
            json!({"role": "assistant", "content": "The task ran.", "refusal": null}),
            "stop",
            "chatcmpl-agent-final",
        )
    } else {
        (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": AGENT_TOOL_CALL_ID, "type": "function", "function": {"name": "run_task",
                 "arguments": json!({"cmd": AGENT_TOOL_COMMAND}).to_string()}}]}),
            "tool_calls",
            "chatcmpl-agent-tool",
        )
    };
    json!({
        "id": id,
        "object": "chat.completion",
        "created": 1727346182,
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": null, "message": message}],
        "usage": {"prompt_tokens": prompt_tokens_for(body_len), "completion_tokens": 7,
                  "total_tokens": prompt_tokens_for(body_len) + 7},
    })
}

/// Tool answers after which the `agent-stuck` model gives up and answers.
pub const STUCK_REPEATS: usize = 3;

/// A model stuck in a loop: it asks for the same `run_task` call (name and arguments; a new
/// call id each time) until `STUCK_REPEATS` tool answers are in the conversation. It answers as
/// `agent-stuck`, a model no price table names.
fn stuck_step(request: &Value, body_len: usize) -> Value {
    let answers = request
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
    let (message, finish) = if answers >= STUCK_REPEATS {
        (
            json!({"role": "assistant", "content": "Giving up.", "refusal": null}),
            "stop",
        )
    } else {
        (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": format!("call_stuck_{answers}"), "type": "function", "function": {
                 "name": "run_task", "arguments": json!({"cmd": "echo still-stuck"}).to_string()}}]}),
            "tool_calls",
        )
    };
    json!({
        "id": format!("chatcmpl-stuck-{answers}"),
        "object": "chat.completion",
        "created": 1727346182,
        // A model no price table names (a gateway's own, say): its calls have no cost.
        "model": "agent-stuck",
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": null, "message": message}],
        "usage": {"prompt_tokens": prompt_tokens_for(body_len), "completion_tokens": 9,
                  "total_tokens": prompt_tokens_for(body_len) + 9},
    })
}

fn stream_response(request: &Value) -> Response<Body> {
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-mock-stream", "object": "chat.completion.chunk", "created": 1727346182,
               "model": RESPONSE_MODEL, "system_fingerprint": "fp_mock", "choices": choices, "usage": usage})
    };
    let mut events = vec![
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": "call_mock_weather", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
            Value::Null,
        ),
    ];
    if include_usage {
        events.push(chunk(json!([]), json!({"prompt_tokens": 57, "completion_tokens": 17, "total_tokens": 74,
            "prompt_tokens_details": {"cached_tokens": 32}, "completion_tokens_details": {"reasoning_tokens": 0}})));
    }
    let cut_early = request.get("model").and_then(Value::as_str) == Some(CUT_STREAM_MODEL);
    let mut frames: Vec<StreamFrame> = events
        .iter()
        .map(|event| Ok(Frame::data(Bytes::from(format!("data: {event}\n\n")))))
        .collect();
    if cut_early {
        // The tool call's first fragments, then the connection drops.
        frames.truncate(2);
        frames.push(Err(cut()));
    } else {
        frames.push(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))));
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("set-cookie", format!("session={COOKIE_SECRET}; Path=/"))
        .body(streamed_body(frames))
        .unwrap_or_else(|_| Response::new(whole(Bytes::new())))
}
