//! C test clients, built with the OS's gcc.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

/// `tests/clients/c/mbedtls_post.c` statically linked against Mbed TLS and stripped: a TLS
/// stack with no symbol and no locator, whose traffic only the encrypted-only fallback reports.
pub fn mbedtls_post() -> Result<PathBuf> {
    let lib = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libmbedtls.a");
    if !lib.exists() {
        bail!(
            "{} is missing: `apt-get install -y libmbedtls-dev` (cargo xtask setup does it)",
            lib.display()
        );
    }
    let dir = crate::target_dir().join("e2e-c");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("mbedtls_post");
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(crate::e2e::clients_dir().join("c/mbedtls_post.c"))
        .args([
            "-Wl,-Bstatic",
            "-lmbedtls",
            "-lmbedx509",
            "-lmbedcrypto",
            "-Wl,-Bdynamic",
            "-s",
        ])
        .status()
        .context("running gcc")?;
    if !status.success() {
        bail!("gcc failed: {status}");
    }
    let symbols = Command::new("nm")
        .arg(&out)
        .output()
        .context("running nm")?;
    if !String::from_utf8_lossy(&symbols.stderr).contains("no symbols") {
        bail!("{} is not stripped", out.display());
    }
    Ok(out)
}
