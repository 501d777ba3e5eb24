//! Builds the tests' Go programs with the Go toolchain from the OS packages (`golang-go`), so the
//! tracer is tested against real Go crypto/tls code, as compiled by the real compiler.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// Builds the single-file program `source` into `out`: it uses the standard library and the
/// clients' shared package (tests/clients/go/src/testclient) only; `stripped`
/// builds it the way release binaries often are (`-ldflags="-s -w"`: no symbol table, no
/// DWARF), so only Go's own function table is left to find functions by.
pub fn build(source: &Path, out: &Path, stripped: bool) -> Result<PathBuf> {
    let flags: &[&str] = if stripped { &["-ldflags=-s -w"] } else { &[] };
    build_with_flags(source, out, flags)
}

/// As [`build`], with arbitrary `go build` flags (e.g. `-buildmode=pie`).
pub fn build_with_flags(source: &Path, out: &Path, flags: &[&str]) -> Result<PathBuf> {
    let version = Command::new("go").arg("version").output();
    match version {
        Ok(v) if v.status.success() => {}
        _ => bail!(
            "the Go toolchain (`go`) is missing: install golang-go (cargo xtask setup does it)"
        ),
    }
    let go_dir = crate::target_dir().join("go");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Build under a private name and rename: test binaries running at once may build the same
    // output, and a reader must never see a half-written executable.
    let partial = out.with_file_name(format!(
        "{}.partial-{}",
        out.file_name()
            .and_then(|n| n.to_str())
            .context("output file name")?,
        std::process::id()
    ));
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .args(flags)
        .arg("-o")
        .arg(&partial)
        .arg(source)
        // GOPATH mode: a standard-library-only file needs no go.mod and no module download.
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env_remove("GOFLAGS")
        // Go's defaults ($HOME/.cache, $HOME/go) may not exist or be writable for root in CI.
        .env("GOCACHE", go_dir.join("cache"))
        // The clients' shared package is found on the second entry, where GOPATH mode looks
        // for imports that are not the standard library's.
        .env("GOPATH", gopath(&go_dir.join("path"))?)
        // A static binary, without a C toolchain: the same build on every machine.
        .env("CGO_ENABLED", "0");
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "go build of {} failed ({}):\n{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving {} to {}", partial.display(), out.display()))?;
    Ok(out.to_path_buf())
}

/// `own` (where `go` may write), then the tests' Go clients' directory, as a GOPATH list.
fn gopath(own: &Path) -> Result<std::ffi::OsString> {
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/go");
    let clients = std::fs::canonicalize(&clients)
        .with_context(|| format!("the Go clients' directory {}", clients.display()))?;
    Ok(std::env::join_paths([own, &clients])?)
}

/// The Go HTTPS client of the end-to-end tests (tests/clients/go/https_client.go).
pub fn https_client_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/go/https_client.go")
}
