//! Finding TLS functions in binaries without symbols (issue 7): Bun's BoringSSL, static OpenSSL
//! in Rust and C programs, rustls. Each stack's locator derives addresses from what that
//! library's code must contain in every build — the error strings, `__func__` names and
//! source-file names its error macros reference, the calls between its functions — never from a
//! table of offsets per release, so the next release is found by the same code.
//!
//! Go's crypto/tls is found by name instead, through the symbol table or Go's own function table
//! ([`go`]). Shared pieces:
//! - [`Segments`](segments::Segments): virtual address <-> file offset, written once.
//! - [`Image`]: an ELF file as the loader maps it (strings, RIP-relative references, calls,
//!   function bounds from the unwind tables, instruction boundaries).
//! - [`Locator`] / [`LOCATORS`]: one entry per stack; [`locate`] runs all of them (a binary may
//!   carry several stacks) through the [`DiskCache`], so a 300 MB executable is analysed once per build and later starts read the
//!   answer back in milliseconds. The cache is keyed by a SHA-256 of the file's bytes (a build
//!   id is whatever the binary's author wrote), and a hit is checked against the file before
//!   it is believed.
//!
//! Analysis runs in the attacher, off the capture path: the ring-buffer reader never waits on it.

pub mod boringssl;
pub mod go;
pub mod image;
pub mod openssl;
pub mod ring;
pub mod rustls;
mod segments;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use image::{Image, ImageError, Xref, XrefKind};

/// Whether `locator` would say its stack is present in a file, knowing only which of its
/// [`needles`](Locator::needles) the file contains (`found`): `present` runs on those needles
/// alone, apart by a byte no needle holds. The same answer as on the whole file, for a
/// `present` that only looks for its needles.
pub fn present_by_needles(locator: &Locator, found: &[&[u8]]) -> bool {
    let mut bytes = Vec::new();
    for needle in found {
        bytes.extend_from_slice(needle);
        bytes.push(NEEDLE_SEPARATOR);
    }
    (locator.present)(&bytes)
}

/// In no locator's needle (checked by a test): so needles set side by side make no new one.
const NEEDLE_SEPARATOR: u8 = 0xff;

/// A hook a locator inferred: where to attach which kernel program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocatedHook {
    /// The kernel program (a name in `targets::TLS_PROGRAMS` or one the stack adds).
    pub program: String,
    /// The library's own name for the function, for people ("ssl_write_internal").
    pub function: String,
    /// File offset of the probe (what a uprobe attaches to).
    pub offset: u64,
}

/// What one locator found in one binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    /// The stack as `agent-tracer check` shows it, e.g. "OpenSSL 3.0.13 (static)".
    pub stack: String,
    /// Which `targets::TlsStack` this is, as its locator names it ("openssl", "boringssl").
    pub kind: String,
    pub hooks: Vec<LocatedHook>,
}

/// One TLS stack's locator.
pub struct Locator {
    /// Stable name, part of the cache file name.
    pub name: &'static str,
    /// Bump whenever the locator's answers change, so results cached by older code are
    /// recomputed instead of trusted.
    pub version: u32,
    /// Cheap test (a `memmem` over the file) whether the stack may be present at all; a full
    /// analysis only runs when it says yes.
    pub present: fn(&[u8]) -> bool,
    /// Every byte string `present` looks for: a file too large to hold is scanned for these
    /// as it streams past, and `present` asked about the ones found ([`present_by_needles`]).
    pub needles: &'static [&'static [u8]],
    /// The analysis. `Ok(None)`: the stack is not there after all.
    pub locate: fn(&Image<'_>) -> Result<Option<Located>, LocateError>,
}

/// Every stack's locator. A binary may carry several stacks (Codex CLI links a static OpenSSL
/// for one transport and rustls on aws-lc for the others), so all of them run and every stack
/// found is hooked: stopping at the first would leave the other stack's traffic uncaptured.
pub const LOCATORS: &[Locator] = &[openssl::LOCATOR, boringssl::LOCATOR, rustls::LOCATOR];

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The stack is there but its functions could not be pinned down unambiguously: better no
    /// hook than a wrong one.
    #[error("{stack}: {reason}")]
    Ambiguous { stack: &'static str, reason: String },
}

/// One locator's answer for one binary (what the disk cache stores): a hit, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Found(Located),
    /// A stack's strings are present but its functions were not found (the reason, for
    /// `check` and the logs).
    Failed {
        locator: String,
        reason: String,
    },
    NotPresent,
}

/// A stack whose strings are present but whose functions were not found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub locator: String,
    pub reason: String,
}

/// Every locator's answer for one binary: each stack found, and each one present but not
/// located (for `check` and the logs). Both empty: no TLS stack a locator knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stacks {
    pub found: Vec<Located>,
    pub failed: Vec<Failure>,
}

/// Runs every locator on a file's bytes, each through the cache.
pub fn locate(data: &[u8], cache: &DiskCache) -> Stacks {
    locate_except(data, cache, &[])
}

/// [`locate`], skipping the locators named in `skip` (stacks already hooked through symbols or a
/// shared library).
pub fn locate_except(data: &[u8], cache: &DiskCache, skip: &[&str]) -> Stacks {
    let mut stacks = Stacks::default();
    let mut image = None;
    let mut key = None;
    for locator in LOCATORS {
        if skip.contains(&locator.name) || !(locator.present)(data) {
            continue;
        }
        let image = match image.get_or_insert_with(|| Image::parse(data)) {
            Ok(image) => image,
            Err(e) => {
                stacks.failed.push(Failure {
                    locator: locator.name.to_string(),
                    reason: e.to_string(),
                });
                return stacks;
            }
        };
        let key = key.get_or_insert_with(|| CacheKey::of_content(data));
        let compute = || match (locator.locate)(image) {
            Ok(Some(found)) => Outcome::Found(found),
            Ok(None) => Outcome::NotPresent,
            Err(e) => Outcome::Failed {
                locator: locator.name.to_string(),
                reason: e.to_string(),
            },
        };
        let result = match cache.get::<Outcome>(key, locator.name, locator.version) {
            Some(hit) if hit_holds(&hit, image) => hit,
            hit => {
                if hit.is_some() {
                    tracing::warn!(
                        "{} cache entry {} names probes off this file's instructions: analysed again",
                        locator.name,
                        key.as_str()
                    );
                }
                let value = compute();
                if let Err(e) = cache.put(key, locator.name, locator.version, &value) {
                    tracing::debug!("caching the {} analysis: {e}", locator.name);
                }
                value
            }
        };
        match result {
            Outcome::Found(found) => stacks.found.push(found),
            Outcome::Failed { locator, reason } => stacks.failed.push(Failure { locator, reason }),
            Outcome::NotPresent => {}
        }
    }
    stacks
}

/// What `agent-tracer locate` reports for one file.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub binary: String,
    /// Every stack located, in [`LOCATORS`] order.
    pub found: Vec<Located>,
    /// Stacks present but not located, with the reason.
    pub failed: Vec<Failure>,
    /// Wall-clock seconds from opening the file to the answer.
    pub seconds: f64,
    /// Every applicable locator's answer came from the disk cache.
    pub cached: bool,
}

/// Runs the locators on one file (what the attacher does for an executable without TLS
/// symbols), timing it: `agent-tracer locate` and the benchmark use it.
pub fn locate_file(path: &Path, cache: &DiskCache) -> anyhow::Result<FileReport> {
    use anyhow::Context as _;
    let started = std::time::Instant::now();
    let opened = super::safe_open::open_host(path)?;
    // Read, not mapped (see targets::analyse_file).
    let data = super::safe_open::read_capped(&opened.file, &path.display().to_string())?;
    Image::parse(&data).with_context(|| path.display().to_string())?;
    let key = CacheKey::of_content(&data);
    let cached = LOCATORS
        .iter()
        .filter(|l| (l.present)(&data))
        .all(|l| cache.get::<Outcome>(&key, l.name, l.version).is_some());
    let Stacks { found, failed } = locate(&data, cache);
    Ok(FileReport {
        binary: path.display().to_string(),
        found,
        failed,
        seconds: started.elapsed().as_secs_f64(),
        cached,
    })
}

/// Whether a cached answer can be true of this file: every probe it names is at the start of
/// an instruction in file-backed executable code. The key is the file's hash, so a mismatch
/// means a damaged or planted entry (or a locator bug): it is analysed again, never trusted.
fn hit_holds(hit: &Outcome, image: &Image<'_>) -> bool {
    let Outcome::Found(found) = hit else {
        return true;
    };
    found.hooks.iter().all(|hook| {
        image
            .vaddr_of(hook.offset)
            .is_some_and(|at| image.is_code(at) && image.is_instruction_boundary(at))
    })
}

/// Identifies one binary across restarts by what it contains: a SHA-256 of its bytes. Not the
/// ELF build id, which the binary's author chooses: a program carrying another's build id would
/// be given the other's probe offsets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn of_content(data: &[u8]) -> Self {
        let digest = ::ring::digest::digest(&::ring::digest::SHA256, data);
        CacheKey(format!(
            "sha256-{}",
            digest
                .as_ref()
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Locator results on disk, one small JSON file per (binary, locator, version). Without a
/// writable directory it still works, it just analyses every time.
#[derive(Clone, Debug)]
pub struct DiskCache {
    dir: Option<PathBuf>,
}

/// Where the cache lives unless `AGENT_TRACER_CACHE_DIR` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/agent-tracer/locate";

impl DiskCache {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        DiskCache {
            dir: Some(dir.into()),
        }
    }

    /// No disk: every lookup misses (tests, read-only file systems).
    pub fn none() -> Self {
        DiskCache { dir: None }
    }

    /// `AGENT_TRACER_CACHE_DIR`, else [`DEFAULT_CACHE_DIR`].
    pub fn from_env() -> Self {
        match std::env::var_os("AGENT_TRACER_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => DiskCache::at(dir),
            _ => DiskCache::at(DEFAULT_CACHE_DIR),
        }
    }

    fn path(&self, key: &CacheKey, locator: &str, version: u32) -> Option<PathBuf> {
        Some(
            self.dir
                .as_ref()?
                .join(format!("{}.{locator}-v{version}.json", key.as_str())),
        )
    }

    /// A stored result; `None` when absent or unreadable (then it is computed again).
    pub fn get<T: for<'de> Deserialize<'de>>(
        &self,
        key: &CacheKey,
        locator: &str,
        version: u32,
    ) -> Option<T> {
        let bytes = std::fs::read(self.path(key, locator, version)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores a result atomically (write then rename: a reader never sees half a file).
    pub fn put<T: Serialize>(
        &self,
        key: &CacheKey,
        locator: &str,
        version: u32,
        value: &T,
    ) -> std::io::Result<()> {
        let Some(path) = self.path(key, locator, version) else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            std::process::id()
        ));
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            // A name planted in the directory (a symlink) is never followed or written through.
            let _ = std::fs::remove_file(&tmp);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?
        };
        file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
        drop(file);
        std::fs::rename(&tmp, &path)
    }

    /// The stored result, else `compute`'s, stored for next time (a failed store only costs the
    /// next start another analysis).
    pub fn get_or_compute<T: Serialize + for<'de> Deserialize<'de>>(
        &self,
        key: &CacheKey,
        locator: &str,
        version: u32,
        compute: impl FnOnce() -> T,
    ) -> T {
        if let Some(hit) = self.get(key, locator, version) {
            return hit;
        }
        let value = compute();
        if let Err(e) = self.put(key, locator, version, &value) {
            tracing::debug!("caching the {locator} analysis: {e}");
        }
        value
    }
}

/// The cache directory, made 0700 (and made so again if it exists): what it holds decides
/// where probes go in every traced program, so no other user may write or plant entries in it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
