//! Real OTLP receivers, gRPC (the generated TraceService and MetricsService) and HTTP/protobuf
//! (`/v1/traces`, `/v1/metrics`), that keep what they receive: decoded for assertions, raw for
//! searching leaked secrets.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        },
    },
    common::v1::{any_value::Value, AnyValue, KeyValue},
    metrics::v1::{Metric, ResourceMetrics},
    trace::v1::Span,
};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Default)]
struct Received {
    requests: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    raw: Vec<Vec<u8>>,
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A span with its resource's attributes.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        find(&self.span.attributes, key)
    }
    pub fn resource_attr(&self, key: &str) -> Option<&Value> {
        find(&self.resource, key)
    }
}

pub fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

impl OtlpReceiver {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let Ok(received) = self.received.lock() else {
            return Vec::new();
        };
        received
            .requests
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter())
                    .map(move |s| ReceivedSpan {
                        resource: resource.clone(),
                        span: s.clone(),
                    })
            })
            .collect()
    }

    /// Every exported byte, to search for things that must never be exported.
    pub fn raw_bytes(&self) -> Vec<u8> {
        self.received
            .lock()
            .map(|r| r.raw.concat())
            .unwrap_or_default()
    }

    /// Every metrics export received, in order.
    pub fn metrics_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.received
            .lock()
            .map(|r| r.metrics.clone())
            .unwrap_or_default()
    }

    /// The metric `name` as the latest export that carried it reported it (cumulative, so the
    /// latest holds the totals), with that export's resource.
    pub fn latest_metric(&self, name: &str) -> Option<(ResourceMetrics, Metric)> {
        self.metrics_requests().iter().rev().find_map(|req| {
            req.resource_metrics.iter().find_map(|rm| {
                rm.scope_metrics
                    .iter()
                    .flat_map(|sm| sm.metrics.iter())
                    .find(|m| m.name == name)
                    .map(|m| (rm.clone(), m.clone()))
            })
        })
    }

    /// Waits until `pred` holds for this receiver (for metrics, which `wait_for` does not see).
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !pred(self) {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; {} metrics exports received",
                    self.metrics_requests().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Waits until `pred` holds for the spans received so far.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return Ok(spans);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; received {} spans: {:#?}",
                    spans.len(),
                    spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Collector(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        if let Ok(mut r) = self.0.lock() {
            r.raw.push(request.encode_to_vec());
            r.requests.push(request);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        if let Ok(mut r) = self.0.lock() {
            r.raw.push(request.encode_to_vec());
            r.metrics.push(request);
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

pub async fn start_grpc() -> Result<OtlpReceiver> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Received::default()));
    let service = TraceServiceServer::new(Collector(received.clone()));
    let metrics = MetricsServiceServer::new(Collector(received.clone()));
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .add_service(metrics)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Ok(OtlpReceiver {
        addr,
        received,
        task,
    })
}

pub async fn start_http() -> Result<OtlpReceiver> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let received = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let protobuf = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (status, resp) = match (protobuf, path.as_str()) {
                            (true, "/v1/traces") => {
                                match ExportTraceServiceRequest::decode(body.as_ref()) {
                                    Ok(request) => {
                                        if let Ok(mut r) = received.lock() {
                                            r.raw.push(body.to_vec());
                                            r.requests.push(request);
                                        }
                                        (200, ExportTraceServiceResponse::default().encode_to_vec())
                                    }
                                    Err(_) => (400, Vec::new()),
                                }
                            }
                            (true, "/v1/metrics") => {
                                match ExportMetricsServiceRequest::decode(body.as_ref()) {
                                    Ok(request) => {
                                        if let Ok(mut r) = received.lock() {
                                            r.raw.push(body.to_vec());
                                            r.metrics.push(request);
                                        }
                                        (
                                            200,
                                            ExportMetricsServiceResponse::default().encode_to_vec(),
                                        )
                                    }
                                    Err(_) => (400, Vec::new()),
                                }
                            }
                            _ => (400, Vec::new()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(resp)))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(OtlpReceiver {
        addr,
        received,
        task,
    })
}

/// Attribute value helpers for assertions.
pub fn as_str(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}
pub fn as_int(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}
pub fn as_f64(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::DoubleValue(f)) => Some(*f),
        _ => None,
    }
}
pub fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v {
        Some(Value::BoolValue(b)) => Some(*b),
        _ => None,
    }
}
pub fn as_strs(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        Some(Value::ArrayValue(a)) => Some(
            a.values
                .iter()
                .filter_map(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}
