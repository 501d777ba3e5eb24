//! OTLP trace export over gRPC or HTTP/protobuf.
//!
//! Built on the official generated OTLP types (`opentelemetry-proto`) rather than the SDK's
//! span pipeline: a host agent reports many processes, each its own Resource, and builds spans
//! after the fact with explicit ids and timestamps, neither of which the SDK's one-Resource,
//! live-span TracerProvider models.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    },
    common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{
        span::{Event, SpanKind as ProtoKind},
        status::StatusCode,
        ResourceSpans, ScopeSpans, Span as ProtoSpan, Status,
    },
};
use prost::Message as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::mpsc;
use tonic::{
    metadata::{MetadataKey, MetadataMap},
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use super::retry::{self, Outcome, Policy, SendFuture, Transport};
use crate::{
    model::span::{AttrValue, Span, SpanKind, SpanStatus},
    processes::ProcessInfo,
    telemetry::health::Health,
};

pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

/// Longest string attribute value exported (OpenTelemetry's attribute value length limit):
/// content capture is capped well below it, but a value from the wire (a URL, a tool's
/// arguments) must not make a span no receiver accepts. A cut value keeps its UTF-8 whole and
/// the span says how many were cut in `agent_tracer.export.truncated_attributes`.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024 * 1024;
const TRUNCATED_ATTRIBUTES: &str = "agent_tracer.export.truncated_attributes";

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
    /// Spans held for retry while the endpoint is unavailable (`--export-buffer-spans`).
    pub buffer_spans: usize,
    /// The retry buffer's bound in bytes (a quarter of `--memory-budget-mib`).
    pub buffer_bytes: usize,
}

/// Sends export requests over gRPC or HTTP/protobuf and sorts failures into retryable and not,
/// following the OTLP specification's rules (plus `RESOURCE_EXHAUSTED`, which collectors use
/// for back-pressure).
pub struct OtlpTransport {
    config: Arc<OtlpConfig>,
    kind: TransportKind,
}

enum TransportKind {
    Grpc {
        client: TraceServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        headers: HeaderMap,
    },
}

impl OtlpTransport {
    /// Checks the endpoint and headers now, so that a typo is an error at start rather than a
    /// failure on every request.
    pub fn new(config: OtlpConfig) -> Result<Self> {
        let kind = match config.protocol {
            Protocol::Grpc => {
                let (channel, metadata) = grpc_channel(&config)?;
                TransportKind::Grpc {
                    client: TraceServiceClient::new(channel),
                    metadata,
                }
            }
            Protocol::HttpProtobuf => {
                let (client, headers) = http_client(&config)?;
                TransportKind::Http { client, headers }
            }
        };
        Ok(OtlpTransport {
            config: Arc::new(config),
            kind,
        })
    }
}

/// A lazily connected gRPC channel to the collector, and the request metadata carrying the
/// configured headers (checked now: a typo fails the start, not every export).
pub(crate) fn grpc_channel(config: &OtlpConfig) -> Result<(Channel, MetadataMap)> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .with_context(|| format!("invalid OTLP endpoint {:?}", config.endpoint))?
        .connect_timeout(config.timeout)
        .timeout(config.timeout);
    if config.endpoint.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .context("OTLP TLS configuration")?;
    }
    let mut metadata = MetadataMap::new();
    for (k, v) in &config.headers {
        let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .with_context(|| format!("invalid OTLP header name {k:?}"))?;
        let value = v
            .parse()
            .with_context(|| format!("invalid value for OTLP header {k}"))?;
        metadata.insert(key, value);
    }
    Ok((endpoint.connect_lazy(), metadata))
}

/// An HTTP client for the collector, and the request headers: the configured ones (checked
/// now) and the protobuf content type.
pub(crate) fn http_client(config: &OtlpConfig) -> Result<(reqwest::Client, HeaderMap)> {
    reqwest::Url::parse(&config.endpoint)
        .with_context(|| format!("invalid OTLP endpoint {:?}", config.endpoint))?;
    let mut headers = HeaderMap::new();
    for (k, v) in &config.headers {
        let key = HeaderName::from_bytes(k.as_bytes())
            .with_context(|| format!("invalid OTLP header name {k:?}"))?;
        let value = HeaderValue::from_str(v)
            .with_context(|| format!("invalid value for OTLP header {k}"))?;
        headers.insert(key, value);
    }
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .build()
        .context("building the OTLP HTTP client")?;
    Ok((client, headers))
}

impl Transport for OtlpTransport {
    fn encoded_len(&self, span: &Span) -> usize {
        approx_encoded_len(span)
    }

    fn send(&self, spans: &[Arc<Span>]) -> SendFuture {
        let request = export_request(spans, &self.config);
        match &self.kind {
            TransportKind::Grpc { client, metadata } => {
                let mut client = client.clone();
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata.clone();
                Box::pin(async move {
                    match client.export(req).await {
                        Ok(resp) => delivered(resp.into_inner()),
                        Err(status) => grpc_outcome(&status),
                    }
                })
            }
            TransportKind::Http { client, headers } => {
                let req = client
                    .post(&self.config.endpoint)
                    .headers(headers.clone())
                    .body(request.encode_to_vec());
                Box::pin(async move {
                    match req.send().await {
                        Ok(resp) => http_outcome(resp).await,
                        Err(e) => Outcome::Retry {
                            after: None,
                            error: format!("{:#}", anyhow::Error::from(e)),
                        },
                    }
                })
            }
        }
    }
}

fn delivered(response: ExportTraceServiceResponse) -> Outcome {
    let (rejected, message) = response
        .partial_success
        .map(|p| {
            (
                u64::try_from(p.rejected_spans).unwrap_or(0),
                p.error_message,
            )
        })
        .unwrap_or_default();
    Outcome::Delivered { rejected, message }
}

/// A status the client made up from a transport failure (it carries the underlying error) is
/// always worth retrying; one the receiver sent is judged by its code.
fn grpc_outcome(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    let error = format!("gRPC {:?}: {}", status.code(), status.message());
    let from_transport = std::error::Error::source(status).is_some();
    let retry_delay = grpc_retry_delay(status.details());
    let code = status.code();
    if !from_transport
        && matches!(code, Code::ResourceExhausted | Code::OutOfRange)
        && about_size(status.message())
    {
        return Outcome::TooLarge { error };
    }
    let retryable = from_transport
        || matches!(
            code,
            Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
        )
        // The OTLP specification: RESOURCE_EXHAUSTED is retried only when the receiver says,
        // with RetryInfo, that it can recover; retrying it blindly would send the same batch
        // forever and hold back every span behind it.
        || (code == Code::ResourceExhausted && retry_delay.is_some());
    if retryable {
        Outcome::Retry {
            after: retry_delay,
            error,
        }
    } else if code == Code::ResourceExhausted {
        Outcome::TooLarge { error }
    } else {
        Outcome::Reject { error }
    }
}

/// Whether a gRPC status message says the request was too big (grpc-go: "received message
/// larger than max"; tonic: "decoded message length too large").
fn about_size(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("larger than max") || m.contains("too large") || m.contains("message length")
}

/// `google.rpc.Status`, the payload of `grpc-status-details-bin`; declared here for the one
/// field read from it rather than pulling in a crate of well-known types.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The delay a gRPC receiver asked for in a `google.rpc.RetryInfo` detail, if any.
fn grpc_retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    let info = status
        .details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?.min(999_999_999);
    Some(Duration::new(secs, nanos))
}

async fn http_outcome(resp: reqwest::Response) -> Outcome {
    let status = resp.status();
    if status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return delivered(ExportTraceServiceResponse::decode(body.as_ref()).unwrap_or_default());
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let error = format!("OTLP receiver answered {status}");
    match status.as_u16() {
        413 => Outcome::TooLarge { error },
        429 | 502 | 503 | 504 => Outcome::Retry {
            after: retry_after,
            error,
        },
        _ => Outcome::Reject { error },
    }
}

/// The OTLP sink: its transport behind the retry buffer.
pub struct OtlpExporter {
    transport: OtlpTransport,
    policy: Policy,
    health: Arc<Health>,
}

impl OtlpExporter {
    pub fn new(config: OtlpConfig, health: Arc<Health>) -> Result<Self> {
        let policy = Policy {
            buffer_spans: config.buffer_spans,
            buffer_bytes: config.buffer_bytes,
            ..Policy::default()
        };
        Ok(OtlpExporter {
            transport: OtlpTransport::new(config)?,
            policy,
            health,
        })
    }

    /// Delivers spans until the queue closes, then flushes what is left for a bounded time.
    pub async fn run(self, spans: mpsc::Receiver<Arc<Span>>) {
        retry::deliver(self.transport, self.policy, self.health, spans).await;
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
                resource: Some(process_resource(&process, config)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    schema_url: SCHEMA_URL.to_string(),
                }],
                schema_url: SCHEMA_URL.to_string(),
            })
            .collect(),
    }
}

/// A Resource: `identity` first, then the SDK's own attributes, then `details`, then the
/// configured `OTEL_RESOURCE_ATTRIBUTES`, which replace any attribute of the same key. Traces and
/// metrics both build theirs here so they describe the tracer the same way.
pub(crate) fn resource(
    identity: Vec<KeyValue>,
    details: Vec<KeyValue>,
    config: &OtlpConfig,
) -> Resource {
    let mut attributes = identity;
    attributes.extend([
        kv("telemetry.sdk.name", &AttrValue::Str("agent-tracer".into())),
        kv("telemetry.sdk.language", &AttrValue::Str("rust".into())),
        kv(
            "telemetry.sdk.version",
            &AttrValue::Str(env!("CARGO_PKG_VERSION").into()),
        ),
    ]);
    attributes.extend(details);
    for (k, v) in &config.resource_attributes {
        attributes.retain(|a| &a.key != k);
        attributes.push(kv(k, &AttrValue::Str(v.clone())));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// The instrumentation scope of everything the tracer exports.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "agent-tracer".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// The Resource of one traced process.
fn process_resource(process: &ProcessInfo, config: &OtlpConfig) -> Resource {
    let service = config
        .service_name
        .clone()
        .unwrap_or_else(|| process.executable_name.clone());
    let identity = vec![
        kv("service.name", &AttrValue::Str(service)),
        kv("process.pid", &AttrValue::Int(process.pid.into())),
        kv(
            "process.executable.name",
            &AttrValue::Str(process.executable_name.clone()),
        ),
        kv("host.name", &AttrValue::Str(process.host_name.clone())),
    ];
    let mut attributes = Vec::new();
    if let Some(path) = &process.executable_path {
        attributes.push(kv("process.executable.path", &AttrValue::Str(path.clone())));
    }
    if let Some(ns) = process.namespace_pid {
        // `process.vpid` is the (incubating) OpenTelemetry name; ours is kept for dashboards
        // built on it.
        attributes.push(kv("process.vpid", &AttrValue::Int(ns.into())));
        attributes.push(kv(
            "agent_tracer.process.namespace_pid",
            &AttrValue::Int(ns.into()),
        ));
    }
    if let Some(pod) = &process.pod {
        attributes.push(kv("k8s.pod.uid", &AttrValue::Str(pod.uid.clone())));
        for (key, value) in [
            ("k8s.pod.name", &pod.name),
            ("k8s.namespace.name", &pod.namespace),
            ("k8s.container.name", &pod.container_name),
        ] {
            if let Some(value) = value {
                attributes.push(kv(key, &AttrValue::Str(value.clone())));
            }
        }
    }
    if let Some(api) = &process.pod_api {
        for (key, value) in api.workload.attributes() {
            attributes.push(kv(key, &AttrValue::Str(value.to_string())));
        }
        for (key, value) in &api.labels {
            attributes.push(kv(
                &format!("k8s.pod.label.{key}"),
                &AttrValue::Str(value.clone()),
            ));
        }
    }
    if let Some(node) = &process.node_name {
        attributes.push(kv("k8s.node.name", &AttrValue::Str(node.clone())));
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
    resource(identity, attributes, config)
}

fn proto_span(span: &Span) -> ProtoSpan {
    ProtoSpan {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: span.name.clone(),
        kind: match span.kind {
            SpanKind::Client => ProtoKind::Client as i32,
            SpanKind::Internal => ProtoKind::Internal as i32,
        },
        events: span
            .events
            .iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_ns,
                name: e.name.to_string(),
                attributes: e.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                dropped_attributes_count: 0,
            })
            .collect(),
        start_time_unix_nano: span.start_unix_ns,
        end_time_unix_nano: span.end_unix_ns,
        attributes: attributes(span),
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

fn attributes(span: &Span) -> Vec<KeyValue> {
    let mut truncated = 0i64;
    let mut out: Vec<KeyValue> = span
        .attributes
        .iter()
        .map(|(k, v)| {
            let (kv, cut) = kv_counted(k, v);
            truncated += i64::from(cut);
            kv
        })
        .collect();
    if truncated > 0 {
        out.push(KeyValue {
            key: TRUNCATED_ATTRIBUTES.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(truncated)),
            }),
        });
    }
    out
}

fn kv(key: &str, value: &AttrValue) -> KeyValue {
    kv_counted(key, value).0
}

/// The attribute, and whether its value was cut to `MAX_ATTRIBUTE_VALUE_BYTES`.
fn kv_counted(key: &str, value: &AttrValue) -> (KeyValue, bool) {
    let (value, cut) = any(value);
    (
        KeyValue {
            key: key.to_string(),
            value: Some(value),
        },
        cut,
    )
}

/// `s` cut to at most `MAX_ATTRIBUTE_VALUE_BYTES` on a character boundary.
fn capped(s: &str) -> (String, bool) {
    if s.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
        return (s.to_string(), false);
    }
    let mut end = MAX_ATTRIBUTE_VALUE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

/// A cheap upper estimate of the span's protobuf size (values as capped on export), to cut
/// requests by bytes without encoding every span twice.
pub fn approx_encoded_len(span: &Span) -> usize {
    let value_len = |v: &AttrValue| match v {
        AttrValue::Str(s) => s.len().min(MAX_ATTRIBUTE_VALUE_BYTES),
        AttrValue::StrArray(a) => a
            .iter()
            .map(|s| s.len().min(MAX_ATTRIBUTE_VALUE_BYTES) + 8)
            .sum(),
        _ => 8,
    };
    let attrs = |a: &[(&'static str, AttrValue)]| -> usize {
        a.iter().map(|(k, v)| k.len() + value_len(v) + 16).sum()
    };
    let status = match &span.status {
        SpanStatus::Error(m) => m.len(),
        SpanStatus::Unset => 0,
    };
    96 + span.name.len()
        + status
        + attrs(&span.attributes)
        + span
            .events
            .iter()
            .map(|e| 32 + e.name.len() + attrs(&e.attributes))
            .sum::<usize>()
}

fn any(value: &AttrValue) -> (AnyValue, bool) {
    let mut cut = false;
    let mut cap = |s: &str| {
        let (s, c) = capped(s);
        cut |= c;
        s
    };
    let v = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(cap(s)),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::F64(f) => any_value::Value::DoubleValue(*f),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::StrArray(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(cap(s))),
                })
                .collect(),
        }),
    };
    (AnyValue { value: Some(v) }, cut)
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
    //! The two transports against the testkit's real receivers (tonic and hyper servers on
    //! 127.0.0.1), stopped, restarted and made to refuse; no eBPF involved.

    use std::sync::atomic::Ordering::Relaxed;

    use tokio::time::Instant;
    use tracer_testkit::otlp::{self as receiver, Fault, OtlpReceiver};

    use super::*;
    use crate::model::span::SpanStatus;

    fn span(i: usize) -> Arc<Span> {
        Arc::new(Span {
            trace_id: [7; 16],
            span_id: (i as u64 + 1).to_be_bytes(),
            parent_span_id: None,
            name: format!("s{i}"),
            kind: SpanKind::Client,
            start_unix_ns: 1_000 + i as u64,
            end_unix_ns: 2_000 + i as u64,
            attributes: vec![("gen_ai.request.model", AttrValue::Str(format!("m{i}")))],
            status: SpanStatus::Unset,
            events: Vec::new(),
            process: Arc::new(ProcessInfo::unknown(4242)),
        })
    }

    async fn receiver(protocol: Protocol) -> OtlpReceiver {
        match protocol {
            Protocol::Grpc => receiver::start_grpc().await.unwrap(),
            Protocol::HttpProtobuf => receiver::start_http().await.unwrap(),
        }
    }

    /// An exporter with short delays, feeding `rx` to `receiver`.
    fn exporter(
        protocol: Protocol,
        receiver: &OtlpReceiver,
    ) -> (
        mpsc::Sender<Arc<Span>>,
        tokio::task::JoinHandle<()>,
        Arc<Health>,
    ) {
        exporter_cutting_at(protocol, receiver, retry::DEFAULT_MAX_REQUEST_BYTES)
    }

    fn exporter_cutting_at(
        protocol: Protocol,
        receiver: &OtlpReceiver,
        max_request_bytes: usize,
    ) -> (
        mpsc::Sender<Arc<Span>>,
        tokio::task::JoinHandle<()>,
        Arc<Health>,
    ) {
        let endpoint = match protocol {
            Protocol::Grpc => receiver.endpoint(),
            Protocol::HttpProtobuf => format!("{}/v1/traces", receiver.endpoint()),
        };
        let transport = OtlpTransport::new(OtlpConfig {
            endpoint,
            protocol,
            headers: vec![("x-test".into(), "1".into())],
            service_name: None,
            resource_attributes: Vec::new(),
            timeout: Duration::from_secs(2),
            buffer_spans: 1000,
            buffer_bytes: usize::MAX,
        })
        .unwrap();
        let policy = Policy {
            max_batch: 4,
            max_request_bytes,
            batch_delay: Duration::from_millis(5),
            buffer_spans: 1000,
            buffer_bytes: usize::MAX,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            retry_after_max: Duration::from_secs(5),
            final_flush: Duration::from_secs(2),
        };
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        let task = tokio::spawn(retry::deliver(transport, policy, health.clone(), rx));
        (tx, task, health)
    }

    async fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn names(receiver: &OtlpReceiver) -> Vec<String> {
        receiver.spans().into_iter().map(|s| s.span.name).collect()
    }

    fn dropped(h: &Health) -> u64 {
        h.export_dropped_queue_full.load(Relaxed)
            + h.export_dropped_buffer_full.load(Relaxed)
            + h.export_dropped_rejected.load(Relaxed)
            + h.export_dropped_shutdown.load(Relaxed)
    }

    async fn outage_then_recovery(protocol: Protocol) {
        let mut receiver = receiver(protocol).await;
        let (tx, task, health) = exporter(protocol, &receiver);
        // Connected first, so the outage breaks an established connection (gRPC's channel and
        // HTTP's pool must notice and reconnect).
        tx.send(span(0)).await.unwrap();
        wait_until("the first span", || receiver.spans().len() == 1).await;
        receiver.stop().await;
        for i in 1..20 {
            tx.send(span(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        wait_until("retries", || health.export_retries.load(Relaxed) >= 3).await;
        assert_eq!(receiver.spans().len(), 1, "nothing arrives while stopped");
        receiver.restart().await.unwrap();
        wait_until("all 20 spans", || receiver.spans().len() >= 20).await;
        let expected: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        assert_eq!(names(&receiver), expected, "in order, none twice");
        drop(tx);
        task.await.unwrap();
        assert_eq!(health.exported_spans.load(Relaxed), 20);
        assert_eq!(dropped(&health), 0);
    }

    #[tokio::test]
    async fn grpc_outage_then_recovery() {
        outage_then_recovery(Protocol::Grpc).await;
    }

    #[tokio::test]
    async fn http_outage_then_recovery() {
        outage_then_recovery(Protocol::HttpProtobuf).await;
    }

    /// A span of `attrs` attributes of `mib` MiB each.
    fn big_span(i: usize, attrs: usize, mib: usize) -> Arc<Span> {
        const KEYS: [&str; 6] = ["a0", "a1", "a2", "a3", "a4", "a5"];
        let mut s = (*span(i)).clone();
        for key in KEYS.iter().take(attrs) {
            s.attributes
                .push((key, AttrValue::Str("x".repeat(mib * 1024 * 1024))));
        }
        Arc::new(s)
    }

    /// A receiver with gRPC's default 4 MiB message limit (tonic's, as the Collector's):
    /// a 5 MiB attribute is cut to `MAX_ATTRIBUTE_VALUE_BYTES` and says so; a span that is too
    /// big even so is dropped and counted before it is sent; the spans after it arrive.
    #[tokio::test]
    async fn oversized_spans_are_cut_or_dropped_and_never_block_the_rest() {
        let receiver = receiver(Protocol::Grpc).await;
        let (tx, task, health) = exporter(Protocol::Grpc, &receiver);
        tx.send(big_span(0, 1, 5)).await.unwrap();
        tx.send(big_span(1, 6, 1)).await.unwrap();
        for i in 2..6 {
            tx.send(span(i)).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let got = receiver.spans();
        let names: Vec<&str> = got.iter().map(|s| s.span.name.as_str()).collect();
        assert_eq!(names, ["s0", "s2", "s3", "s4", "s5"]);
        let cut = &got[0];
        assert_eq!(
            receiver::as_str(cut.attr("a0")).map(str::len),
            Some(MAX_ATTRIBUTE_VALUE_BYTES)
        );
        assert_eq!(
            receiver::as_int(cut.attr(TRUNCATED_ATTRIBUTES)),
            Some(1),
            "the cut is on the span"
        );
        assert_eq!(health.export_dropped_too_large.load(Relaxed), 1);
        assert_eq!(health.exported_spans.load(Relaxed), 5);
        assert_eq!(health.export_retries.load(Relaxed), 0);
    }

    /// Requests the receiver refuses for their size (tonic: OUT_OF_RANGE "decoded message length
    /// too large") are halved until they pass, not retried whole forever: with no byte cut of
    /// our own, three 3 MiB spans in one 9 MiB request all arrive, one per request.
    #[tokio::test]
    async fn a_request_refused_for_its_size_is_sent_in_halves() {
        let receiver = receiver(Protocol::Grpc).await;
        let (tx, task, health) = exporter_cutting_at(Protocol::Grpc, &receiver, usize::MAX);
        for i in 0..3 {
            tx.send(big_span(i, 3, 1)).await.unwrap();
        }
        tx.send(span(3)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        let mut names = names(&receiver);
        names.sort();
        assert_eq!(names, ["s0", "s1", "s2", "s3"]);
        assert_eq!(health.exported_spans.load(Relaxed), 4);
        assert_eq!(health.export_dropped_too_large.load(Relaxed), 0);
        assert_eq!(dropped(&health), 0);
    }

    /// RESOURCE_EXHAUSTED is retried only with RetryInfo (the OTLP specification; the case with
    /// it is in `grpc_status_classification`); without it the request is treated as too large,
    /// never retried as it is.
    #[test]
    fn resource_exhausted_is_retried_only_when_the_receiver_says_when() {
        let plain = tonic::Status::resource_exhausted("quota");
        assert!(matches!(grpc_outcome(&plain), Outcome::TooLarge { .. }));
        let big = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 9437300 bytes, the limit is: 4194304",
        );
        assert!(matches!(grpc_outcome(&big), Outcome::TooLarge { .. }));
    }

    async fn refusal_is_dropped_at_once(protocol: Protocol) {
        let receiver = receiver(protocol).await;
        receiver.set_fault(Some(Fault::Invalid));
        let (tx, task, health) = exporter(protocol, &receiver);
        for i in 0..3 {
            tx.send(span(i)).await.unwrap();
        }
        wait_until("the refusal", || {
            health.export_dropped_rejected.load(Relaxed) == 3
        })
        .await;
        receiver.set_fault(None);
        tx.send(span(3)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(receiver.faulted_at().len(), 1, "not retried");
        assert_eq!(names(&receiver), vec!["s3".to_string()]);
        assert_eq!(health.export_retries.load(Relaxed), 0);
        assert_eq!(health.exported_spans.load(Relaxed), 1);
        assert_eq!(dropped(&health), 3);
    }

    #[tokio::test]
    async fn grpc_invalid_argument_is_dropped_at_once() {
        refusal_is_dropped_at_once(Protocol::Grpc).await;
    }

    #[tokio::test]
    async fn http_400_is_dropped_at_once() {
        refusal_is_dropped_at_once(Protocol::HttpProtobuf).await;
    }

    /// HTTP 503 with `Retry-After: 1`: the next attempt waits the second the receiver asked for
    /// (the test backoff would retry after 20 ms). gRPC UNAVAILABLE carries no delay here, so it
    /// is retried on the exporter's own backoff.
    async fn unavailable_is_retried(protocol: Protocol) -> Duration {
        let receiver = receiver(protocol).await;
        receiver.set_fault(Some(Fault::Unavailable {
            retry_after_secs: 1,
        }));
        let (tx, task, health) = exporter(protocol, &receiver);
        tx.send(span(0)).await.unwrap();
        wait_until("the 503", || !receiver.faulted_at().is_empty()).await;
        receiver.set_fault(None);
        wait_until("delivery", || receiver.spans().len() == 1).await;
        drop(tx);
        task.await.unwrap();
        assert_eq!(health.exported_spans.load(Relaxed), 1);
        assert_eq!(dropped(&health), 0);
        assert!(health.export_retries.load(Relaxed) >= 1);
        receiver.accepted_at()[0] - receiver.faulted_at()[0]
    }

    #[tokio::test]
    async fn http_503_retry_after_is_honoured() {
        let waited = unavailable_is_retried(Protocol::HttpProtobuf).await;
        assert!(waited >= Duration::from_millis(950), "{waited:?}");
    }

    #[tokio::test]
    async fn grpc_unavailable_is_retried_on_backoff() {
        let waited = unavailable_is_retried(Protocol::Grpc).await;
        assert!(waited < Duration::from_millis(900), "{waited:?}");
    }

    #[test]
    fn grpc_status_classification() {
        let retry_info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let details = RpcStatus {
            code: tonic::Code::ResourceExhausted as i32,
            message: "slow down".into(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE.into(),
                value: retry_info.encode_to_vec(),
            }],
        }
        .encode_to_vec();
        let throttled = tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            details.into(),
        );
        assert!(matches!(
            grpc_outcome(&throttled),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_millis(2500)
        ));
        assert!(matches!(
            grpc_outcome(&tonic::Status::unavailable("down")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            grpc_outcome(&tonic::Status::invalid_argument("bad")),
            Outcome::Reject { .. }
        ));
        // Garbage details are ignored, not an error.
        let garbled =
            tonic::Status::with_details(tonic::Code::Unavailable, "", vec![0xff, 0x01].into());
        assert!(matches!(
            grpc_outcome(&garbled),
            Outcome::Retry { after: None, .. }
        ));
    }

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

    #[test]
    fn resource_names_container_pod_and_node() {
        let mut p = ProcessInfo::unknown(4242);
        p.namespace_pid = Some(1);
        p.container_id = Some("c".repeat(64));
        p.container_runtime = Some("containerd");
        p.node_name = Some("node-a".into());
        p.pod = Some(std::sync::Arc::new(crate::processes::PodInfo {
            uid: "u-1".into(),
            name: Some("agent-7".into()),
            namespace: Some("ai".into()),
            container_name: None,
        }));
        p.pod_api = Some(std::sync::Arc::new(crate::processes::PodMeta {
            uid: "u-1".into(),
            labels: [("app.kubernetes.io/name".to_string(), "agent".to_string())].into(),
            workload: crate::processes::kube_api::Workload {
                replicaset: Some("agent-5d78c9869d".into()),
                deployment: Some("agent".into()),
                ..Default::default()
            },
            ..Default::default()
        }));
        let config = OtlpConfig {
            endpoint: String::new(),
            protocol: Protocol::Grpc,
            headers: Vec::new(),
            service_name: None,
            resource_attributes: Vec::new(),
            timeout: std::time::Duration::from_secs(1),
            buffer_spans: 1,
            buffer_bytes: usize::MAX,
        };
        let r = process_resource(&p, &config);
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        assert_eq!(get("process.pid"), Some(V::IntValue(4242)));
        assert_eq!(get("process.vpid"), Some(V::IntValue(1)));
        assert_eq!(
            get("agent_tracer.process.namespace_pid"),
            Some(V::IntValue(1))
        );
        assert_eq!(
            get("container.runtime"),
            Some(V::StringValue("containerd".into()))
        );
        assert_eq!(get("k8s.pod.uid"), Some(V::StringValue("u-1".into())));
        assert_eq!(get("k8s.pod.name"), Some(V::StringValue("agent-7".into())));
        assert_eq!(get("k8s.namespace.name"), Some(V::StringValue("ai".into())));
        assert_eq!(get("k8s.node.name"), Some(V::StringValue("node-a".into())));
        assert_eq!(get("k8s.container.name"), None, "unknown, not guessed");
        assert_eq!(
            get("k8s.pod.label.app.kubernetes.io/name"),
            Some(V::StringValue("agent".into()))
        );
        assert_eq!(
            get("k8s.replicaset.name"),
            Some(V::StringValue("agent-5d78c9869d".into()))
        );
        assert_eq!(
            get("k8s.deployment.name"),
            Some(V::StringValue("agent".into()))
        );
        assert_eq!(get("k8s.statefulset.name"), None);
    }
}
