//! The tracer's own small HTTP endpoints (health probes, Prometheus): one accept loop for both,
//! robust to running out of file descriptors and to clients that never finish their headers.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
    Request, Response,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tracing::debug;

/// Connections served at once. The endpoints answer a kubelet and a Prometheus or two; a local
/// process opening connections by the thousand must not cost the tracer a task and buffers each.
/// Past the bound a connection is closed at once, before its request is read.
pub const MAX_CONNECTIONS: usize = 64;

/// Binds `addr` now (so a bad or taken address fails the start-up, naming `what`) and answers
/// every request with `respond` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    what: &'static str,
    respond: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: binding {addr}"))?;
    let local = listener.local_addr()?;
    let respond = Arc::new(respond);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // EMFILE and the like: retrying at once would spin.
                    debug!("{what} accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!("{what}: {MAX_CONNECTIONS} connections open, one more closed unanswered");
                drop(tcp);
                continue;
            };
            let respond = respond.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = respond(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    // A client that never finishes its headers does not keep a task forever.
                    .header_read_timeout(Duration::from_secs(10))
                    // One request per connection: an idle keep-alive client holds no slot.
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
                if let Err(e) = served {
                    debug!("{what} connection: {e}");
                }
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut tcp = std::net::TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer)?;
        Ok(answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_bound_are_closed_and_the_endpoint_recovers() -> Result<()> {
        let (addr, task) = serve("127.0.0.1:0".parse()?, "test", |_| {
            Response::new(Full::new(Bytes::from_static(b"ok")))
        })
        .await?;
        // Clients that connect and never send a request hold every slot.
        let idle: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(addr))
            .collect::<std::io::Result<_>>()?;
        let refused = tokio::task::spawn_blocking(move || get(addr)).await?;
        // Closed before the request was read: no answer (an empty read or a reset).
        assert!(
            refused.as_ref().map_or(true, |a| a.is_empty()),
            "answered past the bound: {refused:?}"
        );
        drop(idle);
        let mut answered = String::new();
        for _ in 0..50 {
            answered = tokio::task::spawn_blocking(move || get(addr))
                .await?
                .unwrap_or_default();
            if answered.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered:?}");
        assert!(answered.ends_with("ok"), "{answered:?}");
        task.abort();
        Ok(())
    }
}
