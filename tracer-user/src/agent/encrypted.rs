//! Encrypted-only connections: the honest fallback for TLS no hook could see inside (a stripped
//! static TLS library no locator knows, an unsupported stack, a hook that failed). The kernel
//! counts such a client connection's ciphertext from its ClientHello on, without copying a byte,
//! and reports the totals when the socket closes or its process exits. This module turns that
//! report, with the connection's peer and SNI, into one client span per connection, so a user
//! sees that a call to `api.openai.com` happened, how big and how slow it was, even when its
//! content is out of reach.
//!
//! One span per connection, not per request: the request boundaries inside the ciphertext are
//! unknown. The number of times the connection turned from writing to reading is reported as a
//! hint of how many request/response cycles it carried (the handshake counts as one).

use std::{net::SocketAddr, sync::Arc};

use rand::Rng;
use tracer_common::TlsTotals;

use crate::{
    capture::Clock,
    genai::provider::known_provider,
    model::resource::ProcessInfo,
    model::span::{AttrValue, Span, SpanEvent, SpanKind, SpanStatus},
    streams::Peer,
};

/// What is known of a TLS client connection whose plaintext was not captured.
#[derive(Clone, Debug, PartialEq)]
pub struct EncryptedConnection {
    pub pid: u32,
    pub fd: i32,
    pub peer: Peer,
    pub totals: TlsTotals,
}

impl EncryptedConnection {
    /// CLOCK_MONOTONIC start: the ClientHello's write.
    pub fn start_ns(&self) -> u64 {
        self.totals.start_ns
    }

    /// CLOCK_MONOTONIC end: the last byte of the last response; a connection that got none
    /// ends with its last write. A pooled connection's close (and its close_notify alert) may come
    /// long after its last exchange, so neither stretches the span.
    pub fn end_ns(&self) -> u64 {
        let end = if self.totals.last_response_ns > 0 {
            self.totals.last_response_ns
        } else {
            self.totals.last_ns
        };
        end.max(self.totals.start_ns)
    }

    /// The host the client asked for (SNI), else the address it connected to.
    pub fn server(&self) -> Option<String> {
        self.peer
            .server_name
            .clone()
            .or_else(|| self.peer.address.map(|a| a.ip().to_string()))
    }
}

/// `tls {host}`: the HTTP conventions name a span by its method, which is encrypted here.
pub fn span_name(conn: &EncryptedConnection) -> String {
    match conn.server() {
        Some(server) => format!("tls {server}"),
        None => "tls".to_string(),
    }
}

/// A provider named by the SNI alone. Bedrock shares `*.amazonaws.com` with every AWS service:
/// only its own hosts count.
pub fn provider_of(server_name: &str) -> Option<&'static str> {
    let provider = known_provider(server_name)?;
    if provider == "aws.bedrock" && !server_name.to_ascii_lowercase().contains("bedrock") {
        return None;
    }
    Some(provider)
}

pub fn attributes(conn: &EncryptedConnection) -> Vec<(&'static str, AttrValue)> {
    let t = &conn.totals;
    let mut a: Vec<(&'static str, AttrValue)> = Vec::with_capacity(14);
    a.push(("agent_tracer.capture.encrypted", true.into()));
    if let Some(server) = conn.server() {
        a.push(("server.address", server.into()));
    }
    let port = conn.peer.address.map(|p| p.port()).unwrap_or(443);
    a.push(("server.port", port.into()));
    if let Some(peer) = conn.peer.address {
        a.push(("network.peer.address", peer.ip().to_string().into()));
        a.push(("network.peer.port", peer.port().into()));
        a.push((
            "network.type",
            match peer {
                SocketAddr::V4(_) => "ipv4",
                SocketAddr::V6(_) => "ipv6",
            }
            .into(),
        ));
    }
    a.push(("network.transport", "tcp".into()));
    if let Some(sni) = &conn.peer.server_name {
        a.push(("tls.client.server_name", sni.clone().into()));
        if let Some(provider) = provider_of(sni) {
            a.push(("gen_ai.provider.name", provider.into()));
        }
    }
    a.push(("agent_tracer.tls.sent_bytes", t.sent.into()));
    a.push(("agent_tracer.tls.received_bytes", t.received.into()));
    a.push(("agent_tracer.tls.turns", u64::from(t.turns).into()));
    a
}

/// The client span of an encrypted-only connection; the process is filled in from the process catalogue.
pub fn span(conn: &EncryptedConnection, clock: &Clock) -> Span {
    let mut rng = rand::rng();
    let t = &conn.totals;
    let mut events = Vec::new();
    if t.first_response_ns > 0 {
        events.push(SpanEvent {
            name: "agent_tracer.tls.first_response",
            time_unix_ns: clock.unix_ns(t.first_response_ns),
            attributes: Vec::new(),
        });
    }
    Span {
        trace_id: rng.random(),
        span_id: rng.random(),
        parent_span_id: None,
        name: span_name(conn),
        kind: SpanKind::Client,
        start_unix_ns: clock.unix_ns(conn.start_ns()),
        end_unix_ns: clock.unix_ns(conn.end_ns()),
        attributes: attributes(conn),
        // No response at all is worth a look, but may be a client that gave up: not an error.
        status: SpanStatus::Unset,
        events,
        process: Arc::new(ProcessInfo::unknown(conn.pid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(sni: Option<&str>) -> EncryptedConnection {
        EncryptedConnection {
            pid: 7,
            fd: 5,
            peer: Peer {
                address: Some("127.0.0.1:8443".parse().unwrap()),
                server_name: sni.map(str::to_string),
            },
            totals: TlsTotals {
                sent: 900,
                received: 4200,
                start_ns: 1_000,
                first_response_ns: 2_000,
                last_response_ns: 5_000,
                last_ns: 9_000,
                turns: 2,
                last_direction: 0,
            },
        }
    }

    fn attr<'a>(a: &'a [(&'static str, AttrValue)], key: &str) -> Option<&'a AttrValue> {
        a.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn a_known_provider_host_names_the_provider() {
        let c = conn(Some("api.openai.com"));
        let a = attributes(&c);
        assert_eq!(span_name(&c), "tls api.openai.com");
        assert_eq!(
            attr(&a, "agent_tracer.capture.encrypted"),
            Some(&AttrValue::Bool(true))
        );
        assert_eq!(attr(&a, "server.address"), Some(&"api.openai.com".into()));
        assert_eq!(attr(&a, "server.port"), Some(&AttrValue::Int(8443)));
        assert_eq!(attr(&a, "network.peer.address"), Some(&"127.0.0.1".into()));
        assert_eq!(attr(&a, "gen_ai.provider.name"), Some(&"openai".into()));
        assert_eq!(
            attr(&a, "agent_tracer.tls.sent_bytes"),
            Some(&AttrValue::Int(900))
        );
        assert_eq!(
            attr(&a, "agent_tracer.tls.received_bytes"),
            Some(&AttrValue::Int(4200))
        );
        assert_eq!(attr(&a, "agent_tracer.tls.turns"), Some(&AttrValue::Int(2)));
    }

    #[test]
    fn an_unknown_host_has_no_provider_and_aws_needs_bedrock() {
        let a = attributes(&conn(Some("example.org")));
        assert_eq!(attr(&a, "gen_ai.provider.name"), None);
        assert_eq!(provider_of("s3.us-east-1.amazonaws.com"), None);
        assert_eq!(
            provider_of("bedrock-runtime.us-east-1.amazonaws.com"),
            Some("aws.bedrock")
        );
        assert_eq!(provider_of("API.ANTHROPIC.COM"), Some("anthropic"));
    }

    #[test]
    fn without_sni_the_address_names_the_server() {
        let c = conn(None);
        assert_eq!(span_name(&c), "tls 127.0.0.1");
        let a = attributes(&c);
        assert_eq!(attr(&a, "tls.client.server_name"), None);
        let nothing = EncryptedConnection {
            peer: Peer::default(),
            ..c
        };
        assert_eq!(span_name(&nothing), "tls");
        let a = attributes(&nothing);
        assert_eq!(attr(&a, "server.port"), Some(&AttrValue::Int(443)));
        assert_eq!(attr(&a, "network.peer.address"), None);
    }

    #[test]
    fn the_span_ends_at_the_last_response_byte_not_the_close() {
        let c = conn(Some("api.openai.com"));
        assert_eq!((c.start_ns(), c.end_ns()), (1_000, 5_000));
        let unanswered = EncryptedConnection {
            totals: TlsTotals {
                first_response_ns: 0,
                last_response_ns: 0,
                received: 0,
                ..c.totals
            },
            ..c.clone()
        };
        assert_eq!(unanswered.end_ns(), 9_000);
        let s = span(&c, &Clock::new());
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.duration_ns(), 4_000);
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "agent_tracer.tls.first_response");
        assert_eq!(s.events[0].time_unix_ns - s.start_unix_ns, 1_000);
        assert!(span(&unanswered, &Clock::new()).events.is_empty());
    }
}
