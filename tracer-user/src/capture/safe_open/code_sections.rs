//! An ELF file's layout from its section headers alone: where its metadata (headers, symbol
//! tables and their strings, dynamic section, notes) and its machine code are. Analysis reads
//! the metadata first, for a Go executable its function table's names and entries and its build
//! information (`locate::go::data_ranges`; the code of its two functions is read alone), and
//! everything only when a locator that disassembles finds its strings. A 99 MB node is then
//! read as its symbol tables, a 90 MB Go binary as 18 MB.

use std::ops::Range;

const SHF_EXECINSTR: u64 = 0x4;
const SHT_NOBITS: u32 = 8;
const ELF64_HEADER_BYTES: u64 = 64;
const SECTION_HEADER_BYTES: u64 = 64;
/// More section headers than any linker writes (a forged count is not followed).
const MAX_SECTIONS: u64 = 1 << 16;

/// Section types read up front: what symbol lookup, imports and section names need.
const METADATA_TYPES: &[u32] = &[
    2,           // SHT_SYMTAB
    3,           // SHT_STRTAB (section names, symbol names)
    5,           // SHT_HASH
    6,           // SHT_DYNAMIC
    7,           // SHT_NOTE (build ids)
    11,          // SHT_DYNSYM
    0x6fff_fff6, // SHT_GNU_HASH
    0x6fff_fffd, // SHT_GNU_verdef
    0x6fff_fffe, // SHT_GNU_verneed
    0x6fff_ffff, // SHT_GNU_versym
];

/// Where an ELF file's parts are (file ranges, each list sorted and merged).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The ELF header, program headers, section headers, and the sections of
    /// [`METADATA_TYPES`].
    pub metadata: Vec<Range<u64>>,
    /// The code sections (executable, with contents in the file).
    pub code: Vec<Range<u64>>,
}

/// The layout of an ELF64 little-endian file of `size` bytes; `read_at(offset, len)` reads the
/// file. `None` whenever the headers are not what a loader would accept: then everything is
/// read. No code range ever covers the ELF header, the program headers or the section headers.
pub fn layout(size: u64, read_at: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Option<Layout> {
    let header = read_at(0, ELF64_HEADER_BYTES as usize)?;
    // ELF, 64-bit, little-endian: what this daemon's architecture runs.
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at =
        |b: &[u8], at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let program_headers = u64_at(&header, 0x20)?;
    let section_headers = u64_at(&header, 0x28)?;
    let program_entry = u64::from(u16_at(&header, 0x36)?);
    let program_count = u64::from(u16_at(&header, 0x38)?);
    let section_entry = u64::from(u16_at(&header, 0x3a)?);
    let mut section_count = u64::from(u16_at(&header, 0x3c)?);
    if section_headers == 0 || section_entry != SECTION_HEADER_BYTES {
        return None;
    }
    if section_count == 0 {
        // Extended numbering: the count is the first section header's size.
        let first = read_at(section_headers, SECTION_HEADER_BYTES as usize)?;
        section_count = u64_at(&first, 0x20)?;
    }
    if section_count == 0 || section_count > MAX_SECTIONS {
        return None;
    }
    let table_bytes = section_count.checked_mul(SECTION_HEADER_BYTES)?;
    let table_end = section_headers.checked_add(table_bytes)?;
    let program_end = program_headers.checked_add(program_entry.checked_mul(program_count)?)?;
    if table_end > size || program_end > size {
        return None;
    }
    let headers = [
        0..ELF64_HEADER_BYTES,
        program_headers..program_end,
        section_headers..table_end,
    ];
    let table = read_at(section_headers, usize::try_from(table_bytes).ok()?)?;
    let mut code = Vec::new();
    let mut metadata = headers.to_vec();
    for entry in table.chunks_exact(SECTION_HEADER_BYTES as usize) {
        let kind = u32_at(entry, 4)?;
        let flags = u64_at(entry, 8)?;
        let offset = u64_at(entry, 0x18)?;
        let len = u64_at(entry, 0x20)?;
        if kind == SHT_NOBITS || len == 0 {
            continue;
        }
        let end = offset.checked_add(len)?.min(size);
        if offset >= end {
            continue;
        }
        if flags & SHF_EXECINSTR != 0 {
            code.push(offset..end);
        } else if METADATA_TYPES.contains(&kind) {
            metadata.push(offset..end);
        }
    }
    // A forged table could name the headers themselves as code: then they would read as zeros.
    if code
        .iter()
        .any(|c| headers.iter().any(|h| c.start < h.end && h.start < c.end))
    {
        return None;
    }
    Some(Layout {
        metadata: merged(metadata),
        code: merged(code),
    })
}

/// `ranges` sorted, overlapping and touching ones joined.
pub fn merged(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// The parts of `0..size` outside `holes` (sorted, merged, within `0..size`).
pub fn between(size: u64, holes: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut parts = Vec::with_capacity(holes.len() + 1);
    let mut at = 0;
    for hole in holes {
        if hole.start > at {
            parts.push(at..hole.start);
        }
        at = at.max(hole.end);
    }
    if at < size {
        parts.push(at..size);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_reader(bytes: &[u8]) -> impl Fn(u64, usize) -> Option<Vec<u8>> + '_ {
        |offset, len| {
            let start = usize::try_from(offset).ok()?;
            bytes
                .get(start..start.checked_add(len)?)
                .map(<[u8]>::to_vec)
        }
    }

    #[test]
    fn a_real_executables_code_sections_are_its_text_plt_and_init() {
        let bytes = std::fs::read("/usr/bin/node").unwrap();
        let Layout { metadata, code } = layout(bytes.len() as u64, file_reader(&bytes)).unwrap();
        let elf = object::File::parse(&*bytes).unwrap();
        use object::{Object as _, ObjectSection as _};
        let text = elf.section_by_name(".text").unwrap().file_range().unwrap();
        assert!(
            code.iter()
                .any(|r| r.start <= text.0 && text.0 + text.1 <= r.end),
            "{code:?} misses .text at {text:?}"
        );
        // The rest is what analysis reads first: the read-only data is not code.
        let rodata = elf
            .section_by_name(".rodata")
            .unwrap()
            .file_range()
            .unwrap();
        assert!(!code
            .iter()
            .any(|r| r.start < rodata.0 + rodata.1 && rodata.0 < r.end));
        let code_bytes: u64 = code.iter().map(|r| r.end - r.start).sum();
        assert!(code_bytes > 10 << 20, "{code_bytes}");
        // The metadata: its dynamic symbols, not its read-only data, and a small part of it.
        let dynsym = elf
            .section_by_name(".dynsym")
            .unwrap()
            .file_range()
            .unwrap();
        assert!(metadata
            .iter()
            .any(|r| r.start <= dynsym.0 && dynsym.0 + dynsym.1 <= r.end));
        assert!(!metadata
            .iter()
            .any(|r| r.start < rodata.0 + rodata.1 && rodata.0 < r.end));
        let metadata_bytes: u64 = metadata.iter().map(|r| r.end - r.start).sum();
        // (node exports V8's symbols too: 18 of its 99 MB.)
        assert!(metadata_bytes < bytes.len() as u64 / 4, "{metadata_bytes}");
    }

    #[test]
    fn headers_that_are_not_a_loaders_mean_read_everything() {
        let mut bytes = std::fs::read("/bin/true").unwrap();
        let size = bytes.len() as u64;
        assert!(!layout(size, file_reader(&bytes)).unwrap().code.is_empty());
        // 32-bit class, a section count past any linker's, and a table past the end.
        for (at, value) in [
            (4usize, &[1u8][..]),
            (0x3c, &[0xff, 0xff]),
            (0x28, &[0xff; 8]),
        ] {
            let mut forged = bytes.clone();
            forged[at..at + value.len()].copy_from_slice(value);
            assert_eq!(layout(size, file_reader(&forged)), None, "at {at:#x}");
        }
        // A section table naming the ELF header as code.
        let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
        let entry = shoff + 64; // the second section header (the first is the null one)
        bytes[entry + 8..entry + 16].copy_from_slice(&SHF_EXECINSTR.to_le_bytes());
        bytes[entry + 4..entry + 8].copy_from_slice(&1u32.to_le_bytes());
        bytes[entry + 0x18..entry + 0x20].copy_from_slice(&0u64.to_le_bytes());
        bytes[entry + 0x20..entry + 0x28].copy_from_slice(&16u64.to_le_bytes());
        assert_eq!(layout(size, file_reader(&bytes)), None);
        assert_eq!(layout(3, file_reader(b"abc")), None);
    }

    #[test]
    fn what_lies_between_the_holes() {
        assert_eq!(between(10, &[]), vec![0..10]);
        assert_eq!(between(10, &[0..3, 5..10]), vec![3..5]);
        assert_eq!(between(10, &[2..4, 6..8]), vec![0..2, 4..6, 8..10]);
    }
}
