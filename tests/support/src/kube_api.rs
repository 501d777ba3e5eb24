//! A stand-in for a Kubernetes API server on 127.0.0.1 over HTTPS: no cluster can run here, so
//! the tracer's `--kube-api` client is pointed (by a kubeconfig) at this server, which answers
//! with recorded API responses (tests/fixtures/kube/) the way a real API server does:
//!
//! - `GET /api/v1/pods?fieldSelector=…` (no `watch`): the PodList;
//! - `GET /api/v1/pods?watch=true&…`: the recorded watch events, one JSON object per line, then
//!   any events the test pushes; the stream stays open like a real watch;
//! - `GET /apis/apps/v1/namespaces/NS/replicasets/NAME` and `…/batch/v1/…/jobs/NAME`: the
//!   recorded object, a 404 `Status` when there is none, or a 403 `Status` (with the message
//!   a real API server gives a service account) for resources the test forbids.
//!
//! Every request's path and query is kept, so tests can check what the client asked.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::{wrappers::UnboundedReceiverStream, StreamExt as _};

/// What the server answers.
#[derive(Clone, Debug, Default)]
pub struct ApiScript {
    /// Served for the pod list.
    pub pod_list: Value,
    /// Served, in order, on the first watch of pods.
    pub watch_events: Vec<Value>,
    /// Objects by their API path (`/apis/apps/v1/namespaces/NS/replicasets/NAME`).
    pub objects: HashMap<String, Value>,
    /// Resource names (`replicasets`, `jobs`) every `get` of which is forbidden.
    pub forbidden: Vec<String>,
}

/// The recorded fixtures in tests/fixtures/kube/.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/kube")
}

/// The recorded responses: the pod list, the watch events, and every ReplicaSet and Job.
pub fn recorded() -> Result<ApiScript> {
    let dir = fixtures_dir();
    let read = |name: &str| -> Result<String> {
        std::fs::read_to_string(dir.join(name)).with_context(|| format!("fixture {name}"))
    };
    let mut script = ApiScript {
        pod_list: serde_json::from_str(&read("pods-list.json")?)?,
        ..Default::default()
    };
    for line in read("pods-watch.jsonl")?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        script.watch_events.push(serde_json::from_str(line)?);
    }
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("replicaset-") || name.starts_with("job-") {
            script.add_object(serde_json::from_str(&read(&name)?)?)?;
        }
    }
    Ok(script)
}

/// The API path of a namespaced object.
pub fn object_path(object: &Value) -> Result<String> {
    let api_version = object["apiVersion"].as_str().context("apiVersion")?;
    let plural = match object["kind"].as_str().context("kind")? {
        "ReplicaSet" => "replicasets",
        "Job" => "jobs",
        "Deployment" => "deployments",
        "Pod" => "pods",
        other => anyhow::bail!("no plural known for {other}"),
    };
    let ns = object["metadata"]["namespace"]
        .as_str()
        .context("namespace")?;
    let name = object["metadata"]["name"].as_str().context("name")?;
    let group = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    Ok(format!("{group}/namespaces/{ns}/{plural}/{name}"))
}

impl ApiScript {
    pub fn add_object(&mut self, object: Value) -> Result<()> {
        self.objects.insert(object_path(&object)?, object);
        Ok(())
    }
}

type Watchers = Arc<Mutex<Vec<mpsc::UnboundedSender<Bytes>>>>;

pub struct FakeKubeApi {
    pub addr: SocketAddr,
    /// A kubeconfig naming this server, its CA and a bearer token: KUBECONFIG for the client.
    pub kubeconfig: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    watchers: Watchers,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

impl FakeKubeApi {
    /// `path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Sends `event` (`{"type": …, "object": …}`) to every open pod watch.
    pub fn push(&self, event: &Value) {
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        let line = Bytes::from(line);
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.retain(|w| w.send(line.clone()).is_ok());
        }
    }

    /// Open pod watches.
    pub fn watches(&self) -> usize {
        self.watchers.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// Starts the server on an ephemeral port of 127.0.0.1; its kubeconfig is written in `dir`.
pub async fn start(script: ApiScript, dir: &Path) -> Result<FakeKubeApi> {
    let cert = crate::tls::self_signed()?;
    std::fs::create_dir_all(dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the fake API server")?;
    let addr = listener.local_addr()?;
    let kubeconfig = dir.join(format!("kubeconfig-{}", addr.port()));
    let ca = base64::engine::general_purpose::STANDARD.encode(&cert.cert_pem);
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    \
             server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\n\
             contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: tracer\n\
             current-context: recorded\nusers:\n- name: tracer\n  user:\n    \
             token: recorded-test-token\n",
            port = addr.port()
        ),
    )?;
    let acceptor = TlsAcceptor::from(cert.server_config.clone());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let watchers: Watchers = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let first_watch = Arc::new(Mutex::new(true));
    let (shared_requests, shared_watchers) = (requests.clone(), watchers.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let state = State {
                script: script.clone(),
                requests: shared_requests.clone(),
                watchers: shared_watchers.clone(),
                first_watch: first_watch.clone(),
            };
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.handle(req)) }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(FakeKubeApi {
        addr,
        kubeconfig,
        requests,
        watchers,
        task,
    })
}

#[derive(Clone)]
struct State {
    script: Arc<ApiScript>,
    requests: Arc<Mutex<Vec<String>>>,
    watchers: Watchers,
    first_watch: Arc<Mutex<bool>>,
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_default()
}

/// A `Status` object as the API server sends with an error.
fn status(code: u16, reason: &str, message: String, name: &str, group: &str, kind: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "group": group, "kind": kind},
        "code": code,
    })
}

impl State {
    fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        if let Ok(mut r) = self.requests.lock() {
            r.push(format!("{path}?{query}"));
        }
        let authorised = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some("Bearer recorded-test-token");
        if !authorised {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
            );
        }
        if path == "/api/v1/pods" {
            let watch = query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1");
            if !watch {
                return json_response(StatusCode::OK, &self.script.pod_list);
            }
            let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
            let first = self
                .first_watch
                .lock()
                .map(|mut f| std::mem::replace(&mut *f, false))
                .unwrap_or(false);
            if first {
                for event in &self.script.watch_events {
                    let mut line = event.to_string().into_bytes();
                    line.push(b'\n');
                    let _ = tx.send(Bytes::from(line));
                }
            }
            if let Ok(mut w) = self.watchers.lock() {
                w.push(tx);
            }
            let body = StreamBody::new(
                UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))),
            );
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("transfer-encoding", "chunked")
                .body(BodyExt::boxed(body))
                .unwrap_or_default();
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // apis/<group>/<version>/namespaces/<ns>/<plural>/<name>
        if let ["apis", group, _version, "namespaces", ns, plural, name] = parts.as_slice() {
            if self.script.forbidden.iter().any(|f| f == plural) {
                return json_response(
                    StatusCode::FORBIDDEN,
                    &status(
                        403,
                        "Forbidden",
                        format!(
                            "{plural}.{group} \"{name}\" is forbidden: User \
                             \"system:serviceaccount:agent-tracer:agent-tracer\" cannot get \
                             resource \"{plural}\" in API group \"{group}\" in the namespace \
                             \"{ns}\""
                        ),
                        name,
                        group,
                        plural,
                    ),
                );
            }
            return match self.script.objects.get(&path) {
                Some(object) => json_response(StatusCode::OK, object),
                None => json_response(
                    StatusCode::NOT_FOUND,
                    &status(
                        404,
                        "NotFound",
                        format!("{plural}.{group} \"{name}\" not found"),
                        name,
                        group,
                        plural,
                    ),
                ),
            };
        }
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the server could not find the requested resource",
                    "reason": "NotFound", "details": {}, "code": 404}),
        )
    }
}
