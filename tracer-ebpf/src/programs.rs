// The crate root's body, shared by both builds of the kernel programs (`main.rs` with
// bpf_loop, `bounded.rs` without): one file per hook family; all maps in `maps.rs`.
// Included, not a module, so each build's `LOOPS` constant is the crate's own.

mod aead;
mod emit;
mod fentry_syscalls;
mod gotls;
mod maps;
mod openssl;
mod process;
mod raw_syscalls;
mod report;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

// bpf_probe_read_user and bpf_loop are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The probe's attach cookie (`bpf_get_attach_cookie`, Linux 5.15), which userspace gives the
/// hooks it placed by inference so their first records can be validated. The build for older
/// kernels names no such helper: its records carry 0, and userspace, unable to attach with a
/// cookie there, does not place inferred hooks (their connections are reported encrypted-only).
#[inline(always)]
pub fn attach_cookie<C: aya_ebpf::EbpfContext>(ctx: &C) -> u32 {
    match LOOPS {
        Loops::Helper => unsafe {
            aya_ebpf::helpers::generated::bpf_get_attach_cookie(ctx.as_ptr()) as u32
        },
        Loops::Bounded => 0,
    }
}

/// How the programs repeat work whose count is only known at run time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    /// `bpf_loop` (Linux 5.17): the callback is verified once, so up to
    /// `MAX_CHUNKS_PER_CALL` records per call.
    Helper,
    /// A plain loop the verifier unrolls: older kernels, with lower bounds that keep the
    /// verification within its instruction budget (`tracer_common::bounded`).
    Bounded,
}
