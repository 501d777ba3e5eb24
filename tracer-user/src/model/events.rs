//! What the streams stage tells the protocol parsers: bytes in order per connection and
//! direction, explicit holes where bytes were lost, and the ends of connections and processes.

use bytes::Bytes;

use super::connection::{ConnKey, Direction, Peer};

#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Data {
        conn: ConnKey,
        direction: Direction,
        timestamp_ns: u64,
        bytes: Bytes,
    },
    /// `len` bytes are missing at this point of the stream.
    Gap {
        conn: ConnKey,
        direction: Direction,
        timestamp_ns: u64,
        len: u64,
    },
    /// New knowledge of a connection's peer.
    Peer {
        conn: ConnKey,
        peer: Peer,
    },
    /// The connection ended (its socket was closed).
    Closed {
        conn: ConnKey,
        timestamp_ns: u64,
    },
    ProcessExit {
        pid: u32,
        timestamp_ns: u64,
    },
}
