//! Which provider a host is, and where the server is.

/// `gen_ai.provider.name` for a host: known hosts by name; anything else speaking an OpenAI
/// dialect is reported as `openai`, the dialect it speaks (genai-spec §1.6).
pub fn provider_name(host: Option<&str>, _path: &str) -> &'static str {
    let Some(host) = host else {
        return "openai";
    };
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
        ("api.mistral.ai", "mistral_ai"),
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("api.x.ai", "x_ai"),
        ("api.perplexity.ai", "perplexity"),
        ("api.cohere.com", "cohere"),
        ("api.moonshot.ai", "moonshot_ai"),
        ("openrouter.ai", "openrouter"),
    ];
    KNOWN
        .iter()
        .find(|(pattern, _)| {
            if pattern.starts_with('.') {
                host.ends_with(pattern)
            } else {
                host == *pattern || host.ends_with(&format!(".{pattern}"))
            }
        })
        .map(|(_, name)| *name)
        .unwrap_or("openai")
}

/// `server.address` and `server.port` from a Host header (TLS default port 443).
pub fn server_of(host: Option<&str>) -> (Option<String>, Option<u16>) {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return (None, None);
    };
    // [v6]:port, v4:port, name:port, or no port.
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (Some(addr.to_string()), port.or(Some(443)));
        }
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(p) => (Some(name.to_string()), Some(p)),
            Err(_) => (Some(host.to_string()), Some(443)),
        },
        _ => (Some(host.to_string()), Some(443)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_and_fallback() {
        assert_eq!(
            provider_name(Some("api.openai.com"), "/v1/chat/completions"),
            "openai"
        );
        assert_eq!(
            provider_name(Some("myco.openai.azure.com"), "/"),
            "azure.ai.openai"
        );
        assert_eq!(provider_name(Some("API.GROQ.COM"), "/"), "groq");
        assert_eq!(
            provider_name(Some("127.0.0.1"), "/v1/chat/completions"),
            "openai"
        );
        assert_eq!(
            provider_name(Some("evilapi.openai.com.example"), "/"),
            "openai"
        );
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(
            server_of(Some("api.openai.com")),
            (Some("api.openai.com".into()), Some(443))
        );
        assert_eq!(
            server_of(Some("127.0.0.1:8443")),
            (Some("127.0.0.1".into()), Some(8443))
        );
        assert_eq!(
            server_of(Some("[::1]:9000")),
            (Some("::1".into()), Some(9000))
        );
        assert_eq!(server_of(Some("")), (None, None));
        assert_eq!(server_of(None), (None, None));
    }
}
