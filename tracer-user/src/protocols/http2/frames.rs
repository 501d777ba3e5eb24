//! HTTP/2 frames (RFC 9113 §4, §6): their headers, the shape rules each type must follow, and
//! how to tell whether bytes read from their first one are whole frames (for a connection joined
//! after its preface, or a direction whose framing was lost).

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use thiserror::Error;

use super::hpack::field_extent;
use crate::model::Direction;

/// What a client sends first on every HTTP/2 connection (RFC 9113 §3.4).
pub use crate::protocols::sniff::HTTP2_PREFACE as PREFACE;
pub(super) const FRAME_HEADER_LEN: usize = 9;
pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const PING: u8 = 0x6;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;
pub(super) const FLAG_END_STREAM: u8 = 0x1;
pub(super) const FLAG_ACK: u8 = 0x1;
pub(super) const FLAG_END_HEADERS: u8 = 0x4;
pub(super) const FLAG_PADDED: u8 = 0x8;
pub(super) const FLAG_PRIORITY: u8 = 0x20;
pub(super) const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub(super) const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub(super) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(super) const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub(super) const MAX_HEADER_BLOCK: usize = 1 << 20;
pub(super) const MAX_SETTINGS_LEN: usize = 6 * 64;
pub(super) const MAX_FOUND_FRAME_LEN: u32 = 1 << 20;
pub(super) const MAX_ERROR_CODE: u32 = 0xd;

/// Why a direction's framing can no longer be followed. Each is a protocol error a real peer
/// would have torn the connection down for, or bytes the capture lost across a frame boundary:
/// either way, where the next frame starts is unknown.
#[derive(Debug, Error, PartialEq, Eq)]
pub(super) enum FramingError {
    #[error("the client's first bytes are not the HTTP/2 connection preface")]
    Preface,
    #[error("the first frame is not SETTINGS")]
    FirstFrame,
    #[error("frame type {kind} with length {len} on stream {stream} is malformed")]
    Malformed { kind: u8, len: u32, stream: u32 },
    #[error("a header block is interrupted by frame type {0}")]
    UnfinishedHeaderBlock(u8),
    #[error("CONTINUATION without a header block to continue")]
    StrayContinuation,
    #[error("{0} bytes lost across a frame boundary")]
    Gap(u64),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct FrameHeader {
    pub(super) len: u32,
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) stream: u32,
}

impl FrameHeader {
    pub(super) fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved top bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The shape rules of RFC 9113 §6 that cost nothing to check: a frame breaking one means the
    /// stream is not where we think it is.
    pub(super) fn well_formed(&self) -> bool {
        let on_stream = self.stream != 0;
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && !(self.has(FLAG_ACK) && self.len > 0)
            }
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            // Unknown types must be ignored (RFC 9113 §4.1).
            _ => true,
        }
    }

    /// How much of the payload to keep for [`Http2Connection::whole_frame`]; `None` for frames
    /// whose payload is skipped.
    pub(super) fn kept_len(&self) -> Option<usize> {
        match self.kind {
            // A larger header block is not decoded: there is no need to hold it.
            HEADERS | CONTINUATION | PUSH_PROMISE => {
                Some((self.len as usize).min(MAX_HEADER_BLOCK))
            }
            SETTINGS => Some((self.len as usize).min(MAX_SETTINGS_LEN)),
            RST_STREAM => Some(4),
            // Only the last stream id and the error code; the debug data is not needed.
            GOAWAY => Some(8),
            _ => None,
        }
    }
}

/// How bytes read from their first one as HTTP/2 frames, for a connection joined after its
/// preface or a direction whose framing was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameChain {
    /// Plausible whole frames back to back, ending exactly where the bytes end.
    Whole,
    /// Plausible frames so far, the last one (or its header block) not complete yet.
    Partial,
    /// Not frames.
    No,
}

/// Whether `bytes` are HTTP/2 frames from their first byte: each frame header plausible (see
/// [`plausible_frame`]), CONTINUATION exactly where a header block needs one, header blocks
/// made of whole HPACK field representations, and the frames reaching the end. A read cut from
/// the middle of a frame, text (HTTP/1.1, which starts with a byte over 0x10, too long a
/// length) or TLS records do not pass. The bytes of real connections are full of zeros, so a
/// cut inside one can look like a frame header: a lone DATA frame, whose payload can be
/// anything, is not taken for proof, and waits for the next frame to be seen too.
pub fn frame_chain(direction: Direction, bytes: &[u8]) -> FrameChain {
    let mut at = 0;
    // The stream of a header block awaiting CONTINUATION, and the block so far.
    let mut open_block: Option<u32> = None;
    let mut block: Vec<u8> = Vec::new();
    let mut frames = 0usize;
    let mut only_data = true;
    loop {
        let rest = bytes.get(at..).unwrap_or_default();
        let Some(head) = rest.first_chunk::<FRAME_HEADER_LEN>() else {
            // What there is of the next header must fit one.
            let mut padded = [0; FRAME_HEADER_LEN];
            for (pad, byte) in padded.iter_mut().zip(rest) {
                *pad = *byte;
            }
            let header = FrameHeader::parse(&padded);
            let plausible = match rest.len() {
                0 => true,
                1..=2 => rest
                    .first()
                    .is_some_and(|len| *len <= (MAX_FOUND_FRAME_LEN >> 16) as u8),
                3 => header.len <= MAX_FOUND_FRAME_LEN,
                _ => {
                    let kind_only = FrameHeader {
                        flags: if rest.len() == 4 { 0 } else { header.flags },
                        ..header
                    };
                    plausible_kind_and_flags(direction, kind_only)
                        && header.len <= MAX_FOUND_FRAME_LEN
                        && rest.get(5).is_none_or(|stream| stream & 0x80 == 0)
                }
            };
            return match (rest.is_empty(), open_block) {
                _ if !plausible => FrameChain::No,
                (true, None) if frames > 1 || (frames == 1 && !only_data) => FrameChain::Whole,
                _ => FrameChain::Partial,
            };
        };
        let header = FrameHeader::parse(head);
        // The reserved bit is sent as zero (RFC 9113 §4.1).
        if head[5] & 0x80 != 0 || !plausible_frame(direction, header) {
            return FrameChain::No;
        }
        match (open_block, header.kind) {
            (Some(stream), CONTINUATION) if header.stream == stream => {}
            (Some(_), _) | (None, CONTINUATION) => return FrameChain::No,
            _ => {}
        }
        open_block = match header.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION if !header.has(FLAG_END_HEADERS) => {
                Some(header.stream)
            }
            _ => None,
        };
        let end = FRAME_HEADER_LEN.saturating_add(header.len as usize);
        let Some(payload) = rest.get(FRAME_HEADER_LEN..end) else {
            return FrameChain::Partial;
        };
        if !plausible_payload(header, payload) {
            return FrameChain::No;
        }
        if matches!(header.kind, HEADERS | PUSH_PROMISE | CONTINUATION) {
            let fragment = match header.kind {
                CONTINUATION => Some(payload),
                _ => header_fragment(header, payload),
            };
            let Some(fragment) = fragment else {
                return FrameChain::No;
            };
            if block.len().saturating_add(fragment.len()) <= MAX_HEADER_BLOCK {
                block.extend_from_slice(fragment);
            }
            if header.has(FLAG_END_HEADERS) {
                if !whole_representations(&block) {
                    return FrameChain::No;
                }
                block.clear();
            }
        }
        frames = frames.saturating_add(1);
        only_data &= header.kind == DATA;
        at = at.saturating_add(end);
    }
}

/// Whether a header block is a sequence of whole HPACK field representations.
pub(super) fn whole_representations(block: &[u8]) -> bool {
    let mut rest = block;
    while !rest.is_empty() {
        match field_extent(rest).and_then(|rep| rest.get(rep.len..)) {
            Some(next) => rest = next,
            None => return false,
        }
    }
    true
}

/// A frame header as real peers send it: a known type, only the flags that type defines, the
/// shape RFC 9113 §6 requires, no larger than peers allow. Pushes come from servers only, and
/// the traced side is taken for the client (a server shows itself later, by its headers).
pub(super) fn plausible_frame(direction: Direction, header: FrameHeader) -> bool {
    plausible_kind_and_flags(direction, header)
        && header.len <= MAX_FOUND_FRAME_LEN
        && header.well_formed()
}

pub(super) fn plausible_kind_and_flags(direction: Direction, header: FrameHeader) -> bool {
    let flags = match header.kind {
        DATA => FLAG_END_STREAM | FLAG_PADDED,
        HEADERS => FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
        SETTINGS | PING => FLAG_ACK,
        PUSH_PROMISE if direction == Direction::Ingress => FLAG_END_HEADERS | FLAG_PADDED,
        CONTINUATION => FLAG_END_HEADERS,
        PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
        _ => return false,
    };
    header.flags & !flags == 0
}

/// What a whole frame's payload must hold for the frame to be real.
pub(super) fn plausible_payload(header: FrameHeader, payload: &[u8]) -> bool {
    let u32_at = |at: usize| {
        payload
            .get(at..)
            .and_then(|rest| rest.first_chunk::<4>())
            .map(|b| u32::from_be_bytes(*b))
    };
    match header.kind {
        DATA | HEADERS | PUSH_PROMISE if header.has(FLAG_PADDED) => {
            let fixed = match header.kind {
                HEADERS if header.has(FLAG_PRIORITY) => 5,
                PUSH_PROMISE => 4,
                _ => 0,
            };
            payload.first().is_some_and(|pad| {
                usize::from(*pad).saturating_add(1).saturating_add(fixed) <= payload.len()
            })
        }
        HEADERS if header.has(FLAG_PRIORITY) => payload.len() >= 5,
        PUSH_PROMISE => payload.len() >= 4,
        // A stream cannot depend on itself.
        PRIORITY => u32_at(0).is_some_and(|d| d & 0x7fff_ffff != header.stream),
        RST_STREAM => u32_at(0).is_some_and(|code| code <= MAX_ERROR_CODE),
        GOAWAY => u32_at(4).is_some_and(|code| code <= MAX_ERROR_CODE),
        WINDOW_UPDATE => u32_at(0).is_some_and(|inc| inc != 0 && inc & 0x8000_0000 == 0),
        SETTINGS => payload.chunks_exact(6).all(|setting| {
            let &[i0, i1, v0, v1, v2, v3] = setting else {
                return false;
            };
            let id = u16::from_be_bytes([i0, i1]);
            let value = u32::from_be_bytes([v0, v1, v2, v3]);
            match id {
                SETTINGS_ENABLE_PUSH => value <= 1,
                SETTINGS_INITIAL_WINDOW_SIZE => value <= 0x7fff_ffff,
                SETTINGS_MAX_FRAME_SIZE => (1 << 14..1 << 24).contains(&value),
                _ => true,
            }
        }),
        _ => true,
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload, without padding, priority
/// or promised stream id; `None` when the lengths do not add up.
pub(super) fn header_fragment(header: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    let (pad, mut rest) = if header.has(FLAG_PADDED) {
        let (pad, rest) = payload.split_first()?;
        (usize::from(*pad), rest)
    } else {
        (0, payload)
    };
    let skip = match header.kind {
        HEADERS if header.has(FLAG_PRIORITY) => 5,
        PUSH_PROMISE => 4,
        _ => 0,
    };
    rest = rest.get(skip..)?;
    rest.get(..rest.len().checked_sub(pad)?)
}
