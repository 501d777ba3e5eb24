//! OTLP trace export over gRPC or HTTP/protobuf.
//!
//! Built on the official generated OTLP types (`opentelemetry-proto`) rather than the SDK's
//! span pipeline: a host agent reports many processes, each its own Resource, and builds spans
//! after the fact with explicit ids and timestamps, neither of which the SDK's one-Resource,
//! live-span TracerProvider models.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
    common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{
        span::SpanKind as ProtoKind, status::StatusCode, ResourceSpans, ScopeSpans,
        Span as ProtoSpan, Status,
    },
};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{debug, warn};

use crate::{
    enrich::ProcessInfo,
    health::Health,
    span::{AttrValue, Span, SpanKind, SpanStatus},
};

pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";
const MAX_BATCH: usize = 512;
const BATCH_DELAY: Duration = Duration::from_millis(500);
const RETRIES: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => bail!("unsupported OTLP protocol {other:?} (use grpc or http/protobuf)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// For gRPC the server URL; for HTTP the full traces URL (…/v1/traces).
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    /// `OTEL_SERVICE_NAME`; otherwise each process's executable name.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to every resource.
    pub resource_attributes: Vec<(String, String)>,
    pub timeout: Duration,
}

enum Transport {
    Grpc(TraceServiceClient<Channel>),
    Http(reqwest::Client),
}

pub struct OtlpExporter {
    config: OtlpConfig,
    transport: Transport,
    health: Arc<Health>,
}

impl OtlpExporter {
    pub fn new(config: OtlpConfig, health: Arc<Health>) -> Result<Self> {
        let transport = match config.protocol {
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
                    .with_context(|| format!("invalid OTLP endpoint {:?}", config.endpoint))?
                    .timeout(config.timeout);
                if config.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(ClientTlsConfig::new().with_webpki_roots())
                        .context("OTLP TLS configuration")?;
                }
                Transport::Grpc(TraceServiceClient::new(endpoint.connect_lazy()))
            }
            Protocol::HttpProtobuf => Transport::Http(
                reqwest::Client::builder()
                    .timeout(config.timeout)
                    .build()
                    .context("building the OTLP HTTP client")?,
            ),
        };
        Ok(OtlpExporter {
            config,
            transport,
            health,
        })
    }

    /// Batches spans until the queue closes, then flushes what is left.
    pub async fn run(mut self, mut spans: mpsc::Receiver<Arc<Span>>) {
        let mut batch: Vec<Arc<Span>> = Vec::new();
        loop {
            let next = if batch.is_empty() {
                spans.recv().await
            } else {
                match tokio::time::timeout(BATCH_DELAY, spans.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.send(std::mem::take(&mut batch)).await;
                        continue;
                    }
                }
            };
            match next {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        self.send(std::mem::take(&mut batch)).await;
                    }
                }
                None => {
                    if !batch.is_empty() {
                        self.send(batch).await;
                    }
                    return;
                }
            }
        }
    }

    async fn send(&mut self, batch: Vec<Arc<Span>>) {
        let count = batch.len() as u64;
        let request = export_request(&batch, &self.config);
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=RETRIES {
            match self.send_once(&request).await {
                Ok(()) => {
                    Health::add(&self.health.exported_spans, count);
                    debug!("exported {count} spans");
                    return;
                }
                Err(e) if attempt < RETRIES => {
                    debug!("OTLP export attempt {attempt} failed: {e:#}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => warn!("OTLP export of {count} spans failed: {e:#}"),
            }
        }
        Health::add(&self.health.export_failed_spans, count);
    }

    async fn send_once(&mut self, request: &ExportTraceServiceRequest) -> Result<()> {
        match &mut self.transport {
            Transport::Grpc(client) => {
                let mut req = tonic::Request::new(request.clone());
                for (k, v) in &self.config.headers {
                    let key =
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                            .with_context(|| format!("invalid OTLP header name {k:?}"))?;
                    let value = v
                        .parse()
                        .with_context(|| format!("invalid value for OTLP header {k}"))?;
                    req.metadata_mut().insert(key, value);
                }
                client.export(req).await.context("gRPC export")?;
                Ok(())
            }
            Transport::Http(client) => {
                let mut req = client
                    .post(&self.config.endpoint)
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec());
                for (k, v) in &self.config.headers {
                    req = req.header(k, v);
                }
                let resp = req.send().await.context("HTTP export")?;
                if !resp.status().is_success() {
                    bail!("OTLP receiver answered {}", resp.status());
                }
                Ok(())
            }
        }
    }
}

/// Groups spans by process into one ResourceSpans each.
pub fn export_request(spans: &[Arc<Span>], config: &OtlpConfig) -> ExportTraceServiceRequest {
    let mut by_process: BTreeMap<u32, (Arc<ProcessInfo>, Vec<ProtoSpan>)> = BTreeMap::new();
    for span in spans {
        by_process
            .entry(span.process.pid)
            .or_insert_with(|| (span.process.clone(), Vec::new()))
            .1
            .push(proto_span(span));
    }
    ExportTraceServiceRequest {
        resource_spans: by_process
            .into_values()
            .map(|(process, spans)| ResourceSpans {
                resource: Some(resource(&process, config)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "agent-tracer".to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: SCHEMA_URL.to_string(),
                }],
                schema_url: SCHEMA_URL.to_string(),
            })
            .collect(),
    }
}

fn resource(process: &ProcessInfo, config: &OtlpConfig) -> Resource {
    let service = config
        .service_name
        .clone()
        .unwrap_or_else(|| process.executable_name.clone());
    let mut attributes = vec![
        kv("service.name", &AttrValue::Str(service)),
        kv("process.pid", &AttrValue::Int(process.pid.into())),
        kv(
            "process.executable.name",
            &AttrValue::Str(process.executable_name.clone()),
        ),
        kv("host.name", &AttrValue::Str(process.host_name.clone())),
        kv("telemetry.sdk.name", &AttrValue::Str("agent-tracer".into())),
        kv("telemetry.sdk.language", &AttrValue::Str("rust".into())),
        kv(
            "telemetry.sdk.version",
            &AttrValue::Str(env!("CARGO_PKG_VERSION").into()),
        ),
    ];
    if let Some(path) = &process.executable_path {
        attributes.push(kv("process.executable.path", &AttrValue::Str(path.clone())));
    }
    if let Some(ns) = process.namespace_pid {
        attributes.push(kv(
            "agent_tracer.process.namespace_pid",
            &AttrValue::Int(ns.into()),
        ));
    }
    if let Some(ppid) = process.parent_pid {
        attributes.push(kv("process.parent_pid", &AttrValue::Int(ppid.into())));
    }
    if let Some(id) = &process.container_id {
        attributes.push(kv("container.id", &AttrValue::Str(id.clone())));
    }
    if let Some(runtime) = process.container_runtime {
        attributes.push(kv(
            "container.runtime",
            &AttrValue::Str(runtime.to_string()),
        ));
    }
    if let Some(cmd) = &process.command_line {
        attributes.push(kv("process.command_line", &AttrValue::Str(cmd.clone())));
    }
    for (k, v) in &config.resource_attributes {
        attributes.retain(|a| &a.key != k);
        attributes.push(KeyValue {
            key: k.clone(),
            value: Some(any(&AttrValue::Str(v.clone()))),
        });
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn proto_span(span: &Span) -> ProtoSpan {
    ProtoSpan {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: span.name.clone(),
        kind: match span.kind {
            SpanKind::Client => ProtoKind::Client as i32,
        },
        start_time_unix_nano: span.start_unix_ns,
        end_time_unix_nano: span.end_unix_ns,
        attributes: span.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(match &span.status {
            SpanStatus::Unset => Status::default(),
            SpanStatus::Error(message) => Status {
                message: message.clone(),
                code: StatusCode::Error as i32,
            },
        }),
        ..Default::default()
    }
}

fn kv(key: &str, value: &AttrValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(any(value)),
    }
}

fn any(value: &AttrValue) -> AnyValue {
    let v = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::F64(f) => any_value::Value::DoubleValue(*f),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::StrArray(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s.clone())),
                })
                .collect(),
        }),
    };
    AnyValue { value: Some(v) }
}

/// `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_RESOURCE_ATTRIBUTES` syntax: `k=v,k2=v2`, values
/// percent-encoded.
pub fn parse_key_values(text: &str) -> Result<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("{pair:?} is not key=value"))?;
            Ok((percent_decode(k.trim()), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_with_percent_encoding() {
        assert_eq!(
            parse_key_values("api-key=abc%3D%3D, x=1").unwrap(),
            vec![("api-key".into(), "abc==".into()), ("x".into(), "1".into())]
        );
        assert!(parse_key_values("novalue").is_err());
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("é%"), "é%");
    }
}
