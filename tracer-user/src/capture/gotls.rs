//! Go crypto/tls: finding `crypto/tls.(*Conn).Write` and `crypto/tls.(*Conn).Read` in a Go
//! executable and attaching the `go_tls_*` uprobes (tracer-ebpf/src/gotls.rs) to them.
//!
//! Go code must never get uretprobes: a uretprobe replaces the return address on the stack, and
//! Go moves goroutine stacks when it grows them, which then crashes the program. So each function
//! gets a plain uprobe on its entry and one on every `RET` instruction in its body.
//!
//! A body's bounds come from the ELF symbol table when the binary has one, else from Go's own
//! function table (pclntab), which `go build -ldflags="-s -w"` keeps because the runtime needs it
//! for stack unwinding. The `RET`s are found by decoding the body from its first byte with an
//! x86-64 decoder (iced-x86), never by searching for the byte `0xc3`: a probe placed in the middle
//! of an instruction corrupts the traced program.

use std::{ops::Range, path::Path};

use anyhow::Context as _;
use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::{
    Architecture, Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _,
};
use thiserror::Error;

pub const WRITE_FUNCTION: &str = "crypto/tls.(*Conn).Write";
pub const READ_FUNCTION: &str = "crypto/tls.(*Conn).Read";

const WRITE_ENTRY: &str = "go_tls_write_entry";
const WRITE_RETURN: &str = "go_tls_write_return";
const READ_ENTRY: &str = "go_tls_read_entry";
const READ_RETURN: &str = "go_tls_read_return";

/// The kernel programs `attach` uses: the loader loads them once, before any `attach`.
pub const GO_PROGRAMS: &[&str] = &[WRITE_ENTRY, WRITE_RETURN, READ_ENTRY, READ_RETURN];

/// Sections only Go's linker writes: one of them makes a file worth reading whole.
#[cfg(test)]
const GO_SECTIONS: &[&str] = &[
    ".gopclntab",
    ".data.rel.ro.gopclntab",
    ".go.buildinfo",
    ".note.go.buildid",
];

/// No crypto/tls method comes near this; a larger "function" means bounds read wrong.
const MAX_FUNCTION_BYTES: u64 = 1 << 20;

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
}

/// Finds the probe offsets in the executable at `path`. `Ok(None)`: not a Go executable, or one
/// without crypto/tls linked in. (The target resolver maps the file and calls [`locate_in`].)
#[cfg(test)]
pub fn locate(path: &Path) -> Result<Option<GoTlsHooks>, GoLocateError> {
    if !may_be_go(path)? {
        return Ok(None);
    }
    // Read whole only once the headers say Go: the loader asks about every executable it meets.
    let data = std::fs::read(path)?;
    locate_in(&data)
}

/// Cheap look at the headers only (through a read cache, not the whole file).
#[cfg(test)]
fn may_be_go(path: &Path) -> std::io::Result<bool> {
    let cache = object::read::ReadCache::new(std::fs::File::open(path)?);
    let Ok(elf) = object::File::parse(&cache) else {
        return Ok(false);
    };
    let has_section_headers = elf
        .sections()
        .any(|s| s.name().is_ok_and(|n| !n.is_empty()));
    // Without section headers only a scan of the contents can tell.
    Ok(!has_section_headers || GO_SECTIONS.iter().any(|n| elf.section_by_name(n).is_some()))
}

/// [`locate`] on the executable's bytes.
pub fn locate_in(data: &[u8]) -> Result<Option<GoTlsHooks>, GoLocateError> {
    let Ok(elf) = object::File::parse(data) else {
        return Ok(None);
    };
    let segments = load_segments(&elf);
    let Some(pclntab) = pclntab_bytes(&elf, data, &segments)? else {
        return Ok(None);
    };
    if elf.architecture() != Architecture::X86_64 {
        return Err(GoLocateError::Architecture(format!(
            "{:?}",
            elf.architecture()
        )));
    }
    let (bounds, from_symbols) = match symbol_bounds(&elf) {
        Some(bounds) => (bounds, true),
        None => {
            let text = elf.section_by_name(".text").map(|s| s.address());
            let table = Pclntab::parse(pclntab, text)?;
            (
                [table.find(WRITE_FUNCTION)?, table.find(READ_FUNCTION)?],
                false,
            )
        }
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
    let go_version = build_version(&elf, data, &segments);
    let magic = read_u32(pclntab, 0).ok_or(GoLocateError::Pclntab("no header"))?;
    check_register_abi(go_version.as_deref(), magic)?;
    Ok(Some(GoTlsHooks {
        write: probe_points(WRITE_FUNCTION, write, data, &segments)?,
        read: probe_points(READ_FUNCTION, read, data, &segments)?,
        go_version,
        from_symbols,
    }))
}

/// Attaches the four `go_tls_*` programs (already loaded, see [`GO_PROGRAMS`]) at `hooks` in the
/// file at `path`, for every process that runs it. All or nothing: on an error, what was
/// attached is detached again. Returns the number of probes attached.
pub fn attach(ebpf: &mut Ebpf, path: &Path, hooks: &GoTlsHooks) -> anyhow::Result<usize> {
    let mut attached: Vec<(&'static str, UProbeLinkId)> = Vec::new();
    for (program, _, offset) in attach_plan(hooks) {
        let result = go_uprobe(ebpf, program).and_then(|probe| {
            probe
                .attach(
                    UProbeAttachLocation::AbsoluteOffset(offset),
                    path,
                    UProbeScope::AllProcesses,
                )
                .with_context(|| {
                    format!("attaching {program} at {offset:#x} in {}", path.display())
                })
        });
        match result {
            Ok(link) => attached.push((program, link)),
            Err(e) => {
                for (program, link) in attached.into_iter().rev() {
                    if let Ok(probe) = go_uprobe(ebpf, program) {
                        let _ = probe.detach(link);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(attached.len())
}

fn go_uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut UProbe> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing"))?;
    Ok(program.try_into()?)
}

/// (program, Go function, file offset) for every probe, in attach order. Each function's `RET`
/// probes go in before its entry probe: an entry recorded while its returns were not yet probed
/// would never be answered.
pub fn attach_plan(hooks: &GoTlsHooks) -> Vec<(&'static str, &'static str, u64)> {
    let mut plan = Vec::new();
    for (function, name, entry, ret) in [
        (&hooks.write, WRITE_FUNCTION, WRITE_ENTRY, WRITE_RETURN),
        (&hooks.read, READ_FUNCTION, READ_ENTRY, READ_RETURN),
    ] {
        plan.extend(function.returns.iter().map(|&offset| (ret, name, offset)));
        plan.push((entry, name, function.entry));
    }
    plan
}

/// A loadable segment: where its bytes are in the file and in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    vaddr: u64,
    file_offset: u64,
    file_size: u64,
    executable: bool,
}

fn load_segments(elf: &object::File<'_>) -> Vec<Segment> {
    elf.segments()
        .map(|s| {
            let (file_offset, file_size) = s.file_range();
            Segment {
                vaddr: s.address(),
                file_offset,
                file_size,
                executable: s.permissions().executable(),
            }
        })
        .collect()
}

/// The file offset of `addr..addr + len` (virtual addresses), when one segment holds all of it.
///
/// This is the conversion uprobes need. aya 0.14's `UProbeAttachLocation::AbsoluteOffset` is
/// handed unchanged to the kernel as the uprobe's offset, and the kernel reads that as an offset
/// into the *file* (it finds the instruction through the mapping's file page offset), not as a
/// virtual address. Go executables are linked at 0x400000, so the two differ. A `PT_LOAD`
/// program header maps `p_vaddr..p_vaddr + p_filesz` to `p_offset..`, hence
/// `offset = addr - p_vaddr + p_offset`. This is the same translation as aya's
/// `UProbeAttachLocation::from_virtual_address` does with section headers, but program headers
/// are what the loader maps, and they exist even where section headers were stripped.
fn file_offset(segments: &[Segment], addr: u64, len: u64, executable: bool) -> Option<u64> {
    let end = addr.checked_add(len)?;
    segments
        .iter()
        .filter(|s| s.executable || !executable)
        .find(|s| addr >= s.vaddr && end <= s.vaddr.saturating_add(s.file_size))
        .map(|s| addr - s.vaddr + s.file_offset)
}

/// `len` bytes of the file at virtual address `addr`.
fn bytes_at<'a>(data: &'a [u8], segments: &[Segment], addr: u64, len: u64) -> Option<&'a [u8]> {
    let start = usize::try_from(file_offset(segments, addr, len, false)?).ok()?;
    data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
}

/// Entry and `RET` file offsets of the function at `bounds` (virtual addresses).
fn probe_points(
    function: &'static str,
    bounds: Range<u64>,
    data: &[u8],
    segments: &[Segment],
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
    let Some(entry) = file_offset(segments, bounds.start, len, true) else {
        return Err(not_in_file);
    };
    let code = usize::try_from(entry)
        .ok()
        .and_then(|start| data.get(start..start + len as usize))
        .ok_or(not_in_file)?;
    let returns = find_returns(code, bounds.start)
        .map_err(|address| GoLocateError::Undecodable { function, address })?;
    if returns.is_empty() {
        return Err(GoLocateError::NoReturn { function });
    }
    Ok(GoFunction {
        entry,
        // Same segment as the entry: the delta from virtual address to file offset is the same.
        returns: returns
            .into_iter()
            .map(|addr| addr - bounds.start + entry)
            .collect(),
    })
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
fn symbol_bounds(elf: &object::File<'_>) -> Option<[Option<Range<u64>>; 2]> {
    let mut found = [None, None];
    for symbol in elf.symbols() {
        let slot = match symbol.name() {
            Ok(WRITE_FUNCTION) => 0,
            Ok(READ_FUNCTION) => 1,
            _ => continue,
        };
        if symbol.size() > 0 {
            found[slot] = Some(symbol.address()..symbol.address() + symbol.size());
        }
    }
    found.iter().any(Option::is_some).then_some(found)
}

/// Go builds before 1.17 pass arguments on the stack, where the probes would read garbage.
/// Decided by the version the binary records, else by the pclntab format.
fn check_register_abi(go_version: Option<&str>, magic: u32) -> Result<(), GoLocateError> {
    match go_version.and_then(go_minor_version) {
        Some(minor) if minor >= 17 => Ok(()),
        Some(_) => Err(GoLocateError::StackAbi(
            go_version.unwrap_or_default().to_string(),
        )),
        None => match PclntabVersion::from_magic(magic) {
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
    let rest = &version[version.find("go1.")? + 4..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// The pclntab: its section when section headers remain, else found by its header's magic in
/// the non-executable segments.
fn pclntab_bytes<'a>(
    elf: &object::File<'a>,
    data: &'a [u8],
    segments: &[Segment],
) -> Result<Option<&'a [u8]>, GoLocateError> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(section) = elf.section_by_name(name) {
            return Ok(Some(section.data()?));
        }
    }
    Ok(segments
        .iter()
        .filter(|s| !s.executable)
        .filter_map(|s| {
            let start = usize::try_from(s.file_offset).ok()?;
            data.get(start..start.checked_add(usize::try_from(s.file_size).ok()?)?)
        })
        .find_map(find_pclntab))
}

/// Scans `region` for a pclntab header that parses and lists `runtime.main` (every Go program
/// has it): the magic alone also occurs by chance in other data.
pub fn find_pclntab(region: &[u8]) -> Option<&[u8]> {
    region
        .windows(8)
        .enumerate()
        .filter(|(_, w)| PclntabVersion::from_header(w).is_some())
        .map(|(at, _)| &region[at..])
        .find(|candidate| {
            Pclntab::parse(candidate, None)
                .ok()
                .and_then(|t| t.find("runtime.main").ok().flatten())
                .is_some()
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PclntabVersion {
    /// Go 1.16 and 1.17: absolute entry addresses, no text start in the header.
    Go116,
    /// Go 1.18 and 1.19: 32-bit entry offsets from the text start.
    Go118,
    /// Go 1.20 and later: same layout as 1.18.
    Go120,
}

impl PclntabVersion {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffa => Some(Self::Go116),
            0xffff_fff0 => Some(Self::Go118),
            0xffff_fff1 => Some(Self::Go120),
            _ => None,
        }
    }

    /// The first 8 header bytes: magic, two zero pad bytes, instruction size quantum (1 on
    /// x86) and pointer size (8).
    fn from_header(header: &[u8]) -> Option<Self> {
        let version = Self::from_magic(read_u32(header, 0)?)?;
        (header.get(4..8)? == [0, 0, 1, 8]).then_some(version)
    }
}

/// A parsed pclntab header (Go's `runtime.pcHeader`): enough to look functions up by name.
pub struct Pclntab<'a> {
    data: &'a [u8],
    version: PclntabVersion,
    nfunc: usize,
    /// Added to the 1.18+ entry offsets.
    text_start: u64,
    funcnametab: usize,
    functab: usize,
}

impl<'a> Pclntab<'a> {
    /// `text_section`: the `.text` address, used when the header's text start is zero (left
    /// for a dynamic relocation to fill in).
    pub fn parse(data: &'a [u8], text_section: Option<u64>) -> Result<Self, GoLocateError> {
        let version = data
            .get(..8)
            .and_then(PclntabVersion::from_header)
            .ok_or(GoLocateError::Pclntab("not a 64-bit x86 pclntab header"))?;
        let word = |index: usize| {
            read_u64(data, 8 + 8 * index).ok_or(GoLocateError::Pclntab("truncated header"))
        };
        let offset = |index: usize| -> Result<usize, GoLocateError> {
            usize::try_from(word(index)?)
                .ok()
                .filter(|&o| o < data.len())
                .ok_or(GoLocateError::Pclntab("table offset out of range"))
        };
        let nfunc = usize::try_from(word(0)?)
            .ok()
            .filter(|&n| n > 0 && n < 10_000_000)
            .ok_or(GoLocateError::Pclntab("implausible function count"))?;
        let (text_start, funcnametab, functab) = match version {
            PclntabVersion::Go116 => (0, offset(2)?, offset(6)?),
            PclntabVersion::Go118 | PclntabVersion::Go120 => {
                let from_header = word(2)?;
                let text_start = if from_header != 0 {
                    from_header
                } else {
                    text_section.ok_or(GoLocateError::Pclntab("unknown text start"))?
                };
                (text_start, offset(3)?, offset(7)?)
            }
        };
        let table = Pclntab {
            data,
            version,
            nfunc,
            text_start,
            funcnametab,
            functab,
        };
        // nfunc (entry, func) pairs and the end-of-text entry.
        let table_end = (2 * nfunc + 1)
            .checked_mul(table.field_size())
            .and_then(|size| functab.checked_add(size));
        if table_end.is_none_or(|end| end > data.len()) {
            return Err(GoLocateError::Pclntab("function table out of range"));
        }
        Ok(table)
    }

    /// Bytes per function table field: 1.16 stores addresses, 1.18+ 32-bit offsets.
    fn field_size(&self) -> usize {
        match self.version {
            PclntabVersion::Go116 => 8,
            PclntabVersion::Go118 | PclntabVersion::Go120 => 4,
        }
    }

    fn field(&self, at: usize) -> Option<u64> {
        match self.version {
            PclntabVersion::Go116 => read_u64(self.data, at),
            PclntabVersion::Go118 | PclntabVersion::Go120 => read_u32(self.data, at).map(u64::from),
        }
    }

    /// Virtual address of the function table's entry `index` (`index == nfunc`: end of text).
    fn entry(&self, index: usize) -> Option<u64> {
        let raw = self.field(self.functab + 2 * index * self.field_size())?;
        match self.version {
            PclntabVersion::Go116 => Some(raw),
            PclntabVersion::Go118 | PclntabVersion::Go120 => self.text_start.checked_add(raw),
        }
    }

    fn name(&self, index: usize) -> Option<&'a [u8]> {
        let size = self.field_size();
        let func = self.field(self.functab + (2 * index + 1) * size)?;
        // The `_func` record: entry (one field), then `nameOff int32` into the name table.
        let name_off_at = self.functab.checked_add(usize::try_from(func).ok()?)? + size;
        let name_off = usize::try_from(read_u32(self.data, name_off_at)? as i32).ok()?;
        let names = self.data.get(self.funcnametab.checked_add(name_off)?..)?;
        names.split(|&b| b == 0).next()
    }

    /// Bounds of the function called `name`: from its entry to the next function's, so they
    /// include the padding after it (Go pads with INT3, which decodes).
    pub fn find(&self, name: &str) -> Result<Option<Range<u64>>, GoLocateError> {
        for index in 0..self.nfunc {
            if self.name(index) != Some(name.as_bytes()) {
                continue;
            }
            let (Some(start), Some(end)) = (self.entry(index), self.entry(index + 1)) else {
                return Err(GoLocateError::Pclntab("function entry out of range"));
            };
            if end <= start {
                return Err(GoLocateError::Pclntab("function table not sorted"));
            }
            return Ok(Some(start..end));
        }
        Ok(None)
    }
}

/// Go's build information: the `.go.buildinfo` section, else the blob found by its magic.
fn build_version(elf: &object::File<'_>, data: &[u8], segments: &[Segment]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    let blob = match elf.section_by_name(".go.buildinfo") {
        Some(section) => section.data().ok()?,
        None => {
            // The blob is 16-byte aligned in its section, and so in the file.
            let at = data.chunks(16).position(|chunk| chunk.starts_with(MAGIC))?;
            &data[at * 16..]
        }
    };
    parse_build_version(blob, |addr, len| bytes_at(data, segments, addr, len))
}

/// The Go version in a build information blob (Go's `debug/buildinfo` format): since Go 1.18
/// the string follows the 32-byte header, length-prefixed; before, the header points at a Go
/// string header, read through `read_at` (virtual address, length).
pub fn parse_build_version<'a>(
    blob: &'a [u8],
    read_at: impl Fn(u64, u64) -> Option<&'a [u8]>,
) -> Option<String> {
    if !blob.starts_with(b"\xff Go buildinf:") {
        return None;
    }
    let ptr_size = *blob.get(14)?;
    let flags = *blob.get(15)?;
    let bytes = if flags & 2 != 0 {
        let (len, used) = read_uvarint(blob.get(32..)?)?;
        let start = 32 + used;
        blob.get(start..start.checked_add(usize::try_from(len).ok()?)?)?
    } else {
        // Little-endian 64-bit only: the architecture check rejects everything else.
        if ptr_size != 8 || flags & 1 != 0 {
            return None;
        }
        let header_addr = read_u64(blob, 16)?;
        let header = read_at(header_addr, 16)?;
        let (ptr, len) = (read_u64(header, 0)?, read_u64(header, 8)?);
        if len > 1024 {
            return None;
        }
        read_at(ptr, len)?
    };
    let version = std::str::from_utf8(bytes).ok()?;
    (!version.is_empty()).then(|| version.to_string())
}

fn read_uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
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
mod tests {
    use std::{path::PathBuf, process::Command, sync::OnceLock};

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

    #[test]
    fn pclntab_bounds_agree_with_the_symbol_table() {
        let data = std::fs::read(&built().plain).unwrap();
        let elf = object::File::parse(&data[..]).unwrap();
        let segments = load_segments(&elf);
        let table = pclntab_bytes(&elf, &data, &segments).unwrap().unwrap();
        let text = elf.section_by_name(".text").map(|s| s.address());
        let table = Pclntab::parse(table, text).unwrap();
        let [Some(write), Some(read)] = symbol_bounds(&elf).unwrap() else {
            panic!("symbols missing");
        };
        for (name, symbol) in [(WRITE_FUNCTION, write), (READ_FUNCTION, read)] {
            let found = table.find(name).unwrap().unwrap();
            assert_eq!(found.start, symbol.start, "{name}");
            // The pclntab's end is the next function's entry: padding included.
            assert!(
                found.end >= symbol.end && found.end - symbol.end < 64,
                "{name}"
            );
        }
        assert!(table.find("runtime.main").unwrap().is_some());
        assert_eq!(table.find("no.such.function").unwrap(), None);
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
        assert!(check_register_abi(Some("go1.17"), 0xffff_fffa).is_ok());
        assert!(matches!(
            check_register_abi(Some("go1.16.15"), 0xffff_fffa),
            Err(GoLocateError::StackAbi(_))
        ));
        assert!(check_register_abi(None, 0xffff_fff1).is_ok());
        assert!(check_register_abi(None, 0xffff_fffa).is_err());
        assert!(check_register_abi(None, 0xffff_fffb).is_err());
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
        let memory = |addr: u64, len: u64| -> Option<&[u8]> {
            match (addr, len) {
                (0x5000, 16) => Some(&header[..]),
                (0x6000, 9) => Some(&b"go1.17.13"[..]),
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

    #[test]
    fn return_probes_go_in_before_their_entry() {
        let hooks = GoTlsHooks {
            write: GoFunction {
                entry: 0x100,
                returns: vec![0x150, 0x180],
            },
            read: GoFunction {
                entry: 0x200,
                returns: vec![0x260],
            },
            go_version: None,
            from_symbols: true,
        };
        let (w, r) = (WRITE_FUNCTION, READ_FUNCTION);
        assert_eq!(
            attach_plan(&hooks),
            vec![
                (WRITE_RETURN, w, 0x150),
                (WRITE_RETURN, w, 0x180),
                (WRITE_ENTRY, w, 0x100),
                (READ_RETURN, r, 0x260),
                (READ_ENTRY, r, 0x200),
            ]
        );
        for (program, _, _) in attach_plan(&hooks) {
            assert!(GO_PROGRAMS.contains(&program));
        }
    }

    #[test]
    fn file_offsets_need_one_segment_holding_the_whole_range() {
        let segments = [
            Segment {
                vaddr: 0x40_0000,
                file_offset: 0,
                file_size: 0x1000,
                executable: true,
            },
            Segment {
                vaddr: 0x60_0000,
                file_offset: 0x1000,
                file_size: 0x100,
                executable: false,
            },
        ];
        assert_eq!(file_offset(&segments, 0x40_0010, 0x10, true), Some(0x10));
        assert_eq!(file_offset(&segments, 0x40_0ff0, 0x20, true), None);
        assert_eq!(file_offset(&segments, 0x60_0010, 0x10, true), None);
        assert_eq!(file_offset(&segments, 0x60_0010, 0x10, false), Some(0x1010));
        assert_eq!(file_offset(&segments, u64::MAX, 2, false), None);
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
                let _ = t.find("runtime.main");
            }
            let _ = find_pclntab(&table);
            let _ = parse_build_version(&bytes, |_, _| None);
        }
    }
}
