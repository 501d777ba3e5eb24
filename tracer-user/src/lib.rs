//! agent-tracer's pipeline as a library: capture → streams → protocols → genai → agent →
//! resource (from the process catalogue, `processes`) → export. The `agent-tracer` binary is a
//! thin command line over it (`daemon`); the parsers are reachable from tests and fuzz targets.

pub mod agent;
pub mod capture;
pub mod daemon;
pub mod export;
pub mod freed_memory;
pub mod genai;
pub mod model;
pub mod processes;
pub mod protocols;
pub mod streams;
pub mod telemetry;

#[cfg(test)]
pub(crate) mod alloc_probe;
