//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the binary messages Bedrock
//! streams its answers in: a prelude (total length, headers length, CRC32 of both), typed headers
//! (`:event-type`, `:message-type`, `:exception-type`, ...), the payload, and a CRC32 of the whole.
//!
//! The frames are decoded by aws-smithy-eventstream, the AWS SDK for Rust's own decoder (both
//! CRCs checked, lengths bounded); this module makes it an incremental parser like the SSE one:
//! bytes may be cut anywhere, each message keeps the body offset where it ended (to time it), and
//! a damaged frame stops the parse with an error instead of guessing where the next one starts.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// The protocol's limit on one message (prelude, headers, payload and CRC): a larger length in a
/// prelude is garbage, not a frame to wait for.
pub const MAX_MESSAGE_BYTES: u32 = 16 * 1024 * 1024;
/// Prelude (12 bytes) plus the message CRC (4): the smallest message there is.
const MIN_MESSAGE_BYTES: u32 = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventMessage {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: Option<String>,
    /// `:event-type` of an event (`contentBlockDelta`, `chunk`, ...).
    pub event_type: Option<String>,
    /// `:exception-type` of a modelled exception (`throttlingException`, ...).
    pub exception_type: Option<String>,
    /// `:error-code` and `:error-message` of an unmodelled error.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub content_type: Option<String>,
    pub payload: Bytes,
    /// Offset in the input just past the message.
    pub end_offset: u64,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EventStreamError {
    #[error("event-stream frame does not decode: {0}")]
    Frame(String),
    #[error("event-stream message length {0} is outside 16..={MAX_MESSAGE_BYTES}")]
    Length(u32),
    #[error("the event stream ends inside a message ({0} bytes left over)")]
    Truncated(usize),
}

#[derive(Debug, Default)]
pub struct EventStreamParser {
    buffer: BytesMut,
    decoder: MessageFrameDecoder,
    /// Bytes fed so far.
    fed: u64,
    /// True while the decoder holds no part of a message (the next bytes start a prelude).
    mid_message: bool,
    failed: Option<EventStreamError>,
}

impl EventStreamParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The error that stopped the parse, if one did.
    pub fn error(&self) -> Option<&EventStreamError> {
        self.failed.as_ref()
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<EventMessage>) {
        if self.failed.is_some() {
            return;
        }
        self.fed = self.fed.saturating_add(bytes.len() as u64);
        self.buffer.extend_from_slice(bytes);
        loop {
            if !self.mid_message {
                let Some(&length) = self.buffer.first_chunk::<4>() else {
                    return;
                };
                // Checked before the decoder commits to the prelude: it would otherwise wait for
                // up to 4 GiB that a garbage length announces.
                let total = u32::from_be_bytes(length);
                if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&total) {
                    self.fail(EventStreamError::Length(total));
                    return;
                }
            }
            let before = self.buffer.len();
            match self.decoder.decode_frame(&mut self.buffer) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.mid_message = false;
                    let end_offset = self.fed.saturating_sub(self.buffer.len() as u64);
                    out.push(to_event(&message, end_offset));
                }
                Ok(DecodedFrame::Incomplete) => {
                    // The decoder took the prelude (and keeps it) once twelve bytes were there.
                    self.mid_message |= self.buffer.len() < before;
                    return;
                }
                Err(e) => {
                    self.fail(EventStreamError::Frame(e.to_string()));
                    return;
                }
            }
        }
    }

    /// End of the stream: bytes left inside an unfinished message are an error.
    pub fn finish(&mut self) {
        if self.failed.is_none() && (self.mid_message || self.buffer.has_remaining()) {
            let left = self
                .buffer
                .len()
                .saturating_add(if self.mid_message { 12 } else { 0 });
            self.fail(EventStreamError::Truncated(left));
        }
    }

    fn fail(&mut self, error: EventStreamError) {
        self.failed = Some(error);
        self.buffer = BytesMut::new();
    }
}

fn to_event(message: &aws_smithy_types::event_stream::Message, end_offset: u64) -> EventMessage {
    let text = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_string())
    };
    EventMessage {
        message_type: text(":message-type"),
        event_type: text(":event-type"),
        exception_type: text(":exception-type"),
        error_code: text(":error-code"),
        error_message: text(":error-message"),
        content_type: text(":content-type"),
        payload: message.payload().clone(),
        end_offset,
    }
}

/// Parses a whole body: the messages, and the error that stopped the parse if one did.
pub fn parse_all(body: &[u8]) -> (Vec<EventMessage>, Option<EventStreamError>) {
    let mut parser = EventStreamParser::new();
    let mut out = Vec::new();
    parser.feed(body, &mut out);
    parser.finish();
    (out, parser.failed)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent encoder (not the decoder's crate): the test must not trust one
    /// implementation to check itself. String headers only, as Bedrock sends.
    pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        for (name, value) in headers {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(7);
            h.extend_from_slice(&(value.len() as u16).to_be_bytes());
            h.extend_from_slice(value.as_bytes());
        }
        let total = (12 + h.len() + payload.len() + 4) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let prelude_crc = crc32fast::hash(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        frame(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn stream() -> Vec<u8> {
        [
            event("messageStart", r#"{"role":"assistant"}"#),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
            ),
            frame(&[(":message-type", "event"), (":event-type", "empty")], b""),
            frame(
                &[
                    (":exception-type", "throttlingException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                br#"{"message":"slow down"}"#,
            ),
        ]
        .concat()
    }

    #[test]
    fn decodes_headers_payloads_and_offsets() {
        let body = stream();
        let (events, error) = parse_all(&body);
        assert_eq!(error, None);
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].event_type.as_deref(), Some("messageStart"));
        assert_eq!(events[0].message_type.as_deref(), Some("event"));
        assert_eq!(events[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(
            &events[1].payload[..],
            br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#
        );
        assert_eq!(events[2].payload.len(), 0);
        assert_eq!(
            events[3].exception_type.as_deref(),
            Some("throttlingException")
        );
        assert_eq!(events[3].end_offset, body.len() as u64);
        assert_eq!(
            events[0].end_offset,
            event("messageStart", r#"{"role":"assistant"}"#).len() as u64
        );
    }

    #[test]
    fn a_bad_crc_stops_the_parse() {
        let mut body = stream();
        let second = events_end(&body, 0);
        body[second + 20] ^= 0x55; // inside the second message's headers
        let (events, error) = parse_all(&body);
        assert_eq!(events.len(), 1);
        assert!(
            matches!(error, Some(EventStreamError::Frame(_))),
            "{error:?}"
        );
        let mut prelude = stream();
        prelude[9] ^= 1; // the first prelude's CRC
        assert!(matches!(
            parse_all(&prelude),
            (e, Some(EventStreamError::Frame(_))) if e.is_empty()
        ));
    }

    fn events_end(body: &[u8], index: usize) -> usize {
        parse_all(body).0[index].end_offset as usize
    }

    #[test]
    fn garbage_lengths_and_truncation_are_errors() {
        assert_eq!(
            parse_all(b"\xff\xff\xff\xffjunk").1,
            Some(EventStreamError::Length(u32::MAX))
        );
        assert_eq!(
            parse_all(&[0, 0, 0, 3, 0, 0, 0, 0]).1,
            Some(EventStreamError::Length(3))
        );
        let body = stream();
        let (events, error) = parse_all(&body[..body.len() - 5]);
        assert_eq!(events.len(), 3);
        assert!(matches!(error, Some(EventStreamError::Truncated(_))));
        assert_eq!(
            parse_all(&body[..2]).1,
            Some(EventStreamError::Truncated(2))
        );
        assert_eq!(parse_all(b""), (Vec::new(), None));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_messages(splits in proptest::collection::vec(0..1000usize, 0..8)) {
            let body = stream();
            let mut cuts: Vec<usize> = splits.iter().map(|s| s % (body.len() + 1)).collect();
            cuts.sort();
            let mut parser = EventStreamParser::new();
            let mut out = Vec::new();
            let mut last = 0;
            for cut in cuts {
                parser.feed(&body[last..cut], &mut out);
                last = cut;
            }
            parser.feed(&body[last..], &mut out);
            parser.finish();
            prop_assert_eq!((out, parser.error().cloned()), parse_all(&body));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), cut in 0..256usize) {
            let cut = cut.min(bytes.len());
            let mut parser = EventStreamParser::new();
            let mut out = Vec::new();
            parser.feed(&bytes[..cut], &mut out);
            parser.feed(&bytes[cut..], &mut out);
            parser.finish();
            prop_assert_eq!((out, parser.error().cloned()), parse_all(&bytes));
        }
    }
}
