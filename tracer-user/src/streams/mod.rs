//! Stage 2, streams: turns chunks into per-connection, per-direction byte streams, and keeps
//! what is known of each connection (peer address, TLS server name, TLS object to socket link).
//!
//! Every chunk carries the number of bytes its connection carried before it in that direction,
//! as counted in the kernel; a chunk that does not continue where the previous one ended means
//! bytes were lost, and the stream says so with an explicit gap rather than joining the pieces.

mod recorder;
pub mod sni;
pub mod tls_records;

use std::collections::HashMap;

pub use recorder::StreamRecorder;
pub use tracer_common::{Direction, Source};

// What this stage emits; defined in the model, which every later stage reads.
pub use crate::model::{ConnKey, Peer, StreamEvent};

use crate::capture::{CaptureEvent, DataChunk};

/// Position of one direction of one connection.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    /// Offset of the next byte expected.
    next: u64,
    /// Where the last call seen ends: bytes up to here were sent, whether we saw them or not.
    call_end: u64,
}

#[derive(Default)]
pub struct StreamAssembler {
    positions: HashMap<(ConnKey, Direction), Position>,
    /// Socket peers, by (pid, fd).
    peers: HashMap<(u32, i32), Peer>,
    /// TLS objects using each socket, by (pid, fd).
    tls_on_socket: HashMap<(u32, i32), Vec<u64>>,
    /// Bytes before the first chunk of a stream seen after the tracer started.
    pub attached_late_bytes: u64,
    /// Streams whose count the kernel restarted (see `push_chunk`).
    pub count_restarts: u64,
}

impl StreamAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, event: CaptureEvent, out: &mut Vec<StreamEvent>) {
        match event {
            CaptureEvent::Data(chunk) => self.push_chunk(chunk, out),
            CaptureEvent::Connect {
                pid,
                fd,
                peer,
                accepted,
            } => {
                // A new connection on this fd: positions restart, as they do in the kernel.
                let conn = ConnKey::socket(pid, fd);
                self.positions.retain(|(c, _), _| *c != conn);
                self.tls_on_socket.remove(&(pid, fd));
                // An accepted socket's peer is a client, not a server to report.
                let peer = Peer {
                    address: if accepted { None } else { peer },
                    server_name: None,
                };
                self.peers.insert((pid, fd), peer.clone());
                out.push(StreamEvent::Peer { conn, peer });
            }
            CaptureEvent::ClientHello { pid, fd, record } => {
                let peer = self.peers.entry((pid, fd)).or_default();
                peer.server_name = sni::server_name(&record);
                let peer = peer.clone();
                for conn_id in self.tls_on_socket.get(&(pid, fd)).into_iter().flatten() {
                    out.push(StreamEvent::Peer {
                        conn: ConnKey {
                            pid,
                            source: Source::Tls,
                            conn_id: *conn_id,
                        },
                        peer: peer.clone(),
                    });
                }
            }
            CaptureEvent::TlsLink { pid, fd, conn_id } => {
                let linked = self.tls_on_socket.entry((pid, fd)).or_default();
                if !linked.contains(&conn_id) {
                    linked.push(conn_id);
                }
                if let Some(peer) = self.peers.get(&(pid, fd)) {
                    out.push(StreamEvent::Peer {
                        conn: ConnKey {
                            pid,
                            source: Source::Tls,
                            conn_id,
                        },
                        peer: peer.clone(),
                    });
                }
            }
            CaptureEvent::Close {
                pid,
                fd,
                timestamp_ns,
            } => {
                let mut closed = vec![ConnKey::socket(pid, fd)];
                closed.extend(
                    self.tls_on_socket
                        .remove(&(pid, fd))
                        .into_iter()
                        .flatten()
                        .map(|conn_id| ConnKey {
                            pid,
                            source: Source::Tls,
                            conn_id,
                        }),
                );
                self.peers.remove(&(pid, fd));
                for conn in closed {
                    self.flush_owed(|c| c == conn, timestamp_ns, out);
                    self.positions.retain(|(c, _), _| *c != conn);
                    out.push(StreamEvent::Closed { conn, timestamp_ns });
                }
            }
            CaptureEvent::ProcessExit {
                pid, timestamp_ns, ..
            } => {
                self.flush_owed(|c| c.pid == pid, timestamp_ns, out);
                self.positions.retain(|(conn, _), _| conn.pid != pid);
                self.peers.retain(|(p, _), _| *p != pid);
                self.tls_on_socket.retain(|(p, _), _| *p != pid);
                out.push(StreamEvent::ProcessExit { pid, timestamp_ns });
            }
            // Made into Data and TlsLink events by `tls_records` first.
            CaptureEvent::TlsRecord(_) | CaptureEvent::AeadLink { .. } => {}
            // Totals only: the pipeline reports them with the peer (`peer`), before the close.
            CaptureEvent::TlsSummary { .. }
            | CaptureEvent::Exec { .. }
            | CaptureEvent::ExecArgs { .. }
            | CaptureEvent::Fork { .. } => {}
        }
    }

    /// What is known of socket `fd`'s peer (its address, the SNI it asked for).
    /// Stream directions being reassembled now.
    pub fn streams(&self) -> usize {
        self.positions.len()
    }

    pub fn peer(&self, pid: u32, fd: i32) -> Option<&Peer> {
        self.peers.get(&(pid, fd))
    }

    /// Calls whose last bytes never arrived end in a gap.
    fn flush_owed(
        &self,
        matches: impl Fn(ConnKey) -> bool,
        timestamp_ns: u64,
        out: &mut Vec<StreamEvent>,
    ) {
        for ((conn, direction), pos) in &self.positions {
            if matches(*conn) && pos.call_end > pos.next {
                out.push(StreamEvent::Gap {
                    conn: *conn,
                    direction: *direction,
                    timestamp_ns,
                    len: pos.call_end - pos.next,
                });
            }
        }
    }

    fn push_chunk(&mut self, chunk: DataChunk, out: &mut Vec<StreamEvent>) {
        let conn = ConnKey {
            pid: chunk.pid,
            source: chunk.source,
            conn_id: chunk.conn_id,
        };
        let at = chunk.stream_offset + chunk.offset;
        let len = chunk.data.len() as u64;
        let call_end = chunk.stream_offset + chunk.call_len;
        let position = self.positions.entry((conn, chunk.direction));
        let pos = match position {
            std::collections::hash_map::Entry::Vacant(v) => {
                // First sight of this stream: bytes before it were sent before we looked.
                self.attached_late_bytes += at;
                v.insert(Position { next: at, call_end })
            }
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        };
        if at == 0 && chunk.offset == 0 && pos.next > 0 {
            // The kernel restarted this stream's count (a reused connection object, or its
            // counter was evicted): a new stream.
            *pos = Position { next: 0, call_end };
            self.count_restarts += 1;
        }
        if at > pos.next {
            out.push(StreamEvent::Gap {
                conn,
                direction: chunk.direction,
                timestamp_ns: chunk.timestamp_ns,
                len: at - pos.next,
            });
        } else if at + len <= pos.next {
            // Already seen (a duplicate): nothing new.
            return;
        }
        let skip = pos.next.saturating_sub(at) as usize;
        pos.next = at + len;
        pos.call_end = pos.call_end.max(call_end);
        out.push(StreamEvent::Data {
            conn,
            direction: chunk.direction,
            timestamp_ns: chunk.timestamp_ns,
            bytes: chunk.data.slice(skip..),
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn chunk(stream_offset: u64, call_len: u64, offset: u64, data: &'static [u8]) -> CaptureEvent {
        CaptureEvent::Data(DataChunk {
            pid: 1,
            source: Source::Tls,
            conn_id: 7,
            direction: Direction::Egress,
            timestamp_ns: stream_offset + offset,
            call_len,
            offset,
            stream_offset,
            cookie: 0,
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

    fn data(out: &[StreamEvent]) -> Vec<u8> {
        out.iter()
            .flat_map(|e| match e {
                StreamEvent::Data { bytes, .. } => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn contiguous_chunks_and_calls_make_no_gap() {
        let out = run(vec![
            chunk(0, 4, 0, b"ab"),
            chunk(0, 4, 2, b"cd"),
            chunk(4, 1, 0, b"e"),
        ]);
        assert_eq!(gaps(&out), Vec::<u64>::new());
        assert_eq!(data(&out), b"abcde");
    }

    #[test]
    fn missing_middle_chunk_is_an_explicit_gap() {
        let out = run(vec![chunk(0, 6, 0, b"ab"), chunk(0, 6, 4, b"ef")]);
        assert_eq!(gaps(&out), vec![2]);
    }

    #[test]
    fn a_wholly_lost_call_is_a_gap() {
        // Call [2, 5) never arrived: the next call starts at 5.
        let out = run(vec![chunk(0, 2, 0, b"ab"), chunk(5, 1, 0, b"x")]);
        assert_eq!(gaps(&out), vec![3]);
        assert_eq!(data(&out), b"abx");
    }

    #[test]
    fn unfinished_call_is_a_gap_when_the_process_exits() {
        let out = run(vec![
            chunk(0, 6, 0, b"ab"),
            CaptureEvent::ProcessExit {
                pid: 1,
                timestamp_ns: 9,
                status: None,
                exit_lost: false,
            },
        ]);
        assert_eq!(gaps(&out), vec![4]);
        assert!(matches!(
            out.last(),
            Some(StreamEvent::ProcessExit { pid: 1, .. })
        ));
    }

    #[test]
    fn late_attach_is_counted_and_duplicates_dropped() {
        let mut s = StreamAssembler::new();
        let mut out = Vec::new();
        s.push(chunk(100, 2, 0, b"ab"), &mut out);
        s.push(chunk(100, 2, 0, b"ab"), &mut out);
        assert_eq!(s.attached_late_bytes, 100);
        assert_eq!(data(&out), b"ab");
        assert_eq!(gaps(&out), Vec::<u64>::new());
    }

    #[test]
    fn restarted_count_is_a_new_stream() {
        let mut s = StreamAssembler::new();
        let mut out = Vec::new();
        for c in [chunk(0, 2, 0, b"ab"), chunk(0, 2, 0, b"cd")] {
            s.push(c, &mut out);
        }
        assert_eq!(data(&out), b"abcd");
        assert_eq!(s.count_restarts, 1);
    }

    #[test]
    fn close_ends_the_socket_and_its_tls_connections_with_their_peer() {
        let mut s = StreamAssembler::new();
        let mut out = Vec::new();
        s.push(
            CaptureEvent::Connect {
                pid: 1,
                fd: 5,
                peer: Some("127.0.0.1:443".parse().unwrap()),
                accepted: false,
            },
            &mut out,
        );
        s.push(
            CaptureEvent::TlsLink {
                pid: 1,
                fd: 5,
                conn_id: 7,
            },
            &mut out,
        );
        s.push(
            CaptureEvent::Close {
                pid: 1,
                fd: 5,
                timestamp_ns: 3,
            },
            &mut out,
        );
        let tls = ConnKey {
            pid: 1,
            source: Source::Tls,
            conn_id: 7,
        };
        assert!(out.contains(&StreamEvent::Peer {
            conn: tls,
            peer: Peer {
                address: Some("127.0.0.1:443".parse().unwrap()),
                server_name: None
            }
        }));
        assert!(out.contains(&StreamEvent::Closed {
            conn: tls,
            timestamp_ns: 3
        }));
        assert!(out.contains(&StreamEvent::Closed {
            conn: ConnKey::socket(1, 5),
            timestamp_ns: 3
        }));
    }
}
