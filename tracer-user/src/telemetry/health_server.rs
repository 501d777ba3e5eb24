//! `--health-listen ADDR`: a tiny HTTP server for orchestrators' probes.
//!
//! * `/healthz`, liveness: 200 while the process runs and its pipeline loop keeps turning (it
//!   beats at every one-second tick); 503 once the loop has not beaten for [`STALL_AFTER`] — a
//!   wedged tracer a restart would cure. Also 200 while starting: loading and analysing targets
//!   can take a while, and readiness covers that phase.
//! * `/readyz`, readiness: 200 once the probes are attached (the point `tracer ready` is
//!   logged), 503 before that and while stopping.
//!
//! Plain HTTP/1.1 on hyper, which reqwest and tonic already bring in.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use http_body_util::Full;
use hyper::{body::Bytes, Response, StatusCode};
use tokio::task::JoinHandle;
use tracing::info;

/// The pipeline loop not beating for this long makes the tracer unhealthy.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// What the probes report, updated by the daemon.
pub struct ProbeState {
    started: Instant,
    ready: AtomicBool,
    /// Milliseconds since `started` of the pipeline loop's last beat; 0 before the first.
    last_beat_ms: AtomicU64,
}

impl Default for ProbeState {
    fn default() -> Self {
        ProbeState {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            last_beat_ms: AtomicU64::new(0),
        }
    }
}

impl ProbeState {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// Called by the pipeline loop at each tick.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_beat_ms.store(ms.max(1), Relaxed);
    }

    /// Status and body for `path`, `now` being the time of the request.
    pub fn respond(&self, path: &str, now: Instant) -> (StatusCode, &'static str) {
        match path {
            "/healthz" => {
                let last = self.last_beat_ms.load(Relaxed);
                let since_start = now.saturating_duration_since(self.started);
                if last == 0 {
                    (StatusCode::OK, "starting\n")
                } else if since_start.saturating_sub(Duration::from_millis(last)) > STALL_AFTER {
                    (StatusCode::SERVICE_UNAVAILABLE, "pipeline stalled\n")
                } else {
                    (StatusCode::OK, "ok\n")
                }
            }
            "/readyz" if self.ready.load(Relaxed) => (StatusCode::OK, "ready\n"),
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => (StatusCode::NOT_FOUND, "not found: /healthz or /readyz\n"),
        }
    }
}

/// Binds `addr` now (so a taken port fails the start-up) and serves until the runtime stops.
pub async fn serve(addr: SocketAddr, state: Arc<ProbeState>) -> Result<JoinHandle<()>> {
    let (local, task) =
        crate::telemetry::http_server::serve(addr, "--health-listen", move |request| {
            let (status, body) = state.respond(request.uri().path(), Instant::now());
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = status;
            response
        })
        .await?;
    info!(address = %local, "serving /healthz and /readyz");
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_flag() {
        let s = ProbeState::default();
        let now = Instant::now();
        assert_eq!(s.respond("/readyz", now).0, StatusCode::SERVICE_UNAVAILABLE);
        s.set_ready(true);
        assert_eq!(s.respond("/readyz", now).0, StatusCode::OK);
        s.set_ready(false);
        assert_eq!(s.respond("/readyz", now).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s.respond("/metrics", now).0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn liveness_fails_when_the_pipeline_stops_beating() {
        let s = ProbeState::default();
        let start = s.started;
        assert_eq!(s.respond("/healthz", start).1, "starting\n");
        s.beat();
        assert_eq!(s.respond("/healthz", Instant::now()).0, StatusCode::OK);
        let later = Instant::now() + STALL_AFTER + Duration::from_secs(5);
        assert_eq!(
            s.respond("/healthz", later),
            (StatusCode::SERVICE_UNAVAILABLE, "pipeline stalled\n")
        );
    }
}
