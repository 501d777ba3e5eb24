//! What every stage shares and which imports nothing of ours.

pub mod redact;
