//! The data every stage shares, at the bottom of the tree: connections and the stream events
//! about them, request/response exchanges, and the spans exporters consume. Only data and the
//! small functions that read it; nothing here imports another module of this crate, so any
//! stage may use it without creating a circle.

pub mod connection;
pub mod events;
pub mod exchange;
pub mod redact;
pub mod resource;
pub mod span;

pub use connection::{ConnKey, Direction, Peer, Source};
pub use events::StreamEvent;
pub use exchange::{
    header, BodyCut, ExchangeEnd, Headers, HttpExchange, HttpRequest, HttpResponse,
    MAX_HEADER_FIELDS, MAX_HEAD_BYTES,
};
