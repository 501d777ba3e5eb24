//! agent-tracer's kernel programs. One file per hook family; all maps in `maps.rs`.
#![no_std]
#![no_main]

mod aead;
mod emit;
mod gotls;
mod maps;
mod openssl;
mod process;
mod raw_syscalls;
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
