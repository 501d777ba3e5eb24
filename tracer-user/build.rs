//! Builds the kernel programs (tracer-ebpf, for bpfel-unknown-none, with the nightly toolchain and
//! bpf-linker) so the daemon can embed them. `cargo xtask setup` installs what this needs.

use anyhow::{anyhow, Context as _};
use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // `cargo fuzz` builds the parsers with `--cfg fuzzing`: they load no kernel programs, and
    // building them (core for BPF, ~330 MB of artefacts) would add minutes and a third to the
    // fuzz build's disk. The daemon's embedded objects are then empty.
    println!("cargo:rerun-if-env-changed=CARGO_CFG_FUZZING");
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
        for object in ["tracer-ebpf", "tracer-ebpf-bounded"] {
            std::fs::write(out.join(object), [])
                .with_context(|| format!("writing an empty {object}"))?;
        }
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let find = |name: &str| {
        metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| anyhow!("package {name} not in the workspace"))
    };
    let ebpf = find("tracer-ebpf")?;
    let common = find("tracer-common")?;
    // The record layout lives in tracer-common: a change there must rebuild the programs too.
    if let Some(dir) = common.manifest_path.parent() {
        println!("cargo:rerun-if-changed={dir}");
    }
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("tracer-ebpf manifest has no parent directory"))?;
    build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs (is `cargo xtask setup` done?)")
}
