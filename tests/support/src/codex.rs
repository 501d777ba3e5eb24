//! Codex CLI (`@openai/codex`) from the npm registry: the linux-x64 release is one stripped,
//! statically linked Rust executable (musl) that carries a static OpenSSL 3 and rustls on aws-lc.
//! Pinned and installed like the other real agents (`real-agents.txt`, `real_agents`), so
//! `cargo xtask setup` caches it and `cargo xtask test --latest-agents` tests the newest release.

use std::path::PathBuf;

use anyhow::Result;

/// Path of the `codex` executable, installing it if needed.
pub fn install() -> Result<PathBuf> {
    Ok(crate::real_agents::install("codex")?.executable)
}

/// The version the tests run (the pinned one, or the newest with `--latest-agents`).
pub fn version() -> Result<String> {
    Ok(crate::real_agents::install("codex")?.version)
}
