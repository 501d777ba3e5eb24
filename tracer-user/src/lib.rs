//! agent-tracer's pipeline as a library: capture → streams → protocols → genai → agent →
//! resource (from the process catalogue, `processes`) → export. The `agent-tracer` binary is a thin command line over it; the parsers are
//! reachable from tests and fuzz targets.

pub mod agent;
pub mod app;
pub mod capture;
pub mod check;
pub mod config;
pub mod encrypted;
pub mod export;
pub mod genai;
pub mod health;
pub mod health_server;
pub mod http_server;
pub mod metrics;
pub mod pipeline;
pub mod processes;
pub mod protocols;
pub mod redact;
pub mod span;
pub mod streams;
