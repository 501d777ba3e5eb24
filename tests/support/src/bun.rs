//! Bun releases from the npm registry (`@oven/bun-linux-x64`: one stripped executable with
//! BoringSSL linked in), installed once under target/ and reused (see `npm`).

use std::path::PathBuf;

use anyhow::Result;

/// The release agents ship on today, and one a year older: the locator must find both with
/// the same code. Pinned so a test run is reproducible; bump deliberately.
pub const CURRENT: &str = "1.4.5";
pub const OLDER: &str = "1.2.23";

/// Path of the `bun` executable of `version`, installing it if needed.
pub fn install(version: &str) -> Result<PathBuf> {
    let root = crate::target_dir().join("e2e-bun");
    let dir = root.join(version);
    crate::npm::install(
        &root,
        ".lock",
        &dir,
        "@oven/bun-linux-x64",
        version,
        "bin/bun",
    )
}
