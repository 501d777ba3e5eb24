//! The same syscall handlers as `syscalls.rs`, reached through the raw `sys_enter`/`sys_exit`
//! tracepoints instead of one `syscalls:sys_*` perf-event tracepoint per syscall.
//!
//! Why: every perf-event syscall tracepoint run first fills a perf buffer record with the
//! syscall's arguments (`perf_syscall_enter`) before the program starts. A raw tracepoint program
//! runs straight off the tracepoint with the caller's registers, so a call we do not want costs a
//! compare of the syscall number (and, for data calls, the one `SOCKETS` lookup that says whether
//! this process's fd is a candidate). Two flavours, picked by userspace (`capture/compat.rs`):
//! `tp_btf` (kernel BTF: the registers are read with plain loads) and `raw_tp` (no BTF: one
//! `bpf_probe_read_kernel` of the registers once the number matched).
//!
//! Syscall numbers and the `pt_regs` layout are x86_64's; userspace only picks this path there.
//! A 32-bit (ia32) process's syscalls have other numbers: they are left out here, as the
//! per-syscall tracepoints leave them out, by the code segment they were made from.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tracer_common::{Direction, SocketFunction};

use crate::{
    process::{emit_args, remember_exit_status},
    syscalls::{
        enter_close, enter_dup, enter_fcntl, enter_io, enter_socket, exit_connect, exit_dup,
        exit_io, exit_socket, finish_accept, remember_socket_call, ANY_FD,
    },
};

// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
pub(crate) const NR_READ: u64 = 0;
pub(crate) const NR_WRITE: u64 = 1;
pub(crate) const NR_CLOSE: u64 = 3;
pub(crate) const NR_READV: u64 = 19;
pub(crate) const NR_WRITEV: u64 = 20;
pub(crate) const NR_DUP: u64 = 32;
pub(crate) const NR_DUP2: u64 = 33;
pub(crate) const NR_SOCKET: u64 = 41;
pub(crate) const NR_CONNECT: u64 = 42;
pub(crate) const NR_ACCEPT: u64 = 43;
pub(crate) const NR_SENDTO: u64 = 44;
pub(crate) const NR_RECVFROM: u64 = 45;
pub(crate) const NR_SENDMSG: u64 = 46;
pub(crate) const NR_RECVMSG: u64 = 47;
pub(crate) const NR_EXECVE: u64 = 59;
pub(crate) const NR_FCNTL: u64 = 72;
pub(crate) const NR_EXIT_GROUP: u64 = 231;
pub(crate) const NR_ACCEPT4: u64 = 288;
pub(crate) const NR_DUP3: u64 = 292;
pub(crate) const NR_EXECVEAT: u64 = 322;

/// Bit n set: syscall n (< 64) has an entry handler.
const ENTER_LOW: u64 = bit(NR_READ)
    | bit(NR_WRITE)
    | bit(NR_CLOSE)
    | bit(NR_READV)
    | bit(NR_WRITEV)
    | bit(NR_DUP)
    | bit(NR_DUP2)
    | bit(NR_SOCKET)
    | bit(NR_CONNECT)
    | bit(NR_ACCEPT)
    | bit(NR_SENDTO)
    | bit(NR_RECVFROM)
    | bit(NR_SENDMSG)
    | bit(NR_RECVMSG)
    | bit(NR_EXECVE);
/// Bit n set: syscall n (< 64) has an exit handler (close, execve: entry only).
const EXIT_LOW: u64 = ENTER_LOW & !bit(NR_CLOSE) & !bit(NR_EXECVE);

const fn bit(nr: u64) -> u64 {
    1 << nr
}

/// The cheapest possible "not ours": one range check and one bit test for the usual syscalls.
#[inline(always)]
fn wanted_at_entry(nr: u64) -> bool {
    if nr < 64 {
        return ENTER_LOW >> nr & 1 != 0;
    }
    nr == NR_FCNTL || nr == NR_EXIT_GROUP || nr == NR_ACCEPT4 || nr == NR_DUP3 || nr == NR_EXECVEAT
}

#[inline(always)]
fn wanted_at_exit(nr: u64) -> bool {
    if nr < 64 {
        return EXIT_LOW >> nr & 1 != 0;
    }
    nr == NR_FCNTL || nr == NR_ACCEPT4 || nr == NR_DUP3
}

/// `struct pt_regs` (x86_64) from `r10` (byte 56) to `cs` (byte 136): the syscall's arguments
/// (di, si, dx; r10 is the fourth, which no handler needs), its number (orig_ax) and the
/// caller's code segment.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UserRegs {
    _r10: u64,
    _r9: u64,
    _r8: u64,
    _ax: u64,
    _cx: u64,
    dx: u64,
    si: u64,
    di: u64,
    _orig_ax: u64,
    _ip: u64,
    cs: u64,
}
const REGS_START: usize = 56;
const ORIG_AX_AT: usize = 120;
const CS_AT: usize = 136;
/// `__USER_CS`: a 64-bit process's code segment (a 32-bit one's is `__USER32_CS`, 0x23).
const USER64_CS: u64 = 0x33;

#[inline(always)]
pub(crate) fn on_enter(nr: u64, regs: &UserRegs) {
    let (a0, a1, a2) = (regs.di, regs.si, regs.dx);
    match nr {
        NR_READ => enter_io(a0, a1, a2, SocketFunction::Read, Direction::Ingress),
        NR_WRITE => enter_io(a0, a1, a2, SocketFunction::Write, Direction::Egress),
        NR_READV => enter_io(a0, a1, a2, SocketFunction::Readv, Direction::Ingress),
        NR_WRITEV => enter_io(a0, a1, a2, SocketFunction::Writev, Direction::Egress),
        NR_RECVFROM => enter_io(a0, a1, a2, SocketFunction::Recvfrom, Direction::Ingress),
        NR_SENDTO => enter_io(a0, a1, a2, SocketFunction::Sendto, Direction::Egress),
        NR_RECVMSG => enter_io(a0, a1, a2, SocketFunction::Recvmsg, Direction::Ingress),
        NR_SENDMSG => enter_io(a0, a1, a2, SocketFunction::Sendmsg, Direction::Egress),
        NR_CLOSE => enter_close(a0),
        NR_SOCKET => enter_socket(a0, a1),
        NR_CONNECT | NR_ACCEPT | NR_ACCEPT4 => remember_socket_call(a0, a1),
        NR_DUP => enter_dup(a0 as u32, ANY_FD),
        NR_DUP2 | NR_DUP3 => enter_dup(a0 as u32, a1 as u32),
        NR_FCNTL => enter_fcntl(a0, a1),
        NR_EXECVE => {
            emit_args(a1);
        }
        NR_EXECVEAT => {
            emit_args(a2);
        }
        NR_EXIT_GROUP => remember_exit_status(a0),
        _ => {}
    }
}

#[inline(always)]
pub(crate) fn on_exit(nr: u64, r: i64) {
    match nr {
        NR_READ | NR_READV | NR_RECVFROM | NR_RECVMSG => exit_io(r, Direction::Ingress),
        NR_WRITE | NR_WRITEV | NR_SENDTO | NR_SENDMSG => exit_io(r, Direction::Egress),
        NR_SOCKET => exit_socket(r),
        NR_CONNECT => exit_connect(r),
        NR_ACCEPT | NR_ACCEPT4 => finish_accept(r),
        NR_DUP | NR_DUP2 | NR_DUP3 | NR_FCNTL => exit_dup(r),
        _ => {}
    }
}

/// Word `at` (a byte offset) of a `pt_regs` the kernel handed a BTF-typed program: a plain load,
/// which the verifier checks against the type.
#[inline(always)]
unsafe fn btf_reg(regs: *const u8, at: usize) -> u64 {
    unsafe { core::ptr::read_volatile(regs.add(at) as *const u64) }
}

/// The registers the handlers read, from a BTF-typed `pt_regs` pointer (`tp_btf/sys_enter`'s,
/// or the one the `__x64_sys_*` functions take), with plain loads.
#[inline(always)]
pub(crate) unsafe fn btf_user_regs(regs: *const u8, nr: u64) -> UserRegs {
    unsafe {
        UserRegs {
            _r10: 0,
            _r9: 0,
            _r8: 0,
            _ax: 0,
            _cx: 0,
            dx: btf_reg(regs, REGS_START + 40),
            si: btf_reg(regs, REGS_START + 48),
            di: btf_reg(regs, REGS_START + 56),
            _orig_ax: nr,
            _ip: 0,
            cs: btf_reg(regs, CS_AT),
        }
    }
}

/// The handlers' registers from a function's own arguments (the `__sys_*` functions the socket
/// syscalls call, which take the syscall's arguments in the syscall's order).
#[inline(always)]
pub(crate) fn args_as_user_regs(nr: u64, a0: u64, a1: u64, a2: u64) -> UserRegs {
    UserRegs {
        _r10: 0,
        _r9: 0,
        _r8: 0,
        _ax: 0,
        _cx: 0,
        dx: a2,
        si: a1,
        di: a0,
        _orig_ax: nr,
        _ip: 0,
        cs: USER64_CS,
    }
}

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> u32 {
    let nr: u64 = ctx.arg(1);
    if !wanted_at_entry(nr) {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let user = unsafe { btf_user_regs(regs, nr) };
    if user.cs == USER64_CS {
        on_enter(nr, &user);
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> u32 {
    let regs: *const u8 = ctx.arg(0);
    let nr = unsafe { btf_reg(regs, ORIG_AX_AT) };
    if !wanted_at_exit(nr) || unsafe { btf_reg(regs, CS_AT) } != USER64_CS {
        return 0;
    }
    let r: i64 = ctx.arg(1);
    on_exit(nr, r);
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_raw(ctx: RawTracePointContext) -> u32 {
    let nr: u64 = ctx.arg(1);
    if !wanted_at_entry(nr) {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let Some(user) = read_user_regs(regs) else {
        return 0;
    };
    if user.cs == USER64_CS {
        on_enter(nr, &user);
    }
    0
}

/// The registers the handlers read, from a `pt_regs` pointer the program cannot load from
/// directly (no BTF type for it): one helper read.
#[inline(always)]
pub(crate) fn read_user_regs(regs: *const u8) -> Option<UserRegs> {
    unsafe { bpf_probe_read_kernel(regs.wrapping_add(REGS_START) as *const UserRegs) }.ok()
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_raw(ctx: RawTracePointContext) -> u32 {
    let regs: *const u8 = ctx.arg(0);
    // orig_ax and cs (with ip between them) in one read.
    let Ok(tail) =
        (unsafe { bpf_probe_read_kernel(regs.wrapping_add(ORIG_AX_AT) as *const [u64; 3]) })
    else {
        return 0;
    };
    if !wanted_at_exit(tail[0]) || tail[2] != USER64_CS {
        return 0;
    }
    let r: i64 = ctx.arg(1);
    on_exit(tail[0], r);
    0
}
