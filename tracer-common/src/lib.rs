//! The `#[repr(C)]` records the kernel programs write into the ring buffer and the indices of
//! the counters they keep. Both sides compile this crate, so a layout change cannot be made on
//! one side only.
#![cfg_attr(not(test), no_std)]

/// Bytes of payload copied per ring-buffer record. Larger buffers are split into several
/// records of this size; 16 KiB keeps the per-CPU scratch value under the 32 KiB per-CPU
/// allocation limit while needing only 64 records per MiB.
pub const CHUNK_SIZE: usize = 16 * 1024;

/// Upper bound on records per call: `CHUNK_SIZE * MAX_CHUNKS_PER_CALL` bytes (16 MiB) of a
/// single `SSL_write`/`SSL_read`/`write`/... are captured; the rest is counted as truncated.
pub const MAX_CHUNKS_PER_CALL: u32 = 1024;

/// Bounds of the programs built for kernels without `bpf_loop` (`tracer-ebpf/src/bounded.rs`),
/// where every loop is unrolled by the verifier and must fit its instruction budget.
pub mod bounded {
    /// Records per call: `CHUNK_SIZE * CHUNKS_PER_CALL` bytes (256 KiB) of one call are captured,
    /// the rest counted as truncated (`counter::TRUNCATED_BYTES`).
    pub const CHUNKS_PER_CALL: u32 = 16;
    /// Records per iovec of a vectored call (`writev`, `sendmsg`, ...): 32 KiB each.
    pub const CHUNKS_PER_IOVEC: u32 = 2;
    /// Descriptors of an exiting process checked for open TLS connections.
    pub const EXIT_FDS: u32 = 64;
}

/// The longest plaintext one TLS record can carry (RFC 8446 §5.2: 2^14 bytes, plus the inner
/// content type and padding within the ciphertext's 2^14 + 256). Lengths read off a traced
/// program's stack at an AEAD call are checked against it: anything longer is not a record.
pub const MAX_TLS_RECORD_PLAINTEXT: u64 = 16 * 1024 + 256;

/// What a ring-buffer record describes.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A chunk of plaintext that crossed a TLS library call or a socket syscall (see `source`).
    Data = 1,
    /// A thread group (process) ended; userspace flushes and forgets its state.
    ProcessExit = 2,
    /// A socket connected (payload: [`SocketRecord`]; `conn_id` and `fd` are the fd).
    Connect = 3,
    /// A socket accepted (payload: [`SocketRecord`], address zero when not asked for).
    Accept = 4,
    /// A traced socket was closed.
    Close = 5,
    /// A socket syscall ran inside a TLS call: the TLS connection object (payload's `ssl`) uses
    /// this fd.
    TlsLink = 6,
    /// The first TLS record a socket sent (ClientHello: SNI), up to `CLIENT_HELLO_MAX` bytes.
    TlsClientHello = 7,
    /// A process called exec (payload: the file name, NUL-terminated; `conn_id`: the process's
    /// cgroup v2 id, the inode number of its cgroup directory, 0 when there is no cgroup v2).
    ProcessExec = 8,
    /// A thread called execve (payload: its arguments, each NUL-terminated, up to
    /// [`EXEC_ARGS_MAX`] bytes); the exec itself may still fail.
    ProcessArgs = 20,
    /// A process was created (`pid`: the creating process; `conn_id`: the new process's id).
    /// New threads are not reported.
    ProcessFork = 21,
    /// A thread that sealed TLS records with an AEAD key (payload's `ssl`: the key object) is
    /// now writing to socket `fd`: the records were for that socket (see `tracer-ebpf/src/aead.rs`).
    AeadLink = 22,
    /// A TLS connection no TLS hook saw from inside ended (closed, or its process exited): its
    /// ciphertext byte counts and timing (payload: [`TlsTotals`]; `conn_id` and `fd` are the fd,
    /// `timestamp_ns` the end).
    TlsSummary = 30,
}

/// A raw value of a `#[repr(u32)]` field that names none of its enum's variants: a record
/// from a kernel program built from another version of this crate, or a corrupt one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enum the value was read as (`"RecordKind"`, `"Direction"`, ...).
    pub of: &'static str,
    pub value: u32,
}

impl core::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "unknown {} {}", self.of, self.value)
    }
}

/// `TryFrom<u32>` for the `#[repr(u32)]` enums of the record header, so userspace turns the
/// raw integers into the enum once and matches on variants (a new variant then fails to compile
/// where it is not handled, instead of falling through an `if k == X as u32` chain).
macro_rules! try_from_u32 {
    ($($ty:ident { $($variant:ident),* $(,)? })*) => {$(
        impl TryFrom<u32> for $ty {
            type Error = UnknownValue;
            fn try_from(value: u32) -> Result<Self, UnknownValue> {
                $(if value == $ty::$variant as u32 {
                    return Ok($ty::$variant);
                })*
                Err(UnknownValue { of: stringify!($ty), value })
            }
        }

        // Fails to compile when a variant is missing from the list above.
        const _: fn($ty) = |v| match v {
            $($ty::$variant => (),)*
        };
    )*};
}

try_from_u32! {
    RecordKind {
        Data, ProcessExit, Connect, Accept, Close, TlsLink, TlsClientHello, ProcessExec,
        ProcessArgs, ProcessFork, AeadLink, TlsSummary,
    }
    Direction { Egress, Ingress }
    Source { Tls, Socket, Stdio }
    TlsFunction {
        SslWrite, SslWriteEx, SslRead, SslReadEx, GoTlsWrite, GoTlsRead, GnutlsRecordSend,
        GnutlsRecordRecv, SslWriteEx2, AeadTls13, AeadTls12,
    }
    SocketFunction { Write, Writev, Sendto, Sendmsg, Read, Readv, Recvfrom, Recvmsg }
}

/// `function` of a `ProcessExit` record: the process called `exit_group`, and `offset` holds
/// the status it passed. Otherwise a signal ended it.
pub const EXIT_STATUS_KNOWN: u32 = 1;

/// Bytes of an exec's arguments copied, and the most copied of one argument.
pub const EXEC_ARGS_MAX: usize = 1024;
pub const EXEC_ARG_MAX: usize = 256;
/// Arguments of an exec copied.
pub const EXEC_ARGS_COUNT: usize = 24;

/// Bytes of a ClientHello copied: enough for the SNI even with post-quantum key shares.
pub const CLIENT_HELLO_MAX: usize = 4096;
/// Bytes of an exec'd file name copied.
pub const EXEC_FILENAME_MAX: usize = 256;
/// iovecs of one writev/readv/sendmsg/recvmsg copied; more are counted as truncated.
pub const MAX_IOVECS: usize = 8;

/// Payload of socket records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketRecord {
    /// AF_INET (2) or AF_INET6 (10); 0 when unknown.
    pub family: u16,
    /// Remote port, host byte order.
    pub port: u16,
    pub _pad: u32,
    /// Remote address: 4 bytes for IPv4, 16 for IPv6.
    pub addr: [u8; 16],
    /// The TLS connection object for `TlsLink`.
    pub ssl: u64,
}

/// What the kernel counted of a TLS client connection whose plaintext no hook saw: enough to
/// report that the call happened, and how big and slow it was, without copying a byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsTotals {
    /// Bytes written and read on the socket, TLS framing and handshake included.
    pub sent: u64,
    pub received: u64,
    /// CLOCK_MONOTONIC nanoseconds: the ClientHello's write began.
    pub start_ns: u64,
    /// The first read that returned bytes ended; 0 when none did.
    pub first_response_ns: u64,
    /// The last read that returned bytes ended; 0 when none did.
    pub last_response_ns: u64,
    /// The last read or write that moved bytes ended.
    pub last_ns: u64,
    /// Times the connection turned from writing to reading: one per request/response cycle, plus
    /// the handshake's.
    pub turns: u32,
    /// The [`Direction`] of the last call that moved bytes.
    pub last_direction: u32,
}

/// The syscall whose call produced a socket record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketFunction {
    Write = 0,
    Writev = 1,
    Sendto = 2,
    Sendmsg = 3,
    Read = 4,
    Readv = 5,
    Recvfrom = 6,
    Recvmsg = 7,
}

/// Which way the bytes went, seen from the traced process.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Written by the process (`SSL_write*`).
    Egress = 0,
    /// Read by the process (`SSL_read*`).
    Ingress = 1,
}

impl Direction {
    /// The other way: where the answer to bytes going this way comes from.
    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }
}

/// Where a data record's bytes were seen.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Plaintext at a TLS library's read/write function; `conn_id` is the library's connection
    /// object (`SSL*`, Go `*tls.Conn`, `gnutls_session_t`).
    Tls = 0,
    /// Plaintext at a socket syscall; `conn_id` is the file descriptor.
    Socket = 1,
    /// A process's standard input and output (pipes, a socketpair as libuv makes them, or
    /// anything else) seen at the read/write syscalls; `conn_id` is [`STDIO_CONN_ID`], shared by
    /// both directions and every duplicate of the two fds. Reads are `Ingress`, writes `Egress`.
    Stdio = 2,
}

/// The library function whose call produced a TLS record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFunction {
    SslWrite = 0,
    SslWriteEx = 1,
    SslRead = 2,
    SslReadEx = 3,
    /// Go `crypto/tls.(*Conn).Write`.
    GoTlsWrite = 4,
    /// Go `crypto/tls.(*Conn).Read`.
    GoTlsRead = 5,
    GnutlsRecordSend = 6,
    GnutlsRecordRecv = 7,
    /// `(ssl, buf, num, flags, size_t *written)`: `SSL_write_ex2`, and OpenSSL 3.2+'s internal
    /// `ssl_write_internal`, hooked where static OpenSSL has no symbols.
    SslWriteEx2 = 8,
    /// One TLS 1.3 record's inner plaintext (data, content type, zero padding) as an AEAD seal
    /// or open saw it (aws-lc's `EVP_AEAD_CTX_seal_scatter` / `EVP_AEAD_CTX_open`, under rustls);
    /// `conn_id` is the AEAD key object, `call_len` the record's length.
    AeadTls13 = 9,
    /// One TLS 1.2 application-data record's plaintext (the content type is in the AEAD's
    /// additional data, and only application data is sent up).
    AeadTls12 = 10,
}

/// Header of every ring-buffer record; `chunk_len` payload bytes follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// A [`RecordKind`] value.
    pub kind: u32,
    /// A [`Direction`] value.
    pub direction: u32,
    /// A [`TlsFunction`] value.
    pub function: u32,
    /// Thread group id: the PID a user sees (in the root PID namespace).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub chunk_len: u32,
    /// CLOCK_MONOTONIC nanoseconds: call entry for writes (the bytes left then), call return for
    /// reads (the bytes arrived then).
    pub timestamp_ns: u64,
    /// Connection identity within the process: see [`Source`].
    pub conn_id: u64,
    /// Bytes the call transferred in all (its return value).
    pub call_len: u64,
    /// Offset of this chunk within the call's bytes.
    pub offset: u64,
    /// Bytes this connection carried in this direction before this call, as far as the kernel
    /// saw: a record that does not continue where the last one ended means bytes were lost.
    pub stream_offset: u64,
    /// A [`Source`] value.
    pub source: u32,
    /// The socket's file descriptor when known, else -1.
    pub fd: i32,
    /// The attach cookie of the uprobe that produced a TLS record: userspace gives each hook
    /// placed by inference (no symbol) its own, to validate its first bytes; 0 otherwise.
    pub cookie: u32,
    pub _pad: u32,
}

/// A socket, per process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// What the kernel knows of a traced socket or stdio fd. The kernel marks every program's stdin
/// and stdout when it execs; userspace seeds sockets and stdio pipes open at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketState {
    pub flags: u32,
    /// Stdio fds ([`socket_flag::STDIO`]): the `conn_id` their records carry, the same for stdin,
    /// stdout and their duplicates, so that one process's requests and responses form one
    /// connection. Unused for sockets.
    pub pair: u32,
}

/// [`SocketState::flags`] bits.
pub mod socket_flag {
    /// A TCP (IPv4/IPv6 stream) socket.
    pub const STREAM: u32 = 1;
    pub const CONNECTED: u32 = 2;
    pub const ACCEPTED: u32 = 4;
    /// Carries TLS: its bytes are ciphertext and never copied.
    pub const TLS: u32 = 8;
    /// Its first bytes were HTTP: copied.
    pub const HTTP: u32 = 16;
    /// Its first bytes were neither HTTP nor TLS: ignored.
    pub const OTHER: u32 = 32;
    /// A TlsLink record was sent for it.
    pub const LINKED: u32 = 64;
    /// Found open at start-up: its next bytes may be mid-message, so keep sniffing until HTTP
    /// shows up rather than deciding on the first bytes.
    pub const MIDSTREAM: u32 = 128;
    /// A process's stdin (fd 0) or stdout (fd 1) as it exec'd, or a duplicate of one: a
    /// candidate for JSON-RPC over stdio (MCP). Its first call decides: JSON-RPC is copied from
    /// then on, anything else drops the entry.
    pub const STDIO: u32 = 256;
    /// A stdio fd whose first bytes looked like a JSON-RPC message: copied.
    pub const JSONRPC: u32 = 512;
    /// A TLS client connection with an entry in the kernel's `TLS_CONNS`: its bytes are counted
    /// (never copied) until a hooked TLS call is seen using it.
    pub const COUNTED: u32 = 1024;
}

/// The `conn_id` of a process's stdio connection: every `Source::Stdio` record carries it, and
/// every stdio fd's [`SocketState::pair`] holds it. A process has one such connection (stdin,
/// stdout and their duplicates), so a fixed id (0, stdin's fd) is enough; the kernel forgets its
/// byte counts under it when the process execs or exits.
pub const STDIO_CONN_ID: u32 = 0;

/// Lowest fds the kernel forgets for a process that execs or exits: stdio and the duplicates a
/// stdio server makes of it, so that a reused pid never inherits a dead process's state.
/// Userspace seeds no stdio fd above it.
pub const FORGET_FDS: u32 = 32;

pub const RECORD_HEADER_SIZE: usize = core::mem::size_of::<RecordHeader>();

/// A counter the kernel programs keep in the per-CPU `COUNTERS` array map: its index there, the
/// name userspace reports it by (log summary, JSON summary, `agent_tracer.<name>` metric) and
/// the metric's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCounter {
    pub index: u32,
    pub name: &'static str,
    pub help: &'static str,
}

/// The one table of kernel counters: each line gives the constant the kernel programs count
/// with, its index, its user-side name and its description. Userspace reads and reports every
/// entry of [`counter::ALL`]; nothing else lists them.
macro_rules! kernel_counters {
    ($($(#[doc = $doc:literal])* $konst:ident = $index:literal, $name:literal, $help:literal;)*) => {
        /// Indices into the per-CPU `COUNTERS` array map.
        pub mod counter {
            use super::KernelCounter;
            $($(#[doc = $doc])* pub const $konst: u32 = $index;)*
            pub const COUNT: u32 = [$($index),*].len() as u32;
            /// Every counter, in index order.
            pub const ALL: [KernelCounter; COUNT as usize] = [
                $(KernelCounter { index: $konst, name: $name, help: $help },)*
            ];
            // The indices are the positions: 0, 1, 2, ... with no gap or repeat.
            const _: () = {
                let mut i = 0;
                while i < ALL.len() {
                    assert!(ALL[i].index as usize == i, "kernel counter indices out of order");
                    i += 1;
                }
            };
        }
    };
}

kernel_counters! {
    /// Records the ring buffer had no room for.
    RINGBUF_FULL_RECORDS = 0, "kernel_ringbuf_full_records",
        "Records the kernel could not write because the ring buffer was full.";
    /// Payload bytes lost because the ring buffer was full.
    RINGBUF_FULL_BYTES = 1, "kernel_ringbuf_full_bytes",
        "Payload bytes lost to a full ring buffer.";
    /// Payload bytes that could not be read from user memory.
    READ_FAILED_BYTES = 2, "kernel_read_failed_bytes",
        "Payload bytes the kernel could not read from the traced process.";
    /// Payload bytes past `MAX_CHUNKS_PER_CALL * CHUNK_SIZE` of one call.
    TRUNCATED_BYTES = 3, "kernel_truncated_bytes",
        "Payload bytes past the per-call capture limit.";
    /// Returns whose entry was not seen (attached mid-call or the entry map was full).
    MISSING_ENTRY = 4, "kernel_missing_entry",
        "TLS call returns whose entry was not seen.";
    /// TLS calls captured.
    CALLS = 5, "kernel_tls_calls",
        "TLS calls captured in the kernel.";
    /// Socket syscalls whose bytes were captured.
    SOCKET_CALLS = 6, "kernel_socket_calls",
        "Socket syscalls captured in the kernel.";
    /// Connections whose first bytes were not HTTP or TLS, ignored from then on.
    IGNORED_CONNECTIONS = 7, "kernel_ignored_connections",
        "Connections whose first bytes were neither HTTP nor TLS (not copied).";
    /// TLS calls and socket syscalls of processes userspace marked as not traced (selection
    /// rules), skipped without copying.
    IGNORED_CALLS = 8, "kernel_ignored_calls",
        "TLS calls and socket syscalls of processes the selection rules leave out, not copied.";
    /// Stdio syscalls whose bytes were captured.
    STDIO_CALLS = 9, "kernel_stdio_calls",
        "Stdio (pipe) syscalls captured in the kernel.";
    /// Stdio fds whose first bytes were not JSON-RPC, forgotten from then on.
    IGNORED_STDIO = 10, "kernel_ignored_stdio",
        "Stdio fds whose first bytes were not JSON-RPC (not copied).";
    /// Calls whose byte count, as the traced program reported it, cannot be true (an `_ex`
    /// out-parameter past the buffer's size, an AEAD record longer than TLS allows): their
    /// bytes are not copied, or copied only up to what the call could have carried.
    IMPLAUSIBLE_LENGTHS = 11, "kernel_implausible_lengths",
        "Calls whose length, as the traced program reported it, cannot be true (not copied or clamped).";
}

#[cfg(feature = "user")]
mod user {
    // Safety: plain-old-data, `#[repr(C)]`, no padding-sensitive invariants.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::SocketRecord {}
    unsafe impl aya::Pod for super::FdKey {}
    unsafe impl aya::Pod for super::SocketState {}
    unsafe impl aya::Pod for super::TlsTotals {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_round_trip_and_unknown_ones_are_named() {
        for kind in [
            RecordKind::Data,
            RecordKind::ProcessArgs,
            RecordKind::TlsSummary,
        ] {
            assert_eq!(RecordKind::try_from(kind as u32), Ok(kind));
        }
        assert_eq!(Direction::try_from(1), Ok(Direction::Ingress));
        assert_eq!(TlsFunction::try_from(10), Ok(TlsFunction::AeadTls12));
        let unknown = RecordKind::try_from(9).unwrap_err();
        assert_eq!(
            unknown,
            UnknownValue {
                of: "RecordKind",
                value: 9
            }
        );
        assert_eq!(unknown.to_string(), "unknown RecordKind 9");
    }

    #[test]
    fn every_kernel_counter_has_a_distinct_reported_name() {
        assert_eq!(counter::ALL.len(), counter::COUNT as usize);
        assert_eq!(
            counter::ALL[counter::CALLS as usize].name,
            "kernel_tls_calls"
        );
        for (i, a) in counter::ALL.iter().enumerate() {
            assert!(a.name.starts_with("kernel_") && !a.help.is_empty(), "{a:?}");
            assert!(counter::ALL[..i].iter().all(|b| b.name != a.name), "{a:?}");
        }
    }
}
