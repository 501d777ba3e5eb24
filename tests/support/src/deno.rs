//! Deno releases from the npm registry (`@deno/linux-x64-glibc`, the package Deno's own npm
//! installer uses: one stripped executable with rustls and aws-lc linked in), installed once
//! under target/ and reused (see `npm`).

use std::path::PathBuf;

use anyhow::Result;

/// A current release and an older one the same locator must find. Pinned so a test run is
/// reproducible; bump deliberately.
pub const CURRENT: &str = "2.9.6";
pub const OLDER: &str = "2.5.6";

/// Path of the `deno` executable of `version` (symlinks resolved), installing it if needed.
pub fn install(version: &str) -> Result<PathBuf> {
    // Where tests/e2e_rustls.rs has always put it, so existing installs are reused.
    let root = crate::target_dir().join("e2e-rustls");
    let dir = root.join(format!("deno-{version}"));
    let binary = crate::npm::install(
        &root,
        ".deno-lock",
        &dir,
        "@deno/linux-x64-glibc",
        version,
        "deno",
    )?;
    Ok(std::fs::canonicalize(binary)?)
}
