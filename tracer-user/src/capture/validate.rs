//! Self-validation of hooks placed by inference (issue 7, item 5).
//!
//! A locator can be wrong: a function that names itself in an error string might, in some build
//! nobody tested, be a different function with a different signature. Such a hook would feed the
//! pipeline garbage (or ciphertext), so each inferred entry probe gets its own attach cookie,
//! which the kernel copies into every record it produces. The first bytes a cookie delivers
//! decide: if they parse as HTTP/1.x, the HTTP/2 preface or an HTTP/2 frame, or a WebSocket
//! frame, the hook is trusted from then on; otherwise its records are dropped and the attacher
//! detaches it and reports it. Records arriving before the decision (when the first bytes are too
//! few to judge) are held, then released or dropped with it.

use std::collections::HashMap;

use super::DataChunk;

/// What the first bytes of a hook say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// They parse; the protocol they parse as.
    Valid(&'static str),
    Invalid,
    /// Too few bytes to tell yet.
    NeedMore,
}

const HTTP1_STARTS: &[&[u8]] = &[
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes held per pending hook before it is judged on what it has.
const MAX_FIRST_BYTES: usize = 32;
/// Records held per pending hook; beyond, the oldest are dropped (and counted by the caller).
const MAX_HELD: usize = 256;

/// Judges the first bytes a hook captured.
pub fn verdict(first: &[u8]) -> Verdict {
    if first.is_empty() {
        return Verdict::NeedMore;
    }
    let mut more = false;
    for start in HTTP1_STARTS.iter().chain([&H2_PREFACE]) {
        let n = first.len().min(start.len());
        if first[..n] == start[..n] {
            if n == start.len() {
                return Verdict::Valid(if *start == H2_PREFACE {
                    "http2"
                } else {
                    "http1"
                });
            }
            more = true;
        }
    }
    match http2_frame(first) {
        Verdict::Valid(p) => return Verdict::Valid(p),
        Verdict::NeedMore => more = true,
        Verdict::Invalid => {}
    }
    match websocket_frame(first) {
        Verdict::Valid(p) => return Verdict::Valid(p),
        Verdict::NeedMore => more = true,
        Verdict::Invalid => {}
    }
    if more {
        Verdict::NeedMore
    } else {
        Verdict::Invalid
    }
}

/// An HTTP/2 frame header whose type, length and stream fit together (RFC 9113 §6).
fn http2_frame(b: &[u8]) -> Verdict {
    if b.len() < 9 {
        return Verdict::NeedMore;
    }
    let len = u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let kind = b[3];
    let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
    if stream & 0x8000_0000 != 0 || len > 1 << 20 {
        return Verdict::Invalid;
    }
    let ok = match kind {
        0 | 1 | 5 | 9 => stream != 0,
        2 => len == 5 && stream != 0,
        3 => len == 4 && stream != 0,
        4 => len.is_multiple_of(6) && stream == 0,
        6 => len == 8 && stream == 0,
        7 => len >= 8 && stream == 0,
        8 => len == 4,
        _ => false,
    };
    if ok {
        Verdict::Valid("http2")
    } else {
        Verdict::Invalid
    }
}

/// A WebSocket frame (RFC 6455 §5.2), as far as the first bytes show it: RSV2 and RSV3 clear
/// (RSV1 only with permessage-deflate, and never on a control frame); a data frame starting a
/// message (text or binary: a hook is judged at the start of a call, where a continuation
/// would be a message already half sent) or a whole, short control frame; an extended length
/// in its shortest form; and what the payload allows checking: a text frame's bytes are UTF-8
/// (unmasked first), a close frame's code is one RFC 6455 lets an endpoint send. Random bytes
/// pass the header checks rarely and the payload checks almost never.
fn websocket_frame(b: &[u8]) -> Verdict {
    if b.len() < 2 {
        return Verdict::NeedMore;
    }
    let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
    let compressed = rsv == 0x40;
    if rsv & 0x30 != 0 {
        return Verdict::Invalid;
    }
    let control = opcode >= 8;
    match opcode {
        1 | 2 => {}
        8..=10 if fin && !compressed => {}
        _ => return Verdict::Invalid,
    }
    let (len, mut at) = match b[1] & 0x7f {
        126 | 127 if control => return Verdict::Invalid,
        126 => {
            let Some(n) = b.get(2..4) else {
                return Verdict::NeedMore;
            };
            let n = u64::from(u16::from_be_bytes([n[0], n[1]]));
            if n < 126 {
                return Verdict::Invalid;
            }
            (n, 4)
        }
        127 => {
            let Some(n) = b.get(2..10) else {
                return Verdict::NeedMore;
            };
            let n = u64::from_be_bytes(n.try_into().unwrap_or_default());
            if n >> 63 != 0 || n < 1 << 16 {
                return Verdict::Invalid;
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let mut mask = [0u8; 4];
    if b[1] & 0x80 != 0 {
        let Some(key) = b.get(at..at + 4) else {
            return Verdict::NeedMore;
        };
        mask.copy_from_slice(key);
        at += 4;
    }
    // As much payload as the first bytes can hold, unmasked.
    let wanted = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(MAX_FIRST_BYTES.saturating_sub(at));
    let payload = |n: usize| -> Option<Vec<u8>> {
        let bytes = b.get(at..at + n)?;
        Some(
            bytes
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ mask[i % 4])
                .collect(),
        )
    };
    let valid = match opcode {
        1 if !compressed => {
            let Some(text) = payload(wanted) else {
                return Verdict::NeedMore;
            };
            // A character cut by the end of the first bytes is not an error.
            match std::str::from_utf8(&text) {
                Ok(_) => true,
                Err(e) => e.error_len().is_none() && e.valid_up_to() + 4 > text.len(),
            }
        }
        // permessage-deflate: what inflates from the first bytes must be UTF-8 too.
        1 => {
            let Some(compressed) = payload(wanted) else {
                return Verdict::NeedMore;
            };
            inflates_to_text(&compressed)
        }
        8 if len == 1 => false,
        8 if len >= 2 => {
            let Some(code) = payload(2) else {
                return Verdict::NeedMore;
            };
            matches!(
                u16::from_be_bytes([code[0], code[1]]),
                1000..=1003 | 1007..=1014 | 3000..=4999
            )
        }
        _ => true,
    };
    if valid {
        Verdict::Valid("websocket")
    } else {
        Verdict::Invalid
    }
}

/// Whether the start of a raw DEFLATE stream (RFC 1951, as permessage-deflate sends it)
/// decodes without error to UTF-8, a character cut at the end allowed.
fn inflates_to_text(compressed: &[u8]) -> bool {
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(1024);
    if inflater
        .decompress_vec(compressed, &mut out, flate2::FlushDecompress::None)
        .is_err()
    {
        return false;
    }
    match std::str::from_utf8(&out) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// An inferred hook, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferredHook {
    pub binary: String,
    pub function: String,
}

/// A hook whose first bytes did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub cookie: u32,
    pub hook: InferredHook,
    /// The bytes it was judged on.
    pub first: Vec<u8>,
}

#[derive(Debug)]
enum State {
    Pending {
        first: Vec<u8>,
        held: Vec<DataChunk>,
    },
    Trusted,
    Rejected,
}

/// The cookies of inferred hooks and what their first bytes said. Shared (behind a mutex)
/// between the attacher, which registers hooks and detaches rejected ones, and the ring-buffer
/// reader, which passes every record with a cookie through [`Validator::check`].
#[derive(Debug, Default)]
pub struct Validator {
    hooks: HashMap<u32, (InferredHook, State)>,
    next: u32,
    rejected: Vec<Rejection>,
    /// How many of `rejected` were already reported by [`Validator::peek_rejected_new`].
    reported: usize,
    /// Cookies newly trusted, for the attacher's log.
    trusted: Vec<(u32, InferredHook, &'static str)>,
    /// Records dropped: from rejected hooks, or held beyond `MAX_HELD`.
    pub dropped_records: u64,
}

impl Validator {
    /// A fresh cookie for an inferred hook (never 0: 0 means "no cookie").
    pub fn register(&mut self, hook: InferredHook) -> u32 {
        self.next += 1;
        let cookie = self.next;
        self.hooks.insert(
            cookie,
            (
                hook,
                State::Pending {
                    first: Vec::new(),
                    held: Vec::new(),
                },
            ),
        );
        cookie
    }

    /// Forgets a cookie whose hook could not be attached.
    pub fn unregister(&mut self, cookie: u32) {
        self.hooks.remove(&cookie);
    }

    /// The records to hand on now for this one: itself, nothing (held or dropped), or itself
    /// with the records held before it.
    pub fn check(&mut self, chunk: DataChunk) -> Vec<DataChunk> {
        let cookie = chunk.cookie;
        let Some((hook, state)) = self.hooks.get_mut(&cookie) else {
            // Not an inferred hook's (or one already forgotten): nothing to judge.
            return vec![chunk];
        };
        match state {
            State::Trusted => vec![chunk],
            State::Rejected => {
                self.dropped_records += 1;
                Vec::new()
            }
            State::Pending { first, held } => {
                // Judge on the start of calls: a call's later chunks continue what was judged.
                if chunk.offset == 0 && first.len() < MAX_FIRST_BYTES {
                    let take = (MAX_FIRST_BYTES - first.len()).min(chunk.data.len());
                    first.extend_from_slice(&chunk.data[..take]);
                }
                let mut v = verdict(first);
                if v == Verdict::NeedMore && first.len() >= MAX_FIRST_BYTES {
                    v = Verdict::Invalid;
                }
                match v {
                    Verdict::Valid(protocol) => {
                        let mut out = std::mem::take(held);
                        out.push(chunk);
                        self.trusted.push((cookie, hook.clone(), protocol));
                        *state = State::Trusted;
                        out
                    }
                    Verdict::Invalid => {
                        self.dropped_records += held.len() as u64 + 1;
                        self.rejected.push(Rejection {
                            cookie,
                            hook: hook.clone(),
                            first: std::mem::take(first),
                        });
                        *state = State::Rejected;
                        Vec::new()
                    }
                    Verdict::NeedMore => {
                        if held.len() >= MAX_HELD {
                            held.remove(0);
                            self.dropped_records += 1;
                        }
                        held.push(chunk);
                        Vec::new()
                    }
                }
            }
        }
    }

    /// Hooks rejected since the last call, for the attacher to detach.
    pub fn take_rejected(&mut self) -> Vec<Rejection> {
        self.reported = 0;
        std::mem::take(&mut self.rejected)
    }

    /// Hooks rejected and not yet reported (they stay queued for [`take_rejected`]), for the
    /// reader to report at once.
    ///
    /// [`take_rejected`]: Self::take_rejected
    pub fn peek_rejected_new(&mut self) -> Vec<Rejection> {
        let new = self.rejected[self.reported.min(self.rejected.len())..].to_vec();
        self.reported = self.rejected.len();
        new
    }

    /// Hooks trusted since the last call, with the protocol their first bytes parsed as.
    pub fn take_trusted(&mut self) -> Vec<(u32, InferredHook, &'static str)> {
        std::mem::take(&mut self.trusted)
    }

    /// (cookie, hook, "pending" | "trusted" | "rejected") for every inferred hook.
    pub fn states(&self) -> Vec<(u32, InferredHook, &'static str)> {
        let mut v: Vec<_> = self
            .hooks
            .iter()
            .map(|(c, (h, s))| {
                let s = match s {
                    State::Pending { .. } => "pending",
                    State::Trusted => "trusted",
                    State::Rejected => "rejected",
                };
                (*c, h.clone(), s)
            })
            .collect();
        v.sort_by_key(|(c, _, _)| *c);
        v
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use tracer_common::{Direction, Source};

    use super::*;

    #[test]
    fn http_and_websocket_starts_are_valid() {
        for (bytes, protocol) in [
            (&b"POST /v1/chat/completions HTTP/1.1\r\n"[..], "http1"),
            (b"HTTP/1.1 200 OK\r\n", "http1"),
            (b"GET / HTTP/1.1\r\n", "http1"),
            (H2_PREFACE, "http2"),
            // A server's SETTINGS frame, then a client's WINDOW_UPDATE.
            (b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03", "http2"),
            (b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x0f", "http2"),
            // A masked "Hello" (RFC 6455 §5.7), a close frame, a compressed text frame and a
            // binary frame with a 16-bit length.
            (b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", "websocket"),
            (b"\x88\x02\x03\xe8", "websocket"),
            (b"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00", "websocket"),
            (b"\x82\x7e\x01\x00", "websocket"),
            // An unmasked text frame whose first bytes end inside a character.
            (
                b"\x81\x1e{\"type\":\"response.delta\",\"t\":\"\xc3",
                "websocket",
            ),
        ] {
            assert_eq!(verdict(bytes), Verdict::Valid(protocol), "{bytes:?}");
        }
    }

    #[test]
    fn ciphertext_and_garbage_are_invalid() {
        for bytes in [
            // A TLS application-data record: what a hook below the TLS layer would see.
            &b"\x17\x03\x03\x00\x45\x12\x34\x56\x78\x9a"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"{\"model\":\"gpt-4o\"}",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            // WebSocket-shaped but impossible: a text frame that is not UTF-8 (masked "Hello"
            // with the wrong key), a continuation as a first frame, RSV2, a 16-bit length that
            // fits in 7 bits, a fragmented or compressed control frame, a close code no
            // endpoint may send.
            // (Each is padded to an HTTP/2 frame header's 9 bytes, so that check can decide too.)
            b"\x81\x85\x37\xfa\x21\x3d\xff\x9f\x4d\x51\x58",
            b"\x80\x05Hello\xff\xff",
            b"\xa1\x05Hello\xff\xff",
            b"\x82\x7e\x00\x10\xff\xff\xff\xff\xff",
            b"\x08\x00\xff\xff\xff\xff\xff\xff\xff",
            b"\xc9\x00\xff\xff\xff\xff\xff\xff\xff",
            b"\x88\x02\x03\xed\xff\xff\xff\xff\xff",
        ] {
            assert_eq!(verdict(bytes), Verdict::Invalid, "{bytes:?}");
        }
    }

    /// How often bytes from a wrongly placed hook (modelled as random) would pass for a
    /// WebSocket frame: text and close frames almost never; binary and compressed frames,
    /// whose payload cannot be checked from a few bytes, by their header only.
    #[test]
    fn random_bytes_rarely_pass_as_websocket() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut text, mut other) = (0, 0);
        for _ in 0..100_000 {
            let mut b = [0u8; MAX_FIRST_BYTES];
            for byte in &mut b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            if websocket_frame(&b) == Verdict::Valid("websocket") {
                match (b[0] & 0x4f, b[0] & 0x0f) {
                    (0x01, _) | (_, 8) => text += 1,
                    _ => other += 1,
                }
            }
        }
        eprintln!("text/close {text}, binary/compressed/ping {other} of 100000");
        assert!(text < 50, "{text}");
        assert!(other < 2_500, "{other}");
    }

    #[test]
    fn a_short_start_waits_for_more() {
        assert_eq!(verdict(b""), Verdict::NeedMore);
        assert_eq!(verdict(b"HTT"), Verdict::NeedMore);
        assert_eq!(verdict(b"PRI * HT"), Verdict::NeedMore);
    }

    fn chunk(cookie: u32, offset: u64, data: &'static [u8]) -> DataChunk {
        DataChunk {
            pid: 1,
            source: Source::Tls,
            conn_id: 7,
            direction: Direction::Egress,
            timestamp_ns: 0,
            call_len: data.len() as u64,
            offset,
            stream_offset: 0,
            cookie,
            data: Bytes::from_static(data),
        }
    }

    fn hook() -> InferredHook {
        InferredHook {
            binary: "/bin/x".into(),
            function: "ssl_write_internal".into(),
        }
    }

    #[test]
    fn a_hook_is_trusted_after_its_first_bytes_parse() {
        let mut v = Validator::default();
        let c = v.register(hook());
        assert_ne!(c, 0);
        // Short first read: held until the next one decides.
        assert!(v.check(chunk(c, 0, b"HT")).is_empty());
        let out = v.check(chunk(c, 0, b"TP/1.1 200 OK\r\n"));
        assert_eq!(out.len(), 2, "the held record comes first");
        assert_eq!(&out[0].data[..], b"HT");
        assert_eq!(v.take_trusted().len(), 1);
        // Trusted: anything passes from now on.
        assert_eq!(v.check(chunk(c, 0, b"\x17\x03\x03")).len(), 1);
        assert!(v.take_rejected().is_empty());
        // Records without a cookie, or an unknown one, are not judged.
        assert_eq!(v.check(chunk(0, 0, b"\x17")).len(), 1);
    }

    #[test]
    fn a_hook_whose_first_bytes_do_not_parse_is_rejected_once() {
        let mut v = Validator::default();
        let c = v.register(hook());
        assert!(v
            .check(chunk(c, 0, b"\x17\x03\x03\x00\x45\x00\x00\x00\x00\x00"))
            .is_empty());
        // Reported once at once, still queued for the attacher to detach.
        assert_eq!(v.peek_rejected_new().len(), 1);
        assert!(v.peek_rejected_new().is_empty());
        let rejected = v.take_rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!((rejected[0].cookie, &rejected[0].hook), (c, &hook()));
        // Later records of the rejected hook are dropped, not reported again.
        assert!(v.check(chunk(c, 0, b"POST / HTTP/1.1\r\n")).is_empty());
        assert!(v.take_rejected().is_empty());
        assert_eq!(v.dropped_records, 2);
        assert_eq!(v.states()[0].2, "rejected");
    }

    proptest! {
        #[test]
        fn any_split_of_the_first_bytes_gives_the_same_verdict(split in 1usize..17) {
            let whole: &'static [u8] = b"POST /v1/chat/completions HTTP/1.1\r\n";
            let mut v = Validator::default();
            let c = v.register(hook());
            let mut out = v.check(chunk(c, 0, &whole[..split]));
            out.extend(v.check(chunk(c, 0, &whole[split..])));
            prop_assert_eq!(out.len(), 2);
            prop_assert_eq!(v.states()[0].2, "trusted");
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = verdict(&bytes);
        }
    }
}
