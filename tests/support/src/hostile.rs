//! A hostile HTTPS server for the tracer's byte budgets: it answers any request with a body or a
//! header block built to decode to far more than it weighs. Over TLS on rustls, like the mock
//! model API, so the tracer's OpenSSL hooks see only the traced client's side.
//!
//! - HTTP/1.1 (ALPN `http/1.1`): a JSON response whose `gzip` body is about 1 MiB on the wire
//!   and 1 GiB decoded ([`gzip_bomb`]);
//! - HTTP/2 (ALPN `h2`): a response whose header block adds one 4000-byte entry to the HPACK
//!   dynamic table and refers to it 4000 times ([`hpack_bomb`]): 8 KB on the wire, 16 MB
//!   decoded. Written frame by frame here, as no HTTP/2 library sends such a block.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{bail, Context as _, Result};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

/// What the bomb's entry holds, and how often the block refers to it.
pub const HPACK_ENTRY_BYTES: usize = 4000;
pub const HPACK_REFERENCES: usize = 4000;
/// The gzip bomb decodes to this many zeros.
pub const GZIP_DECODED_BYTES: u64 = 1 << 30;
/// The JSON body both answers carry after their bomb (for HTTP/1.1, what the gzip would have
/// held had it been honest).
pub const BODY: &str =
    r#"{"id":"chatcmpl-hostile","object":"chat.completion","model":"gpt-4o-mini","choices":[]}"#;

pub struct HostileServer {
    pub addr: SocketAddr,
    /// PEM of the server's self-signed certificate, for the client's trust store.
    pub cert_path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl HostileServer {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// About [`GZIP_DECODED_BYTES`] of zeros in about 1 MiB: gzip members of 1 MiB of zeros, one
/// after the other (a gzip body may hold several, RFC 1952 §2.2, and decoders read them all).
pub fn gzip_bomb() -> Vec<u8> {
    use std::io::Write as _;
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = member.write_all(&vec![0u8; 1 << 20]);
    let member = member.finish().unwrap_or_default();
    member.repeat((GZIP_DECODED_BYTES >> 20) as usize)
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1) whose first byte carries `flags`.
fn hpack_integer(flags: u8, n: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A response header block: `:status 200` and `content-type: application/json`, then a
/// 4000-byte `x-bomb` field added to the dynamic table (it fits the default 4096-byte table),
/// then 4000 references to it.
pub fn hpack_bomb() -> Vec<u8> {
    let mut block = vec![0x88]; // :status 200 (static index 8)
                                // content-type (static index 31), literal without indexing.
    hpack_integer(0x00, 4, 31, &mut block);
    hpack_integer(0, 7, "application/json".len(), &mut block);
    block.extend_from_slice(b"application/json");
    // Literal with incremental indexing, new name.
    block.push(0x40);
    hpack_integer(0, 7, "x-bomb".len(), &mut block);
    block.extend_from_slice(b"x-bomb");
    hpack_integer(0, 7, HPACK_ENTRY_BYTES, &mut block);
    block.extend(std::iter::repeat_n(b'a', HPACK_ENTRY_BYTES));
    // Indexed: dynamic entry 62, the newest.
    block.extend(std::iter::repeat_n(0x80 | 62, HPACK_REFERENCES));
    block
}

/// Starts the server on an ephemeral port of 127.0.0.1; its certificate is written under
/// `cert_dir`.
pub async fn start(cert_dir: &std::path::Path) -> Result<HostileServer> {
    let cert = crate::tls::self_signed()?;
    std::fs::create_dir_all(cert_dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the hostile server")?;
    let addr = listener.local_addr()?;
    let cert_path = cert_dir.join(format!("hostile-{}.pem", addr.port()));
    cert.write_pem(&cert_path)?;
    let mut config = (*cert.server_config).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let gzip = Arc::new(gzip_bomb());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let gzip = gzip.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let _ = if h2 {
                    serve_h2(tls).await
                } else {
                    serve_http1(tls, &gzip).await
                };
            });
        }
    });
    Ok(HostileServer {
        addr,
        cert_path,
        task,
    })
}

/// Reads one request (head and Content-Length body) and answers with the gzip bomb.
async fn serve_http1<T: AsyncRead + AsyncWrite + Unpin>(mut io: T, gzip: &[u8]) -> Result<()> {
    let mut request = Vec::new();
    let head_end = loop {
        let mut buf = [0u8; 4096];
        let n = io.read(&mut buf).await?;
        if n == 0 {
            bail!("the client went away before its request");
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + body_len {
        let mut buf = [0u8; 4096];
        let n = io.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        gzip.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(gzip).await?;
    io.flush().await?;
    io.shutdown().await?;
    Ok(())
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// HTTP/2 by hand: SETTINGS, then every request stream is answered, once the client ended it,
/// with the HPACK bomb and [`BODY`]. SETTINGS are acknowledged and PINGs answered until the
/// client goes away.
async fn serve_h2<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) -> Result<()> {
    io.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    io.flush().await?;
    let mut preface = [0u8; PREFACE.len()];
    io.read_exact(&mut preface)
        .await
        .context("the client's preface")?;
    if preface != PREFACE {
        bail!("the client did not send the HTTP/2 preface");
    }
    let mut head = [0u8; 9];
    while io.read_exact(&mut head).await.is_ok() {
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await?;
        let reply = match kind {
            SETTINGS if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
            PING if flags & ACK == 0 => frame(PING, ACK, 0, &payload),
            GOAWAY => break,
            HEADERS | DATA if flags & END_STREAM != 0 && stream % 2 == 1 => {
                let mut answer = frame(HEADERS, END_HEADERS, stream, &hpack_bomb());
                answer.extend(frame(DATA, END_STREAM, stream, BODY.as_bytes()));
                answer
            }
            _ => continue,
        };
        io.write_all(&reply).await?;
        io.flush().await?;
    }
    Ok(())
}
