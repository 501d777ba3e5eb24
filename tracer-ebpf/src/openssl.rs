//! Uprobes on OpenSSL's (and API-compatible libraries': BoringSSL, GnuTLS) read and write calls.
//!
//! The entry probe remembers the buffer; the return probe learns how many bytes the call really
//! transferred and copies exactly those, whole, in `CHUNK_SIZE` records. Copying at return means a
//! write retried after WANT_WRITE is captured once, from the call that succeeded.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{Direction, TlsFunction};

use crate::{
    emit::{emit_buffer, Transfer},
    maps::{count, is_ignored, PendingCall, PENDING_READS, PENDING_WRITES},
};
use tracer_common::counter;

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, TlsFunction::SslWrite, &PENDING_WRITES);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, TlsFunction::SslWriteEx, &PENDING_WRITES);
    0
}

/// `SSL_write_ex2` and OpenSSL 3.2+'s `ssl_write_internal`: the written count is the fifth
/// argument (a `flags` word comes before it).
#[uprobe]
pub fn ssl_write_ex2(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, TlsFunction::SslWriteEx2, &PENDING_WRITES);
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, TlsFunction::SslRead, &PENDING_READS);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, TlsFunction::SslReadEx, &PENDING_READS);
    0
}

/// GnuTLS has the same shape as `SSL_write`/`SSL_read`: (session, buffer, size) -> bytes.
#[uprobe]
pub fn gnutls_record_send(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, TlsFunction::GnutlsRecordSend, &PENDING_WRITES);
    0
}

#[uprobe]
pub fn gnutls_record_recv(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, TlsFunction::GnutlsRecordRecv, &PENDING_READS);
    0
}

#[uretprobe]
pub fn ssl_write_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, Direction::Egress, &PENDING_WRITES);
    0
}

#[uretprobe]
pub fn ssl_read_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, Direction::Ingress, &PENDING_READS);
    0
}

#[inline(always)]
fn remember_call(
    ctx: &ProbeContext,
    function: TlsFunction,
    pending: &LruHashMap<u64, PendingCall>,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_ignored((pid_tgid >> 32) as u32) {
        count(counter::IGNORED_CALLS, 1);
        return;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let len_out = match function {
        TlsFunction::SslWriteEx | TlsFunction::SslReadEx => ctx.arg::<u64>(3).unwrap_or(0),
        TlsFunction::SslWriteEx2 => ctx.arg::<u64>(4).unwrap_or(0),
        _ => 0,
    };
    // `SSL_read_ex(ssl, buf, num, ...)`, `SSL_write_ex(2)` and the internal workers: `num`.
    let requested = ctx.arg::<u64>(2).unwrap_or(0);
    // Userspace gives hooks placed by inference a cookie, to validate what they capture.
    let cookie = crate::attach_cookie(ctx);
    let call = PendingCall {
        ssl,
        buf,
        len_out,
        requested,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        function: function as u32,
        cookie,
    };
    if let Err(error) = pending.insert(pid_tgid, call, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "PENDING_WRITES/PENDING_READS",
            pid_tgid,
            error,
            "the TLS call's bytes are not copied (kernel_missing_entry)"
        );
    }
}

#[inline(always)]
fn finish_call(
    ctx: &RetProbeContext,
    direction: Direction,
    pending: &LruHashMap<u64, PendingCall>,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { pending.get(pid_tgid) }).copied() else {
        // An ignored process's entry was skipped on purpose.
        if !is_ignored((pid_tgid >> 32) as u32) {
            count(counter::MISSING_ENTRY, 1);
        }
        return;
    };
    let _ = pending.remove(pid_tgid);

    // OpenSSL's calls return a C `int`: only the low 32 bits of the register are defined, so a
    // -1 (WANT_READ on a non-blocking socket, as curl's HTTP/2 reads get all the time) read as
    // 64 bits is a length of four billion. GnuTLS's calls return `ssize_t`.
    let gnutls = call.function == TlsFunction::GnutlsRecordSend as u32
        || call.function == TlsFunction::GnutlsRecordRecv as u32;
    let ret: i64 = if gnutls {
        ctx.ret::<i64>()
    } else {
        i64::from(ctx.ret::<i32>())
    };
    let len = if call.len_out != 0 {
        // SSL_{read,write}_ex: 1 on success, the count in the out-parameter; OpenSSL's internal
        // workers return a positive value on success too.
        if ret <= 0 {
            return;
        }
        match unsafe { bpf_probe_read_user(call.len_out as *const u64) } {
            // The program's memory says what it likes: never more than the buffer it gave.
            Ok(n) if n > call.requested => {
                count(counter::IMPLAUSIBLE_LENGTHS, 1);
                call.requested
            }
            Ok(n) => n,
            Err(_) => return,
        }
    } else {
        if ret <= 0 {
            return;
        }
        ret as u64
    };
    if len == 0 {
        return;
    }
    count(counter::CALLS, 1);
    // Writes left at entry; reads' bytes arrived at return.
    let timestamp_ns = match direction {
        Direction::Egress => call.timestamp_ns,
        Direction::Ingress => unsafe { bpf_ktime_get_ns() },
    };
    let mut transfer = Transfer::tls(
        call.ssl,
        call.buf,
        len,
        timestamp_ns,
        pid_tgid,
        TlsFunction::SslWrite,
        direction,
    );
    transfer.function = call.function;
    transfer.cookie = call.cookie;
    emit_buffer(&mut transfer);
}
