//! An ELF image seen the way the loader maps it, with just what a symbol-less locator needs:
//! virtual address <-> file offset, the NUL-terminated strings a library's code must reference
//! (error strings, `__func__` names, source-file names), the x86-64 instructions that reference
//! an address RIP-relatively or call it, and function bounds.
//!
//! Everything works from the program headers, not the section headers: `strip` keeps section
//! headers, but `sstrip`-style tools and some packers drop them, while the loader itself only ever
//! reads program headers. Function bounds come from the unwind tables (`.eh_frame`, found through
//! `PT_GNU_EH_FRAME`), which x86-64 binaries keep even when stripped because C++ exceptions, Rust
//! panics and every profiler need them; a binary built without them (Bun) still shows its
//! function entries as the targets of direct calls.
//!
//! Instructions are only ever found by decoding (iced-x86), never by matching bytes of compiled
//! code: byte patterns change with every compiler release, decoded operands do not.

// Addresses, offsets and sizes here are read from files any local user can write: an overflow
// would be a panic (debug) or a wrong probe address (release), so the lint refuses unchecked
// arithmetic rather than a comment promising there is none.
#![deny(clippy::arithmetic_side_effects)]

use std::{ops::Range, sync::OnceLock};

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::{Architecture, Object as _, ObjectSection as _};
use thiserror::Error;

use super::segments::{LayoutError, Segment, Segments};

/// No function in a TLS library comes near this; a larger unwind range means the table is
/// damaged and is ignored.
const MAX_FUNCTION_BYTES: u64 = 1 << 22;
/// C strings the locators anchor on (error strings, source paths) are far shorter.
const MAX_STRING_BYTES: u64 = 4096;
/// How many instructions before an argument load [`Image::call_set_up`] looks for the rest of
/// the call's set-up, and how far past it (bytes) for the call.
const SET_UP_BEFORE: usize = 10;
const SET_UP_AFTER: u64 = 64;

/// The System V x86-64 integer argument registers, in order.
pub const ARGUMENT_REGISTERS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// What the straight-line code around one argument load shows of the call it prepares
/// (see [`Image::call_set_up`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSetUp {
    /// Which argument (0 = the first, `rdi`) the instruction at the site loads.
    pub argument: usize,
    /// The constant each argument register is loaded with there, if any.
    pub constants: [Option<u64>; 6],
}

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("not a readable ELF file: {0}")]
    Elf(#[from] object::read::Error),
    #[error("{0:?} code is not supported: the locator decodes x86-64 instructions")]
    Architecture(Architecture),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("section {name}: address {address:#x} + size {size:#x} overflows 64 bits")]
    SectionOverflow {
        name: &'static str,
        address: u64,
        size: u64,
    },
}

/// How an instruction refers to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XrefKind {
    /// A RIP-relative memory operand (`lea rdx, [rip+x]`, `mov rax, [rip+x]`): how x86-64
    /// position-independent code takes the address of a string or a global; or, in code that
    /// is not position-independent (e.g. node), an immediate operand (`mov edx, 0x2d4fb98`).
    Address,
    /// A direct `call`.
    Call,
    /// A direct `jmp` or conditional jump (tail calls compile to `jmp`).
    Jump,
}

/// One instruction referring to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Xref {
    /// Virtual address of the referring instruction.
    pub from: u64,
    /// The address referred to.
    pub to: u64,
    pub kind: XrefKind,
}

/// A mapped (or read) ELF file. Cheap to create: only the headers are read until a question
/// needs more.
pub struct Image<'a> {
    data: &'a [u8],
    segments: Segments,
    build_id: Option<&'a [u8]>,
    /// `.eh_frame` as a virtual address range, when the section headers name it (the fallback
    /// when there is no `PT_GNU_EH_FRAME`).
    eh_frame_section: Option<Range<u64>>,
    eh_frame_hdr: Option<u64>,
    functions: OnceLock<Vec<Range<u64>>>,
    code_pointers: OnceLock<Vec<(u64, u64)>>,
}

impl<'a> Image<'a> {
    /// Reads the headers of an x86-64 ELF file held in `data` (normally a read-only mmap).
    pub fn parse(data: &'a [u8]) -> Result<Self, ImageError> {
        let elf = object::File::parse(data)?;
        if elf.architecture() != Architecture::X86_64 {
            return Err(ImageError::Architecture(elf.architecture()));
        }
        let segments = Segments::of(&elf)?;
        let eh_frame_section = elf
            .section_by_name(".eh_frame")
            .map(|s| {
                let (address, size) = (s.address(), s.size());
                match address.checked_add(size) {
                    Some(end) => Ok(address..end),
                    None => Err(ImageError::SectionOverflow {
                        name: ".eh_frame",
                        address,
                        size,
                    }),
                }
            })
            .transpose()?;
        Ok(Image {
            data,
            segments,
            build_id: elf.build_id().ok().flatten(),
            eh_frame_section,
            eh_frame_hdr: eh_frame_hdr_address(data),
            functions: OnceLock::new(),
            code_pointers: OnceLock::new(),
        })
    }

    /// The whole file.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The linker's build id (`.note.gnu.build-id`): the same bytes mean the same build, whatever
    /// the file is called or wherever it lives, so it is the best cache key there is.
    pub fn build_id(&self) -> Option<&'a [u8]> {
        self.build_id
    }

    /// The file offset of a virtual address: what a uprobe attaches to.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.file_offset(vaddr)
    }

    /// The virtual address of a file offset (the first loaded segment holding it).
    pub fn vaddr_of(&self, offset: u64) -> Option<u64> {
        self.segments.vaddr_of(offset)
    }

    /// Whether `vaddr` lies in file-backed executable code.
    pub fn is_code(&self, vaddr: u64) -> bool {
        self.segment_of(vaddr).is_some_and(|s| s.executable)
    }

    /// `len` bytes at `vaddr`, when they are all file-backed in one segment.
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let s = self.segment_of(vaddr)?;
        if vaddr.checked_add(len)? > s.file_end() {
            return None;
        }
        let start = usize::try_from(s.offset_of(vaddr)?).ok()?;
        self.data
            .get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }

    fn segment_of(&self, vaddr: u64) -> Option<&Segment> {
        self.segments.containing(vaddr)
    }

    /// The addresses of every occurrence of `text` followed by a NUL in read-only loaded data:
    /// the C string `text`, or a tail of a longer one (linkers merge "SSL_write" into
    /// "ossl_SSL_write"; code taking the address of either points at these bytes).
    pub fn strings(&self, text: &[u8]) -> Vec<u64> {
        let mut needle = Vec::with_capacity(text.len().saturating_add(1));
        needle.extend_from_slice(text);
        needle.push(0);
        let finder = memchr::memmem::Finder::new(&needle);
        let mut found = Vec::new();
        for s in self.segments.iter().filter(|s| !s.writable) {
            let Some(bytes) = self.file_bytes(s) else {
                continue;
            };
            // Within the segment's file bytes, whose end Segments::of checked.
            found.extend(
                finder
                    .find_iter(bytes)
                    .filter_map(|at| s.vaddr.checked_add(at as u64)),
            );
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Like [`strings`](Self::strings), but only strings that start where `text` starts (the
    /// byte before is a NUL): for short names that are tails of unrelated longer strings.
    pub fn whole_strings(&self, text: &[u8]) -> Vec<u64> {
        self.strings(text)
            .into_iter()
            .filter(|at| {
                at.checked_sub(1)
                    .and_then(|before| self.bytes_at(before, 1))
                    .is_none_or(|b| b[0] == 0)
            })
            .collect()
    }

    /// Where the C string holding the byte at `vaddr` starts: after the NUL before it, or at
    /// the start of its segment. Code takes the address of a whole string (a `__FILE__` path),
    /// while [`strings`](Self::strings) finds its tail.
    pub fn string_start(&self, vaddr: u64) -> Option<u64> {
        let s = self.segment_of(vaddr)?;
        let from = vaddr.saturating_sub(MAX_STRING_BYTES).max(s.vaddr);
        let before = self.bytes_at(from, vaddr.checked_sub(from)?)?;
        match before.iter().rposition(|b| *b == 0) {
            Some(nul) => from.checked_add(nul as u64)?.checked_add(1),
            None if from == s.vaddr => Some(from),
            None => None,
        }
    }

    /// Whether the bytes occur anywhere in the file (e.g. a version banner).
    pub fn contains(&self, bytes: &[u8]) -> bool {
        memchr::memmem::find(self.data, bytes).is_some()
    }

    /// Every pointer to code stored in loaded data, as (slot, target): function-pointer tables,
    /// vtables, descriptor structs. In a position-independent file a slot holds nothing until
    /// the loader applies its `R_X86_64_RELATIVE` relocation, whose addend is the target; in a
    /// position-dependent one the slot holds the address itself. Sorted by slot; computed once.
    pub fn code_pointers(&self) -> &[(u64, u64)] {
        self.code_pointers.get_or_init(|| self.find_code_pointers())
    }

    fn find_code_pointers(&self) -> Vec<(u64, u64)> {
        let mut found = Vec::new();
        let relocations = object::File::parse(self.data)
            .ok()
            .and_then(|elf| {
                let relocations: Vec<_> = elf.dynamic_relocations()?.collect();
                Some(relocations)
            })
            .unwrap_or_default();
        for (slot, r) in relocations {
            let relative = matches!(
                r.flags(),
                object::RelocationFlags::Elf { r_type } if r_type == object::elf::R_X86_64_RELATIVE
            );
            let target = r.addend() as u64;
            if relative && self.is_code(target) && !self.is_code(slot) {
                found.push((slot, target));
            }
        }
        if found.is_empty() {
            for s in self.segments.iter().filter(|s| !s.executable) {
                let Some(bytes) = self.file_bytes(s) else {
                    continue;
                };
                // Aligned slots only: a compiler never misaligns a pointer in static data.
                let skip = s.vaddr.wrapping_neg() & 7;
                let words = bytes
                    .get(skip as usize..)
                    .unwrap_or_default()
                    .chunks_exact(8);
                let slots = (0..)
                    .step_by(8)
                    .map_while(|at: u64| s.vaddr.checked_add(skip)?.checked_add(at));
                for (slot, word) in slots.zip(words) {
                    let value = u64::from_le_bytes(word.try_into().unwrap_or_default());
                    if value != 0 && self.is_code(value) {
                        found.push((slot, value));
                    }
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// The little-endian 64-bit word stored at `vaddr` in the file (before relocation).
    pub fn word_at(&self, vaddr: u64) -> Option<u64> {
        let bytes = self.bytes_at(vaddr, 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    fn file_bytes(&self, s: &Segment) -> Option<&'a [u8]> {
        s.file_bytes(self.data)
    }

    /// Every instruction in executable segments that refers to one of `targets`: RIP-relative
    /// operands, direct calls and jumps. One linear decoding pass over all code, so ask for all
    /// targets of an analysis at once. Sorted by `from`.
    ///
    /// Linear decoding can start off an instruction boundary only inside data embedded in code,
    /// which x86-64 compilers do not emit; it resynchronises on the next instruction. Callers
    /// that place probes still check [`is_instruction_boundary`](Self::is_instruction_boundary).
    pub fn references_to(&self, targets: &[u64]) -> Vec<Xref> {
        let mut wanted = targets.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = Vec::new();
        if wanted.is_empty() {
            return found;
        }
        // Without unwind tables, function bounds need a sweep for call targets too: the
        // first sweep does both, which halves a first analysis of such a binary (Bun, Deno).
        let mut starts = self.needs_call_targets().then(Vec::new);
        self.sweep(|instr| {
            if let Some((to, kind)) = reference_of(instr) {
                if kind == XrefKind::Call {
                    if let Some(starts) = starts.as_mut() {
                        starts.push(to);
                    }
                }
                if wanted.binary_search(&to).is_ok() {
                    found.push(Xref {
                        from: instr.ip(),
                        to,
                        kind,
                    });
                }
            }
        });
        if let Some(starts) = starts {
            // Only unset here (needs_call_targets); a concurrent set got the same answer.
            let _ = self.functions.set(self.with_call_targets(starts));
        }
        found
    }

    /// Whether [`functions`](Self::functions) is still to be computed and will come from call
    /// targets (no usable unwind table). Bounds found in the unwind tables are kept.
    fn needs_call_targets(&self) -> bool {
        if self.functions.get().is_some() {
            return false;
        }
        let unwind = self.unwind_functions();
        if !self.covers_most_code(&unwind) {
            return true;
        }
        let _ = self.functions.set(unwind);
        false
    }

    /// Whether unwind-table bounds cover most of the executable bytes. Some executables carry
    /// `.eh_frame` for a small part of their code only (Claude Code's Bun build: 170 kB of
    /// entries for 130 MB of code, none for BoringSSL); there the rest needs call targets.
    fn covers_most_code(&self, functions: &[Range<u64>]) -> bool {
        // Saturating: forged segment sizes may add up past 64 bits.
        let code = self
            .segments
            .iter()
            .filter(|s| s.executable)
            .fold(0u64, |sum, s| sum.saturating_add(s.file_size));
        let covered = functions.iter().fold(0u64, |sum, f| {
            sum.saturating_add(f.end.saturating_sub(f.start))
        });
        covered.saturating_mul(2) >= code
    }

    /// Decodes every executable segment from its start, calling `f` on each instruction.
    fn sweep(&self, mut f: impl FnMut(&Instruction)) {
        for s in self.segments.iter().filter(|s| s.executable) {
            let Some(bytes) = self.file_bytes(s) else {
                continue;
            };
            let mut decoder = Decoder::with_ip(64, bytes, s.vaddr, DecoderOptions::NONE);
            let mut instr = Instruction::default();
            while decoder.can_decode() {
                decoder.decode_out(&mut instr);
                f(&instr);
            }
        }
    }

    /// The instructions of `range`, decoded from its first byte. Stops early at bytes that do
    /// not decode or leave the file.
    pub fn decode(&self, range: Range<u64>) -> Vec<Instruction> {
        let Some(s) = self.segment_of(range.start) else {
            return Vec::new();
        };
        let end = range.end.min(s.file_end());
        let Some(bytes) = self.bytes_at(range.start, end.saturating_sub(range.start)) else {
            return Vec::new();
        };
        let mut decoder = Decoder::with_ip(64, bytes, range.start, DecoderOptions::NONE);
        let mut out = Vec::new();
        let mut instr = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut instr);
            if instr.is_invalid() {
                break;
            }
            out.push(instr);
        }
        out
    }

    /// Direct calls made by the code in `range`: (call instruction, callee).
    pub fn calls_in(&self, range: Range<u64>) -> Vec<(u64, u64)> {
        self.decode(range)
            .iter()
            .filter_map(|i| match reference_of(i) {
                Some((to, XrefKind::Call)) => Some((i.ip(), to)),
                _ => None,
            })
            .collect()
    }

    /// The constant arguments of the call that the instruction at `site` helps set up, when
    /// `site` loads an argument register: read from the straight-line block around it (back to
    /// the previous branch, at most [`SET_UP_BEFORE`] instructions, and forward to the call or
    /// the jump to a call several sites share). Constants are `mov reg, imm`, a RIP-relative
    /// `lea` (position-independent code) and `xor reg, reg` (zero). How a library's error macro
    /// passes, say, a reason code just before its `__FILE__` argument is then read off
    /// `constants[argument - 1]`, whichever registers a given build's signature puts them in.
    pub fn call_set_up(&self, site: u64) -> Option<CallSetUp> {
        let function = self.function_containing(site)?;
        let code = self.decode(function.start..site.saturating_add(SET_UP_AFTER + 192));
        let at = code.iter().position(|i| i.ip() == site)?;
        let argument = argument_index(code.get(at)?.op0_register())?;
        // The set-up starts after the last block end among the SET_UP_BEFORE instructions
        // before the site.
        let window = code.get(at.saturating_sub(SET_UP_BEFORE)..at)?;
        let first = match window.iter().rposition(ends_block) {
            Some(end) => at
                .saturating_sub(window.len())
                .saturating_add(end)
                .saturating_add(1),
            None => at.saturating_sub(window.len()),
        };
        let mut constants = [None; 6];
        for i in code.get(first..)? {
            let past_site = i.ip().saturating_sub(site);
            if i.ip() > site && (ends_block(i) || past_site > SET_UP_AFTER) {
                break;
            }
            if let (Some(value), Some(n)) = (loads_constant(i), argument_index(i.op0_register())) {
                constants[n] = Some(value);
            }
        }
        Some(CallSetUp {
            argument,
            constants,
        })
    }

    /// The bounds of the function holding `vaddr`, from the unwind tables; without them, from
    /// the direct call targets around it (the nearest callee at or below, up to the next one),
    /// which is coarser but still starts at a real entry point.
    pub fn function_containing(&self, vaddr: u64) -> Option<Range<u64>> {
        let functions = self.functions();
        let i = functions.partition_point(|f| f.start <= vaddr);
        let f = functions.get(i.checked_sub(1)?)?;
        f.contains(&vaddr).then(|| f.clone())
    }

    /// The function starting exactly at `vaddr`.
    pub fn function_at(&self, vaddr: u64) -> Option<Range<u64>> {
        self.function_containing(vaddr).filter(|f| f.start == vaddr)
    }

    /// Every known function, sorted by start.
    pub fn functions(&self) -> &[Range<u64>] {
        self.functions.get_or_init(|| {
            let f = self.unwind_functions();
            if self.covers_most_code(&f) {
                return f;
            }
            let mut starts = Vec::new();
            self.sweep(|i| {
                if let Some((to, XrefKind::Call)) = reference_of(i) {
                    starts.push(to);
                }
            });
            self.with_call_targets(starts)
        })
    }

    /// Whether a probe may go at `vaddr`: it must be where an instruction starts when its
    /// function is decoded from the entry. A probe in the middle of an instruction rewrites the
    /// wrong bytes and crashes the traced program, so anything unproven is `false`.
    pub fn is_instruction_boundary(&self, vaddr: u64) -> bool {
        let Some(f) = self.function_containing(vaddr) else {
            return false;
        };
        self.decode(f.start..f.end)
            .iter()
            .take_while(|i| i.ip() <= vaddr)
            .any(|i| i.ip() == vaddr)
    }

    fn unwind_functions(&self) -> Vec<Range<u64>> {
        let Some((eh_vaddr, bytes)) = self.eh_frame_bytes() else {
            return Vec::new();
        };
        use gimli::UnwindSection as _;
        let eh = gimli::EhFrame::new(bytes, gimli::LittleEndian);
        let mut bases = gimli::BaseAddresses::default().set_eh_frame(eh_vaddr);
        if let Some(hdr) = self.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr);
        }
        let mut out = Vec::new();
        let mut entries = eh.entries(&bases);
        // A malformed entry ends the walk: the entries before it are still good.
        while let Ok(Some(entry)) = entries.next() {
            let gimli::CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(gimli::EhFrame::cie_from_offset) else {
                continue;
            };
            let (start, len) = (fde.initial_address(), fde.len());
            let Some(end) = start.checked_add(len) else {
                continue;
            };
            if len > 0 && len <= MAX_FUNCTION_BYTES && self.is_code(start) {
                out.push(start..end);
            }
        }
        out.sort_unstable_by_key(|r| (r.start, r.end));
        out.dedup_by_key(|r| r.start);
        out
    }

    /// `.eh_frame` from `PT_GNU_EH_FRAME` (what the unwinder itself uses), else from the
    /// section headers. Its end is the end of its segment: the table ends with a zero entry.
    fn eh_frame_bytes(&self) -> Option<(u64, &'a [u8])> {
        let from_hdr = self.eh_frame_hdr.and_then(|hdr| {
            let s = self.segment_of(hdr)?;
            let bytes = self.bytes_at(hdr, s.file_end().checked_sub(hdr)?)?;
            let parsed = gimli::EhFrameHdr::new(bytes, gimli::LittleEndian)
                .parse(&gimli::BaseAddresses::default().set_eh_frame_hdr(hdr), 8)
                .ok()?;
            match parsed.eh_frame_ptr() {
                gimli::Pointer::Direct(a) => Some(a),
                gimli::Pointer::Indirect(_) => None,
            }
        });
        let start = from_hdr.or(self.eh_frame_section.as_ref().map(|r| r.start))?;
        let s = self.segment_of(start)?;
        let end = match &self.eh_frame_section {
            Some(r) if r.start == start => r.end.min(s.file_end()),
            _ => s.file_end(),
        };
        Some((start, self.bytes_at(start, end.checked_sub(start)?)?))
    }

    /// Functions from the targets of every direct call, each running to the next one.
    /// The unwind tables' bounds where they have entries, and call-target bounds elsewhere.
    fn with_call_targets(&self, starts: Vec<u64>) -> Vec<Range<u64>> {
        merge_bounds(self.unwind_functions(), self.call_target_functions(starts))
    }

    fn call_target_functions(&self, mut starts: Vec<u64>) -> Vec<Range<u64>> {
        starts.retain(|a| self.is_code(*a));
        starts.sort_unstable();
        starts.dedup();
        starts
            .windows(2)
            .filter_map(|w| match *w {
                // Sorted and deduplicated: the next start is above this one.
                [start, next] if next.saturating_sub(start) <= MAX_FUNCTION_BYTES => {
                    Some(start..next)
                }
                _ => None,
            })
            .collect()
    }
}

/// `exact` bounds (sorted, from unwind tables) completed by `coarse` ones (sorted, from call
/// targets) where `exact` has none: a coarse range starting inside an exact one is dropped, and
/// one running into an exact one is cut where that starts.
fn merge_bounds(exact: Vec<Range<u64>>, coarse: Vec<Range<u64>>) -> Vec<Range<u64>> {
    if exact.is_empty() {
        return coarse;
    }
    let mut out = exact.clone();
    for c in coarse {
        let next = exact.partition_point(|e| e.start <= c.start);
        let inside = next
            .checked_sub(1)
            .and_then(|before| exact.get(before))
            .is_some_and(|e| e.contains(&c.start));
        if inside {
            continue;
        }
        let end = exact.get(next).map_or(c.end, |e| e.start.min(c.end));
        if c.start < end {
            out.push(c.start..end);
        }
    }
    out.sort_unstable_by_key(|r| (r.start, r.end));
    out
}

/// The address an instruction refers to, and how.
fn reference_of(i: &Instruction) -> Option<(u64, XrefKind)> {
    if i.is_ip_rel_memory_operand() {
        return Some((i.ip_rel_memory_address(), XrefKind::Address));
    }
    for n in 0..i.op_count() {
        if matches!(
            i.op_kind(n),
            OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64
        ) {
            // Absolute addresses only fit in 32 bits below 4 GiB (non-PIE code).
            let value = i.immediate(n);
            if value >= 0x1000 {
                return Some((value, XrefKind::Address));
            }
        }
    }
    if i.op_count() == 1 && i.op0_kind() == OpKind::NearBranch64 {
        // A near-branch operand: call, jmp, jcc (and loop/jrcxz, which compilers do not emit).
        let kind = if i.mnemonic() == Mnemonic::Call {
            XrefKind::Call
        } else {
            XrefKind::Jump
        };
        return Some((i.near_branch_target(), kind));
    }
    None
}

/// Which argument a register (or its low 32 bits) carries.
fn argument_index(register: Register) -> Option<usize> {
    let full = match register {
        Register::EDI => Register::RDI,
        Register::ESI => Register::RSI,
        Register::EDX => Register::RDX,
        Register::ECX => Register::RCX,
        Register::R8D => Register::R8,
        Register::R9D => Register::R9,
        other => other,
    };
    ARGUMENT_REGISTERS.iter().position(|a| *a == full)
}

/// The constant an instruction puts in its destination register, if that is all it does.
fn loads_constant(i: &Instruction) -> Option<u64> {
    match i.code() {
        Code::Mov_r32_imm32 => Some(u64::from(i.immediate32())),
        Code::Mov_r64_imm64 => Some(i.immediate64()),
        Code::Mov_rm64_imm32 if i.op0_kind() == OpKind::Register => {
            Some(i.immediate32to64() as u64)
        }
        Code::Lea_r64_m if i.is_ip_rel_memory_operand() => Some(i.ip_rel_memory_address()),
        // Compilers zero a register with xor (e.g. an unused argument).
        Code::Xor_rm32_r32 | Code::Xor_r32_rm32 | Code::Xor_rm64_r64 | Code::Xor_r64_rm64
            if i.op1_kind() == OpKind::Register && i.op0_register() == i.op1_register() =>
        {
            Some(0)
        }
        _ => None,
    }
}

/// Branches, calls, returns and traps: where a straight line of argument set-up ends.
fn ends_block(i: &Instruction) -> bool {
    // Every direct branch (jmp, jcc, call, loop) has a near-branch operand.
    i.op0_kind() == OpKind::NearBranch64
        || matches!(
            i.mnemonic(),
            Mnemonic::Jmp | Mnemonic::Call | Mnemonic::Ret | Mnemonic::Int3 | Mnemonic::Ud2
        )
}

/// `PT_GNU_EH_FRAME`'s address (object does not name this segment type).
fn eh_frame_hdr_address(data: &[u8]) -> Option<u64> {
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    let header = object::elf::FileHeader64::<object::LittleEndian>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_GNU_EH_FRAME)
        .map(|p| p.p_vaddr(endian))
}

#[cfg(test)]
mod tests;
