//! Prints the stripped executables the locator's end-to-end tests run, one `label<TAB>path`
//! line each, installing or building them first when needed (once; later runs reuse them):
//! the Bun, Deno and Codex CLI releases from the npm registry (`bun::install`, `deno::install`,
//! `codex::install`) and the static-OpenSSL clients tests/e2e_stripped.rs builds (`stripped`).
//! `cargo xtask bench --only locator` measures these, so the benchmark and the tests see the
//! same binaries, fetched and built one way.

use anyhow::Result;
use tracer_testkit::{bun, codex, deno, stripped};

fn main() -> Result<()> {
    for version in [bun::CURRENT, bun::OLDER] {
        let path = std::fs::canonicalize(bun::install(version)?)?;
        println!(
            "bun {version} (npm; stripped, BoringSSL)\t{}",
            path.display()
        );
    }
    for version in [deno::CURRENT, deno::OLDER] {
        let path = deno::install(version)?;
        println!(
            "deno {version} (npm; stripped, rustls + aws-lc)\t{}",
            path.display()
        );
    }
    let path = std::fs::canonicalize(codex::install()?)?;
    println!(
        "codex {} (npm; stripped, static OpenSSL + rustls/aws-lc)\t{}",
        codex::version()?,
        path.display()
    );
    for variant in &stripped::RUST_VARIANTS {
        let path = std::fs::canonicalize(stripped::build_rust_client(variant)?)?;
        println!(
            "rust-openssl-client, OpenSSL {} (e2e_stripped)\t{}",
            variant.openssl,
            path.display()
        );
    }
    let (_, c) = stripped::build_c_client()?;
    println!(
        "c-libssl-client, libssl.a (e2e_stripped)\t{}",
        std::fs::canonicalize(c)?.display()
    );
    Ok(())
}
