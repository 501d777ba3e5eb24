//! Stage 1, capture: loads and attaches the kernel programs, reads the ring buffer and turns raw
//! records into typed events. Never blocks the kernel side: when the next stage is behind,
//! records are dropped and counted.

mod attacher;
pub mod compat;
pub mod gotls;
mod libssl;
mod loader;
pub mod locate;
pub mod preattach;
pub mod reader;
mod stdio;
mod system;
pub mod targets;
pub mod validate;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use thiserror::Error;
use tracer_common::{
    Direction, RecordHeader, RecordKind, SocketRecord, Source, TlsFunction, TlsTotals,
    EXIT_STATUS_KNOWN, RECORD_HEADER_SIZE,
};

pub use attacher::{all_pids, Attacher, ExecSeen, HookCoverage};
pub use libssl::mapped_paths;
pub use loader::{Capture, IgnoredPids};
pub use system::prepare_host;

/// Bytes that crossed a TLS library call or a socket syscall, as one ring-buffer record carried
/// them.
#[derive(Clone, Debug)]
pub struct DataChunk {
    pub pid: u32,
    pub source: Source,
    /// The TLS connection object, the fd for sockets, the pair id for stdio.
    pub conn_id: u64,
    pub direction: Direction,
    /// CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
    /// Total bytes of the call this chunk belongs to.
    pub call_len: u64,
    /// Offset of `data` within the call.
    pub offset: u64,
    /// Bytes the connection carried in this direction before the call.
    pub stream_offset: u64,
    /// The attach cookie of an inferred hook (see `validate.rs`); 0 for hooks on symbols and
    /// socket records.
    pub cookie: u32,
    pub data: Bytes,
}

/// A piece of one TLS record's plaintext, from an AEAD probe.
#[derive(Clone, Debug)]
pub struct TlsRecordChunk {
    pub pid: u32,
    pub tid: u32,
    /// The AEAD key object: one direction of one connection, until the keys change.
    pub key: u64,
    pub direction: Direction,
    /// TLS 1.3 inner plaintext (content type and padding at the end) or TLS 1.2 data.
    pub tls13: bool,
    /// The socket, when the kernel knew it (ingress: the thread's last TLS read), else -1.
    pub fd: i32,
    pub timestamp_ns: u64,
    /// The record's plaintext length.
    pub record_len: u64,
    /// Offset of `data` within the record.
    pub offset: u64,
    /// Bytes sealed/opened with this key before this record, as far as the kernel saw.
    pub key_offset: u64,
    /// The probe's attach cookie (see `validate.rs`), carried to the Data it becomes.
    pub cookie: u32,
    pub data: Bytes,
}

#[derive(Clone, Debug)]
pub enum CaptureEvent {
    Data(DataChunk),
    /// A socket connected (`accepted` false) or was accepted.
    Connect {
        pid: u32,
        fd: i32,
        peer: Option<SocketAddr>,
        accepted: bool,
    },
    Close {
        pid: u32,
        fd: i32,
        timestamp_ns: u64,
    },
    /// The TLS connection object `conn_id` uses socket `fd`.
    TlsLink {
        pid: u32,
        fd: i32,
        conn_id: u64,
    },
    /// One TLS record's plaintext (or a `CHUNK_SIZE` piece of it) as an AEAD seal/open saw it
    /// (rustls; see `tracer-ebpf/src/aead.rs`): not yet a byte stream, `streams::tls_records`
    /// makes it one.
    TlsRecord(TlsRecordChunk),
    /// Thread `tid` of `pid` wrote to socket `fd` after sealing records with AEAD key `key`.
    AeadLink {
        pid: u32,
        tid: u32,
        fd: i32,
        key: u64,
    },
    /// The first TLS record the socket sent.
    ClientHello {
        pid: u32,
        fd: i32,
        record: Bytes,
    },
    /// A TLS client connection no hook saw from inside ended: what the kernel counted of it.
    TlsSummary {
        pid: u32,
        fd: i32,
        /// When the kernel reported it (close, or the process's exit).
        timestamp_ns: u64,
        totals: TlsTotals,
    },
    Exec {
        pid: u32,
        filename: String,
        timestamp_ns: u64,
        /// The process's cgroup v2 id as the kernel read it at exec (0: no cgroup v2): names
        /// its container even when the process is gone before its /proc entry is read.
        cgroup_id: u64,
    },
    /// The arguments of an execve the thread `tid` of `pid` made (the exec may still fail).
    ExecArgs {
        pid: u32,
        tid: u32,
        args: Vec<String>,
    },
    /// Process `parent` created process `child` (new threads are not reported).
    Fork {
        parent: u32,
        child: u32,
        timestamp_ns: u64,
    },
    ProcessExit {
        pid: u32,
        timestamp_ns: u64,
        /// The status passed to `exit_group`; `None` when a signal ended the process.
        status: Option<i32>,
    },
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
    #[error("unknown source {0}")]
    Source(u32),
}

/// Strings separated by NULs (a command line, as the kernel and /proc/PID/cmdline give it).
pub fn nul_separated(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Decodes one ring-buffer record. Pure: fed by tests with hand-made records.
pub fn decode_record(record: &[u8]) -> Result<CaptureEvent, DecodeError> {
    if record.len() < RECORD_HEADER_SIZE {
        return Err(DecodeError::Short(record.len()));
    }
    // Safety: length checked above; RecordHeader is plain old data and read unaligned.
    let h: RecordHeader =
        unsafe { std::ptr::read_unaligned(record.as_ptr() as *const RecordHeader) };
    let declared = h.chunk_len as usize;
    let payload = &record[RECORD_HEADER_SIZE..];
    // The ring buffer rounds records up to 8 bytes, so the payload may be longer.
    if payload.len() < declared {
        return Err(DecodeError::Length {
            declared,
            actual: payload.len(),
        });
    }
    let payload = &payload[..declared];
    let fd = h.fd;
    Ok(match h.kind {
        k if k == RecordKind::Data as u32
            && (h.function == TlsFunction::AeadTls13 as u32
                || h.function == TlsFunction::AeadTls12 as u32) =>
        {
            CaptureEvent::TlsRecord(TlsRecordChunk {
                pid: h.pid,
                tid: h.tid,
                key: h.conn_id,
                direction: direction(h.direction)?,
                tls13: h.function == TlsFunction::AeadTls13 as u32,
                fd,
                timestamp_ns: h.timestamp_ns,
                record_len: h.call_len,
                offset: h.offset,
                key_offset: h.stream_offset,
                cookie: h.cookie,
                data: Bytes::copy_from_slice(payload),
            })
        }
        k if k == RecordKind::AeadLink as u32 => CaptureEvent::AeadLink {
            pid: h.pid,
            tid: h.tid,
            fd,
            key: socket_record(payload).map(|r| r.ssl).unwrap_or(0),
        },
        k if k == RecordKind::Data as u32 => CaptureEvent::Data(DataChunk {
            pid: h.pid,
            source: source(h.source)?,
            conn_id: h.conn_id,
            direction: direction(h.direction)?,
            timestamp_ns: h.timestamp_ns,
            call_len: h.call_len,
            offset: h.offset,
            stream_offset: h.stream_offset,
            cookie: h.cookie,
            data: Bytes::copy_from_slice(payload),
        }),
        k if k == RecordKind::ProcessExit as u32 => CaptureEvent::ProcessExit {
            pid: h.pid,
            timestamp_ns: h.timestamp_ns,
            status: (h.function == EXIT_STATUS_KNOWN).then_some(h.offset as u32 as i32),
        },
        k if k == RecordKind::ProcessFork as u32 => CaptureEvent::Fork {
            parent: h.pid,
            child: h.conn_id as u32,
            timestamp_ns: h.timestamp_ns,
        },
        k if k == RecordKind::ProcessArgs as u32 => CaptureEvent::ExecArgs {
            pid: h.pid,
            tid: h.tid,
            args: nul_separated(payload),
        },
        k if k == RecordKind::Connect as u32 || k == RecordKind::Accept as u32 => {
            CaptureEvent::Connect {
                pid: h.pid,
                fd,
                peer: socket_record(payload).and_then(|r| peer_address(&r)),
                accepted: k == RecordKind::Accept as u32,
            }
        }
        k if k == RecordKind::Close as u32 => CaptureEvent::Close {
            pid: h.pid,
            fd,
            timestamp_ns: h.timestamp_ns,
        },
        k if k == RecordKind::TlsLink as u32 => CaptureEvent::TlsLink {
            pid: h.pid,
            fd,
            conn_id: socket_record(payload).map(|r| r.ssl).unwrap_or(0),
        },
        k if k == RecordKind::TlsClientHello as u32 => CaptureEvent::ClientHello {
            pid: h.pid,
            fd,
            record: Bytes::copy_from_slice(payload),
        },
        k if k == RecordKind::TlsSummary as u32 => CaptureEvent::TlsSummary {
            pid: h.pid,
            fd,
            timestamp_ns: h.timestamp_ns,
            totals: tls_totals(payload).ok_or(DecodeError::Length {
                declared: std::mem::size_of::<TlsTotals>(),
                actual: payload.len(),
            })?,
        },
        k if k == RecordKind::ProcessExec as u32 => {
            let end = payload
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(payload.len());
            CaptureEvent::Exec {
                pid: h.pid,
                filename: String::from_utf8_lossy(&payload[..end]).into_owned(),
                timestamp_ns: h.timestamp_ns,
                cgroup_id: h.conn_id,
            }
        }
        k => return Err(DecodeError::Kind(k)),
    })
}

fn direction(raw: u32) -> Result<Direction, DecodeError> {
    match raw {
        d if d == Direction::Egress as u32 => Ok(Direction::Egress),
        d if d == Direction::Ingress as u32 => Ok(Direction::Ingress),
        d => Err(DecodeError::Direction(d)),
    }
}

fn source(raw: u32) -> Result<Source, DecodeError> {
    match raw {
        s if s == Source::Tls as u32 => Ok(Source::Tls),
        s if s == Source::Socket as u32 => Ok(Source::Socket),
        s if s == Source::Stdio as u32 => Ok(Source::Stdio),
        s => Err(DecodeError::Source(s)),
    }
}

fn socket_record(payload: &[u8]) -> Option<SocketRecord> {
    (payload.len() >= std::mem::size_of::<SocketRecord>())
        // Safety: length checked; plain old data read unaligned.
        .then(|| unsafe { std::ptr::read_unaligned(payload.as_ptr() as *const SocketRecord) })
}

fn tls_totals(payload: &[u8]) -> Option<TlsTotals> {
    (payload.len() >= std::mem::size_of::<TlsTotals>())
        // Safety: length checked; plain old data read unaligned.
        .then(|| unsafe { std::ptr::read_unaligned(payload.as_ptr() as *const TlsTotals) })
}

/// The peer of a socket record, when it is an IPv4/IPv6 address.
pub fn peer_address(r: &SocketRecord) -> Option<SocketAddr> {
    let ip = match r.family {
        2 => IpAddr::V4(Ipv4Addr::new(r.addr[0], r.addr[1], r.addr[2], r.addr[3])),
        10 => {
            let v6 = Ipv6Addr::from(r.addr);
            // IPv4-mapped addresses read better as IPv4.
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, r.port))
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
            stream_offset: 0,
            source: 0,
            fd: -1,
            cookie: 0,
            _pad: 0,
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
        let CaptureEvent::Data(chunk) = decode_record(&rec).unwrap() else {
            panic!("not a TLS chunk")
        };
        assert_eq!(chunk.pid, 42);
        assert_eq!(chunk.direction, Direction::Ingress);
        assert_eq!(&chunk.data[..], b"hello");
    }

    #[test]
    fn decodes_tls_totals_and_rejects_a_short_one() {
        let totals = TlsTotals {
            sent: 517,
            received: 4000,
            start_ns: 10,
            first_response_ns: 20,
            last_response_ns: 30,
            last_ns: 31,
            turns: 2,
            last_direction: 0,
        };
        let size = std::mem::size_of::<TlsTotals>();
        let mut payload = vec![0u8; size];
        unsafe { std::ptr::write_unaligned(payload.as_mut_ptr() as *mut TlsTotals, totals) };
        let rec = record(RecordKind::TlsSummary as u32, 0, &payload, size as u32);
        let CaptureEvent::TlsSummary {
            pid, totals: got, ..
        } = decode_record(&rec).unwrap()
        else {
            panic!("not a TLS summary")
        };
        assert_eq!((pid, got), (42, totals));
        let short = record(RecordKind::TlsSummary as u32, 0, &payload[..8], 8);
        assert!(matches!(
            decode_record(&short),
            Err(DecodeError::Length { .. })
        ));
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
    fn decodes_peer_addresses() {
        let mut r = SocketRecord {
            family: 2,
            port: 8443,
            ..Default::default()
        };
        r.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(peer_address(&r), Some("127.0.0.1:8443".parse().unwrap()));
        let mut r6 = SocketRecord {
            family: 10,
            port: 443,
            ..Default::default()
        };
        r6.addr[15] = 1;
        assert_eq!(peer_address(&r6), Some("[::1]:443".parse().unwrap()));
        r6.addr = Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped().octets();
        assert_eq!(peer_address(&r6), Some("10.0.0.7:443".parse().unwrap()));
        assert_eq!(peer_address(&SocketRecord::default()), None);
    }

    #[test]
    fn decodes_exec_with_its_cgroup_id() {
        let rec = record(
            RecordKind::ProcessExec as u32,
            0,
            b"/usr/bin/curl\0\0\0",
            16,
        );
        let CaptureEvent::Exec {
            pid,
            filename,
            cgroup_id,
            ..
        } = decode_record(&rec).unwrap()
        else {
            panic!("not an exec")
        };
        assert_eq!(
            (pid, filename.as_str(), cgroup_id),
            (42, "/usr/bin/curl", 0xdead)
        );
    }

    #[test]
    fn decodes_process_exit() {
        let mut exit = record(2, 0, b"", 0);
        // function 0: no exit_group was seen.
        exit[8..12].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(
            decode_record(&exit),
            Ok(CaptureEvent::ProcessExit {
                pid: 42,
                timestamp_ns: 1000,
                status: None,
            })
        ));
    }

    #[test]
    fn decodes_exit_status_fork_and_args() {
        let mut exit = record(2, 0, b"", 0);
        // function = EXIT_STATUS_KNOWN, offset = status 3.
        exit[8..12].copy_from_slice(&1u32.to_ne_bytes());
        let offset_at = std::mem::offset_of!(RecordHeader, offset);
        exit[offset_at..offset_at + 8].copy_from_slice(&3u64.to_ne_bytes());
        assert!(matches!(
            decode_record(&exit),
            Ok(CaptureEvent::ProcessExit {
                status: Some(3),
                ..
            })
        ));
        let args = record(20, 0, b"sh\0-c\0echo hi\0", 14);
        match decode_record(&args) {
            Ok(CaptureEvent::ExecArgs { pid: 42, args, .. }) => {
                assert_eq!(args, ["sh", "-c", "echo hi"])
            }
            other => panic!("{other:?}"),
        }
        let mut fork = record(21, 0, b"", 0);
        let conn_at = std::mem::offset_of!(RecordHeader, conn_id);
        fork[conn_at..conn_at + 8].copy_from_slice(&77u64.to_ne_bytes());
        assert!(matches!(
            decode_record(&fork),
            Ok(CaptureEvent::Fork {
                parent: 42,
                child: 77,
                ..
            })
        ));
    }
}
