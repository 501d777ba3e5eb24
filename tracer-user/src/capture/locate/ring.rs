//! ring's AEADs (rustls's `ring` crypto provider), without symbols.
//!
//! ring's assembly never sees a TLS record whole: AES-GCM hands the whole 16-byte blocks to the
//! vector code and XORs the last partial block in Rust, so no C-ABI function carries a record's
//! plaintext (unlike aws-lc's `EVP_AEAD_CTX_*`, see `rustls.rs`). What does, once per record, is
//! the `seal` and `open` of ring's AEAD descriptors: every call rustls makes goes through
//!
//! ```text
//! pub struct Algorithm { init: fn(..), seal: fn(..), open: fn(..), key_len: usize, id: AlgorithmID }
//! pub static AES_128_GCM: Algorithm = Algorithm { key_len: 16, init: aes_gcm_init_128,
//!     seal: aes_gcm_seal, open: aes_gcm_open, id: AlgorithmID::AES_128_GCM };
//! pub static AES_256_GCM: Algorithm = Algorithm { key_len: 32, init: aes_gcm_init_256,
//!     seal: aes_gcm_seal, open: aes_gcm_open, id: AlgorithmID::AES_256_GCM };
//! pub static CHACHA20_POLY1305: Algorithm = Algorithm { key_len: 32, .. };
//! ```
//!
//! (ring 0.17, `src/aead/algorithm.rs`). Those statics are in every program that can use them,
//! whatever it is compiled with, and their shape gives them away without symbols: three code
//! pointers and two small integers, where the AES-128 and AES-256 descriptors share their
//! `seal` and `open` and differ in `init` and key length. ChaCha20-Poly1305 is the descriptor
//! with the same shape, a 32-byte key, its own functions and the remaining `id`.
//!
//! Which shared pointer is `seal` and which is `open` follows the declaration order, which
//! rustc keeps for fields of one size and alignment; a build that reordered them would show
//! ciphertext at the hooks, which validation (`capture/validate.rs`) rejects and detaches.

use super::{Image, LocateError};

/// ring's source paths, which its panic locations embed ("…/ring-0.17.14/src/aead/…").
pub(super) const RING_MARKER: &[u8] = b"ring-0.";
pub(super) const AEAD_SOURCES: &[u8] = b"/src/aead/";

/// The key lengths of ring's AEADs (AES-128-GCM; AES-256-GCM and ChaCha20-Poly1305).
const KEY_LENS: [u64; 2] = [16, 32];

/// Whether ring's AEAD code may be in the file (a cheap scan before the analysis).
pub fn present(data: &[u8]) -> bool {
    memchr::memmem::find(data, RING_MARKER).is_some()
        && memchr::memmem::find(data, AEAD_SOURCES).is_some()
}

/// The seal and open functions of ring's AEADs, by entry address.
#[derive(Debug, PartialEq, Eq)]
pub struct RingAeads {
    /// AES-GCM (both key sizes).
    pub aes_gcm: SealOpen,
    /// ChaCha20-Poly1305, unless the linker dropped it.
    pub chacha20_poly1305: Option<SealOpen>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct SealOpen {
    pub seal: u64,
    pub open: u64,
}

/// One `Algorithm`-shaped record in static data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Descriptor {
    at: u64,
    /// `init`, `seal`, `open`, in field order.
    functions: [u64; 3],
    key_len: u64,
    id: u64,
}

/// Finds ring's descriptors; `Ok(None)` when there are none (ring's AEADs are not linked in).
pub fn aead_functions(image: &Image<'_>) -> Result<Option<RingAeads>, LocateError> {
    let descriptors = descriptors(image);
    // AES-128-GCM and AES-256-GCM: the same seal and open, their own init, key and id.
    let mut pairs = Vec::new();
    for a in descriptors.iter().filter(|d| d.key_len == KEY_LENS[0]) {
        for b in descriptors.iter().filter(|d| d.key_len == KEY_LENS[1]) {
            let shared = a.functions[1..] == b.functions[1..];
            if shared && a.functions[0] != b.functions[0] && a.id != b.id {
                pairs.push((*a, *b));
            }
        }
    }
    let (aes128, aes256) = match pairs.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => {
            return Err(ambiguous(format!(
                "{} AES-GCM descriptor pairs: {:x?}",
                many.len(),
                many.iter().map(|(a, b)| (a.at, b.at)).collect::<Vec<_>>()
            )))
        }
    };
    let aes_gcm = seal_open(image, &aes128)?;
    // ChaCha20-Poly1305: shaped alike, with a 32-byte key and nothing shared with AES-GCM.
    let aes_functions = [aes128.functions, aes256.functions].concat();
    let chacha: Vec<&Descriptor> = descriptors
        .iter()
        .filter(|d| d.key_len == KEY_LENS[1] && d.id != aes128.id && d.id != aes256.id)
        .filter(|d| d.functions.iter().all(|f| !aes_functions.contains(f)))
        .collect();
    let chacha20_poly1305 = match chacha.as_slice() {
        [] => None,
        [one] => Some(seal_open(image, one)?),
        many => {
            return Err(ambiguous(format!(
                "{} ChaCha20-Poly1305 descriptors at {:x?}",
                many.len(),
                many.iter().map(|d| d.at).collect::<Vec<_>>()
            )))
        }
    };
    Ok(Some(RingAeads {
        aes_gcm,
        chacha20_poly1305,
    }))
}

/// The hookable `seal` and `open` of a descriptor: distinct function entries, each on a proved
/// instruction boundary.
fn seal_open(image: &Image<'_>, d: &Descriptor) -> Result<SealOpen, LocateError> {
    let [_, seal, open] = d.functions;
    if seal == open {
        return Err(ambiguous(format!(
            "the descriptor at {:#x} has one function for seal and open",
            d.at
        )));
    }
    for (what, f) in [("seal", seal), ("open", open)] {
        if image.function_at(f).is_none() || !image.is_instruction_boundary(f) {
            return Err(ambiguous(format!(
                "{what} at {f:#x} (descriptor at {:#x}) is not a function entry",
                d.at
            )));
        }
    }
    Ok(SealOpen { seal, open })
}

/// Every record of three consecutive code pointers followed by a key length ring uses and a
/// small enum value (`id`, whose padding is zero in static data).
fn descriptors(image: &Image<'_>) -> Vec<Descriptor> {
    let pointers = image.code_pointers();
    let target = |slot: u64| {
        pointers
            .binary_search_by_key(&slot, |(s, _)| *s)
            .ok()
            .map(|i| pointers[i].1)
    };
    let mut found = Vec::new();
    for &(at, init) in pointers {
        let (Some(seal), Some(open)) = (target(at + 8), target(at + 16)) else {
            continue;
        };
        let (Some(key_len), Some(id)) = (image.word_at(at + 24), image.word_at(at + 32)) else {
            continue;
        };
        if KEY_LENS.contains(&key_len) && id < 8 && target(at + 24).is_none() {
            found.push(Descriptor {
                at,
                functions: [init, seal, open],
                key_len,
                id,
            });
        }
    }
    found
}

fn ambiguous(reason: String) -> LocateError {
    LocateError::Ambiguous {
        stack: "rustls-ring",
        reason,
    }
}
