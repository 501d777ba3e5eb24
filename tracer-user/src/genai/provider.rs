//! Which provider a host is, and where the server is.

use super::Dialect;
use crate::model::Peer;

/// `gen_ai.provider.name`: known hosts by name; anything else by the dialect it speaks
/// (genai-spec §1.6: the attribute names the telemetry flavour, the hosted model goes in the model).
pub fn provider_name(host: Option<&str>, dialect: &dyn Dialect) -> &'static str {
    host.and_then(known_provider)
        .unwrap_or_else(|| dialect.provider())
}

/// The provider a host name is known to be (`api.openai.com` is `openai`), whatever it speaks:
/// also what names an encrypted-only connection's provider from its SNI.
pub fn known_provider(host: &str) -> Option<&'static str> {
    let host = host.to_ascii_lowercase();
    const KNOWN: &[(&str, &str)] = &[
        ("api.openai.com", "openai"),
        (".openai.azure.com", "azure.ai.openai"),
        (".cognitiveservices.azure.com", "azure.ai.openai"),
        (".services.ai.azure.com", "azure.ai.inference"),
        (".inference.ai.azure.com", "azure.ai.inference"),
        ("api.anthropic.com", "anthropic"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("aiplatform.googleapis.com", "gcp.vertex_ai"),
        // Regional Vertex hosts: {region}-aiplatform.googleapis.com.
        ("-aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("api.x.ai", "x_ai"),
        ("api.perplexity.ai", "perplexity"),
        ("api.cohere.com", "cohere"),
        ("api.moonshot.ai", "moonshot_ai"),
        ("openrouter.ai", "openrouter"),
        (".amazonaws.com", "aws.bedrock"),
        (".api.aws", "aws.bedrock"),
    ];
    KNOWN
        .iter()
        .find(|(pattern, _)| {
            if pattern.starts_with('.') || pattern.starts_with('-') {
                host.ends_with(pattern)
            } else {
                host == *pattern || host.ends_with(&format!(".{pattern}"))
            }
        })
        .map(|(_, name)| *name)
}

/// `server.address` and `server.port`: the Host header names the server the client meant (behind
/// any proxy); then the TLS server name; then the connected address. A port not in the Host
/// header is the connected port, else the scheme's default.
pub fn server_of(host: Option<&str>, peer: &Peer, tls: bool) -> (Option<String>, Option<u16>) {
    let (name, port) = host.map(split_host).unwrap_or((None, None));
    let address = name
        .or_else(|| peer.server_name.clone())
        .or_else(|| peer.address.map(|a| a.ip().to_string()));
    let port = port
        .or_else(|| peer.address.map(|a| a.port()))
        .or(address.as_ref().map(|_| if tls { 443 } else { 80 }));
    (address, port)
}

/// `[v6]:port`, `v4:port`, `name:port`, or no port.
fn split_host(host: &str) -> (Option<String>, Option<u16>) {
    let host = host.trim();
    if host.is_empty() {
        return (None, None);
    }
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            return (
                Some(addr.to_string()),
                after.strip_prefix(':').and_then(|p| p.parse().ok()),
            );
        }
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(p) => (Some(name.to_string()), Some(p)),
            Err(_) => (Some(host.to_string()), None),
        },
        _ => (Some(host.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genai::{anthropic, bedrock, gemini, ollama, openai};

    #[test]
    fn dialect_decides_unknown_hosts() {
        assert_eq!(
            provider_name(Some("127.0.0.1"), &anthropic::Messages),
            "anthropic"
        );
        assert_eq!(
            provider_name(None, &ollama::Ollama { generate: false }),
            "ollama"
        );
        assert_eq!(
            provider_name(
                Some("us-central1-aiplatform.googleapis.com"),
                &gemini::GenerateContent { stream: true }
            ),
            "gcp.vertex_ai"
        );
        assert_eq!(
            provider_name(
                Some("bedrock-runtime.us-east-1.amazonaws.com"),
                &anthropic::Messages
            ),
            "aws.bedrock"
        );
        assert_eq!(
            provider_name(
                Some("127.0.0.1"),
                &bedrock::Runtime(bedrock::Operation::ConverseStream)
            ),
            "aws.bedrock"
        );
    }

    #[test]
    fn known_hosts_and_fallback() {
        let chat = &openai::Chat;
        assert_eq!(provider_name(Some("api.openai.com"), chat), "openai");
        assert_eq!(
            provider_name(Some("myco.openai.azure.com"), chat),
            "azure.ai.openai"
        );
        assert_eq!(provider_name(Some("API.GROQ.COM"), chat), "groq");
        assert_eq!(provider_name(Some("127.0.0.1"), chat), "openai");
        assert_eq!(
            provider_name(Some("evilapi.openai.com.example"), chat),
            "openai"
        );
    }

    #[test]
    fn host_header_forms() {
        let none = Peer::default();
        let s = |h, tls| server_of(h, &none, tls);
        assert_eq!(
            s(Some("api.openai.com"), true),
            (Some("api.openai.com".into()), Some(443))
        );
        assert_eq!(
            s(Some("localhost"), false),
            (Some("localhost".into()), Some(80))
        );
        assert_eq!(
            s(Some("127.0.0.1:8443"), true),
            (Some("127.0.0.1".into()), Some(8443))
        );
        assert_eq!(
            s(Some("[::1]:9000"), true),
            (Some("::1".into()), Some(9000))
        );
        assert_eq!(s(Some(""), true), (None, None));
        assert_eq!(s(None, true), (None, None));
    }

    #[test]
    fn peer_fills_what_the_host_header_lacks() {
        let peer = Peer {
            address: Some("10.0.0.5:8080".parse().unwrap()),
            server_name: Some("api.example.com".into()),
        };
        assert_eq!(
            server_of(Some("gateway"), &peer, false),
            (Some("gateway".into()), Some(8080))
        );
        assert_eq!(
            server_of(None, &peer, true),
            (Some("api.example.com".into()), Some(8080))
        );
        let bare = Peer {
            address: Some("10.0.0.5:11434".parse().unwrap()),
            server_name: None,
        };
        assert_eq!(
            server_of(None, &bare, false),
            (Some("10.0.0.5".into()), Some(11434))
        );
    }
}
