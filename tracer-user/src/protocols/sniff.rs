//! What a byte stream speaks, told from its first bytes. The HTTP tracker uses these to decide
//! which parser takes a connection, and the hook validator (`capture::validate`) to decide
//! whether an inferred hook delivers plaintext at all: one set of recognisers, so a fix to how a
//! protocol is recognised reaches both.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

/// The HTTP/1.1 methods a request may start with.
pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];

/// What a client sends first on every HTTP/2 connection (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface's request line: enough to tell a connection is HTTP/2.
pub const HTTP2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// A method and a space: the start of an HTTP/1 request.
pub fn looks_like_request(data: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| data.starts_with(m.as_bytes()) && data.get(m.len()) == Some(&b' '))
}

/// Whether more bytes could still make `data` the start of an HTTP/1 message or the HTTP/2
/// preface (a first write may be a single byte).
pub fn could_become_http(data: &[u8]) -> bool {
    let is_prefix_of = |token: &[u8]| data.len() < token.len() && token.starts_with(data);
    METHODS
        .iter()
        .any(|m| is_prefix_of(format!("{m} ").as_bytes()))
        || is_prefix_of(b"HTTP/1.")
        || is_prefix_of(HTTP2_PREFACE_START)
}

/// What the first bytes of a hook say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// They parse; the protocol they parse as.
    Valid(&'static str),
    Invalid,
    /// Too few bytes to tell yet.
    NeedMore,
}

/// Bytes of a hook's first call it is judged on; a pending hook holds at most this many.
pub const MAX_FIRST_BYTES: usize = 32;

/// Judges the first bytes a hook captured.
pub fn verdict(first: &[u8]) -> Verdict {
    if first.is_empty() {
        return Verdict::NeedMore;
    }
    let mut more = false;
    let http1_starts = METHODS
        .iter()
        .map(|method| method.as_bytes())
        .chain([&b"HTTP/1.1"[..], b"HTTP/1.0"])
        .map(|token| (token, &b" "[..], "http1"));
    for (token, then, protocol) in http1_starts.chain([(HTTP2_PREFACE, &b""[..], "http2")]) {
        match start_match(first, token, then) {
            StartMatch::Whole => return Verdict::Valid(protocol),
            StartMatch::Begun => more = true,
            StartMatch::No => {}
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

enum StartMatch {
    /// `first` begins with the whole start.
    Whole,
    /// `first` is shorter than the start and begins it.
    Begun,
    No,
}

/// How `first` compares with the start `token` followed by `then`.
fn start_match(first: &[u8], token: &[u8], then: &[u8]) -> StartMatch {
    let len = token.len().saturating_add(then.len());
    let n = first.len().min(len);
    let same = first
        .iter()
        .zip(token.iter().chain(then))
        .take(n)
        .all(|(a, b)| a == b);
    match (same, n == len) {
        (false, _) => StartMatch::No,
        (true, true) => StartMatch::Whole,
        (true, false) => StartMatch::Begun,
    }
}

/// An HTTP/2 frame header whose type, length and stream fit together (RFC 9113 §6).
fn http2_frame(b: &[u8]) -> Verdict {
    let Some(&[l0, l1, l2, kind, _flags, s0, s1, s2, s3]) = b.first_chunk::<9>() else {
        return Verdict::NeedMore;
    };
    let len = u32::from_be_bytes([0, l0, l1, l2]);
    let stream = u32::from_be_bytes([s0, s1, s2, s3]);
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
    let Some(&[b0, b1]) = b.first_chunk::<2>() else {
        return Verdict::NeedMore;
    };
    let (fin, rsv, opcode) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0f);
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
    let (len, mut at): (u64, usize) = match b1 & 0x7f {
        126 | 127 if control => return Verdict::Invalid,
        126 => {
            let Some(&[hi, lo]) = b.get(2..4) else {
                return Verdict::NeedMore;
            };
            let n = u64::from(u16::from_be_bytes([hi, lo]));
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
            // The most significant bit must be 0 (RFC 6455 §5.2).
            if n.leading_zeros() == 0 || n < 1 << 16 {
                return Verdict::Invalid;
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let mut mask = [0u8; 4];
    if b1 & 0x80 != 0 {
        let Some(key) = b.get(at..at.saturating_add(4)) else {
            return Verdict::NeedMore;
        };
        mask.copy_from_slice(key);
        at = at.saturating_add(4);
    }
    // As much payload as the first bytes can hold, unmasked.
    let wanted = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(MAX_FIRST_BYTES.saturating_sub(at));
    let payload = |n: usize| -> Option<Vec<u8>> {
        let bytes = b.get(at..at.saturating_add(n))?;
        Some(
            bytes
                .iter()
                .zip(mask.iter().cycle())
                .map(|(x, m)| x ^ m)
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
                Err(e) => e.error_len().is_none() && e.valid_up_to().saturating_add(4) > text.len(),
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
            let Some(&[hi, lo]) = payload(2).as_deref() else {
                return Verdict::NeedMore;
            };
            matches!(
                u16::from_be_bytes([hi, lo]),
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

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn http_and_websocket_starts_are_valid() {
        for (bytes, protocol) in [
            (&b"POST /v1/chat/completions HTTP/1.1\r\n"[..], "http1"),
            (b"HTTP/1.1 200 OK\r\n", "http1"),
            (b"GET / HTTP/1.1\r\n", "http1"),
            (HTTP2_PREFACE, "http2"),
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
}
