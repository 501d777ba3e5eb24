//! The tracer's view of itself: its health counters (`health`), the metrics it derives from
//! spans and serves or pushes (`metrics`), and the HTTP endpoints that expose them
//! (`health_server` for /healthz and /readyz, `http_server` underneath both).

pub mod health;
pub mod health_server;
pub mod http_server;
pub mod metrics;
