//! Run configuration, in layers: a command-line flag, then its `AGENT_TRACER_<FLAG>` environment
//! variable, then the standard OpenTelemetry environment variables (for the exporter's
//! settings), then the config file (TOML, `--config FILE`, else [`DEFAULT_CONFIG_FILE`] when it
//! exists), then the documented defaults.
//!
//! The variables and the file are laid under the command line generically, by flag name, from
//! clap's own description of `run` (see [`RunArgs::parse_layered`]): a new flag is settable
//! everywhere without being listed again here.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{parser::ValueSource, Args, FromArgMatches as _, ValueEnum};

use crate::{
    agent::{cost::PriceTable, AgentNames},
    export::{
        otlp::{parse_key_values, OtlpConfig, Protocol},
        retry::DEFAULT_BUFFER_SPANS,
    },
    processes::{ProcessesConfig, Selection, SelectionRules},
    telemetry::metrics::config::{MetricsArgs, MetricsConfig},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsoleMode {
    /// On when no OTLP endpoint is configured.
    Auto,
    Always,
    Never,
}

/// Read by `run` when `--config` (or `AGENT_TRACER_CONFIG`) names no file and this one exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/agent-tracer/config.toml";

/// Prefix of the environment variable of each `run` flag: `--capture-content` is
/// `AGENT_TRACER_CAPTURE_CONTENT`.
pub const ENV_PREFIX: &str = "AGENT_TRACER_";

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

    /// Ids of the flags whose value came from the config file: the OTEL_* variables rank above
    /// them.
    #[arg(skip)]
    pub from_file: BTreeSet<String>,
}

impl RunArgs {
    /// Parses `run`'s arguments (`argv[0]` is the subcommand's name) with the environment
    /// variables and the config file laid under them. `env` looks up a variable (a function so
    /// tests need not touch the real environment); `default_file` is read when it exists and
    /// neither `--config` nor `AGENT_TRACER_CONFIG` names a file.
    ///
    /// How: clap parses the command line once and says which flags it was given
    /// (`ArgMatches::value_source`); every other flag's variable or file value is appended as
    /// `--flag=value` and the whole is parsed again, so values from the environment and the file
    /// go through the same parsers and checks as typed ones.
    pub fn parse_layered(
        argv: impl IntoIterator<Item = OsString>,
        env: impl Fn(&str) -> Option<String>,
        default_file: Option<&Path>,
    ) -> Result<Self> {
        let argv: Vec<OsString> = argv.into_iter().collect();
        let cmd = Self::augment_args(clap::Command::new("agent-tracer run"));
        let matches = cmd
            .clone()
            .try_get_matches_from(&argv)
            .map_err(|e| anyhow!("{}", e.render()))?;
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);

        let file = if given("config") {
            matches.get_one::<PathBuf>("config").cloned()
        } else if let Some(path) = env(&env_name("config")) {
            Some(PathBuf::from(path))
        } else {
            default_file.filter(|p| p.exists()).map(Path::to_path_buf)
        };
        let table = match &file {
            Some(path) => read_config_file(path)?,
            None => toml::Table::new(),
        };

        let mut extra: Vec<OsString> = Vec::new();
        let mut from_file = BTreeSet::new();
        let mut known_keys = BTreeSet::new();
        // (flag, where its value came from), to name the source of a value clap rejects.
        let mut sources: Vec<(String, String)> = Vec::new();
        for arg in cmd.get_arguments() {
            let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
                continue;
            };
            if long == "config" || long == "help" {
                continue;
            }
            let keys = [long.to_string(), long.replace('-', "_")];
            known_keys.extend(keys.iter().cloned());
            if given(id) {
                continue;
            }
            let takes_values = arg.get_action().takes_values();
            let variable = env_name(long);
            if let Some(value) = env(&variable) {
                extra.extend(
                    env_args(long, takes_values, &value)
                        .with_context(|| format!("environment variable {variable}"))?,
                );
                sources.push((
                    format!("--{long}"),
                    format!("environment variable {variable}"),
                ));
            } else if let Some((key, value)) = keys
                .iter()
                .find_map(|k| table.get(k).map(|v| (k.as_str(), v)))
            {
                let path = file.as_deref().unwrap_or(Path::new("config file"));
                extra.extend(
                    file_args(long, takes_values, value)
                        .with_context(|| format!("{}: setting `{key}`", path.display()))?,
                );
                from_file.insert(id.to_string());
                sources.push((
                    format!("--{long}"),
                    format!("{}: setting `{key}`", path.display()),
                ));
            }
        }
        if let Some(unknown) = table.keys().find(|k| !known_keys.contains(*k)) {
            let path = file.as_deref().unwrap_or(Path::new("config file"));
            bail!(
                "{}: unknown setting `{unknown}` (settings are the long names of \
                 `agent-tracer run`'s flags, see --help)",
                path.display()
            );
        }

        let matches = cmd
            .try_get_matches_from(argv.into_iter().chain(extra))
            .map_err(|e| {
                let flag = e
                    .get(clap::error::ContextKind::InvalidArg)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let source = sources
                    .iter()
                    .find(|(long, _)| flag.split_whitespace().next() == Some(long.as_str()))
                    .map(|(_, source)| source.as_str())
                    .unwrap_or("an AGENT_TRACER_* environment variable or the config file");
                anyhow!("{}", e.render()).context(format!("invalid value from {source}"))
            })?;
        let mut args = Self::from_arg_matches(&matches).map_err(|e| anyhow!("{}", e.render()))?;
        args.from_file = from_file;
        Ok(args)
    }

    /// The flag's value unless it came from the config file (which ranks below OTEL_* variables).
    fn above_env(&self, id: &str, value: &Option<String>) -> Option<String> {
        value.clone().filter(|_| !self.from_file.contains(id))
    }

    /// The flag's value only if it came from the config file.
    fn in_file(&self, id: &str, value: &Option<String>) -> Option<String> {
        value.clone().filter(|_| self.from_file.contains(id))
    }
}

fn env_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

fn read_config_file(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))
}

fn env_args(long: &str, takes_values: bool, value: &str) -> Result<Vec<OsString>> {
    if takes_values {
        return Ok(vec![format!("--{long}={value}").into()]);
    }
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(vec![format!("--{long}").into()]),
        "" | "0" | "false" | "no" | "off" => Ok(Vec::new()),
        other => bail!("expected true or false, not `{other}`"),
    }
}

fn file_args(long: &str, takes_values: bool, value: &toml::Value) -> Result<Vec<OsString>> {
    use toml::Value as V;
    if !takes_values {
        return match value {
            V::Boolean(true) => Ok(vec![format!("--{long}").into()]),
            V::Boolean(false) => Ok(Vec::new()),
            other => bail!("expected true or false, not {}", other.type_str()),
        };
    }
    let scalar = |v: &V| -> Result<String> {
        Ok(match v {
            V::String(s) => s.clone(),
            V::Integer(i) => i.to_string(),
            V::Float(f) => f.to_string(),
            V::Boolean(b) => b.to_string(),
            other => bail!("expected a string or a number, not {}", other.type_str()),
        })
    };
    let values = match value {
        V::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>>>()?,
        v => vec![scalar(v)?],
    };
    Ok(values
        .into_iter()
        .map(|v| format!("--{long}={v}").into())
        .collect())
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
    /// Trace only processes in pods labelled KEY=VALUE (VALUE exact, or a glob); repeatable.
    /// Needs --kube-api.
    #[arg(long, value_name = "KEY=VALUE")]
    pub include_pod_label: Vec<String>,
    /// Never trace processes in pods labelled KEY=VALUE; repeatable. Needs --kube-api.
    #[arg(long, value_name = "KEY=VALUE")]
    pub exclude_pod_label: Vec<String>,
    /// Read pod labels (k8s.pod.label.<key>) and owning workloads (k8s.deployment.name,
    /// k8s.statefulset.name, k8s.daemonset.name, k8s.job.name, k8s.cronjob.name, …) from the
    /// Kubernetes API, watching only this node's pods. Needs the node name and RBAC to
    /// get/list/watch pods and get replicasets and jobs; in a pod the service account is used,
    /// elsewhere KUBECONFIG.
    #[arg(long)]
    pub kube_api: bool,
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
    fn resolve(&self, env: &impl Fn(&str) -> Option<String>) -> Result<ProcessesConfig> {
        let rules = SelectionRules {
            include_exe: self.include_exe.clone(),
            exclude_exe: self.exclude_exe.clone(),
            include_cmdline: self.include_cmdline.clone(),
            exclude_cmdline: self.exclude_cmdline.clone(),
            include_container: self.include_container.clone(),
            exclude_container: self.exclude_container.clone(),
            include_namespace: self.include_namespace.clone(),
            exclude_namespace: self.exclude_namespace.clone(),
            include_pod_label: self.include_pod_label.clone(),
            exclude_pod_label: self.exclude_pod_label.clone(),
        };
        if rules.uses_pod_labels() && !self.kube_api {
            bail!(
                "--include-pod-label and --exclude-pod-label need --kube-api: pod labels come \
                 from the Kubernetes API"
            );
        }
        let selection = Selection::new(&rules)?;
        let node_name = self
            .node_name
            .clone()
            .or_else(|| env("NODE_NAME"))
            .or_else(|| env("K8S_NODE_NAME"));
        if self.kube_api && node_name.is_none() {
            bail!(
                "--kube-api watches this node's pods only and needs the node's name: set \
                 --node-name, or NODE_NAME from the downward API (spec.nodeName)"
            );
        }
        Ok(ProcessesConfig {
            pod_logs_dir: self.pod_logs_dir.clone(),
            node_name,
            selection,
            kube_api: self.kube_api,
            pod_store: None,
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
    pub health_listen: Option<SocketAddr>,
    pub agent: AgentSettings,
    pub metrics: MetricsConfig,
    pub processes: ProcessesConfig,
}

impl Config {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        Self::resolve(args, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// `env` looks up an environment variable; a function so tests need not touch the real one.
    pub fn resolve(args: &RunArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let otlp = match otlp_target(args, &env, "TRACES", "/v1/traces")? {
            None => None,
            Some(target) => Some(OtlpConfig {
                endpoint: target.endpoint,
                protocol: target.protocol,
                headers: target.headers,
                service_name: args
                    .above_env("service_name", &args.service_name)
                    .or_else(|| env("OTEL_SERVICE_NAME"))
                    .or_else(|| args.in_file("service_name", &args.service_name)),
                resource_attributes: target.resource_attributes,
                timeout: Duration::from_secs(10),
                buffer_spans: usize::try_from(args.export_buffer_spans)
                    .context("--export-buffer-spans is too large")?,
            }),
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
            health_listen: args.health_listen,
            agent: args.agent.resolve()?,
            metrics: MetricsConfig::resolve(args, &env)?,
            processes: args.processes.resolve(&env)?,
        })
    }
}

/// Where one OTLP signal goes, per the OpenTelemetry exporter variables.
pub(crate) struct OtlpTarget {
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub resource_attributes: Vec<(String, String)>,
}

/// The destination of `signal` (`TRACES`, `METRICS`), shared by every exporter so they cannot
/// disagree: a flag, then `OTEL_EXPORTER_OTLP_{signal}_*` (its endpoint used as is), then
/// `OTEL_EXPORTER_OTLP_*`, then the config file; `path` is appended to a base URL for
/// HTTP/protobuf. Headers add up: the generic variable, the signal's, then `--otlp-header`.
pub(crate) fn otlp_target(
    args: &RunArgs,
    env: &impl Fn(&str) -> Option<String>,
    signal: &str,
    path: &str,
) -> Result<Option<OtlpTarget>> {
    let var = |name: &str| format!("OTEL_EXPORTER_OTLP_{signal}_{name}");
    let explicit_protocol = args
        .above_env("otlp_protocol", &args.otlp_protocol)
        .or_else(|| env(&var("PROTOCOL")))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .or_else(|| args.in_file("otlp_protocol", &args.otlp_protocol))
        .map(|p| p.parse::<Protocol>())
        .transpose()?;
    // (url, is it already the signal's full URL?)
    let endpoint = args
        .above_env("otlp_endpoint", &args.otlp_endpoint)
        .map(|e| (e, false))
        .or_else(|| env(&var("ENDPOINT")).map(|e| (e, true)))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| (e, false)))
        .or_else(|| {
            args.in_file("otlp_endpoint", &args.otlp_endpoint)
                .map(|e| (e, false))
        });
    let Some((url, full)) = endpoint else {
        return Ok(None);
    };
    let protocol = explicit_protocol.unwrap_or_else(|| {
        if url.trim_end_matches('/').ends_with(":4317") {
            Protocol::Grpc
        } else {
            Protocol::HttpProtobuf
        }
    });
    let endpoint = match protocol {
        Protocol::HttpProtobuf if !full => format!("{}{path}", url.trim_end_matches('/')),
        _ => url,
    };
    let mut headers = Vec::new();
    for name in ["OTEL_EXPORTER_OTLP_HEADERS".to_string(), var("HEADERS")] {
        if let Some(h) = env(&name) {
            headers.extend(parse_key_values(&h).with_context(|| name.clone())?);
        }
    }
    for h in &args.otlp_headers {
        headers.extend(parse_key_values(h).context("--otlp-header")?);
    }
    let resource_attributes = match env("OTEL_RESOURCE_ATTRIBUTES") {
        Some(r) => parse_key_values(&r).context("OTEL_RESOURCE_ATTRIBUTES")?,
        None => Vec::new(),
    };
    Ok(Some(OtlpTarget {
        endpoint,
        protocol,
        headers,
        resource_attributes,
    }))
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

    /// `agent-tracer run ARGS` with `vars` as the environment and `file` as the config file.
    fn layered(argv: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> Result<RunArgs> {
        let dir = std::env::temp_dir().join(format!(
            "agent-tracer-config-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("config.toml");
        if let Some(text) = file {
            std::fs::write(&path, text)?;
        }
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let result = RunArgs::parse_layered(
            std::iter::once("run")
                .chain(argv.iter().copied())
                .map(OsString::from),
            lookup,
            Some(&path),
        );
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    fn layered_config(argv: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> Config {
        let args = layered(argv, vars, file).unwrap();
        Config::resolve(&args, |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    const FILE: &str = r#"
        content_max_bytes = 100
        capture-content = true
        idle_timeout_secs = 7
        sample_ratio = 0.5
        conventions = ["genai"]
        otlp_header = ["a=1", "b=2"]
        agent-name = ["x.py=planner"]
        health_listen = "127.0.0.1:9465"
    "#;

    #[test]
    fn the_config_file_sets_any_flag_by_name() {
        let c = layered_config(&[], &[], Some(FILE));
        assert_eq!(c.content_max_bytes, 100);
        assert!(c.capture_content);
        assert_eq!(c.idle_timeout, Duration::from_secs(7));
        assert_eq!(c.agent.sample_ratio, 0.5);
        assert!(c.agent.genai_attributes && !c.agent.openinference_attributes);
        assert_eq!(c.health_listen, Some("127.0.0.1:9465".parse().unwrap()));
        let args = layered(&[], &[], Some(FILE)).unwrap();
        assert_eq!(args.otlp_headers, ["a=1", "b=2"]);
        assert_eq!(args.agent.agent_names, ["x.py=planner"]);
        // Untouched flags keep their defaults.
        assert_eq!(c.ring_buffer_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn flag_beats_variable_beats_file_beats_default() {
        let file = Some("content_max_bytes = 100\nidle_timeout_secs = 7\nmax_body_bytes = 5\n");
        let vars = [
            ("AGENT_TRACER_CONTENT_MAX_BYTES", "200"),
            ("AGENT_TRACER_IDLE_TIMEOUT_SECS", "8"),
        ];
        let c = layered_config(&["--content-max-bytes", "300"], &vars, file);
        assert_eq!(c.content_max_bytes, 300, "flag over variable and file");
        assert_eq!(c.idle_timeout, Duration::from_secs(8), "variable over file");
        assert_eq!(c.max_body_bytes, 5, "file over default");
        assert_eq!(c.ring_buffer_bytes, 32 * 1024 * 1024, "default");
    }

    #[test]
    fn a_false_variable_turns_off_a_switch_the_file_turned_on() {
        let file = Some("capture_content = true");
        assert!(layered_config(&[], &[], file).capture_content);
        let vars = [("AGENT_TRACER_CAPTURE_CONTENT", "false")];
        assert!(!layered_config(&[], &vars, file).capture_content);
        let vars = [("AGENT_TRACER_CAPTURE_CONTENT", "true")];
        assert!(layered_config(&[], &vars, None).capture_content);
    }

    #[test]
    fn otel_variables_rank_between_the_flag_and_the_file() {
        let file = Some("otlp_endpoint = \"http://file:4317\"\nservice_name = \"file-svc\"\n");
        let otel = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_SERVICE_NAME", "env-svc"),
        ];
        let o = layered_config(&[], &otel, file).otlp.unwrap();
        assert_eq!(o.endpoint, "http://env:4317");
        assert_eq!(o.service_name.as_deref(), Some("env-svc"));

        let o = layered_config(&[], &[], file).otlp.unwrap();
        assert_eq!(o.endpoint, "http://file:4317");
        assert_eq!(o.service_name.as_deref(), Some("file-svc"));

        let o = layered_config(&["--otlp-endpoint", "http://flag:4317"], &otel, file)
            .otlp
            .unwrap();
        assert_eq!(o.endpoint, "http://flag:4317");
        // AGENT_TRACER_OTLP_ENDPOINT is the flag's own variable: it beats OTEL_*.
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("AGENT_TRACER_OTLP_ENDPOINT", "http://mine:4317"),
        ];
        let o = layered_config(&[], &vars, file).otlp.unwrap();
        assert_eq!(o.endpoint, "http://mine:4317");
    }

    #[test]
    fn metrics_follow_the_same_ranking_as_traces() {
        let file = Some("otlp_endpoint = \"http://file:4318\"\n");
        let otel = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "t=1"),
        ];
        let c = layered_config(&[], &otel, file);
        let traces = c.otlp.unwrap();
        let metrics = c.metrics.otlp.unwrap();
        assert_eq!(traces.endpoint, "http://env:4318/v1/traces");
        assert_eq!(metrics.endpoint, "http://env:4318/v1/metrics");
        assert_eq!(traces.headers, vec![("t".to_string(), "1".to_string())]);
        assert!(metrics.headers.is_empty(), "a traces-only header");
        let c = layered_config(&[], &[], file);
        assert_eq!(
            c.metrics.otlp.unwrap().endpoint,
            "http://file:4318/v1/metrics"
        );
    }

    #[test]
    fn the_config_file_is_chosen_by_flag_then_variable_then_default() {
        let dir = std::env::temp_dir().join(format!("agent-tracer-choose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let named = dir.join("named.toml");
        std::fs::write(&named, "content_max_bytes = 11").unwrap();
        let named_str = named.display().to_string();
        let vars = [("AGENT_TRACER_CONFIG", named_str.as_str())];
        // The default file (content_max_bytes = 100) is not read when a file is named.
        let args = layered(&["--config", &named_str], &[], Some(FILE)).unwrap();
        assert_eq!(args.content_max_bytes, 11);
        let args = layered(&[], &vars, Some(FILE)).unwrap();
        assert_eq!(args.content_max_bytes, 11);
        // A named file that does not exist is an error; a missing default file is not.
        let err = layered(&["--config", "/nonexistent/agent-tracer.toml"], &[], None).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/agent-tracer.toml"),
            "{err:#}"
        );
        assert_eq!(
            layered(&[], &[], None).unwrap().content_max_bytes,
            16 * 1024
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_config_files_are_clear_errors() {
        let err = |file: &str| format!("{:#}", layered(&[], &[], Some(file)).unwrap_err());
        let e = err("capture_contnet = true");
        assert!(e.contains("unknown setting `capture_contnet`"), "{e}");
        let e = err("capture_content = \"yes\"");
        assert!(
            e.contains("setting `capture_content`") && e.contains("true or false"),
            "{e}"
        );
        let e = err("content_max_bytes = \"lots\"");
        assert!(
            e.contains("setting `content_max_bytes`") && e.contains("lots"),
            "{e}"
        );
        let e = err("this is not toml");
        assert!(e.contains("not valid TOML"), "{e}");
        let e = format!(
            "{:#}",
            layered(&[], &[("AGENT_TRACER_CAPTURE_CONTENT", "maybe")], None).unwrap_err()
        );
        assert!(e.contains("AGENT_TRACER_CAPTURE_CONTENT"), "{e}");
        let e = format!(
            "{:#}",
            layered(&[], &[("AGENT_TRACER_RING_BUFFER_BYTES", "abc")], None).unwrap_err()
        );
        assert!(
            e.contains("environment variable AGENT_TRACER_RING_BUFFER_BYTES") && e.contains("abc"),
            "{e}"
        );
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
    fn kube_api_from_flag_variable_or_file_and_its_requirements() {
        let node = [("NODE_NAME", "n")];
        assert!(!resolve(&[], &node).processes.kube_api);
        assert!(resolve(&["--kube-api"], &node).processes.kube_api);
        let vars = [("AGENT_TRACER_KUBE_API", "true"), ("NODE_NAME", "n")];
        assert!(layered_config(&[], &vars, None).processes.kube_api);
        assert!(
            layered_config(&[], &node, Some("kube_api = true"))
                .processes
                .kube_api
        );
        let c = layered_config(
            &[],
            &node,
            Some("kube-api = true\ninclude_pod_label = [\"team=ml\"]"),
        );
        assert!(c.processes.kube_api && !c.processes.selection.is_everything());

        let err = |argv: &[&str], vars: &[(&str, &str)]| {
            let cli = Cli::parse_from(std::iter::once("x").chain(argv.iter().copied()));
            let lookup = |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            format!("{:#}", Config::resolve(&cli.run, lookup).unwrap_err())
        };
        let e = err(&["--include-pod-label", "team=ml"], &node);
        assert!(e.contains("need --kube-api"), "{e}");
        let e = err(&["--exclude-pod-label", "team=ml"], &node);
        assert!(e.contains("need --kube-api"), "{e}");
        let e = err(&["--kube-api"], &[]);
        assert!(e.contains("--node-name"), "{e}");
        let e = err(&["--kube-api", "--include-pod-label", "team"], &node);
        assert!(e.contains("KEY=VALUE"), "{e}");
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
