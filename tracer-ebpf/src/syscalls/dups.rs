//! Stdio descriptors' duplicates, followed through `dup`, `dup2`, `dup3` and `fcntl(F_DUPFD*)`.

use super::*;

// dup/dup2/dup3/fcntl(F_DUPFD*): a stdio fd's duplicate is the same stream (MCP SDKs move the
// wire off fds 0 and 1 so that stray prints cannot corrupt it); a traced fd replaced by dup2 is no
// longer what was traced.

pub(super) const F_DUPFD: u64 = 0;
pub(super) const F_DUPFD_CLOEXEC: u64 = 1030;
/// `PendingDup::newfd` when the kernel picks the new fd (dup, fcntl).
pub(crate) const ANY_FD: u32 = u32::MAX;

#[inline(always)]
pub(crate) fn enter_fcntl(fd: u64, cmd: u64) {
    if cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC {
        enter_dup(fd as u32, ANY_FD);
    }
}

/// dup/dup2/dup3 (`new_fd` [`ANY_FD`] when the kernel picks it).
#[inline(always)]
pub(crate) fn enter_dup(old_fd: u32, new_fd: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = tgid(pid_tgid);
    // Plain values, not Options of states: LLVM leaves a None's payload undefined, and the
    // verifier rejects reading an undefined register.
    let state = match unsafe { SOCKETS.get(FdKey { tgid, fd: old_fd }) } {
        Some(s) if s.flags & flag::STDIO != 0 => *s,
        _ => SocketState { flags: 0, pair: 0 },
    };
    let replaced_flags = if new_fd == ANY_FD || new_fd == old_fd {
        0
    } else {
        match unsafe { SOCKETS.get(FdKey { tgid, fd: new_fd }) } {
            Some(s) => s.flags,
            None => 0,
        }
    };
    if state.flags == 0 && replaced_flags == 0 {
        return;
    }
    let dup = PendingDup {
        state,
        replaced_flags,
        _pad: 0,
    };
    if let Err(error) = PENDING_DUPS.insert(pid_tgid, dup, BPF_ANY as u64) {
        crate::report::insert_failed!(
            "PENDING_DUPS",
            pid_tgid,
            error,
            "the duplicated stdio fd is not traced"
        );
    }
}

#[inline(always)]
pub(crate) fn exit_dup(fd: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(dup) = (unsafe { PENDING_DUPS.get(pid_tgid) }).copied() else {
        return;
    };
    let _ = PENDING_DUPS.remove(pid_tgid);
    if fd < 0 {
        return;
    }
    let key = FdKey {
        tgid: tgid(pid_tgid),
        fd: fd as u32,
    };
    if dup.replaced_flags & flag::STDIO == 0 && dup.replaced_flags != 0 {
        // A socket closed by being replaced: the same as close() for its stream.
        end_socket(key, dup.replaced_flags, pid_tgid);
    }
    if dup.state.flags & flag::STDIO != 0 {
        if let Err(error) = SOCKETS.insert(key, dup.state, BPF_ANY as u64) {
            crate::report::insert_failed!(
                "SOCKETS",
                pid_tgid,
                error,
                "the duplicated stdio fd is not traced"
            );
        }
    } else {
        let _ = SOCKETS.remove(key);
    }
}
