//! Pod names without Kubernetes API access: the kubelet lays out container logs on the node as
//!
//! ```text
//! /var/log/pods/<namespace>_<pod name>_<pod uid>/<container name>/<restart count>.log
//! /var/log/containers/<pod name>_<namespace>_<container name>-<container id>.log -> the above
//! ```
//!
//! Namespaces and pod names are DNS labels/subdomains (no `_`), so both names split without
//! ambiguity. The per-pod directory does not name container ids (its files are named by restart
//! count); the `containers` symlinks beside it do, so a process's container id (from its cgroup)
//! finds its container name there. Without a symlink, a pod with a single container directory
//! names that one; otherwise the container name is left unknown rather than guessed.

pub use crate::model::resource::PodInfo;

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// A pod as its log directory describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodDir {
    namespace: String,
    name: String,
    containers: Vec<String>,
}

/// `<namespace>_<pod>_<uid>` → (namespace, pod, uid).
pub fn parse_pod_dir_name(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && !ns.is_empty() && !pod.is_empty() && !uid.is_empty())
        .then_some((ns, pod, uid))
}

/// `<pod>_<namespace>_<container>-<64 hex id>.log` → (pod, namespace, container, id).
pub fn parse_container_log_name(name: &str) -> Option<(&str, &str, &str, &str)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut parts = rest.splitn(3, '_');
    let (pod, ns, container) = (parts.next()?, parts.next()?, parts.next()?);
    (!pod.is_empty() && !ns.is_empty() && !container.is_empty()).then_some((pod, ns, container, id))
}

/// Lookups remembered (found or not), per container (or per pod for a process outside a
/// container). Beyond it the oldest is forgotten: a node runs a few hundred pods at most, so
/// churn cannot grow the cache.
const MAX_REMEMBERED: usize = 4096;
/// What was not found is looked for again after this long: a pod's log directory may be
/// created just after its first process starts.
const RETRY_MISSING: Duration = Duration::from_secs(2);

pub struct PodDirectory {
    pods_dir: PathBuf,
    containers_dir: PathBuf,
    /// Keyed by container id, else pod uid. A new container is a new key, so the pod's
    /// directory is read again when one appears (an init container's pod gains its app
    /// containers later: a stale single-container list would name the wrong one).
    resolved: HashMap<String, (Arc<PodInfo>, Instant)>,
    order: VecDeque<String>,
    max_remembered: usize,
}

impl PodDirectory {
    /// `pods_dir` is the kubelet's pod log root; the container symlinks are looked for in the
    /// `containers` directory beside it.
    pub fn new(pods_dir: PathBuf) -> Self {
        let containers_dir = pods_dir
            .parent()
            .map(|p| p.join("containers"))
            .unwrap_or_else(|| PathBuf::from("/var/log/containers"));
        PodDirectory {
            pods_dir,
            containers_dir,
            resolved: HashMap::new(),
            order: VecDeque::new(),
            max_remembered: MAX_REMEMBERED,
        }
    }

    pub fn cached(&self) -> usize {
        self.resolved.len()
    }

    /// What the node's log directories say about pod `uid` and (when known) container `id`.
    pub fn lookup(&mut self, uid: &str, container_id: Option<&str>) -> Arc<PodInfo> {
        let key = container_id.unwrap_or(uid);
        if let Some((info, at)) = self.resolved.get(key) {
            let complete = info.uid == uid && info.name.is_some() && info.container_name.is_some();
            if complete || (info.uid == uid && at.elapsed() < RETRY_MISSING) {
                return info.clone();
            }
        }
        let info = Arc::new(self.read(uid, container_id));
        if self
            .resolved
            .insert(key.to_string(), (info.clone(), Instant::now()))
            .is_none()
        {
            self.order.push_back(key.to_string());
            while self.resolved.len() > self.max_remembered {
                match self.order.pop_front() {
                    Some(old) => {
                        self.resolved.remove(&old);
                    }
                    None => break,
                }
            }
        }
        info
    }

    fn read(&self, uid: &str, container_id: Option<&str>) -> PodInfo {
        let pod = read_pod_dir(&self.pods_dir, uid);
        let mut container_name = None;
        if let (Some(pod), Some(id)) = (&pod, container_id) {
            container_name = find_container(&self.containers_dir, id, pod);
        }
        if container_name.is_none() {
            if let Some([only]) = pod.as_ref().map(|p| p.containers.as_slice()) {
                container_name = Some(only.clone());
            }
        }
        PodInfo {
            uid: uid.to_string(),
            name: pod.as_ref().map(|p| p.name.clone()),
            namespace: pod.as_ref().map(|p| p.namespace.clone()),
            container_name,
        }
    }
}

fn read_pod_dir(pods_dir: &Path, uid: &str) -> Option<PodDir> {
    let suffix = format!("_{uid}");
    std::fs::read_dir(pods_dir)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let file_name = entry.file_name();
            let name = file_name.to_str()?;
            if !name.ends_with(&suffix) {
                return None;
            }
            let (namespace, pod, found_uid) = parse_pod_dir_name(name)?;
            if found_uid != uid {
                return None;
            }
            let mut containers: Vec<String> = std::fs::read_dir(entry.path())
                .map(|dirs| {
                    dirs.flatten()
                        .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
                        .filter_map(|d| d.file_name().to_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            containers.sort();
            Some(PodDir {
                namespace: namespace.to_string(),
                name: pod.to_string(),
                containers,
            })
        })
}

/// The container whose log symlink carries `id`, when it belongs to `pod`.
fn find_container(containers_dir: &Path, id: &str, pod: &PodDir) -> Option<String> {
    let suffix = format!("-{id}.log");
    std::fs::read_dir(containers_dir)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let file_name = entry.file_name();
            let name = file_name.to_str()?;
            if !name.ends_with(&suffix) {
                return None;
            }
            let (pod_name, ns, container, _) = parse_container_log_name(name)?;
            (pod_name == pod.name && ns == pod.namespace).then(|| container.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID2: &str = "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn directory_names() {
        assert_eq!(
            parse_pod_dir_name("kube-system_coredns-5d78c9869d-abcde_7b0f3c2a-1d4e"),
            Some(("kube-system", "coredns-5d78c9869d-abcde", "7b0f3c2a-1d4e"))
        );
        assert_eq!(parse_pod_dir_name("a_b"), None);
        assert_eq!(parse_pod_dir_name("a_b_c_d"), None);
        assert_eq!(parse_pod_dir_name("_b_c"), None);
        assert_eq!(
            parse_container_log_name(&format!("web-0_shop_nginx-sidecar-{ID}.log")),
            Some(("web-0", "shop", "nginx-sidecar", ID))
        );
        assert_eq!(parse_container_log_name("web-0_shop_nginx-abc.log"), None);
        assert_eq!(
            parse_container_log_name(&format!("web-0_nginx-{ID}.log")),
            None
        );
    }

    /// A node's log tree, made in a temporary directory.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!("pods-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("pods")).unwrap();
            std::fs::create_dir_all(root.join("containers")).unwrap();
            Tree(root)
        }
        fn pod(&self, ns: &str, pod: &str, uid: &str, containers: &[(&str, Option<&str>)]) {
            for (c, id) in containers {
                let dir = self.0.join(format!("pods/{ns}_{pod}_{uid}/{c}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("0.log"), "").unwrap();
                if let Some(id) = id {
                    let _ = std::os::unix::fs::symlink(
                        dir.join("0.log"),
                        self.0.join(format!("containers/{pod}_{ns}_{c}-{id}.log")),
                    );
                }
            }
        }
        fn directory(&self) -> PodDirectory {
            PodDirectory::new(self.0.join("pods"))
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn names_pods_and_containers() {
        let tree = Tree::new("names");
        tree.pod(
            "shop",
            "web-0",
            "u1",
            &[("app", Some(ID)), ("proxy", Some(ID2))],
        );
        tree.pod("batch", "job-x", "u2", &[("main", None)]);
        tree.pod("batch", "job-y", "u3", &[("a", None), ("b", None)]);
        let mut dir = tree.directory();

        let web = dir.lookup("u1", Some(ID2));
        assert_eq!(web.name.as_deref(), Some("web-0"));
        assert_eq!(web.namespace.as_deref(), Some("shop"));
        assert_eq!(
            web.container_name.as_deref(),
            Some("proxy"),
            "matched by id"
        );

        let job = dir.lookup("u2", Some(ID));
        assert_eq!(
            job.container_name.as_deref(),
            Some("main"),
            "the only container"
        );
        assert_eq!(job.name.as_deref(), Some("job-x"));

        let two = dir.lookup("u3", None);
        assert_eq!(
            two.container_name, None,
            "two containers, no id: not guessed"
        );
        assert_eq!(two.name.as_deref(), Some("job-y"));

        let gone = dir.lookup("nope", Some(ID));
        assert_eq!(
            (gone.name.clone(), gone.container_name.clone()),
            (None, None)
        );
        assert_eq!(gone.uid, "nope");
    }

    #[test]
    fn a_pod_appearing_later_is_found_and_the_cache_stays_bounded() {
        let tree = Tree::new("churn");
        let mut dir = tree.directory();
        assert_eq!(dir.lookup("late", None).name, None);
        tree.pod("ns", "late-pod", "late", &[("c", None)]);
        // Within the retry window the miss is remembered; after it the pod is read again.
        assert_eq!(dir.lookup("late", None).name, None);
        dir.resolved.get_mut("late").unwrap().1 = Instant::now() - RETRY_MISSING;
        assert_eq!(dir.lookup("late", None).name.as_deref(), Some("late-pod"));

        // An init container ran alone; the app container that follows is a new container id,
        // which reads the pod again and finds two containers: no guess.
        tree.pod("ns", "init-pod", "ip", &[("init", None)]);
        assert_eq!(
            dir.lookup("ip", Some(ID)).container_name.as_deref(),
            Some("init")
        );
        tree.pod("ns", "init-pod", "ip", &[("app", None)]);
        assert_eq!(dir.lookup("ip", Some(ID2)).container_name, None);

        // Pods come and go: each is created, looked up, and deleted. (A small bound keeps the
        // test fast; the eviction is the same at any size.)
        dir.max_remembered = 64;
        for i in 0..300 {
            let pod_dir = tree.0.join(format!("pods/ns_p{i}_churn-{i}"));
            tree.pod(
                "ns",
                &format!("p{i}"),
                &format!("churn-{i}"),
                &[("c", None)],
            );
            let found = dir.lookup(&format!("churn-{i}"), Some(&format!("{i:064x}")));
            assert_eq!(found.name, Some(format!("p{i}")));
            std::fs::remove_dir_all(pod_dir).unwrap();
        }
        assert_eq!(dir.cached(), 64);
        assert_eq!(dir.order.len(), dir.resolved.len());
    }
}
