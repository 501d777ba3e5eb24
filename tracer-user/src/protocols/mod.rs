//! Stage 3, protocols: incremental parsers over byte streams. They never panic on any input;
//! what they cannot parse they count and skip.

pub mod body;
pub mod http1;
pub mod sse;

pub use http1::{ExchangeEnd, HttpExchange, HttpTracker};

#[cfg(test)]
mod fixture_tests;
