//! The per-syscall perf-event tracepoints (`syscalls:sys_enter_*`/`sys_exit_*`): the path for
//! kernels where neither raw tracepoint program loads (see `capture/compat.rs`). Each program only
//! reads its arguments and hands them to the handler in `syscalls.rs` that the raw paths
//! (`raw_syscalls.rs`) call too.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use super::*;

#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    enter_socket(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    exit_socket(ret(&ctx));
    0
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    remember_socket_call(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    exit_connect(ret(&ctx));
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    remember_socket_call(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    finish_accept(ret(&ctx));
    0
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    remember_socket_call(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    finish_accept(ret(&ctx));
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    enter_close(arg(&ctx, 0));
    0
}

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Write,
        Direction::Egress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_write(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Egress);
    0
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Sendto,
        Direction::Egress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Egress);
    0
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Writev,
        Direction::Egress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_writev(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Egress);
    0
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Sendmsg,
        Direction::Egress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Egress);
    0
}

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Read,
        Direction::Ingress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Ingress);
    0
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Recvfrom,
        Direction::Ingress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Ingress);
    0
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Readv,
        Direction::Ingress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Ingress);
    0
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter_io(
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        SocketFunction::Recvmsg,
        Direction::Ingress,
    );
    0
}

#[tracepoint]
pub fn sys_exit_recvmsg(ctx: TracePointContext) -> u32 {
    exit_io(ret(&ctx), Direction::Ingress);
    0
}

#[tracepoint]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    enter_dup(arg(&ctx, 0) as u32, ANY_FD);
    0
}

#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    exit_dup(ret(&ctx));
    0
}

#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    enter_dup(arg(&ctx, 0) as u32, arg(&ctx, 1) as u32);
    0
}

#[tracepoint]
pub fn sys_exit_dup2(ctx: TracePointContext) -> u32 {
    exit_dup(ret(&ctx));
    0
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    enter_dup(arg(&ctx, 0) as u32, arg(&ctx, 1) as u32);
    0
}

#[tracepoint]
pub fn sys_exit_dup3(ctx: TracePointContext) -> u32 {
    exit_dup(ret(&ctx));
    0
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    enter_fcntl(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    exit_dup(ret(&ctx));
    0
}
