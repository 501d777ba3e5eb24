//! Single-executable releases from the npm registry (Bun's, Deno's and Codex CLI's own
//! packages), installed once under a root the caller chooses (target/, or a cache directory that
//! outlives it) and reused, guarded by a file lock: test binaries may run concurrently.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// `package@version` installed into `dir` (below `root`, locked by `root/lock`), and the path of
/// `executable` inside its `node_modules/<package>/`.
pub fn install(
    root: &Path,
    lock: &str,
    dir: &Path,
    package: &str,
    version: &str,
    executable: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    let lock = File::create(root.join(lock))?;
    // Safety: valid fd for the life of `lock`.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        );
    }
    let binary = dir.join("node_modules").join(package).join(executable);
    if binary.exists() {
        return Ok(binary);
    }
    std::fs::create_dir_all(dir)?;
    // --ignore-scripts: the package is the binary itself; nothing needs to run at install.
    let output = Command::new("npm")
        .args([
            "install",
            "--no-save",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ])
        .arg("--prefix")
        .arg(dir)
        .arg(format!("{package}@{version}"))
        .output()
        .context("running npm (install Node.js and npm)")?;
    if !output.status.success() || !binary.exists() {
        bail!(
            "npm install {package}@{version} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(binary)
}
