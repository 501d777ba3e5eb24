//! An HTTPS client on rustls, for agent-tracer's end-to-end tests: one OpenAI-style chat request
//! over HTTP/1.1, written and read through rustls's own `StreamOwned`, the way a Rust program
//! with no OpenSSL sends it. Built twice (tests/clients/rustls/aws-lc and .../ring): the crypto
//! provider is whichever one rustls was compiled with, so the source is the same.
//!
//! Usage: https_client BASE_URL [--wait-stdin]   (BASE_URL e.g. https://127.0.0.1:PORT/v1)
//!
//! TLS_VERSION=1.2|1.3 and TLS_CIPHER_SUITE=<part of a suite's name, e.g. CHACHA20> narrow what
//! it offers, so a test can make every cipher and record format of the provider carry the call.
//!
//! It trusts exactly the PEM certificate named by SSL_CERT_FILE and prints one JSON line:
//! {"pid":..., "suite":"<cipher suite>", "request":"<bytes written>", "response":"<bytes read>"},
//! so the test can compare the tracer's capture with what really crossed the TLS layer, byte
//! for byte. With --wait-stdin
//! it sends nothing before a line (or EOF) arrives on stdin: the test holds it there until the
//! tracer has hooked this executable.

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::TcpStream,
    sync::Arc,
};

use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};

const REQUEST_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from rustls"}]}"#;

fn main() {
    if let Err(e) = run() {
        eprintln!("https_client: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let wait = args.len() == 3 && args[2] == "--wait-stdin";
    if args.len() != 2 && !wait {
        return Err(format!("usage: {} BASE_URL [--wait-stdin]", args[0]).into());
    }
    let base = args[1].trim_end_matches('/');
    let rest = base.strip_prefix("https://").ok_or("BASE_URL must be https://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);

    let ca = std::env::var("SSL_CERT_FILE").map_err(|_| "SSL_CERT_FILE is not set")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)? {
        roots.add(cert?)?;
    }
    // Whichever provider this build of rustls has, narrowed as asked.
    let mut provider = (**rustls::ClientConfig::builder().crypto_provider()).clone();
    if let Ok(want) = std::env::var("TLS_CIPHER_SUITE") {
        provider
            .cipher_suites
            .retain(|s| format!("{:?}", s.suite()).contains(&want));
    }
    let versions: &[&rustls::SupportedProtocolVersion] =
        match std::env::var("TLS_VERSION").as_deref() {
            Ok("1.2") => &[&rustls::version::TLS12],
            Ok("1.3") => &[&rustls::version::TLS13],
            Ok(other) => return Err(format!("TLS_VERSION {other}: 1.2 or 1.3").into()),
            Err(_) => rustls::DEFAULT_VERSIONS,
        };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if wait {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }

    let server_name = ServerName::try_from(host.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name)?;
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(authority)?);
    let request = format!(
        "POST /{path}/chat/completions HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer sk-rustls-secret\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{REQUEST_BODY}",
        REQUEST_BODY.len()
    );
    tls.write_all(request.as_bytes())?;
    tls.flush()?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A server that closes without close_notify still sent the whole response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.into()),
    }
    let suite = tls
        .conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    println!(
        "{{\"pid\":{},\"suite\":{},\"request\":{},\"response\":{}}}",
        std::process::id(),
        json_string(suite.as_bytes()),
        json_string(request.as_bytes()),
        json_string(&response)
    );
    Ok(())
}

/// A JSON string of the bytes (the response is text; anything else is escaped as \u00XX).
fn json_string(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\u{:04x}", b)),
        }
    }
    out.push('"');
    out
}
