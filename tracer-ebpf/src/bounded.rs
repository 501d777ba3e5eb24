//! agent-tracer's kernel programs for kernels without the `bpf_loop` helper (before Linux 5.17:
//! Amazon Linux 2's 5.10, Ubuntu 22.04's 5.15, RHEL 9's 5.14). The same source as `main.rs`;
//! `LOOPS` makes every loop a bounded one, and the object holds no reference to the helper or
//! its callbacks (an older kernel refuses to load a program that names either, even on a path
//! never taken).
#![no_std]
#![no_main]

include!("programs.rs");

pub const LOOPS: Loops = Loops::Bounded;
