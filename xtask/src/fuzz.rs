//! `cargo xtask fuzz`: the cargo fuzz targets in fuzz/ (nightly, libFuzzer), each for a bounded
//! time. `cargo xtask test` runs them for a few seconds each; longer runs are for people.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{self, run_checked};

/// Every target in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "http1",
    "http2",
    "sse",
    "websocket",
    "eventstream",
    "genai",
    "jsonrpc",
];

/// Longest input tried: bodies, frames and event streams of a realistic size (libFuzzer's
/// default, 4096 bytes, never reaches a parser's size limits).
pub const MAX_INPUT_BYTES: u32 = 1 << 20;
/// The process's memory limit: a parser that holds more on any input is a bug libFuzzer reports.
pub const RSS_LIMIT_MIB: u32 = 2048;
/// The largest single allocation allowed: a length read off the input must never size one.
pub const MALLOC_LIMIT_MIB: u32 = 512;

pub fn command(target: &str, seconds: u32) -> Command {
    let mut c = util::cargo_toolchain("nightly");
    c.current_dir(util::root().join("fuzz"))
        .args(["fuzz", "run", "-O", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_INPUT_BYTES}"))
        // Every length up to the cap from the start, not grown slowly from a few KiB.
        .arg("-len_control=0")
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MIB}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MIB}"));
    c
}

pub fn run(seconds: u32, targets: &[String]) -> Result<()> {
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for t in &chosen {
        if !TARGETS.contains(t) {
            bail!(
                "unknown fuzz target {t:?} (targets: {})",
                TARGETS.join(", ")
            );
        }
    }
    for t in chosen {
        util::header(&format!("fuzz {t} for {seconds} s"));
        run_checked(&mut command(t, seconds))?;
    }
    Ok(())
}
