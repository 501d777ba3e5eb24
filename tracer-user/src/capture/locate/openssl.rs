//! Static OpenSSL 3.x without symbols (a Rust program built with `openssl`'s `vendored` feature,
//! a C program linked against `libssl.a`, then stripped).
//!
//! Every OpenSSL 3 build must contain `ssl_write_internal` and `ssl_read_internal`, the workers
//! behind `SSL_write`, `SSL_write_ex`, `SSL_read` and `SSL_read_ex`, and both raise errors with
//! `ERR_raise`, which records the C `__func__` name: so each worker takes the address of its own
//! name with a RIP-relative `lea`. The function holding that `lea` is the worker. Two checks
//! reject look-alikes: the function must be entered by a direct `call` (a split-off cold part of
//! a function is only ever jumped to) and, when `SSL_write`/`SSL_read` are identifiable by their
//! own `__func__` names, they must call it.
//!
//! The workers are the right hook points: the Rust `openssl` crate calls `SSL_write_ex` and
//! `SSL_read_ex`, which raise no error and so carry no name, and every public entry point goes
//! through the worker exactly once, so nothing is counted twice. Their arguments are
//! `(SSL *s, const void *buf, size_t num, size_t *written)` up to OpenSSL 3.1 — the layout of
//! `SSL_write_ex` — and `(s, buf, num, uint64_t flags, size_t *written)` from 3.2 on — the
//! layout of `SSL_write_ex2`; `ssl_read_internal(s, buf, num, size_t *readbytes)` has not
//! changed. The version comes from the banner ("OpenSSL 3.2.1 30 Jan 2024") when the binary
//! carries it; a static link often drops it (nothing calls `OpenSSL_version`), and then the
//! source-file names decide: 3.2 moved the record layer to `ssl/record/methods/`, whose error
//! macros name those files in every 3.2+ build.
//! Bytes are counted at return from the out-parameter, so a partial write that the caller
//! retries with the unsent tail is captured once per byte.

use std::ops::Range;

use super::{Image, LocateError, Located, LocatedHook, Locator, XrefKind};

/// Bump when the answers change (see [`Locator::version`]).
pub const LOCATOR: Locator = Locator {
    name: "openssl3",
    version: 1,
    present,
    needles: &[WORKER_NAME, SSL_LIB_FILE],
    locate,
};

const WORKER_NAME: &[u8] = b"\0ssl_write_internal\0";
const SSL_LIB_FILE: &[u8] = b"ssl/ssl_lib.c\0";

const BANNER: &[u8] = b"OpenSSL 3.";
/// Source directory of the record layer from OpenSSL 3.2 on.
const RECORD_METHODS: &[u8] = b"ssl/record/methods/";
const WRITE_WORKER: &str = "ssl_write_internal";
const READ_WORKER: &str = "ssl_read_internal";

fn present(data: &[u8]) -> bool {
    memchr::memmem::find(data, WORKER_NAME).is_some()
        && memchr::memmem::find(data, SSL_LIB_FILE).is_some()
}

/// `(minor, patch)` of the first "OpenSSL 3.x.y" banner.
pub fn version(image: &Image<'_>) -> Option<(u32, u32)> {
    let data = image.data();
    memchr::memmem::find_iter(data, BANNER).find_map(|at| parse_version(&data[at + BANNER.len()..]))
}

/// "2.1 30 Jan 2024" -> (2, 1).
fn parse_version(rest: &[u8]) -> Option<(u32, u32)> {
    let number = |s: &[u8]| -> Option<(u32, usize)> {
        let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            return None;
        }
        Some((
            std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?,
            digits,
        ))
    };
    let (minor, n) = number(rest)?;
    let rest = rest.get(n..)?.strip_prefix(b".")?;
    let (patch, n) = number(rest)?;
    matches!(rest.get(n), Some(b' ' | 0 | b'-')).then_some((minor, patch))
}

/// Whether `ssl_write_internal` takes the `flags` argument (3.2+), and the version as shown.
fn layout(image: &Image<'_>) -> (bool, String) {
    match version(image) {
        Some((minor, patch)) => (minor >= 2, format!("3.{minor}.{patch}")),
        None if image.contains(RECORD_METHODS) => (true, "3.2+".to_string()),
        None => (false, "3.0/3.1".to_string()),
    }
}

fn locate(image: &Image<'_>) -> Result<Option<Located>, LocateError> {
    if !present(image.data()) {
        return Ok(None);
    }
    let (with_flags, shown) = layout(image);
    let names = [WRITE_WORKER, READ_WORKER, "SSL_write", "SSL_read"];
    let strings: Vec<Vec<u64>> = names
        .iter()
        .map(|n| image.whole_strings(n.as_bytes()))
        .collect();
    if strings[0].is_empty() || strings[1].is_empty() {
        return Ok(None);
    }
    let all: Vec<u64> = strings.iter().flatten().copied().collect();
    let xrefs = image.references_to(&all);
    // The functions naming each string.
    let naming = |which: usize| -> Vec<Range<u64>> {
        let mut f: Vec<Range<u64>> = xrefs
            .iter()
            .filter(|x| x.kind == XrefKind::Address && strings[which].contains(&x.to))
            .filter_map(|x| image.function_containing(x.from))
            .collect();
        f.sort_by_key(|r| r.start);
        f.dedup();
        f
    };
    let (writers, readers) = (naming(0), naming(1));
    // One more decoding pass, for the calls into every candidate of both workers.
    let starts: Vec<u64> = writers.iter().chain(&readers).map(|c| c.start).collect();
    let entries = image.references_to(&starts);
    let write = pick(image, WRITE_WORKER, writers, naming(2), &entries)?;
    let read = pick(image, READ_WORKER, readers, naming(3), &entries)?;
    // 3.2 added the `flags` argument before `written`.
    let write_program = if with_flags {
        "ssl_write_ex2"
    } else {
        "ssl_write_ex"
    };
    let hook = |program: &str, function: &str, at: u64| -> Result<LocatedHook, LocateError> {
        let offset = image
            .file_offset(at)
            .ok_or_else(|| ambiguous(format!("{function} at {at:#x} is not in the file")))?;
        Ok(LocatedHook {
            program: program.to_string(),
            function: function.to_string(),
            offset,
        })
    };
    Ok(Some(Located {
        stack: format!("OpenSSL {shown} (static, no symbols)"),
        kind: "openssl".to_string(),
        hooks: vec![
            hook(write_program, WRITE_WORKER, write)?,
            hook("ssl_write_ret", WRITE_WORKER, write)?,
            hook("ssl_read_ex", READ_WORKER, read)?,
            hook("ssl_read_ret", READ_WORKER, read)?,
        ],
    }))
}

fn ambiguous(reason: String) -> LocateError {
    LocateError::Ambiguous {
        stack: "openssl3",
        reason,
    }
}

/// The one worker among the functions naming it: entered by a `call`, and called by the public
/// wrapper when the wrapper is identifiable.
fn pick(
    image: &Image<'_>,
    worker: &str,
    candidates: Vec<Range<u64>>,
    wrappers: Vec<Range<u64>>,
    entries: &[super::Xref],
) -> Result<u64, LocateError> {
    let called: Vec<&Range<u64>> = candidates
        .iter()
        .filter(|c| {
            entries
                .iter()
                .any(|x| x.to == c.start && x.kind == XrefKind::Call)
        })
        .collect();
    let by_wrapper: Vec<&Range<u64>> = called
        .iter()
        .copied()
        .filter(|c| {
            wrappers.iter().any(|w| {
                image
                    .calls_in(w.clone())
                    .iter()
                    .any(|(_, to)| *to == c.start)
            })
        })
        .collect();
    let chosen = match (by_wrapper.as_slice(), called.as_slice()) {
        ([one], _) => *one,
        ([], [one]) => *one,
        _ => {
            return Err(ambiguous(format!(
                "{worker}: {} functions name it, {} are called, {} by the public wrapper",
                candidates.len(),
                called.len(),
                by_wrapper.len()
            )))
        }
    };
    if !image.is_instruction_boundary(chosen.start) {
        return Err(ambiguous(format!(
            "{worker} at {:#x} is not an instruction boundary",
            chosen.start
        )));
    }
    Ok(chosen.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_the_banner() {
        assert_eq!(parse_version(b"0.13 30 Jan 2024"), Some((0, 13)));
        assert_eq!(parse_version(b"6.3\0"), Some((6, 3)));
        assert_eq!(parse_version(b"2.0-dev \0"), Some((2, 0)));
        assert_eq!(parse_version(b"x"), None);
        assert_eq!(parse_version(b"1."), None);
        assert_eq!(parse_version(b"1.2"), None);
    }

    /// The shared libssl has symbols for the public functions: the inferred workers must be
    /// what `SSL_write_ex` and `SSL_read_ex` call.
    #[test]
    fn finds_the_workers_in_the_system_libssl() {
        use object::{Object as _, ObjectSymbol as _};
        let data = std::fs::read("/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
        let image = Image::parse(&data).unwrap();
        assert!(present(&data));
        let found = locate(&image).unwrap().unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let symbol = |name: &str| {
            let s = elf
                .dynamic_symbols()
                .find(|s| s.name() == Ok(name))
                .unwrap();
            s.address()..s.address() + s.size()
        };
        // The banner lives in libcrypto: the layout comes from the source-file names here.
        assert_eq!(version(&image), None);
        let installed = std::process::Command::new("openssl")
            .arg("version")
            .output()
            .unwrap();
        let from_3_2 = !String::from_utf8_lossy(&installed.stdout).starts_with("OpenSSL 3.0.")
            && !String::from_utf8_lossy(&installed.stdout).starts_with("OpenSSL 3.1.");
        assert_eq!(layout(&image).0, from_3_2);
        let write_program = if from_3_2 {
            "ssl_write_ex2"
        } else {
            "ssl_write_ex"
        };
        let programs: Vec<&str> = found.hooks.iter().map(|h| h.program.as_str()).collect();
        assert_eq!(
            programs,
            [
                write_program,
                "ssl_write_ret",
                "ssl_read_ex",
                "ssl_read_ret"
            ]
        );
        for (hook, wrapper) in [
            (&found.hooks[0], "SSL_write_ex"),
            (&found.hooks[2], "SSL_read_ex"),
        ] {
            let at = image.vaddr_of(hook.offset).unwrap();
            let targets: Vec<u64> = image
                .decode(symbol(wrapper))
                .iter()
                .filter(|i| i.op0_kind() == iced_x86::OpKind::NearBranch64)
                .map(|i| i.near_branch_target())
                .collect();
            assert!(
                targets.contains(&at),
                "{wrapper} reaches {at:#x}: {targets:x?}"
            );
        }
    }

    /// A C program linked against the OS's libssl.a, stripped: the inferred workers are the
    /// unstripped build's `ssl_write_internal` and `ssl_read_internal` symbols.
    #[test]
    fn finds_the_workers_in_a_stripped_static_c_program() {
        use object::{Object as _, ObjectSymbol as _};
        let (full, stripped) = tracer_testkit::stripped::build_c_client().unwrap();
        let full = std::fs::read(full).unwrap();
        let elf = object::File::parse(&*full).unwrap();
        let address = |name: &str| {
            elf.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .unwrap()
        };
        let data = std::fs::read(stripped).unwrap();
        assert!(object::File::parse(&*data)
            .unwrap()
            .symbols()
            .next()
            .is_none());
        let image = Image::parse(&data).unwrap();
        let found = locate(&image).unwrap().unwrap();
        assert_eq!(found.kind, "openssl");
        assert_eq!(found.stack, "OpenSSL 3.0/3.1 (static, no symbols)");
        let at = |i: usize| image.vaddr_of(found.hooks[i].offset).unwrap();
        assert_eq!(found.hooks[0].program, "ssl_write_ex");
        assert_eq!(at(0), address("ssl_write_internal"));
        assert_eq!(at(1), address("ssl_write_internal"));
        assert_eq!(at(2), address("ssl_read_internal"));
        assert_eq!(at(3), address("ssl_read_internal"));
    }

    #[test]
    fn other_binaries_are_not_openssl() {
        let data = std::fs::read("/bin/true").unwrap();
        assert!(!present(&data));
        assert_eq!(locate(&Image::parse(&data).unwrap()).unwrap(), None);
    }
}
