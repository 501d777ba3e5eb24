//! Server-Sent Events (WHATWG HTML §9.2), incremental: bytes may be split anywhere, including
//! between the `\r` and `\n` of a line end.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    /// Offset in the input just past the blank line that dispatched the event.
    pub end_offset: u64,
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    offset: u64,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &b in bytes {
            self.offset = self.offset.saturating_add(1);
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_complete(&line, out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
    }

    /// End of stream: an event not yet dispatched by a blank line is discarded (per the spec), but
    /// a final `data:` line without its line end is still a line.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_complete(&line, out);
            self.line_complete(b"", out);
        }
    }

    fn line_complete(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                    id: self.id.clone(),
                    end_offset: self.offset,
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.first() == Some(&b':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let (field, colon_and_value) = line.split_at(i);
                let v = colon_and_value.get(1..).unwrap_or_default();
                (field, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = Some(value.into_owned()),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            _ => {}
        }
    }
}

/// Parses a whole SSE body.
pub fn parse_all(body: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    parser.feed(body, &mut out);
    parser.finish(&mut out);
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &[u8] = b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: message_stop\ndata: x\ndata: y\n\nid: 7\rdata:z\r\rdata: [DONE]\n\n";

    #[test]
    fn parses_fields_comments_and_all_line_ends() {
        let events = parse_all(STREAM);
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, vec!["{\"a\":1}", "x\ny", "z", "[DONE]"]);
        assert_eq!(events[1].event.as_deref(), Some("message_stop"));
        assert_eq!(events[2].id.as_deref(), Some("7"));
        assert_eq!(events[3].end_offset, STREAM.len() as u64);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(splits in proptest::collection::vec(0..STREAM.len(), 0..8)) {
            let mut cuts = splits.clone();
            cuts.sort();
            let mut parser = SseParser::new();
            let mut out = Vec::new();
            let mut last = 0;
            for cut in cuts {
                parser.feed(&STREAM[last..cut], &mut out);
                last = cut;
            }
            parser.feed(&STREAM[last..], &mut out);
            parser.finish(&mut out);
            prop_assert_eq!(out, parse_all(STREAM));
        }
    }
}
