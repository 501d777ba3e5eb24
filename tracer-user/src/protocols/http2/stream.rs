//! One stream's two halves (the request and the response) as they are assembled, and the
//! message head decoded from a header block.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::{
    model::{Direction, Headers},
    protocols::memory::{BodyBudget, KeptBody, NotKept},
};

/// A decoded message head.
#[derive(Clone, Debug, Default)]
pub(super) struct Head {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) headers: Headers,
}

/// One direction of one stream: the request or the response.
#[derive(Debug, Default)]
pub(super) struct Half {
    pub(super) head: Option<Head>,
    /// Some header fields could not be decoded.
    pub(super) incomplete: bool,
    pub(super) body: KeptBody,
    pub(super) body_len: u64,
    pub(super) bytes_lost: u64,
    pub(super) start_ns: Option<u64>,
    pub(super) first_body_ns: Option<u64>,
    pub(super) last_ns: u64,
    pub(super) timeline: Vec<(u64, u64)>,
    /// END_STREAM was seen.
    pub(super) ended: bool,
    /// The direction's framing was lost before END_STREAM: nothing more will come.
    pub(super) cut: bool,
}

impl Half {
    pub(super) fn done(&self) -> bool {
        self.ended || self.cut
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none() && self.body_len == 0
    }

    pub(super) fn touch(&mut self, start_ns: u64, now_ns: u64) {
        self.start_ns.get_or_insert(start_ns);
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// As HTTP/1's bodies: the first `max_body` bytes kept (as far as `budget` allows), all
    /// counted, and when each arrived.
    pub(super) fn append_body(
        &mut self,
        data: &[u8],
        timestamp_ns: u64,
        max_body: usize,
        budget: &BodyBudget,
    ) -> NotKept {
        if data.is_empty() {
            return NotKept::default();
        }
        self.first_body_ns.get_or_insert(timestamp_ns);
        let not_kept = self.body.extend(data, max_body, budget);
        self.body_len = self.body_len.saturating_add(data.len() as u64);
        match self.timeline.last_mut() {
            Some((reached, t)) if *t == timestamp_ns => *reached = self.body_len,
            _ => self.timeline.push((self.body_len, timestamp_ns)),
        }
        not_kept
    }
}

#[derive(Debug, Default)]
pub(super) struct Stream {
    pub(super) request: Half,
    pub(super) response: Half,
}

impl Stream {
    pub(super) fn half(&mut self, direction: Direction) -> &mut Half {
        match direction {
            Direction::Egress => &mut self.request,
            Direction::Ingress => &mut self.response,
        }
    }
}

/// Pseudo-header fields become the head's method, path and status; `:authority` becomes the
/// `host` header HTTP/1.1 would have carried, so the server address is found the same way. A
/// method that is not an HTTP token (RFC 9110 §9.1: visible ASCII, no separators) is malformed
/// and left out, as HTTP/1.1's parser would refuse it, rather than exported as garbage.
pub(super) fn head_of(fields: Vec<(String, String)>) -> Head {
    let mut head = Head::default();
    let mut authority = None;
    for (name, value) in fields {
        match name.as_str() {
            ":method" if is_token(&value) => head.method = value,
            ":method" => {}
            ":path" => head.path = value,
            ":status" => head.status = value.parse().unwrap_or(0),
            ":authority" => authority = Some(value),
            _ if name.starts_with(':') => {}
            _ => head.headers.push((name, value)),
        }
    }
    if let Some(authority) = authority {
        if !head.headers.iter().any(|(k, _)| k == "host") {
            head.headers.insert(0, ("host".to_string(), authority));
        }
    }
    head
}

/// RFC 9110 §5.6.2 `token`: one or more `tchar`.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl crate::protocols::state_bytes::StateBytes for Half {
    fn state_bytes(&self) -> u64 {
        use crate::protocols::state_bytes::{head_bytes, timeline_bytes, total};
        let head = self
            .head
            .as_ref()
            .map_or(0, |h| head_bytes(&h.method, &h.path, &h.headers));
        total([head, timeline_bytes(&self.timeline)])
    }
}

impl crate::protocols::state_bytes::StateBytes for Stream {
    fn state_bytes(&self) -> u64 {
        use crate::protocols::state_bytes::{total, STREAM_OVERHEAD_BYTES};
        total([
            STREAM_OVERHEAD_BYTES,
            self.request.state_bytes(),
            self.response.state_bytes(),
        ])
    }
}
