//! TLS records seen at an AEAD's seal/open (rustls; `tracer-ebpf/src/aead.rs`) back into the
//! byte streams the rest of the pipeline reads, as if a TLS library's read/write call had
//! carried them.
//!
//! The kernel sends each record's plaintext whole (in `CHUNK_SIZE` pieces), tagged with its AEAD
//! key object, not with its connection: every key change (handshake to application keys, a key
//! update) makes a new key object, and the two directions of one connection have different
//! ones. So records are assigned to their socket:
//! - ingress: the kernel names the socket the thread last read (rustls decrypts right after
//!   reading, on the same thread);
//! - egress: rustls encrypts before it writes, on the same thread, so the kernel links the
//!   thread's last sealing key to its next TLS socket write (`AeadLink`); until that link
//!   arrives a key's records are held here.
//!
//! Both directions of a socket then share one connection id, so an HTTP request and its
//! response pair up as they do for `SSL_write`/`SSL_read`. The id changes when the fd is closed
//! or reused, as a TLS library's connection object would.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tracer_common::{Direction, Source};

use crate::capture::{CaptureEvent, DataChunk, TlsRecordChunk};

/// TLS content type of application data.
const APPLICATION_DATA: u8 = 23;
/// Tags the connection ids this stage makes, apart from pointers (TLS objects) and fds.
const CONN_TAG: u64 = 0xa3ad << 48;
/// Records held per key while its socket is unknown: a key never linked (its socket opened
/// before the tracer) must not grow without bound.
const MAX_HELD: usize = 256;
/// The longest plaintext one TLS record can carry (RFC 8446 §5.2: 2^14 bytes plus the inner
/// content type and padding, within the ciphertext's 2^14 + 256). The record length comes off
/// the traced program's stack: anything longer is not a record, whatever it claims.
pub const MAX_RECORD_PLAINTEXT: u64 = 16 * 1024 + 256;

/// One record, whole, with its type removed.
#[derive(Clone, Debug)]
struct Record {
    direction: Direction,
    fd: i32,
    timestamp_ns: u64,
    /// Bytes of the key's records lost before this one (kernel drops).
    lost_before: u64,
    /// The attach cookie of the probe that saw it.
    cookie: u32,
    data: Bytes,
}

/// A record whose pieces are still arriving.
struct Partial {
    first: TlsRecordChunk,
    buf: BytesMut,
}

#[derive(Default)]
pub struct TlsRecords {
    partial: HashMap<(u32, u64, Direction), Partial>,
    /// Where each key's next record starts, as the kernel counts (to see losses).
    key_next: HashMap<(u32, u64, Direction), u64>,
    /// Sealing keys whose socket is known.
    key_fd: HashMap<(u32, u64), i32>,
    /// Sealed records waiting for their key's link.
    held: HashMap<(u32, u64), Vec<Record>>,
    /// How many connections each (pid, fd) has had: part of the connection id.
    generation: HashMap<(u32, i32), u32>,
    /// Connections announced to the streams stage (a `TlsLink`), by (pid, conn id).
    announced: HashMap<(u32, u64), ()>,
    /// Stream position per (pid, conn id, direction).
    positions: HashMap<(u32, u64, Direction), u64>,
    /// Records dropped (held too long, with no socket to give them, or claiming a length no
    /// TLS record has) since the last [`TlsRecords::take_unassigned`].
    unassigned_records: u64,
}

impl TlsRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records dropped since the last call, for the health counter.
    pub fn take_unassigned(&mut self) -> u64 {
        std::mem::take(&mut self.unassigned_records)
    }

    /// Takes one capture event; puts what the next stages should see into `out` (every event
    /// that is not an AEAD one, unchanged and in order).
    pub fn push(&mut self, event: CaptureEvent, out: &mut Vec<CaptureEvent>) {
        match event {
            CaptureEvent::TlsRecord(chunk) => self.push_chunk(chunk, out),
            CaptureEvent::AeadLink { pid, fd, key, .. } => {
                self.key_fd.insert((pid, key), fd);
                for record in self.held.remove(&(pid, key)).unwrap_or_default() {
                    self.emit(pid, Record { fd, ..record }, out);
                }
            }
            CaptureEvent::Close { pid, fd, .. } | CaptureEvent::Connect { pid, fd, .. } => {
                // The socket's keys die with it; a new connection on the fd is a new stream.
                self.key_fd.retain(|(p, _), f| !(*p == pid && *f == fd));
                *self.generation.entry((pid, fd)).or_default() += 1;
                out.push(event);
            }
            CaptureEvent::ProcessExit { pid, .. } => {
                self.partial.retain(|(p, _, _), _| *p != pid);
                self.key_next.retain(|(p, _, _), _| *p != pid);
                self.key_fd.retain(|(p, _), _| *p != pid);
                self.held.retain(|(p, _), _| *p != pid);
                self.generation.retain(|(p, _), _| *p != pid);
                self.announced.retain(|(p, _), _| *p != pid);
                self.positions.retain(|(p, _, _), _| *p != pid);
                out.push(event);
            }
            other => out.push(other),
        }
    }

    fn push_chunk(&mut self, chunk: TlsRecordChunk, out: &mut Vec<CaptureEvent>) {
        let slot = (chunk.pid, chunk.key, chunk.direction);
        if chunk.record_len > MAX_RECORD_PLAINTEXT {
            if chunk.offset == 0 {
                self.unassigned_records += 1;
            }
            self.partial.remove(&slot);
            return;
        }
        if chunk.offset == 0 {
            // A record starts; an unfinished one before it lost pieces and is dropped (the
            // key's offsets then show the loss).
            let mut buf = BytesMut::with_capacity(chunk.record_len as usize);
            buf.extend_from_slice(&chunk.data);
            self.partial.insert(slot, Partial { first: chunk, buf });
        } else {
            match self.partial.get_mut(&slot) {
                Some(p) if p.buf.len() as u64 == chunk.offset => {
                    p.buf.extend_from_slice(&chunk.data)
                }
                _ => {
                    self.partial.remove(&slot);
                    return;
                }
            }
        }
        let complete = self
            .partial
            .get(&slot)
            .is_some_and(|p| p.buf.len() as u64 >= p.first.record_len);
        if !complete {
            return;
        }
        let Some(Partial { first, buf }) = self.partial.remove(&slot) else {
            return;
        };
        let next = self.key_next.entry(slot).or_insert(first.key_offset);
        let lost_before = first.key_offset.saturating_sub(*next);
        *next = first.key_offset.saturating_add(first.record_len);
        let Some(data) = application_data(buf.freeze(), first.tls13) else {
            return;
        };
        let record = Record {
            direction: first.direction,
            fd: first.fd,
            timestamp_ns: first.timestamp_ns,
            lost_before,
            cookie: first.cookie,
            data,
        };
        let key = (first.pid, first.key);
        match first.direction {
            Direction::Ingress if first.fd >= 0 => self.emit(first.pid, record, out),
            _ => match self.key_fd.get(&key) {
                Some(fd) => {
                    let fd = *fd;
                    self.emit(first.pid, Record { fd, ..record }, out)
                }
                None => {
                    let held = self.held.entry(key).or_default();
                    if held.len() >= MAX_HELD {
                        held.remove(0);
                        self.unassigned_records += 1;
                    }
                    held.push(record);
                }
            },
        }
    }

    fn emit(&mut self, pid: u32, record: Record, out: &mut Vec<CaptureEvent>) {
        let generation = self.generation.get(&(pid, record.fd)).copied().unwrap_or(0);
        let conn_id = CONN_TAG | (u64::from(generation & 0xffff) << 32) | record.fd as u32 as u64;
        if self.announced.insert((pid, conn_id), ()).is_none() {
            out.push(CaptureEvent::TlsLink {
                pid,
                fd: record.fd,
                conn_id,
            });
        }
        if record.data.is_empty() {
            return;
        }
        let position = self
            .positions
            .entry((pid, conn_id, record.direction))
            .or_default();
        // A loss shows as a jump in the stream, which the streams stage turns into a gap.
        *position += record.lost_before;
        let len = record.data.len() as u64;
        out.push(CaptureEvent::Data(DataChunk {
            pid,
            source: Source::Tls,
            conn_id,
            direction: record.direction,
            timestamp_ns: record.timestamp_ns,
            call_len: len,
            offset: 0,
            stream_offset: *position,
            // Judged by the validator, which sees the records as the byte stream they make.
            cookie: record.cookie,
            data: record.data,
        }));
        *position += len;
    }
}

/// The application data a record's plaintext carries, `None` for other content (handshake
/// messages, alerts). TLS 1.3's inner plaintext is data, then the real content type, then zero
/// padding (RFC 8446 5.4); TLS 1.2's plaintext is the data itself (the kernel sends only
/// application-data records).
fn application_data(plaintext: Bytes, tls13: bool) -> Option<Bytes> {
    if !tls13 {
        return Some(plaintext);
    }
    let type_at = plaintext.iter().rposition(|b| *b != 0)?;
    (plaintext[type_at] == APPLICATION_DATA).then(|| plaintext.slice(..type_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record length read off a hostile program's stack: no allocation of that size, no
    /// panic, the record counted as dropped, and the key's next real record still delivered.
    #[test]
    fn a_record_claiming_a_huge_length_is_dropped_and_counted() {
        for claimed in [u64::MAX, 1 << 40, MAX_RECORD_PLAINTEXT + 1] {
            let mut records = TlsRecords::new();
            let mut out = Vec::new();
            records.push(link(5, KEY_OUT), &mut out);
            let mut bogus = chunks(KEY_OUT, Direction::Egress, -1, 0, b"x", 1);
            if let CaptureEvent::TlsRecord(c) = &mut bogus[0] {
                c.record_len = claimed;
            }
            for event in bogus {
                records.push(event, &mut out);
            }
            assert_eq!(records.take_unassigned(), 1, "claimed {claimed}");
            assert!(records.partial.is_empty());
            let real = inner(b"GET / HTTP/1.1\r\n", APPLICATION_DATA, 0);
            for event in chunks(KEY_OUT, Direction::Egress, -1, 0, &real, 4) {
                records.push(event, &mut out);
            }
            assert!(
                out.iter().any(
                    |e| matches!(e, CaptureEvent::Data(d) if &d.data[..] == b"GET / HTTP/1.1\r\n")
                ),
                "{out:#?}"
            );
        }
    }

    const KEY_OUT: u64 = 0x5555_0000_1000;
    const KEY_IN: u64 = 0x5555_0000_2000;

    /// The kernel's records for one record's plaintext, cut at `cut` (the kernel cuts at
    /// `CHUNK_SIZE`; any cut must give the same result).
    fn chunks(
        key: u64,
        direction: Direction,
        fd: i32,
        key_offset: u64,
        plaintext: &[u8],
        cut: usize,
    ) -> Vec<CaptureEvent> {
        let cut = cut.max(1);
        plaintext
            .chunks(cut)
            .enumerate()
            .map(|(i, piece)| {
                CaptureEvent::TlsRecord(TlsRecordChunk {
                    pid: 7,
                    tid: 8,
                    key,
                    direction,
                    tls13: true,
                    fd,
                    timestamp_ns: 1,
                    record_len: plaintext.len() as u64,
                    offset: (i * cut) as u64,
                    key_offset,
                    cookie: 0,
                    data: Bytes::copy_from_slice(piece),
                })
            })
            .collect()
    }

    fn inner(data: &[u8], typ: u8, padding: usize) -> Vec<u8> {
        let mut v = data.to_vec();
        v.push(typ);
        v.extend(std::iter::repeat_n(0, padding));
        v
    }

    fn link(fd: i32, key: u64) -> CaptureEvent {
        CaptureEvent::AeadLink {
            pid: 7,
            tid: 8,
            fd,
            key,
        }
    }

    /// (direction, conn id, stream offset, bytes) of the data events.
    fn data_of(out: &[CaptureEvent]) -> Vec<(Direction, u64, u64, Vec<u8>)> {
        out.iter()
            .filter_map(|e| match e {
                CaptureEvent::Data(c) => {
                    Some((c.direction, c.conn_id, c.stream_offset, c.data.to_vec()))
                }
                _ => None,
            })
            .collect()
    }

    fn stream(out: &[CaptureEvent], direction: Direction) -> Vec<u8> {
        data_of(out)
            .into_iter()
            .filter(|d| d.0 == direction)
            .flat_map(|d| d.3)
            .collect()
    }

    #[test]
    fn sealed_records_wait_for_their_socket_and_share_it_with_the_answers() {
        let mut t = TlsRecords::new();
        let mut out = Vec::new();
        // A handshake message under the handshake key: dropped, whatever its socket.
        for e in chunks(
            0x99,
            Direction::Egress,
            -1,
            0,
            &inner(b"\x14\x00\x00\x20", 22, 0),
            64,
        ) {
            t.push(e, &mut out);
        }
        t.push(link(5, 0x99), &mut out);
        for e in chunks(
            KEY_OUT,
            Direction::Egress,
            -1,
            0,
            &inner(b"POST / HTTP/1.1\r\n", 23, 0),
            4,
        ) {
            t.push(e, &mut out);
        }
        assert!(
            data_of(&out).is_empty(),
            "held until the write names the socket"
        );
        t.push(link(5, KEY_OUT), &mut out);
        for e in chunks(
            KEY_IN,
            Direction::Ingress,
            5,
            0,
            &inner(b"HTTP/1.1 200 OK\r\n", 23, 3),
            5,
        ) {
            t.push(e, &mut out);
        }
        let data = data_of(&out);
        assert_eq!(data.len(), 2);
        assert_eq!(data[0].1, data[1].1, "both directions: one connection");
        assert_eq!(stream(&out, Direction::Egress), b"POST / HTTP/1.1\r\n");
        assert_eq!(stream(&out, Direction::Ingress), b"HTTP/1.1 200 OK\r\n");
        let links: Vec<_> = out
            .iter()
            .filter(|e| matches!(e, CaptureEvent::TlsLink { fd: 5, .. }))
            .collect();
        assert_eq!(links.len(), 1, "announced once: {out:?}");
    }

    #[test]
    fn a_reused_fd_is_a_new_connection() {
        let mut t = TlsRecords::new();
        let mut out = Vec::new();
        for e in chunks(KEY_IN, Direction::Ingress, 5, 0, &inner(b"one", 23, 0), 16) {
            t.push(e, &mut out);
        }
        t.push(
            CaptureEvent::Close {
                pid: 7,
                fd: 5,
                timestamp_ns: 2,
            },
            &mut out,
        );
        for e in chunks(
            KEY_IN + 1,
            Direction::Ingress,
            5,
            0,
            &inner(b"two", 23, 0),
            16,
        ) {
            t.push(e, &mut out);
        }
        let data = data_of(&out);
        assert_ne!(data[0].1, data[1].1);
        assert_eq!((data[1].2, &data[1].3[..]), (0, &b"two"[..]));
        assert!(
            matches!(out[2], CaptureEvent::Close { .. }),
            "passed on in order"
        );
    }

    #[test]
    fn lost_records_leave_a_jump_and_torn_records_are_dropped() {
        let mut t = TlsRecords::new();
        let mut out = Vec::new();
        let first = inner(b"aaaa", 23, 0);
        for e in chunks(KEY_IN, Direction::Ingress, 5, 0, &first, 16) {
            t.push(e, &mut out);
        }
        // The next record (10 bytes) never arrived; of the one after, only its second piece.
        let mut torn = chunks(
            KEY_IN,
            Direction::Ingress,
            5,
            15,
            &inner(b"bbbbbb", 23, 0),
            3,
        );
        torn.remove(0);
        for e in torn {
            t.push(e, &mut out);
        }
        for e in chunks(KEY_IN, Direction::Ingress, 5, 22, &inner(b"cc", 23, 0), 16) {
            t.push(e, &mut out);
        }
        let data = data_of(&out);
        assert_eq!(data.len(), 2);
        assert_eq!((data[0].2, &data[0].3[..]), (0, &b"aaaa"[..]));
        assert_eq!(data[1].2, 4 + 17, "17 bytes of records lost in between");
        assert_eq!(&data[1].3[..], b"cc");
    }

    #[test]
    fn tls12_records_are_data_as_they_are() {
        assert_eq!(
            application_data(Bytes::from_static(b"GET /\0"), false).as_deref(),
            Some(&b"GET /\0"[..])
        );
        assert_eq!(application_data(Bytes::from_static(b"\0\0\0"), true), None);
        assert_eq!(application_data(Bytes::from_static(b"x\x15"), true), None);
    }

    proptest! {
        #[test]
        fn any_cut_of_records_gives_the_same_stream(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            cut in 1usize..400,
            padding in 0usize..4,
        ) {
            let mut t = TlsRecords::new();
            let mut out = Vec::new();
            let mut key_offset = 0;
            for m in &messages {
                let plaintext = inner(m, 23, padding);
                for e in chunks(KEY_OUT, Direction::Egress, -1, key_offset, &plaintext, cut) {
                    t.push(e, &mut out);
                }
                key_offset += plaintext.len() as u64;
            }
            t.push(link(9, KEY_OUT), &mut out);
            prop_assert_eq!(stream(&out, Direction::Egress), messages.concat());
            let mut expect = 0;
            for (_, _, at, bytes) in data_of(&out) {
                prop_assert_eq!(at, expect);
                expect += bytes.len() as u64;
            }
        }
    }
}
