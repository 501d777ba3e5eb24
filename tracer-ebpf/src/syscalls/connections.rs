//! A TCP connection's life as the syscalls show it: `socket` makes a candidate, `connect` or
//! `accept` starts the connection and reports its peer, `close` ends it (and an encrypted-only
//! connection's totals go up with it).

use super::*;

// socket(): remember TCP sockets as candidates.

#[inline(always)]
pub(crate) fn enter_socket(family: u64, kind: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let family = family as u16;
    if (family == AF_INET || family == AF_INET6)
        && kind & SOCK_TYPE_MASK == SOCK_STREAM
        && !is_tracer(pid_tgid)
        && !is_ignored(tgid(pid_tgid))
    {
        let call = PendingSocketCall {
            addr: 0,
            fd: 0,
            _pad: 0,
        };
        if let Err(error) = PENDING_SOCKET_CALLS.insert(pid_tgid, call, BPF_ANY as u64) {
            crate::report::insert_failed!(
                "PENDING_SOCKET_CALLS",
                pid_tgid,
                error,
                "the socket is not traced"
            );
        }
    }
}

#[inline(always)]
pub(crate) fn exit_socket(fd: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if unsafe { PENDING_SOCKET_CALLS.get(pid_tgid) }.is_none() {
        return;
    }
    let _ = PENDING_SOCKET_CALLS.remove(pid_tgid);
    if fd >= 0 {
        let key = FdKey {
            tgid: tgid(pid_tgid),
            fd: fd as u32,
        };
        let state = SocketState {
            flags: flag::STREAM,
            pair: 0,
        };
        if let Err(error) = SOCKETS.insert(key, state, BPF_ANY as u64) {
            crate::report::insert_failed!(
                "SOCKETS",
                pid_tgid,
                error,
                "the socket is not traced"
            );
        }
    }
}

// connect() / accept(): the connection starts; report its peer.

#[inline(always)]
pub(crate) fn exit_connect(r: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = take_socket_call(pid_tgid) else {
        return;
    };
    if r != 0 && r != -EINPROGRESS {
        return;
    }
    let key = FdKey {
        tgid: tgid(pid_tgid),
        fd: call.fd,
    };
    start_connection(key, flag::CONNECTED);
    emit_socket_record(
        RecordKind::Connect,
        pid_tgid,
        call.fd,
        read_sockaddr(call.addr),
    );
}

/// connect/accept/accept4 on `fd` with the peer's address at `addr`: kept for the call's return.
#[inline(always)]
pub(crate) fn remember_socket_call(fd: u64, addr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = fd as u32;
    let key = FdKey {
        tgid: tgid(pid_tgid),
        fd,
    };
    let Some(state) = (unsafe { SOCKETS.get(key) }) else {
        return;
    };
    if state.flags & flag::STREAM == 0 {
        return;
    }
    let call = PendingSocketCall { addr, fd, _pad: 0 };
    if let Err(error) = PENDING_SOCKET_CALLS.insert(pid_tgid, call, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "PENDING_SOCKET_CALLS",
            pid_tgid,
            error,
            "the connection is not traced"
        );
    }
}

#[inline(always)]
pub(super) fn take_socket_call(pid_tgid: u64) -> Option<PendingSocketCall> {
    let call = unsafe { PENDING_SOCKET_CALLS.get(pid_tgid) }.copied()?;
    let _ = PENDING_SOCKET_CALLS.remove(pid_tgid);
    Some(call)
}

#[inline(always)]
pub(crate) fn finish_accept(fd: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = take_socket_call(pid_tgid) else {
        return;
    };
    if fd < 0 {
        return;
    }
    let key = FdKey {
        tgid: tgid(pid_tgid),
        fd: fd as u32,
    };
    start_connection(key, flag::STREAM | flag::ACCEPTED);
    emit_socket_record(
        RecordKind::Accept,
        pid_tgid,
        fd as u32,
        read_sockaddr(call.addr),
    );
}

/// A new connection on `key`: fresh flags, and its byte counts restart at zero.
#[inline(always)]
pub(super) fn start_connection(key: FdKey, flags: u32) {
    let state = SocketState {
        flags: flags | flag::STREAM,
        pair: 0,
    };
    if let Err(error) = SOCKETS.insert(key, state, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "SOCKETS",
            bpf_get_current_pid_tgid(),
            error,
            "the connection is not traced"
        );
    }
    forget_socket_offsets(key);
    let _ = TLS_CONNS.remove(key);
}

#[inline(always)]
pub(super) fn forget_socket_offsets(key: FdKey) {
    forget_offsets(key.tgid, key.fd as u64, Source::Socket);
}

#[inline(always)]
pub(super) fn read_sockaddr(addr: u64) -> SocketRecord {
    let mut record = SocketRecord::default();
    if addr == 0 {
        return record;
    }
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }.unwrap_or(0);
    // sockaddr_in / sockaddr_in6: port (network order) at offset 2; IPv4 address at 4, IPv6 at 8.
    let port: u16 = unsafe { bpf_probe_read_user((addr + 2) as *const u16) }.unwrap_or(0);
    record.family = family;
    record.port = u16::from_be(port);
    if family == AF_INET {
        if let Ok(a) = unsafe { bpf_probe_read_user((addr + 4) as *const [u8; 4]) } {
            record.addr[..4].copy_from_slice(&a);
        }
    } else if family == AF_INET6 {
        if let Ok(a) = unsafe { bpf_probe_read_user((addr + 8) as *const [u8; 16]) } {
            record.addr = a;
        }
    }
    record
}

#[repr(C)]
pub(super) struct SocketEvent {
    header: RecordHeader,
    body: SocketRecord,
}

#[inline(always)]
pub(crate) fn emit_socket_record(kind: RecordKind, pid_tgid: u64, fd: u32, body: SocketRecord) {
    let Some(mut entry) = EVENTS.reserve::<SocketEvent>(0) else {
        count(counter::RINGBUF_FULL_RECORDS, 1);
        crate::report::ring_full(pid_tgid, kind as u32);
        return;
    };
    entry.write(SocketEvent {
        header: RecordHeader {
            kind: kind as u32,
            direction: 0,
            function: 0,
            pid: tgid(pid_tgid),
            tid: pid_tgid as u32,
            chunk_len: core::mem::size_of::<SocketRecord>() as u32,
            timestamp_ns: unsafe { bpf_ktime_get_ns() },
            conn_id: fd as u64,
            call_len: 0,
            offset: 0,
            stream_offset: 0,
            source: Source::Socket as u32,
            fd: fd as i32,
            cookie: 0,
            _pad: 0,
        },
        body,
    });
    entry.submit(0);
}

// close(): the connection ends.

#[inline(always)]
pub(crate) fn enter_close(fd: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = FdKey {
        tgid: tgid(pid_tgid),
        fd: fd as u32,
    };
    let Some(state) = (unsafe { SOCKETS.get(key) }).copied() else {
        return;
    };
    let _ = SOCKETS.remove(key);
    // A stdio fd's byte counts belong to the process's stdio connection, which other fds may
    // still carry.
    if state.flags & flag::STDIO != 0 {
        return;
    }
    end_socket(key, state.flags, pid_tgid);
}

/// A traced socket (not stdio) with `flags` is gone from `key`, closed or replaced by dup2/dup3:
/// its stream ends.
#[inline(always)]
pub(super) fn end_socket(key: FdKey, flags: u32, pid_tgid: u64) {
    forget_socket_offsets(key);
    if flags & flag::COUNTED != 0 {
        finish_tls(key, pid_tgid);
    }
    // Every connection userspace heard of (connect/accept) hears of its end, so it can forget it.
    if flags & (flag::CONNECTED | flag::ACCEPTED) != 0 {
        emit_socket_record(RecordKind::Close, pid_tgid, key.fd, SocketRecord::default());
    }
}
