//! Pushes the recorder's snapshot to an OTLP receiver (gRPC MetricsService or HTTP
//! `/v1/metrics`) every interval and once more at shutdown, cumulative temporality.
//!
//! Traces carry one Resource per traced process; metrics are the tracer's own aggregation over
//! all of them, so they go out under a single Resource (`service.name=agent-tracer`, the
//! host) and say which process or agent through the `gen_ai.agent.name` attribute.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
    },
    common::v1::{any_value, AnyValue, KeyValue},
    metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};
use prost::Message as _;
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::{Attributes, Label, MetricsRecorder, Snapshot};
use crate::{
    export::otlp::{grpc_channel, http_client, resource, scope, OtlpConfig, Protocol, SCHEMA_URL},
    telemetry::health::Health,
};

const FINAL_EXPORT_TRIES: u32 = 3;

/// A client and what every request carries (the configured headers).
enum Transport {
    Grpc(MetricsServiceClient<Channel>, tonic::metadata::MetadataMap),
    Http(reqwest::Client, reqwest::header::HeaderMap),
}

pub struct MetricsExporter {
    config: OtlpConfig,
    transport: Transport,
    recorder: Arc<MetricsRecorder>,
    health: Arc<Health>,
    host_name: String,
}

impl MetricsExporter {
    pub fn new(
        config: OtlpConfig,
        recorder: Arc<MetricsRecorder>,
        health: Arc<Health>,
        host_name: String,
    ) -> Result<Self> {
        let transport = match config.protocol {
            Protocol::Grpc => {
                let (channel, metadata) = grpc_channel(&config)?;
                Transport::Grpc(MetricsServiceClient::new(channel), metadata)
            }
            Protocol::HttpProtobuf => {
                let (client, headers) = http_client(&config)?;
                Transport::Http(client, headers)
            }
        };
        Ok(MetricsExporter {
            config,
            transport,
            recorder,
            health,
            host_name,
        })
    }

    /// Exports every `interval` until `stop` turns true, then a last time so the final totals
    /// (shutdown's drained spans, the kernel's last counters) arrive.
    pub async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // Cumulative: a failed export loses nothing, the next one carries it.
                    if let Err(e) = self.export().await {
                        Health::add(&self.health.metrics_export_failures, 1);
                        debug!("OTLP metrics export failed: {e:#}");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        for attempt in 1..=FINAL_EXPORT_TRIES {
            match self.export().await {
                Ok(()) => return,
                Err(e) if attempt < FINAL_EXPORT_TRIES => {
                    debug!("final OTLP metrics export attempt {attempt}: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => {
                    Health::add(&self.health.metrics_export_failures, 1);
                    warn!("final OTLP metrics export failed: {e:#}");
                }
            }
        }
    }

    async fn export(&mut self) -> Result<()> {
        let request = export_request(&self.recorder.snapshot(), &self.config, &self.host_name);
        match &mut self.transport {
            Transport::Grpc(client, metadata) => {
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata.clone();
                client.export(req).await.context("gRPC metrics export")?;
            }
            Transport::Http(client, headers) => {
                let resp = client
                    .post(&self.config.endpoint)
                    .headers(headers.clone())
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .context("HTTP metrics export")?;
                if !resp.status().is_success() {
                    bail!("OTLP receiver answered {}", resp.status());
                }
            }
        }
        Ok(())
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn attributes(attrs: &Attributes) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| {
            kv(
                k,
                match v {
                    Label::Str(s) => any_value::Value::StringValue(s.clone()),
                    Label::Int(i) => any_value::Value::IntValue(*i),
                    Label::Bool(b) => any_value::Value::BoolValue(*b),
                },
            )
        })
        .collect()
}

/// The tracer's own Resource: the tracer process on this host.
fn tracer_resource(config: &OtlpConfig, host_name: &str) -> Resource {
    let s = |v: &str| any_value::Value::StringValue(v.to_string());
    let identity = vec![
        kv("service.name", s("agent-tracer")),
        kv("service.version", s(env!("CARGO_PKG_VERSION"))),
        kv("host.name", s(host_name)),
        kv(
            "process.pid",
            any_value::Value::IntValue(std::process::id().into()),
        ),
    ];
    resource(identity, Vec::new(), config)
}

/// The snapshot as one OTLP request; metrics without a series are left out.
pub fn export_request(
    snapshot: &Snapshot,
    config: &OtlpConfig,
    host_name: &str,
) -> ExportMetricsServiceRequest {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let (start, now) = (snapshot.start_unix_ns, snapshot.time_unix_nano);
    let mut metrics: Vec<Metric> = snapshot
        .histograms
        .iter()
        .filter(|f| !f.points.is_empty())
        .map(|f| Metric {
            name: f.def.instrument.name.to_string(),
            description: f.def.instrument.description.to_string(),
            unit: f.def.instrument.unit.to_string(),
            data: Some(Data::Histogram(Histogram {
                aggregation_temporality: cumulative,
                data_points: f
                    .points
                    .iter()
                    .map(|(attrs, p)| HistogramDataPoint {
                        attributes: attributes(attrs),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: p.count,
                        sum: Some(p.sum),
                        bucket_counts: p.bucket_counts.clone(),
                        explicit_bounds: f.def.bounds.to_vec(),
                        min: (p.count > 0).then_some(p.min),
                        max: (p.count > 0).then_some(p.max),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        })
        .collect();
    metrics.extend(
        snapshot
            .counters
            .iter()
            .filter(|f| !f.points.is_empty())
            .map(|f| Metric {
                name: f.name.clone(),
                description: f.description.clone(),
                unit: f.unit.to_string(),
                data: Some(Data::Sum(Sum {
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                    data_points: f
                        .points
                        .iter()
                        .map(|(attrs, v)| NumberDataPoint {
                            attributes: attributes(attrs),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            value: Some(if f.integer {
                                number_data_point::Value::AsInt(*v as i64)
                            } else {
                                number_data_point::Value::AsDouble(*v)
                            }),
                            ..Default::default()
                        })
                        .collect(),
                })),
                ..Default::default()
            }),
    );
    metrics.extend(
        snapshot
            .gauges
            .iter()
            .filter(|f| !f.points.is_empty())
            .map(|f| Metric {
                name: f.name.clone(),
                description: f.description.clone(),
                unit: f.unit.to_string(),
                data: Some(Data::Gauge(Gauge {
                    data_points: f
                        .points
                        .iter()
                        .map(|(attrs, v)| NumberDataPoint {
                            attributes: attributes(attrs),
                            time_unix_nano: now,
                            value: Some(number_data_point::Value::AsInt(*v as i64)),
                            ..Default::default()
                        })
                        .collect(),
                })),
                ..Default::default()
            }),
    );
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(tracer_resource(config, host_name)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                schema_url: SCHEMA_URL.to_string(),
            }],
            schema_url: SCHEMA_URL.to_string(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::tests::{chat, span};

    fn config() -> OtlpConfig {
        OtlpConfig {
            endpoint: "http://127.0.0.1:1/v1/metrics".into(),
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: None,
            resource_attributes: vec![("deployment.environment".into(), "test".into())],
            timeout: Duration::from_secs(1),
            buffer_spans: 1,
            buffer_bytes: usize::MAX,
        }
    }

    fn metric<'a>(r: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
        r.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn snapshot_as_cumulative_otlp_metrics() {
        let health = Arc::new(Health::default());
        Health::add(&health.records, 9);
        let r = MetricsRecorder::new(health);
        r.observe(&span(chat("gpt-4o", 10, 5), 500));
        r.observe(&span(chat("gpt-4o", 20, 1), 250));
        let snapshot = r.snapshot();
        let req = export_request(&snapshot, &config(), "box");

        let res = req.resource_metrics[0].resource.as_ref().unwrap();
        let res_attr = |k: &str| {
            res.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            res_attr("service.name"),
            Some(any_value::Value::StringValue("agent-tracer".into()))
        );
        assert_eq!(
            res_attr("host.name"),
            Some(any_value::Value::StringValue("box".into()))
        );
        assert_eq!(
            res_attr("deployment.environment"),
            Some(any_value::Value::StringValue("test".into()))
        );

        let duration = metric(&req, "gen_ai.client.operation.duration");
        assert_eq!(duration.unit, "s");
        let Some(Data::Histogram(h)) = &duration.data else {
            panic!("histogram expected")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.sum, p.min, p.max),
            (2, Some(0.75), Some(0.25), Some(0.5))
        );
        assert_eq!(
            p.explicit_bounds,
            crate::telemetry::metrics::DURATION_BUCKETS
        );
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!((p.bucket_counts[5], p.bucket_counts[6]), (1, 1));
        assert_eq!(p.start_time_unix_nano, snapshot.start_unix_ns);
        assert_eq!(p.time_unix_nano, snapshot.time_unix_nano);
        let port = p
            .attributes
            .iter()
            .find(|a| a.key == "server.port")
            .unwrap();
        assert_eq!(
            port.value.clone().and_then(|v| v.value),
            Some(any_value::Value::IntValue(8443)),
            "typed attributes stay typed"
        );

        let tokens = metric(&req, "gen_ai.client.token.usage");
        assert_eq!(tokens.unit, "{token}");
        let Some(Data::Histogram(h)) = &tokens.data else {
            panic!("histogram expected")
        };
        let sums: Vec<(u64, Option<f64>)> =
            h.data_points.iter().map(|p| (p.count, p.sum)).collect();
        assert_eq!(sums, vec![(2, Some(30.0)), (2, Some(6.0))], "input, output");

        let Some(Data::Sum(calls)) = &metric(&req, "agent_tracer.model.calls").data else {
            panic!("sum expected")
        };
        assert!(calls.is_monotonic);
        assert_eq!(
            calls.data_points[0].value,
            Some(number_data_point::Value::AsInt(2))
        );
        let Some(Data::Sum(records)) = &metric(&req, "agent_tracer.records").data else {
            panic!("sum expected")
        };
        assert_eq!(
            records.data_points[0].value,
            Some(number_data_point::Value::AsInt(9))
        );
        assert!(
            req.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .all(|m| m.name != "mcp.client.operation.duration"),
            "no empty metrics"
        );
    }
}
