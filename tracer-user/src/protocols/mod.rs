//! Stage 3, protocols: incremental parsers over byte streams. They never panic on any input;
//! what they cannot parse they count and skip.

pub mod body;
pub mod eventstream;
pub mod http1;
pub mod http2;
pub mod jsonrpc;
pub mod memory;
pub mod sniff;
pub mod sse;
pub mod state_bytes;
pub mod tracker;
pub mod websocket;

pub use tracker::HttpTracker;

#[cfg(test)]
mod drop_tests;
#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod jsonrpc_fixture_tests;
