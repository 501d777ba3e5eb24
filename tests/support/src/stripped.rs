//! Builds the stripped static-OpenSSL clients of tests/clients: a Rust program with the
//! `openssl` crate's vendored OpenSSL (from crates.io, each variant with its own lock file, so a
//! variant is another OpenSSL release), and a C program linked against the OS's libssl.a.
//! Their TLS functions have no symbols: the tracer must infer where they are.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// A build of tests/clients/rust-openssl-client: the lock file picks the `openssl-src` release.
#[derive(Clone, Copy, Debug)]
pub struct RustVariant {
    /// Directory name under target/e2e-stripped.
    pub name: &'static str,
    /// Lock file in tests/clients/rust-openssl-client.
    pub lock: &'static str,
    /// The OpenSSL release that lock file builds.
    pub openssl: &'static str,
}

/// OpenSSL 3.6 (the current `openssl-src`) and 3.3: different releases, found by the same code.
pub const RUST_VARIANTS: [RustVariant; 2] = [
    RustVariant {
        name: "openssl-3.6",
        lock: "Cargo.lock",
        openssl: "3.6.3",
    },
    RustVariant {
        name: "openssl-3.3",
        lock: "Cargo.lock.openssl-3.3",
        openssl: "3.3.2",
    },
];

fn client_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients")
        .join(name)
}

fn run(mut cmd: Command) -> Result<()> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Builds (or reuses) one variant in release mode with `strip = true`; returns the executable.
/// The first build compiles OpenSSL from source (minutes); later ones are no-ops.
pub fn build_rust_client(variant: &RustVariant) -> Result<PathBuf> {
    let source = client_source("rust-openssl-client");
    let dir = crate::target_dir().join("e2e-stripped").join(variant.name);
    let krate = dir.join("crate");
    std::fs::create_dir_all(krate.join("src"))?;
    // Copied only when changed, so cargo's fingerprints stay fresh between runs.
    for (from, to) in [
        (source.join("Cargo.toml"), krate.join("Cargo.toml")),
        (source.join("src/main.rs"), krate.join("src/main.rs")),
        (source.join(variant.lock), krate.join("Cargo.lock")),
    ] {
        let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if std::fs::read(&to).ok().as_deref() != Some(&bytes[..]) {
            std::fs::write(&to, bytes)?;
        }
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&krate)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(dir.join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    run(cmd)?;
    Ok(dir.join("target/release/rust-openssl-client"))
}

/// Builds tests/clients/c-libssl-client against the OS's static libssl.a/libcrypto.a (package
/// libssl-dev); returns (unstripped, stripped) executables. The unstripped one keeps the
/// symbol table the stripped one lacks, to check what was inferred.
pub fn build_c_client() -> Result<(PathBuf, PathBuf)> {
    if !Path::new("/usr/lib/x86_64-linux-gnu/libssl.a").exists() {
        bail!("libssl.a is missing: install libssl-dev (cargo xtask setup does it)");
    }
    let dir = crate::target_dir().join("e2e-stripped/c-libssl");
    std::fs::create_dir_all(&dir)?;
    let full = dir.join("c-libssl-client.debug");
    let stripped = dir.join("c-libssl-client");
    let partial = dir.join(format!("c-libssl-client.partial-{}", std::process::id()));
    let mut cc = Command::new("gcc");
    cc.args(["-O2", "-o"])
        .arg(&partial)
        .arg(client_source("c-libssl-client").join("client.c"))
        .args([
            "-Wl,-Bstatic",
            "-lssl",
            "-lcrypto",
            "-Wl,-Bdynamic",
            "-ldl",
            "-pthread",
        ]);
    run(cc)?;
    std::fs::rename(&partial, &full)?;
    let mut strip = Command::new("strip");
    strip.arg("--strip-all").arg("-o").arg(&partial).arg(&full);
    run(strip)?;
    std::fs::rename(&partial, &stripped)?;
    Ok((full, stripped))
}
