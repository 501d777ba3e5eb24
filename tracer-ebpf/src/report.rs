//! Debug messages from the rare paths where the programs lose or cut something: a read of the
//! traced program's memory that failed, a full ring buffer, a call cut at the per-call limit, a
//! map that refused an entry. The counters (`tracer_common::counter`) say how much was lost;
//! these say where, and for which process, so that a user on a kernel we never ran can tell us
//! why. They reach the daemon's log through aya-log (target `tracer_ebpf::...`) when
//! `AGENT_TRACER_LOG` enables debug there (`capture/kernel_log.rs` in tracer-user).
//!
//! Off (the default) they cost nothing, by aya-log-ebpf's own mechanism: its level is the
//! read-only global `AYA_LOG_LEVEL`, which userspace sets at load time, below debug unless asked.
//! The kernel freezes read-only globals, so the verifier knows the level at every check: it takes
//! each message as dead code, walks none of it and drops it; what is left at run time is at most
//! the load and a jump the verifier fixed, on the error paths and once at the end of a copied
//! call. Measured on 6.18 with them off, the programs verify in at most a tenth more
//! instructions than they did without them.
//!
//! On, every message is verified again at each place that can send it (the functions here are
//! static: bpf-linker gives every non-program function static linkage), and one costs the
//! verifier thousands of instructions (aya-log copies its strings byte by byte). So a copied
//! call sends one message at its end for all it lost (`call_ends`), from totals noted in a
//! per-CPU map on the way (`note_*`), rather than one per record from each of the bounded
//! build's unrolled copies; and that message takes no arguments, so that nothing is kept alive
//! for it through the copy loops, which with the messages off still costs the verifier.
//!
//! Not reported here, on purpose: inserts into the LRU maps (`STREAM_OFFSETS`, `TLS_LAST_READ`)
//! never fail for want of room, they evict; an evicted stream count shows in userspace as the
//! stream's count starting again (`stream_count_restarts`), a lost last-read fd as a record
//! without its socket. And the ring buffer being full for the TLS summaries of an exiting
//! process: those are sent from the exit's loop over the process's descriptors, which the
//! bounded build unrolls, and a message in it would be verified once per descriptor; they are
//! counted in `kernel_ringbuf_full_records` like every other record.

use aya_log_ebpf::macro_support::{level_enabled, Level};

use crate::maps::{CallLosses, CALL_LOSSES};

/// Whether the messages are on: aya-log-ebpf's level check, a load the verifier folds into a
/// constant (see above). Checked before each call so that, off, not even the call is verified.
#[inline(always)]
pub fn on() -> bool {
    level_enabled(Level::Debug)
}

/// Adds to what the current call lost, by `add`, on the thread and connection named.
#[inline(always)]
fn note(pid_tgid: u64, conn_id: u64, add: impl FnOnce(&mut CallLosses)) {
    if on() {
        if let Some(lost) = CALL_LOSSES.get_ptr_mut(0) {
            // Safety: this CPU's slot, and no other program runs on this CPU meanwhile.
            let lost = unsafe { &mut *lost };
            lost.any = 1;
            lost.pid_tgid = pid_tgid;
            lost.conn_id = conn_id;
            add(lost);
        }
    }
}

/// `len` bytes of the call could not be read from the traced program's memory.
#[inline(always)]
pub fn note_unreadable(pid_tgid: u64, conn_id: u64, len: u64, error: i64) {
    note(pid_tgid, conn_id, |lost| {
        lost.unreadable += len;
        lost.read_error = error;
    });
}

/// A record of the call found the ring buffer full.
#[inline(always)]
pub fn note_ring_full(pid_tgid: u64, conn_id: u64) {
    note(pid_tgid, conn_id, |lost| lost.ring_full += 1);
}

/// `bytes` of the call were past the per-call limit.
#[inline(always)]
pub fn note_cut(pid_tgid: u64, conn_id: u64, bytes: u64) {
    note(pid_tgid, conn_id, |lost| lost.cut += bytes);
}

/// The current call is copied: one message if it lost anything, with how much of each kind
/// (`kernel_read_failed_bytes`, `kernel_ringbuf_full_records`, `kernel_truncated_bytes`). No
/// arguments: what the message needs was noted with the losses, so that, off, no value is kept
/// alive up to here for it (which, after the unrolled iovec loop, costs the verifier dearly).
#[inline(always)]
pub fn call_ends() {
    if on() {
        call_lost_message();
    }
}

#[inline(never)]
fn call_lost_message() {
    let Some(lost) = CALL_LOSSES.get_ptr_mut(0) else {
        return;
    };
    // Safety: as above.
    let lost = unsafe { &mut *lost };
    if lost.any == 0 {
        return;
    }
    aya_log_ebpf::debug!(
        &(),
        "pid {} tid {} conn {:x}: a call lost {} bytes unreadable (error {}), {} records to a full ring buffer, {} bytes cut at the per-call limit",
        lost.pid_tgid >> 32,
        lost.pid_tgid as u32,
        lost.conn_id,
        lost.unreadable,
        lost.read_error,
        lost.ring_full,
        lost.cut
    );
    // Zero again for the next call: every note is followed by its call's end.
    *lost = CallLosses::NONE;
}

/// The ring buffer had no room for a record of `kind` (`kernel_ringbuf_full_records`).
#[inline(always)]
pub fn ring_full(pid_tgid: u64, kind: u32) {
    if on() {
        ring_full_message(pid_tgid, kind);
    }
}

#[inline(never)]
fn ring_full_message(pid_tgid: u64, kind: u32) {
    aya_log_ebpf::debug!(
        &(),
        "pid {} tid {}: ring buffer full, a record of kind {} dropped",
        pid_tgid >> 32,
        pid_tgid as u32,
        kind
    );
}

/// Map `$map` (a string literal) refused an entry (`$error`, from the map's `insert`) for the
/// thread `$pid_tgid`; `$lost` (a string literal) says what that costs.
macro_rules! insert_failed {
    ($map:literal, $pid_tgid:expr, $error:expr, $lost:literal) => {{
        // One function per place: aya-log copies each string with a length known at compile
        // time, so the map's name cannot be an argument.
        #[inline(never)]
        fn insert_failed_message(pid_tgid: u64, error: i64) {
            aya_log_ebpf::debug!(
                &(),
                "pid {} tid {}: map {} refused an entry (error {}): {}",
                pid_tgid >> 32,
                pid_tgid as u32,
                $map,
                error,
                $lost
            );
        }
        if $crate::report::on() {
            insert_failed_message($pid_tgid, i64::from($error));
        }
    }};
}
pub(crate) use insert_failed;
