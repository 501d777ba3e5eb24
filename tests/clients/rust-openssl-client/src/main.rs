//! POSTs one JSON request over HTTPS with the `openssl` crate (vendored, static OpenSSL 3) and
//! reads the whole response (`Connection: close`), then prints one JSON line with exactly the
//! bytes it sent and received, hex-encoded, so the test can compare the tracer's capture byte
//! for byte.
//!
//! Usage: rust-openssl-client PORT CA_PEM BODY
//! It waits for a line on stdin before connecting, so the test can make sure the tracer has
//! hooked this executable first.

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::TcpStream,
};

use openssl::ssl::{SslConnector, SslMethod};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, ca, body] = &args[..] else {
        eprintln!("usage: rust-openssl-client PORT CA_PEM BODY");
        std::process::exit(2);
    };
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");

    let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    connector.set_ca_file(ca).expect("CA file");
    let connector = connector.build();
    let tcp = TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("connect");
    // The mock's certificate names 127.0.0.1 / localhost.
    let mut tls = connector.connect("localhost", tcp).expect("TLS handshake");

    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-rust-openssl-secret\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).expect("write");
    let mut response = Vec::new();
    // A server may close without close_notify; what arrived is still the response.
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(_) if !response.is_empty() => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    println!(
        "{{\"pid\":{},\"sent\":\"{}\",\"received\":\"{}\"}}",
        std::process::id(),
        hex(request.as_bytes()),
        hex(&response)
    );
}
