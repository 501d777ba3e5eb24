//! Real parts for agent-tracer's end-to-end tests and benchmarks.

pub mod bun;
pub mod c_client;
pub mod cgroup;
pub mod codex;
pub mod daemonset;
pub mod deno;
pub mod deploy_tools;
pub mod e2e;
pub mod go;
mod h2c_upgrade;
pub mod hostile;
pub mod kube_api;
pub mod mock_agents;
pub mod mock_openai;
pub mod mock_providers;
pub mod npm;
pub mod otlp;
pub mod phoenix;
pub mod plot;
pub mod podman;
pub mod prometheus;
pub mod prometheus_server;
pub mod python;
pub mod real_agents;
pub mod responses_loop;
pub mod stripped;
pub mod tls;
pub mod tracer;

/// The workspace's target directory (where venvs and generated certificates live).
/// `d` stretched by `AGENT_TRACER_TEST_SLOWDOWN` (a whole factor, default 1): the kernel smoke
/// suite runs these tests in guests under software emulation (`cargo xtask vmtest`), several
/// times slower than here, where the same waits would time out before anything went wrong.
pub fn patience(d: std::time::Duration) -> std::time::Duration {
    let factor = std::env::var("AGENT_TRACER_TEST_SLOWDOWN")
        .ok()
        .and_then(|f| f.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d.saturating_mul(factor)
}

pub fn target_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}
