//! The locator machinery checked against real binaries on this machine, whose symbol tables say
//! what the answers must be.

use std::{collections::HashMap, ops::Range, path::Path};

use object::{Object as _, ObjectSymbol as _};

use super::*;

const LIBSSL: &str = "/lib/x86_64-linux-gnu/libssl.so.3";
const NODE: &str = "/usr/bin/node";

/// Defined function symbols with a size: name -> address range.
fn symbols(data: &[u8]) -> HashMap<String, Range<u64>> {
    let elf = object::File::parse(data).unwrap();
    elf.dynamic_symbols()
        .chain(elf.symbols())
        .filter(|s| s.is_definition() && s.kind() == object::SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            let name = s.name().ok()?.to_string();
            Some((name, s.address()..s.address() + s.size()))
        })
        .collect()
}

/// The function holding the RIP-relative reference to a `__func__` name (OpenSSL's error
/// macros pass one): how a locator finds a function by its own name without symbols.
fn function_naming_itself(image: &Image<'_>, name: &str) -> Vec<Range<u64>> {
    let strings = image.whole_strings(name.as_bytes());
    let mut found: Vec<Range<u64>> = image
        .references_to(&strings)
        .iter()
        .filter(|x| x.kind == XrefKind::Address)
        .filter_map(|x| image.function_containing(x.from))
        .collect();
    found.sort_by_key(|r| r.start);
    found.dedup();
    found
}

#[test]
fn unwind_tables_give_the_symbol_tables_function_bounds() {
    for path in [LIBSSL, NODE] {
        let data = std::fs::read(path).unwrap();
        let image = Image::parse(&data).unwrap();
        let symbols = symbols(&data);
        let (mut same, mut total) = (0, 0);
        for range in symbols.values() {
            total += 1;
            if image.function_containing(range.start).as_ref() == Some(range) {
                same += 1;
            }
        }
        // A few symbols cover assembly without unwind info or aliases of part of a function.
        assert!(
            total > 500 && same * 100 >= total * 95,
            "{path}: {same} of {total} agree"
        );
        for name in ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"] {
            assert_eq!(
                image.function_containing(symbols[name].start + 1),
                Some(symbols[name].clone()),
                "{path} {name}"
            );
        }
    }
}

#[test]
fn functions_are_found_by_the_error_strings_they_reference() {
    let data = std::fs::read(LIBSSL).unwrap();
    let image = Image::parse(&data).unwrap();
    let symbols = symbols(&data);
    // SSL_write raises SSL_R_BAD_LENGTH with __func__ "SSL_write".
    assert_eq!(
        function_naming_itself(&image, "SSL_write"),
        vec![symbols["SSL_write"].clone()]
    );
    // ssl_read_internal is not exported; SSL_read calls it, and it names itself.
    let internal = function_naming_itself(&image, "ssl_read_internal");
    assert_eq!(internal.len(), 1, "{internal:x?}");
    let called = image.calls_in(symbols["SSL_read"].clone());
    assert!(
        called.iter().any(|(_, to)| *to == internal[0].start),
        "{called:x?} {internal:x?}"
    );
    // The same call seen from the callee's side.
    let callers = image.references_to(&[internal[0].start]);
    assert!(callers
        .iter()
        .any(|x| symbols["SSL_read"].contains(&x.from) && x.kind != XrefKind::Address));
}

#[test]
fn a_stripped_copy_gives_the_originals_symbol_offsets() {
    let dir = std::env::temp_dir().join(format!("locate-strip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stripped = dir.join("node");
    let status = std::process::Command::new("objcopy")
        .arg("--strip-all")
        .arg(NODE)
        .arg(&stripped)
        .status()
        .unwrap();
    assert!(status.success());
    let original_data = std::fs::read(NODE).unwrap();
    let symbols = symbols(&original_data);
    let original = Image::parse(&original_data).unwrap();
    let data = std::fs::read(&stripped).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let image = Image::parse(&data).unwrap();
    assert!(object::File::parse(&*data)
        .unwrap()
        .symbols()
        .next()
        .is_none());
    for name in ["SSL_write", "SSL_read"] {
        let found = function_naming_itself(&image, name);
        assert_eq!(found.len(), 1, "{name}: {found:x?}");
        // Stripping moves the file layout, not the addresses: the probe's offset in the
        // stripped file must land on the very code the symbol names in the original.
        assert_eq!(found[0], symbols[name], "{name}");
        let len = found[0].end - found[0].start;
        let at = image.file_offset(found[0].start).unwrap() as usize;
        let was = original.file_offset(symbols[name].start).unwrap() as usize;
        assert_eq!(
            data[at..at + len as usize],
            original.data()[was..was + len as usize],
            "{name}"
        );
        assert!(image.is_instruction_boundary(found[0].start));
    }
}

#[test]
fn instruction_boundaries_come_from_decoding_the_function() {
    let data = std::fs::read(LIBSSL).unwrap();
    let image = Image::parse(&data).unwrap();
    let f = symbols(&data)["SSL_write"].clone();
    let code = image.decode(f.clone());
    assert!(code.len() > 5);
    for i in &code {
        assert!(image.is_instruction_boundary(i.ip()));
        for inside in i.ip() + 1..i.ip() + i.len() as u64 {
            assert!(!image.is_instruction_boundary(inside), "{inside:#x}");
        }
    }
    // Outside any function nothing is provable.
    assert!(!image.is_instruction_boundary(0));
}

#[test]
fn addresses_map_to_file_offsets_and_back() {
    let data = std::fs::read(NODE).unwrap();
    let image = Image::parse(&data).unwrap();
    let at = image.strings(b"SSL_write")[0];
    let offset = image.file_offset(at).unwrap() as usize;
    assert_eq!(&data[offset..offset + 10], b"SSL_write\0");
    assert_eq!(image.vaddr_of(offset as u64), Some(at));
    assert_eq!(image.bytes_at(at, 9), Some(&b"SSL_write"[..]));
    assert!(image.build_id().is_some_and(|b| b.len() >= 16));
    assert!(image.contains(b"OpenSSL 3."));
}

#[test]
fn tails_of_longer_strings_are_told_apart() {
    let data = std::fs::read(LIBSSL).unwrap();
    let image = Image::parse(&data).unwrap();
    let all = image.strings(b"write");
    let whole = image.whole_strings(b"write");
    assert!(whole.len() < all.len());
    for at in whole {
        assert_eq!(image.bytes_at(at - 1, 7), Some(&b"\0write\0"[..]));
    }
}

#[test]
fn other_files_are_clear_errors() {
    assert!(matches!(
        Image::parse(b"#!/bin/sh\n"),
        Err(ImageError::Elf(_))
    ));
    assert!(Image::parse(&[]).is_err());
}

#[test]
fn the_disk_cache_computes_once_per_build() {
    let dir = std::env::temp_dir().join(format!("locate-cache-{}", std::process::id()));
    let cache = DiskCache::at(&dir);
    let key = CacheKey::of_content(b"abc");
    assert_eq!(
        key.as_str(),
        "sha256-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let mut runs = 0;
    let mut run = || {
        cache.get_or_compute(&key, "test", 1, || {
            runs += 1;
            Outcome::Failed {
                locator: "test".into(),
                reason: "r".into(),
            }
        })
    };
    let first = run();
    let second = run();
    assert_eq!((first == second, runs), (true, 1));
    // Another locator version recomputes; a damaged file is recomputed, not trusted.
    assert_eq!(cache.get::<Outcome>(&key, "test", 2), None);
    // Only root may write (or plant entries) where probe offsets come from.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let path = dir.join(format!("{}.test-v1.json", key.as_str()));
    std::fs::write(&path, b"{not json").unwrap();
    assert_eq!(cache.get::<Outcome>(&key, "test", 1), None);
    std::fs::remove_dir_all(&dir).unwrap();
    // No directory: works, caches nothing.
    let none = DiskCache::none();
    none.put(&key, "test", 1, &Outcome::NotPresent).unwrap();
    assert_eq!(none.get::<Outcome>(&key, "test", 1), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        if let Ok(image) = Image::parse(&bytes) {
            let _ = image.strings(b"x");
            let _ = image.references_to(&[0, 1]);
            let _ = image.function_containing(0);
            let _ = image.is_instruction_boundary(0);
        }
    }
}

/// Codex CLI links a static OpenSSL 3 (its custom-provider path) and rustls on aws-lc (its
/// default WebSocket and HTTPS paths): a binary with two stacks, both of which must be located.
#[test]
fn every_stack_of_a_binary_carrying_two_is_located() {
    let codex = tracer_testkit::codex::install().unwrap();
    let report = locate_file(&codex, &DiskCache::none()).unwrap();
    let kinds: Vec<&str> = report.found.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["openssl", "rustls"], "{report:#?}");
    assert!(report.failed.is_empty(), "{report:#?}");
    for found in &report.found {
        let programs: Vec<&str> = found.hooks.iter().map(|h| h.program.as_str()).collect();
        assert!(programs.len() >= 4, "{}: {programs:?}", found.stack);
    }
    // The two stacks' hooks are different functions.
    let offsets = |i: usize| -> std::collections::HashSet<u64> {
        report.found[i].hooks.iter().map(|h| h.offset).collect()
    };
    assert!(offsets(0).is_disjoint(&offsets(1)));

    // The attacher's view: one analysis, both stacks, every hook inferred.
    let analysis = crate::capture::targets::analyse(&codex, true).unwrap();
    let stacks: Vec<_> = analysis.stacks.iter().map(|s| s.stack.clone()).collect();
    use crate::capture::targets::{HookMethod, TlsStack};
    assert_eq!(stacks, [TlsStack::OpenSsl, TlsStack::Rustls]);
    assert!(analysis
        .stacks
        .iter()
        .all(|s| s.method == HookMethod::Inferred && !s.hooks.is_empty()));
    assert_eq!(analysis.unsupported, None);
}

#[test]
fn a_binary_with_one_stack_reports_that_one() {
    // This test binary links rustls (ring provider) and no OpenSSL or BoringSSL.
    let me = std::fs::canonicalize("/proc/self/exe").unwrap();
    let report = locate_file(&me, &DiskCache::none()).unwrap();
    let kinds: Vec<&str> = report.found.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["rustls"], "{report:#?}");
}

/// Issue 17 item 5: a program carrying another program's build id (the linker writes whatever
/// `--build-id=0x...` says) gets its own answer, not the other's probe offsets from the cache.
#[test]
fn a_binary_carrying_another_binarys_build_id_gets_its_own_hooks() {
    let dir = std::env::temp_dir().join(format!("locate-poison-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = DiskCache::at(&dir);
    let libssl = std::fs::read(LIBSSL).unwrap();
    let victim = Image::parse(&libssl).unwrap();
    let build_id = victim.build_id().unwrap().to_vec();
    let first = locate(&libssl, &cache);
    assert_eq!(first.found.len(), 1, "{first:?}");

    // /bin/true with libssl's build id written over its own, and OpenSSL's marker strings
    // appended so that the OpenSSL locator looks at it.
    let mut impostor = std::fs::read("/bin/true").unwrap();
    let own_id = Image::parse(&impostor)
        .unwrap()
        .build_id()
        .unwrap()
        .to_vec();
    assert_eq!(own_id.len(), build_id.len());
    let at = memchr::memmem::find(&impostor, &own_id).unwrap();
    impostor[at..at + build_id.len()].copy_from_slice(&build_id);
    impostor.extend_from_slice(b"\0ssl_write_internal\0ssl/ssl_lib.c\0");
    assert!((LOCATORS[0].present)(&impostor));
    assert_eq!(
        Image::parse(&impostor).unwrap().build_id(),
        Some(&build_id[..]),
        "the impostor carries the victim's build id"
    );
    let second = locate(&impostor, &cache);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        second.found.is_empty(),
        "the victim's hooks were handed out: {second:?}"
    );
}

/// A cache entry naming probes that are not instruction starts in this file's code (planted,
/// damaged, or from a locator bug) is analysed again, not believed.
#[test]
fn a_cache_hit_is_checked_against_the_file() {
    let dir = std::env::temp_dir().join(format!("locate-recheck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = DiskCache::at(&dir);
    let libssl = std::fs::read(LIBSSL).unwrap();
    let honest = locate(&libssl, &cache);
    let key = CacheKey::of_content(&libssl);
    let mut planted = honest.found[0].clone();
    for hook in &mut planted.hooks {
        hook.offset += 1; // inside the first instruction
    }
    let locator = &LOCATORS[0];
    assert_eq!(
        honest.found[0].kind, "openssl",
        "the OpenSSL locator comes first"
    );
    cache
        .put(
            &key,
            locator.name,
            locator.version,
            &Outcome::Found(planted),
        )
        .unwrap();
    let again = locate(&libssl, &cache);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(again, honest);
}

/// The daemon decides which locators to run from the needles it finds while streaming a file
/// through a bounded window (it holds only the metadata): that must be `present`'s answer on
/// the whole file, for binaries with each stack and without any.
#[test]
fn needles_found_by_streaming_decide_as_present_on_the_whole_file() {
    for locator in LOCATORS {
        assert!(
            locator
                .needles
                .iter()
                .all(|n| !n.contains(&NEEDLE_SEPARATOR)),
            "{}",
            locator.name
        );
        assert!(
            present_by_needles(locator, locator.needles),
            "{}",
            locator.name
        );
        assert!(!present_by_needles(locator, &[]), "{}", locator.name);
    }
    let me = std::fs::canonicalize("/proc/self/exe").unwrap();
    let bun = tracer_testkit::bun::install(tracer_testkit::bun::CURRENT).unwrap();
    let codex = tracer_testkit::codex::install().unwrap();
    let mut answers = Vec::new();
    for path in [
        Path::new(NODE),
        Path::new(LIBSSL),
        &me,
        &bun,
        &codex,
        Path::new("/bin/true"),
    ] {
        let data = std::fs::read(path).unwrap();
        let opened = crate::capture::safe_open::open_host(path).unwrap();
        for locator in LOCATORS {
            let in_file = crate::capture::safe_open::needles_in_file(
                &opened.file,
                &path.display().to_string(),
                locator.needles,
            )
            .unwrap();
            let found: Vec<&[u8]> = locator
                .needles
                .iter()
                .zip(in_file)
                .filter_map(|(n, found)| found.then_some(*n))
                .collect();
            let whole = (locator.present)(&data);
            assert_eq!(
                present_by_needles(locator, &found),
                whole,
                "{} in {}",
                locator.name,
                path.display()
            );
            answers.push(whole);
        }
    }
    // Bun's BoringSSL, Codex's OpenSSL and rustls, this binary's rustls: both answers occur.
    assert!(answers.contains(&true) && answers.contains(&false));
}
