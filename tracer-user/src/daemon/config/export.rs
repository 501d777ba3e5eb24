//! Where spans go: the console, and OTLP by the OpenTelemetry exporter variables' rules (shared
//! with the metrics, so the two signals cannot disagree on where the collector is).

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::ValueEnum;

use super::RunArgs;
use crate::export::otlp::{parse_key_values, OtlpConfig, Protocol};

/// How long one OTLP export may take.
pub(super) const OTLP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsoleMode {
    /// On when no OTLP endpoint is configured.
    Auto,
    Always,
    Never,
}

impl ConsoleMode {
    /// Whether spans are printed, given whether they also go to an OTLP endpoint.
    pub(super) fn enabled(self, otlp: bool) -> bool {
        match self {
            ConsoleMode::Auto => !otlp,
            ConsoleMode::Always => true,
            ConsoleMode::Never => false,
        }
    }
}

/// The traces' exporter: a flag, then the OpenTelemetry variables, then the config file.
pub(super) fn traces(
    args: &RunArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>> {
    let Some(target) = otlp_target(args, env, "TRACES", "/v1/traces")? else {
        return Ok(None);
    };
    Ok(Some(OtlpConfig {
        endpoint: target.endpoint,
        protocol: target.protocol,
        headers: target.headers,
        service_name: args
            .above_env("service_name", &args.service_name)
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .or_else(|| args.in_file("service_name", &args.service_name)),
        resource_attributes: target.resource_attributes,
        timeout: OTLP_TIMEOUT,
        buffer_spans: usize::try_from(args.export_buffer_spans)
            .context("--export-buffer-spans is too large")?,
        buffer_bytes: usize::try_from(args.memory_budget_mib.saturating_mul(1024 * 1024) / 4)
            .context("--memory-budget-mib is too large")?,
    }))
}

/// Where one OTLP signal goes, per the OpenTelemetry exporter variables.
pub(super) struct OtlpTarget {
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub resource_attributes: Vec<(String, String)>,
}

/// The destination of `signal` (`TRACES`, `METRICS`), shared by every exporter so they cannot
/// disagree: a flag, then `OTEL_EXPORTER_OTLP_{signal}_*` (its endpoint used as is), then
/// `OTEL_EXPORTER_OTLP_*`, then the config file; `path` is appended to a base URL for
/// HTTP/protobuf. Headers add up: the generic variable, the signal's, then `--otlp-header`.
pub(super) fn otlp_target(
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
