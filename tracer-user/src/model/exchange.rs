//! One request and its response, whichever protocol carried them (HTTP/1.1, HTTP/2, a
//! WebSocket conversation turned into exchanges): what the protocol parsers produce and genai
//! reads.

use bytes::Bytes;

use super::connection::{ConnKey, Peer};

pub type Headers = Vec<(String, String)>;

/// Most header fields a message head may carry, whichever protocol: HTTP/1 refuses a head with
/// more, HTTP/2 keeps the first ones of a header block and marks the rest missing. A peer must
/// not make us copy more than this, however small its wire encoding (HPACK references).
pub const MAX_HEADER_FIELDS: usize = 128;
/// Most bytes of one message head: HTTP/1's raw head, HTTP/2's decoded fields (names and
/// values).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The value of the first header called `name` (lower case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The bound that left a body's later bytes out: what was kept is the body's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyCut {
    /// Past the message's body limit (`--max-body-bytes`).
    BodyLimit,
    /// Past what the daemon's memory budget had left for bodies in progress.
    MemoryBudget,
}

impl BodyCut {
    /// The span attribute's and the metric label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyCut::BodyLimit => "body_limit",
            BodyCut::MemoryBudget => "memory_budget",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub target: String,
    /// Header names in lower case.
    pub headers: Headers,
    /// The body after transfer decoding, still content-encoded; at most the configured cap.
    pub body: Bytes,
    /// Body bytes seen, including any past the cap or lost in gaps.
    pub body_len: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes_lost: u64,
    /// Why `body` stops before the body did, when it does (see [`BodyCut`]).
    pub body_cut: Option<BodyCut>,
    /// HTTP/2 only: some header fields could not be decoded (HPACK state the capture missed), so
    /// the method, target or headers may be empty. What is there is never guessed.
    pub http2_incomplete_headers: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
    pub body_len: u64,
    pub start_ns: u64,
    pub first_body_ns: Option<u64>,
    pub end_ns: u64,
    /// `(body offset reached, time)` per arrival, to time events inside streamed bodies.
    pub body_timeline: Vec<(u64, u64)>,
    /// False when the body was cut short (process exit, idle timeout, shutdown, gap).
    pub complete: bool,
    pub bytes_lost: u64,
    /// Why `body` stops before the body did, when it does (see [`BodyCut`]).
    pub body_cut: Option<BodyCut>,
    /// HTTP/2 only: some header fields could not be decoded; the status may be 0.
    pub http2_incomplete_headers: bool,
}

impl HttpResponse {
    /// When the body had reached `offset` bytes. A binary search: the timeline only grows, and
    /// a stream of tiny events in tiny reads asks once per event (a linear scan made that
    /// quadratic on the pipeline thread).
    pub fn time_at_offset(&self, offset: u64) -> Option<u64> {
        let first_reaching = self
            .body_timeline
            .partition_point(|(reached, _)| *reached < offset);
        self.body_timeline.get(first_reaching).map(|(_, t)| *t)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeEnd {
    Complete,
    /// The response never completed; the reason is low-cardinality (`process_exit`, ...).
    Interrupted(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpExchange {
    pub conn: ConnKey,
    /// The other end, as far as it is known.
    pub peer: Peer,
    pub request: HttpRequest,
    pub response: Option<HttpResponse>,
    pub end: ExchangeEnd,
    /// HTTP/2 only: the tracer joined the connection after it started (its first captured bytes
    /// were frames, not the preface). Streams already open then are partial, and header fields
    /// encoded against the HPACK table built before may be missing (see
    /// `http2_incomplete_headers`); the bodies are whole from where capture began.
    pub http2_joined_mid_connection: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(timeline: Vec<(u64, u64)>) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: Headers::default(),
            body: Bytes::new(),
            body_len: timeline.last().map_or(0, |(reached, _)| *reached),
            start_ns: 0,
            first_body_ns: None,
            end_ns: 0,
            body_timeline: timeline,
            complete: true,
            bytes_lost: 0,
            body_cut: None,
            http2_incomplete_headers: false,
        }
    }

    #[test]
    fn an_offset_is_timed_by_the_first_arrival_that_reached_it() {
        // Two reads in one instant (same reach twice), then later ones.
        let r = response(vec![(10, 100), (10, 105), (25, 200), (40, 300)]);
        assert_eq!(r.time_at_offset(0), Some(100));
        assert_eq!(r.time_at_offset(10), Some(100));
        assert_eq!(r.time_at_offset(11), Some(200));
        assert_eq!(r.time_at_offset(25), Some(200));
        assert_eq!(r.time_at_offset(40), Some(300));
        assert_eq!(r.time_at_offset(41), None, "past what arrived");
        assert_eq!(response(Vec::new()).time_at_offset(0), None);
    }

    #[test]
    fn a_long_timeline_answers_every_offset_as_a_scan_would() {
        let timeline: Vec<(u64, u64)> = (1..=5_000).map(|i| (i * 3, i * 7)).collect();
        let r = response(timeline.clone());
        for offset in 0..=15_001 {
            let scanned = timeline
                .iter()
                .find(|(reached, _)| *reached >= offset)
                .map(|(_, t)| *t);
            assert_eq!(r.time_at_offset(offset), scanned, "offset {offset}");
        }
    }
}
