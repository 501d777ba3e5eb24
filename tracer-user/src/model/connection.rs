//! Which connection bytes belong to, and what is known of its other end.

use std::net::SocketAddr;

pub use tracer_common::{Direction, Source};

/// Identifies a connection: the process, where it was seen, and the library's connection object
/// (TLS) or the file descriptor (sockets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub pid: u32,
    pub source: Source,
    pub conn_id: u64,
}

impl ConnKey {
    pub fn socket(pid: u32, fd: i32) -> Self {
        ConnKey {
            pid,
            source: Source::Socket,
            conn_id: fd as u32 as u64,
        }
    }
}

/// What is known of a connection's other end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub address: Option<SocketAddr>,
    /// The host name the TLS client asked for (SNI).
    pub server_name: Option<String>,
}
