//! Reading one direction's bytes as frames: where its parser is in the byte stream, and the
//! steps that turn bytes into frame headers, DATA payloads and whole frames.

use super::{
    connection::Http2Connection,
    finder::FrameFinder,
    frames::{
        FrameHeader, FramingError, CONTINUATION, DATA, FLAG_ACK, FLAG_END_STREAM, FLAG_PADDED,
        FRAME_HEADER_LEN, PREFACE, SETTINGS,
    },
    hpack::Hpack,
};
use crate::model::{Direction, HttpExchange, Peer};

/// Where a direction's parser is in its byte stream.
pub(super) enum Framing {
    /// Before the end of the client's connection preface: how many of its bytes were seen.
    Preface(usize),
    /// Reading a frame header.
    Header,
    /// Inside a DATA frame's payload, which is passed on as it arrives.
    Data(DataFrame),
    /// Inside a frame whose payload is used once whole.
    Whole {
        header: FrameHeader,
        payload: Vec<u8>,
        left: u32,
    },
    /// Inside a frame whose payload is not needed.
    Skip(u32),
    /// Where frames start is unknown (the connection was joined after its preface, or bytes
    /// were lost across a frame boundary): reads are held until frames are found again.
    Resync(FrameFinder),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct DataFrame {
    pub(super) stream: u32,
    /// A padded frame whose pad length byte has not arrived yet.
    pub(super) pad_len_unread: bool,
    pub(super) data_left: u32,
    pub(super) pad_left: u32,
    pub(super) end_stream: bool,
}

impl DataFrame {
    pub(super) fn left(&self) -> u64 {
        u64::from(self.pad_len_unread) + u64::from(self.data_left) + u64::from(self.pad_left)
    }
}

/// A header block waiting for its CONTINUATION frames.
pub(super) struct PendingBlock {
    pub(super) stream: u32,
    /// PUSH_PROMISE blocks are decoded only to keep the HPACK table in step.
    pub(super) promise: bool,
    pub(super) end_stream: bool,
    pub(super) start_ns: u64,
    pub(super) fragment: Vec<u8>,
    /// Part of it was lost or it grew too large: it cannot be decoded.
    pub(super) damaged: bool,
}

/// One direction of the connection.
pub(super) struct Reader {
    pub(super) framing: Framing,
    pub(super) head: [u8; FRAME_HEADER_LEN],
    pub(super) head_len: usize,
    /// When the frame being read started to arrive.
    pub(super) frame_start_ns: u64,
    /// The first frame must be SETTINGS (RFC 9113 §3.4): a cheap proof we are at a frame start.
    pub(super) expect_settings: bool,
    pub(super) block: Option<PendingBlock>,
    pub(super) hpack: Hpack,
    /// Header blocks this direction carried so far.
    pub(super) blocks: u64,
}

impl Reader {
    pub(super) fn new(framing: Framing) -> Self {
        Reader {
            framing,
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            frame_start_ns: 0,
            expect_settings: true,
            block: None,
            hpack: Hpack::new(),
            blocks: 0,
        }
    }

    /// A direction of a connection joined after its preface: frames are yet to be found, and
    /// the HPACK table holds entries from before.
    pub(super) fn joined() -> Self {
        let mut reader = Reader::new(Framing::Resync(FrameFinder::default()));
        reader.expect_settings = false;
        reader.hpack.lose();
        reader
    }

    pub(super) fn is_resyncing(&self) -> bool {
        matches!(self.framing, Framing::Resync(_))
    }
}

/// What one step of reading a direction's bytes produced.
pub(super) enum Step<'a> {
    Nothing,
    Header(FrameHeader),
    Data(DataFrame, &'a [u8]),
    Whole(FrameHeader, Vec<u8>),
    Lost(FramingError),
}

impl Http2Connection {
    /// Consumes bytes from the front of `bytes` for one step of the direction's framing.
    pub(super) fn read<'a>(
        &mut self,
        direction: Direction,
        timestamp_ns: u64,
        bytes: &mut &'a [u8],
    ) -> Step<'a> {
        let reader = &mut self.readers[direction as usize];
        match &mut reader.framing {
            Framing::Resync(_) => {
                *bytes = &[];
                Step::Nothing
            }
            Framing::Preface(seen) => {
                let expected = &PREFACE[*seen..];
                let n = expected.len().min(bytes.len());
                if bytes[..n] != expected[..n] {
                    return Step::Lost(FramingError::Preface);
                }
                *seen += n;
                *bytes = &bytes[n..];
                if *seen == PREFACE.len() {
                    reader.framing = Framing::Header;
                }
                Step::Nothing
            }
            Framing::Header => {
                if reader.head_len == 0 {
                    reader.frame_start_ns = timestamp_ns;
                }
                let n = (FRAME_HEADER_LEN - reader.head_len).min(bytes.len());
                reader.head[reader.head_len..reader.head_len + n].copy_from_slice(&bytes[..n]);
                reader.head_len += n;
                *bytes = &bytes[n..];
                if reader.head_len < FRAME_HEADER_LEN {
                    return Step::Nothing;
                }
                reader.head_len = 0;
                Step::Header(FrameHeader::parse(&reader.head))
            }
            Framing::Data(frame) => {
                let mut data: &[u8] = &[];
                if frame.pad_len_unread {
                    let pad = u32::from(bytes[0]);
                    *bytes = &bytes[1..];
                    frame.pad_len_unread = false;
                    if pad > frame.data_left {
                        return Step::Lost(FramingError::Malformed {
                            kind: DATA,
                            len: frame.data_left + 1,
                            stream: frame.stream,
                        });
                    }
                    frame.data_left -= pad;
                    frame.pad_left = pad;
                } else if frame.data_left > 0 {
                    let n = (frame.data_left as usize).min(bytes.len());
                    data = &bytes[..n];
                    *bytes = &bytes[n..];
                    frame.data_left -= n as u32;
                } else {
                    let n = (frame.pad_left as usize).min(bytes.len());
                    *bytes = &bytes[n..];
                    frame.pad_left -= n as u32;
                }
                let frame = *frame;
                if frame.left() == 0 {
                    reader.framing = Framing::Header;
                }
                Step::Data(frame, data)
            }
            Framing::Whole {
                header,
                payload,
                left,
            } => {
                let n = (*left as usize).min(bytes.len());
                let keep = header
                    .kept_len()
                    .unwrap_or(0)
                    .saturating_sub(payload.len())
                    .min(n);
                payload.extend_from_slice(&bytes[..keep]);
                *bytes = &bytes[n..];
                *left -= n as u32;
                if *left > 0 {
                    return Step::Nothing;
                }
                let (header, payload) = (*header, std::mem::take(payload));
                reader.framing = Framing::Header;
                Step::Whole(header, payload)
            }
            Framing::Skip(left) => {
                let n = (*left as usize).min(bytes.len());
                *bytes = &bytes[n..];
                *left -= n as u32;
                if *left == 0 {
                    reader.framing = Framing::Header;
                }
                Step::Nothing
            }
        }
    }

    /// A frame header arrived: checks it and sets up reading its payload.
    pub(super) fn start_frame(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        let reader = &mut self.readers[direction as usize];
        if reader.expect_settings {
            reader.expect_settings = false;
            if header.kind != SETTINGS || header.has(FLAG_ACK) {
                return self.lose(direction, FramingError::FirstFrame, peer, out);
            }
        }
        if !header.well_formed() {
            let why = FramingError::Malformed {
                kind: header.kind,
                len: header.len,
                stream: header.stream,
            };
            return self.lose(direction, why, peer, out);
        }
        // CONTINUATION frames follow their header block's first frame directly, and only them.
        match (reader.block.is_some(), header.kind == CONTINUATION) {
            (true, false) => {
                let why = FramingError::UnfinishedHeaderBlock(header.kind);
                return self.lose(direction, why, peer, out);
            }
            (false, true) => {
                return self.lose(direction, FramingError::StrayContinuation, peer, out)
            }
            _ => {}
        }
        reader.framing = match header.kind {
            DATA => {
                let padded = header.has(FLAG_PADDED) && header.len > 0;
                Framing::Data(DataFrame {
                    stream: header.stream,
                    pad_len_unread: padded,
                    data_left: header.len - u32::from(padded),
                    pad_left: 0,
                    end_stream: header.has(FLAG_END_STREAM),
                })
            }
            _ if header.kept_len().is_some() => Framing::Whole {
                header,
                payload: Vec::new(),
                left: header.len,
            },
            _ => Framing::Skip(header.len),
        };
        // A frame with nothing to read is complete now.
        if header.len == 0 {
            let frame = match reader.framing {
                Framing::Data(frame) => Some(frame),
                _ => None,
            };
            reader.framing = Framing::Header;
            let start_ns = reader.frame_start_ns;
            match frame {
                Some(frame) => self.data(direction, frame, &[], start_ns, peer, out),
                None if header.kept_len().is_some() => {
                    self.whole_frame(direction, header, &[], start_ns, peer, out)
                }
                None => {}
            }
        }
    }

    /// Body bytes of a DATA frame (`frame` as it is after them).
    pub(super) fn data(
        &mut self,
        direction: Direction,
        frame: DataFrame,
        data: &[u8],
        timestamp_ns: u64,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        let start_ns = self.readers[direction as usize].frame_start_ns;
        let max_body = self.max_body;
        let budget = self.budget.clone();
        if let Some(stream) = self.stream(frame.stream, direction) {
            let half = stream.half(direction);
            half.touch(start_ns, timestamp_ns);
            let not_kept = half.append_body(data, timestamp_ns, max_body, &budget);
            not_kept.count_in(&self.health);
        }
        if frame.left() == 0 {
            self.end_data_frame(direction, frame, peer, out);
        }
    }

    pub(super) fn end_data_frame(
        &mut self,
        direction: Direction,
        frame: DataFrame,
        peer: &Peer,
        out: &mut Vec<HttpExchange>,
    ) {
        if !frame.end_stream {
            return;
        }
        if let Some(stream) = self.streams.get_mut(&frame.stream) {
            stream.half(direction).ended = true;
            self.finish_if_done(frame.stream, peer, out);
        }
    }
}

impl crate::protocols::state_bytes::StateBytes for Reader {
    /// The HPACK table at the size the decoding side allowed (what the encoder may fill).
    fn state_bytes(&self) -> u64 {
        use crate::protocols::state_bytes::total;
        let framing = match &self.framing {
            Framing::Whole { payload, .. } => payload.len() as u64,
            Framing::Resync(finder) => finder.state_bytes(),
            _ => 0,
        };
        total([
            framing,
            self.block.as_ref().map_or(0, |b| b.fragment.len() as u64),
            self.hpack.allowed_table_size as u64,
            self.hpack.known.size as u64,
        ])
    }
}
