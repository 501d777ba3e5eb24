//! Codex CLI (`@openai/codex`) from the npm registry: the linux-x64 release is one stripped,
//! statically linked Rust executable (musl) that carries a static OpenSSL 3 and rustls on aws-lc.
//! Installed once per version under the user's cache directory, not target/, so CI and
//! `cargo clean` keep the 300 MB download (see `npm`).

use std::path::PathBuf;

use anyhow::Result;

/// The release the tests run. Pinned so a run is reproducible; bump deliberately (and check
/// what the new release sends: the mock answers the Responses requests this one makes).
pub const VERSION: &str = "0.171.0";

/// Where agents downloaded for the tests are kept: `$XDG_CACHE_HOME/agent-tracer-tests/agents`,
/// else `~/.cache/...`, else under target/.
pub fn agents_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(|| crate::target_dir().join("cache"));
    base.join("agent-tracer-tests").join("agents")
}

/// Path of the `codex` executable of [`VERSION`], installing it if needed. The platform
/// package is installed directly (`@openai/codex@<version>-linux-x64`, what the wrapper
/// package's optional dependency resolves to): the Node.js launcher would only exec it.
pub fn install() -> Result<PathBuf> {
    let root = agents_cache_dir().join("codex");
    let dir = root.join(VERSION);
    crate::npm::install(
        &root,
        ".lock",
        &dir,
        "@openai/codex",
        &format!("{VERSION}-linux-x64"),
        "vendor/x86_64-unknown-linux-musl/bin/codex",
    )
}
