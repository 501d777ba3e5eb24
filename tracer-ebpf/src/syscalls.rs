//! Syscall tracepoints for plaintext sockets and the decision, in one place, of what is copied.
//!
//! Candidates are TCP sockets this process created and then connected or accepted (or that
//! userspace found open at start-up). A connection's first bytes decide: HTTP/1.x or the HTTP/2
//! preface is copied from then on; a TLS record header marks it as TLS (its ClientHello is sent up
//! once, for the SNI) and nothing more is copied; anything else is ignored. A syscall made inside a
//! TLS library call on the same thread is that call's ciphertext: it links the library's
//! connection object to the fd and is never copied.
//!
//! Stdio fds are candidates too: every program's stdin and stdout as it execs (`process.rs`), plus
//! pipes userspace finds on fds 0 and 1 at start-up, and the duplicates a process makes of them
//! (`dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`). The first call on each decides: a JSON-RPC message
//! is copied from then on; anything else drops the fd from the map, so its later calls cost the
//! same single missed lookup as any unrelated fd.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_loop,
    },
    programs::TracePointContext,
};
use tracer_common::{
    counter, socket_flag as flag, Direction, FdKey, RecordHeader, RecordKind, SocketFunction,
    SocketRecord, SocketState, Source, TlsTotals, CLIENT_HELLO_MAX, MAX_IOVECS,
};

use crate::{
    emit::{emit_buffer, emit_iovec, emit_record, Transfer},
    maps::{
        count, forget_offsets, is_ignored, PendingDup, PendingIo, PendingSocketCall, EVENTS,
        PENDING_DUPS, PENDING_IO, PENDING_READS, PENDING_SOCKET_CALLS, PENDING_WRITES, SOCKETS,
        TLS_CONNS, TLS_PROCS,
    },
};

mod connections;
mod dups;
mod tracepoints;

pub(crate) use connections::*;
pub(crate) use dups::*;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u64 = 1;
const SOCK_TYPE_MASK: u64 = 0xf;
const EINPROGRESS: i64 = 115;
/// `PendingIo::function` bit: the call is on a counted TLS socket, its return only adds to the
/// connection's totals.
const COUNT_ONLY: u32 = 0x100;
/// Highest fd a process's exit looks at for counted TLS connections it left open.
const MAX_EXIT_FDS: u32 = 1024;

/// The tracer's own process, set by userspace at load time: its exporter connections are never
/// traced (that would feed its own output back into itself).
#[unsafe(no_mangle)]
static TRACER_TGID: u32 = 0;

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

#[inline(always)]
fn tgid(pid_tgid: u64) -> u32 {
    (pid_tgid >> 32) as u32
}

#[inline(always)]
pub(crate) fn is_tracer(pid_tgid: u64) -> bool {
    tgid(pid_tgid) == unsafe { core::ptr::read_volatile(&TRACER_TGID) }
}

// Data.

/// A data call on `fd` (`buf`, `count`: the buffer or iovec array and its length; for
/// sendmsg/recvmsg, `buf` is the `msghdr`).
#[inline(always)]
pub(crate) fn enter_io(
    fd: u64,
    buf: u64,
    count: u64,
    function: SocketFunction,
    direction: Direction,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = fd as u32;
    let key = FdKey {
        tgid: tgid(pid_tgid),
        fd,
    };
    let Some(state) = SOCKETS.get_ptr_mut(key) else {
        return;
    };
    let state = unsafe { &mut *state };
    if state.flags & flag::OTHER != 0 {
        return;
    }
    if state.flags & flag::STDIO != 0 {
        // No TLS library writes its records to stdio: straight to the copy.
        copy_unless_ignored(pid_tgid, fd, buf, count, function);
        return;
    }
    if state.flags & (flag::CONNECTED | flag::ACCEPTED) == 0 {
        return;
    }
    // Inside SSL_write/SSL_read on this thread: this is that call's ciphertext.
    let in_tls = match direction {
        Direction::Egress => unsafe { PENDING_WRITES.get(pid_tgid) },
        Direction::Ingress => unsafe { PENDING_READS.get(pid_tgid) },
    };
    if let Some(call) = in_tls {
        if state.flags & flag::LINKED == 0 {
            state.flags |= flag::LINKED;
            let link = SocketRecord {
                ssl: call.ssl,
                ..SocketRecord::default()
            };
            emit_socket_record(RecordKind::TlsLink, pid_tgid, fd, link);
        }
        // A hook placed by inference (it has an attach cookie) may yet be rejected by
        // validation and detached, its plaintext dropped: its connection is classified and
        // counted as if unhooked, so it still gets the encrypted fallback, which userspace
        // leaves out once the hook's plaintext is trusted.
        if call.cookie == 0 {
            state.flags |= flag::TLS;
            if state.flags & flag::COUNTED != 0 {
                // A hook sees this connection's plaintext: it is reported from that, not counted.
                state.flags &= !flag::COUNTED;
                let _ = TLS_CONNS.remove(key);
            }
            return;
        }
    }
    if state.flags & flag::TLS != 0 {
        crate::aead::on_tls_socket_call(pid_tgid, fd, direction);
        if state.flags & flag::COUNTED != 0 {
            let io = PendingIo {
                buf: 0,
                count: 0,
                timestamp_ns: 0,
                fd,
                function: function as u32 | COUNT_ONLY,
            };
            if let Err(error) = PENDING_IO.insert(pid_tgid, io, BPF_ANY as u64) {
                crate::report::insert_failed!(
                    "PENDING_IO",
                    pid_tgid,
                    error,
                    "the call's bytes are not counted"
                );
            }
        }
        return;
    }
    copy_unless_ignored(pid_tgid, fd, buf, count, function);
}

/// The one place a syscall's bytes are committed to: a process userspace left out (its fds
/// were tracked before the decision) is counted, not copied. TLS sockets never get here, so
/// their calls cost no lookup in the ignore map.
#[inline(always)]
fn copy_unless_ignored(pid_tgid: u64, fd: u32, buf: u64, len: u64, function: SocketFunction) {
    if is_ignored(tgid(pid_tgid)) {
        count(counter::IGNORED_CALLS, 1);
        return;
    }
    remember_io(pid_tgid, fd, buf, len, function);
}

/// The call's buffer (or iovec array) until its return says how many bytes moved.
#[inline(always)]
fn remember_io(pid_tgid: u64, fd: u32, buf: u64, len: u64, function: SocketFunction) {
    let (buf, count) = match function {
        SocketFunction::Sendmsg | SocketFunction::Recvmsg => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            let msg = buf;
            let iov = unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.unwrap_or(0);
            let len = unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.unwrap_or(0);
            (iov, len)
        }
        _ => (buf, len),
    };
    let io = PendingIo {
        buf,
        count,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        fd,
        function: function as u32,
    };
    if let Err(error) = PENDING_IO.insert(pid_tgid, io, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "PENDING_IO",
            pid_tgid,
            error,
            "the call's bytes are not copied"
        );
    }
}

#[inline(always)]
fn is_vectored(function: u32) -> bool {
    function == SocketFunction::Writev as u32
        || function == SocketFunction::Sendmsg as u32
        || function == SocketFunction::Readv as u32
        || function == SocketFunction::Recvmsg as u32
}

/// A data call returned `r`.
#[inline(always)]
pub(crate) fn exit_io(r: i64, direction: Direction) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(io) = (unsafe { PENDING_IO.get(pid_tgid) }).copied() else {
        return;
    };
    let _ = PENDING_IO.remove(pid_tgid);
    if r <= 0 {
        return;
    }
    let len = r as u64;
    let key = FdKey {
        tgid: tgid(pid_tgid),
        fd: io.fd,
    };
    let Some(state) = SOCKETS.get_ptr_mut(key) else {
        return;
    };
    let state = unsafe { &mut *state };
    if io.function & COUNT_ONLY != 0 {
        add_tls(key, direction, len);
        return;
    }
    let vectored = is_vectored(io.function);
    let first_buf = if vectored {
        unsafe { bpf_probe_read_user(io.buf as *const u64) }.unwrap_or(0)
    } else {
        io.buf
    };
    let stdio = state.flags & flag::STDIO != 0;
    if stdio {
        if state.flags & flag::JSONRPC == 0 {
            if !sniff_jsonrpc(first_buf, len) {
                let _ = SOCKETS.remove(key);
                count(counter::IGNORED_STDIO, 1);
                return;
            }
            state.flags |= flag::JSONRPC;
        }
    } else if state.flags & flag::HTTP == 0 {
        match sniff(first_buf) {
            Sniffed::Http => state.flags |= flag::HTTP,
            Sniffed::Tls { handshake } => {
                state.flags |= flag::TLS;
                if direction == Direction::Egress {
                    emit_client_hello(pid_tgid, io.fd, first_buf, len, io.timestamp_ns);
                    // A client's handshake: counted until a hook shows it is seen from inside.
                    if handshake
                        && state.flags & flag::CONNECTED != 0
                        && !is_ignored(key.tgid)
                        && start_tls(key, len, io.timestamp_ns)
                    {
                        state.flags |= flag::COUNTED;
                    }
                }
                // A record that is no handshake is a connection found open at start-up: the
                // call that showed it is TLS may carry a record sealed just before, or precede
                // an open on this thread (rustls), as every later call does.
                if !handshake {
                    crate::aead::on_tls_socket_call(pid_tgid, io.fd, direction);
                }
                return;
            }
            Sniffed::Other => {
                // A connection found open at start-up may be mid-message: wait for a head.
                if state.flags & flag::MIDSTREAM == 0 {
                    state.flags |= flag::OTHER;
                    count(counter::IGNORED_CONNECTIONS, 1);
                }
                return;
            }
        }
    }
    let pair = state.pair;
    count(
        if stdio {
            counter::STDIO_CALLS
        } else {
            counter::SOCKET_CALLS
        },
        1,
    );
    let timestamp_ns = match direction {
        Direction::Egress => io.timestamp_ns,
        Direction::Ingress => unsafe { bpf_ktime_get_ns() },
    };
    let function = match io.function {
        0 => SocketFunction::Write,
        1 => SocketFunction::Writev,
        2 => SocketFunction::Sendto,
        3 => SocketFunction::Sendmsg,
        4 => SocketFunction::Read,
        5 => SocketFunction::Readv,
        6 => SocketFunction::Recvfrom,
        _ => SocketFunction::Recvmsg,
    };
    let transfer = |buf: u64, len: u64| {
        let t = Transfer::socket(io.fd, buf, len, timestamp_ns, pid_tgid, function, direction);
        if stdio {
            t.on_stdio(pair)
        } else {
            t
        }
    };
    if !vectored {
        emit_buffer(&mut transfer(io.buf, len));
        return;
    }
    // The bytes fill the iovecs in order, up to the syscall's return value.
    let mut left = len;
    for i in 0..MAX_IOVECS {
        if left == 0 || i as u64 >= io.count {
            break;
        }
        let iov = io.buf + 16 * i as u64;
        let base = unsafe { bpf_probe_read_user(iov as *const u64) }.unwrap_or(0);
        let size = unsafe { bpf_probe_read_user((iov + 8) as *const u64) }.unwrap_or(0);
        let take = if size < left { size } else { left };
        if take > 0 && base != 0 {
            emit_iovec(&mut transfer(base, take));
        }
        left -= take;
    }
    if left > 0 {
        count(counter::TRUNCATED_BYTES, left);
        crate::report::note_cut(pid_tgid, io.fd as u64, left);
    }
    // One debug message for the whole call, whichever pieces lost what.
    crate::report::call_ends();
}

enum Sniffed {
    Http,
    /// `handshake`: the record is a handshake one (a ClientHello, when a client sends it first).
    Tls {
        handshake: bool,
    },
    Other,
}

/// What a connection's first bytes say it speaks.
#[inline(always)]
fn sniff(buf: u64) -> Sniffed {
    let Ok(head) = (unsafe { bpf_probe_read_user(buf as *const [u8; 4]) }) else {
        return Sniffed::Other;
    };
    // A TLS record: handshake (22) or alert/data with a 3.x version.
    if (head[0] == 22 || head[0] == 21 || head[0] == 23) && head[1] == 3 && head[2] <= 4 {
        return Sniffed::Tls {
            handshake: head[0] == 22,
        };
    }
    const STARTS: [[u8; 4]; 10] = [
        *b"GET ", *b"POST", *b"PUT ", *b"DELE", *b"PATC", *b"HEAD", *b"OPTI", *b"HTTP", *b"PRI ",
        *b"CONN",
    ];
    let mut i = 0;
    while i < STARTS.len() {
        if head == STARTS[i] {
            return Sniffed::Http;
        }
        i += 1;
    }
    Sniffed::Other
}

/// Whether a stdio fd's first call carries a JSON-RPC message: MCP's stdio framing puts one JSON
/// object per line, so the call starts with `{"` and the object's first member is one JSON-RPC
/// defines (`jsonrpc`, `id`, `method`, `params`, `result`, `error`); a `[` before it is a batch.
/// Eight bytes are read: a first call shorter than that (a reader taking one byte at a time) is
/// not recognised.
#[inline(always)]
fn sniff_jsonrpc(buf: u64, len: u64) -> bool {
    if len < 8 {
        return false;
    }
    let Ok(mut head) = (unsafe { bpf_probe_read_user(buf as *const [u8; 8]) }) else {
        return false;
    };
    if head[0] == b'[' {
        if len < 9 {
            return false;
        }
        let Ok(after) = (unsafe { bpf_probe_read_user((buf + 1) as *const [u8; 8]) }) else {
            return false;
        };
        head = after;
    }
    if head[0] != b'{' || head[1] != b'"' {
        return false;
    }
    let name = [head[2], head[3], head[4], head[5]];
    name == *b"json"
        || name == *b"meth"
        || name == *b"para"
        || name == *b"resu"
        || name == *b"erro"
        || (head[2] == b'i' && head[3] == b'd' && head[4] == b'"')
}

#[inline(always)]
fn emit_client_hello(pid_tgid: u64, fd: u32, buf: u64, len: u64, timestamp_ns: u64) {
    let len = if len > CLIENT_HELLO_MAX as u64 {
        CLIENT_HELLO_MAX
    } else {
        len as usize
    };
    let header = RecordHeader {
        kind: RecordKind::TlsClientHello as u32,
        direction: Direction::Egress as u32,
        function: 0,
        pid: tgid(pid_tgid),
        tid: pid_tgid as u32,
        chunk_len: 0,
        timestamp_ns,
        conn_id: fd as u64,
        call_len: len as u64,
        offset: 0,
        stream_offset: 0,
        source: Source::Socket as u32,
        fd: fd as i32,
        cookie: 0,
        _pad: 0,
    };
    emit_record(header, buf, len);
    crate::report::call_ends();
}

// Encrypted-only TLS connections: totals, no bytes.

/// A TLS client connection starts being counted with its ClientHello. False when the map refused.
#[inline(always)]
fn start_tls(key: FdKey, len: u64, start_ns: u64) -> bool {
    let now = unsafe { bpf_ktime_get_ns() };
    let totals = TlsTotals {
        sent: len,
        received: 0,
        start_ns,
        first_response_ns: 0,
        last_response_ns: 0,
        last_ns: now,
        turns: 0,
        last_direction: Direction::Egress as u32,
    };
    if let Err(error) = TLS_CONNS.insert(key, totals, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "TLS_CONNS",
            bpf_get_current_pid_tgid(),
            error,
            "the encrypted connection is not reported"
        );
        return false;
    }
    let bound = key.fd + 1;
    let known = unsafe { TLS_PROCS.get(key.tgid) }.copied().unwrap_or(0);
    if bound > known {
        let _ = TLS_PROCS.insert(key.tgid, bound, BPF_ANY as u64);
    }
    true
}

#[inline(always)]
fn add_tls(key: FdKey, direction: Direction, len: u64) {
    let Some(totals) = TLS_CONNS.get_ptr_mut(key) else {
        return;
    };
    let totals = unsafe { &mut *totals };
    let now = unsafe { bpf_ktime_get_ns() };
    match direction {
        Direction::Egress => totals.sent += len,
        Direction::Ingress => {
            totals.received += len;
            if totals.first_response_ns == 0 {
                totals.first_response_ns = now;
            }
            totals.last_response_ns = now;
            if totals.last_direction == Direction::Egress as u32 {
                totals.turns += 1;
            }
        }
    }
    totals.last_direction = direction as u32;
    totals.last_ns = now;
}

#[repr(C)]
struct TlsSummaryEvent {
    header: RecordHeader,
    body: TlsTotals,
}

/// Reports a counted connection's totals and forgets them.
#[inline(always)]
fn finish_tls(key: FdKey, pid_tgid: u64) {
    let Some(totals) = (unsafe { TLS_CONNS.get(key) }).copied() else {
        return;
    };
    let _ = TLS_CONNS.remove(key);
    let Some(mut entry) = EVENTS.reserve::<TlsSummaryEvent>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        return;
    };
    entry.write(TlsSummaryEvent {
        header: RecordHeader {
            kind: RecordKind::TlsSummary as u32,
            direction: 0,
            function: 0,
            pid: key.tgid,
            tid: pid_tgid as u32,
            chunk_len: core::mem::size_of::<TlsTotals>() as u32,
            timestamp_ns: unsafe { bpf_ktime_get_ns() },
            conn_id: key.fd as u64,
            call_len: 0,
            offset: 0,
            stream_offset: 0,
            source: Source::Socket as u32,
            fd: key.fd as i32,
            cookie: 0,
            _pad: 0,
        },
        body: totals,
    });
    entry.submit(0);
}

/// A process ends with counted TLS connections still open (the kernel closes its fds without a
/// close() call): report them before its exit record.
#[inline(always)]
pub(crate) fn finish_tls_at_exit(pid_tgid: u64) {
    let tgid = tgid(pid_tgid);
    let Some(bound) = (unsafe { TLS_PROCS.get(tgid) }).copied() else {
        return;
    };
    let _ = TLS_PROCS.remove(tgid);
    let max_fds = match crate::LOOPS {
        crate::Loops::Helper => MAX_EXIT_FDS,
        crate::Loops::Bounded => tracer_common::bounded::EXIT_FDS,
    };
    let fds = if bound > max_fds { max_fds } else { bound };
    let mut ctx = pid_tgid;
    let ctx = &mut ctx as *mut u64 as *mut core::ffi::c_void;
    match crate::LOOPS {
        // bpf_loop: the callback is verified once; a plain loop over emitting calls is not
        // verifiable in 1M instructions.
        crate::Loops::Helper => unsafe {
            bpf_loop(fds, finish_tls_fd as *mut core::ffi::c_void, ctx, 0);
        },
        crate::Loops::Bounded => {
            // A constant trip count, the real bound inside (see `emit_buffer`).
            for index in 0..tracer_common::bounded::EXIT_FDS {
                if core::hint::black_box(index) < fds {
                    unsafe { finish_tls_fd(index, ctx) };
                }
            }
        }
    }
}

/// bpf_loop callback: fd `index` of the exiting process. Returns 0 to go on.
unsafe extern "C" fn finish_tls_fd(index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let pid_tgid = unsafe { *(ctx as *const u64) };
    finish_tls(
        FdKey {
            tgid: tgid(pid_tgid),
            fd: index,
        },
        pid_tgid,
    );
    0
}
