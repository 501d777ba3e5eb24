//! Stage 2, streams: turns per-call chunks into per-connection, per-direction byte streams.
//!
//! Each TLS call arrives as one or more chunks with offsets; a chunk that does not continue where
//! the previous one ended means bytes were lost, and the stream says so with an explicit gap
//! rather than silently joining the pieces.

mod recorder;

use std::collections::HashMap;

use bytes::Bytes;
pub use recorder::StreamRecorder;
pub use tracer_common::Direction;

use crate::capture::{CaptureEvent, TlsChunk};

/// Identifies a connection: the process and, for TLS, the library's connection object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub pid: u32,
    pub conn_id: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Data {
        conn: ConnKey,
        direction: Direction,
        timestamp_ns: u64,
        bytes: Bytes,
    },
    /// `len` bytes are missing at this point of the stream.
    Gap {
        conn: ConnKey,
        direction: Direction,
        timestamp_ns: u64,
        len: u64,
    },
    ProcessExit {
        pid: u32,
        timestamp_ns: u64,
    },
}

/// The call a direction is in the middle of.
#[derive(Clone, Copy, Debug)]
struct OpenCall {
    tid: u32,
    timestamp_ns: u64,
    len: u64,
    received: u64,
}

#[derive(Default)]
pub struct StreamAssembler {
    open: HashMap<(ConnKey, Direction), OpenCall>,
}

impl StreamAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, event: CaptureEvent, out: &mut Vec<StreamEvent>) {
        match event {
            CaptureEvent::Tls(chunk) => self.push_chunk(chunk, out),
            CaptureEvent::ProcessExit { pid, timestamp_ns } => {
                for ((conn, direction), call) in self.open.iter() {
                    if conn.pid == pid && call.received < call.len {
                        out.push(StreamEvent::Gap {
                            conn: *conn,
                            direction: *direction,
                            timestamp_ns,
                            len: call.len - call.received,
                        });
                    }
                }
                self.open.retain(|(conn, _), _| conn.pid != pid);
                out.push(StreamEvent::ProcessExit { pid, timestamp_ns });
            }
        }
    }

    fn push_chunk(&mut self, chunk: TlsChunk, out: &mut Vec<StreamEvent>) {
        let conn = ConnKey {
            pid: chunk.pid,
            conn_id: chunk.conn_id,
        };
        let key = (conn, chunk.direction);
        let same_call = |c: &OpenCall| c.tid == chunk.tid && c.timestamp_ns == chunk.timestamp_ns;
        let gap = |len: u64, out: &mut Vec<StreamEvent>| {
            if len > 0 {
                out.push(StreamEvent::Gap {
                    conn,
                    direction: chunk.direction,
                    timestamp_ns: chunk.timestamp_ns,
                    len,
                });
            }
        };

        let mut call = match self.open.get(&key) {
            Some(open) if same_call(open) => *open,
            previous => {
                // A new call: whatever the previous one still owed was lost.
                if let Some(prev) = previous {
                    gap(prev.len.saturating_sub(prev.received), out);
                }
                OpenCall {
                    tid: chunk.tid,
                    timestamp_ns: chunk.timestamp_ns,
                    len: chunk.call_len,
                    received: 0,
                }
            }
        };
        if chunk.offset < call.received {
            // A duplicate or reordered chunk: its bytes were already accounted for.
            return;
        }
        gap(chunk.offset - call.received, out);
        call.received = chunk.offset + chunk.data.len() as u64;
        out.push(StreamEvent::Data {
            conn,
            direction: chunk.direction,
            timestamp_ns: chunk.timestamp_ns,
            bytes: chunk.data,
        });
        if call.received >= call.len {
            self.open.remove(&key);
        } else {
            self.open.insert(key, call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(ts: u64, call_len: u64, offset: u64, data: &'static [u8]) -> CaptureEvent {
        CaptureEvent::Tls(TlsChunk {
            pid: 1,
            tid: 1,
            conn_id: 7,
            direction: Direction::Egress,
            timestamp_ns: ts,
            call_len,
            offset,
            data: Bytes::from_static(data),
        })
    }

    fn run(events: Vec<CaptureEvent>) -> Vec<StreamEvent> {
        let mut s = StreamAssembler::new();
        let mut out = Vec::new();
        for e in events {
            s.push(e, &mut out);
        }
        out
    }

    fn gaps(out: &[StreamEvent]) -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                StreamEvent::Gap { len, .. } => Some(*len),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn contiguous_chunks_make_no_gap() {
        let out = run(vec![
            chunk(1, 4, 0, b"ab"),
            chunk(1, 4, 2, b"cd"),
            chunk(2, 1, 0, b"e"),
        ]);
        assert_eq!(gaps(&out), Vec::<u64>::new());
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn missing_middle_chunk_is_an_explicit_gap() {
        let out = run(vec![chunk(1, 6, 0, b"ab"), chunk(1, 6, 4, b"ef")]);
        assert_eq!(gaps(&out), vec![2]);
    }

    #[test]
    fn unfinished_call_is_a_gap_when_the_next_call_starts() {
        let out = run(vec![chunk(1, 6, 0, b"ab"), chunk(2, 1, 0, b"x")]);
        assert_eq!(gaps(&out), vec![4]);
    }

    #[test]
    fn unfinished_call_is_a_gap_when_the_process_exits() {
        let out = run(vec![
            chunk(1, 6, 0, b"ab"),
            CaptureEvent::ProcessExit {
                pid: 1,
                timestamp_ns: 9,
            },
        ]);
        assert_eq!(gaps(&out), vec![4]);
        assert!(matches!(
            out.last(),
            Some(StreamEvent::ProcessExit { pid: 1, .. })
        ));
    }
}
