//! Stage 7, export: sinks for finished spans. Each sink runs as its own task behind a bounded
//! queue; a slow sink loses spans (counted), it never slows capture. The OTLP sink keeps spans
//! through an endpoint outage in a bounded retry buffer (retry.rs).

pub mod console;
pub mod otlp;
pub mod retry;
