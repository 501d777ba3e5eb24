//! The bytes every connection's bodies in progress hold together, drawn from the daemon's
//! `--memory-budget-mib` (a quarter of it, beside the capture queue's and the retry buffer's).
//! Each message's body is already capped by the body limit; what many connections each holding
//! a body up to that limit add up to is capped here. A body that cannot get room stops being
//! kept, as one past the body limit does: its length is still counted (the span's body size),
//! its bytes are not, and the bytes left out are counted by which bound left them out.
//!
//! A body's charge is given back when it leaves the parser (frozen into an exchange, which the
//! pipeline turns into spans and drops in the same pass) or when its connection is dropped.

// Fed by lengths from the wire: an overflow here would be a panic on bad input.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

use bytes::{Bytes, BytesMut};

use crate::{model::BodyCut, telemetry::health::Health};

/// The shared pool. Cloned into every parser; all clones draw from the same bytes.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    held: Arc<AtomicU64>,
    limit: u64,
}

impl Default for BodyBudget {
    /// No bound beyond each body's own (tests and tools that feed a parser directly).
    fn default() -> Self {
        BodyBudget::new(u64::MAX)
    }
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        BodyBudget {
            held: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// Bytes charged to bodies in progress now.
    pub fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }

    /// Grants up to `want` bytes (all of them, or what is left).
    fn take(&self, want: u64) -> u64 {
        let mut granted = 0;
        // A compare-and-swap loop: concurrent takers never grant past the limit together.
        let _ = self.held.fetch_update(Relaxed, Relaxed, |held| {
            granted = self.limit.saturating_sub(held).min(want);
            Some(held.saturating_add(granted))
        });
        granted
    }

    fn give_back(&self, bytes: u64) {
        let _ = self
            .held
            .fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(bytes)));
    }
}

/// Bytes of a body that were not kept, by the bound that left them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotKept {
    /// Past the message's body limit (`--max-body-bytes`).
    pub body_limit: u64,
    /// Past what the memory budget had left.
    pub memory_budget: u64,
}

impl NotKept {
    /// Counts the bytes in the health counters, by the bound that left them out.
    pub fn count_in(self, health: &Health) {
        Health::add(&health.body_bytes_over_limit, self.body_limit);
        Health::add(&health.body_bytes_over_budget, self.memory_budget);
    }

    pub fn add(&mut self, other: NotKept) {
        self.body_limit = self.body_limit.saturating_add(other.body_limit);
        self.memory_budget = self.memory_budget.saturating_add(other.memory_budget);
    }
}

/// The kept bytes of one body in progress and the budget they are charged to. Always a
/// prefix of the body: once bytes were left out, none after them are kept (room given back
/// to the budget later must not make a body with a hole in it).
#[derive(Debug, Default)]
pub struct KeptBody {
    bytes: BytesMut,
    /// The budget `bytes` are charged to (set by the first `extend`).
    budget: Option<BodyBudget>,
    cut: Option<BodyCut>,
}

impl KeptBody {
    /// Keeps what of `data` fits under `max_body` and in `budget`; says what was left out.
    pub fn extend(&mut self, data: &[u8], max_body: usize, budget: &BodyBudget) -> NotKept {
        let len = data.len() as u64;
        match self.cut {
            Some(BodyCut::BodyLimit) => {
                return NotKept {
                    body_limit: len,
                    memory_budget: 0,
                }
            }
            Some(BodyCut::MemoryBudget) => {
                return NotKept {
                    body_limit: 0,
                    memory_budget: len,
                }
            }
            None => {}
        }
        let room = max_body.saturating_sub(self.bytes.len()).min(data.len());
        let granted = budget.take(room as u64);
        if granted > 0 {
            self.budget.get_or_insert_with(|| budget.clone());
        }
        let kept = usize::try_from(granted).unwrap_or(room);
        self.bytes
            .extend_from_slice(data.get(..kept).unwrap_or(data));
        if kept < room {
            self.cut = Some(BodyCut::MemoryBudget);
        } else if room < data.len() {
            self.cut = Some(BodyCut::BodyLimit);
        }
        NotKept {
            body_limit: data.len().saturating_sub(room) as u64,
            memory_budget: room.saturating_sub(kept) as u64,
        }
    }

    /// Bytes kept from outside a budget (a body handed over whole, already charged where it
    /// came from and given back there).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        KeptBody {
            bytes: BytesMut::from(bytes),
            budget: None,
            cut: None,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Why later bytes of this body were left out, once some were (the span says so).
    pub fn cut(&self) -> Option<BodyCut> {
        self.cut
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The body, leaving the parser but still held (see [`Held`]): its charge goes with it.
    pub fn into_charged(mut self) -> (Bytes, BodyCharge) {
        let charge = BodyCharge {
            budget: self.budget.take(),
            bytes: self.bytes.len() as u64,
        };
        (std::mem::take(&mut self.bytes).freeze(), charge)
    }

    /// The body, leaving the parser: its charge is given back.
    pub fn freeze(mut self) -> Bytes {
        if let Some(budget) = self.budget.take() {
            budget.give_back(self.bytes.len() as u64);
        }
        std::mem::take(&mut self.bytes).freeze()
    }
}

impl Drop for KeptBody {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.bytes.len() as u64);
        }
    }
}

/// Bytes a body that left its parser still holds of the budget; given back when dropped.
#[derive(Debug, Default)]
pub struct BodyCharge {
    budget: Option<BodyBudget>,
    bytes: u64,
}

impl Drop for BodyCharge {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.bytes);
        }
    }
}

/// A message that left its parser but waits in the tracker (a request for its answer, an
/// answer for its request): its body stays charged to the budget until it is handed on.
#[derive(Debug)]
pub struct Held<T> {
    value: T,
    charge: BodyCharge,
}

impl<T> Held<T> {
    pub fn new(value: T, charge: BodyCharge) -> Self {
        Held { value, charge }
    }

    /// The message, handed on (to become an exchange): its charge is given back.
    pub fn into_inner(self) -> T {
        let Held { value, charge } = self;
        drop(charge);
        value
    }
}

impl<T> std::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_the_budget_and_give_it_back_when_they_leave() {
        let budget = BodyBudget::new(10);
        let mut a = KeptBody::default();
        let mut b = KeptBody::default();
        assert_eq!(a.extend(b"123456", 100, &budget), NotKept::default());
        assert_eq!(
            b.extend(b"abcdefgh", 100, &budget),
            NotKept {
                body_limit: 0,
                memory_budget: 4
            }
        );
        assert_eq!(b.as_slice(), b"abcd");
        assert_eq!(budget.held(), 10);
        assert_eq!(&a.freeze()[..], b"123456");
        assert_eq!(budget.held(), 4);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_body_limit_is_reported_apart_from_the_budget() {
        let budget = BodyBudget::new(3);
        let mut body = KeptBody::default();
        assert_eq!(
            body.extend(b"abcdef", 4, &budget),
            NotKept {
                body_limit: 2,
                memory_budget: 1
            }
        );
        assert_eq!(body.as_slice(), b"abc");
    }

    #[test]
    fn room_given_back_later_never_makes_a_hole() {
        let budget = BodyBudget::new(4);
        let mut first = KeptBody::default();
        let mut second = KeptBody::default();
        first.extend(b"1234", 100, &budget);
        assert_eq!(second.extend(b"ab", 100, &budget).memory_budget, 2);
        drop(first);
        // Room again, but the second body lost bytes: nothing after them is kept.
        assert_eq!(second.extend(b"cd", 100, &budget).memory_budget, 2);
        assert!(second.is_empty());
        assert_eq!(budget.held(), 0);
    }
}
