//! The mock OpenAI server as a standalone program, for benchmarks and manual runs:
//! `mock-llm [ADDR] [--h2 | --h2c | --h2c-upgrade]` prints `listening <base-url> cert=<pem
//! path>` and serves until killed. `--h2` offers HTTP/2 over TLS (ALPN) on an ephemeral port,
//! `--h2c` HTTP/2 with prior knowledge on a plain one, `--h2c-upgrade` HTTP/1.1 that switches
//! to HTTP/2 when a request asks `Upgrade: h2c`.

use anyhow::Result;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let dir = tracer_testkit::target_dir().join("mock-llm");
    let server = if flag("--h2") {
        tracer_testkit::mock_openai::start_h2(&dir).await?
    } else if flag("--h2c-upgrade") {
        tracer_testkit::mock_openai::start_h2c_upgrade(true).await?
    } else if flag("--h2c") {
        tracer_testkit::mock_openai::start_h2c().await?
    } else {
        tracer_testkit::mock_openai::start_on(&addr, &dir).await?
    };
    println!(
        "listening {} cert={}",
        server.base_url(),
        server.cert_path.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
