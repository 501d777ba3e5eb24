// Test code builds its ELF files with plain arithmetic on constants it chose.
#![allow(clippy::arithmetic_side_effects)]

use std::{
    ops::Range,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use proptest::prelude::*;

use super::*;

/// Go binaries built once per test process from tests/clients/go/https_client.go.
struct Built {
    plain: PathBuf,
    stripped: PathBuf,
    pie: PathBuf,
    no_tls: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        use tracer_testkit::go;
        let dir = tracer_testkit::target_dir().join("go-unit");
        let source = go::https_client_source();
        let hello = dir.join("hello.go");
        std::fs::create_dir_all(&dir).expect("creating target/go-unit");
        std::fs::write(
            &hello,
            "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n",
        )
        .expect("writing hello.go");
        Built {
            plain: go::build(&source, &dir.join("client"), false).expect("go build"),
            stripped: go::build(&source, &dir.join("client-stripped"), true)
                .expect("go build stripped"),
            pie: go::build_with_flags(&source, &dir.join("client-pie"), &["-buildmode=pie"])
                .expect("go build pie"),
            no_tls: go::build(&hello, &dir.join("hello"), false).expect("go build hello"),
        }
    })
}

/// What Go's own disassembler says about `function`: (address, machine code bytes, is RET)
/// per instruction. An oracle independent of this module's ELF, pclntab and x86 decoding.
fn go_objdump(binary: &Path, function: &str) -> Vec<(u64, Vec<u8>, bool)> {
    let pattern = format!(
        "^{}$",
        function
            .replace('.', "\\.")
            .replace('(', "\\(")
            .replace(')', "\\)")
            .replace('*', "\\*")
    );
    let out = Command::new("go")
        .args(["tool", "objdump", "-s", &pattern])
        .arg(binary)
        .output()
        .expect("go tool objdump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("TEXT"))
        .filter_map(|line| {
            // "  conn.go:1133\t\t0x595f40\t\t4c8d642498\t\tLEAQ -0x68(SP), R12"
            let fields: Vec<&str> = line.split('\t').filter(|f| !f.is_empty()).collect();
            let address = u64::from_str_radix(fields.get(1)?.trim_start_matches("0x"), 16);
            let hex = fields.get(2)?;
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>();
            let is_ret = fields.get(3)?.trim() == "RET";
            Some((address.ok()?, bytes.ok()?, is_ret))
        })
        .collect()
}

/// Checks `function` against objdump: the entry and every RET, at the right file offsets
/// (the file's bytes there are the instructions objdump printed).
fn assert_matches_objdump(binary: &Path, found: &GoFunction, function: &str) {
    let data = std::fs::read(binary).expect("reading binary");
    let listing = go_objdump(binary, function);
    assert!(!listing.is_empty(), "objdump listed nothing for {function}");
    let at = |offset: u64, len: usize| &data[offset as usize..offset as usize + len];
    let (entry_address, entry_bytes, _) = &listing[0];
    assert_eq!(at(found.entry, entry_bytes.len()), &entry_bytes[..]);
    let rets: Vec<&(u64, Vec<u8>, bool)> = listing.iter().filter(|i| i.2).collect();
    assert_eq!(found.returns.len(), rets.len(), "{function}: RET count");
    for (offset, (address, bytes, _)) in found.returns.iter().zip(rets) {
        // Same distance from the entry in the file as in memory, and a RET there.
        assert_eq!(offset - found.entry, address - entry_address);
        assert_eq!(at(*offset, bytes.len()), &bytes[..]);
    }
}

#[test]
fn finds_entry_and_every_ret_from_the_symbol_table() {
    let b = built();
    let hooks = locate(&b.plain).unwrap().expect("a Go TLS binary");
    assert!(hooks.from_symbols);
    let version = hooks.go_version.as_deref().expect("version");
    assert!(
        go_minor_version(version).is_some_and(|m| m >= 17),
        "{version}"
    );
    assert_matches_objdump(&b.plain, &hooks.write, WRITE_FUNCTION);
    assert_matches_objdump(&b.plain, &hooks.read, READ_FUNCTION);
}

#[test]
fn stripped_binary_gives_the_same_probes_from_the_pclntab() {
    let b = built();
    let plain = locate(&b.plain).unwrap().expect("plain");
    let stripped = locate(&b.stripped).unwrap().expect("stripped");
    assert!(!stripped.from_symbols);
    // -s -w drops symbols and DWARF only: the code and its place in the file are the same.
    assert_eq!(stripped.write, plain.write);
    assert_eq!(stripped.read, plain.read);
    assert_eq!(stripped.go_version, plain.go_version);
}

/// The daemon reads a Go executable without its code (only the two functions', for their RETs):
/// the probes must be those of the whole file, with and without symbols and section headers'
/// help, and PIE or not.
#[test]
fn the_daemon_finds_the_same_probes_without_reading_the_code() {
    let b = built();
    for binary in [&b.plain, &b.stripped, &b.pie] {
        let opened = crate::capture::safe_open::open_host(binary).unwrap();
        let shown = binary.display().to_string();
        let sparse = crate::capture::safe_open::read_for_analysis(&opened.file, &shown).unwrap();
        assert!(sparse.partly_unread(), "{shown}: read whole up front");
        let analysis = crate::capture::targets::analyse(binary, true).unwrap();
        assert_eq!(analysis.go, locate(binary).unwrap(), "{shown}");
        assert!(analysis.go.is_some(), "{shown}");
    }
}

/// What the daemon reads of a Go executable's data (`data_ranges`), read into a sparse copy:
/// the probes found there, and the ranges.
fn sparse_analysis(binary: &Path) -> (Option<GoTlsHooks>, Vec<Range<u64>>) {
    use crate::capture::safe_open::{open_host, read_for_analysis};
    let opened = open_host(binary).unwrap();
    let shown = binary.display().to_string();
    let mut sparse = read_for_analysis(&opened.file, &shown).unwrap();
    let ranges = {
        let elf = object::File::parse(&*sparse).unwrap();
        let file_at = |offset, len| sparse.bytes_at(&opened.file, offset, len);
        data_ranges(&elf, &file_at).expect("a layout")
    };
    sparse
        .read_within(&opened.file, &shown, ranges.clone())
        .unwrap();
    assert!(sparse.partly_unread(), "{shown}: read whole");
    let found = locate_reading_code(&sparse, &Budget::standard(), &|offset, len| {
        sparse.bytes_at(&opened.file, offset, len)
    })
    .unwrap();
    let whole = std::fs::read(binary).unwrap();
    assert_eq!(found, locate_in(&whole).unwrap(), "{shown}");
    assert!(found.is_some(), "{shown}");
    (found, ranges)
}

fn section_range(binary: &Path, names: &[&str]) -> Range<u64> {
    let data = std::fs::read(binary).unwrap();
    let elf = object::File::parse(&data[..]).unwrap();
    let (at, len) = names
        .iter()
        .find_map(|name| elf.section_by_name(name))
        .and_then(|section| section.file_range())
        .unwrap();
    at..at + len
}

/// With crypto/tls in the symbol table the daemon reads only the build information (for the
/// version); stripped, the function table's names and entries, not its line and file tables.
/// The probes are those of the whole file either way.
#[test]
fn of_a_go_executables_data_only_what_the_lookup_needs_is_read() {
    let b = built();
    for binary in [&b.plain, &b.pie] {
        let (found, ranges) = sparse_analysis(binary);
        assert!(found.unwrap().from_symbols);
        assert_eq!(ranges, [section_range(binary, &[".go.buildinfo"])]);
    }
    {
        let binary = &b.stripped;
        let (found, ranges) = sparse_analysis(binary);
        assert!(!found.unwrap().from_symbols);
        let table = section_range(binary, &TABLE_SECTIONS);
        let read_of_table: u64 = ranges
            .iter()
            .filter(|r| r.start >= table.start && r.end <= table.end)
            .map(|r| r.end - r.start)
            .sum();
        let len = table.end - table.start;
        assert!(
            read_of_table * 10 < len * 8,
            "{}: {read_of_table} of the table's {len} bytes read",
            binary.display()
        );
    }
}

/// A Go executable whose section headers do not name the function table (Docker's, linked by
/// the system linker): its loadable data segments are read, not its debug sections or code.
#[test]
fn without_a_table_section_the_data_segments_are_read() {
    let b = built();
    let mut data = std::fs::read(&b.stripped).unwrap();
    let name = memchr::memmem::find(&data, b"\0.gopclntab\0").expect("section name") + 1;
    data[name..name + 10].copy_from_slice(b".renamed00");
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("client-renamed");
    std::fs::write(&renamed, &data).unwrap();
    let elf = object::File::parse(&data[..]).unwrap();
    assert!(elf.section_by_name(".gopclntab").is_none());
    let (found, ranges) = sparse_analysis(&renamed);
    assert_eq!(
        found,
        locate_in(&std::fs::read(&b.stripped).unwrap()).unwrap()
    );
    let segments = Segments::of(&elf).unwrap();
    let data_segments: Vec<Range<u64>> = segments
        .iter()
        .filter(|s| !s.executable)
        .map(|s| s.offset..s.offset + s.file_size)
        .collect();
    assert_eq!(ranges, data_segments);
}

/// A header whose tables are not in the linker's order is not trusted to say what to skip.
#[test]
fn a_pclntab_header_out_of_order_means_reading_the_whole_table() {
    let header = |names: u64, units: u64, functions: u64| {
        let mut h = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        for field in [10, 3, 0x401000, names, units, 0, 0, functions] {
            h.extend(u64::to_le_bytes(field));
        }
        h
    };
    assert_eq!(
        pclntab::parts_read(&header(72, 1000, 5000), 9000),
        Some([0..72, 72..1000, 5000..9000])
    );
    assert_eq!(pclntab::parts_read(&header(72, 6000, 5000), 9000), None);
    assert_eq!(pclntab::parts_read(&header(8, 1000, 5000), 9000), None);
    assert_eq!(pclntab::parts_read(&header(72, 1000, 9000), 9000), None);
    assert_eq!(
        pclntab::parts_read(&header(72, 1000, 5000)[..40], 9000),
        None
    );
}

#[test]
fn pclntab_bounds_agree_with_the_symbol_table() {
    let data = std::fs::read(&built().plain).unwrap();
    let elf = object::File::parse(&data[..]).unwrap();
    let segments = Segments::of(&elf).unwrap();
    let table = pclntab_bytes(&elf, &data, &segments, &Budget::standard())
        .unwrap()
        .unwrap();
    let text = elf.section_by_name(".text").map(|s| s.address());
    let table = Pclntab::parse(table, text).unwrap();
    let [Some(write), Some(read)] = symbol_bounds(&elf).unwrap().unwrap() else {
        panic!("symbols missing");
    };
    for (name, symbol) in [(WRITE_FUNCTION, write), (READ_FUNCTION, read)] {
        let found = table.find(name, &Budget::standard()).unwrap().unwrap();
        assert_eq!(found.start, symbol.start, "{name}");
        // The pclntab's end is the next function's entry: padding included.
        assert!(
            found.end >= symbol.end && found.end - symbol.end < 64,
            "{name}"
        );
    }
    assert!(table
        .find("runtime.main", &Budget::standard())
        .unwrap()
        .is_some());
    assert_eq!(
        table.find("no.such.function", &Budget::standard()).unwrap(),
        None
    );
}

#[test]
fn finds_the_pclntab_by_its_magic_when_section_headers_are_gone() {
    let b = built();
    let expected = locate(&b.stripped).unwrap().unwrap();
    let mut data = std::fs::read(&b.stripped).unwrap();
    // e_shoff, e_shnum, e_shstrndx: what a section-header stripper (sstrip, packers) zeroes.
    data[0x28..0x30].fill(0);
    data[0x3c..0x40].fill(0);
    let elf = object::File::parse(&data[..]).unwrap();
    assert!(elf.section_by_name(".gopclntab").is_none());
    assert!(elf.section_by_name(".go.buildinfo").is_none());
    let found = locate_in(&data)
        .unwrap()
        .expect("found without section headers");
    assert_eq!(found, expected);
}

#[test]
fn position_independent_executables_map_through_their_segments() {
    let b = built();
    let hooks = locate(&b.pie).unwrap().expect("pie");
    assert_matches_objdump(&b.pie, &hooks.write, WRITE_FUNCTION);
    assert_matches_objdump(&b.pie, &hooks.read, READ_FUNCTION);
}

#[test]
fn other_files_are_not_go_tls_binaries() {
    let b = built();
    assert_eq!(locate(&b.no_tls).unwrap(), None, "Go without crypto/tls");
    let own = std::env::current_exe().unwrap();
    assert_eq!(locate(&own).unwrap(), None, "a Rust executable");
    let source = tracer_testkit::go::https_client_source();
    assert_eq!(locate(&source).unwrap(), None, "a text file");
    assert!(matches!(
        locate(Path::new("/nonexistent/agent-tracer-test")),
        Err(GoLocateError::Io(_))
    ));
}

#[test]
fn rets_are_found_by_decoding_not_by_byte_value() {
    let code = [
        0xb8, 0xc3, 0xc3, 0xc3, 0xc3, // mov eax, 0xc3c3c3c3
        0xc3, // ret
        0xc2, 0x08, 0x00, // ret 8
        0xcb, // retf: not a near return
        0xcc, 0xcc, // int3 padding
    ];
    assert_eq!(find_returns(&code, 0x1000), Ok(vec![0x1005, 0x1006]));
    // A truncated instruction at the end is undecodable: the bounds would be wrong.
    assert_eq!(find_returns(&[0xc3, 0xb8, 0x01], 0x2000), Err(0x2001));
    assert_eq!(find_returns(&[], 0), Ok(vec![]));
}

#[test]
fn go_versions() {
    assert_eq!(go_minor_version("go1.19.8"), Some(19));
    assert_eq!(go_minor_version("go1.21rc2"), Some(21));
    assert_eq!(go_minor_version("devel go1.22-abcdef Tue"), Some(22));
    assert_eq!(go_minor_version("go2"), None);
    assert!(check_register_abi(Some("go1.17"), Some(0xffff_fffa)).is_ok());
    assert!(matches!(
        check_register_abi(Some("go1.16.15"), Some(0xffff_fffa)),
        Err(GoLocateError::StackAbi(_))
    ));
    assert!(check_register_abi(None, Some(0xffff_fff1)).is_ok());
    assert!(check_register_abi(None, Some(0xffff_fffa)).is_err());
    assert!(check_register_abi(None, Some(0xffff_fffb)).is_err());
}

fn buildinfo_header(flags: u8) -> Vec<u8> {
    let mut blob = b"\xff Go buildinf:".to_vec();
    blob.extend([8, flags]);
    blob
}

#[test]
fn build_versions_inline_and_by_pointer() {
    // Go 1.18+: the string after the 32-byte header, uvarint length first.
    let mut inline = buildinfo_header(2);
    inline.resize(32, 0);
    inline.push(8);
    inline.extend(b"go1.20.3");
    assert_eq!(
        parse_build_version(&inline, |_, _| None).as_deref(),
        Some("go1.20.3")
    );
    // Before: a pointer to a Go string header {ptr, len} elsewhere in memory.
    let mut by_pointer = buildinfo_header(0);
    by_pointer.extend(0x5000u64.to_le_bytes());
    by_pointer.extend(0u64.to_le_bytes());
    let mut header = 0x6000u64.to_le_bytes().to_vec();
    header.extend(9u64.to_le_bytes());
    let memory = |addr: u64, len: u64| -> Option<Vec<u8>> {
        match (addr, len) {
            (0x5000, 16) => Some(header.clone()),
            (0x6000, 9) => Some(b"go1.17.13".to_vec()),
            _ => None,
        }
    };
    assert_eq!(
        parse_build_version(&by_pointer, memory).as_deref(),
        Some("go1.17.13")
    );
    assert_eq!(parse_build_version(b"not build info", |_, _| None), None);
    assert_eq!(parse_build_version(&buildinfo_header(2), |_, _| None), None);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = locate_in(&bytes);
        let _ = find_returns(&bytes, 0x1000);
        // Behind a valid 1.18 header, as a damaged pclntab would look.
        let mut table = vec![0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        table.extend(&bytes);
        if let Ok(t) = Pclntab::parse(&table, Some(0x401000)) {
            let _ = t.find("runtime.main", &Budget::standard());
        }
        let _ = find_pclntab(&table, &Budget::standard());
        let _ = parse_build_version(&bytes, |_, _| None);
    }
}

/// An x86-64 ELF (/bin/true, its section headers gone) whose read-only segment is replaced by 8 MiB of forged pclntab
/// headers, one every 128 bytes, each claiming a function table that runs to the end of the
/// region: found by magic (no section names it), every candidate parsed and walked. Unbounded,
/// that is ~65 000 candidates × ~500 000 entries each.
fn forged_pclntab_elf() -> Vec<u8> {
    const REGION: usize = 8 << 20;
    let mut region = vec![0u8; REGION];
    let mut at = 0;
    while at + 128 <= REGION {
        let header = &mut region[at..at + 72];
        header[0..8].copy_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8]);
        let nfunc = ((REGION - at - 72) / 8 - 1) as u64;
        let words = [nfunc, 1, 0x40_1000, 8, 8, 8, 8, 72];
        for (i, word) in words.iter().enumerate() {
            header[8 + 8 * i..16 + 8 * i].copy_from_slice(&word.to_le_bytes());
        }
        at += 128;
    }
    let mut data = std::fs::read("/bin/true").unwrap();
    let u16_at = |d: &[u8], at: usize| u16::from_le_bytes([d[at], d[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (entsize, count) = (u16_at(&data, 0x36), u16_at(&data, 0x38));
    let offset = data.len().next_multiple_of(4096);
    let readonly = (0..count)
        .rev()
        .map(|i| phoff + i * entsize)
        .find(|&ph| {
            let kind = u32::from_le_bytes(data[ph..ph + 4].try_into().unwrap());
            let flags = u32::from_le_bytes(data[ph + 4..ph + 8].try_into().unwrap());
            kind == 1 && flags == 4 // PT_LOAD, read-only
        })
        .expect("a read-only segment");
    // No section headers either (as `sstrip` leaves a binary): only a scan can tell Go.
    data[0x28..0x30].fill(0);
    data[0x3c..0x40].fill(0);
    data[readonly + 8..readonly + 16].copy_from_slice(&(offset as u64).to_le_bytes());
    data[readonly + 32..readonly + 40].copy_from_slice(&(REGION as u64).to_le_bytes());
    data[readonly + 40..readonly + 48].copy_from_slice(&(REGION as u64).to_le_bytes());
    data.resize(offset, 0);
    data.extend_from_slice(&region);
    data
}

/// Issue 17 item 4: a forged pclntab ends the Go analysis within its budget, as an error that
/// says so (and the target analysis counts it as given up), instead of walking for hours.
#[test]
fn a_forged_function_table_ends_within_the_budget() {
    let data = forged_pclntab_elf();
    let started = std::time::Instant::now();
    let result = locate_in(&data);
    let took = started.elapsed();
    assert!(
        matches!(result, Err(GoLocateError::Budget(_))),
        "{result:?}"
    );
    assert!(
        took < MAX_ANALYSIS_TIME + std::time::Duration::from_secs(2),
        "{took:?}"
    );

    // Through the target analysis: given up, counted, no hooks.
    let dir = tracer_testkit::target_dir().join("go-unit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("forged-pclntab-{}", std::process::id()));
    std::fs::write(&path, &data).unwrap();
    let opened = crate::capture::safe_open::open_host(&path).unwrap();
    let cache = crate::capture::targets::TargetCache::default();
    let analysis = cache
        .get_or_analyse(opened.id, &opened.file, "forged", true)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(analysis.given_up.is_some(), "{analysis:?}");
    assert_eq!(analysis.hooks().count(), 0);
    assert_eq!(cache.given_up.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A name with no NUL for a megabyte is compared over its first few KiB only.
#[test]
fn function_names_are_bounded() {
    let mut table = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
    // nfunc 1, text start, funcnametab at 100, functab at 72: entry 0 -> func record at 8.
    for word in [1u64, 1, 0x40_1000, 100, 0, 0, 0, 72] {
        table.extend(word.to_le_bytes());
    }
    table.resize(100, 0);
    table.extend(std::iter::repeat_n(b'a', 1 << 20));
    let parsed = Pclntab::parse(&table, None).unwrap();
    let long_name = "a".repeat(1 << 20);
    assert_eq!(parsed.find(&long_name, &Budget::standard()).unwrap(), None);
}

/// Issue 17 item 11: a symbol table entry for `crypto/tls.(*Conn).Write` (of a real Go build)
/// whose address plus size passes 2^64 is an error naming the symbol, not an overflow.
#[test]
fn a_symbol_ending_past_64_bits_is_an_error() {
    let mut data = std::fs::read(&built().plain).unwrap();
    let entry = {
        let elf = object::File::parse(&data[..]).unwrap();
        let symbol = elf
            .symbols()
            .find(|s| s.name() == Ok(WRITE_FUNCTION))
            .expect("the Write symbol");
        let table = elf.section_by_name(".symtab").expect("a symbol table");
        let (offset, _) = table.file_range().unwrap();
        // Elf64_Sym is 24 bytes: name, info, other, shndx, then value and size.
        offset as usize + symbol.index().0 * 24
    };
    data[entry + 8..entry + 16].copy_from_slice(&(u64::MAX - 0x10).to_le_bytes());
    let result = locate_in(&data);
    assert!(
        matches!(
            result,
            Err(GoLocateError::SymbolOverflow {
                name: WRITE_FUNCTION,
                address,
                ..
            }) if address == u64::MAX - 0x10
        ),
        "{result:?}"
    );
}

/// A Go 1.18+ table whose text start is near 2^64: the entry address (text start + offset)
/// cannot be formed, and the lookup says the entry is out of range.
#[test]
fn a_text_start_near_64_bits_is_an_error() {
    let mut table = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
    // nfunc 1, text start near the top, funcnametab at 100, functab at 72.
    for word in [1u64, 1, u64::MAX - 4, 100, 0, 0, 0, 72] {
        table.extend(word.to_le_bytes());
    }
    // Entry 0 at text + 0x10, its `_func` record at functab + 0 (whose name offset, the next
    // field, is 0: the name table's first name), end of text at + 0x20.
    for field in [0x10u32, 0, 0x20] {
        table.extend(field.to_le_bytes());
    }
    table.resize(100, 0);
    table.extend(b"runtime.main\0");
    let parsed = Pclntab::parse(&table, None).unwrap();
    let found = parsed.find("runtime.main", &Budget::standard());
    assert!(
        matches!(
            found,
            Err(GoLocateError::Pclntab("function entry out of range"))
        ),
        "{found:?}"
    );
    // The same table at an ordinary text start is found: the forged start is what fails.
    table[24..32].copy_from_slice(&0x40_1000u64.to_le_bytes());
    let parsed = Pclntab::parse(&table, None).unwrap();
    assert_eq!(
        parsed.find("runtime.main", &Budget::standard()).unwrap(),
        Some(0x40_1010..0x40_1020)
    );
}
