//! Self-validation of hooks placed by inference (issue 7, item 5).
//!
//! A locator can be wrong: a function that names itself in an error string might, in some build
//! nobody tested, be a different function with a different signature. Such a hook would feed the
//! pipeline garbage (or ciphertext), so each inferred entry probe gets its own attach cookie,
//! which the kernel copies into every record it produces. The first bytes a cookie delivers
//! decide: if they parse as HTTP/1.x, the HTTP/2 preface or an HTTP/2 frame, or a WebSocket
//! frame, the hook is trusted from then on; otherwise its records are dropped and the attacher
//! detaches it and reports it. Records arriving before the decision (when the first bytes are too
//! few to judge) are held, then released or dropped with it.

use std::collections::HashMap;

use super::DataChunk;

use crate::protocols::sniff::MAX_FIRST_BYTES;
pub use crate::protocols::sniff::{verdict, Verdict};

/// Records held per pending hook; beyond, the oldest are dropped (and counted by the caller).
const MAX_HELD: usize = 256;

/// An inferred hook, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferredHook {
    pub binary: String,
    pub function: String,
}

/// A hook whose first bytes did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub cookie: u32,
    pub hook: InferredHook,
    /// The bytes it was judged on.
    pub first: Vec<u8>,
}

#[derive(Debug)]
enum State {
    Pending {
        first: Vec<u8>,
        held: Vec<DataChunk>,
    },
    Trusted,
    Rejected,
}

/// The cookies of inferred hooks and what their first bytes said. Shared (behind a mutex)
/// between the attacher, which registers hooks and detaches rejected ones, and the ring-buffer
/// reader, which passes every record with a cookie through [`Validator::check`].
#[derive(Debug, Default)]
pub struct Validator {
    hooks: HashMap<u32, (InferredHook, State)>,
    next: u32,
    rejected: Vec<Rejection>,
    /// How many of `rejected` were already reported by [`Validator::peek_rejected_new`].
    reported: usize,
    /// Cookies newly trusted, for the attacher's log.
    trusted: Vec<(u32, InferredHook, &'static str)>,
    /// Records dropped since [`Validator::take_dropped`]: from rejected hooks...
    dropped_rejected: u64,
    /// ...and held beyond `MAX_HELD` while a hook awaits its verdict.
    dropped_held: u64,
}

/// Records a [`Validator`] dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub rejected: u64,
    pub held_over: u64,
}

impl Validator {
    /// A fresh cookie for an inferred hook (never 0: 0 means "no cookie").
    pub fn register(&mut self, hook: InferredHook) -> u32 {
        self.next += 1;
        let cookie = self.next;
        self.hooks.insert(
            cookie,
            (
                hook,
                State::Pending {
                    first: Vec::new(),
                    held: Vec::new(),
                },
            ),
        );
        cookie
    }

    /// Forgets a cookie whose hook could not be attached.
    pub fn unregister(&mut self, cookie: u32) {
        self.hooks.remove(&cookie);
    }

    /// The records to hand on now for this one: itself, nothing (held or dropped), or itself
    /// with the records held before it.
    pub fn check(&mut self, chunk: DataChunk) -> Vec<DataChunk> {
        let cookie = chunk.cookie;
        let Some((hook, state)) = self.hooks.get_mut(&cookie) else {
            // Not an inferred hook's (or one already forgotten): nothing to judge.
            return vec![chunk];
        };
        match state {
            State::Trusted => vec![chunk],
            State::Rejected => {
                self.dropped_rejected += 1;
                Vec::new()
            }
            State::Pending { first, held } => {
                // Judge on the start of calls: a call's later chunks continue what was judged.
                if chunk.offset == 0 && first.len() < MAX_FIRST_BYTES {
                    let take = (MAX_FIRST_BYTES - first.len()).min(chunk.data.len());
                    first.extend_from_slice(&chunk.data[..take]);
                }
                let mut v = verdict(first);
                if v == Verdict::NeedMore && first.len() >= MAX_FIRST_BYTES {
                    v = Verdict::Invalid;
                }
                match v {
                    Verdict::Valid(protocol) => {
                        let mut out = std::mem::take(held);
                        out.push(chunk);
                        self.trusted.push((cookie, hook.clone(), protocol));
                        *state = State::Trusted;
                        out
                    }
                    Verdict::Invalid => {
                        self.dropped_rejected += held.len() as u64 + 1;
                        self.rejected.push(Rejection {
                            cookie,
                            hook: hook.clone(),
                            first: std::mem::take(first),
                        });
                        *state = State::Rejected;
                        Vec::new()
                    }
                    Verdict::NeedMore => {
                        if held.len() >= MAX_HELD {
                            held.remove(0);
                            self.dropped_held += 1;
                        }
                        held.push(chunk);
                        Vec::new()
                    }
                }
            }
        }
    }

    /// Records dropped since the last call, for the reader's counters.
    pub fn take_dropped(&mut self) -> Dropped {
        Dropped {
            rejected: std::mem::take(&mut self.dropped_rejected),
            held_over: std::mem::take(&mut self.dropped_held),
        }
    }

    /// Hooks rejected since the last call, for the attacher to detach.
    pub fn take_rejected(&mut self) -> Vec<Rejection> {
        self.reported = 0;
        std::mem::take(&mut self.rejected)
    }

    /// Hooks rejected and not yet reported (they stay queued for [`take_rejected`]), for the
    /// reader to report at once.
    ///
    /// [`take_rejected`]: Self::take_rejected
    pub fn peek_rejected_new(&mut self) -> Vec<Rejection> {
        let new = self.rejected[self.reported.min(self.rejected.len())..].to_vec();
        self.reported = self.rejected.len();
        new
    }

    /// Hooks trusted since the last call, with the protocol their first bytes parsed as.
    pub fn take_trusted(&mut self) -> Vec<(u32, InferredHook, &'static str)> {
        std::mem::take(&mut self.trusted)
    }

    /// (cookie, hook, "pending" | "trusted" | "rejected") for every inferred hook.
    pub fn states(&self) -> Vec<(u32, InferredHook, &'static str)> {
        let mut v: Vec<_> = self
            .hooks
            .iter()
            .map(|(c, (h, s))| {
                let s = match s {
                    State::Pending { .. } => "pending",
                    State::Trusted => "trusted",
                    State::Rejected => "rejected",
                };
                (*c, h.clone(), s)
            })
            .collect();
        v.sort_by_key(|(c, _, _)| *c);
        v
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use tracer_common::{Direction, Source};

    use super::*;

    fn chunk(cookie: u32, offset: u64, data: &'static [u8]) -> DataChunk {
        DataChunk {
            pid: 1,
            source: Source::Tls,
            conn_id: 7,
            direction: Direction::Egress,
            timestamp_ns: 0,
            call_len: data.len() as u64,
            offset,
            stream_offset: 0,
            cookie,
            data: Bytes::from_static(data),
        }
    }

    fn hook() -> InferredHook {
        InferredHook {
            binary: "/bin/x".into(),
            function: "ssl_write_internal".into(),
        }
    }

    #[test]
    fn a_hook_is_trusted_after_its_first_bytes_parse() {
        let mut v = Validator::default();
        let c = v.register(hook());
        assert_ne!(c, 0);
        // Short first read: held until the next one decides.
        assert!(v.check(chunk(c, 0, b"HT")).is_empty());
        let out = v.check(chunk(c, 0, b"TP/1.1 200 OK\r\n"));
        assert_eq!(out.len(), 2, "the held record comes first");
        assert_eq!(&out[0].data[..], b"HT");
        assert_eq!(v.take_trusted().len(), 1);
        // Trusted: anything passes from now on.
        assert_eq!(v.check(chunk(c, 0, b"\x17\x03\x03")).len(), 1);
        assert!(v.take_rejected().is_empty());
        // Records without a cookie, or an unknown one, are not judged.
        assert_eq!(v.check(chunk(0, 0, b"\x17")).len(), 1);
    }

    #[test]
    fn a_hook_whose_first_bytes_do_not_parse_is_rejected_once() {
        let mut v = Validator::default();
        let c = v.register(hook());
        assert!(v
            .check(chunk(c, 0, b"\x17\x03\x03\x00\x45\x00\x00\x00\x00\x00"))
            .is_empty());
        // Reported once at once, still queued for the attacher to detach.
        assert_eq!(v.peek_rejected_new().len(), 1);
        assert!(v.peek_rejected_new().is_empty());
        let rejected = v.take_rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!((rejected[0].cookie, &rejected[0].hook), (c, &hook()));
        // Later records of the rejected hook are dropped, not reported again.
        assert!(v.check(chunk(c, 0, b"POST / HTTP/1.1\r\n")).is_empty());
        assert!(v.take_rejected().is_empty());
        assert_eq!(
            v.take_dropped(),
            Dropped {
                rejected: 2,
                held_over: 0
            }
        );
        assert_eq!(v.take_dropped(), Dropped::default());
        assert_eq!(v.states()[0].2, "rejected");
    }

    #[test]
    fn records_held_past_the_bound_are_dropped_oldest_first_and_counted() {
        let mut v = Validator::default();
        let c = v.register(hook());
        // Continuation chunks (offset > 0) add nothing to the first bytes: no verdict yet.
        assert!(v.check(chunk(c, 0, b"P")).is_empty());
        for _ in 0..MAX_HELD + 3 {
            assert!(v.check(chunk(c, 1, b"x")).is_empty());
        }
        assert_eq!(v.take_dropped().held_over, 4);
        let out = v.check(chunk(c, 0, b"OST / HTTP/1.1\r\n"));
        assert_eq!(out.len(), MAX_HELD + 1);
    }

    proptest! {
        #[test]
        fn any_split_of_the_first_bytes_gives_the_same_verdict(split in 1usize..17) {
            let whole: &'static [u8] = b"POST /v1/chat/completions HTTP/1.1\r\n";
            let mut v = Validator::default();
            let c = v.register(hook());
            let mut out = v.check(chunk(c, 0, &whole[..split]));
            out.extend(v.check(chunk(c, 0, &whole[split..])));
            prop_assert_eq!(out.len(), 2);
            prop_assert_eq!(v.states()[0].2, "trusted");
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = verdict(&bytes);
        }
    }
}
