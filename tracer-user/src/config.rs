//! Run configuration: command-line flags over the standard OpenTelemetry environment variables
//! over documented defaults.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use crate::{
    agent::{cost::PriceTable, AgentNames},
    enrich::{EnrichConfig, Selection, SelectionRules},
    export::{
        otlp::{parse_key_values, OtlpConfig, Protocol},
        retry::DEFAULT_BUFFER_SPANS,
    },
    metrics::config::{MetricsArgs, MetricsConfig},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsoleMode {
    /// On when no OTLP endpoint is configured.
    Auto,
    Always,
    Never,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
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
    #[arg(long, default_value_t = 16 * 1024)]
    pub content_max_bytes: usize,

    /// Kernel ring buffer size in bytes (rounded up to a power of two).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub ring_buffer_bytes: u32,

    /// Largest HTTP body kept in memory per message; the rest is counted, not kept.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// A connection silent this long with a request still unanswered is closed as interrupted.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout_secs: u64,

    /// Debugging: write every reassembled stream to DIR, one file per connection and direction
    /// (they contain plaintext secrets; for fixtures and bug reports on test traffic only).
    #[arg(long, value_name = "DIR")]
    pub record_streams: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub processes: ProcessArgs,
}

/// Which processes are traced, and how they are described (containers, Kubernetes pods). The
/// rules' semantics are in the README ("Choosing what is traced").
#[derive(Clone, Debug, Args)]
pub struct ProcessArgs {
    /// Trace only processes whose executable (path or name) contains PATTERN, or matches it as
    /// a glob; repeatable. With several include rules of any kind, matching one is enough.
    #[arg(long, value_name = "PATTERN")]
    pub include_exe: Vec<String>,
    /// Never trace processes whose executable matches PATTERN; repeatable. Excludes win.
    #[arg(long, value_name = "PATTERN")]
    pub exclude_exe: Vec<String>,
    /// Trace only processes whose command line contains PATTERN (or matches it as a glob).
    #[arg(long, value_name = "PATTERN")]
    pub include_cmdline: Vec<String>,
    #[arg(long, value_name = "PATTERN")]
    pub exclude_cmdline: Vec<String>,
    /// Trace only processes in a container whose id starts with PATTERN or whose Kubernetes
    /// container name is PATTERN (or matches it as a glob).
    #[arg(long, value_name = "PATTERN")]
    pub include_container: Vec<String>,
    #[arg(long, value_name = "PATTERN")]
    pub exclude_container: Vec<String>,
    /// Trace only processes in pods of Kubernetes namespace PATTERN (exact, or a glob).
    #[arg(long, value_name = "PATTERN")]
    pub include_namespace: Vec<String>,
    #[arg(long, value_name = "PATTERN")]
    pub exclude_namespace: Vec<String>,
    /// The kubelet's pod log directory, where pod names, namespaces and container names are
    /// read from (no Kubernetes API access needed).
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pub pod_logs_dir: std::path::PathBuf,
    /// k8s.node.name on every resource. Default: NODE_NAME, then K8S_NODE_NAME (set them from
    /// the downward API's spec.nodeName).
    #[arg(long)]
    pub node_name: Option<String>,
}

impl ProcessArgs {
    fn resolve(&self, env: &impl Fn(&str) -> Option<String>) -> Result<EnrichConfig> {
        let selection = Selection::new(&SelectionRules {
            include_exe: self.include_exe.clone(),
            exclude_exe: self.exclude_exe.clone(),
            include_cmdline: self.include_cmdline.clone(),
            exclude_cmdline: self.exclude_cmdline.clone(),
            include_container: self.include_container.clone(),
            exclude_container: self.exclude_container.clone(),
            include_namespace: self.include_namespace.clone(),
            exclude_namespace: self.exclude_namespace.clone(),
        })?;
        Ok(EnrichConfig {
            pod_logs_dir: self.pod_logs_dir.clone(),
            node_name: self
                .node_name
                .clone()
                .or_else(|| env("NODE_NAME"))
                .or_else(|| env("K8S_NODE_NAME")),
            selection,
        })
    }
}

/// How calls become agent runs.
#[derive(Clone, Debug, Args)]
pub struct AgentArgs {
    /// A run with no model call or tool activity for this long ends as abandoned.
    #[arg(long, default_value_t = 600)]
    pub run_idle_timeout_secs: u64,

    /// Price table (JSON, the shape of tracer-user/data/prices.json) laid over the built-in one.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<std::path::PathBuf>,

    /// Share of agent runs exported, decided when a run starts (0.0 to 1.0). Runs with an error
    /// are always exported.
    #[arg(long, default_value_t = 1.0)]
    pub sample_ratio: f64,

    /// Attribute conventions on spans: genai (OpenTelemetry GenAI), openinference (Arize
    /// Phoenix), or both.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Convention::Genai, Convention::Openinference])]
    pub conventions: Vec<Convention>,

    /// Names agents by their command line: PATTERN=NAME (the first rule whose PATTERN occurs
    /// in the command line wins); repeatable. Default: the script an interpreter runs, else
    /// the executable's name.
    #[arg(long = "agent-name", value_name = "PATTERN=NAME")]
    pub agent_names: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Convention {
    Genai,
    Openinference,
}

/// Resolved `AgentArgs`.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub run_idle_timeout: Duration,
    pub prices: PriceTable,
    pub sample_ratio: f64,
    pub genai_attributes: bool,
    pub openinference_attributes: bool,
    pub names: AgentNames,
}

impl AgentArgs {
    fn resolve(&self) -> Result<AgentSettings> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bail!(
                "--sample-ratio must be between 0 and 1, not {}",
                self.sample_ratio
            );
        }
        Ok(AgentSettings {
            run_idle_timeout: Duration::from_secs(self.run_idle_timeout_secs),
            prices: match &self.prices {
                Some(path) => PriceTable::with_overrides(path)?,
                None => PriceTable::builtin(),
            },
            sample_ratio: self.sample_ratio,
            genai_attributes: self.conventions.contains(&Convention::Genai),
            openinference_attributes: self.conventions.contains(&Convention::Openinference),
            names: AgentNames::parse(&self.agent_names)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub otlp: Option<OtlpConfig>,
    pub console: bool,
    pub capture_content: bool,
    pub content_max_bytes: usize,
    pub ring_buffer_bytes: u32,
    pub max_body_bytes: usize,
    pub idle_timeout: Duration,
    pub record_streams: Option<std::path::PathBuf>,
    pub agent: AgentSettings,
    pub metrics: MetricsConfig,
    pub processes: EnrichConfig,
}

impl Config {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        Self::resolve(args, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// `env` looks up an environment variable; a function so tests need not touch the real one.
    pub fn resolve(args: &RunArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let explicit_protocol = args
            .otlp_protocol
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .map(|p| p.parse::<Protocol>())
            .transpose()?;
        // (url, is it already the full traces URL?)
        let endpoint = args
            .otlp_endpoint
            .clone()
            .map(|e| (e, false))
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").map(|e| (e, true)))
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| (e, false)));
        let otlp = match endpoint {
            None => None,
            Some((url, full)) => {
                let protocol = explicit_protocol.unwrap_or_else(|| {
                    if url.trim_end_matches('/').ends_with(":4317") {
                        Protocol::Grpc
                    } else {
                        Protocol::HttpProtobuf
                    }
                });
                let endpoint = match protocol {
                    Protocol::HttpProtobuf if !full => {
                        format!("{}/v1/traces", url.trim_end_matches('/'))
                    }
                    _ => url,
                };
                let mut headers = match env("OTEL_EXPORTER_OTLP_HEADERS") {
                    Some(h) => parse_key_values(&h).context("OTEL_EXPORTER_OTLP_HEADERS")?,
                    None => Vec::new(),
                };
                for h in &args.otlp_headers {
                    headers.extend(parse_key_values(h).context("--otlp-header")?);
                }
                let resource_attributes = match env("OTEL_RESOURCE_ATTRIBUTES") {
                    Some(r) => parse_key_values(&r).context("OTEL_RESOURCE_ATTRIBUTES")?,
                    None => Vec::new(),
                };
                Some(OtlpConfig {
                    endpoint,
                    protocol,
                    headers,
                    service_name: args
                        .service_name
                        .clone()
                        .or_else(|| env("OTEL_SERVICE_NAME")),
                    resource_attributes,
                    timeout: Duration::from_secs(10),
                    buffer_spans: usize::try_from(args.export_buffer_spans)
                        .context("--export-buffer-spans is too large")?,
                })
            }
        };
        let console = match args.console {
            ConsoleMode::Auto => otlp.is_none(),
            ConsoleMode::Always => true,
            ConsoleMode::Never => false,
        };
        Ok(Config {
            otlp,
            console,
            capture_content: args.capture_content,
            content_max_bytes: args.content_max_bytes,
            ring_buffer_bytes: args.ring_buffer_bytes,
            max_body_bytes: args.max_body_bytes,
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            record_streams: args.record_streams.clone(),
            agent: args.agent.resolve()?,
            metrics: MetricsConfig::resolve(args, &env)?,
            processes: args.processes.resolve(&env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn resolve(argv: &[&str], vars: &[(&str, &str)]) -> Config {
        let cli = Cli::parse_from(std::iter::once("x").chain(argv.iter().copied()));
        Config::resolve(&cli.run, |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    #[test]
    fn console_by_default_when_no_endpoint() {
        let c = resolve(&[], &[]);
        assert!(c.otlp.is_none());
        assert!(c.console);
    }

    #[test]
    fn env_endpoint_with_protocol_rules() {
        let c = resolve(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
        let o = c.otlp.unwrap();
        assert_eq!(o.protocol, Protocol::HttpProtobuf);
        assert_eq!(o.endpoint, "http://c:4318/v1/traces");
        assert!(!c.console);

        let c = resolve(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
        assert_eq!(c.otlp.unwrap().protocol, Protocol::Grpc);

        let c = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom"),
            ],
        );
        assert_eq!(c.otlp.unwrap().endpoint, "http://t:9/custom");
    }

    #[test]
    fn flags_override_env() {
        let c = resolve(
            &[
                "--otlp-endpoint",
                "http://f:1",
                "--otlp-protocol",
                "grpc",
                "--console",
                "always",
                "--service-name",
                "svc",
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://e:2"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_SERVICE_NAME", "env-svc"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev"),
            ],
        );
        let o = c.otlp.unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.protocol),
            ("http://f:1", Protocol::Grpc)
        );
        assert_eq!(o.service_name.as_deref(), Some("svc"));
        assert_eq!(o.headers, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(o.resource_attributes[0].0, "deployment.environment");
        assert!(c.console);
    }

    #[test]
    fn export_buffer_bound() {
        let c = resolve(&["--otlp-endpoint", "http://c:4317"], &[]);
        assert_eq!(c.otlp.unwrap().buffer_spans as u64, DEFAULT_BUFFER_SPANS);
        let c = resolve(
            &[
                "--otlp-endpoint",
                "http://c:4317",
                "--export-buffer-spans",
                "42",
            ],
            &[],
        );
        assert_eq!(c.otlp.unwrap().buffer_spans, 42);
        assert!(Cli::try_parse_from(["x", "--export-buffer-spans", "0"]).is_err());
    }

    #[test]
    fn node_name_from_flag_then_downward_api_env() {
        let c = resolve(&[], &[("K8S_NODE_NAME", "k"), ("NODE_NAME", "n")]);
        assert_eq!(c.processes.node_name.as_deref(), Some("n"));
        let c = resolve(&[], &[("K8S_NODE_NAME", "k")]);
        assert_eq!(c.processes.node_name.as_deref(), Some("k"));
        let c = resolve(&["--node-name", "f"], &[("NODE_NAME", "n")]);
        assert_eq!(c.processes.node_name.as_deref(), Some("f"));
        assert_eq!(resolve(&[], &[]).processes.node_name, None);
        assert_eq!(
            resolve(&[], &[]).processes.pod_logs_dir,
            std::path::Path::new("/var/log/pods")
        );
    }

    #[test]
    fn bad_protocol_is_a_clear_error() {
        let cli = Cli::parse_from([
            "x",
            "--otlp-endpoint",
            "http://a:1",
            "--otlp-protocol",
            "http/json",
        ]);
        let err = Config::resolve(&cli.run, |_| None).unwrap_err();
        assert!(err.to_string().contains("unsupported OTLP protocol"));
    }
}
