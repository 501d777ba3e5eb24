//! Pod labels and owning workloads from the Kubernetes API (`--kube-api`).
//!
//! Only this node's pods are watched (field selector `spec.nodeName=<node>`), so the RBAC a
//! DaemonSet needs is `get/list/watch` on pods, and the store holds at most the node's pods:
//! a deleted pod leaves it, and a re-list (after the watch was lost) replaces it whole, so pods
//! deleted meanwhile leave too. Of each pod only what the spans carry is kept (name,
//! namespace, labels, workload names), never the whole object.
//!
//! A pod's controller is named by its `ownerReferences` (`controller: true`). A ReplicaSet's own
//! controller (a Deployment) and a Job's (a CronJob) are read through the API with a cached
//! `get`: bounded (LRU) and expiring, so pod churn across many workloads cannot grow it. When
//! reading ReplicaSets is forbidden, the Deployment is derived from the ReplicaSet's name (the
//! Deployment controller names it `<deployment>-<pod-template-hash>`, and the pod carries that
//! hash as a label); a ReplicaSet made by hand would then be misnamed, which is why the API is
//! asked first. A forbidden Job lookup leaves the CronJob unknown (a Job's name does not
//! reliably encode it).
//!
//! Failures never block capture: the API unreachable or misconfigured is warned about once and
//! spans go out without labels until it answers.

use std::{
    collections::HashMap,
    fmt,
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    NamespaceResourceScope,
};
use kube::{
    runtime::{watcher, WatchStreamExt as _},
    Api, Client, Resource,
};
use lru::LruCache;
use tracing::{info, warn};

pub use crate::model::resource::{PodMeta, Workload};

/// More pods than any kubelet runs (its default limit is 110): a bound against a misbehaving
/// API server, not one a real node reaches.
const MAX_PODS: usize = 4096;
/// ReplicaSet and Job lookups remembered (found, missing or forbidden).
const MAX_OWNERS: usize = 1024;
/// A remembered lookup is asked again after this long (a Deployment adopting an orphaned
/// ReplicaSet changes its owner).
const OWNER_TTL: Duration = Duration::from_secs(600);

/// This node's pods by UID, shared by the watcher (writer) and the pipeline (reader).
#[derive(Default)]
pub struct PodStore {
    pods: RwLock<HashMap<String, Arc<PodMeta>>>,
    /// Bumped on every change: the pipeline re-reads its processes' pods only when it moved.
    generation: AtomicU64,
    /// Watch events applied so far (tests wait on it).
    events: AtomicU64,
    /// ReplicaSet and Job lookups cached by the watcher.
    owners_cached: AtomicUsize,
}

impl fmt::Debug for PodStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodStore")
            .field("pods", &self.len())
            .field("generation", &self.generation())
            .finish()
    }
}

impl PodStore {
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.pods.read().ok()?.get(uid).cloned()
    }

    pub fn len(&self) -> usize {
        self.pods.read().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Acquire)
    }

    pub fn owners_cached(&self) -> usize {
        self.owners_cached.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds or replaces a pod; false when the store is full.
    fn insert(&self, meta: PodMeta) -> bool {
        let Ok(mut pods) = self.pods.write() else {
            return false;
        };
        if pods.len() >= MAX_PODS && !pods.contains_key(&meta.uid) {
            return false;
        }
        let unchanged = pods.get(&meta.uid).is_some_and(|old| **old == meta);
        if !unchanged {
            pods.insert(meta.uid.clone(), Arc::new(meta));
            drop(pods);
            self.changed();
        }
        true
    }

    fn remove(&self, uid: &str) {
        let removed = self.pods.write().is_ok_and(|mut p| p.remove(uid).is_some());
        if removed {
            self.changed();
        }
    }

    fn replace(&self, fresh: HashMap<String, Arc<PodMeta>>) {
        if let Ok(mut pods) = self.pods.write() {
            *pods = fresh;
        }
        self.changed();
    }
}

/// The controller among `meta`'s owner references: (kind, name).
pub fn controller(meta: &ObjectMeta) -> Option<(&str, &str)> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

/// The Deployment a ReplicaSet named `replicaset` belongs to, from names alone: the Deployment
/// controller names it `<deployment>-<pod-template-hash>`. Without the pod's hash label nothing
/// is guessed.
pub fn deployment_from_name(replicaset: &str, pod_template_hash: Option<&str>) -> Option<String> {
    let hash = pod_template_hash.filter(|h| !h.is_empty())?;
    replicaset
        .strip_suffix(hash)?
        .strip_suffix('-')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

/// What a cached owner lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    /// The object's controller of the expected kind, if it has one (or the object is gone).
    Known(Option<String>),
    /// Reading the object is forbidden by RBAC.
    Forbidden,
}

/// ReplicaSet → Deployment and Job → CronJob, through cached `get`s.
struct Owners {
    client: Client,
    cache: LruCache<(&'static str, String, String), (Owner, Instant)>,
    ttl: Duration,
    warned_forbidden: [bool; 2],
    warned_failed: bool,
}

impl Owners {
    fn new(client: Client, capacity: usize, ttl: Duration) -> Self {
        Owners {
            client,
            cache: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            ttl,
            warned_forbidden: [false; 2],
            warned_failed: false,
        }
    }

    async fn workload(&mut self, meta: &ObjectMeta) -> Workload {
        let mut w = Workload::default();
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        match controller(meta) {
            Some(("ReplicaSet", rs)) => {
                w.replicaset = Some(rs.to_string());
                w.deployment = match self
                    .owner::<ReplicaSet>("ReplicaSet", namespace, rs, "Deployment")
                    .await
                {
                    Some(Owner::Known(d)) => d,
                    Some(Owner::Forbidden) => {
                        let hash = meta
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("pod-template-hash"));
                        deployment_from_name(rs, hash.map(String::as_str))
                    }
                    None => None,
                };
            }
            Some(("StatefulSet", name)) => w.statefulset = Some(name.to_string()),
            Some(("DaemonSet", name)) => w.daemonset = Some(name.to_string()),
            Some(("Job", job)) => {
                w.job = Some(job.to_string());
                if let Some(Owner::Known(c)) =
                    self.owner::<Job>("Job", namespace, job, "CronJob").await
                {
                    w.cronjob = c;
                }
            }
            _ => {}
        }
        w
    }

    /// The controller of kind `owner_kind` of object `kind`/`name`; `None` when the API could
    /// not answer (not cached: asked again for the next pod).
    async fn owner<K>(
        &mut self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        owner_kind: &str,
    ) -> Option<Owner>
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + fmt::Debug,
        K::DynamicType: Default,
    {
        let key = (kind, namespace.to_string(), name.to_string());
        if let Some((owner, at)) = self.cache.get(&key) {
            if at.elapsed() < self.ttl {
                return Some(owner.clone());
            }
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let owner = match api.get(name).await {
            Ok(object) => Owner::Known(
                controller(object.meta())
                    .filter(|(k, _)| *k == owner_kind)
                    .map(|(_, n)| n.to_string()),
            ),
            Err(kube::Error::Api(status)) if status.is_not_found() => Owner::Known(None),
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                let warned = &mut self.warned_forbidden[usize::from(kind == "Job")];
                if !std::mem::replace(warned, true) {
                    if kind == "ReplicaSet" {
                        warn!(
                            "--kube-api: reading ReplicaSets is forbidden ({}); \
                             k8s.deployment.name is derived from the ReplicaSet's name instead \
                             (grant get on replicasets in apps for the real owner)",
                            status.message
                        );
                    } else {
                        warn!(
                            "--kube-api: reading Jobs is forbidden ({}); k8s.cronjob.name is \
                             left out (grant get on jobs in batch)",
                            status.message
                        );
                    }
                }
                Owner::Forbidden
            }
            Err(e) => {
                if !std::mem::replace(&mut self.warned_failed, true) {
                    warn!("--kube-api: looking up {kind} {namespace}/{name} failed: {e}");
                }
                return None;
            }
        };
        self.cache.put(key, (owner.clone(), Instant::now()));
        Some(owner)
    }
}

/// The parts of `pod` the spans carry, its workload resolved through `owners`.
async fn describe(pod: &Pod, owners: &mut Owners) -> Option<PodMeta> {
    let meta = &pod.metadata;
    Some(PodMeta {
        uid: meta.uid.clone()?,
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        workload: owners.workload(meta).await,
    })
}

/// Watches this node's pods into `store` until the task is dropped. Never returns an error:
/// without an API the tracer goes on without labels.
pub async fn watch(node_name: String, store: Arc<PodStore>) {
    // In a pod: the service account (in-cluster config); elsewhere KUBECONFIG or ~/.kube/config.
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            warn!(
                "--kube-api: no usable Kubernetes API configuration ({e}); pod labels and \
                 workloads are left out"
            );
            return;
        }
    };
    watch_with(client, node_name, store, MAX_OWNERS, OWNER_TTL).await;
}

async fn watch_with(
    client: Client,
    node_name: String,
    store: Arc<PodStore>,
    owner_capacity: usize,
    owner_ttl: Duration,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut owners = Owners::new(client, owner_capacity, owner_ttl);
    let mut events = watcher(pods, config).default_backoff().boxed();
    // Pods listed since the last (re)start of the watch; swapped in whole when the list is done.
    let mut listing: Option<HashMap<String, Arc<PodMeta>>> = None;
    let mut failing = false;
    let mut warned_full = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // The backoff retries; one warning per outage, not one per retry.
                if !std::mem::replace(&mut failing, true) {
                    warn!(
                        "--kube-api: watching pods on node {node_name} failed: {e}; spans go \
                         out without pod labels until the API answers (retrying)"
                    );
                }
                continue;
            }
        };
        // After an error the watcher restarts with `Init` whether or not the API answers: only
        // a listed or watched pod shows it is back.
        if !matches!(event, watcher::Event::Init) && std::mem::replace(&mut failing, false) {
            info!("--kube-api: watching pods on node {node_name} again");
        }
        match event {
            watcher::Event::Init => listing = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(list), Some(meta)) = (&mut listing, describe(&pod, &mut owners).await)
                {
                    if list.len() < MAX_PODS {
                        list.insert(meta.uid.clone(), Arc::new(meta));
                    }
                }
            }
            watcher::Event::InitDone => {
                if let Some(list) = listing.take() {
                    store.replace(list);
                }
            }
            watcher::Event::Apply(pod) => {
                if let Some(meta) = describe(&pod, &mut owners).await {
                    if !store.insert(meta) && !std::mem::replace(&mut warned_full, true) {
                        warn!("--kube-api: more than {MAX_PODS} pods on node {node_name}; the rest go without labels");
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    store.remove(uid);
                }
            }
        }
        store
            .owners_cached
            .store(owners.cache.len(), Ordering::Release);
        store.events.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_from_replicaset_names() {
        assert_eq!(
            deployment_from_name("research-agent-5d78c9869d", Some("5d78c9869d")).as_deref(),
            Some("research-agent")
        );
        assert_eq!(
            deployment_from_name("research-agent-5d78c9869d", None),
            None
        );
        assert_eq!(deployment_from_name("hand-made", Some("5d78c9869d")), None);
        assert_eq!(
            deployment_from_name("-5d78c9869d", Some("5d78c9869d")),
            None
        );
        assert_eq!(
            deployment_from_name("x5d78c9869d", Some("5d78c9869d")),
            None
        );
    }

    #[test]
    fn workload_attributes_are_the_known_ones() {
        let w = Workload {
            replicaset: Some("a-1".into()),
            deployment: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(
            w.attributes().collect::<Vec<_>>(),
            [("k8s.replicaset.name", "a-1"), ("k8s.deployment.name", "a")]
        );
    }

    // The API server side: no cluster can run here, so these tests point the real `kube`
    // client at a local HTTPS server answering with recorded API responses
    // (tests/fixtures/kube/, see tracer_testkit::kube_api).
    use serde_json::{json, Value};
    use tracer_testkit::kube_api::{self, ApiScript, FakeKubeApi};

    const NODE: &str = "ip-10-0-1-17.ec2.internal";
    const AGENT: &str = "7b0f3c2a-1d4e-4f5a-9b8c-2e1d3c4b5a69";
    const STATEFUL: &str = "3c1e9a7b-5f2d-4e8c-a6b1-9d0f2e4c7a15";
    const DAEMON: &str = "9a4d2f6b-1c8e-4b3a-9f7d-5e2c8a1b6d34";
    const JOB: &str = "4f7b2d9e-8c1a-4e6b-a3d5-7f9c1e2b8d60";
    const ADDED: &str = "e1c5a9f3-4b7d-4c2e-9a8f-3d6b1e5c7a04";

    async fn serve(script: ApiScript) -> (FakeKubeApi, Client) {
        let dir = std::env::temp_dir().join(format!("kube-api-test-{}", std::process::id()));
        let api = kube_api::start(script, &dir).await.unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        (api, Client::try_from(config).unwrap())
    }

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start(client: Client, capacity: usize) -> (Arc<PodStore>, tokio::task::JoinHandle<()>) {
        let store = Arc::new(PodStore::default());
        let task = tokio::spawn(watch_with(
            client,
            NODE.to_string(),
            store.clone(),
            capacity,
            OWNER_TTL,
        ));
        (store, task)
    }

    /// Listed, then: summarizer ADDED, the agent's labels MODIFIED, a BOOKMARK, vector-db
    /// DELETED.
    async fn synced(store: &PodStore) {
        wait_until("the recorded list and watch events", || {
            store.get(ADDED).is_some()
                && store.get(STATEFUL).is_none()
                && store
                    .get(AGENT)
                    .is_some_and(|p| p.labels.contains_key("tier"))
        })
        .await;
    }

    #[tokio::test]
    async fn recorded_pods_get_their_labels_and_workloads() {
        let (api, client) = serve(kube_api::recorded().unwrap()).await;
        let (store, task) = start(client, MAX_OWNERS);
        synced(&store).await;

        let agent = store.get(AGENT).unwrap();
        assert_eq!(agent.name, "research-agent-5d78c9869d-x7k2p");
        assert_eq!(agent.namespace, "agents");
        assert_eq!(agent.labels["app.kubernetes.io/name"], "research-agent");
        assert_eq!(agent.labels["tier"], "gold", "MODIFIED event applied");
        assert_eq!(
            agent.workload,
            Workload {
                replicaset: Some("research-agent-5d78c9869d".into()),
                deployment: Some("research-agent".into()),
                ..Default::default()
            }
        );
        let summarizer = store.get(ADDED).unwrap();
        assert_eq!(
            summarizer.workload.deployment.as_deref(),
            Some("summarizer")
        );
        assert_eq!(
            store.get(DAEMON).unwrap().workload,
            Workload {
                daemonset: Some("agent-tracer".into()),
                ..Default::default()
            }
        );
        assert_eq!(
            store.get(JOB).unwrap().workload,
            Workload {
                job: Some("nightly-eval-29384400".into()),
                cronjob: Some("nightly-eval".into()),
                ..Default::default()
            }
        );
        assert_eq!(store.len(), 4, "vector-db-0 was DELETED");

        let requests = api.requests();
        let pods: Vec<_> = requests
            .iter()
            .filter(|r| r.starts_with("/api/v1/pods?"))
            .collect();
        assert!(pods.len() >= 2, "a list and a watch: {requests:?}");
        for r in &pods {
            assert!(
                r.contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")),
                "only this node's pods: {r}"
            );
        }
        // The MODIFIED agent pod found its ReplicaSet in the cache.
        let rs = "/apis/apps/v1/namespaces/agents/replicasets/research-agent-5d78c9869d?";
        assert_eq!(requests.iter().filter(|r| r.starts_with(rs)).count(), 1);
        task.abort();
    }

    #[tokio::test]
    async fn forbidden_owner_lookups_fall_back_to_names_for_deployments_only() {
        let mut script = kube_api::recorded().unwrap();
        script.forbidden = vec!["replicasets".into(), "jobs".into()];
        let (api, client) = serve(script).await;
        let (store, task) = start(client, MAX_OWNERS);
        synced(&store).await;
        let agent = store.get(AGENT).unwrap();
        assert_eq!(agent.workload.deployment.as_deref(), Some("research-agent"));
        let job = store.get(JOB).unwrap();
        assert_eq!(job.workload.job.as_deref(), Some("nightly-eval-29384400"));
        assert_eq!(
            job.workload.cronjob, None,
            "not guessed from the Job's name"
        );
        // A forbidden answer is cached like any other.
        let rs = "/apis/apps/v1/namespaces/agents/replicasets/research-agent-5d78c9869d?";
        assert_eq!(
            api.requests().iter().filter(|r| r.starts_with(rs)).count(),
            1
        );
        task.abort();
    }

    /// A pod of ReplicaSet `rs`, shaped as the recorded ones.
    fn churn_pod(template: &Value, i: usize, rs: &str) -> Value {
        let mut pod = template.clone();
        let meta = &mut pod["metadata"];
        meta["name"] = json!(format!("{rs}-p{i:05}"));
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
        meta["resourceVersion"] = json!((60_000 + i).to_string());
        meta["labels"]["pod-template-hash"] = json!(rs.rsplit('-').next());
        meta["ownerReferences"][0]["name"] = json!(rs);
        pod
    }

    #[tokio::test]
    async fn pod_churn_leaves_the_store_and_the_owner_cache_at_their_bounds() {
        let script = kube_api::recorded().unwrap();
        let mut template = script.pod_list["items"][0].clone();
        template["kind"] = json!("Pod");
        template["apiVersion"] = json!("v1");
        let (api, client) = serve(script).await;
        const CAPACITY: usize = 16;
        let (store, task) = start(client, CAPACITY);
        synced(&store).await;
        wait_until("the watch to be open", || api.watches() > 0).await;
        let (pods, events) = (store.len(), store.events());

        // 1500 pods of 300 ReplicaSets come and go: 3000 watch events.
        const CHURN: usize = 1500;
        for i in 0..CHURN {
            let rs = format!("churn-{:x}", 0xa000 + i % 300);
            let pod = churn_pod(&template, i, &rs);
            api.push(&json!({"type": "ADDED", "object": pod}));
            let mut gone = pod;
            gone["metadata"]["deletionTimestamp"] = json!("2026-11-24T07:30:00Z");
            api.push(&json!({"type": "DELETED", "object": gone}));
            if i % 100 == 0 {
                // Mid-churn the live pods never exceed what was pushed and not yet deleted.
                assert!(store.len() <= pods + 1);
                assert!(store.owners_cached() <= CAPACITY);
            }
        }
        wait_until("every churn event", || {
            store.events() >= events + 2 * CHURN as u64
        })
        .await;
        assert_eq!(store.len(), pods, "every churned pod left the store");
        assert_eq!(
            store.owners_cached(),
            CAPACITY,
            "the LRU stays at its bound"
        );
        assert!(store.get(AGENT).is_some(), "the node's real pods stay");
        task.abort();
    }

    #[tokio::test]
    async fn an_unreachable_api_leaves_the_store_empty_without_blocking() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
        config.connect_timeout = Some(Duration::from_millis(200));
        let (store, task) = start(Client::try_from(config).unwrap(), MAX_OWNERS);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store.is_empty());
        assert!(!task.is_finished(), "keeps retrying with backoff");
        task.abort();
    }
}
