//! agent-tracer: traces AI agents' LLM calls with eBPF, no code change, and exports OTLP.

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};
use tracer_user::daemon::{app, check, config};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "agent-tracer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace every process on this host (needs root).
    Run(Box<config::RunArgs>),
    /// Say whether this host can run the tracer: kernel features, capabilities, mounts, and the
    /// TLS libraries running processes use. Exits non-zero naming what is missing.
    Check,
    /// Find the TLS functions of executables without symbols (static OpenSSL, ...) the way the
    /// tracer does, and print what was found as JSON lines, with the time it took. Results are
    /// cached like the tracer's ($AGENT_TRACER_CACHE_DIR, else /var/cache/agent-tracer/locate).
    Locate {
        /// Executables to analyse.
        #[arg(required = true)]
        binaries: Vec<std::path::PathBuf>,
        /// Cache directory (overrides $AGENT_TRACER_CACHE_DIR).
        #[arg(long)]
        cache_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            // The kube client logs every failed request at ERROR: an unreachable API would
            // print one per watch retry. The tracer's watcher reports outages itself, once.
            EnvFilter::try_from_env("AGENT_TRACER_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off")),
        )
        .init();
    // Help, version and malformed command lines end here.
    let cli = Cli::parse();
    let result = match cli.command {
        // Parsed again with the AGENT_TRACER_* variables and the config file laid under it.
        Command::Run(_) => config::RunArgs::parse_layered(
            std::env::args_os().skip(1),
            |k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()),
            Some(std::path::Path::new(config::DEFAULT_CONFIG_FILE)),
        )
        .and_then(|args| config::Config::from_args(&args))
        .and_then(|config| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(app::run(config))
        }),
        Command::Locate {
            binaries,
            cache_dir,
        } => {
            use tracer_user::capture::locate::{locate_file, DiskCache};
            let cache = cache_dir.map_or_else(DiskCache::from_env, DiskCache::at);
            binaries.iter().try_for_each(|binary| {
                let report = locate_file(binary, &cache)?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            })
        }
        Command::Check => {
            return match check::run(&mut std::io::stdout()) {
                Ok(report) if report.missing.is_empty() => ExitCode::SUCCESS,
                Ok(report) => {
                    eprintln!(
                        "agent-tracer cannot run on this host: missing {}",
                        report.missing.join("; ")
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("agent-tracer check failed: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
