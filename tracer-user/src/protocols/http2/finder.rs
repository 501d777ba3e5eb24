//! Finding where frames start again when it is not known from the preface on.

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use super::frames::{frame_chain, FrameChain, MAX_FOUND_FRAME_LEN};
use crate::model::Direction;

pub(super) const MAX_FIND_HOLD: usize = MAX_FOUND_FRAME_LEN as usize + (64 << 10);

/// Reads of one direction held until frames are found: from the start of one read, that read
/// and the ones after it make a [`FrameChain::Whole`]. A peer that goes idle has flushed whole
/// frames, so the first read or write of the next exchange starts a frame (the recorded Go and
/// curl connections do); one cut mid-frame (a large frame read in pieces) only delays finding
/// them to the next read that starts one.
#[derive(Debug, Default)]
pub struct FrameFinder {
    pub(super) held: Vec<u8>,
}

impl FrameFinder {
    /// The next read. Returns the frames when found (the held reads and this one, or this one
    /// alone), and how many bytes were given up for not being frames.
    pub fn push(&mut self, direction: Direction, bytes: &[u8]) -> (Option<Vec<u8>>, u64) {
        let mut dropped = 0;
        if !self.held.is_empty() {
            self.held.extend_from_slice(bytes);
            match frame_chain(direction, &self.held) {
                FrameChain::Whole => return (Some(std::mem::take(&mut self.held)), 0),
                FrameChain::Partial if self.held.len() <= MAX_FIND_HOLD => return (None, 0),
                // The held reads did not start a frame after all; this read may.
                _ => dropped = self.clear().saturating_sub(bytes.len() as u64),
            }
        }
        match frame_chain(direction, bytes) {
            FrameChain::Whole => (Some(bytes.to_vec()), dropped),
            FrameChain::Partial if bytes.len() <= MAX_FIND_HOLD => {
                self.held.extend_from_slice(bytes);
                (None, dropped)
            }
            _ => (None, dropped.saturating_add(bytes.len() as u64)),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// What is held, given up.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Gives up what is held; returns how many bytes that was.
    pub fn clear(&mut self) -> u64 {
        let len = self.held.len() as u64;
        self.held.clear();
        len
    }
}

impl crate::protocols::state_bytes::StateBytes for FrameFinder {
    fn state_bytes(&self) -> u64 {
        self.held.len() as u64
    }
}
