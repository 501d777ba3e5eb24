//! Bun releases from the npm registry (`@oven/bun-linux-x64`: one stripped executable with
//! BoringSSL linked in), installed once under target/ and reused (guarded by a file lock: test
//! binaries may run concurrently).

use std::{fs::File, os::fd::AsRawFd, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

/// The release agents ship on today, and one a year older: the locator must find both with
/// the same code. Pinned so a test run is reproducible; bump deliberately.
pub const CURRENT: &str = "1.4.5";
pub const OLDER: &str = "1.2.23";

/// Path of the `bun` executable of `version`, installing it if needed.
pub fn install(version: &str) -> Result<PathBuf> {
    let root = crate::target_dir().join("e2e-bun");
    std::fs::create_dir_all(&root)?;
    let lock = File::create(root.join(".lock"))?;
    // Safety: valid fd for the life of `lock`.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        );
    }
    let dir = root.join(version);
    let bun = dir.join("node_modules/@oven/bun-linux-x64/bin/bun");
    if bun.exists() {
        return Ok(bun);
    }
    std::fs::create_dir_all(&dir)?;
    // --ignore-scripts: the package is the binary itself; nothing needs to run at install.
    let out = Command::new("npm")
        .args([
            "install",
            "--no-save",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ])
        .arg("--prefix")
        .arg(&dir)
        .arg(format!("@oven/bun-linux-x64@{version}"))
        .output()
        .context("running npm")?;
    if !out.status.success() || !bun.exists() {
        bail!(
            "npm install @oven/bun-linux-x64@{version} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bun)
}
