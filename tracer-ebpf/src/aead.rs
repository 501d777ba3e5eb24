//! Uprobes on an AEAD's seal and open calls, for TLS stacks whose own API has no stable hook
//! (rustls: generic Rust, inlined differently in every build). Every TLS record passes through
//! its cipher's seal (egress) or open (ingress):
//! - aws-lc's `EVP_AEAD_CTX_seal` / `EVP_AEAD_CTX_seal_scatter` / `EVP_AEAD_CTX_open` /
//!   `EVP_AEAD_CTX_open_gather` are C functions with the C ABI: stable arguments in every build,
//!   located by userspace from the error sites aws-lc's own code must contain
//!   (`capture/locate/rustls.rs`).
//! - ring's AES-GCM hands each record to its assembly in pieces (whole blocks to the vector
//!   code, the last partial block XORed in Rust), so no C function ever sees a record whole. Its
//!   `Algorithm` descriptors' `seal` and `open` function pointers do, once per record, and are
//!   found from the descriptors themselves (`capture/locate/ring.rs`). They are Rust functions:
//!   see [`ring_seal`] for where their arguments are.
//!
//! Each record's plaintext is sent up whole, tagged with the AEAD key object (`conn_id`) and the
//! TLS version its additional data shows (TLS 1.3: 5-byte record header, the content type is
//! the last non-zero plaintext byte; TLS 1.2: 13 bytes, the type is in the AD and only
//! application data is sent). Other uses of the AEAD (QUIC, application crypto) have other
//! additional data and are ignored.
//!
//! Which socket a record belongs to: the key object identifies one direction of one connection,
//! not its socket, so the probes tie it to the thread's socket calls:
//! - open: rustls decrypts in `process_new_packets`, right after `read_tls` read the socket on
//!   the same thread, within one synchronous call chain (StreamOwned, tokio-rustls and Deno's
//!   rustls-tokio-stream all do read-then-process), so the thread's last TLS socket read is the
//!   record's socket.
//! - seal: rustls encrypts in `writer().write()`, before the ciphertext goes out through
//!   `write_tls` on the same thread in the same call chain, so the thread's next TLS socket
//!   write is the record's socket. The kernel remembers the last sealing key per thread and,
//!   at that write, sends an `AeadLink` (key, fd) record; userspace holds the key's records
//!   until the link arrives, then knows the key for good.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{
    counter, Direction, RecordKind, SocketRecord, TlsFunction, MAX_TLS_RECORD_PLAINTEXT,
};

use crate::{
    emit::{emit_buffer, Transfer},
    maps::{count, is_ignored},
};

/// An open between entry and return: the plaintext exists only at return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingOpen {
    pub key: u64,
    pub out: u64,
    /// `size_t *out_len` of `EVP_AEAD_CTX_open`; 0 for `open_gather`, whose length is `len`.
    pub out_len: u64,
    pub len: u64,
    /// A `TlsFunction` value (which TLS version), 0 for an open that is not a TLS record.
    pub function: u32,
    /// 1: `EVP_AEAD_CTX_open` (which may call `open_gather` inside), 2: `open_gather`, 3:
    /// ring's `open`.
    pub entry: u32,
    /// ring's `open` only: where it writes its `Result<Tag, Unspecified>` (byte 0 is 0 for Ok).
    pub result: u64,
}

const OPEN: u32 = 1;
const OPEN_GATHER: u32 = 2;
const RING_OPEN: u32 = 3;

/// By pid_tgid.
#[map]
static AEAD_OPENS: LruHashMap<u64, PendingOpen> = LruHashMap::with_max_entries(16384, 0);

/// The key object a thread last sealed with and has not written since, by pid_tgid.
#[map]
static AEAD_SEALED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// The TLS socket a thread last read, by pid_tgid.
#[map]
static TLS_LAST_READ: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// The n-th stack argument (7th and later in the SysV ABI) at a function's entry: above the
/// return address.
#[inline(always)]
fn stack_arg(ctx: &ProbeContext, n: u64) -> u64 {
    let rsp = unsafe { (*ctx.regs).rsp };
    unsafe { bpf_probe_read_user((rsp + 8 * (n - 6)) as *const u64) }.unwrap_or(0)
}

/// Which TLS record the additional data describes, if any.
#[inline(always)]
fn classify(ad: u64, ad_len: u64) -> Option<TlsFunction> {
    if ad_len == 5 {
        let h = unsafe { bpf_probe_read_user(ad as *const [u8; 5]) }.ok()?;
        // TLS 1.3 records all say application data, legacy version 1.2.
        (h[0] == 23 && h[1] == 3 && h[2] == 3).then_some(TlsFunction::AeadTls13)
    } else if ad_len == 13 {
        // seq_num(8) type(1) version(2) length(2).
        let h = unsafe { bpf_probe_read_user(ad as *const [u8; 13]) }.ok()?;
        (h[8] == 23 && h[9] == 3 && h[10] <= 3).then_some(TlsFunction::AeadTls12)
    } else {
        None
    }
}

/// `int EVP_AEAD_CTX_seal_scatter(ctx, out, out_tag, out_tag_len, max_out_tag_len, nonce,
/// nonce_len, in, in_len, extra_in, extra_in_len, ad, ad_len)`: the plaintext is at `in` on
/// entry (and overwritten in place by the return).
#[uprobe]
pub fn aead_seal(ctx: ProbeContext) -> u32 {
    seal(&ctx, 8, 12);
    0
}

/// `int EVP_AEAD_CTX_seal(ctx, out, out_len, max_out_len, nonce, nonce_len, in, in_len, ad,
/// ad_len)` (aws-lc-rs's `seal_in_place_append_tag`, which rustls uses).
#[uprobe]
pub fn aead_seal_combined(ctx: ProbeContext) -> u32 {
    seal(&ctx, 7, 9);
    0
}

/// A seal's plaintext: `in, in_len` are arguments `input` and `input + 1`, `ad, ad_len`
/// arguments `ad` and `ad + 1` (1-based, all on the stack).
#[inline(always)]
fn seal(ctx: &ProbeContext, input: u64, ad: u64) {
    let Some(key) = ctx.arg::<u64>(0) else {
        return;
    };
    let plaintext = (stack_arg(ctx, input), stack_arg(ctx, input + 1));
    let ad = (stack_arg(ctx, ad), stack_arg(ctx, ad + 1));
    seal_record(ctx, key, plaintext, ad);
}

/// ring 0.17's `Algorithm::seal`, `fn(key: &KeyInner, nonce: Nonce, aad: Aad<&[u8]>, in_out:
/// &mut [u8], cpu: cpu::Features) -> Result<Tag, Unspecified>`: the plaintext is `in_out` on
/// entry. Rust's own calling convention is not a stable ABI, but rustc has laid this signature
/// out the same way for years (the `e2e_rustls` test proves it against the current compiler,
/// and a wrong guess is caught by validation, which detaches the hook): the 17-byte result is
/// returned through a pointer in `rdi`, `key` is in `rsi`, the 12-byte nonce is passed by
/// pointer in `rdx`, `aad` is `rcx, r8`, `in_out` is `r9` and the first stack argument, and the
/// zero-sized `cpu` takes no place.
#[uprobe]
pub fn ring_seal(ctx: ProbeContext) -> u32 {
    if let Some(call) = RingCall::of(&ctx) {
        seal_record(&ctx, call.key, (call.in_out, call.in_out_len), call.ad);
    }
    0
}

/// The arguments of ring's `seal` and `open`, where [`ring_seal`] says they are.
struct RingCall {
    /// Where the `Result<Tag, Unspecified>` goes.
    result: u64,
    key: u64,
    ad: (u64, u64),
    in_out: u64,
    in_out_len: u64,
}

impl RingCall {
    #[inline(always)]
    fn of(ctx: &ProbeContext) -> Option<Self> {
        Some(RingCall {
            result: ctx.arg::<u64>(0)?,
            key: ctx.arg::<u64>(1)?,
            ad: (ctx.arg::<u64>(3)?, ctx.arg::<u64>(4)?),
            in_out: ctx.arg::<u64>(5)?,
            in_out_len: stack_arg(ctx, 7),
        })
    }
}

/// Sends one sealed record's plaintext `(buf, len)` up, if its additional data `(ad, ad_len)`
/// says it is a TLS record, and remembers `key` as the thread's sealing key.
#[inline(always)]
fn seal_record(ctx: &ProbeContext, key: u64, (buf, len): (u64, u64), (ad, ad_len): (u64, u64)) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_ignored((pid_tgid >> 32) as u32) {
        count(counter::IGNORED_CALLS, 1);
        return;
    }
    let Some(function) = classify(ad, ad_len) else {
        return;
    };
    if let Err(error) = AEAD_SEALED.insert(pid_tgid, key, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "AEAD_SEALED",
            pid_tgid,
            error,
            "the sealed records are not linked to their socket"
        );
    }
    if len == 0 || !plausible_record(len) {
        return;
    }
    count(counter::CALLS, 1);
    let mut transfer = Transfer::tls(
        key,
        buf,
        len,
        unsafe { bpf_ktime_get_ns() },
        pid_tgid,
        function,
        Direction::Egress,
    );
    // The hook's attach cookie: its first records validate it (`capture/validate.rs`).
    transfer.cookie = crate::attach_cookie(ctx);
    emit_buffer(&mut transfer);
}

/// `int EVP_AEAD_CTX_open(ctx, out, size_t *out_len, max_out_len, nonce, nonce_len, in, in_len,
/// ad, ad_len)`.
#[uprobe]
pub fn aead_open(ctx: ProbeContext) -> u32 {
    remember_open(&ctx, OPEN);
    0
}

/// `int EVP_AEAD_CTX_open_gather(ctx, out, nonce, nonce_len, in, in_len, in_tag, in_tag_len,
/// ad, ad_len)`: `in_len` plaintext bytes at `out` on success.
#[uprobe]
pub fn aead_open_gather(ctx: ProbeContext) -> u32 {
    remember_open(&ctx, OPEN_GATHER);
    0
}

/// ring 0.17's `Algorithm::open`, `fn(key: &KeyInner, nonce: Nonce, aad: Aad<&[u8]>, in_out:
/// &mut [u8], src: RangeFrom<usize>, cpu: cpu::Features) -> Result<Tag, Unspecified>`: laid out
/// as [`ring_seal`]'s arguments, with `src.start` as the second stack argument. The ciphertext
/// is `in_out[src]`; on return its plaintext is at the start of `in_out`. The returned tag is
/// checked by the caller, after the return: a forged record's plaintext is reported, and the
/// connection then fails in rustls.
#[uprobe]
pub fn ring_open(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_ignored((pid_tgid >> 32) as u32) {
        count(counter::IGNORED_CALLS, 1);
        return 0;
    }
    let Some(call) = RingCall::of(&ctx) else {
        return 0;
    };
    let start = stack_arg(&ctx, 8);
    let open = PendingOpen {
        key: call.key,
        out: call.in_out,
        out_len: 0,
        len: call.in_out_len.saturating_sub(start),
        function: classify(call.ad.0, call.ad.1).map_or(0, |f| f as u32),
        entry: RING_OPEN,
        result: call.result,
    };
    if let Err(error) = AEAD_OPENS.insert(pid_tgid, open, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "AEAD_OPENS",
            pid_tgid,
            error,
            "the opened record's bytes are not copied"
        );
    }
    0
}

#[uretprobe]
pub fn ring_open_ret(ctx: RetProbeContext) -> u32 {
    finish_open(&ctx, RING_OPEN);
    0
}

#[inline(always)]
fn remember_open(ctx: &ProbeContext, entry: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_ignored((pid_tgid >> 32) as u32) {
        count(counter::IGNORED_CALLS, 1);
        return;
    }
    // `EVP_AEAD_CTX_open` calls `open_gather` when the compiler did not inline it: the outer
    // call reports the record, once.
    if entry == OPEN_GATHER {
        if let Some(outer) = unsafe { AEAD_OPENS.get(pid_tgid) } {
            if outer.entry == OPEN {
                return;
            }
        }
    }
    let (Some(key), Some(out)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let (out_len, len) = if entry == OPEN {
        (ctx.arg::<u64>(2).unwrap_or(0), 0)
    } else {
        (0, ctx.arg::<u64>(5).unwrap_or(0))
    };
    // Both opens take `ad, ad_len` as their 9th and 10th arguments.
    let function = classify(stack_arg(ctx, 9), stack_arg(ctx, 10)).map_or(0, |f| f as u32);
    let open = PendingOpen {
        key,
        out,
        out_len,
        len,
        function,
        entry,
        result: 0,
    };
    if let Err(error) = AEAD_OPENS.insert(pid_tgid, open, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "AEAD_OPENS",
            pid_tgid,
            error,
            "the opened record's bytes are not copied"
        );
    }
}

#[uretprobe]
pub fn aead_open_ret(ctx: RetProbeContext) -> u32 {
    finish_open(&ctx, OPEN);
    0
}

#[uretprobe]
pub fn aead_open_gather_ret(ctx: RetProbeContext) -> u32 {
    finish_open(&ctx, OPEN_GATHER);
    0
}

#[inline(always)]
fn finish_open(ctx: &RetProbeContext, entry: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(open) = (unsafe { AEAD_OPENS.get(pid_tgid) }).copied() else {
        return;
    };
    // A nested open_gather returning inside EVP_AEAD_CTX_open: the outer return reports.
    if open.entry != entry {
        return;
    }
    let _ = AEAD_OPENS.remove(pid_tgid);
    let opened = if entry == RING_OPEN {
        let status = unsafe { bpf_probe_read_user(open.result as *const u8) };
        status == Ok(0)
    } else {
        ctx.ret::<i32>() == 1
    };
    if open.function == 0 || !opened {
        return;
    }
    let len = if open.out_len != 0 {
        match unsafe { bpf_probe_read_user(open.out_len as *const u64) } {
            Ok(n) => n,
            Err(_) => return,
        }
    } else {
        open.len
    };
    if len == 0 || !plausible_record(len) {
        return;
    }
    count(counter::CALLS, 1);
    let function = if open.function == TlsFunction::AeadTls12 as u32 {
        TlsFunction::AeadTls12
    } else {
        TlsFunction::AeadTls13
    };
    let mut transfer = Transfer::tls(
        open.key,
        open.out,
        len,
        unsafe { bpf_ktime_get_ns() },
        pid_tgid,
        function,
        Direction::Ingress,
    );
    // Entry and return probes of one function share its cookie.
    transfer.cookie = crate::attach_cookie(ctx);
    if let Some(fd) = unsafe { TLS_LAST_READ.get(pid_tgid) } {
        transfer.fd = *fd as i32;
    }
    emit_buffer(&mut transfer);
}

/// A record length from the traced program's arguments or memory: one a TLS record can have, or
/// counted and refused (userspace would otherwise be asked to assemble a record of any size).
#[inline(always)]
fn plausible_record(len: u64) -> bool {
    if len > MAX_TLS_RECORD_PLAINTEXT {
        count(counter::IMPLAUSIBLE_LENGTHS, 1);
        return false;
    }
    true
}

/// A read or write syscall on a socket known to carry TLS (called at the syscall's entry).
#[inline(always)]
pub fn on_tls_socket_call(pid_tgid: u64, fd: u32, direction: Direction) {
    match direction {
        Direction::Ingress => {
            let _ = TLS_LAST_READ.insert(pid_tgid, fd, BPF_ANY as u64);
        }
        Direction::Egress => {
            let Some(key) = (unsafe { AEAD_SEALED.get(pid_tgid) }).copied() else {
                return;
            };
            let _ = AEAD_SEALED.remove(pid_tgid);
            let link = SocketRecord {
                ssl: key,
                ..SocketRecord::default()
            };
            crate::syscalls::emit_socket_record(RecordKind::AeadLink, pid_tgid, fd, link);
        }
    }
}
