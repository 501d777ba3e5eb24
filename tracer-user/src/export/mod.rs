//! Stage 7, export: sinks for finished spans. Each sink runs as its own task behind a bounded
//! queue; a slow sink loses spans (counted), it never slows capture.

pub mod console;
pub mod otlp;
