//! Go's function table (pclntab, the runtime's `pcHeader` and what follows it): enough of it to
//! find a function's bounds by name in a binary without symbols, and to find the table itself by
//! its header's magic where section headers are gone.

// Addresses, offsets and sizes here are read from files any local user can write: an overflow
// would be a panic (debug) or a wrong probe address (release), so the lint refuses unchecked
// arithmetic rather than a comment promising there is none.
#![deny(clippy::arithmetic_side_effects)]

use std::ops::Range;

use super::{read_u32, read_u64, Budget, GoLocateError};

/// Functions a table may claim: the largest Go programs have a few hundred thousand.
const MAX_FUNCTIONS: usize = 4_000_000;
/// Longest function name compared: Go's longest (generic instantiations) are a few hundred
/// bytes; a "name" without its NUL within this is no name.
const MAX_NAME_BYTES: usize = 4096;
/// Headers that parse, tried as the table in one region: a real binary has one; a file full of
/// forged headers must not make the scan quadratic.
const MAX_CANDIDATES: usize = 16;

/// Scans `region` for a pclntab header that parses and lists `runtime.main` (every Go program
/// has it): the magic alone also occurs by chance in other data. Each walk spends `budget`.
pub fn find_pclntab<'a>(
    region: &'a [u8],
    budget: &Budget,
) -> Result<Option<&'a [u8]>, GoLocateError> {
    let mut tried = 0usize;
    for (at, _) in region
        .windows(8)
        .enumerate()
        .filter(|(_, w)| PclntabVersion::from_header(w).is_some())
    {
        let candidate = &region[at..];
        let Ok(table) = Pclntab::parse(candidate, None) else {
            continue;
        };
        tried = tried.saturating_add(1);
        if tried > MAX_CANDIDATES {
            return Err(GoLocateError::Budget(format!(
                "more than {MAX_CANDIDATES} candidate function tables"
            )));
        }
        match table.find("runtime.main", budget) {
            Ok(Some(_)) => return Ok(Some(candidate)),
            Err(e @ GoLocateError::Budget(_)) => return Err(e),
            _ => {}
        }
    }
    Ok(None)
}

/// Bytes of the largest header (1.18+: magic word and eight fields).
pub const HEADER_BYTES: u64 = 72;

/// The parts of a pclntab of `len` bytes that [`Pclntab::find`] reads, as offsets in it, from
/// its `header`: the header, the function names and the function table with its `_func`
/// records. Go's linker writes the compilation-unit, file and pc-value tables between the names
/// and the functions; `None` when the header's offsets are not in that order.
pub fn parts_read(header: &[u8], len: u64) -> Option<[Range<u64>; 3]> {
    let version = PclntabVersion::from_header(header.get(..8)?)?;
    let field = |index: u64| {
        read_u64(
            header,
            usize::try_from(index.checked_mul(8)?.checked_add(8)?).ok()?,
        )
    };
    // Field indices of the name table, the table after it, the function table, and the
    // header's own size.
    let (names, units, functions, header_bytes) = match version {
        PclntabVersion::Go116 => (field(2)?, field(3)?, field(6)?, 64),
        PclntabVersion::Go118 | PclntabVersion::Go120 => (field(3)?, field(4)?, field(7)?, 72),
    };
    (header_bytes <= names && names <= units && units <= functions && functions < len).then_some([
        0..header_bytes,
        names..units,
        functions..len,
    ])
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
    pub(super) fn from_magic(magic: u32) -> Option<Self> {
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
            index
                .checked_mul(8)
                .and_then(|at| at.checked_add(8))
                .and_then(|at| read_u64(data, at))
                .ok_or(GoLocateError::Pclntab("truncated header"))
        };
        let offset = |index: usize| -> Result<usize, GoLocateError> {
            usize::try_from(word(index)?)
                .ok()
                .filter(|&o| o < data.len())
                .ok_or(GoLocateError::Pclntab("table offset out of range"))
        };
        let nfunc = usize::try_from(word(0)?)
            .ok()
            .filter(|&n| n > 0 && n <= MAX_FUNCTIONS)
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
        let table_end = nfunc
            .checked_mul(2)
            .and_then(|fields| fields.checked_add(1))
            .and_then(|fields| fields.checked_mul(table.field_size()))
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

    /// Where field `n` of the function table is (entries are even, `_func` offsets odd).
    fn field_at(&self, n: usize) -> Option<usize> {
        self.functab.checked_add(n.checked_mul(self.field_size())?)
    }

    /// Virtual address of the function table's entry `index` (`index == nfunc`: end of text).
    fn entry(&self, index: usize) -> Option<u64> {
        let raw = self.field(self.field_at(index.checked_mul(2)?)?)?;
        match self.version {
            PclntabVersion::Go116 => Some(raw),
            PclntabVersion::Go118 | PclntabVersion::Go120 => self.text_start.checked_add(raw),
        }
    }

    fn name(&self, index: usize) -> Option<&'a [u8]> {
        let func = self.field(self.field_at(index.checked_mul(2)?.checked_add(1)?)?)?;
        // The `_func` record: entry (one field), then `nameOff int32` into the name table.
        let name_off_at = self
            .functab
            .checked_add(usize::try_from(func).ok()?)?
            .checked_add(self.field_size())?;
        let name_off = usize::try_from(read_u32(self.data, name_off_at)? as i32).ok()?;
        let names = self.data.get(self.funcnametab.checked_add(name_off)?..)?;
        let names = names.get(..names.len().min(MAX_NAME_BYTES.saturating_add(1)))?;
        let end = memchr::memchr(0, names)?;
        names.get(..end)
    }

    /// Bounds of the function called `name`: from its entry to the next function's, so they
    /// include the padding after it (Go pads with INT3, which decodes).
    pub fn find(&self, name: &str, budget: &Budget) -> Result<Option<Range<u64>>, GoLocateError> {
        for index in 0..self.nfunc {
            budget.step()?;
            if self.name(index) != Some(name.as_bytes()) {
                continue;
            }
            let next = index.checked_add(1);
            let (Some(start), Some(end)) = (self.entry(index), next.and_then(|n| self.entry(n)))
            else {
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
