//! HTTP/2 (RFC 9113) over a captured connection: the frames of both directions, reassembled per
//! stream into the same [`HttpExchange`]s HTTP/1.1 gives, so that what reads exchanges (genai,
//! spans) does not care which protocol carried them. Over TLS (ALPN `h2`, what curl and Go
//! choose by default), on plain sockets with prior knowledge (h2c), and after an HTTP/1.1
//! `Upgrade: h2c`. `HttpTracker` hands a connection here when its client sends the connection
//! preface, when its server switches protocols to h2c, or when the first bytes it sees of a
//! connection read as HTTP/2 frames (the tracer joined it after its preface).
//!
//! Header blocks are decoded with the `loona-hpack` crate. It is the maintained successor of
//! `fluke-hpack`, itself a fork of the unmaintained `hpack`: a decoder over whole header blocks
//! with no I/O and no unsafe code, that returns errors rather than panicking on malformed input
//! (its 0.4.3 fixed the last known panic) and can refuse dynamic-table size updates above a
//! bound, which keeps a peer from growing our memory. `h2`'s decoder is private to that crate
//! even with its `unstable` feature.
//!
//! HPACK state is per direction and must be seen from the start of the connection. When it was
//! not (the tracer joined late, or a header block was lost in a gap), header blocks are still
//! decoded, but only with what does not depend on the unknown dynamic-table entries: static
//! entries, literals, and entries added since the table was lost, whose positions are known
//! because every addition since was seen. The messages say so (`http2_incomplete_headers`,
//! `http2_joined_mid_connection`), and nothing is ever guessed.
//!
//! Where frames start is only known from the preface on. A connection joined later, or a
//! direction whose framing was lost to a gap, is picked up again at the start of a read whose
//! bytes, alone or with the reads after it, are exactly a chain of plausible whole frames
//! ([`FrameFinder`]): clients and servers write whole frames per call when they go idle, so the
//! next exchange on a joined connection starts at such a read.

mod connection;
mod finder;
mod frames;
mod hpack;
mod reader;
mod stream;
#[cfg(test)]
mod tests;

pub use connection::Http2Connection;
pub use finder::FrameFinder;
pub use frames::{frame_chain, FrameChain, PREFACE};
