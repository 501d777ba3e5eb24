//! "Locator: TLS functions found without symbols": how long `agent-tracer locate` (the same code
//! the attacher runs on an executable without TLS symbols) takes on large real binaries, the
//! first time (empty cache) and from its on-disk cache.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{json_number, list, machine, median, today, Env};
use crate::util::header;

pub(super) const SECTION: &str = "## Locator: TLS functions found without symbols";

const RUNS: usize = 5;

struct Measured {
    label: String,
    path: PathBuf,
    size: u64,
    first: Vec<f64>,
    cached: Vec<f64>,
    outcome: String,
}

/// The binaries measured: node (98 MB, with symbols: the largest at hand), the Rust toolchain's
/// own `cargo` (stripped, with a vendored static OpenSSL: a third-party build), and every
/// stripped executable the locator's end-to-end tests run — Bun and Deno from npm, the
/// static-OpenSSL clients — as the testkit's `locator-targets` lists them (installing or
/// building them the tests' way first).
fn binaries(release: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = vec![(
        "node (/usr/bin/node)".to_string(),
        PathBuf::from("/usr/bin/node"),
    )];
    if let Ok(o) = Command::new("rustup").args(["which", "cargo"]).output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.is_file() {
            out.push(("rustup's cargo (stripped, static OpenSSL)".to_string(), p));
        }
    }
    let lister = release.join("locator-targets");
    header("installing and building the tests' stripped binaries (locator-targets)");
    let listed = Command::new(&lister)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", lister.display()))?;
    anyhow::ensure!(
        listed.status.success(),
        "{} failed ({})",
        lister.display(),
        listed.status
    );
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let (label, path) = line
            .split_once('\t')
            .with_context(|| format!("unexpected locator-targets line {line:?}"))?;
        out.push((label.to_string(), PathBuf::from(path)));
    }
    Ok(out)
}

fn locate(tracer: &Path, binary: &Path, cache: &Path) -> Result<(f64, bool, String)> {
    let out = Command::new(tracer)
        .arg("locate")
        .arg("--cache-dir")
        .arg(cache)
        .arg(binary)
        .output()
        .with_context(|| format!("running {} locate", tracer.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "agent-tracer locate {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let seconds = json_number(&line, "seconds")?;
    let cached = line.contains("\"cached\":true");
    // Every stack found ("found":[{"stack":"...",...},...]), else why one was not located.
    let field = |text: &str, name: &str| -> Vec<String> {
        text.split(&format!("\"{name}\":\""))
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(str::to_string)
            .collect()
    };
    let (found, failed) = line.split_once("\"failed\":").unwrap_or((&line, ""));
    let stacks = field(found, "stack");
    let reasons = field(failed, "reason");
    let outcome = if !stacks.is_empty() {
        format!("found: {}", stacks.join("; "))
    } else if !reasons.is_empty() {
        format!("not located: {}", reasons.join("; "))
    } else {
        "no TLS library found".to_string()
    };
    Ok((seconds, cached, outcome))
}

pub(super) fn measure(env: &Env) -> Result<String> {
    let mut measured = Vec::new();
    let release = env.tracer.parent().context("the tracer's directory")?;
    for (label, path) in binaries(release)? {
        header(&format!("locator: {label}"));
        let size = fs::metadata(&path)?.len();
        let mut m = Measured {
            label,
            path: path.clone(),
            size,
            first: Vec::new(),
            cached: Vec::new(),
            outcome: String::new(),
        };
        for run in 0..RUNS {
            let cache = env.dir.join(format!("locate-cache-{run}"));
            let _ = fs::remove_dir_all(&cache);
            let (first, was_cached, outcome) = locate(&env.tracer, &path, &cache)?;
            anyhow::ensure!(!was_cached, "a fresh cache answered");
            let (again, was_cached, _) = locate(&env.tracer, &path, &cache)?;
            anyhow::ensure!(was_cached, "the second analysis was not cached");
            let _ = fs::remove_dir_all(&cache);
            println!("first {first:.3} s, cached {again:.4} s: {outcome}");
            m.first.push(first);
            m.cached.push(again);
            m.outcome = outcome;
        }
        measured.push(m);
    }
    Ok(render(&measured))
}

fn render(measured: &[Measured]) -> String {
    let mut s = format!(
        "{SECTION}\n\nMeasured {} on {} with `cargo xtask bench --only locator`.\n\n\
         `agent-tracer locate BINARY` runs what the attacher runs on an executable without TLS \
         symbols: every locator whose library's strings are in the file (static OpenSSL 3, \
         BoringSSL, rustls with aws-lc), through the on-disk cache keyed by build id. Most of a \
         first analysis is decoding all the code once or twice (iced-x86): to find the \
         instructions referring to the library's strings and, for rustls, the calls into the \
         candidates; function bounds come from `.eh_frame`, or, in Bun and Deno, which have \
         none, from the targets of the direct calls seen in the same pass. *First* is with an \
         empty cache, *cached* the same command again (open, map, read the build id, read the \
         cached answer). Times are the command's own, from opening the file to the answer; each \
         is the median of {RUNS} runs (each with a fresh cache). The binary's pages are in the \
         page cache after the first run, as they are for a program that is running.\n\n\
         | binary | size | first analysis | cached | outcome |\n| --- | ---: | ---: | ---: | --- |\n",
        today(),
        machine(),
    );
    for m in measured {
        s.push_str(&format!(
            "| {} | {:.1} MB | {:.3} s | {:.1} ms | {} |\n",
            m.label,
            m.size as f64 / 1e6,
            median(m.first.clone()),
            median(m.cached.clone()) * 1e3,
            m.outcome
        ));
    }
    s.push_str(
        "\nnode exports its OpenSSL's symbols, so the tracer never runs the locator on it; it is \
         here as the largest binary at hand. Its build inlines `ssl_write_internal` into \
         `SSL_write` and `SSL_write_ex`, and the locator refuses to guess between them.\n",
    );
    s.push('\n');
    for m in measured {
        s.push_str(&format!(
            "{} (`{}`): first {} s; cached {} s.\n",
            m.label,
            m.path.display(),
            list(m.first.iter().copied(), 3),
            list(m.cached.iter().copied(), 4)
        ));
    }
    s
}
