use std::{ffi::OsString, time::Duration};

use anyhow::Result;
use clap::Parser;

use super::*;
use crate::export::otlp::Protocol;

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
    assert_eq!(c.pipeline.agent.content.max_bytes, 100);
    assert!(c.pipeline.genai.capture_content);
    assert_eq!(c.pipeline.idle_timeout, Duration::from_secs(7));
    assert_eq!(c.pipeline.agent.sample_ratio, 0.5);
    assert!(c.pipeline.agent.genai_attributes && !c.pipeline.agent.openinference_attributes);
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
    assert_eq!(
        c.pipeline.agent.content.max_bytes, 300,
        "flag over variable and file"
    );
    assert_eq!(
        c.pipeline.idle_timeout,
        Duration::from_secs(8),
        "variable over file"
    );
    assert_eq!(c.pipeline.max_body_bytes, 5, "file over default");
    assert_eq!(c.ring_buffer_bytes, 32 * 1024 * 1024, "default");
}

#[test]
fn a_false_variable_turns_off_a_switch_the_file_turned_on() {
    let file = Some("capture_content = true");
    assert!(
        layered_config(&[], &[], file)
            .pipeline
            .genai
            .capture_content
    );
    let vars = [("AGENT_TRACER_CAPTURE_CONTENT", "false")];
    assert!(
        !layered_config(&[], &vars, file)
            .pipeline
            .genai
            .capture_content
    );
    let vars = [("AGENT_TRACER_CAPTURE_CONTENT", "true")];
    assert!(
        layered_config(&[], &vars, None)
            .pipeline
            .genai
            .capture_content
    );
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
    assert_eq!(c.pipeline.processes.node_name.as_deref(), Some("n"));
    let c = resolve(&[], &[("K8S_NODE_NAME", "k")]);
    assert_eq!(c.pipeline.processes.node_name.as_deref(), Some("k"));
    let c = resolve(&["--node-name", "f"], &[("NODE_NAME", "n")]);
    assert_eq!(c.pipeline.processes.node_name.as_deref(), Some("f"));
    assert_eq!(resolve(&[], &[]).pipeline.processes.node_name, None);
    assert_eq!(
        resolve(&[], &[]).pipeline.processes.pod_logs_dir,
        std::path::Path::new("/var/log/pods")
    );
}

#[test]
fn kube_api_from_flag_variable_or_file_and_its_requirements() {
    let node = [("NODE_NAME", "n")];
    assert!(!resolve(&[], &node).pipeline.processes.kube_api);
    assert!(resolve(&["--kube-api"], &node).pipeline.processes.kube_api);
    let vars = [("AGENT_TRACER_KUBE_API", "true"), ("NODE_NAME", "n")];
    assert!(layered_config(&[], &vars, None).pipeline.processes.kube_api);
    assert!(
        layered_config(&[], &node, Some("kube_api = true"))
            .pipeline
            .processes
            .kube_api
    );
    let c = layered_config(
        &[],
        &node,
        Some("kube-api = true\ninclude_pod_label = [\"team=ml\"]"),
    );
    assert!(c.pipeline.processes.kube_api && !c.pipeline.processes.selection.is_everything());

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

#[test]
fn the_bodies_in_progress_get_a_quarter_of_the_memory_budget() {
    let c = resolve(&["--memory-budget-mib", "64"], &[]);
    assert_eq!(c.pipeline.body_budget_bytes, 16 << 20);
    assert_eq!(c.memory_budget_bytes, 64 << 20);
    let default = resolve(&[], &[]);
    assert_eq!(
        default.pipeline.body_budget_bytes,
        crate::daemon::pipeline::PipelineConfig::default().body_budget_bytes
    );
}
