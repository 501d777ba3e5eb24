//! The metrics' flags: flags over the standard OpenTelemetry metrics environment variables over
//! defaults (a Prometheus endpoint on loopback; OTLP wherever traces go).

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use super::{
    export::{otlp_target, OTLP_TIMEOUT},
    RunArgs,
};
use crate::{
    export::otlp::OtlpConfig,
    telemetry::metrics::config::{MetricsConfig, PrometheusListen, DEFAULT_EXPORT_INTERVAL},
};

#[derive(Clone, Debug, Args)]
pub struct MetricsArgs {
    /// Address of the Prometheus scrape endpoint (GET /metrics), or "off". The default is
    /// loopback only: the metrics name models, servers and executables.
    #[arg(long, value_name = "ADDR|off")]
    pub prometheus_listen: Option<String>,

    /// Do not push metrics over OTLP even when an OTLP endpoint is configured (as
    /// OTEL_METRICS_EXPORTER=none). The endpoint is the traces' one (/v1/metrics for
    /// http/protobuf) unless OTEL_EXPORTER_OTLP_METRICS_ENDPOINT says otherwise; the interval
    /// is OTEL_METRIC_EXPORT_INTERVAL (milliseconds, default 10000).
    #[arg(long)]
    pub no_otlp_metrics: bool,
}

/// `env` looks up an environment variable (empty values already removed).
pub(super) fn resolve(
    run: &RunArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<MetricsConfig> {
    let args = &run.metrics;
    let prometheus = match args.prometheus_listen.as_deref().map(str::trim) {
        Some("off" | "none" | "") => None,
        Some(addr) => Some(PrometheusListen {
            addr: addr
                .parse()
                .with_context(|| format!("--prometheus-listen {addr:?}: not IP:PORT"))?,
            explicit: true,
        }),
        None => MetricsConfig::default().prometheus,
    };
    let export_interval = match env("OTEL_METRIC_EXPORT_INTERVAL") {
        Some(ms) => {
            let ms: u64 = ms
                .trim()
                .parse()
                .with_context(|| format!("OTEL_METRIC_EXPORT_INTERVAL {ms:?}: not ms"))?;
            Duration::from_millis(ms)
        }
        None => DEFAULT_EXPORT_INTERVAL,
    };
    let otlp_wanted = !args.no_otlp_metrics
        && env("OTEL_METRICS_EXPORTER").is_none_or(|e| e.split(',').any(|x| x.trim() == "otlp"));
    let otlp = if otlp_wanted {
        otlp_config(run, &env)?
    } else {
        None
    };
    let config = MetricsConfig {
        prometheus,
        otlp,
        export_interval,
    };
    config.validate()?;
    Ok(config)
}

/// The traces' destination rules, with the metrics' own variables (`export::otlp_target`).
fn otlp_config(run: &RunArgs, env: &impl Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>> {
    Ok(
        otlp_target(run, env, "METRICS", "/v1/metrics")?.map(|target| OtlpConfig {
            endpoint: target.endpoint,
            protocol: target.protocol,
            headers: target.headers,
            // The metrics describe the tracer's view of every process: one Resource, the tracer.
            service_name: None,
            resource_attributes: target.resource_attributes,
            timeout: OTLP_TIMEOUT,
            // Unused: metrics are cumulative, a failed push is superseded by the next.
            buffer_spans: 1,
            buffer_bytes: usize::MAX,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::Protocol;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn resolve(argv: &[&str], vars: &[(&str, &str)]) -> Result<MetricsConfig> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(argv.iter().copied()))?;
        super::resolve(&cli.run, |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn prometheus_on_loopback_by_default_and_no_otlp_without_endpoint() {
        let c = resolve(&[], &[]).unwrap();
        assert_eq!(
            c.prometheus,
            Some(PrometheusListen {
                addr: "127.0.0.1:9464".parse().unwrap(),
                explicit: false
            })
        );
        assert!(c.otlp.is_none());
        assert_eq!(c.export_interval, Duration::from_secs(10));

        let c = resolve(&["--prometheus-listen", "off"], &[]).unwrap();
        assert_eq!(c.prometheus, None);
        let c = resolve(&["--prometheus-listen", "0.0.0.0:9100"], &[]).unwrap();
        assert_eq!(
            c.prometheus,
            Some(PrometheusListen {
                addr: "0.0.0.0:9100".parse().unwrap(),
                explicit: true
            })
        );
        let err = resolve(&["--prometheus-listen", "localhost"], &[]).unwrap_err();
        assert!(err.to_string().contains("not IP:PORT"), "{err}");
    }

    #[test]
    fn otlp_metrics_follow_the_traces_endpoint_and_metric_variables() {
        let c = resolve(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.protocol),
            ("http://c:4318/v1/metrics", Protocol::HttpProtobuf)
        );

        let c = resolve(&["--otlp-endpoint", "http://c:4317"], &[]).unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.protocol),
            ("http://c:4317", Protocol::Grpc)
        );

        let c = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/custom"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "k=v"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
            ],
        )
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.endpoint, "http://m:9/custom");
        assert_eq!(o.headers, vec![("k".to_string(), "v".to_string())]);
        assert_eq!(c.export_interval, Duration::from_millis(250));

        // Traces elsewhere say nothing about metrics.
        let c = resolve(
            &[],
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://t:4318/v1/traces",
            )],
        )
        .unwrap();
        assert!(c.otlp.is_none());
    }

    #[test]
    fn otlp_metrics_can_be_turned_off() {
        let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        assert!(resolve(&["--no-otlp-metrics"], &env)
            .unwrap()
            .otlp
            .is_none());
        let off = [env[0], ("OTEL_METRICS_EXPORTER", "none")];
        assert!(resolve(&[], &off).unwrap().otlp.is_none());
        let on = [env[0], ("OTEL_METRICS_EXPORTER", "prometheus,otlp")];
        assert!(resolve(&[], &on).unwrap().otlp.is_some());
        let bad = [("OTEL_METRIC_EXPORT_INTERVAL", "soon")];
        assert!(resolve(&[], &bad).is_err());
        let zero = [("OTEL_METRIC_EXPORT_INTERVAL", "0")];
        assert!(resolve(&[], &zero).is_err());
    }
}
