//! The same syscall handlers as `raw_syscalls.rs`, reached by fentry/fexit programs on the
//! kernel functions that carry each syscall, one pair per syscall.
//!
//! Why: any program on the `sys_enter`/`sys_exit` tracepoints, raw or not, sets the
//! syscall-tracepoint work flag on every task, so every syscall of every process on the host
//! leaves the fast path, traced or not. An fentry program is a call patched into the one kernel
//! function it hooks: a process pays only on the syscalls we handle, one BPF trampoline and our
//! early exit (the `SOCKETS` lookup), and nothing on the others. Userspace prefers this path
//! wherever the kernel loads it (`capture/compat.rs`), and falls back to the raw tracepoints.
//!
//! Why not kprobes on the same functions: a read's data is only there at exit, and a kretprobe
//! can watch a bounded number of calls at once (`maxactive`, twice the CPUs by default); every
//! thread blocked in `read` holds one, so exits would be missed without a trace.
//!
//! Which functions:
//! - the x86_64 syscall wrappers (`__x64_sys_read`, …) for the file and process syscalls: each
//!   takes the caller's saved `struct pt_regs *`, BTF-typed, so its registers are plain loads.
//!   Only 64-bit syscalls reach `__x64_sys_*` (a 32-bit process's go through `__ia32_sys_*`).
//! - the `__sys_*` functions for the socket syscalls (`__sys_sendto`, …), which take the
//!   syscall's own arguments: some kernels' BTF knows `struct pt_regs` only as a forward
//!   declaration in `net/socket.c` (Debian's 5.10: "func '__x64_sys_recvfrom' arg0 type FWD is
//!   not a struct"), so its wrappers' argument cannot be read there. `accept` and `accept4`
//!   both run `__sys_accept4`. The ia32 socket syscalls run these too; a 32-bit process's reads
//!   are not seen, so its connections show what it sent and count what is missing.
//!
//! An entry-only syscall whose wrapper the BTF cannot type gets a kprobe at the wrapper instead
//! (`kprobe_<syscall>`); those are rare (`execveat`), and a kprobe there costs little more.
//!
//! Programs are named `fentry_<syscall>`/`fexit_<syscall>`; their sections name no function,
//! userspace gives it at load time (`capture/loader.rs`, `SYSCALL_FUNCTIONS`, which must agree
//! with the function each program here is written for). A `fexit` program's return value is
//! the argument after the function's parameters.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe},
    programs::{FEntryContext, FExitContext, ProbeContext},
};

use crate::raw_syscalls::*;

/// `fentry_<name>` on `__x64_sys_<name>` runs the entry handler of syscall `nr`; with a second
/// name, `fexit_<name>` runs its exit handler with the wrapper's `long` result.
macro_rules! syscall_wrapper {
    ($nr:expr, $enter:ident) => {
        #[fentry]
        pub fn $enter(ctx: FEntryContext) -> u32 {
            let regs: *const u8 = ctx.arg(0);
            on_enter($nr, &unsafe { btf_user_regs(regs, $nr) });
            0
        }
    };
    ($nr:expr, $enter:ident, $exit:ident) => {
        syscall_wrapper!($nr, $enter);

        #[fexit]
        pub fn $exit(ctx: FExitContext) -> u32 {
            let r: i64 = ctx.arg(1);
            on_exit($nr, r);
            0
        }
    };
}

syscall_wrapper!(NR_READ, fentry_read, fexit_read);
syscall_wrapper!(NR_WRITE, fentry_write, fexit_write);
syscall_wrapper!(NR_READV, fentry_readv, fexit_readv);
syscall_wrapper!(NR_WRITEV, fentry_writev, fexit_writev);
syscall_wrapper!(NR_DUP, fentry_dup, fexit_dup);
syscall_wrapper!(NR_DUP2, fentry_dup2, fexit_dup2);
syscall_wrapper!(NR_DUP3, fentry_dup3, fexit_dup3);
syscall_wrapper!(NR_FCNTL, fentry_fcntl, fexit_fcntl);
syscall_wrapper!(NR_CLOSE, fentry_close);
syscall_wrapper!(NR_EXECVE, fentry_execve);
syscall_wrapper!(NR_EXECVEAT, fentry_execveat);
syscall_wrapper!(NR_EXIT_GROUP, fentry_exit_group);

/// `kprobe_<name>` on `__x64_sys_<name>`: the stand-in for an entry-only `fentry_<name>` that a
/// kernel's BTF cannot type (Debian's 5.10 types `__x64_sys_execveat`'s argument as a forward
/// declaration). A kprobe gets the wrapper's own registers, so the caller's `pt_regs` pointer is
/// its first argument, read with a helper. No exit is needed, so no kretprobe (see above).
macro_rules! syscall_wrapper_kprobe {
    ($nr:expr, $enter:ident) => {
        #[kprobe]
        pub fn $enter(ctx: ProbeContext) -> u32 {
            let Some(regs) = ctx.arg::<*const u8>(0) else {
                return 0;
            };
            if let Some(user) = read_user_regs(regs) {
                on_enter($nr, &user);
            }
            0
        }
    };
}

syscall_wrapper_kprobe!(NR_CLOSE, kprobe_close);
syscall_wrapper_kprobe!(NR_EXECVE, kprobe_execve);
syscall_wrapper_kprobe!(NR_EXECVEAT, kprobe_execveat);
syscall_wrapper_kprobe!(NR_EXIT_GROUP, kprobe_exit_group);

/// `fentry_<name>` on `__sys_<name>` runs syscall `nr`'s entry handler with the function's
/// first three arguments (`int fd` or `int family` first, read as the C `int` they are);
/// `fexit_<name>` its exit handler with the result at argument `ret_at`, an `int` or a `long`.
macro_rules! socket_function {
    ($nr:expr, $enter:ident, $exit:ident, ret_at = $ret_at:expr, ret = $ret:ty) => {
        #[fentry]
        pub fn $enter(ctx: FEntryContext) -> u32 {
            let a0 = ctx.arg::<u32>(0) as u64;
            let (a1, a2): (u64, u64) = (ctx.arg(1), ctx.arg(2));
            on_enter($nr, &args_as_user_regs($nr, a0, a1, a2));
            0
        }

        #[fexit]
        pub fn $exit(ctx: FExitContext) -> u32 {
            let r: $ret = ctx.arg($ret_at);
            on_exit($nr, r as i64);
            0
        }
    };
}

// int __sys_socket(int family, int type, int protocol)
socket_function!(NR_SOCKET, fentry_socket, fexit_socket, ret_at = 3, ret = i32);
// int __sys_connect(int fd, struct sockaddr __user *uservaddr, int addrlen)
socket_function!(NR_CONNECT, fentry_connect, fexit_connect, ret_at = 3, ret = i32);
// int __sys_accept4(int fd, struct sockaddr __user *upeer_sockaddr, int __user *upeer_addrlen,
//                   int flags)
socket_function!(NR_ACCEPT4, fentry_accept4, fexit_accept4, ret_at = 4, ret = i32);
// int __sys_sendto(int fd, void __user *buff, size_t len, unsigned int flags,
//                  struct sockaddr __user *addr, int addr_len)
socket_function!(NR_SENDTO, fentry_sendto, fexit_sendto, ret_at = 6, ret = i32);
// int __sys_recvfrom(int fd, void __user *ubuf, size_t size, unsigned int flags,
//                    struct sockaddr __user *addr, int __user *addr_len)
socket_function!(NR_RECVFROM, fentry_recvfrom, fexit_recvfrom, ret_at = 6, ret = i32);
// long __sys_sendmsg(int fd, struct user_msghdr __user *msg, unsigned int flags,
//                    bool forbid_cmsg_compat)
socket_function!(NR_SENDMSG, fentry_sendmsg, fexit_sendmsg, ret_at = 4, ret = i64);
// long __sys_recvmsg(int fd, struct user_msghdr __user *msg, unsigned int flags,
//                    bool forbid_cmsg_compat)
socket_function!(NR_RECVMSG, fentry_recvmsg, fexit_recvmsg, ret_at = 4, ret = i64);
