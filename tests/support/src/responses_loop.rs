//! A scripted Responses API tool loop for Codex CLI, over both of the transports Codex speaks:
//! SSE on `POST /v1/responses`, and a WebSocket on `GET /v1/responses` (its default, with the
//! `openai-beta: responses_websockets=...` header) with permessage-deflate negotiated and
//! context takeover on both sides, as the real server does.
//!
//! Chosen by the request's model, [`LOOP_MODEL`]. What Codex 0.171 sends, read from its requests:
//! the WebSocket first carries a prewarm `response.create` with `"generate": false` (answered
//! with an empty completed response), then one `response.create` per model call, each after the
//! first continuing with `previous_response_id` and only the new input items; its shell tool is
//! `exec_command` with `{"cmd": ...}`. The script: a request whose input holds no
//! `function_call_output` for [`TOOL_CALL_ID`] gets a `function_call` to `exec_command` running
//! [`TOOL_COMMAND`]; one that holds it gets the final text [`FINAL_TEXT`].
//!
//! Every event is sent on its own (its own chunk, WebSocket frame and so TLS record) after
//! [`STREAM_EVENT_GAP`]. Every call served is recorded with the numbers it reported
//! ([`served`]), so a test can compare each span with exactly what the model API said.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hyper::{body::Frame, header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mock_openai::{
    streamed_body, whole, Body, ReceivedRequest, StreamFrame, STREAM_EVENT_GAP,
};

/// The model name that selects this script.
pub const LOOP_MODEL: &str = "codex-loop";
/// What the responses say the model was.
pub const RESPONSE_MODEL: &str = "codex-loop-2026-01-01";
pub const TOOL_NAME: &str = "exec_command";
pub const TOOL_CALL_ID: &str = "call_codex_exec_1";
/// Runs a program besides the shell, so the tool's span has an `exec` of its own to show.
pub const TOOL_COMMAND: &str = "uname -s && echo codex-tool-ran";
pub const FINAL_TEXT: &str = "The command ran: codex-tool-ran.";
pub const OUTPUT_TOKENS: i64 = 19;

/// One model call the mock answered, with what it reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedCall {
    pub response_id: String,
    /// "websocket" or "sse".
    pub transport: &'static str,
    /// A prewarm (`generate: false`): no output.
    pub prewarm: bool,
    /// The call asked for the tool (else it answered with text or nothing).
    pub tool_call: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
}

static SERVED: Mutex<Vec<ServedCall>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Every call served so far by any mock in this process, in order.
pub fn served() -> Vec<ServedCall> {
    SERVED.lock().map(|s| s.clone()).unwrap_or_default()
}

/// The events answering one `response.create` (or POST body) of `body_len` bytes; records the
/// call.
fn answer(request: &Value, body_len: usize, transport: &'static str) -> Vec<Value> {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let id = format!("resp_codex_{n:04}");
    let prewarm = request.get("generate") == Some(&Value::Bool(false));
    let answered = request["input"].as_array().is_some_and(|items| {
        items
            .iter()
            .any(|i| i["type"] == "function_call_output" && i["call_id"] == TOOL_CALL_ID)
    });
    let (input_tokens, cached_tokens, output_tokens) = if prewarm {
        (0, 0, 0)
    } else {
        let input = crate::mock_openai::prompt_tokens_for(body_len);
        (input, input / 2, OUTPUT_TOKENS)
    };
    let tool_call = !prewarm && !answered;
    let item = if tool_call {
        Some(
            json!({"type": "function_call", "id": format!("fc_codex_{n:04}"), "call_id": TOOL_CALL_ID,
            "name": TOOL_NAME, "arguments": json!({"cmd": TOOL_COMMAND}).to_string(), "status": "completed"}),
        )
    } else if !prewarm {
        Some(
            json!({"type": "message", "id": format!("msg_codex_{n:04}"), "role": "assistant",
            "status": "completed", "content": [{"type": "output_text", "text": FINAL_TEXT, "annotations": []}]}),
        )
    } else {
        None
    };
    if let Ok(mut s) = SERVED.lock() {
        s.push(ServedCall {
            response_id: id.clone(),
            transport,
            prewarm,
            tool_call,
            input_tokens,
            cached_tokens,
            output_tokens,
        });
    }
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": 1767225600, "status": status,
               "model": RESPONSE_MODEL, "output": output, "usage": usage})
    };
    let mut events = vec![json!({"type": "response.created",
        "response": response("in_progress", json!([]), Value::Null)})];
    if let Some(item) = &item {
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        if tool_call {
            added["arguments"] = json!("");
        } else {
            added["content"] = json!([]);
        }
        events
            .push(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
        if tool_call {
            let arguments = item["arguments"].as_str().unwrap_or_default().to_string();
            let (a, b) = arguments.split_at(arguments.len() / 2);
            for delta in [a, b] {
                events.push(json!({"type": "response.function_call_arguments.delta",
                    "item_id": item["id"], "output_index": 0, "delta": delta}));
            }
            events.push(json!({"type": "response.function_call_arguments.done",
                "item_id": item["id"], "output_index": 0, "arguments": arguments}));
        } else {
            events.push(
                json!({"type": "response.output_text.delta", "item_id": item["id"],
                "output_index": 0, "content_index": 0, "delta": FINAL_TEXT}),
            );
        }
        events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    }
    let output = item.map_or(json!([]), |i| json!([i]));
    events.push(json!({"type": "response.completed", "response": response("completed", output,
        json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached_tokens},
               "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": input_tokens + output_tokens}))}));
    for (i, event) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(i);
    }
    events
}

/// The SSE answer to a `POST .../responses` for [`LOOP_MODEL`]: each event its own chunk,
/// [`STREAM_EVENT_GAP`] after the one before, and the body's end a gap after the last, in a TLS
/// record of its own, as from the real server: Codex closes the connection once it has read
/// `response.completed`, before that end arrives.
pub fn sse(request: &Value, body_len: usize) -> Response<Body> {
    let frames: Vec<StreamFrame> = answer(request, body_len, "sse")
        .iter()
        .map(|e| {
            let kind = e["type"].as_str().unwrap_or_default();
            Ok(Frame::data(Bytes::from(format!(
                "event: {kind}\ndata: {e}\n\n"
            ))))
        })
        .collect();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("x-request-id", "req_mock_sse")
        .body(streamed_body(frames))
        .unwrap_or_else(|_| Response::new(whole(Bytes::new())))
}

/// Whether the request asks to become a WebSocket.
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Accepts a WebSocket upgrade on `.../responses` (101, permessage-deflate when offered) and
/// serves `response.create` messages on it until the client closes.
pub fn accept_websocket(
    mut req: Request<hyper::body::Incoming>,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
) -> Response<Body> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .body(whole(Bytes::from_static(body.as_bytes())))
            .unwrap_or_else(|_| Response::new(whole(Bytes::new())))
    };
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return text(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
    };
    if !req.uri().path().ends_with("/responses") {
        return text(StatusCode::NOT_FOUND, "no WebSocket here");
    }
    let deflate = req
        .headers()
        .get_all("sec-websocket-extensions")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("permessage-deflate"));
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
    let path = req.uri().path().to_string();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut session = Session {
            io: TokioIo::new(upgraded),
            inflate: deflate.then(|| Decompress::new(false)),
            deflate: deflate.then(|| Compress::new(Compression::default(), false)),
        };
        let _ = session
            .serve(|message| {
                let request: Value = serde_json::from_slice(message).unwrap_or(Value::Null);
                if request["type"] != "response.create" {
                    return Vec::new();
                }
                if let Ok(mut r) = requests.lock() {
                    r.push(ReceivedRequest {
                        path: format!("{path} (websocket)"),
                        body_len: message.len(),
                        model: request["model"].as_str().map(str::to_string),
                        stream: true,
                        authorization: authorization.clone(),
                        user_agent: user_agent.clone(),
                        served: None,
                    });
                }
                answer(&request, message.len(), "websocket")
            })
            .await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept_key(&key))
        .header("x-request-id", "req_mock_ws");
    if deflate {
        // Context takeover both ways and 15-bit windows: the defaults, as OpenAI's server.
        response = response.header("sec-websocket-extensions", "permessage-deflate");
    }
    response
        .body(whole(Bytes::new()))
        .unwrap_or_else(|_| Response::new(whole(Bytes::new())))
}

/// RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The server side of one WebSocket connection.
struct Session<Io> {
    io: Io,
    /// permessage-deflate, one stream per direction for the whole connection (context takeover).
    inflate: Option<Decompress>,
    deflate: Option<Compress>,
}

#[derive(Debug, thiserror::Error)]
enum WsError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Protocol(&'static str),
}

/// Largest message the mock accepts (Codex's first request is ~75 kB).
const MAX_MESSAGE: usize = 16 << 20;

impl<Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Session<Io> {
    /// Reads messages, answering each text message with `respond`'s events, one frame each,
    /// `STREAM_EVENT_GAP` apart. Ends when the client closes.
    async fn serve(&mut self, mut respond: impl FnMut(&[u8]) -> Vec<Value>) -> Result<(), WsError> {
        let mut message = Vec::new();
        let mut compressed = false;
        loop {
            let (fin, rsv1, opcode, payload) = self.read_frame().await?;
            match opcode {
                0x8 => {
                    let _ = self.write_frame(0x8, false, &payload).await;
                    return Ok(());
                }
                0x9 => self.write_frame(0xA, false, &payload).await?,
                0xA => {}
                0x0..=0x2 => {
                    if opcode != 0 {
                        message.clear();
                        compressed = rsv1;
                    }
                    message.extend_from_slice(&payload);
                    if message.len() > MAX_MESSAGE {
                        return Err(WsError::Protocol("message too large"));
                    }
                    if !fin {
                        continue;
                    }
                    let text = if compressed {
                        self.inflate_message(&message)?
                    } else {
                        std::mem::take(&mut message)
                    };
                    for event in respond(&text) {
                        tokio::time::sleep(STREAM_EVENT_GAP).await;
                        self.send_text(event.to_string().as_bytes()).await?;
                    }
                }
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
        }
    }

    async fn read_frame(&mut self) -> Result<(bool, bool, u8, Vec<u8>), WsError> {
        let mut head = [0u8; 2];
        self.io.read_exact(&mut head).await?;
        let (fin, rsv1, opcode) = (head[0] & 0x80 != 0, head[0] & 0x40 != 0, head[0] & 0x0f);
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(self.io.read_u16().await?),
            127 => self.io.read_u64().await?,
            n => u64::from(n),
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_MESSAGE)
            .ok_or(WsError::Protocol("frame too large"))?;
        let mut mask = [0u8; 4];
        if masked {
            self.io.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        Ok((fin, rsv1, opcode, payload))
    }

    async fn write_frame(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) -> Result<(), WsError> {
        let mut frame = vec![0x80 | if rsv1 { 0x40 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => frame.push(n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn send_text(&mut self, text: &[u8]) -> Result<(), WsError> {
        match &mut self.deflate {
            Some(deflate) => {
                let payload = deflate_message(deflate, text)?;
                self.write_frame(0x1, true, &payload).await
            }
            None => self.write_frame(0x1, false, text).await,
        }
    }

    fn inflate_message(&mut self, message: &[u8]) -> Result<Vec<u8>, WsError> {
        let Some(inflate) = &mut self.inflate else {
            return Err(WsError::Protocol(
                "compressed frame without permessage-deflate",
            ));
        };
        // RFC 7692 §7.2.2: the sender removed the sync flush's 00 00 ff ff tail.
        let mut input = message.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(input.len() * 4);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 4096 {
                out.reserve(out.capacity().max(4096));
            }
            let before = inflate.total_in();
            let status = inflate
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|_| WsError::Protocol("bad deflate data"))?;
            consumed += (inflate.total_in() - before) as usize;
            if out.len() > MAX_MESSAGE {
                return Err(WsError::Protocol("message too large"));
            }
            if consumed >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if status == Status::StreamEnd {
                return Ok(out);
            }
        }
    }
}

/// One message compressed on the connection's stream, sync-flushed, without the 00 00 ff ff
/// tail (RFC 7692 §7.2.1).
fn deflate_message(deflate: &mut Compress, text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + 64);
    let mut consumed = 0;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(4096);
        }
        let before = deflate.total_in();
        deflate
            .compress_vec(&text[consumed..], &mut out, FlushCompress::Sync)
            .map_err(std::io::Error::other)?;
        consumed += (deflate.total_in() - before) as usize;
        // Done when all input is in and the flush did not fill the buffer.
        if consumed >= text.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn deflated_messages_share_one_stream() {
        let mut deflate = Compress::new(Compression::default(), false);
        let mut inflate = Decompress::new(false);
        let mut session = Session {
            io: tokio::io::empty(),
            inflate: None,
            deflate: None,
        };
        for text in [
            &b"{\"type\":\"response.created\"}"[..],
            b"{\"type\":\"response.created\"}",
        ] {
            let wire = deflate_message(&mut deflate, text).unwrap();
            session.inflate = Some(inflate);
            let back = session.inflate_message(&wire).unwrap();
            inflate = session.inflate.take().unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn the_script_asks_for_the_tool_then_answers() {
        let first = answer(&json!({"type": "response.create", "input": []}), 400, "sse");
        let done = first.last().unwrap();
        assert_eq!(done["response"]["output"][0]["name"], TOOL_NAME);
        let second = answer(
            &json!({"input": [{"type": "function_call_output", "call_id": TOOL_CALL_ID}]}),
            400,
            "sse",
        );
        let done = second.last().unwrap();
        assert_eq!(
            done["response"]["output"][0]["content"][0]["text"],
            FINAL_TEXT
        );
        assert_eq!(done["response"]["usage"]["input_tokens"], 100);
        let prewarm = answer(&json!({"generate": false}), 400, "websocket");
        assert_eq!(prewarm.len(), 2);
    }
}
