//! rustls with the aws-lc-rs crypto provider (static Rust programs, Deno) or the ring one
//! (`ring.rs`), without symbols. A program may link both providers; every one found is hooked.
//!
//! rustls itself offers no stable hook: its plaintext API is generic Rust, inlined and laid out
//! differently by every build, called through trait objects whose layout Rust does not fix. What
//! every build does contain is aws-lc, a C library, reached from Rust through plain C calls:
//! every TLS record rustls sends is sealed by `EVP_AEAD_CTX_seal` (aws-lc-rs's
//! `seal_in_place_append_tag`, what rustls calls) or `EVP_AEAD_CTX_seal_scatter` (the other
//! `seal_in_place_*`) and every record it receives is opened by `EVP_AEAD_CTX_open`
//! (`open_within`/`open_in_place`) or `EVP_AEAD_CTX_open_gather` (`open_in_place_separate_tag`),
//! with the C ABI: arguments where the kernel programs in `tracer-ebpf/src/aead.rs` read them.
//!
//! The three functions are found by what aws-lc's `crypto/fipsmodule/cipher/aead.c` must
//! contain: each reports its errors with `OPENSSL_PUT_ERROR(CIPHER, reason)`, which compiles to
//! `ERR_put_error(ERR_LIB_CIPHER, 0, reason, __FILE__, __LINE__)`: a RIP-relative `lea rcx` of
//! the file's name and a `mov edx, reason` before the call. The reason codes are aws-lc's public
//! ABI (include/openssl/cipher.h) and each function's set of them is its own:
//! - seal_scatter: OUTPUT_ALIASES_INPUT and INVALID_OPERATION (extra_in unsupported), the only
//!   use of INVALID_OPERATION in the file;
//! - open: OUTPUT_ALIASES_INPUT and BAD_DECRYPT, the only use of BAD_DECRYPT (it may carry an
//!   inlined copy of open_gather, whose probe then stays quiet: the kernel reports one record
//!   per outermost open);
//! - open_gather: OUTPUT_ALIASES_INPUT and CTRL_NOT_IMPLEMENTED and nothing else
//!   (`EVP_AEAD_CTX_copy` also uses CTRL_NOT_IMPLEMENTED, with INPUT_NOT_INITIALIZED).
//!
//! Line numbers and the file's directory prefix vary by release and build; neither is used.
//! Each function must also be called directly or have its address taken (aws-lc-rs calls them,
//! through the GOT in a position-independent executable), which rejects a split-off cold part
//! of a function; anything ambiguous locates nothing. The argument set-up is read through the
//! shapes compilers give it: `mov r32, imm` (GCC, clang -O2), `push imm; pop r64` (clang -Os, as
//! Deno is built), and sites sharing one call's tail through a `jmp` (GCC -Os).

use std::{collections::BTreeMap, ops::Range};

use iced_x86::{Mnemonic, OpKind, Register};

use super::{Image, LocateError, Located, LocatedHook, Locator, XrefKind};

/// Bump when the answers change (see [`Locator::version`]).
pub const LOCATOR: Locator = Locator {
    name: "rustls",
    version: 3,
    present,
    needles: &[
        RUSTLS_MARKER,
        AEAD_SOURCE,
        super::ring::RING_MARKER,
        super::ring::AEAD_SOURCES,
    ],
    locate,
};

/// aws-lc's AEAD front end, as `__FILE__` names it (the directory before it varies).
const AEAD_SOURCE: &[u8] = b"crypto/fipsmodule/cipher/aead.c";
/// rustls's source paths, which its panic locations embed ("…/rustls-0.23.35/src/…").
const RUSTLS_MARKER: &[u8] = b"/rustls-0.";

/// aws-lc's `ERR_LIB_CIPHER` and the `CIPHER_R_*` reason codes (include/openssl/cipher.h).
const ERR_LIB_CIPHER: u64 = 30;
const BAD_DECRYPT: u64 = 101;
const TOO_LARGE: u64 = 117;
const CTRL_NOT_IMPLEMENTED: u64 = 104;
const INVALID_OPERATION: u64 = 112;
const OUTPUT_ALIASES_INPUT: u64 = 115;

/// Instructions looked at around an error site: the compiler schedules the argument set-up
/// of `ERR_put_error` around the `lea`, never far.
const SITE_WINDOW: usize = 8;

fn present(data: &[u8]) -> bool {
    memchr::memmem::find(data, RUSTLS_MARKER).is_some()
        && (has_aws_lc(data) || super::ring::present(data))
}

fn has_aws_lc(data: &[u8]) -> bool {
    memchr::memmem::find(data, AEAD_SOURCE).is_some()
}

/// The aws-lc AEAD functions of a binary, by entry address.
#[derive(Debug, PartialEq, Eq)]
pub struct AeadFunctions {
    /// At least one of the two seals is there.
    pub seal: Option<u64>,
    pub seal_scatter: Option<u64>,
    pub open: u64,
    pub open_gather: Option<u64>,
}

fn locate(image: &Image<'_>) -> Result<Option<Located>, LocateError> {
    let aws_lc = if has_aws_lc(image.data()) {
        aead_functions(image)
    } else {
        Ok(None)
    };
    let ring = if super::ring::present(image.data()) {
        super::ring::aead_functions(image)
    } else {
        Ok(None)
    };
    let mut hooks = Vec::new();
    let mut providers = Vec::new();
    // One provider's failure does not hide the other: a program uses one at a time, and the
    // one found may be the one in use. Only when none is found is the failure the answer.
    let mut failure = None;
    match aws_lc {
        Ok(Some(found)) => {
            aws_lc_hooks(image, &found, &mut hooks)?;
            providers.push("aws-lc-rs");
        }
        Ok(None) => {}
        Err(e) => failure = Some(e),
    }
    match ring {
        Ok(Some(found)) => {
            ring_hooks(image, &found, &mut hooks)?;
            providers.push("ring");
        }
        Ok(None) => {}
        Err(e) => failure = failure.or(Some(e)),
    }
    if providers.is_empty() {
        return failure.map_or(Ok(None), Err);
    }
    Ok(Some(Located {
        stack: format!("rustls ({})", providers.join(", ")),
        kind: "rustls".to_string(),
        hooks,
    }))
}

/// A hook at `vaddr`, which must be a proved instruction boundary in the file.
fn hook(
    image: &Image<'_>,
    hooks: &mut Vec<LocatedHook>,
    program: &str,
    function: &str,
    vaddr: u64,
) -> Result<(), LocateError> {
    if !image.is_instruction_boundary(vaddr) {
        return Err(ambiguous(format!(
            "{function} at {vaddr:#x} is not an instruction"
        )));
    }
    let offset = image
        .file_offset(vaddr)
        .ok_or_else(|| ambiguous(format!("{function} at {vaddr:#x} is not in the file")))?;
    hooks.push(LocatedHook {
        program: program.to_string(),
        function: function.to_string(),
        offset,
    });
    Ok(())
}

fn aws_lc_hooks(
    image: &Image<'_>,
    found: &AeadFunctions,
    hooks: &mut Vec<LocatedHook>,
) -> Result<(), LocateError> {
    if let Some(seal) = found.seal {
        hook(
            image,
            hooks,
            "aead_seal_combined",
            "EVP_AEAD_CTX_seal",
            seal,
        )?;
    }
    if let Some(scatter) = found.seal_scatter {
        hook(
            image,
            hooks,
            "aead_seal",
            "EVP_AEAD_CTX_seal_scatter",
            scatter,
        )?;
    }
    hook(image, hooks, "aead_open", "EVP_AEAD_CTX_open", found.open)?;
    hook(
        image,
        hooks,
        "aead_open_ret",
        "EVP_AEAD_CTX_open",
        found.open,
    )?;
    if let Some(gather) = found.open_gather {
        let name = "EVP_AEAD_CTX_open_gather";
        hook(image, hooks, "aead_open_gather", name, gather)?;
        hook(image, hooks, "aead_open_gather_ret", name, gather)?;
    }
    Ok(())
}

fn ring_hooks(
    image: &Image<'_>,
    found: &super::ring::RingAeads,
    hooks: &mut Vec<LocatedHook>,
) -> Result<(), LocateError> {
    let aeads = [
        Some(("AES_GCM", found.aes_gcm)),
        found.chacha20_poly1305.map(|f| ("CHACHA20_POLY1305", f)),
    ];
    for (name, f) in aeads.into_iter().flatten() {
        hook(
            image,
            hooks,
            "ring_seal",
            &format!("ring {name}.seal"),
            f.seal,
        )?;
        hook(
            image,
            hooks,
            "ring_open",
            &format!("ring {name}.open"),
            f.open,
        )?;
        hook(
            image,
            hooks,
            "ring_open_ret",
            &format!("ring {name}.open"),
            f.open,
        )?;
    }
    Ok(())
}

fn ambiguous(reason: String) -> LocateError {
    LocateError::Ambiguous {
        stack: "rustls",
        reason,
    }
}

/// Finds the three functions; `Ok(None)` when aws-lc's AEAD code is not there at all.
pub fn aead_functions(image: &Image<'_>) -> Result<Option<AeadFunctions>, LocateError> {
    // `__FILE__` is the whole path: code refers to where the string starts, not to its tail.
    let files: Vec<u64> = image
        .strings(AEAD_SOURCE)
        .into_iter()
        .filter_map(|tail| image.string_start(tail))
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    // The reasons each function reports, by its entry.
    let mut reasons: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for xref in image.references_to(&files) {
        if xref.kind != XrefKind::Address {
            continue;
        }
        let Some(function) = image.function_containing(xref.from) else {
            continue;
        };
        if let Some(reason) = error_reason(image, &function, xref.from) {
            reasons.entry(function.start).or_default().push(reason);
        }
    }
    let with = |must: &[u64], only: Option<&[u64]>| -> Vec<u64> {
        reasons
            .iter()
            .filter(|(_, r)| must.iter().all(|m| r.contains(m)))
            .filter(|(_, r)| only.is_none_or(|only| r.iter().all(|x| only.contains(x))))
            .map(|(start, _)| *start)
            .collect()
    };
    let seal = with(&[OUTPUT_ALIASES_INPUT, TOO_LARGE], None);
    let scatter = with(&[OUTPUT_ALIASES_INPUT, INVALID_OPERATION], None);
    let open = with(&[OUTPUT_ALIASES_INPUT, BAD_DECRYPT], None);
    let gather = with(
        &[OUTPUT_ALIASES_INPUT, CTRL_NOT_IMPLEMENTED],
        Some(&[OUTPUT_ALIASES_INPUT, CTRL_NOT_IMPLEMENTED]),
    );
    // Unique when present; a function no code here uses may have been dropped by the linker.
    let at_most_one = |what: &str, found: &[u64]| -> Result<Option<u64>, LocateError> {
        match found {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(ambiguous(format!(
                "{} candidates for {what}: {many:x?}",
                many.len()
            ))),
        }
    };
    let seal = at_most_one("EVP_AEAD_CTX_seal", &seal)?;
    let seal_scatter = at_most_one("EVP_AEAD_CTX_seal_scatter", &scatter)?;
    let open = at_most_one("EVP_AEAD_CTX_open", &open)?
        .ok_or_else(|| ambiguous("no EVP_AEAD_CTX_open in aws-lc's aead.c error sites".into()))?;
    let open_gather = at_most_one("EVP_AEAD_CTX_open_gather", &gather)?;
    if seal.is_none() && seal_scatter.is_none() {
        return Err(ambiguous(
            "no EVP_AEAD_CTX_seal(_scatter) in aead.c's error sites".into(),
        ));
    }
    // A real entry point, not a cold fragment: called directly, or its address taken (Rust
    // code in a position-independent executable calls C through GOT slots). One that is
    // neither is not hooked; `open` must be.
    let entries: Vec<u64> = [seal, seal_scatter, Some(open), open_gather]
        .into_iter()
        .flatten()
        .collect();
    let mut called: Vec<u64> = image
        .references_to(&entries)
        .into_iter()
        .filter(|x| x.kind == XrefKind::Call)
        .map(|x| x.to)
        .collect();
    // Stored in a pointer: a GOT slot or any other (a relocation's addend in a
    // position-independent executable, the slot's content otherwise).
    called.extend(
        image
            .code_pointers()
            .iter()
            .map(|(_, target)| *target)
            .filter(|target| entries.contains(target)),
    );
    if !called.contains(&open) {
        return Err(ambiguous(format!(
            "EVP_AEAD_CTX_open at {open:#x} is never called"
        )));
    }
    let seal = seal.filter(|f| called.contains(f));
    let seal_scatter = seal_scatter.filter(|f| called.contains(f));
    let open_gather = open_gather.filter(|f| called.contains(f));
    if seal.is_none() && seal_scatter.is_none() {
        return Err(ambiguous("neither seal is ever called".into()));
    }
    Ok(Some(AeadFunctions {
        seal,
        seal_scatter,
        open,
        open_gather,
    }))
}

/// The reason code of the `OPENSSL_PUT_ERROR` whose file name `lea rcx, [rip+…]` is at `at`:
/// the `mov edx, imm` setting up the same `ERR_put_error(ERR_LIB_CIPHER, 0, reason, file,
/// line)` call, which must also load `edi` with `ERR_LIB_CIPHER`. `None` for any other use of
/// the file name (an `assert`, which passes it in `rsi`).
fn error_reason(image: &Image<'_>, function: &Range<u64>, at: u64) -> Option<u64> {
    let code = image.decode(function.clone());
    let i = code.iter().position(|ins| ins.ip() == at)?;
    let lea = &code[i];
    if lea.mnemonic() != Mnemonic::Lea || lea.op0_register() != Register::RCX {
        return None;
    }
    let ends_site = |m: Mnemonic| matches!(m, Mnemonic::Call | Mnemonic::Ret | Mnemonic::Jmp);
    // The call the site sets up (or the jump to a call several sites share, as clang -Os
    // merges them), and the instructions since the one before.
    let call = (i + 1..code.len().min(i + 1 + SITE_WINDOW))
        .find(|&j| ends_site(code[j].mnemonic()))
        .filter(|&j| code[j].mnemonic() != Mnemonic::Ret)?;
    let start = (i.saturating_sub(SITE_WINDOW)..i)
        .rev()
        .find(|&j| ends_site(code[j].mnemonic()) || code[j].op0_kind() == OpKind::NearBranch64)
        .map_or(i.saturating_sub(SITE_WINDOW), |j| j + 1);
    let mut consts = constants(&code[start..call]);
    // Sites that share the call's tail (GCC -Os) jump into the middle of another site: its
    // last instructions (`mov edi, ERR_LIB_CIPHER` with it) run after this site's own.
    if code[call].mnemonic() == Mnemonic::Jmp && code[call].op0_kind() == OpKind::NearBranch64 {
        let target = code[call].near_branch_target();
        if let Some(t) = code.iter().position(|ins| ins.ip() == target) {
            let end = (t..code.len().min(t + SITE_WINDOW))
                .find(|&j| code[j].mnemonic() == Mnemonic::Call)?;
            consts.extend(constants(&code[t..end]));
        }
    }
    let value = |wide: Register, narrow: Register| {
        consts
            .iter()
            .rev()
            .find(|(r, _)| *r == wide || *r == narrow)
            .map(|(_, v)| *v)
    };
    (value(Register::RDI, Register::EDI)? == ERR_LIB_CIPHER).then_some(())?;
    value(Register::RDX, Register::EDX)
}

/// Registers set to constants in straight-line code, in order: `mov r32, imm` (GCC, clang -O2)
/// and `push imm; pop r64` (clang -Os/-Oz, as Deno is built).
fn constants(code: &[iced_x86::Instruction]) -> Vec<(Register, u64)> {
    let mut out = Vec::new();
    let mut pushed = None;
    for ins in code {
        let immediate = match ins.op_kinds().last() {
            Some(OpKind::Immediate32) => Some(u64::from(ins.immediate32())),
            Some(OpKind::Immediate8to32) => Some(ins.immediate8to32() as u32 as u64),
            Some(OpKind::Immediate8to64) => Some(ins.immediate8to64() as u64),
            Some(OpKind::Immediate32to64) => Some(ins.immediate32to64() as u64),
            _ => None,
        };
        match ins.mnemonic() {
            Mnemonic::Mov if ins.op0_kind() == OpKind::Register => {
                if let Some(v) = immediate {
                    out.push((ins.op0_register(), v));
                }
                pushed = None;
            }
            Mnemonic::Push => pushed = immediate,
            Mnemonic::Pop if ins.op0_kind() == OpKind::Register => {
                if let Some(v) = pushed.take() {
                    out.push((ins.op0_register(), v));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Instruction};

    fn decode(bytes: &[u8]) -> Vec<Instruction> {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    #[test]
    fn error_site_constants_in_every_compiler_shape() {
        // GCC/clang -O2: mov r8d, 0xd6; mov edx, 0x73; xor esi, esi; mov edi, 0x1e
        let gcc = decode(&[
            0x41, 0xb8, 0xd6, 0, 0, 0, 0xba, 0x73, 0, 0, 0, 0x31, 0xf6, 0xbf, 0x1e, 0, 0, 0,
        ]);
        let c = constants(&gcc);
        assert!(c.contains(&(Register::EDX, OUTPUT_ALIASES_INPUT)));
        assert!(c.contains(&(Register::EDI, ERR_LIB_CIPHER)));
        // clang -Os (Deno): push 0x1e; pop rdi; push 0x70; pop rdx
        let clang = decode(&[0x6a, 0x1e, 0x5f, 0x6a, 0x70, 0x5a]);
        let c = constants(&clang);
        assert_eq!(
            c,
            vec![
                (Register::RDI, ERR_LIB_CIPHER),
                (Register::RDX, INVALID_OPERATION)
            ]
        );
        // A push of a register is not a constant.
        assert!(constants(&decode(&[0x53, 0x5f])).is_empty());
    }
}
