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

/// A message head: its method, target (or path) and header list.
pub fn head_bytes(method: &str, target: &str, headers: &Headers) -> u64 {
    total([
        method.len() as u64,
        target.len() as u64,
        headers_bytes(headers),
    ])
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

/// What a tracker's connections hold together, against its limit. Each connection keeps what it
/// was last charged; the tracker recharges it after each event and, once past the limit, ends
/// the connections [`to_evict`](Self::to_evict) names.
#[derive(Debug)]
pub struct StateTotal {
    limit: u64,
    held: u64,
}

impl StateTotal {
    pub fn new(limit: u64) -> Self {
        StateTotal { limit, held: 0 }
    }

    pub fn held(&self) -> u64 {
        self.held
    }

    /// A connection now holds `now`, having been charged `charged`: updates both.
    pub fn recharge(&mut self, charged: &mut u64, now: u64) {
        self.held = self.held.saturating_sub(*charged).saturating_add(now);
        *charged = now;
    }

    /// A connection charged `charged` is gone.
    pub fn release(&mut self, charged: u64) {
        self.held = self.held.saturating_sub(charged);
    }

    /// Past the limit: the connections to end, least recently active first, until a quarter of
    /// the limit would be free again (a batch, not one per event). `connections`: each one's
    /// key, last activity and charge. Empty while within the limit.
    pub fn to_evict<K>(&self, connections: impl Iterator<Item = (K, u64, u64)>) -> Vec<K> {
        if self.held <= self.limit {
            return Vec::new();
        }
        let target = self.limit.saturating_sub(self.limit / 4);
        let mut by_age: Vec<(K, u64, u64)> = connections.collect();
        by_age.sort_unstable_by_key(|(_, last_activity_ns, _)| *last_activity_ns);
        let mut held = self.held;
        let mut evict = Vec::new();
        for (key, _, charged) in by_age {
            if held <= target {
                break;
            }
            held = held.saturating_sub(charged);
            evict.push(key);
        }
        evict
    }
}
