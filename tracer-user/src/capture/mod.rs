//! Stage 1, capture: loads and attaches the kernel programs, reads the ring buffer and turns raw
//! records into typed events. Never blocks the kernel side: when the next stage is behind,
//! records are dropped and counted.

mod attacher;
pub mod compat;
mod decode;
pub mod gotls;
mod kernel_log;
mod libssl;
mod loader;
pub mod locate;
pub mod preattach;
pub mod queue;
pub mod reader;
pub mod rejection;
pub mod ring;
pub mod safe_open;
mod stdio;
mod system;
pub mod targets;
pub mod validate;

use std::net::SocketAddr;

use bytes::Bytes;
use tracer_common::{Direction, Source, TlsTotals};

pub use attacher::{all_pids, Attacher, ExecSeen, HookCoverage};
pub use decode::{decode_record, nul_separated, peer_address, DecodeError};
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
        /// The kernel's exit record was lost (a full ring buffer drops it like any record) and
        /// the pipeline found the process gone (`daemon::pipeline::lost_exits`): `status` is
        /// unknown, and `timestamp_ns` is when the process was last heard from.
        exit_lost: bool,
    },
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
