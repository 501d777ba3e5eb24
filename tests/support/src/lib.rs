//! Real parts for agent-tracer's end-to-end tests and benchmarks.

pub mod bun;
pub mod c_client;
pub mod cgroup;
pub mod codex;
pub mod deno;
pub mod deploy_tools;
pub mod e2e;
pub mod go;
mod h2c_upgrade;
pub mod kube_api;
pub mod mock_openai;
pub mod mock_providers;
pub mod npm;
pub mod otlp;
pub mod phoenix;
pub mod prometheus;
pub mod python;
pub mod responses_loop;
pub mod stripped;
pub mod tls;
pub mod tracer;

/// The workspace's target directory (where venvs and generated certificates live).
pub fn target_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}
