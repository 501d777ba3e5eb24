//! Go crypto/tls: finding `crypto/tls.(*Conn).Write` and `crypto/tls.(*Conn).Read` in a Go
//! executable, as file offsets of each function's entry and of every `RET` in its body (see
//! `capture/gotls.rs` for why Go gets no uretprobes, and for attaching).
//!
//! A body's bounds come from the ELF symbol table when the binary has one, else from Go's own
//! function table (pclntab, see [`pclntab`]), which `go build -ldflags="-s -w"` keeps because
//! the runtime needs it for stack unwinding. The `RET`s are found by decoding the body from its
//! first byte with an x86-64 decoder (iced-x86), never by searching for the byte `0xc3`: a probe
//! placed in the middle of an instruction corrupts the traced program.

// Addresses, offsets and sizes here are read from files any local user can write: an overflow
// would be a panic (debug) or a wrong probe address (release), so the lint refuses unchecked
// arithmetic rather than a comment promising there is none.
#![deny(clippy::arithmetic_side_effects)]

mod pclntab;

use std::{
    cell::Cell,
    ops::Range,
    path::Path,
    time::{Duration, Instant},
};

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::{Architecture, Object as _, ObjectSection as _, ObjectSymbol as _};
use thiserror::Error;

pub use pclntab::{find_pclntab, Pclntab, PclntabVersion};

use super::segments::{LayoutError, Segments};

pub const WRITE_FUNCTION: &str = "crypto/tls.(*Conn).Write";
pub const READ_FUNCTION: &str = "crypto/tls.(*Conn).Read";

/// Sections only Go's linker writes: one of them makes a file worth reading (all but its code).
const GO_SECTIONS: &[&str] = &[
    ".gopclntab",
    ".data.rel.ro.gopclntab",
    ".go.buildinfo",
    ".note.go.buildid",
];

/// Where the function table is when section headers name it (the second in PIE builds).
const TABLE_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// No crypto/tls method comes near this; a larger "function" means bounds read wrong.
const MAX_FUNCTION_BYTES: u64 = 1 << 20;

/// Function-table entries one analysis may visit, over every candidate table: the largest Go
/// programs have a few hundred thousand functions and are looked up three times. A forged
/// table (millions of entries, many candidate headers) ends here instead of stalling a thread.
const MAX_TABLE_STEPS: u64 = 16_000_000;
/// Wall-clock time one Go analysis may take, whatever else the budget allows.
const MAX_ANALYSIS_TIME: Duration = Duration::from_secs(10);

/// What one Go analysis may still spend: table entries visited and time. Spent by the pclntab
/// walks; exhausted, the analysis ends with [`GoLocateError::Budget`].
pub struct Budget {
    steps_left: Cell<u64>,
    deadline: Option<Instant>,
}

impl Budget {
    pub fn new(steps: u64, time: Duration) -> Self {
        Budget {
            steps_left: Cell::new(steps),
            // None: a time past the clock's range, which is no deadline at all.
            deadline: Instant::now().checked_add(time),
        }
    }

    /// The default budget of one analysis.
    pub fn standard() -> Self {
        Self::new(MAX_TABLE_STEPS, MAX_ANALYSIS_TIME)
    }

    /// One more table entry; the clock is read every 4096.
    fn step(&self) -> Result<(), GoLocateError> {
        let left = self.steps_left.get();
        let Some(remaining) = left.checked_sub(1) else {
            return Err(GoLocateError::Budget(format!(
                "more than {MAX_TABLE_STEPS} function-table entries visited"
            )));
        };
        self.steps_left.set(remaining);
        let late = self.deadline.is_some_and(|d| Instant::now() > d);
        if left.is_multiple_of(4096) && late {
            self.steps_left.set(0);
            return Err(GoLocateError::Budget(format!(
                "over {} s",
                MAX_ANALYSIS_TIME.as_secs()
            )));
        }
        Ok(())
    }
}

/// Where to probe one function, as file offsets: what
/// `UProbe::attach(UProbeAttachLocation::AbsoluteOffset(offset), path, ..)` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFunction {
    pub entry: u64,
    pub returns: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTlsHooks {
    pub write: GoFunction,
    pub read: GoFunction,
    /// The toolchain that built the binary (`go1.19.8`), from its build information.
    pub go_version: Option<String>,
    /// Bounds came from the ELF symbol table (else from the pclntab).
    pub from_symbols: bool,
}

#[derive(Debug, Error)]
pub enum GoLocateError {
    #[error("reading the executable: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed ELF file: {0}")]
    Elf(#[from] object::read::Error),
    #[error("{0} executables are not supported: the Go probes read x86-64 registers")]
    Architecture(String),
    #[error("{0} passes arguments on the stack; the Go probes need the register ABI (Go 1.17+)")]
    StackAbi(String),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("symbol {name}: address {address:#x} + size {size:#x} overflows 64 bits")]
    SymbolOverflow {
        name: &'static str,
        address: u64,
        size: u64,
    },
    #[error("malformed Go function table (pclntab): {0}")]
    Pclntab(&'static str),
    #[error("{found} is present but {missing} is not")]
    MissingFunction {
        found: &'static str,
        missing: &'static str,
    },
    #[error("{function}: {address:#x}..{end:#x} is not in an executable segment of the file")]
    NotInFile {
        function: &'static str,
        address: u64,
        end: u64,
    },
    #[error("{function}: undecodable instruction at {address:#x}")]
    Undecodable {
        function: &'static str,
        address: u64,
    },
    #[error("{function} has no RET instruction")]
    NoReturn { function: &'static str },
    /// A limit on the analysis' work was reached (a forged or absurd function table).
    #[error("analysis budget spent: {0}")]
    Budget(String),
}

/// Finds the probe offsets in the executable at `path`. `Ok(None)`: not a Go executable, or one
/// without crypto/tls linked in. (The target resolver maps the file and calls [`locate_in`].)
#[cfg(test)]
pub fn locate(path: &Path) -> Result<Option<GoTlsHooks>, GoLocateError> {
    if !may_be_go_file(path)? {
        return Ok(None);
    }
    // Read whole only once the headers say Go: the loader asks about every executable it meets.
    let data = std::fs::read(path)?;
    locate_in(&data)
}

/// Cheap look at the headers only (through a read cache, not the whole file).
#[cfg(test)]
fn may_be_go_file(path: &Path) -> std::io::Result<bool> {
    let cache = object::read::ReadCache::new(std::fs::File::open(path)?);
    Ok(object::File::parse(&cache).is_ok_and(|elf| may_be_go(&elf)))
}

/// Whether an ELF file's section headers leave open that it is a Go executable.
pub fn may_be_go<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> bool {
    let has_section_headers = elf
        .sections()
        .any(|s| s.name().is_ok_and(|n| !n.is_empty()));
    // Without section headers only a scan of the contents can tell.
    !has_section_headers || GO_SECTIONS.iter().any(|n| elf.section_by_name(n).is_some())
}

/// Build information larger than this is not read up front (Go's is a few hundred bytes).
const MAX_BUILD_INFO_BYTES: u64 = 1 << 16;

/// The file ranges Go's analysis reads, besides the metadata (headers and symbol tables) read
/// already: `file_at` reads the file, whose other parts are not in memory yet.
/// - With crypto/tls in the symbol table and a build version: the build information alone.
/// - Else, where section headers name the function table and build information: the table's
///   header, function names and function entries, and the build information. The table's line,
///   file and unit tables (a third of it, 8 of terraform's 26 MB) stay unread.
/// - Else the loadable segments that are not code, where Go's analysis looks for the table and
///   the build information by their magic (not the debug sections or the code).
pub fn data_ranges(elf: &object::File<'_>, file_at: &FileAt<'_>) -> Option<Vec<Range<u64>>> {
    let segments = Segments::of(elf).ok()?;
    let info = elf
        .section_by_name(".go.buildinfo")
        .and_then(|section| section.file_range())
        .and_then(|(at, len)| Some(at..at.checked_add(len)?));
    let symbols = matches!(symbol_bounds(elf), Ok(Some([Some(_), Some(_)])));
    let info_len = info
        .as_ref()
        .map_or(0, |info| info.end.saturating_sub(info.start));
    if let Some(info) = info
        .as_ref()
        .filter(|_| symbols && info_len <= MAX_BUILD_INFO_BYTES)
    {
        let blob = file_at(info.start, info_len)?;
        let version = parse_build_version(&blob, |addr, len| {
            file_at(segments.range_offset(addr, len, false)?, len)
        });
        if version.as_deref().and_then(go_minor_version).is_some() {
            return Some(vec![info.clone()]);
        }
    }
    let table = TABLE_SECTIONS
        .iter()
        .find_map(|name| elf.section_by_name(name))
        .and_then(|section| section.file_range());
    if let (Some((table_at, table_len)), Some(info)) = (table, info) {
        let header = file_at(table_at, pclntab::HEADER_BYTES)?;
        if let Some(parts) = pclntab::parts_read(&header, table_len) {
            let mut ranges = parts
                .into_iter()
                .map(|part| {
                    Some(table_at.checked_add(part.start)?..table_at.checked_add(part.end)?)
                })
                .collect::<Option<Vec<_>>>()?;
            ranges.push(info);
            return Some(ranges);
        }
    }
    segments
        .iter()
        .filter(|segment| !segment.executable)
        .map(|segment| Some(segment.offset..segment.offset.checked_add(segment.file_size)?))
        .collect()
}

/// [`locate`] on the executable's bytes, within the [standard](Budget::standard) budget.
pub fn locate_in(data: &[u8]) -> Result<Option<GoTlsHooks>, GoLocateError> {
    locate_within(data, &Budget::standard())
}

/// [`locate_in`] within `budget`.
pub fn locate_within(data: &[u8], budget: &Budget) -> Result<Option<GoTlsHooks>, GoLocateError> {
    locate_reading_code(data, budget, &|offset, len| {
        let start = usize::try_from(offset).ok()?;
        data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
            .map(<[u8]>::to_vec)
    })
}

/// `len` bytes at a file offset, from the file: Go's analysis reads its two functions' code and
/// (before Go 1.18) its version string this way, so the caller may leave them unread.
pub type FileAt<'a> = dyn Fn(u64, u64) -> Option<Vec<u8>> + 'a;

/// [`locate_within`], with the functions' code read through `code` (the file's `data` may hold
/// zeros in its code sections).
pub fn locate_reading_code(
    data: &[u8],
    budget: &Budget,
    code: &FileAt<'_>,
) -> Result<Option<GoTlsHooks>, GoLocateError> {
    let Ok(elf) = object::File::parse(data) else {
        return Ok(None);
    };
    let segments = Segments::of(&elf)?;
    // crypto/tls symbols say Go, and the build information which ABI: then the function table
    // is not needed (nor read, see `data_ranges`).
    let symbols = symbol_bounds(&elf)?;
    let early_version = symbols
        .is_some()
        .then(|| build_version(&elf, data, &segments, code))
        .flatten();
    let abi_known = early_version
        .as_deref()
        .and_then(go_minor_version)
        .is_some();
    let pclntab = if symbols.is_some() && abi_known {
        None
    } else {
        match pclntab_bytes(&elf, data, &segments, budget)? {
            Some(table) => Some(table),
            None => return Ok(None),
        }
    };
    if elf.architecture() != Architecture::X86_64 {
        return Err(GoLocateError::Architecture(format!(
            "{:?}",
            elf.architecture()
        )));
    }
    let (bounds, from_symbols) = match (symbols, pclntab) {
        (Some(bounds), _) => (bounds, true),
        (None, Some(pclntab)) => {
            let text = elf.section_by_name(".text").map(|s| s.address());
            let table = Pclntab::parse(pclntab, text)?;
            (
                [
                    table.find(WRITE_FUNCTION, budget)?,
                    table.find(READ_FUNCTION, budget)?,
                ],
                false,
            )
        }
        (None, None) => return Ok(None),
    };
    let [write, read] = match bounds {
        [None, None] => return Ok(None),
        [Some(write), Some(read)] => [write, read],
        [Some(_), None] => {
            return Err(GoLocateError::MissingFunction {
                found: WRITE_FUNCTION,
                missing: READ_FUNCTION,
            })
        }
        [None, Some(_)] => {
            return Err(GoLocateError::MissingFunction {
                found: READ_FUNCTION,
                missing: WRITE_FUNCTION,
            })
        }
    };
    // Only now: a Go program without crypto/tls is no concern, whatever its version.
    let go_version = early_version.or_else(|| build_version(&elf, data, &segments, code));
    let magic = pclntab.and_then(|table| read_u32(table, 0));
    check_register_abi(go_version.as_deref(), magic)?;
    Ok(Some(GoTlsHooks {
        write: probe_points(WRITE_FUNCTION, write, code, &segments)?,
        read: probe_points(READ_FUNCTION, read, code, &segments)?,
        go_version,
        from_symbols,
    }))
}

/// Entry and `RET` file offsets of the function at `bounds` (virtual addresses).
fn probe_points(
    function: &'static str,
    bounds: Range<u64>,
    code_at: &FileAt<'_>,
    segments: &Segments,
) -> Result<GoFunction, GoLocateError> {
    let len = bounds.end.saturating_sub(bounds.start);
    let not_in_file = GoLocateError::NotInFile {
        function,
        address: bounds.start,
        end: bounds.end,
    };
    if len == 0 || len > MAX_FUNCTION_BYTES {
        return Err(not_in_file);
    }
    let Some(entry) = segments.range_offset(bounds.start, len, true) else {
        return Err(not_in_file);
    };
    let code = code_at(entry, len).ok_or(not_in_file)?;
    let returns = find_returns(&code, bounds.start)
        .map_err(|address| GoLocateError::Undecodable { function, address })?;
    if returns.is_empty() {
        return Err(GoLocateError::NoReturn { function });
    }
    // Same segment as the entry: the delta from virtual address to file offset is the same.
    // The RETs lie inside `bounds`, whose file range range_offset found, so none of this can
    // fail; checked all the same, as an error rather than a wrong probe.
    let returns = returns
        .into_iter()
        .map(|addr| {
            addr.checked_sub(bounds.start)
                .and_then(|delta| entry.checked_add(delta))
        })
        .collect::<Option<Vec<u64>>>()
        .ok_or(GoLocateError::NotInFile {
            function,
            address: bounds.start,
            end: bounds.end,
        })?;
    Ok(GoFunction { entry, returns })
}

/// Addresses of the near `RET` instructions in `code`, which starts at virtual address
/// `address`, decoded one instruction after the other from the first byte. Err: the address of
/// an undecodable instruction (then the bounds are wrong and no probe may go in).
pub fn find_returns(code: &[u8], address: u64) -> Result<Vec<u64>, u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut returns = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return Err(instruction.ip());
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    Ok(returns)
}

/// Both functions' bounds from the ELF symbol table; None when it lacks them (stripped).
fn symbol_bounds(elf: &object::File<'_>) -> Result<Option<[Option<Range<u64>>; 2]>, GoLocateError> {
    let (mut write, mut read) = (None, None);
    for symbol in elf.symbols() {
        let (name, slot) = match symbol.name() {
            Ok(WRITE_FUNCTION) => (WRITE_FUNCTION, &mut write),
            Ok(READ_FUNCTION) => (READ_FUNCTION, &mut read),
            _ => continue,
        };
        let (address, size) = (symbol.address(), symbol.size());
        if size > 0 {
            let end = address
                .checked_add(size)
                .ok_or(GoLocateError::SymbolOverflow {
                    name,
                    address,
                    size,
                })?;
            *slot = Some(address..end);
        }
    }
    Ok((write.is_some() || read.is_some()).then_some([write, read]))
}

/// Go builds before 1.17 pass arguments on the stack, where the probes would read garbage.
/// Decided by the version the binary records, else by the pclntab format.
fn check_register_abi(go_version: Option<&str>, magic: Option<u32>) -> Result<(), GoLocateError> {
    match go_version.and_then(go_minor_version) {
        Some(minor) if minor >= 17 => Ok(()),
        Some(_) => Err(GoLocateError::StackAbi(
            go_version.unwrap_or_default().to_string(),
        )),
        None => match magic.and_then(PclntabVersion::from_magic) {
            Some(PclntabVersion::Go118 | PclntabVersion::Go120) => Ok(()),
            // 1.16 and 1.17 share this format, and only 1.17 has the register ABI.
            _ => Err(GoLocateError::StackAbi(
                "a Go build of unknown version older than 1.18".to_string(),
            )),
        },
    }
}

/// `go1.19.8` -> 19; `devel go1.22-abcdef` -> 22; `go1.21rc2` -> 21.
pub fn go_minor_version(version: &str) -> Option<u32> {
    let (_, rest) = version.split_once("go1.")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest.get(..digits)?.parse().ok()
}

/// The pclntab: its section when section headers remain, else found by its header's magic in
/// the non-executable segments.
fn pclntab_bytes<'a>(
    elf: &object::File<'a>,
    data: &'a [u8],
    segments: &Segments,
    budget: &Budget,
) -> Result<Option<&'a [u8]>, GoLocateError> {
    for name in TABLE_SECTIONS {
        if let Some(section) = elf.section_by_name(name) {
            return Ok(Some(section.data()?));
        }
    }
    for region in segments
        .iter()
        .filter(|s| !s.executable)
        .filter_map(|s| s.whole_file_bytes(data))
    {
        if let Some(table) = find_pclntab(region, budget)? {
            return Ok(Some(table));
        }
    }
    Ok(None)
}

/// Go's build information: the `.go.buildinfo` section, else the blob found by its magic. What
/// the blob points at (before Go 1.18) is read through `file_at`: it lies in data the caller
/// may have left unread ([`data_ranges`]).
fn build_version(
    elf: &object::File<'_>,
    data: &[u8],
    segments: &Segments,
    file_at: &FileAt<'_>,
) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    let blob = match elf.section_by_name(".go.buildinfo") {
        Some(section) => section.data().ok()?,
        None => {
            // The blob is 16-byte aligned in its section, and so in the file.
            let at = data.chunks(16).position(|chunk| chunk.starts_with(MAGIC))?;
            data.get(at.checked_mul(16)?..)?
        }
    };
    parse_build_version(blob, |addr, len| {
        file_at(segments.range_offset(addr, len, false)?, len)
    })
}

/// The Go version in a build information blob (Go's `debug/buildinfo` format): since Go 1.18
/// the string follows the 32-byte header, length-prefixed; before, the header points at a Go
/// string header, read through `read_at` (virtual address, length).
pub fn parse_build_version(
    blob: &[u8],
    read_at: impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Option<String> {
    if !blob.starts_with(b"\xff Go buildinf:") {
        return None;
    }
    let ptr_size = *blob.get(14)?;
    let flags = *blob.get(15)?;
    let bytes = if flags & 2 != 0 {
        let (len, used) = read_uvarint(blob.get(32..)?)?;
        let start = used.checked_add(32)?;
        blob.get(start..start.checked_add(usize::try_from(len).ok()?)?)?
            .to_vec()
    } else {
        // Little-endian 64-bit only: the architecture check rejects everything else.
        if ptr_size != 8 || flags & 1 != 0 {
            return None;
        }
        let header_addr = read_u64(blob, 16)?;
        let header = read_at(header_addr, 16)?;
        let (ptr, len) = (read_u64(&header, 0)?, read_u64(&header, 8)?);
        if len > 1024 {
            return None;
        }
        read_at(ptr, len)?
    };
    let version = std::str::from_utf8(&bytes).ok()?;
    (!version.is_empty()).then(|| version.to_string())
}

fn read_uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (shift, (used, &byte)) in (0..64).step_by(7).zip((1..).zip(data)) {
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some((value, used));
        }
    }
    None
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// One line for logs: path, Go version, RET counts and where the bounds came from.
pub fn describe(path: &Path, hooks: &GoTlsHooks) -> String {
    format!(
        "{} ({}, Write with {} RETs, Read with {} RETs, bounds from the {})",
        path.display(),
        hooks.go_version.as_deref().unwrap_or("unknown Go version"),
        hooks.write.returns.len(),
        hooks.read.returns.len(),
        if hooks.from_symbols {
            "symbol table"
        } else {
            "pclntab"
        }
    )
}

#[cfg(test)]
mod tests;
