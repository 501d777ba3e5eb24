// Test code builds its ELF files with plain arithmetic on constants it chose.
#![allow(clippy::arithmetic_side_effects)]

use super::*;

#[test]
fn call_target_bounds_fill_only_what_unwind_tables_leave_out() {
    let exact = vec![0x100..0x180, 0x400..0x500];
    let coarse = vec![0x80..0x120, 0x120..0x300, 0x300..0x450, 0x500..0x600];
    assert_eq!(
        merge_bounds(exact, coarse),
        vec![
            0x80..0x100,
            0x100..0x180,
            0x300..0x400,
            0x400..0x500,
            0x500..0x600
        ]
    );
    let only_calls = vec![1..2, 2..5];
    assert_eq!(merge_bounds(Vec::new(), only_calls.clone()), only_calls);
}

const BASE: u64 = 0x40_0000;
const CODE: u64 = 0x40_1000;
const HEADERS: u64 = 64 + 2 * 56;
/// Layout of the code segment: an entry calling F and G, F (an error report), G, a string.
const F: u64 = CODE + 0x20;
const G: u64 = CODE + 0x60;
const S: u64 = CODE + 0x80;

/// A minimal x86-64 executable: the headers in a read-only segment, `code` in a
/// read+execute one at [`CODE`].
fn elf(code: &[u8]) -> Vec<u8> {
    elf_with_code_at(code, CODE, HEADERS)
}

/// [`elf`] with the code segment's `p_vaddr` and `p_offset` as given (the bytes still follow
/// the headers): forged headers for the overflow tests.
fn elf_with_code_at(code: &[u8], vaddr: u64, offset: u64) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    for v in [vaddr, 64, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // entry, program headers, no sections
    }
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 2, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let len = code.len() as u64;
    for (flags, offset, vaddr, size) in [(4u32, 0, BASE, HEADERS), (5, offset, vaddr, len)] {
        f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f.extend_from_slice(&flags.to_le_bytes());
        for v in [offset, vaddr, vaddr, size, size, 0x1000] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    }
    assert_eq!(f.len() as u64, HEADERS);
    f.extend_from_slice(code);
    f
}

/// `bytes` at `at` in `code`, then a rel32 to `target` when asked (calls, RIP-relative).
fn put(code: &mut [u8], at: &mut u64, bytes: &[u8], target: Option<u64>) {
    let o = (*at - CODE) as usize;
    code[o..o + bytes.len()].copy_from_slice(bytes);
    *at += bytes.len() as u64;
    if let Some(t) = target {
        let rel = (t as i64 - (*at + 4) as i64) as i32;
        code[o + bytes.len()..o + bytes.len() + 4].copy_from_slice(&rel.to_le_bytes());
        *at += 4;
    }
}

/// F reports an error the way BoringSSL's 2025 `ERR_put_error(lib, 0, reason, file,
/// line)` call does, after a branch that ends the previous block.
fn error_report() -> Vec<u8> {
    let mut code = vec![0xcc; 0xa0];
    let mut at = CODE;
    put(&mut code, &mut at, &[0xe8], Some(F));
    put(&mut code, &mut at, &[0xe8], Some(G));
    put(&mut code, &mut at, &[0xc3], None);
    at = F;
    put(&mut code, &mut at, &[0x41, 0xb9, 7, 0, 0, 0], None); // mov r9d, 7
    put(&mut code, &mut at, &[0x75, 0x00], None); // jne (the next instruction)
    put(&mut code, &mut at, &[0xbf, 0x10, 0, 0, 0], None); // mov edi, 16
    put(&mut code, &mut at, &[0x31, 0xf6], None); // xor esi, esi
    put(&mut code, &mut at, &[0xba, 0xe2, 0, 0, 0], None); // mov edx, 0xe2
    put(&mut code, &mut at, &[0x48, 0x8d, 0x0d], Some(S)); // lea rcx, [rip + S]
    put(&mut code, &mut at, &[0x41, 0xb8, 0x23, 0x01, 0, 0], None); // mov r8d, 0x123
    put(&mut code, &mut at, &[0xe8], Some(G));
    put(&mut code, &mut at, &[0xc3], None);
    at = G;
    put(&mut code, &mut at, &[0xc3], None);
    at = S - 1;
    put(&mut code, &mut at, b"\0src/ssl/ssl_lib.cc\0", None);
    code
}

#[test]
fn call_set_up_reads_the_constant_arguments_around_one_of_them() {
    let data = elf(&error_report());
    let image = Image::parse(&data).unwrap();
    assert_eq!(image.function_containing(F + 8), Some(F..G));
    let lea = F + 6 + 2 + 5 + 2 + 5;
    let file = image.references_to(&[S]);
    assert_eq!(
        file,
        vec![Xref {
            from: lea,
            to: S,
            kind: XrefKind::Address
        }]
    );
    let expected = [Some(16), Some(0), Some(0xe2), Some(S), Some(0x123), None];
    assert_eq!(
        image.call_set_up(lea),
        Some(CallSetUp {
            argument: 3,
            constants: expected
        })
    );
    // From any argument load of the block the same call is seen; r9 is set before the
    // branch, so not for this call.
    let mov_edi = F + 6 + 2;
    assert_eq!(
        image.call_set_up(mov_edi),
        Some(CallSetUp {
            argument: 0,
            constants: expected
        })
    );
    // Neither the call nor code outside any function loads an argument.
    assert_eq!(image.call_set_up(lea + 7 + 6), None);
    assert_eq!(image.call_set_up(CODE), None);
}

#[test]
fn function_bounds_are_the_same_whichever_question_comes_first() {
    let data = elf(&error_report());
    // references_to collects the call targets in its own sweep...
    let swept = Image::parse(&data).unwrap();
    assert_eq!(swept.references_to(&[G]).len(), 2);
    // ...and they are what a sweep of their own gives.
    let own = Image::parse(&data).unwrap();
    assert_eq!(own.functions(), std::slice::from_ref(&(F..G)));
    assert_eq!(swept.functions(), own.functions());
}

#[test]
fn string_start_finds_where_a_found_tail_begins() {
    let data = elf(&error_report());
    let image = Image::parse(&data).unwrap();
    let tails = image.strings(b"ssl/ssl_lib.cc");
    assert_eq!(tails, vec![S + 4]);
    assert_eq!(image.string_start(S + 4), Some(S));
    assert_eq!(image.string_start(S), Some(S));
    // No NUL before it in its segment: the string starts with the segment.
    assert_eq!(image.string_start(BASE + 1), Some(BASE));
    assert_eq!(image.string_start(0x10), None);
}

/// Issue 17 item 11: a program header whose segment runs past 2^64, in its addresses or in its
/// file offsets, makes the file an error that says which header, not an overflow later.
#[test]
fn segments_ending_past_64_bits_are_an_error() {
    let code = error_report();
    for (vaddr, offset, field) in [
        (u64::MAX - 8, HEADERS, "p_vaddr"),
        (CODE, u64::MAX - 8, "p_offset"),
    ] {
        let data = elf_with_code_at(&code, vaddr, offset);
        let error = Image::parse(&data).err().expect("forged segment accepted");
        let ImageError::Layout(LayoutError::SegmentOverflow {
            index,
            field: named,
            ..
        }) = error
        else {
            panic!("{error}");
        };
        assert_eq!((index, named), (1, field));
        assert!(error.to_string().contains("overflows 64 bits"), "{error}");
        // The Go locator reads the same headers and says the same.
        let go = crate::capture::locate::go::locate_in(&data);
        assert!(
            matches!(
                go,
                Err(crate::capture::locate::go::GoLocateError::Layout(_))
            ),
            "{go:?}"
        );
    }
}

/// A segment that ends exactly at the top of the address space is legal: every question about
/// it, and about addresses at and past its end, is answered without overflowing (debug builds,
/// which run these tests, panic on overflow).
#[test]
fn a_segment_at_the_top_of_the_address_space_is_read_without_overflow() {
    let code = error_report();
    let top = u64::MAX - code.len() as u64;
    let data = elf_with_code_at(&code, top, HEADERS);
    let image = Image::parse(&data).unwrap();
    let tail = u64::MAX - 1;
    assert_eq!(image.file_offset(top), Some(HEADERS));
    assert_eq!(image.file_offset(u64::MAX), None);
    assert_eq!(image.vaddr_of(HEADERS), Some(top));
    assert_eq!(image.bytes_at(tail, 1), Some(&code[code.len() - 1..]));
    assert_eq!(image.bytes_at(tail, 2), None);
    assert_eq!(image.word_at(tail), None);
    let strings = image.strings(b"ssl/ssl_lib.cc");
    assert_eq!(strings, vec![top + (S + 4 - CODE)]);
    assert_eq!(image.string_start(strings[0]), Some(top + (S - CODE)));
    assert!(image.whole_strings(b"ssl/ssl_lib.cc").is_empty());
    let _ = image.code_pointers();
    let _ = image.references_to(&[top, tail, u64::MAX]);
    let _ = image.functions();
    assert_eq!(image.function_containing(u64::MAX), None);
    assert!(!image.is_instruction_boundary(u64::MAX));
    assert_eq!(image.call_set_up(tail), None);
    assert_eq!(image.call_set_up(u64::MAX), None);
    let _ = image.decode(tail..u64::MAX);
    let _ = image.calls_in(top..u64::MAX);
}

/// The byte range of section `name`'s header in an ELF file.
fn section_header(data: &[u8], name: &str) -> std::ops::Range<usize> {
    let elf = object::File::parse(data).unwrap();
    let index = elf.section_by_name(name).unwrap().index().0;
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let entsize = u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap()) as usize;
    let at = shoff + index * entsize;
    at..at + entsize
}

/// A real binary (/bin/true) whose `.eh_frame` section header claims an address near 2^64:
/// the section's end cannot be computed, and parsing says so.
#[test]
fn a_section_ending_past_64_bits_is_an_error() {
    let mut data = std::fs::read("/bin/true").unwrap();
    let header = section_header(&data, ".eh_frame");
    // Elf64_Shdr: name, type (u32 each), flags, addr, offset, size (u64 each).
    data[header.start + 16..header.start + 24].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
    let error = Image::parse(&data).err().expect("forged section accepted");
    assert!(
        matches!(
            error,
            ImageError::SectionOverflow {
                name: ".eh_frame",
                address,
                ..
            } if address == u64::MAX - 4
        ),
        "{error}"
    );
}
