//! The Prometheus scrape endpoint: GET /metrics renders the recorder's snapshot in the
//! OpenMetrics text format.
//!
//! Rendering goes through `prometheus-client`'s encoder (escaping, `_total`/`_bucket` suffixes,
//! `+Inf`, `# EOF`), fed from our own snapshot by a `Collector`: the recorder stays the one
//! store both exporters read, so a scrape and an OTLP push can never disagree.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Method, Request, Response};
use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, MetricEncoder},
    metrics::{exemplar::Exemplar, MetricType},
    registry::{Registry, Unit},
};
use tokio::task::JoinHandle;

use super::{Attributes, MetricsRecorder, PromUnit, Snapshot};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// OTel→Prometheus name rule: every character outside `[a-zA-Z0-9_:]` becomes `_`.
pub fn prom_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn unit(u: PromUnit) -> Option<Unit> {
    match u {
        PromUnit::None => None,
        PromUnit::Seconds => Some(Unit::Seconds),
        PromUnit::Other(o) => Some(Unit::Other(o.to_string())),
    }
}

type Labels = Vec<(String, String)>;

fn labels(attrs: &Attributes) -> Labels {
    attrs
        .iter()
        .map(|(k, v)| (prom_name(k), v.to_string()))
        .collect()
}

#[derive(Debug)]
struct SnapshotCollector {
    /// Pre-digested so `encode` (a `&self` callback) only writes.
    histograms: Vec<Family<HistogramSample>>,
    counters: Vec<Family<CounterSample>>,
    gauges: Vec<Family<CounterSample>>,
    host_name: String,
}

#[derive(Debug)]
struct Family<T> {
    name: String,
    help: String,
    unit: Option<Unit>,
    samples: Vec<(Labels, T)>,
}

#[derive(Debug)]
struct HistogramSample {
    sum: f64,
    count: u64,
    /// (upper bound, count in this bucket), ending with +Inf.
    buckets: Vec<(f64, u64)>,
}

#[derive(Debug)]
enum CounterSample {
    Int(u64),
    F64(f64),
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = vec![
            ("service_name".to_string(), "agent-tracer".to_string()),
            (
                "service_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("host_name".to_string(), self.host_name.clone()),
        ];
        encoder
            .encode_descriptor(
                "target",
                "Target metadata (the tracer's OpenTelemetry resource).",
                None,
                MetricType::Info,
            )?
            .encode_info(&info)?;
        for f in &self.histograms {
            let mut m = encoder.encode_descriptor(
                &f.name,
                &f.help,
                f.unit.as_ref(),
                MetricType::Histogram,
            )?;
            for (labels, h) in &f.samples {
                let no_exemplars: Option<&HashMap<usize, Exemplar<Labels, f64>>> = None;
                if labels.is_empty() {
                    m.encode_histogram(h.sum, h.count, &h.buckets, no_exemplars)?;
                } else {
                    m.encode_family(labels)?.encode_histogram(
                        h.sum,
                        h.count,
                        &h.buckets,
                        no_exemplars,
                    )?;
                }
            }
        }
        for f in &self.counters {
            let mut m = encoder.encode_descriptor(
                &f.name,
                &f.help,
                f.unit.as_ref(),
                MetricType::Counter,
            )?;
            for (labels, v) in &f.samples {
                // An empty label set would print as `name{}`.
                if labels.is_empty() {
                    encode_counter(&mut m, v)?;
                } else {
                    encode_counter(&mut m.encode_family(labels)?, v)?;
                }
            }
        }
        for f in &self.gauges {
            let mut m =
                encoder.encode_descriptor(&f.name, &f.help, f.unit.as_ref(), MetricType::Gauge)?;
            for (labels, v) in &f.samples {
                let mut family = m.encode_family(labels)?;
                match v {
                    CounterSample::Int(i) => family.encode_gauge(&(*i as i64))?,
                    CounterSample::F64(f) => family.encode_gauge(f)?,
                }
            }
        }
        Ok(())
    }
}

fn encode_counter(m: &mut MetricEncoder, v: &CounterSample) -> Result<(), std::fmt::Error> {
    match v {
        CounterSample::Int(i) => m.encode_counter::<Labels, _, f64>(i, None),
        CounterSample::F64(f) => m.encode_counter::<Labels, _, f64>(f, None),
    }
}

/// The snapshot in the OpenMetrics text format.
pub fn render(snapshot: &Snapshot, host_name: &str) -> Result<String> {
    let histograms = snapshot
        .histograms
        .iter()
        .filter(|f| !f.points.is_empty())
        .map(|f| Family {
            name: prom_name(f.def.instrument.name),
            help: f.def.instrument.description.to_string(),
            unit: unit(f.def.instrument.prom_unit),
            samples: f
                .points
                .iter()
                .map(|(attrs, p)| {
                    let buckets = f
                        .def
                        .bounds
                        .iter()
                        .copied()
                        .chain(std::iter::once(f64::INFINITY))
                        .zip(p.bucket_counts.iter().copied())
                        .collect();
                    (
                        labels(attrs),
                        HistogramSample {
                            sum: p.sum,
                            count: p.count,
                            buckets,
                        },
                    )
                })
                .collect(),
        })
        .collect();
    let numbers = |families: &[super::CounterFamily]| -> Vec<Family<CounterSample>> {
        families
            .iter()
            .filter(|f| !f.points.is_empty())
            .map(|f| Family {
                name: prom_name(&f.name),
                help: f.description.clone(),
                unit: unit(f.prom_unit),
                samples: f
                    .points
                    .iter()
                    .map(|(attrs, v)| {
                        let v = if f.integer {
                            CounterSample::Int(*v as u64)
                        } else {
                            CounterSample::F64(*v)
                        };
                        (labels(attrs), v)
                    })
                    .collect(),
            })
            .collect()
    };
    let counters = numbers(&snapshot.counters);
    let gauges = numbers(&snapshot.gauges);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        histograms,
        counters,
        gauges,
        host_name: host_name.to_string(),
    }));
    let mut out = String::new();
    text::encode(&mut out, &registry).context("encoding metrics")?;
    Ok(out)
}

/// Binds now (so a bad address fails at start-up), serves until the task is aborted.
pub async fn serve(
    addr: SocketAddr,
    recorder: Arc<MetricsRecorder>,
    host_name: String,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    crate::telemetry::http_server::serve(addr, "the Prometheus endpoint", move |req| {
        respond(req, &recorder, &host_name)
    })
    .await
}

fn respond(
    req: &Request<Incoming>,
    recorder: &MetricsRecorder,
    host_name: &str,
) -> Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "not found: try /metrics\n".to_string());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(405, "text/plain", "use GET\n".to_string());
    }
    match render(&recorder.snapshot(), host_name) {
        Ok(body) => reply(200, CONTENT_TYPE, body),
        Err(e) => reply(500, "text/plain", format!("{e:#}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        telemetry::health::Health,
        telemetry::metrics::tests::{chat, span},
    };

    #[test]
    fn names_follow_the_otel_to_prometheus_rules() {
        assert_eq!(
            prom_name("gen_ai.client.operation.duration"),
            "gen_ai_client_operation_duration"
        );
        assert_eq!(prom_name("a-b/c"), "a_b_c");
    }

    #[test]
    fn renders_histograms_counters_and_health() {
        let health = Arc::new(Health::default());
        Health::add(&health.records, 7);
        let r = MetricsRecorder::new(health);
        r.observe(&span(chat("gpt-4o", 10, 5), 500));
        let mut priced = chat("gpt-4o", 20, 1);
        priced.push(("agent_tracer.cost.usd", 0.5.into()));
        priced.push(("gen_ai.response.time_to_first_chunk", 0.05.into()));
        r.observe(&span(priced, 250));
        let text = render(&r.snapshot(), "box").unwrap();

        let series = r#"gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",gen_ai_response_model="gpt-4o-2024",server_address="127.0.0.1",server_port="8443",gen_ai_agent_name="python3""#;
        for line in [
            "# TYPE gen_ai_client_operation_duration_seconds histogram".to_string(),
            "# UNIT gen_ai_client_operation_duration_seconds seconds".to_string(),
            "# HELP gen_ai_client_operation_duration_seconds GenAI operation duration.".to_string(),
            format!("gen_ai_client_operation_duration_seconds_count{{{series}}} 2"),
            format!("gen_ai_client_operation_duration_seconds_sum{{{series}}} 0.75"),
            format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"0.16\",{series}}} 0"),
            format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"0.32\",{series}}} 1"),
            format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"0.64\",{series}}} 2"),
            format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"+Inf\",{series}}} 2"),
            "# TYPE gen_ai_client_token_usage histogram".to_string(),
            format!("gen_ai_client_token_usage_sum{{{series},gen_ai_token_type=\"input\"}} 30.0"),
            format!("gen_ai_client_token_usage_count{{{series},gen_ai_token_type=\"output\"}} 2"),
            format!(
                "gen_ai_client_token_usage_bucket{{le=\"4.0\",{series},gen_ai_token_type=\"output\"}} 1"
            ),
            format!(
                "gen_ai_client_token_usage_bucket{{le=\"16.0\",{series},gen_ai_token_type=\"output\"}} 2"
            ),
            format!("gen_ai_client_operation_time_to_first_chunk_seconds_count{{{series}}} 1"),
            "# TYPE agent_tracer_model_calls counter".to_string(),
            format!("agent_tracer_model_calls_total{{{series}}} 2"),
            "# TYPE agent_tracer_model_cost_usd counter".to_string(),
            format!("agent_tracer_model_cost_usd_total{{{series}}} 0.5"),
            "# HELP agent_tracer_records Ring-buffer records read.".to_string(),
            "agent_tracer_records_total 7".to_string(),
            "agent_tracer_kernel_ringbuf_full_records_total 0".to_string(),
            "target_info{service_name=\"agent-tracer\",service_version=\"0.1.0\",host_name=\"box\"} 1"
                .replace("0.1.0", env!("CARGO_PKG_VERSION")),
            "# EOF".to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
        assert!(
            !text.contains("mcp_client_operation_duration"),
            "empty families are left out"
        );
        assert!(
            !text.contains("agent_tracer_unsupported_tls"),
            "empty families are left out"
        );
    }

    #[test]
    fn every_metric_has_its_own_prometheus_family() {
        let health = Arc::new(Health::default());
        health.unsupported_tls("/bin/x", "rustls");
        let r = MetricsRecorder::new(health);
        let mut all = chat("m", 1, 1);
        all.push(("gen_ai.response.time_to_first_chunk", 0.1.into()));
        all.push(("agent_tracer.time_per_output_token", 0.1.into()));
        all.push(("agent_tracer.cost.usd", 0.1.into()));
        r.observe(&span(all, 1));
        r.observe(&span(vec![("mcp.method.name", "tools/list".into())], 1));
        r.observe(&crate::telemetry::metrics::tests::run_span("error", 2, 1));
        r.observe(&span(
            vec![
                ("gen_ai.operation.name", "execute_tool".into()),
                ("gen_ai.tool.name", "run_task".into()),
                ("error.type", "tool_error".into()),
            ],
            1,
        ));
        let snapshot = r.snapshot();
        assert!(snapshot.histograms.iter().all(|f| !f.points.is_empty()));
        assert!(snapshot.counters.iter().all(|f| !f.points.is_empty()));
        assert!(snapshot.gauges.iter().all(|f| !f.points.is_empty()));
        let text = render(&snapshot, "h").unwrap();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let unique: std::collections::BTreeSet<&str> = families.iter().copied().collect();
        assert_eq!(
            families.len(),
            unique.len(),
            "two metrics map to one Prometheus name: {families:?}"
        );
        assert_eq!(
            families.len(),
            1 + snapshot.histograms.len() + snapshot.counters.len() + snapshot.gauges.len()
        );
        for line in [
            "# TYPE agent_tracer_coverage_plaintext_bytes gauge",
            "agent_tracer_coverage_model_calls{process_pid=\"42\",process_executable_name=\"python3\",tls_stack=\"none\",agent_tracer_hook=\"none\"} 1",
            "# TYPE agent_tracer_runs counter",
            "agent_tracer_runs_total{gen_ai_agent_name=\"python3\",agent_tracer_run_outcome=\"error\"} 1",
            "agent_tracer_run_loops_total{gen_ai_agent_name=\"python3\"} 2",
            "agent_tracer_tool_errors_total{gen_ai_tool_name=\"run_task\",error_type=\"tool_error\",gen_ai_agent_name=\"python3\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let r = MetricsRecorder::new(Arc::new(Health::default()));
        r.observe(&span(chat("we\"ird\\model\n", 1, 1), 1));
        let text = render(&r.snapshot(), "h").unwrap();
        assert!(
            text.contains(r#"gen_ai_request_model="we\"ird\\model\n""#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http_on_loopback() {
        let health = Arc::new(Health::default());
        Health::add(&health.records, 3);
        let r = Arc::new(MetricsRecorder::new(health));
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), r, "h".into())
            .await
            .unwrap();
        assert!(addr.ip().is_loopback());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let resp = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            CONTENT_TYPE
        );
        let body = resp.text().await.unwrap();
        assert!(body.contains("\nagent_tracer_records_total 3\n"), "{body}");
        let resp = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let resp = client
            .post(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405);
        task.abort();
    }
}
