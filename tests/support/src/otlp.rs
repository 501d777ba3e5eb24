//! Real OTLP receivers, gRPC (the generated TraceService and MetricsService) and HTTP/protobuf
//! (`/v1/traces`, `/v1/metrics`), that keep what they receive: decoded for assertions, raw for
//! searching leaked secrets.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
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
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// An answer the receiver gives instead of accepting, to exercise the exporter's error paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 503 with `Retry-After: retry_after_secs`; gRPC `UNAVAILABLE`.
    Unavailable { retry_after_secs: u64 },
    /// HTTP 400; gRPC `INVALID_ARGUMENT`.
    Invalid,
}

#[derive(Default)]
struct Received {
    requests: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    raw: Vec<Vec<u8>>,
    /// When each accepted request arrived.
    accepted_at: Vec<Instant>,
    /// When each request answered with a fault arrived.
    faulted_at: Vec<Instant>,
    fault: Option<Fault>,
}

#[derive(Clone, Copy)]
enum Kind {
    Grpc,
    Http,
}

/// A receiver that can be stopped (its listener and every connection closed, as when a
/// collector goes away) and started again on the same port, keeping what it received.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    kind: Kind,
    received: Arc<Mutex<Received>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
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

    /// Closes the listener and every open connection; the port refuses connections until
    /// `restart`.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Returns once the task, and with it the connection set, has been dropped.
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let listener = listen(self.addr)?;
        self.task = Some(serve(self.kind, listener, self.received.clone()));
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// From now on answer every request with `fault` (None: accept again).
    pub fn set_fault(&self, fault: Option<Fault>) {
        if let Ok(mut r) = self.received.lock() {
            r.fault = fault;
        }
    }

    /// Arrival times of the requests accepted so far.
    pub fn accepted_at(&self) -> Vec<Instant> {
        self.received
            .lock()
            .map(|r| r.accepted_at.clone())
            .unwrap_or_default()
    }

    /// Arrival times of the requests answered with a fault so far.
    pub fn faulted_at(&self) -> Vec<Instant> {
        self.received
            .lock()
            .map(|r| r.faulted_at.clone())
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
        let timeout = crate::patience(timeout);
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

    /// Waits until `pred` holds for the spans received so far.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let timeout = crate::patience(timeout);
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
            match r.fault {
                Some(fault) => {
                    r.faulted_at.push(Instant::now());
                    return Err(match fault {
                        Fault::Unavailable { .. } => tonic::Status::unavailable("down for a test"),
                        Fault::Invalid => tonic::Status::invalid_argument("refused for a test"),
                    });
                }
                None => {
                    r.raw.push(request.encode_to_vec());
                    r.requests.push(request);
                    r.accepted_at.push(Instant::now());
                }
            }
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

/// A listening socket that can take a port whose previous connections are still in TIME_WAIT.
fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(1024)?)
}

fn serve(kind: Kind, listener: TcpListener, received: Arc<Mutex<Received>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Connections are owned by this set, so stopping the receiver (aborting this task)
        // drops them all, like a collector process going away.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else {
                        continue;
                    };
                    match kind {
                        Kind::Grpc => connections.spawn(serve_grpc(tcp, received.clone())),
                        Kind::Http => connections.spawn(serve_http(tcp, received.clone())),
                    };
                }
                Some(_) = connections.join_next() => {}
            }
        }
    })
}

async fn serve_grpc(tcp: TcpStream, received: Arc<Mutex<Received>>) {
    let routes = tonic::service::Routes::new(TraceServiceServer::new(Collector(received.clone())))
        .add_service(MetricsServiceServer::new(Collector(received)));
    let service = TowerToHyperService::new(routes);
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tcp), service)
        .await;
}

async fn serve_http(tcp: TcpStream, received: Arc<Mutex<Received>>) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let received = received.clone();
        async move {
            if req.uri().path() == "/v1/metrics" {
                return Ok(metrics_over_http(req, &received).await);
            }
            let ok = req.uri().path() == "/v1/traces"
                && req
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let decoded = ExportTraceServiceRequest::decode(body.as_ref());
            let mut retry_after = None;
            let status = match received.lock() {
                Err(_) => 500,
                Ok(mut r) => match (r.fault, ok, decoded) {
                    (Some(fault), _, _) => {
                        r.faulted_at.push(Instant::now());
                        match fault {
                            Fault::Unavailable { retry_after_secs } => {
                                retry_after = Some(retry_after_secs);
                                503
                            }
                            Fault::Invalid => 400,
                        }
                    }
                    (None, true, Ok(request)) => {
                        r.raw.push(body.to_vec());
                        r.requests.push(request);
                        r.accepted_at.push(Instant::now());
                        200
                    }
                    _ => 400,
                },
            };
            let resp = ExportTraceServiceResponse::default().encode_to_vec();
            let mut builder = Response::builder()
                .status(status)
                .header("content-type", "application/x-protobuf");
            if let Some(secs) = retry_after {
                builder = builder.header("retry-after", secs.to_string());
            }
            Ok::<_, std::convert::Infallible>(
                builder
                    .body(Full::new(Bytes::from(resp)))
                    .unwrap_or_default(),
            )
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .await;
}

/// `/v1/metrics`: metrics are always accepted (faults are for the trace exporter's tests).
async fn metrics_over_http(
    req: Request<hyper::body::Incoming>,
    received: &Arc<Mutex<Received>>,
) -> Response<Full<Bytes>> {
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
    let status = match ExportMetricsServiceRequest::decode(body.as_ref()) {
        Ok(request) if protobuf => {
            if let Ok(mut r) = received.lock() {
                r.raw.push(body.to_vec());
                r.metrics.push(request);
            }
            200
        }
        _ => 400,
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(
            ExportMetricsServiceResponse::default().encode_to_vec(),
        )))
        .unwrap_or_default()
}

async fn start(kind: Kind) -> Result<OtlpReceiver> {
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Received::default()));
    let task = serve(kind, listener, received.clone());
    Ok(OtlpReceiver {
        addr,
        kind,
        received,
        task: Some(task),
    })
}

pub async fn start_grpc() -> Result<OtlpReceiver> {
    start(Kind::Grpc).await
}

/// A gRPC receiver on a socket the caller made listen: one bound inside another network
/// namespace (a container's) serves there. (`restart` would listen in this process' own.)
pub async fn start_grpc_on(listener: std::net::TcpListener) -> Result<OtlpReceiver> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Received::default()));
    let task = serve(Kind::Grpc, listener, received.clone());
    Ok(OtlpReceiver {
        addr,
        kind: Kind::Grpc,
        received,
        task: Some(task),
    })
}

pub async fn start_http() -> Result<OtlpReceiver> {
    start(Kind::Http).await
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
