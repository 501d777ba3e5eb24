//! BoringSSL linked into a stripped executable (Bun and the programs `bun build --compile`
//! makes): finding `SSL_write` and `SSL_read` without symbols.
//!
//! The anchors are what BoringSSL's own source makes every build contain. Each
//! `OPENSSL_PUT_ERROR(SSL, reason)` in `ssl/ssl_lib.cc` becomes a call to `ERR_put_error` with the
//! library number (`ERR_LIB_SSL`, 16), the reason code and `__FILE__`, a path ending in
//! `ssl/ssl_lib.cc` (OpenSSL's file is `ssl_lib.c`). Reason codes are part of BoringSSL's ABI and
//! never renumbered; line numbers and the path prefix change with every release, so neither is
//! used. In `ssl_lib.cc`:
//!
//! - `SSL_write` raises `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` (QUIC connections),
//!   `SSL_R_UNINITIALIZED` and `SSL_R_BAD_LENGTH`; no other function raises all three.
//! - `SSL_read` is `SSL_peek` (which raises `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`) plus consuming
//!   the bytes; both call `ssl_read_impl`, which raises `SSL_R_UNINITIALIZED` and
//!   `SSL_R_SSL_HANDSHAKE_FAILURE` but never `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`. Bun never
//!   peeks, so its link drops `SSL_peek` and inlines it into `SSL_read`: the one function that
//!   raises `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` and calls (or inlines) `ssl_read_impl`.
//!
//! Which register carries the reason depends on `ERR_put_error`'s signature, which changed
//! (`(library, reason, file, line)` in 2024 builds, `(library, unused, reason, file, line)` in
//! 2025 ones): the reason is the argument just before the file, whichever register that is.
//! BoringSSL has no `SSL_write_ex`/`SSL_read_ex`.
//!
//! All reading of the ELF file and its code goes through the shared [`Image`]: Bun has no
//! `.eh_frame`, so function bounds there come from direct call targets, and the argument
//! registers of each error report from [`Image::call_set_up`].

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::{Image, XrefKind};

/// `__FILE__` of BoringSSL's SSL API (the `.cc` tells it from OpenSSL's `ssl_lib.c`).
const SSL_LIB_FILE: &[u8] = b"ssl/ssl_lib.cc\0";
const ERR_LIB_SSL: u64 = 16;
const ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED: u64 = 66;
const SSL_R_BAD_LENGTH: u64 = 111;
const SSL_R_SSL_HANDSHAKE_FAILURE: u64 = 215;
const SSL_R_UNINITIALIZED: u64 = 226;

/// File offsets (what uprobes attach to) of the two functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoringSslHooks {
    pub ssl_write: u64,
    pub ssl_read: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BoringLocateError {
    #[error("BoringSSL's ssl_lib.cc is referenced by no error report that could be read")]
    NoErrorReports,
    #[error("{what}: {count} functions match BoringSSL's error reports, expected one")]
    NotUnique { what: &'static str, count: usize },
    #[error("{what} at {vaddr:#x} is not a probe point in the file")]
    NotProbeable { what: &'static str, vaddr: u64 },
}

/// Finds `SSL_write` and `SSL_read`. `Ok(None)`: no BoringSSL in this file.
pub fn locate(image: &Image<'_>) -> Result<Option<BoringSslHooks>, BoringLocateError> {
    let files = file_name_addresses(image);
    if files.is_empty() {
        return Ok(None);
    }
    let reasons = reasons_by_function(image, &files);
    if reasons.is_empty() {
        return Err(BoringLocateError::NoErrorReports);
    }
    let raises = |f: u64, wanted: &[u64]| {
        reasons
            .get(&f)
            .is_some_and(|r| wanted.iter().all(|w| r.contains(w)))
    };
    let write = unique(
        "SSL_write",
        reasons.keys().copied().filter(|f| {
            raises(
                *f,
                &[
                    ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED,
                    SSL_R_UNINITIALIZED,
                    SSL_R_BAD_LENGTH,
                ],
            )
        }),
    )?;
    let read_impl = |f: u64| {
        raises(f, &[SSL_R_UNINITIALIZED, SSL_R_SSL_HANDSHAKE_FAILURE])
            && !raises(f, &[ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED])
    };
    let read = unique(
        "SSL_read",
        reasons.keys().copied().filter(|f| {
            *f != write
                && raises(*f, &[ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED])
                && !raises(*f, &[SSL_R_BAD_LENGTH])
                && (raises(*f, &[SSL_R_UNINITIALIZED, SSL_R_SSL_HANDSHAKE_FAILURE])
                    || direct_callees(image, *f).any(read_impl))
        }),
    )?;
    let offset = |what: &'static str, vaddr: u64| {
        image
            .is_instruction_boundary(vaddr)
            .then(|| image.file_offset(vaddr))
            .flatten()
            .ok_or(BoringLocateError::NotProbeable { what, vaddr })
    };
    Ok(Some(BoringSslHooks {
        ssl_write: offset("SSL_write", write)?,
        ssl_read: offset("SSL_read", read)?,
    }))
}

/// The entry in `locate::LOCATORS`, so results go through the shared on-disk cache.
pub const LOCATOR: super::Locator = super::Locator {
    name: "boringssl",
    // 2: function bounds where `.eh_frame` covers only part of the code (Claude Code).
    version: 2,
    present: |data| memchr::memmem::find(data, SSL_LIB_FILE).is_some(),
    needles: &[SSL_LIB_FILE],
    locate: locate_image,
};

fn locate_image(image: &Image<'_>) -> Result<Option<super::Located>, super::LocateError> {
    let found = locate(image).map_err(|e| super::LocateError::Ambiguous {
        stack: "boringssl",
        reason: e.to_string(),
    })?;
    Ok(found.map(|h| super::Located {
        stack: "BoringSSL (static, stripped)".to_string(),
        kind: "boringssl".to_string(),
        hooks: [
            ("ssl_write", "SSL_write", h.ssl_write),
            ("ssl_write_ret", "SSL_write", h.ssl_write),
            ("ssl_read", "SSL_read", h.ssl_read),
            ("ssl_read_ret", "SSL_read", h.ssl_read),
        ]
        .into_iter()
        .map(|(program, function, offset)| super::LocatedHook {
            program: program.to_string(),
            function: function.to_string(),
            offset,
        })
        .collect(),
    }))
}

fn unique(what: &'static str, found: impl Iterator<Item = u64>) -> Result<u64, BoringLocateError> {
    let found: Vec<u64> = found.collect();
    match found.as_slice() {
        [one] => Ok(*one),
        _ => Err(BoringLocateError::NotUnique {
            what,
            count: found.len(),
        }),
    }
}

/// Addresses of every string ending in `ssl/ssl_lib.cc` (where the whole path starts: what
/// the code refers to).
fn file_name_addresses(image: &Image<'_>) -> Vec<u64> {
    let name = &SSL_LIB_FILE[..SSL_LIB_FILE.len() - 1];
    let mut found: Vec<u64> = image
        .strings(name)
        .into_iter()
        .filter_map(|tail| image.string_start(tail))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Function entry -> the reasons its `ssl_lib.cc` error reports raise.
fn reasons_by_function(image: &Image<'_>, files: &[u64]) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut reasons: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for xref in image.references_to(files) {
        if xref.kind != XrefKind::Address {
            continue;
        }
        let Some(function) = image.function_containing(xref.from) else {
            continue;
        };
        if let Some(reason) = reported_reason(image, xref.from, xref.to) {
            reasons.entry(function.start).or_default().insert(reason);
        }
    }
    reasons
}

/// The reason code of the `ERR_put_error(ERR_LIB_SSL, ...)` call whose `file` argument is
/// loaded at `site`: the argument just before the file's.
fn reported_reason(image: &Image<'_>, site: u64, file: u64) -> Option<u64> {
    let call = image.call_set_up(site)?;
    let reason = call.argument.checked_sub(1)?;
    (call.constants[0] == Some(ERR_LIB_SSL) && call.constants[call.argument] == Some(file))
        .then_some(call.constants[reason])
        .flatten()
}

/// Entries of the functions the one starting at `function` calls directly.
fn direct_callees<'i>(image: &'i Image<'_>, function: u64) -> impl Iterator<Item = u64> + 'i {
    image
        .function_at(function)
        .map(|f| image.calls_in(f))
        .unwrap_or_default()
        .into_iter()
        .map(|(_, callee)| callee)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_boringssl_is_nothing() {
        let me = std::fs::read("/bin/true").unwrap();
        assert_eq!(locate(&Image::parse(&me).unwrap()), Ok(None));
    }

    /// What a located pair must look like in any build: function starts (direct-call targets
    /// that decode), with the meaning the anchors give them: the ssl_lib.cc reasons each body
    /// raises, and SSL_read's call into ssl_read_impl.
    #[derive(Debug, PartialEq, Eq)]
    struct Meaning {
        write_reasons: BTreeSet<u64>,
        read_reasons: BTreeSet<u64>,
        /// SSL_read calls a function raising ssl_read_impl's anchors (the rest of its reasons
        /// vary: 1.2 inlines ssl_do_post_handshake's into it).
        calls_read_impl: bool,
    }

    fn check_located(binary: &std::path::Path) -> (BoringSslHooks, Meaning) {
        let data = std::fs::read(binary).unwrap();
        let image = Image::parse(&data).unwrap();
        let hooks = locate(&image)
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
            .unwrap_or_else(|| panic!("{}: no BoringSSL found", binary.display()));
        let write = image.vaddr_of(hooks.ssl_write).unwrap();
        let read = image.vaddr_of(hooks.ssl_read).unwrap();
        assert_ne!(write, read);
        // One decoding pass for both (each is a sweep over ~80 MB of code).
        let calls = image.references_to(&[write, read]);
        for f in [write, read] {
            assert!(
                calls.iter().any(|x| x.to == f && x.kind == XrefKind::Call),
                "{f:#x} is called directly"
            );
            let code = image.decode(f..f + 64);
            assert!(code.len() > 5 && code[0].ip() == f, "{f:#x} decodes");
        }
        let reasons = reasons_by_function(&image, &file_name_addresses(&image));
        let reasons_of = |function: u64| reasons.get(&function).cloned().unwrap_or_default();
        let calls_read_impl = direct_callees(&image, read).any(|callee| {
            let r = reasons_of(callee);
            r.contains(&SSL_R_UNINITIALIZED)
                && r.contains(&SSL_R_SSL_HANDSHAKE_FAILURE)
                && !r.contains(&ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED)
        });
        let meaning = Meaning {
            write_reasons: reasons_of(write),
            read_reasons: reasons_of(read),
            calls_read_impl,
        };
        (hooks, meaning)
    }

    #[test]
    fn finds_ssl_write_and_ssl_read_in_two_bun_releases() {
        let current = tracer_testkit::bun::install(tracer_testkit::bun::CURRENT).unwrap();
        let older = tracer_testkit::bun::install(tracer_testkit::bun::OLDER).unwrap();
        let (a, meaning_a) = check_located(&current);
        let (b, meaning_b) = check_located(&older);
        // Different builds (other offsets, another ERR_put_error signature, another source
        // path), the same functions.
        assert_ne!(a, b);
        assert_eq!(meaning_a, meaning_b);
        assert_eq!(
            meaning_a,
            Meaning {
                write_reasons: [
                    ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED,
                    SSL_R_BAD_LENGTH,
                    SSL_R_SSL_HANDSHAKE_FAILURE,
                    SSL_R_UNINITIALIZED
                ]
                .into(),
                read_reasons: [ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED].into(),
                calls_read_impl: true,
            }
        );
    }

    #[test]
    fn finds_them_in_claude_code_whose_unwind_table_covers_little_of_its_code() {
        // Claude Code's native build is a Bun executable with a small `.eh_frame` (none of it
        // for BoringSSL): function bounds there must still come from call targets.
        let claude = tracer_testkit::real_agents::claude_code().unwrap();
        let bun = tracer_testkit::bun::install(tracer_testkit::bun::CURRENT).unwrap();
        let (_, meaning) = check_located(&claude.executable);
        let (_, bun_meaning) = check_located(&bun);
        assert_eq!(meaning, bun_meaning, "Claude Code {}", claude.version);
    }

    #[test]
    fn a_bun_compiled_executable_carries_the_same_runtime() {
        // `bun build --compile` appends the script to a copy of the runtime: the same functions
        // must be found in it.
        let bun = tracer_testkit::bun::install(tracer_testkit::bun::CURRENT).unwrap();
        let dir = tracer_testkit::target_dir().join("e2e-bun/compiled");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!(
            "bun_fetch-{}-{}",
            tracer_testkit::bun::CURRENT,
            std::process::id()
        ));
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/bun_fetch.mjs");
        let status = std::process::Command::new(&bun)
            .args(["build", "--compile"])
            .arg(&script)
            .arg("--outfile")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let (compiled, meaning) = check_located(&out);
        let _ = std::fs::remove_file(&out);
        let (runtime, runtime_meaning) = check_located(&bun);
        assert_eq!(compiled, runtime);
        assert_eq!(meaning, runtime_meaning);
    }
}
