//! Uprobes on Go's `crypto/tls.(*Conn).Write` and `crypto/tls.(*Conn).Read`.
//!
//! Go grows goroutine stacks by copying them elsewhere, so a uretprobe (which plants its
//! trampoline address in the return slot on the stack) crashes Go programs. Userspace therefore
//! puts a plain uprobe on each function's entry and one on every `RET` instruction in it
//! (`tracer-user/src/capture/gotls.rs`), and these programs pair the two.
//!
//! Registers follow Go's internal register ABI (Go 1.17+, amd64): at entry the receiver `*Conn`
//! is in RAX and the `b []byte` argument in RBX (pointer) and RCX (length); at a `RET` the
//! first result `n` is in RAX. R14 always holds the running goroutine's `g`.
//!
//! The buffer pointer is taken at entry and read at return. That is safe because buffers handed
//! to a `net.Conn` escape to the heap (through the `io.Reader`/`io.Writer` interfaces), and Go's
//! heap never moves objects, unlike its stacks.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::uprobe,
    programs::ProbeContext,
};
use tracer_common::{counter, Direction, TlsFunction};

use crate::{
    emit::{emit_buffer, Transfer},
    maps::{count, is_ignored, GoCallKey, GoPendingCall, GO_TLS_PENDING},
};

#[uprobe]
pub fn go_tls_write_entry(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, Direction::Egress);
    0
}

#[uprobe]
pub fn go_tls_write_return(ctx: ProbeContext) -> u32 {
    finish_call(&ctx, Direction::Egress, TlsFunction::GoTlsWrite);
    0
}

#[uprobe]
pub fn go_tls_read_entry(ctx: ProbeContext) -> u32 {
    remember_call(&ctx, Direction::Ingress);
    0
}

#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    finish_call(&ctx, Direction::Ingress, TlsFunction::GoTlsRead);
    0
}

#[inline(always)]
fn call_key(ctx: &ProbeContext, pid_tgid: u64, direction: Direction) -> GoCallKey {
    // Safety: `regs` is the program's context; the verifier checks these reads.
    let goroutine = unsafe { (*ctx.regs).r14 };
    GoCallKey {
        goroutine,
        tgid: (pid_tgid >> 32) as u32,
        direction: direction as u32,
    }
}

/// Entry: remember the connection and the buffer. The entry can run twice for one call (after
/// the prologue grew the stack it jumps back to the entry); the second sight overwrites the
/// first with the same registers.
#[inline(always)]
fn remember_call(ctx: &ProbeContext, direction: Direction) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_ignored((pid_tgid >> 32) as u32) {
        count(counter::IGNORED_CALLS, 1);
        return;
    }
    let key = call_key(ctx, pid_tgid, direction);
    // Safety: as above.
    let (conn, buf, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    let call = GoPendingCall {
        conn,
        buf,
        len,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    if let Err(error) = GO_TLS_PENDING.insert(key, call, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "GO_TLS_PENDING",
            pid_tgid,
            error,
            "the Go TLS call's bytes are not copied (kernel_missing_entry)"
        );
    }
}

/// A `RET`: `n` bytes of the buffer remembered at entry were written or read.
#[inline(always)]
fn finish_call(ctx: &ProbeContext, direction: Direction, function: TlsFunction) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = call_key(ctx, pid_tgid, direction);
    let Some(call) = (unsafe { GO_TLS_PENDING.get(key) }).copied() else {
        // An ignored process's entry was skipped on purpose.
        if !is_ignored(key.tgid) {
            count(counter::MISSING_ENTRY, 1);
        }
        return;
    };
    let _ = GO_TLS_PENDING.remove(key);

    // Safety: as above. `n` is a Go int; negative never happens, but bound it anyway.
    let n = unsafe { (*ctx.regs).rax } as i64;
    if n <= 0 {
        return;
    }
    // A Go call never transfers more than len(b); anything else is not the `n` we expect.
    let len = (n as u64).min(call.len);
    count(counter::CALLS, 1);
    // Writes left at entry; reads' bytes arrived at return.
    let timestamp_ns = match direction {
        Direction::Egress => call.timestamp_ns,
        Direction::Ingress => unsafe { bpf_ktime_get_ns() },
    };
    let mut transfer = Transfer::tls(
        call.conn,
        call.buf,
        len,
        timestamp_ns,
        pid_tgid,
        function,
        direction,
    );
    emit_buffer(&mut transfer);
}
