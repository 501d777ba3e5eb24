//! What a connection's parsers hold besides its bodies (which [`BodyBudget`] counts as they
//! grow): bytes buffered until a head or frame is whole, heads of messages in progress, read
//! timelines, HPACK tables. Each is bounded per connection (a head at 64 KiB, an HPACK table at
//! 1 MiB, 1024 streams), but not across connections: a local program holding thousands of
//! HTTP/2 connections, each with a full table and half-sent heads, would grow the daemon without
//! bound. The tracker adds these up per connection ([`StateBytes`]) and, past its share of the
//! memory budget, ends the least recently active connections ([`HttpTracker`]).
//!
//! Sizes are what the contents take (bytes of strings and buffers, 16 bytes per timeline
//! entry) plus a fixed allowance per connection and per stream for the structures themselves:
//! close to the allocator's figure, never far below it.
//!
//! [`BodyBudget`]: super::memory::BodyBudget
//! [`HttpTracker`]: super::HttpTracker

use crate::model::Headers;

/// The structures of one tracked connection, beyond what [`StateBytes`] counts in them.
pub const CONNECTION_OVERHEAD_BYTES: u64 = 1024;
/// The structures of one HTTP/2 stream.
pub const STREAM_OVERHEAD_BYTES: u64 = 256;
/// One read-timeline entry (byte offset, timestamp).
pub const TIMELINE_ENTRY_BYTES: u64 = 16;

pub trait StateBytes {
    /// Bytes held now, bodies left out.
    fn state_bytes(&self) -> u64;
}

/// Names and values of a header list.
pub fn headers_bytes(headers: &Headers) -> u64 {
    headers.iter().fold(0u64, |sum, (name, value)| {
        sum.saturating_add(name.len() as u64)
            .saturating_add(value.len() as u64)
    })
}

pub fn timeline_bytes(timeline: &[(u64, u64)]) -> u64 {
    (timeline.len() as u64).saturating_mul(TIMELINE_ENTRY_BYTES)
}

/// Sums without overflow.
pub fn total(parts: impl IntoIterator<Item = u64>) -> u64 {
    parts.into_iter().fold(0u64, u64::saturating_add)
}
