//! Run configuration, in layers: a command-line flag, then its `AGENT_TRACER_<FLAG>` environment
//! variable, then the standard OpenTelemetry environment variables (for the exporter's
//! settings), then the config file (TOML, `--config FILE`, else [`DEFAULT_CONFIG_FILE`] when it
//! exists), then the documented defaults.
//!
//! The variables and the file are laid under the command line generically, by flag name, from
//! clap's own description of `run` (see [`RunArgs::parse_layered`], in `layers`): a new flag is
//! settable everywhere without being listed again here.
//!
//! One hop: the flags resolve straight into each stage's own config (`AgentConfig`,
//! `ProcessesConfig`, `MetricsConfig`, `OtlpConfig`, the pipeline's), which owns its defaults
//! (`Default`, and the constants the flags' defaults name) and its checks (`validate`). The
//! flags of a stage are declared beside its resolution: `agent`, `processes`, `metrics`,
//! `export`.

mod agent;
mod export;
mod layers;
mod metrics;
mod processes;
#[cfg(test)]
mod tests;

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Args;

pub use self::{
    agent::{AgentArgs, Convention},
    export::ConsoleMode,
    layers::{DEFAULT_CONFIG_FILE, ENV_PREFIX},
    metrics::MetricsArgs,
    processes::ProcessesArgs,
};
use crate::{
    agent::DEFAULT_CONTENT_MAX_BYTES,
    daemon::pipeline::{PipelineConfig, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_BYTES},
    export::{otlp::OtlpConfig, retry::DEFAULT_BUFFER_SPANS},
    genai::{semconv::ContentPolicy, GenAiConfig},
    telemetry::metrics::config::MetricsConfig,
};

#[derive(Clone, Debug, Args)]
#[command(
    after_help = "Every flag can also be set by an environment variable, AGENT_TRACER_ and \
the flag's name in capitals with underscores (AGENT_TRACER_CAPTURE_CONTENT=true), or in the TOML \
config file by the flag's name (capture_content = true, otlp_header = [\"a=1\"]). A flag beats \
its variable, which beats the OTEL_* variables, which beat the file, which beats the default."
)]
pub struct RunArgs {
    /// TOML config file setting any of these flags by name. Default: /etc/agent-tracer/config.toml
    /// when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve /healthz (the tracer and its pipeline are alive) and /readyz (probes attached) over
    /// HTTP on this address, e.g. 127.0.0.1:9465. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// OTLP endpoint. For gRPC the collector URL (http://host:4317); for http/protobuf the base
    /// URL (/v1/traces is appended). Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, then
    /// OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,

    /// grpc or http/protobuf. Default: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, then
    /// OTEL_EXPORTER_OTLP_PROTOCOL, then grpc for port 4317 and http/protobuf otherwise.
    #[arg(long)]
    pub otlp_protocol: Option<String>,

    /// Extra OTLP request header, key=value; repeatable. Adds to OTEL_EXPORTER_OTLP_HEADERS.
    #[arg(long = "otlp-header")]
    pub otlp_headers: Vec<String>,

    /// service.name for every exported resource. Default: OTEL_SERVICE_NAME, else each traced
    /// process's executable name.
    #[arg(long)]
    pub service_name: Option<String>,

    /// The tracer's memory budget, in MiB. The capture queue (records between the ring buffer
    /// and the pipeline), the OTLP retry buffer, the bodies in progress on every connection and
    /// the connections' other parser state (buffered heads and frames, HPACK tables) each hold
    /// at most a quarter of it; past that they drop, counted (`pipeline_queue_full`,
    /// `export_dropped_spans{reason=buffer_full}`, `body_bytes_not_kept{reason=memory_budget}`,
    /// `connections_evicted{reason=memory_budget}`, the least recently active first).
    /// The default fits the Helm chart's 1 GiB memory limit.
    #[arg(long, default_value_t = DEFAULT_MEMORY_BUDGET_MIB, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    pub memory_budget_mib: u64,

    /// Spans kept in memory for retry while the OTLP endpoint is unreachable or throttling;
    /// past this the oldest are dropped (and counted). Must be at least 1.
    #[arg(long, default_value_t = DEFAULT_BUFFER_SPANS, value_parser = clap::value_parser!(u64).range(1..))]
    pub export_buffer_spans: u64,

    /// Console output of spans.
    #[arg(long, value_enum, default_value_t = ConsoleMode::Auto)]
    pub console: ConsoleMode,

    /// Export prompt and completion content (gen_ai.input.messages / gen_ai.output.messages).
    #[arg(long)]
    pub capture_content: bool,

    /// Cap on each content attribute, in bytes; longer content is shortened, keeping its JSON shape.
    #[arg(long, default_value_t = DEFAULT_CONTENT_MAX_BYTES)]
    pub content_max_bytes: usize,

    /// Kernel ring buffer size in bytes (rounded up to a power of two).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub ring_buffer_bytes: u32,

    /// Largest HTTP body kept in memory per message; the rest is counted, not kept.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// A connection silent this long with a request still unanswered is closed as interrupted.
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_secs: u64,

    /// Debugging: write every reassembled stream to DIR, one file per connection and direction
    /// (they contain plaintext secrets; for fixtures and bug reports on test traffic only).
    #[arg(long, value_name = "DIR")]
    pub record_streams: Option<std::path::PathBuf>,

    /// An executable never hooked (repeatable): its processes' TLS calls are not traced and
    /// cost them nothing. For a high-volume server or proxy on the node whose traffic is not an
    /// agent's (a model server's own side, an ingress). Matched by the file itself, as it is
    /// when the tracer starts (device and inode: any name or container path that leads to it);
    /// a shared library such as libssl is hooked for every process that maps it all the same.
    #[arg(long, value_name = "PATH")]
    pub skip_executable: Vec<std::path::PathBuf>,

    /// At stop, write every health counter (zeros included) to FILE as JSON:
    /// `{"counters": {"records": 12, ...}, "unsupported_tls": [...]}`. The counters for programs
    /// (tests, the bench, a supervisor); the `tracer stopped:` log line is for people.
    #[arg(long, value_name = "FILE")]
    pub summary_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub processes: ProcessesArgs,

    /// Ids of the flags whose value came from the config file: the OTEL_* variables rank above
    /// them.
    #[arg(skip)]
    pub from_file: BTreeSet<String>,
}

/// `--memory-budget-mib`'s default: under the Helm chart's 1 GiB limit with room for the
/// binary, the kernel maps' user-side copies and the allocator.
pub const DEFAULT_MEMORY_BUDGET_MIB: u64 = 768;

/// Everything `run` needs, each stage's part in its own type.
#[derive(Clone, Debug)]
pub struct Config {
    pub otlp: Option<OtlpConfig>,
    pub console: bool,
    pub ring_buffer_bytes: u32,
    pub health_listen: Option<SocketAddr>,
    /// `--memory-budget-mib`, in bytes: the capture queue gets a quarter of it (the retry
    /// buffer's quarter is in `otlp`).
    pub memory_budget_bytes: u64,
    /// Where the health counters are written at stop, as JSON.
    pub summary_file: Option<std::path::PathBuf>,
    /// `--skip-executable`: files never hooked (the capture).
    pub skip_executables: Vec<std::path::PathBuf>,
    /// streams, protocols, genai, agent and the process catalogue.
    pub pipeline: PipelineConfig,
    pub metrics: MetricsConfig,
}

impl Config {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        Self::resolve(args, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// `env` looks up an environment variable; a function so tests need not touch the real one.
    pub fn resolve(args: &RunArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let otlp = export::traces(args, &env)?;
        let content = ContentPolicy {
            capture: args.capture_content,
            max_bytes: args.content_max_bytes,
        };
        let config = Config {
            console: args.console.enabled(otlp.is_some()),
            otlp,
            ring_buffer_bytes: args.ring_buffer_bytes,
            health_listen: args.health_listen,
            summary_file: args.summary_file.clone(),
            skip_executables: args.skip_executable.clone(),
            memory_budget_bytes: args.memory_budget_mib.saturating_mul(1024 * 1024),
            pipeline: PipelineConfig {
                max_body_bytes: args.max_body_bytes,
                body_budget_bytes: args.memory_budget_mib.saturating_mul(1024 * 1024) / 4,
                connection_state_budget_bytes: args.memory_budget_mib.saturating_mul(1024 * 1024)
                    / 4,
                idle_timeout: Duration::from_secs(args.idle_timeout_secs),
                record_streams: args.record_streams.clone(),
                genai: GenAiConfig {
                    capture_content: args.capture_content,
                    max_body_bytes: args.max_body_bytes,
                },
                agent: args.agent.resolve(content)?,
                processes: args.processes.resolve(&env)?,
            },
            metrics: metrics::resolve(args, &env)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Each stage's checks.
    pub fn validate(&self) -> Result<()> {
        self.pipeline.validate()?;
        self.metrics.validate()
    }
}
