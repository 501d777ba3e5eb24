//! Ring-buffer records to typed events: the user side of the kernel contract in
//! `tracer-common`. Every raw integer of the header becomes its enum here, once, so a record of
//! an unknown kind (a kernel program built from another version) is an error, not a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use thiserror::Error;
use tracer_common::{
    Direction, RecordHeader, RecordKind, SocketRecord, Source, TlsFunction, TlsTotals,
    EXIT_STATUS_KNOWN, RECORD_HEADER_SIZE,
};

use super::{CaptureEvent, DataChunk, TlsRecordChunk};

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
    let kind = RecordKind::try_from(h.kind).map_err(|e| DecodeError::Kind(e.value))?;
    Ok(match kind {
        RecordKind::Data => match aead_record(h.function) {
            Some(tls13) => CaptureEvent::TlsRecord(TlsRecordChunk {
                pid: h.pid,
                tid: h.tid,
                key: h.conn_id,
                direction: direction(h.direction)?,
                tls13,
                fd,
                timestamp_ns: h.timestamp_ns,
                record_len: h.call_len,
                offset: h.offset,
                key_offset: h.stream_offset,
                cookie: h.cookie,
                data: Bytes::copy_from_slice(payload),
            }),
            None => CaptureEvent::Data(DataChunk {
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
        },
        RecordKind::AeadLink => CaptureEvent::AeadLink {
            pid: h.pid,
            tid: h.tid,
            fd,
            key: socket_record(payload).map(|r| r.ssl).unwrap_or(0),
        },
        RecordKind::ProcessExit => CaptureEvent::ProcessExit {
            pid: h.pid,
            timestamp_ns: h.timestamp_ns,
            status: (h.function == EXIT_STATUS_KNOWN).then_some(h.offset as u32 as i32),
            exit_lost: false,
        },
        RecordKind::ProcessFork => CaptureEvent::Fork {
            parent: h.pid,
            child: h.conn_id as u32,
            timestamp_ns: h.timestamp_ns,
        },
        RecordKind::ProcessArgs => CaptureEvent::ExecArgs {
            pid: h.pid,
            tid: h.tid,
            args: nul_separated(payload),
        },
        RecordKind::Connect | RecordKind::Accept => CaptureEvent::Connect {
            pid: h.pid,
            fd,
            peer: socket_record(payload).and_then(|r| peer_address(&r)),
            accepted: kind == RecordKind::Accept,
        },
        RecordKind::Close => CaptureEvent::Close {
            pid: h.pid,
            fd,
            timestamp_ns: h.timestamp_ns,
        },
        RecordKind::TlsLink => CaptureEvent::TlsLink {
            pid: h.pid,
            fd,
            conn_id: socket_record(payload).map(|r| r.ssl).unwrap_or(0),
        },
        RecordKind::TlsClientHello => CaptureEvent::ClientHello {
            pid: h.pid,
            fd,
            record: Bytes::copy_from_slice(payload),
        },
        RecordKind::TlsSummary => CaptureEvent::TlsSummary {
            pid: h.pid,
            fd,
            timestamp_ns: h.timestamp_ns,
            totals: tls_totals(payload).ok_or(DecodeError::Length {
                declared: std::mem::size_of::<TlsTotals>(),
                actual: payload.len(),
            })?,
        },
        RecordKind::ProcessExec => {
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
    })
}

/// For a data record from an AEAD probe, whether it carries TLS 1.3 (else 1.2) record
/// plaintext; `None` for every other data record. Any other `function` value is a TLS library
/// or syscall the record's `source` describes, not checked here (as before).
fn aead_record(function: u32) -> Option<bool> {
    match TlsFunction::try_from(function) {
        Ok(TlsFunction::AeadTls13) => Some(true),
        Ok(TlsFunction::AeadTls12) => Some(false),
        _ => None,
    }
}

fn direction(raw: u32) -> Result<Direction, DecodeError> {
    Direction::try_from(raw).map_err(|e| DecodeError::Direction(e.value))
}

fn source(raw: u32) -> Result<Source, DecodeError> {
    Source::try_from(raw).map_err(|e| DecodeError::Source(e.value))
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
                exit_lost: false,
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
