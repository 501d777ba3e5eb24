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
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::debug;

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
            let respond = respond.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = respond(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    // A client that never finishes its headers does not keep a task forever.
                    .header_read_timeout(Duration::from_secs(10))
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
