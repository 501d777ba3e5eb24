//! A response body as dialect parsers read it: its content encoding undone, with each event's
//! arrival time.

use std::borrow::Cow;

use serde_json::Value;

use crate::{
    model::{header, HttpResponse},
    protocols::{
        body::{decode_content, BodyError},
        eventstream::{self, EventMessage, EventStreamError},
        sse,
    },
};

/// A response body ready for a dialect parser: decoded, with its arrival times.
pub struct ResponseView<'a> {
    pub status: u16,
    pub body: Cow<'a, [u8]>,
    pub content_type: String,
    /// The decoded body was cut at the body limit (a compression bomb, or simply a body that
    /// decodes to more than we keep): `body` is its start.
    pub decoded_truncated: bool,
    response: &'a HttpResponse,
}

impl ResponseView<'_> {
    pub fn is_sse(&self) -> bool {
        self.content_type.contains("text/event-stream")
    }

    /// AWS event-stream framing (Bedrock's streamed answers).
    pub fn is_event_stream(&self) -> bool {
        self.content_type
            .contains("application/vnd.amazon.eventstream")
    }

    /// A response header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.response.headers, name)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Server-sent events, each with the time it had fully arrived.
    pub fn sse(&self) -> Vec<(sse::SseEvent, Option<u64>)> {
        sse::parse_all(&self.body)
            .into_iter()
            .map(|e| {
                let t = self.response.time_at_offset(e.end_offset);
                (e, t)
            })
            .collect()
    }

    /// Event-stream messages, each with the time it had fully arrived, and the framing error
    /// that stopped the decoding if one did.
    pub fn event_stream(&self) -> (Vec<(EventMessage, Option<u64>)>, Option<EventStreamError>) {
        let (messages, error) = eventstream::parse_all(&self.body);
        let timed = messages
            .into_iter()
            .map(|m| {
                let t = self.response.time_at_offset(m.end_offset);
                (m, t)
            })
            .collect();
        (timed, error)
    }

    /// One JSON value per line (NDJSON), each with the time it had fully arrived.
    pub fn ndjson(&self) -> Vec<(Value, Option<u64>)> {
        let mut out = Vec::new();
        let mut start = 0usize;
        for (i, b) in self.body.iter().enumerate() {
            if *b == b'\n' {
                if let Ok(v) = serde_json::from_slice::<Value>(&self.body[start..i]) {
                    out.push((v, self.response.time_at_offset(i as u64 + 1)));
                }
                start = i + 1;
            }
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&self.body[start..]) {
            out.push((v, self.response.end_ns.into()));
        }
        out
    }
}

/// The response's content encoding. When HTTP/2 headers could not be decoded, a gzip body is
/// still known by its magic number.
fn content_encoding(response: &HttpResponse) -> Option<&str> {
    header(&response.headers, "content-encoding").or_else(|| {
        (response.http2_incomplete_headers && response.body.starts_with(&[0x1f, 0x8b]))
            .then_some("gzip")
    })
}

/// The response's content type, lower case. A body of server-sent events is known by its
/// first field when the header is missing (HPACK could not decode it, or the server left it
/// out): parsers choose between a stream and one JSON document by it.
fn content_type(response: &HttpResponse, body: &[u8]) -> String {
    match header(&response.headers, "content-type") {
        Some(ct) => ct.to_ascii_lowercase(),
        None => {
            let text = body.trim_ascii_start();
            if text.starts_with(b"data:") || text.starts_with(b"event:") {
                "text/event-stream".to_string()
            } else {
                String::new()
            }
        }
    }
}

/// A response with its content encoding undone, or why it could not be.
pub type DecodedResponse<'a> = Result<ResponseView<'a>, BodyError>;

/// The response with its content encoding undone, keeping at most `limit` decoded bytes.
pub fn decode_response(response: &HttpResponse, limit: usize) -> DecodedResponse<'_> {
    let decoded = decode_content(content_encoding(response), &response.body, limit)?;
    Ok(ResponseView {
        status: response.status,
        content_type: content_type(response, &decoded.bytes),
        body: decoded.bytes,
        decoded_truncated: decoded.truncated,
        response,
    })
}

/// Whether a response body can say anything to a parser: JSON, server-sent events, NDJSON,
/// AWS event-stream, or a type not known (missing, or not decoded by HPACK). Others (HTML,
/// images, archives) are never decoded, whatever their encoding promises to inflate to.
pub fn can_matter(response: &HttpResponse) -> bool {
    header(&response.headers, "content-type").is_none_or(|ct| {
        let ct = ct.to_ascii_lowercase();
        ["json", "event-stream", "eventstream"]
            .iter()
            .any(|t| ct.contains(t))
    })
}
