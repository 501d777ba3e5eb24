//! Deno releases from the npm registry (`@deno/linux-x64-glibc`, the package Deno's own npm
//! installer uses: one stripped executable with rustls and aws-lc linked in), installed once
//! under target/ and reused (guarded by a file lock: test binaries may run concurrently).

use std::{fs::File, os::fd::AsRawFd, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

/// A current release and an older one the same locator must find. Pinned so a test run is
/// reproducible; bump deliberately.
pub const CURRENT: &str = "2.9.6";
pub const OLDER: &str = "2.5.6";

/// Path of the `deno` executable of `version` (symlinks resolved), installing it if needed.
pub fn install(version: &str) -> Result<PathBuf> {
    // Where tests/e2e_rustls.rs has always put it, so existing installs are reused.
    let root = crate::target_dir().join("e2e-rustls");
    std::fs::create_dir_all(&root)?;
    let lock = File::create(root.join(".deno-lock"))?;
    // Safety: valid fd for the life of `lock`.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        );
    }
    let dir = root.join(format!("deno-{version}"));
    let binary = dir.join("node_modules/@deno/linux-x64-glibc/deno");
    if !binary.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("package.json"), "{}")?;
        // --ignore-scripts: the package is the binary itself; nothing needs to run at install.
        let output = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
            ])
            .arg(format!("@deno/linux-x64-glibc@{version}"))
            .current_dir(&dir)
            .output()
            .context("running npm (install Node.js and npm)")?;
        if !output.status.success() || !binary.exists() {
            bail!(
                "npm install of deno {version} failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(std::fs::canonicalize(binary)?)
}
