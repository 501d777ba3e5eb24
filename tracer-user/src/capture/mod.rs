//! Stage 1, capture: loads and attaches the kernel programs, reads the ring buffer and turns raw
//! records into typed events. Never blocks the kernel side: when the next stage is behind,
//! records are dropped and counted.

mod libssl;
mod loader;
pub mod reader;
mod system;

use bytes::Bytes;
use thiserror::Error;
use tracer_common::{Direction, RecordHeader, RecordKind, RECORD_HEADER_SIZE};

pub use loader::Capture;
pub use system::prepare_host;

/// Bytes that crossed a TLS call, as one ring-buffer record carried them.
#[derive(Clone, Debug)]
pub struct TlsChunk {
    pub pid: u32,
    pub tid: u32,
    pub conn_id: u64,
    pub direction: Direction,
    /// CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
    /// Total bytes of the call this chunk belongs to.
    pub call_len: u64,
    /// Offset of `data` within the call.
    pub offset: u64,
    pub data: Bytes,
}

#[derive(Clone, Debug)]
pub enum CaptureEvent {
    Tls(TlsChunk),
    ProcessExit { pid: u32, timestamp_ns: u64 },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record says {declared} payload bytes but carries {actual}")]
    Length { declared: usize, actual: usize },
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("unknown direction {0}")]
    Direction(u32),
}

/// Decodes one ring-buffer record. Pure: fed by tests with hand-made records.
pub fn decode_record(record: &[u8]) -> Result<CaptureEvent, DecodeError> {
    if record.len() < RECORD_HEADER_SIZE {
        return Err(DecodeError::Short(record.len()));
    }
    // Safety: length checked above; RecordHeader is plain old data and read unaligned.
    let header: RecordHeader =
        unsafe { std::ptr::read_unaligned(record.as_ptr() as *const RecordHeader) };
    match header.kind {
        k if k == RecordKind::ProcessExit as u32 => Ok(CaptureEvent::ProcessExit {
            pid: header.pid,
            timestamp_ns: header.timestamp_ns,
        }),
        k if k == RecordKind::TlsData as u32 => {
            let direction = match header.direction {
                d if d == Direction::Egress as u32 => Direction::Egress,
                d if d == Direction::Ingress as u32 => Direction::Ingress,
                d => return Err(DecodeError::Direction(d)),
            };
            let declared = header.chunk_len as usize;
            let payload = &record[RECORD_HEADER_SIZE..];
            // The ring buffer rounds records up to 8 bytes, so the payload may be longer.
            if payload.len() < declared {
                return Err(DecodeError::Length {
                    declared,
                    actual: payload.len(),
                });
            }
            Ok(CaptureEvent::Tls(TlsChunk {
                pid: header.pid,
                tid: header.tid,
                conn_id: header.conn_id,
                direction,
                timestamp_ns: header.timestamp_ns,
                call_len: header.call_len,
                offset: header.offset,
                data: Bytes::copy_from_slice(&payload[..declared]),
            }))
        }
        k => Err(DecodeError::Kind(k)),
    }
}

/// Converts the kernel's CLOCK_MONOTONIC timestamps to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(monotonic_ns as i128 + self.offset_ns).unwrap_or(0)
    }

    pub fn monotonic_now_ns() -> u64 {
        u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: valid pointer to a timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, direction: u32, payload: &[u8], declared: u32) -> Vec<u8> {
        let header = RecordHeader {
            kind,
            direction,
            function: 1,
            pid: 42,
            tid: 43,
            chunk_len: declared,
            timestamp_ns: 1000,
            conn_id: 0xdead,
            call_len: payload.len() as u64,
            offset: 0,
        };
        let mut out = vec![0u8; RECORD_HEADER_SIZE];
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr() as *mut RecordHeader, header) };
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_tls_chunk_and_ignores_ring_padding() {
        let mut rec = record(1, 1, b"hello", 5);
        rec.extend_from_slice(&[0, 0, 0]);
        let CaptureEvent::Tls(chunk) = decode_record(&rec).unwrap() else {
            panic!("not a TLS chunk")
        };
        assert_eq!(chunk.pid, 42);
        assert_eq!(chunk.direction, Direction::Ingress);
        assert_eq!(&chunk.data[..], b"hello");
    }

    #[test]
    fn rejects_bad_records_without_panicking() {
        assert!(matches!(
            decode_record(&[1, 2, 3]),
            Err(DecodeError::Short(3))
        ));
        assert!(matches!(
            decode_record(&record(1, 0, b"ab", 10)),
            Err(DecodeError::Length {
                declared: 10,
                actual: 2
            })
        ));
        assert!(matches!(
            decode_record(&record(9, 0, b"", 0)),
            Err(DecodeError::Kind(9))
        ));
        assert!(matches!(
            decode_record(&record(1, 7, b"", 0)),
            Err(DecodeError::Direction(7))
        ));
    }

    #[test]
    fn decodes_process_exit() {
        assert!(matches!(
            decode_record(&record(2, 0, b"", 0)),
            Ok(CaptureEvent::ProcessExit {
                pid: 42,
                timestamp_ns: 1000
            })
        ));
    }
}
