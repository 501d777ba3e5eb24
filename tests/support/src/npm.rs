//! Releases from the npm registry (Bun's, Deno's and Codex CLI's single executables, real
//! agents' CLIs), installed once under a root the caller chooses (target/, or a cache directory
//! that outlives it) and reused, guarded by a file lock: test binaries may run concurrently.

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
    let executable = Path::new(package).join(executable);
    install_package(root, lock, dir, package, version, &executable)
}

/// `package@version` (with its optional dependencies for this platform) installed into `dir`
/// (below `root`, locked by `root/lock`) unless `node_modules/<executable>` is already there;
/// returns that path. `executable` is relative to `node_modules/` so that it can lie in another
/// package (a platform package among the optional dependencies).
pub fn install_package(
    root: &Path,
    lock: &str,
    dir: &Path,
    package: &str,
    version: &str,
    executable: &Path,
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
    let binary = dir.join("node_modules").join(executable);
    if binary.exists() {
        return Ok(binary);
    }
    std::fs::create_dir_all(dir)?;
    // --ignore-scripts: what runs is the package's own file (a single binary, a bundle);
    // nothing needs to run at install. Run from `dir`: npm looks for a project from its
    // working directory upwards, and must find none but `dir`.
    let output = Command::new("npm")
        .current_dir(dir)
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
            "npm install {package}@{version} failed ({}), or has no {}:\n{}",
            output.status,
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(binary)
}

/// The newest version of `package` on the registry (`npm view <package> version`).
pub fn latest_version(package: &str) -> Result<String> {
    let output = Command::new("npm")
        .args(["view", package, "version"])
        .output()
        .context("running npm (install Node.js and npm)")?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || version.is_empty() {
        bail!(
            "npm view {package} version failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(version)
}
