//! The mock OpenAI server as a standalone program, for benchmarks and manual runs:
//! `mock-llm [ADDR]` prints `listening <base-url> cert=<pem path>` and serves until killed.

use anyhow::Result;

#[tokio::main]
async fn main() -> Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let dir = tracer_testkit::target_dir().join("mock-llm");
    let server = tracer_testkit::mock_openai::start_on(&addr, &dir).await?;
    println!(
        "listening {} cert={}",
        server.base_url(),
        server.cert_path.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
