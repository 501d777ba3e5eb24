//! BoringSSL linked into a stripped executable (Bun and the programs `bun build --compile`
//! makes): finding `SSL_write` and `SSL_read` without symbols.
//!
//! The anchors are what BoringSSL's own source makes every build contain. Each
//! `OPENSSL_PUT_ERROR(SSL, reason)` in `ssl/ssl_lib.cc` becomes a call to `ERR_put_error` with the
//! library number (`ERR_LIB_SSL`, 16), the reason code and `__FILE__`, a path ending in
//! `ssl/ssl_lib.cc` (OpenSSL's file is `ssl_lib.c`). Reason codes are part of BoringSSL's ABI and
//! never renumbered; line numbers and the path prefix change with every release, so neither is
//! used. In `ssl_lib.cc`:
//!
//! - `SSL_write` raises `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` (QUIC connections),
//!   `SSL_R_UNINITIALIZED` and `SSL_R_BAD_LENGTH`; no other function raises all three.
//! - `SSL_read` is `SSL_peek` (which raises `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`) plus consuming
//!   the bytes; both call `ssl_read_impl`, which raises `SSL_R_UNINITIALIZED` and
//!   `SSL_R_SSL_HANDSHAKE_FAILURE` but never `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`. Bun never
//!   peeks, so its link drops `SSL_peek` and inlines it into `SSL_read`: the one function that
//!   raises `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` and calls (or inlines) `ssl_read_impl`.
//!
//! Which register carries the reason depends on `ERR_put_error`'s signature, which changed
//! (`(library, reason, file, line)` in 2024 builds, `(library, unused, reason, file, line)` in
//! 2025 ones): the reason is the argument just before the file, whichever register that is.
//! BoringSSL has no `SSL_write_ex`/`SSL_read_ex`.

use std::collections::{BTreeMap, BTreeSet};

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::{Object as _, ObjectSection as _, SectionKind};
use thiserror::Error;

/// `__FILE__` of BoringSSL's SSL API (the `.cc` tells it from OpenSSL's `ssl_lib.c`).
const SSL_LIB_FILE: &[u8] = b"ssl/ssl_lib.cc\0";
const ERR_LIB_SSL: u64 = 16;
const ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED: u64 = 66;
const SSL_R_BAD_LENGTH: u64 = 111;
const SSL_R_SSL_HANDSHAKE_FAILURE: u64 = 215;
const SSL_R_UNINITIALIZED: u64 = 226;

/// How many instructions around a reference to the file name may set up the rest of the call.
const ARGUMENT_WINDOW: usize = 10;
/// No SSL_* function comes near this; decoding further means the bounds were read wrong.
const MAX_FUNCTION_BYTES: u64 = 64 * 1024;

/// File offsets (what uprobes attach to) of the two functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoringSslHooks {
    pub ssl_write: u64,
    pub ssl_read: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BoringLocateError {
    #[error("malformed ELF file: {0}")]
    Elf(String),
    #[error("only x86-64 code is decoded")]
    Architecture,
    #[error("BoringSSL's ssl_lib.cc is referenced by no error report that could be read")]
    NoErrorReports,
    #[error("{what}: {count} functions match BoringSSL's error reports, expected one")]
    NotUnique { what: &'static str, count: usize },
}

/// Finds `SSL_write` and `SSL_read`. `Ok(None)`: no BoringSSL in this file.
pub fn locate(data: &[u8]) -> Result<Option<BoringSslHooks>, BoringLocateError> {
    let elf = object::File::parse(data).map_err(|e| BoringLocateError::Elf(e.to_string()))?;
    let Some(file_names) = file_name_addresses(&elf, data) else {
        return Ok(None);
    };
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(BoringLocateError::Architecture);
    }
    let text = Text::of(&elf)?;
    let starts = text.call_targets();
    // Function start -> the reasons its ssl_lib.cc error reports raise.
    let mut reasons: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for address in file_names {
        for site in text.references(address) {
            let Some(function) = text.containing_function(&starts, site) else {
                continue;
            };
            if let Some(reason) = text.reported_reason(function, site, address) {
                reasons.entry(function).or_default().insert(reason);
            }
        }
    }
    if reasons.is_empty() {
        return Err(BoringLocateError::NoErrorReports);
    }
    let raises = |f: u64, wanted: &[u64]| {
        reasons
            .get(&f)
            .is_some_and(|r| wanted.iter().all(|w| r.contains(w)))
    };
    let write = unique(
        "SSL_write",
        reasons.keys().copied().filter(|f| {
            raises(
                *f,
                &[
                    ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED,
                    SSL_R_UNINITIALIZED,
                    SSL_R_BAD_LENGTH,
                ],
            )
        }),
    )?;
    let read_impl = |f: u64| {
        raises(f, &[SSL_R_UNINITIALIZED, SSL_R_SSL_HANDSHAKE_FAILURE])
            && !raises(f, &[ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED])
    };
    let read = unique(
        "SSL_read",
        reasons.keys().copied().filter(|f| {
            *f != write
                && raises(*f, &[ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED])
                && !raises(*f, &[SSL_R_BAD_LENGTH])
                && (raises(*f, &[SSL_R_UNINITIALIZED, SSL_R_SSL_HANDSHAKE_FAILURE])
                    || text.direct_calls(&starts, *f).into_iter().any(&read_impl))
        }),
    )?;
    Ok(Some(BoringSslHooks {
        ssl_write: text.file_offset(write),
        ssl_read: text.file_offset(read),
    }))
}

/// The entry in `locate::LOCATORS`, so results go through the shared on-disk cache.
pub const LOCATOR: super::Locator = super::Locator {
    name: "boringssl",
    version: 1,
    present: |data| memchr::memmem::find(data, SSL_LIB_FILE).is_some(),
    locate: locate_image,
};

fn locate_image(image: &super::Image<'_>) -> Result<Option<super::Located>, super::LocateError> {
    let found = locate(image.data()).map_err(|e| super::LocateError::Ambiguous {
        stack: "boringssl",
        reason: e.to_string(),
    })?;
    Ok(found.map(|h| super::Located {
        stack: "BoringSSL (static, stripped)".to_string(),
        kind: "boringssl".to_string(),
        hooks: [
            ("ssl_write", "SSL_write", h.ssl_write),
            ("ssl_write_ret", "SSL_write", h.ssl_write),
            ("ssl_read", "SSL_read", h.ssl_read),
            ("ssl_read_ret", "SSL_read", h.ssl_read),
        ]
        .into_iter()
        .map(|(program, function, offset)| super::LocatedHook {
            program: program.to_string(),
            function: function.to_string(),
            offset,
        })
        .collect(),
    }))
}

fn unique(what: &'static str, found: impl Iterator<Item = u64>) -> Result<u64, BoringLocateError> {
    let found: Vec<u64> = found.collect();
    match found.as_slice() {
        [one] => Ok(*one),
        _ => Err(BoringLocateError::NotUnique {
            what,
            count: found.len(),
        }),
    }
}

/// Virtual addresses of every string ending in `ssl/ssl_lib.cc` in read-only data.
fn file_name_addresses(elf: &object::File<'_>, data: &[u8]) -> Option<Vec<u64>> {
    let mut found = Vec::new();
    for section in elf.sections() {
        if section.kind() != SectionKind::ReadOnlyString
            && section.kind() != SectionKind::ReadOnlyData
        {
            continue;
        }
        let Some((offset, size)) = section.file_range() else {
            continue;
        };
        let Some(bytes) = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(o, s)| data.get(o..o.checked_add(s)?))
        else {
            continue;
        };
        for end in memchr::memmem::find_iter(bytes, SSL_LIB_FILE) {
            let start = bytes[..end]
                .iter()
                .rposition(|b| *b == 0)
                .map_or(0, |nul| nul + 1);
            found.push(section.address() + start as u64);
        }
    }
    (!found.is_empty()).then_some(found)
}

/// The executable code, as addresses and bytes.
struct Text<'a> {
    address: u64,
    file_offset: u64,
    bytes: &'a [u8],
}

impl<'a> Text<'a> {
    fn of(elf: &object::File<'a>) -> Result<Self, BoringLocateError> {
        let section = elf
            .section_by_name(".text")
            .ok_or_else(|| BoringLocateError::Elf("no .text section".to_string()))?;
        let (file_offset, _) = section
            .file_range()
            .ok_or_else(|| BoringLocateError::Elf(".text has no bytes in the file".to_string()))?;
        let bytes = section
            .data()
            .map_err(|e| BoringLocateError::Elf(e.to_string()))?;
        Ok(Text {
            address: section.address(),
            file_offset,
            bytes,
        })
    }

    fn end(&self) -> u64 {
        self.address + self.bytes.len() as u64
    }

    fn file_offset(&self, address: u64) -> u64 {
        address - self.address + self.file_offset
    }

    fn decoder_at(&self, address: u64) -> Option<Decoder<'a>> {
        let from = usize::try_from(address.checked_sub(self.address)?).ok()?;
        let bytes = self.bytes.get(from..)?;
        Some(Decoder::with_ip(64, bytes, address, DecoderOptions::NONE))
    }

    fn decode_one(&self, address: u64) -> Option<Instruction> {
        let mut d = self.decoder_at(address)?;
        let i = d.decode();
        (!i.is_invalid()).then_some(i)
    }

    /// Instructions that put `target` in a register: `mov r32, imm32` / `mov r64, imm32` (code
    /// linked at a fixed address) or `lea r64, [rip + disp]` (position-independent code).
    fn references(&self, target: u64) -> Vec<u64> {
        let mut sites = Vec::new();
        if let Ok(absolute) = u32::try_from(target) {
            let needle = absolute.to_le_bytes();
            for at in memchr::memmem::find_iter(self.bytes, &needle) {
                // The immediate ends the instruction: its start is 1 (B8+r), 2 (REX B8+r) or
                // 3 (REX C7 /0) bytes before it.
                for back in 1..=3u64 {
                    let Some(start) = (self.address + at as u64).checked_sub(back) else {
                        continue;
                    };
                    if let Some(i) = self.decode_one(start) {
                        if i.next_ip() == self.address + at as u64 + 4
                            && loads_constant(&i) == Some(target)
                        {
                            sites.push(start);
                        }
                    }
                }
            }
        }
        // lea r64, [rip + disp32]: REX.W(R) 8D, ModRM with mod 00 and r/m 101.
        for at in memchr::memchr2_iter(0x48, 0x4c, self.bytes) {
            let (Some(0x8d), Some(modrm)) = (self.bytes.get(at + 1), self.bytes.get(at + 2)) else {
                continue;
            };
            if modrm & 0xc7 != 0x05 {
                continue;
            }
            let start = self.address + at as u64;
            if let Some(i) = self.decode_one(start) {
                if loads_constant(&i) == Some(target) {
                    sites.push(start);
                }
            }
        }
        sites.sort_unstable();
        sites.dedup();
        sites
    }

    /// Targets of direct calls, the function starts a stripped file without `.eh_frame`
    /// still shows. Byte patterns that only look like calls add targets too; keeping those
    /// aligned the way compilers align functions (16) drops most of them, and a start is only
    /// ever trusted after decoding from it reaches the instruction it must contain.
    fn call_targets(&self) -> Vec<u64> {
        let mut targets = BTreeSet::new();
        for at in memchr::memchr_iter(0xe8, self.bytes) {
            let Some(rel) = self.bytes.get(at + 1..at + 5) else {
                continue;
            };
            let rel = i32::from_le_bytes([rel[0], rel[1], rel[2], rel[3]]);
            let target = (self.address + at as u64 + 5).wrapping_add_signed(i64::from(rel));
            if target % 16 == 0 && target >= self.address && target < self.end() {
                targets.insert(target);
            }
        }
        targets.into_iter().collect()
    }

    /// The function `site` is in: the nearest function start before it from which decoding
    /// lands exactly on `site`.
    fn containing_function(&self, starts: &[u64], site: u64) -> Option<u64> {
        let below = starts.partition_point(|s| *s <= site);
        starts[..below]
            .iter()
            .rev()
            .take(4)
            .copied()
            .take_while(|s| site - s < MAX_FUNCTION_BYTES)
            .find(|start| self.instructions(*start, site + 1).last().map(|i| i.ip()) == Some(site))
    }

    /// Instructions from `start` up to (not including) `end`, stopping at undecodable bytes.
    fn instructions(&self, start: u64, end: u64) -> Vec<Instruction> {
        let mut out = Vec::new();
        let Some(mut d) = self.decoder_at(start) else {
            return out;
        };
        while d.ip() < end && d.can_decode() {
            let i = d.decode();
            if i.is_invalid() {
                break;
            }
            out.push(i);
        }
        out
    }

    /// The reason code of the `ERR_put_error(ERR_LIB_SSL, ...)` call whose file argument is set
    /// at `site`.
    fn reported_reason(&self, function: u64, site: u64, file: u64) -> Option<u64> {
        let code = self.instructions(function, site + 256);
        let at = code.iter().position(|i| i.ip() == site)?;
        let file_argument = argument_index(code[at].op0_register())?;
        let reason_register = *ARGUMENTS.get(file_argument.checked_sub(1)?)?;
        // The arguments are set in the block around the site: walk back to the previous
        // branch and forward to the call (or the jump to a shared call).
        let mut constants: BTreeMap<Register, u64> = BTreeMap::new();
        let mut first = at;
        while first > 0 && at - first < ARGUMENT_WINDOW && !ends_block(&code[first - 1]) {
            first -= 1;
        }
        for i in &code[first..] {
            if i.ip() > site && (ends_block(i) || i.ip() - site > 64) {
                break;
            }
            if let Some(value) = loads_constant(i) {
                constants.insert(full_register(i.op0_register()), value);
            }
        }
        (constants.get(&Register::RDI) == Some(&ERR_LIB_SSL)
            && constants.get(&ARGUMENTS[file_argument]) == Some(&file))
        .then(|| constants.get(&reason_register).copied())
        .flatten()
    }

    /// Targets of the direct calls in the function starting at `function` (its end is the next
    /// function start).
    fn direct_calls(&self, starts: &[u64], function: u64) -> Vec<u64> {
        let next = starts.partition_point(|s| *s <= function);
        let end = starts
            .get(next)
            .copied()
            .unwrap_or(self.end())
            .min(function + MAX_FUNCTION_BYTES);
        self.instructions(function, end)
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64)
            .map(|i| i.near_branch_target())
            .collect()
    }
}

/// System V argument registers, in order.
const ARGUMENTS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

fn argument_index(register: Register) -> Option<usize> {
    ARGUMENTS.iter().position(|a| *a == full_register(register))
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
        // xor r32, r32 zeroes the register (the unused argument of newer ERR_put_error).
        Code::Xor_rm32_r32 | Code::Xor_r32_rm32 | Code::Xor_rm64_r64 | Code::Xor_r64_rm64
            if i.op1_kind() == OpKind::Register && i.op0_register() == i.op1_register() =>
        {
            Some(0)
        }
        _ => None,
    }
}

/// Branches, calls, returns and traps: where the straight line of argument set-up ends.
fn ends_block(i: &Instruction) -> bool {
    // Every direct branch (jmp, jcc, call, loop) has a near-branch operand.
    i.op0_kind() == OpKind::NearBranch64
        || matches!(
            i.mnemonic(),
            Mnemonic::Jmp | Mnemonic::Call | Mnemonic::Ret | Mnemonic::Int3 | Mnemonic::Ud2
        )
}

/// The 64-bit register a 32-bit argument register is the low half of.
fn full_register(r: Register) -> Register {
    match r {
        Register::EDI => Register::RDI,
        Register::ESI => Register::RSI,
        Register::EDX => Register::RDX,
        Register::ECX => Register::RCX,
        Register::R8D => Register::R8,
        Register::R9D => Register::R9,
        Register::EAX => Register::RAX,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_boringssl_is_nothing() {
        let me = std::fs::read("/bin/true").unwrap();
        assert_eq!(locate(&me), Ok(None));
    }

    /// What a located pair must look like in any build: function starts (direct-call targets
    /// that decode), with the meaning the anchors give them: the ssl_lib.cc reasons each body
    /// raises, and SSL_read's call into ssl_read_impl.
    #[derive(Debug, PartialEq, Eq)]
    struct Meaning {
        write_reasons: BTreeSet<u64>,
        read_reasons: BTreeSet<u64>,
        /// SSL_read calls a function raising ssl_read_impl's anchors (the rest of its reasons
        /// vary: 1.2 inlines ssl_do_post_handshake's into it).
        calls_read_impl: bool,
    }

    fn check_located(binary: &std::path::Path) -> (BoringSslHooks, Meaning) {
        let data = std::fs::read(binary).unwrap();
        let hooks = locate(&data)
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
            .unwrap_or_else(|| panic!("{}: no BoringSSL found", binary.display()));
        let elf = object::File::parse(&*data).unwrap();
        let text = Text::of(&elf).unwrap();
        let address = |offset: u64| offset - text.file_offset + text.address;
        let starts = text.call_targets();
        let (write, read) = (address(hooks.ssl_write), address(hooks.ssl_read));
        assert_ne!(write, read);
        for f in [write, read] {
            assert!(
                starts.binary_search(&f).is_ok(),
                "{f:#x} is called directly"
            );
            let code = text.instructions(f, f + 64);
            assert!(code.len() > 5 && code[0].ip() == f, "{f:#x} decodes");
        }
        let mut sites: Vec<(u64, u64, u64)> = Vec::new();
        for file in file_name_addresses(&elf, &data).unwrap() {
            for site in text.references(file) {
                if let Some(function) = text.containing_function(&starts, site) {
                    sites.push((function, site, file));
                }
            }
        }
        let reasons_of = |function: u64| -> BTreeSet<u64> {
            sites
                .iter()
                .filter(|(f, _, _)| *f == function)
                .filter_map(|(_, site, file)| text.reported_reason(function, *site, *file))
                .collect()
        };
        let calls_read_impl = text.direct_calls(&starts, read).into_iter().any(|callee| {
            let r = reasons_of(callee);
            r.contains(&SSL_R_UNINITIALIZED)
                && r.contains(&SSL_R_SSL_HANDSHAKE_FAILURE)
                && !r.contains(&ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED)
        });
        let meaning = Meaning {
            write_reasons: reasons_of(write),
            read_reasons: reasons_of(read),
            calls_read_impl,
        };
        (hooks, meaning)
    }

    #[test]
    fn finds_ssl_write_and_ssl_read_in_two_bun_releases() {
        let current = tracer_testkit::bun::install(tracer_testkit::bun::CURRENT).unwrap();
        let older = tracer_testkit::bun::install(tracer_testkit::bun::OLDER).unwrap();
        let (a, meaning_a) = check_located(&current);
        let (b, meaning_b) = check_located(&older);
        // Different builds (other offsets, another ERR_put_error signature, another source
        // path), the same functions.
        assert_ne!(a, b);
        assert_eq!(meaning_a, meaning_b);
        assert_eq!(
            meaning_a,
            Meaning {
                write_reasons: [
                    ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED,
                    SSL_R_BAD_LENGTH,
                    SSL_R_SSL_HANDSHAKE_FAILURE,
                    SSL_R_UNINITIALIZED
                ]
                .into(),
                read_reasons: [ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED].into(),
                calls_read_impl: true,
            }
        );
    }

    #[test]
    fn a_bun_compiled_executable_carries_the_same_runtime() {
        // `bun build --compile` appends the script to a copy of the runtime: the same functions
        // must be found in it.
        let bun = tracer_testkit::bun::install(tracer_testkit::bun::CURRENT).unwrap();
        let dir = tracer_testkit::target_dir().join("e2e-bun/compiled");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!(
            "bun_fetch-{}-{}",
            tracer_testkit::bun::CURRENT,
            std::process::id()
        ));
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/bun_fetch.mjs");
        let status = std::process::Command::new(&bun)
            .args(["build", "--compile"])
            .arg(&script)
            .arg("--outfile")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let (compiled, meaning) = check_located(&out);
        let _ = std::fs::remove_file(&out);
        let (runtime, runtime_meaning) = check_located(&bun);
        assert_eq!(compiled, runtime);
        assert_eq!(meaning, runtime_meaning);
    }

    #[test]
    fn constants_are_read_from_the_instructions_that_load_them() {
        // mov ecx, 0x29e59d ; mov edi, 0x10 ; xor esi, esi ; lea rdx, [rip+0x10]
        let code = [
            0xb9, 0x9d, 0xe5, 0x29, 0x00, 0xbf, 0x10, 0, 0, 0, 0x31, 0xf6, 0x48, 0x8d, 0x15, 0x10,
            0, 0, 0,
        ];
        let mut d = Decoder::with_ip(64, &code, 0x1000, DecoderOptions::NONE);
        let got: Vec<Option<u64>> = (0..4).map(|_| loads_constant(&d.decode())).collect();
        assert_eq!(
            got,
            [Some(0x29e59d), Some(16), Some(0), Some(0x1013 + 0x10)]
        );
    }
}
