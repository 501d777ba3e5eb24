//! agent-tracer's kernel programs, for kernels with the `bpf_loop` helper (Linux 5.17 and
//! later). `bounded.rs` builds the same programs for older kernels; userspace loads the one the
//! running kernel can verify (`capture/compat.rs` probes for the helper).
#![no_std]
#![no_main]

include!("programs.rs");

pub const LOOPS: Loops = Loops::Helper;
