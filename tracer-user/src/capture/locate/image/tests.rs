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
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    for v in [CODE, 64, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // entry, program headers, no sections
    }
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 2, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let len = code.len() as u64;
    for (flags, offset, vaddr, size) in [(4u32, 0, BASE, HEADERS), (5, HEADERS, CODE, len)] {
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
