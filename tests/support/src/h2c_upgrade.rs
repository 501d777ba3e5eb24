//! The HTTP/2 side of an `Upgrade: h2c` (RFC 7540 §3.2) for [`crate::mock_openai`]: hyper
//! answers the HTTP/1.1 request with `101 Switching Protocols` and hands over the connection,
//! on which this writes the response hyper's handler made for the request, as stream 1.

use std::{convert::Infallible, sync::Arc};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf},
    sync::Mutex,
};

use crate::mock_openai::{Body, ReceivedRequest};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
/// The default SETTINGS_MAX_FRAME_SIZE: no larger DATA frame may be sent.
const MAX_FRAME: usize = 16 * 1024;

/// Answers a request, upgrading it to h2c when it asks and `upgrade` allows.
pub(crate) async fn handle(
    mut req: Request<Incoming>,
    requests: Arc<std::sync::Mutex<Vec<ReceivedRequest>>>,
    upgrade: bool,
) -> Result<Response<Body>, Infallible> {
    let asks = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")));
    if !(asks && upgrade) {
        return crate::mock_openai::handle(req, requests).await;
    }
    let upgraded = hyper::upgrade::on(&mut req);
    let response = crate::mock_openai::handle(req, requests).await?;
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => {
                if let Err(e) = serve_stream_1(TokioIo::new(io), response).await {
                    eprintln!("mock h2c upgrade: {e:#}");
                }
            }
            Err(e) => eprintln!("mock h2c upgrade: {e}"),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "h2c")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap_or_else(|_| Response::new(Empty::new().map_err(|never| match never {}).boxed())))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

async fn send<W: AsyncWrite + Unpin>(writer: &Mutex<WriteHalf<W>>, bytes: &[u8]) -> Result<()> {
    let mut w = writer.lock().await;
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Speaks HTTP/2 on an upgraded connection: stream 1 carries `response`.
async fn serve_stream_1<T>(io: T, response: Response<Body>) -> Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let writer = Arc::new(Mutex::new(writer));
    // The server's connection preface comes first (RFC 9113 §3.4).
    send(&writer, &frame(SETTINGS, 0, 0, &[])).await?;
    let mut preface = [0u8; PREFACE.len()];
    reader
        .read_exact(&mut preface)
        .await
        .context("the client's preface")?;
    if preface != PREFACE {
        bail!("the client did not send the HTTP/2 preface");
    }
    // Acknowledges SETTINGS and answers PINGs until the client goes away.
    let acks = writer.clone();
    let frames = tokio::spawn(async move {
        let mut head = [0u8; 9];
        while reader.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).await.is_err() {
                break;
            }
            let reply = match (head[3], head[4] & ACK != 0) {
                (SETTINGS, false) => frame(SETTINGS, ACK, 0, &[]),
                (PING, false) => frame(PING, ACK, 0, &payload),
                (GOAWAY, _) => break,
                _ => continue,
            };
            if send(&acks, &reply).await.is_err() {
                break;
            }
        }
    });
    let (parts, mut body) = response.into_parts();
    let mut fields = vec![(
        b":status".to_vec(),
        parts.status.as_str().as_bytes().to_vec(),
    )];
    for (name, value) in &parts.headers {
        fields.push((name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    let block = loona_hpack::Encoder::new()
        .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    send(&writer, &frame(HEADERS, END_HEADERS, 1, &block)).await?;
    while let Some(next) = body.frame().await {
        // A body cut short ends the connection without END_STREAM.
        let Ok(data) = next.map(|f| f.into_data().unwrap_or_else(|_| Bytes::new())) else {
            return Ok(());
        };
        for piece in data.chunks(MAX_FRAME) {
            send(&writer, &frame(DATA, 0, 1, piece)).await?;
        }
    }
    send(&writer, &frame(DATA, END_STREAM, 1, &[])).await?;
    let _ = frames.await;
    Ok(())
}
