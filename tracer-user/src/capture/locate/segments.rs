//! An ELF file's loadable segments (`PT_LOAD`) and the translation between virtual addresses
//! and file offsets they define, written once for every locator (the symbol-less [`Image`]
//! analyses and the Go locator).
//!
//! Program headers, not section headers: they are what the loader maps, and they exist even
//! where section headers were stripped. A segment maps `vaddr..vaddr + file_size` to
//! `offset..offset + file_size`; the rest of its memory size is zero-filled and has no offset.
//!
//! [`Image`]: super::image::Image

// Addresses, offsets and sizes here are read from files any local user can write: an overflow
// would be a panic (debug) or a wrong probe address (release), so the lint refuses unchecked
// arithmetic rather than a comment promising there is none.
#![deny(clippy::arithmetic_side_effects)]

use std::ops::Range;

use object::{Object as _, ObjectSegment as _};
use thiserror::Error;

/// A program header whose numbers describe no place in a file or in memory: the kernel would not
/// load such a file, and no address in it can be translated.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("program header {index}: {field} {start:#x} + p_filesz {size:#x} overflows 64 bits")]
    SegmentOverflow {
        index: usize,
        /// `p_vaddr` or `p_offset`.
        field: &'static str,
        start: u64,
        size: u64,
    },
}

/// A loaded segment: where its bytes are in the file and in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    /// File offset of its first byte.
    pub offset: u64,
    /// File-backed bytes (`p_filesz`).
    pub file_size: u64,
    pub executable: bool,
    pub writable: bool,
}

impl Segment {
    fn check(&self, index: usize) -> Result<(), LayoutError> {
        for (field, start) in [("p_vaddr", self.vaddr), ("p_offset", self.offset)] {
            if start.checked_add(self.file_size).is_none() {
                return Err(LayoutError::SegmentOverflow {
                    index,
                    field,
                    start,
                    size: self.file_size,
                });
            }
        }
        Ok(())
    }

    /// The virtual addresses whose bytes are in the file.
    pub fn file_vaddrs(&self) -> Range<u64> {
        self.vaddr..self.file_end()
    }

    /// One past the last file-backed virtual address. [`Segments::of`] refused segments where
    /// this overflows; saturating keeps a hand-built one in tests from panicking all the same.
    pub fn file_end(&self) -> u64 {
        self.vaddr.saturating_add(self.file_size)
    }

    /// The file offset of `vaddr`, when this segment's file-backed bytes hold it.
    pub fn offset_of(&self, vaddr: u64) -> Option<u64> {
        if !self.file_vaddrs().contains(&vaddr) {
            return None;
        }
        self.offset.checked_add(vaddr.checked_sub(self.vaddr)?)
    }

    /// The virtual address of file offset `offset`, when this segment's bytes hold it.
    fn vaddr_of(&self, offset: u64) -> Option<u64> {
        let delta = offset.checked_sub(self.offset)?;
        (delta < self.file_size).then_some(())?;
        self.vaddr.checked_add(delta)
    }

    /// The segment's bytes in `data`, cut short where the file ends.
    pub fn file_bytes<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.offset).ok()?;
        let end = start.checked_add(usize::try_from(self.file_size).ok()?)?;
        data.get(start..end.min(data.len()))
    }

    /// The segment's bytes in `data`; `None` when the file ends before the segment does.
    pub fn whole_file_bytes<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.offset).ok()?;
        data.get(start..start.checked_add(usize::try_from(self.file_size).ok()?)?)
    }
}

/// The loadable segments of one file, in program-header order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segments(Vec<Segment>);

impl Segments {
    /// The file's `PT_LOAD` segments; an error when one of them ends past the 64-bit address or
    /// offset space (a forged header: every translation through it would overflow).
    pub fn of(elf: &object::File<'_>) -> Result<Self, LayoutError> {
        elf.segments()
            .enumerate()
            .map(|(index, s)| {
                let (offset, file_size) = s.file_range();
                let permissions = s.permissions();
                let segment = Segment {
                    vaddr: s.address(),
                    offset,
                    file_size,
                    executable: permissions.executable(),
                    writable: permissions.writable(),
                };
                segment.check(index)?;
                Ok(segment)
            })
            .collect::<Result<_, _>>()
            .map(Segments)
    }

    #[cfg(test)]
    pub fn new(segments: Vec<Segment>) -> Self {
        Segments(segments)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Segment> {
        self.0.iter()
    }

    /// The first segment whose file-backed bytes hold `vaddr`.
    pub fn containing(&self, vaddr: u64) -> Option<&Segment> {
        self.0.iter().find(|s| s.file_vaddrs().contains(&vaddr))
    }

    /// The file offset of a virtual address: what a uprobe attaches to.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.containing(vaddr)?.offset_of(vaddr)
    }

    /// The file offset of `vaddr..vaddr + len`, when one segment (an executable one, if
    /// `executable`) holds all of it.
    ///
    /// This is the conversion uprobes need. aya 0.14's `UProbeAttachLocation::AbsoluteOffset`
    /// is handed unchanged to the kernel as the uprobe's offset, and the kernel reads that as an
    /// offset into the *file* (it finds the instruction through the mapping's file page offset),
    /// not as a virtual address. Executables linked at a fixed address (Go's at 0x400000) show
    /// the difference: `offset = vaddr - p_vaddr + p_offset`. This is the translation aya's
    /// `UProbeAttachLocation::from_virtual_address` does with section headers.
    pub fn range_offset(&self, vaddr: u64, len: u64, executable: bool) -> Option<u64> {
        let end = vaddr.checked_add(len)?;
        self.0
            .iter()
            .filter(|s| s.executable || !executable)
            .find(|s| vaddr >= s.vaddr && end <= s.file_end())
            .and_then(|s| s.offset_of(vaddr))
    }

    /// The virtual address of a file offset (the first loaded segment holding it).
    pub fn vaddr_of(&self, offset: u64) -> Option<u64> {
        self.0.iter().find_map(|s| s.vaddr_of(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_offsets_need_one_segment_holding_the_whole_range() {
        let segments = Segments::new(vec![
            Segment {
                vaddr: 0x40_0000,
                offset: 0,
                file_size: 0x1000,
                executable: true,
                writable: false,
            },
            Segment {
                vaddr: 0x60_0000,
                offset: 0x1000,
                file_size: 0x100,
                executable: false,
                writable: false,
            },
        ]);
        assert_eq!(segments.range_offset(0x40_0010, 0x10, true), Some(0x10));
        assert_eq!(segments.range_offset(0x40_0ff0, 0x20, true), None);
        assert_eq!(segments.range_offset(0x60_0010, 0x10, true), None);
        assert_eq!(segments.range_offset(0x60_0010, 0x10, false), Some(0x1010));
        assert_eq!(segments.range_offset(u64::MAX, 2, false), None);
    }

    #[test]
    fn translations_at_the_edges_of_the_address_space() {
        let top = Segment {
            vaddr: u64::MAX - 0x10,
            offset: u64::MAX - 0x20,
            file_size: 0x10,
            executable: true,
            writable: false,
        };
        let segments = Segments::new(vec![top]);
        assert_eq!(segments.file_offset(u64::MAX - 1), Some(u64::MAX - 0x11));
        assert_eq!(segments.file_offset(u64::MAX), None);
        assert_eq!(segments.vaddr_of(u64::MAX - 0x11), Some(u64::MAX - 1));
        assert_eq!(segments.vaddr_of(u64::MAX - 0x10), None);
        assert_eq!(
            segments.range_offset(u64::MAX - 0x10, 0x10, true),
            Some(u64::MAX - 0x20)
        );
        assert_eq!(segments.range_offset(u64::MAX - 0x10, 0x11, true), None);
        assert_eq!(top.file_bytes(&[0; 16]), None);
    }
}
