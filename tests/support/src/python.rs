//! A Python virtual environment under target/ with the real SDKs the tests drive, installed from
//! PyPI once and reused (guarded by a file lock: test binaries may run concurrently).

use std::{fs::File, os::fd::AsRawFd, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

/// Pinned so a test run is reproducible; bump deliberately.
pub const PACKAGES: &[&str] = &[
    "openai==3.54.0",
    "anthropic==2.12.0",
    "mcp==2.3.0",
    "websockets==17.4",
    "boto3==1.44.5",
    "botocore==1.44.5",
];

/// Path of the venv's python, creating the venv if needed.
pub fn venv_python() -> Result<PathBuf> {
    venv("e2e-venv", PACKAGES)
}

/// The python of the venv `target/<name>` holding exactly `packages` (pinned), created or
/// re-installed when they changed; concurrent test binaries wait on `target/<name>.lock`.
pub fn venv(name: &str, packages: &[&str]) -> Result<PathBuf> {
    let dir = crate::target_dir().join(name);
    std::fs::create_dir_all(crate::target_dir())?;
    let lock = File::create(crate::target_dir().join(format!("{name}.lock")))?;
    // Safety: valid fd for the life of `lock`.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking the venv {name}: {}",
            std::io::Error::last_os_error()
        );
    }
    let python = dir.join("bin/python");
    let stamp = dir.join(".installed");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return Ok(python);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
