//! An HTTPS client on reqwest (tokio, hyper, rustls with ring), for agent-tracer's end-to-end
//! tests: two OpenAI-style chat requests on one connection, the first answered with JSON, the
//! second streamed (SSE), each body read as it arrives. Over HTTP/2 when the server offers it
//! by ALPN, else HTTP/1.1.
//!
//! Usage: reqwest_client BASE_URL [--wait-stdin | --wait-between]
//! (BASE_URL e.g. https://127.0.0.1:PORT/v1)
//!
//! It trusts exactly the PEM certificate named by SSL_CERT_FILE and prints one JSON line:
//! {"pid":..., "version":"HTTP/2.0", "statuses":[..], "bodies":["...", "..."]}. With
//! --wait-stdin it sends nothing before a line (or EOF) arrives on stdin: the test holds it
//! there until the tracer has hooked this executable. With --wait-between it makes the first
//! call at once, prints {"first":"done"} and waits for the line before the second: a connection
//! already open, and in use, when the tracer starts.

use tokio::io::AsyncBufReadExt as _;

pub const PLAIN_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from reqwest"}]}"#;
pub const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"weather?"}],"stream":true,"stream_options":{"include_usage":true}}"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("reqwest_client: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let option = args.get(2).map(String::as_str);
    let (wait, wait_between) = (
        option == Some("--wait-stdin"),
        option == Some("--wait-between"),
    );
    if args.len() > 3 || (args.len() == 3 && !wait && !wait_between) || args.len() < 2 {
        return Err(format!(
            "usage: {} BASE_URL [--wait-stdin | --wait-between]",
            args[0]
        )
        .into());
    }
    let url = format!("{}/chat/completions", args[1].trim_end_matches('/'));
    let ca = std::env::var("SSL_CERT_FILE").map_err(|_| "SSL_CERT_FILE is not set")?;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
        .no_proxy()
        .build()?;
    let wait_for_stdin = || async {
        let mut line = String::new();
        tokio::io::BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await
    };
    if wait {
        wait_for_stdin().await?;
    }
    let (mut version, mut statuses, mut bodies) = (String::new(), Vec::new(), Vec::new());
    for (i, body) in [PLAIN_BODY, STREAM_BODY].into_iter().enumerate() {
        if i == 1 && wait_between {
            println!("{}", serde_json::json!({"first": "done"}));
            wait_for_stdin().await?;
        }
        let mut response = client
            .post(&url)
            .bearer_auth("sk-reqwest-secret")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        version = format!("{:?}", response.version());
        statuses.push(response.status().as_u16());
        let mut received = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            received.extend_from_slice(&chunk);
        }
        bodies.push(String::from_utf8(received)?);
    }
    println!(
        "{}",
        serde_json::json!({
            "pid": std::process::id(),
            "version": version,
            "statuses": statuses,
            "bodies": bodies,
        })
    );
    Ok(())
}
