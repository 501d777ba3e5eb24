//! HPACK (RFC 7541) per direction: whole decoding with `loona-hpack` while the dynamic table is
//! known, and otherwise partial decoding of what does not depend on the unknown entries.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::{cell::RefCell, collections::VecDeque, sync::OnceLock};

use loona_hpack::{huffman::HuffmanDecoder, Decoder};
use tracing::debug;

use crate::model::{MAX_HEADER_FIELDS, MAX_HEAD_BYTES};

pub(super) const DEFAULT_HEADER_TABLE_SIZE: usize = 4096;
pub(super) const MAX_HEADER_TABLE_SIZE: usize = 1 << 20;
pub(super) const HPACK_STATIC_ENTRIES: usize = 61;

/// The HPACK decoding context of one direction.
pub(super) struct Hpack {
    pub(super) decoder: Decoder<'static>,
    /// False once a header block was lost or failed to decode, or when the connection was
    /// joined late: the dynamic table may differ from the encoder's, so `decoder`'s entries are
    /// never used, and `known` takes its place.
    pub(super) synced: bool,
    /// While not synced: the entries added since the table was lost.
    pub(super) known: KnownEntries,
    pub(super) allowed_table_size: usize,
}

impl Hpack {
    pub(super) fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(DEFAULT_HEADER_TABLE_SIZE);
        Hpack {
            decoder,
            synced: true,
            known: KnownEntries::default(),
            allowed_table_size: DEFAULT_HEADER_TABLE_SIZE,
        }
    }

    /// The decoding side advertised SETTINGS_HEADER_TABLE_SIZE. The table itself only changes
    /// size through the encoder's size updates (RFC 7541 §4.2); the setting bounds them. Never
    /// below the default: a reduction takes effect only once acknowledged, and the SETTINGS frame
    /// and the header blocks travel in opposite directions, so we cannot tell which came first.
    pub(super) fn allow_table_size(&mut self, advertised: usize) {
        self.allowed_table_size =
            advertised.clamp(DEFAULT_HEADER_TABLE_SIZE, MAX_HEADER_TABLE_SIZE);
        self.decoder
            .set_max_allowed_table_size(self.allowed_table_size);
    }

    /// Some header block was not seen: from here on only what is added next is known.
    pub(super) fn lose(&mut self) {
        self.synced = false;
        self.known = KnownEntries::default();
    }

    /// Decodes a whole header block: its fields (names in lower case, at most
    /// [`MAX_HEADER_FIELDS`] of them and [`MAX_HEAD_BYTES`] in all), whether some could not be
    /// decoded, and whether some were left out for the budget. The whole block is still walked,
    /// so the dynamic table stays in step with the encoder's.
    pub(super) fn decode(&mut self, block: &[u8]) -> DecodedBlock {
        if !self.synced && starts_with_table_reset(block) {
            // A size update to zero empties the table: it is known again from here.
            self.decoder = Decoder::new();
            self.decoder
                .set_max_allowed_table_size(self.allowed_table_size);
            self.synced = true;
        }
        if self.synced {
            let mut fields = FieldList::default();
            match self
                .decoder
                .decode_with_cb(block, |name, value| fields.push(&name, &value))
            {
                Ok(()) => return fields.into_block(false),
                Err(e) => {
                    debug!("HPACK decoding failed, dynamic table lost: {e}");
                    // Entries this block added before the error are added again below, in
                    // their places.
                    self.lose();
                }
            }
        }
        decode_partially(block, &mut self.known)
    }
}

/// A header block's decoded fields, as far as they could be decoded and kept.
#[derive(Debug, Default)]
pub(super) struct DecodedBlock {
    pub(super) fields: Vec<(String, String)>,
    /// Some fields referred to dynamic-table entries the capture did not see.
    pub(super) incomplete: bool,
    /// Fields past the budget (count or bytes) were left out: the peer sent more than any
    /// head we keep (an HPACK bomb references one big entry thousands of times).
    pub(super) capped: bool,
}

impl DecodedBlock {
    /// Fields are missing, for whatever reason: the message says so.
    pub(super) fn missing_fields(&self) -> bool {
        self.incomplete || self.capped
    }
}

/// Decoded fields under the budget of one message head: a field past it is not copied.
#[derive(Default)]
pub(super) struct FieldList {
    fields: Vec<(String, String)>,
    bytes: usize,
    capped: bool,
}

impl FieldList {
    pub(super) fn push(&mut self, name: &[u8], value: &[u8]) {
        let bytes = self
            .bytes
            .saturating_add(name.len())
            .saturating_add(value.len());
        if self.capped || self.fields.len() >= MAX_HEADER_FIELDS || bytes > MAX_HEAD_BYTES {
            // Later fields are not taken either: which of them fit would depend on their sizes.
            self.capped = true;
            return;
        }
        self.bytes = bytes;
        self.fields.push(field(name, value));
    }

    pub(super) fn into_block(self, incomplete: bool) -> DecodedBlock {
        DecodedBlock {
            fields: self.fields,
            incomplete,
            capped: self.capped,
        }
    }
}

pub(super) fn field(name: &[u8], value: &[u8]) -> (String, String) {
    (
        String::from_utf8_lossy(name).to_ascii_lowercase(),
        String::from_utf8_lossy(value).into_owned(),
    )
}

/// The dynamic-table entries an encoder added since its decoder's table was lost, newest first.
/// They sit at the same indices in the encoder's table: index 62 is always the newest entry
/// (RFC 7541 §2.3.3), and evictions only ever remove the oldest ones, so as long as every
/// addition since is seen, index 62 + i is the i-th entry here, or one the encoder has evicted
/// and will not refer to. Entries older than these are unknown. An entry whose name was itself
/// an unknown reference is held as `None`, to keep the positions of the others.
#[derive(Default)]
pub(super) struct KnownEntries {
    pub(super) entries: VecDeque<Option<(String, String)>>,
    /// Sizes as RFC 7541 §4.1 counts them, unknown names counting as empty: a lower bound of
    /// the encoder's, so this never keeps fewer entries than the encoder's table holds.
    pub(super) size: usize,
}

impl KnownEntries {
    pub(super) fn add(&mut self, name: Option<String>, value: String) {
        let entry_size = name
            .as_ref()
            .map_or(0, String::len)
            .saturating_add(value.len());
        self.size = self.size.saturating_add(32).saturating_add(entry_size);
        self.entries.push_front(name.map(|name| (name, value)));
        while self.size > MAX_HEADER_TABLE_SIZE {
            let Some(oldest) = self.entries.pop_back() else {
                break;
            };
            let entry_size = oldest.map_or(0, |(n, v)| n.len().saturating_add(v.len()));
            self.size = self.size.saturating_sub(entry_size.saturating_add(32));
        }
    }

    /// The field at a table index, if it is known.
    pub(super) fn get(&self, index: usize) -> Option<(String, String)> {
        self.get_ref(index).cloned()
    }

    /// The same, not copied: a block may refer to one entry thousands of times.
    pub(super) fn get_ref(&self, index: usize) -> Option<&(String, String)> {
        match index {
            0 => None,
            1..=HPACK_STATIC_ENTRIES => index.checked_sub(1).and_then(|i| static_table().get(i)),
            _ => index
                .checked_sub(HPACK_STATIC_ENTRIES + 1)
                .and_then(|i| self.entries.get(i))
                .and_then(Option::as_ref),
        }
    }
}

/// The HPACK static table (RFC 7541 Appendix A), taken from the decoder that holds it.
pub(super) fn static_table() -> &'static [(String, String)] {
    static TABLE: OnceLock<Vec<(String, String)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (1..=HPACK_STATIC_ENTRIES as u8)
            .map(|index| {
                let mut entry = None;
                // A one-byte indexed field representation of each static index.
                let _ = Decoder::new().decode_with_cb(&[0x80 | index], |name, value| {
                    entry = Some(field(&name, &value));
                });
                entry.unwrap_or_default()
            })
            .collect()
    })
}

/// Decodes a header block against a table of which only `known` is known: static entries,
/// literals, and references to `known`, which it keeps up to date. The rest is skipped, never
/// guessed; the second value says whether anything was.
pub(super) fn decode_partially(block: &[u8], known: &mut KnownEntries) -> DecodedBlock {
    let mut fields = FieldList::default();
    let mut incomplete = false;
    let mut rest = block;
    while !rest.is_empty() {
        let Some((rep, this, next)) = field_extent(rest)
            .and_then(|rep| rest.split_at_checked(rep.len).map(|(a, b)| (rep, a, b)))
        else {
            // Malformed: whether it added an entry is unknown (the peer would have torn the
            // connection down; the positions of what follows cannot be trusted either way).
            *known = KnownEntries::default();
            return fields.into_block(true);
        };
        rest = next;
        match rep.kind {
            // Resizes only evict entries the encoder will not refer to any more.
            Representation::SizeUpdate => {}
            Representation::Indexed => match known.get_ref(rep.index) {
                Some((name, value)) => fields.push(name.as_bytes(), value.as_bytes()),
                None => incomplete = true,
            },
            Representation::Literal | Representation::Incremental => {
                let Some((name, value)) = literal(this, &rep, known) else {
                    if rep.kind == Representation::Incremental {
                        *known = KnownEntries::default();
                    }
                    incomplete = true;
                    continue;
                };
                if rep.kind == Representation::Incremental {
                    known.add(name.clone(), value.clone());
                }
                match name {
                    Some(name) => fields.push(name.as_bytes(), value.as_bytes()),
                    None => incomplete = true,
                }
            }
        }
    }
    fields.into_block(incomplete)
}

/// A literal field representation's name (`None` when it refers to an unknown entry) and
/// value; `None` when its strings do not decode.
pub(super) fn literal(
    this: &[u8],
    rep: &FieldExtent,
    known: &KnownEntries,
) -> Option<(Option<String>, String)> {
    let prefix = if rep.kind == Representation::Incremental {
        6
    } else {
        4
    };
    let (_, mut at) = hpack_integer(this, prefix)?;
    let name = if rep.index == 0 {
        let (name, used) = string_literal(this.get(at..)?)?;
        at = at.saturating_add(used);
        Some(String::from_utf8_lossy(&name).to_ascii_lowercase())
    } else {
        known.get(rep.index).map(|(name, _)| name)
    };
    let (value, _) = string_literal(this.get(at..)?)?;
    Some((name, String::from_utf8_lossy(&value).into_owned()))
}

/// An HPACK string literal (RFC 7541 §5.2) at the start of `buf`, Huffman-decoded if it is
/// encoded so, and the bytes it took.
pub(super) fn string_literal(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    thread_local! {
        static HUFFMAN: RefCell<HuffmanDecoder> = RefCell::new(HuffmanDecoder::new());
    }
    let huffman = buf.first()? & 0x80 != 0;
    let (len, used) = hpack_integer(buf, 7)?;
    let end = used.checked_add(len)?;
    let raw = buf.get(used..end)?;
    let decoded = if huffman {
        HUFFMAN.with(|h| h.borrow_mut().decode(raw).ok())?
    } else {
        raw.to_vec()
    };
    Some((decoded, end))
}

/// Whether a header block starts with dynamic table size updates one of which is to zero.
pub(super) fn starts_with_table_reset(block: &[u8]) -> bool {
    let mut rest = block;
    while let Some(rep) = field_extent(rest) {
        if rep.kind != Representation::SizeUpdate {
            return false;
        }
        if rep.index == 0 {
            return true;
        }
        rest = rest.get(rep.len..).unwrap_or_default();
    }
    false
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Representation {
    Indexed,
    Incremental,
    SizeUpdate,
    Literal,
}

/// One field representation at the start of a header block (RFC 7541 §6): its kind, its
/// length, and the table index it names (for a size update, the new size).
pub(super) struct FieldExtent {
    pub(super) kind: Representation,
    pub(super) len: usize,
    pub(super) index: usize,
}

/// Only the extent, which is all that is needed to split a block into its fields.
pub(super) fn field_extent(block: &[u8]) -> Option<FieldExtent> {
    let first = *block.first()?;
    let (kind, prefix) = if first & 0x80 != 0 {
        (Representation::Indexed, 7)
    } else if first & 0x40 != 0 {
        (Representation::Incremental, 6)
    } else if first & 0x20 != 0 {
        (Representation::SizeUpdate, 5)
    } else {
        (Representation::Literal, 4)
    };
    let (index, mut len) = hpack_integer(block, prefix)?;
    if matches!(kind, Representation::Incremental | Representation::Literal) {
        if index == 0 {
            len = len.checked_add(string_extent(block.get(len..)?)?)?;
        }
        len = len.checked_add(string_extent(block.get(len..)?)?)?;
    }
    Some(FieldExtent { kind, len, index })
}

/// An HPACK integer (RFC 7541 §5.1) and the bytes it took; at most four continuation bytes, as
/// the decoder allows.
pub(super) fn hpack_integer(buf: &[u8], prefix_bits: u32) -> Option<(usize, usize)> {
    let mask = 1usize.checked_shl(prefix_bits)?.checked_sub(1)?;
    let mut value = usize::from(*buf.first()?) & mask;
    if value < mask {
        return Some((value, 1));
    }
    // (bytes taken, bits the byte's seven are shifted by)
    let continuations = [(2, 0), (3, 7), (4, 14), (5, 21)];
    for (b, (used, shift)) in buf.iter().skip(1).zip(continuations) {
        value = value.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some((value, used));
        }
    }
    None
}

/// The length of an HPACK string literal (RFC 7541 §5.2) at the start of `buf`.
pub(super) fn string_extent(buf: &[u8]) -> Option<usize> {
    let (len, used) = hpack_integer(buf, 7)?;
    let total = used.checked_add(len)?;
    (total <= buf.len()).then_some(total)
}
