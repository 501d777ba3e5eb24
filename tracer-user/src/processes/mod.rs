//! The process catalogue every stage may ask: who a pid is (executable, command line, parent,
//! container, Kubernetes pod) and whether the selection rules trace it. A process is read from
//! /proc when it is first seen (it may be gone by the time its last span is built), kept while
//! it runs and for a while after it exits; the pipeline fills each finished span's process from
//! here.

mod cgroups;
mod container;
pub mod kube_api;
pub mod pods;
pub mod procfs;
pub mod select;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
};

pub use container::parent_pid;
pub use kube_api::{PodMeta, PodStore};
pub use pods::PodInfo;
pub use select::{Selection, SelectionRules};

pub use crate::model::redact::redact_args;
pub use crate::model::resource::ProcessInfo;
use crate::model::span::Span;

impl ProcessInfo {
    /// `cgroup` is the process's cgroup v2 path as the kernel gave it at exec; when it names no
    /// container or pod (none given, or the process sits in a v1 hierarchy's container on a
    /// hybrid host), /proc/PID/cgroup is read instead.
    fn read(
        pid: u32,
        host_name: &str,
        kube: Option<&mut Kubernetes>,
        cgroup: Option<&str>,
    ) -> Self {
        let exe = procfs::executable(pid);
        let args = procfs::args(pid);
        let comm = procfs::comm(pid);
        let executable_name = exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .map(str::to_string)
            .or(comm)
            .unwrap_or_else(|| "unknown".to_string());
        let status = procfs::status(pid);
        let namespace_pid = status
            .as_deref()
            .and_then(container::namespace_pid)
            .filter(|ns| *ns != pid);
        let parent_pid = status.as_deref().and_then(container::parent_pid);
        let cgroup = cgroup
            .map(container::identity_of_path)
            .filter(|id| id.container_id.is_some() || id.pod_uid.is_some())
            .unwrap_or_else(|| {
                procfs::cgroup(pid)
                    .map(|c| container::identity_of(&c))
                    .unwrap_or_default()
            });
        let (pod, node_name, pod_api) = match kube {
            Some(kube) => {
                let pod = cgroup
                    .pod_uid
                    .as_deref()
                    .map(|uid| kube.pods.lookup(uid, cgroup.container_id.as_deref()));
                let api = kube.api_pod(pod.as_deref());
                (pod, kube.node_name.clone(), api)
            }
            None => (None, None, None),
        };
        let mut info = ProcessInfo {
            pid,
            namespace_pid,
            parent_pid,
            container_runtime: cgroup.runtime,
            container_id: cgroup.container_id,
            pod,
            pod_api: None,
            node_name,
            executable_path: exe,
            executable_name,
            command_line: (!args.is_empty()).then(|| redact_args(&args).join(" ")),
            host_name: host_name.to_string(),
        };
        info.set_pod_api(pod_api);
        info
    }

    /// Attaches what the API says about the process's pod; the API's pod name and namespace
    /// stand in for the ones the pod log tree could not give (it may not be mounted).
    fn set_pod_api(&mut self, meta: Option<Arc<PodMeta>>) {
        if let (Some(pod), Some(meta)) = (&mut self.pod, &meta) {
            if pod.name.is_none() || pod.namespace.is_none() {
                let mut filled = PodInfo::clone(pod);
                filled.name.get_or_insert_with(|| meta.name.clone());
                filled
                    .namespace
                    .get_or_insert_with(|| meta.namespace.clone());
                *pod = Arc::new(filled);
            }
        }
        self.pod_api = meta;
    }
}

/// Bounded: beyond this many live processes, new ones are described on demand and not cached.
const MAX_PROCESSES: usize = 65_536;

/// Exited processes remembered: their work can be reported after they are gone (a tool's
/// short-lived shell is reported when the tool's window closes).
const MAX_DEPARTED: usize = 4096;

/// The kubelet's pod log root, the default of `--pod-logs-dir`.
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";

/// How processes are described and which are traced.
#[derive(Clone, Debug)]
pub struct ProcessesConfig {
    /// The kubelet's pod log root (`/var/log/pods`); container log symlinks are looked for in
    /// `containers` beside it.
    pub pod_logs_dir: PathBuf,
    pub node_name: Option<String>,
    pub selection: Selection,
    /// Read pod labels and workloads from the Kubernetes API (`--kube-api`).
    pub kube_api: bool,
    /// Where the API watcher puts this node's pods; set by whoever starts the watcher.
    pub pod_store: Option<Arc<PodStore>>,
}

impl Default for ProcessesConfig {
    fn default() -> Self {
        ProcessesConfig {
            pod_logs_dir: PathBuf::from(DEFAULT_POD_LOGS_DIR),
            node_name: None,
            selection: Selection::default(),
            kube_api: false,
            pod_store: None,
        }
    }
}

impl ProcessesConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.selection.uses_pod_labels() && !self.kube_api {
            anyhow::bail!(
                "--include-pod-label and --exclude-pod-label need --kube-api: pod labels come \
                 from the Kubernetes API"
            );
        }
        if self.kube_api && self.node_name.is_none() {
            anyhow::bail!(
                "--kube-api watches this node's pods only and needs the node's name: set \
                 --node-name, or NODE_NAME from the downward API (spec.nodeName)"
            );
        }
        Ok(())
    }
}

/// Tells the kernel side that a process is (true) or is no longer (false) to be ignored.
pub type InterestSink = Box<dyn FnMut(u32, bool) + Send>;

struct Kubernetes {
    pods: pods::PodDirectory,
    node_name: Option<String>,
    /// This node's pods as the API describes them (`--kube-api`), filled by its watcher.
    api: Option<Arc<PodStore>>,
    /// The store's generation when the processes' pods were last read from it.
    api_generation: u64,
}

impl Kubernetes {
    fn api_pod(&self, pod: Option<&PodInfo>) -> Option<Arc<PodMeta>> {
        self.api.as_ref()?.get(&pod?.uid)
    }
}

pub struct Processes {
    host_name: String,
    kube: Kubernetes,
    processes: HashMap<u32, Arc<ProcessInfo>>,
    departed: std::collections::VecDeque<Arc<ProcessInfo>>,
    selection: Selection,
    /// Live processes the selection rules leave out. Bounded by `processes`: only a cached
    /// process is ever decided on.
    ignored: HashSet<u32>,
    interest: Option<InterestSink>,
    /// Processes whose executable could not be read at exec (the file name stands in): read
    /// again when their traffic shows they are alive.
    provisional: HashSet<u32>,
    cgroups: cgroups::CgroupPaths,
}

impl Processes {
    pub fn new() -> Self {
        Self::with_config(ProcessesConfig::default(), None)
    }

    pub fn with_config(config: ProcessesConfig, interest: Option<InterestSink>) -> Self {
        let host_name = procfs::host_name();
        Processes {
            host_name,
            kube: Kubernetes {
                pods: pods::PodDirectory::new(config.pod_logs_dir),
                node_name: config.node_name,
                api_generation: config.pod_store.as_ref().map_or(0, |s| s.generation()),
                api: config.pod_store,
            },
            processes: HashMap::new(),
            departed: std::collections::VecDeque::new(),
            selection: config.selection,
            ignored: HashSet::new(),
            provisional: HashSet::new(),
            cgroups: cgroups::CgroupPaths::from_mounts(),
            interest,
        }
    }

    /// The processes already running when the tracer starts, decided at once when selection
    /// rules leave anything out: otherwise one left out would be decided only at its first
    /// record, after the kernel had already copied its traffic (a busy excluded server can fill
    /// the ring buffer before then).
    pub fn observe_running(&mut self, pids: impl IntoIterator<Item = u32>) {
        if self.selection.is_everything() {
            return;
        }
        for pid in pids {
            self.observe(pid);
        }
    }

    /// Processes described now (departed ones kept for late spans not included).
    pub fn cached(&self) -> usize {
        self.processes.len()
    }

    /// Called when a process is first seen, while it is surely alive. Decides whether it is
    /// traced, and tells the kernel when it is not.
    pub fn observe(&mut self, pid: u32) {
        // One more read for a process whose executable could not be read at exec.
        if self.provisional.remove(&pid) {
            let info = ProcessInfo::read(pid, &self.host_name, Some(&mut self.kube), None);
            if info.executable_path.is_some() {
                self.decide(pid, &info);
                self.processes.insert(pid, Arc::new(info));
            }
            return;
        }
        if self.processes.len() < MAX_PROCESSES && !self.processes.contains_key(&pid) {
            let info = ProcessInfo::read(pid, &self.host_name, Some(&mut self.kube), None);
            self.decide(pid, &info);
            self.processes.insert(pid, Arc::new(info));
        }
    }

    /// Applies the selection rules to `info`, telling the kernel only when the decision changes
    /// (an exec may change it; unchanged, the process's calls keep their state).
    fn decide(&mut self, pid: u32, info: &ProcessInfo) {
        let left_out = !self.selection.is_everything() && !self.selection.traces(info);
        let changed = if left_out {
            self.ignored.insert(pid)
        } else {
            self.ignored.remove(&pid)
        };
        if changed {
            if let Some(interest) = &mut self.interest {
                interest(pid, left_out);
            }
        }
    }

    /// Whether the selection rules leave `pid` out (decided when it was first seen).
    pub fn is_ignored(&self, pid: u32) -> bool {
        self.ignored.contains(&pid)
    }

    /// A process that just exec'd `filename` in cgroup `cgroup_id` (v2; 0 when unknown): what
    /// was read of its old program no longer describes it. Read now; the file name stands in
    /// for the path if the executable cannot be read yet (it is read again when the process's
    /// traffic shows it alive), and the cgroup id names its container even if it is gone.
    pub fn observe_exec(&mut self, pid: u32, filename: &str, cgroup_id: u64) {
        self.retire(pid);
        if self.processes.len() >= MAX_PROCESSES {
            return;
        }
        let cgroup = self.cgroups.path_of(cgroup_id);
        let mut info = ProcessInfo::read(
            pid,
            &self.host_name,
            Some(&mut self.kube),
            cgroup.as_deref(),
        );
        if info.executable_path.is_none() && filename.starts_with('/') {
            self.provisional.insert(pid);
            info.executable_path = Some(filename.to_string());
            if info.executable_name == "unknown" {
                if let Some(name) = filename.rsplit('/').next() {
                    info.executable_name = name.to_string();
                }
            }
        }
        self.decide(pid, &info);
        self.processes.insert(pid, Arc::new(info));
    }

    pub fn get(&self, pid: u32) -> Arc<ProcessInfo> {
        self.processes
            .get(&pid)
            .or_else(|| self.departed.iter().rev().find(|d| d.pid == pid))
            .cloned()
            .unwrap_or_else(|| {
                // Over the cache's bound: described without the (cached) pod lookup.
                let mut info = ProcessInfo::read(pid, &self.host_name, None, None);
                info.node_name = self.kube.node_name.clone();
                info.pod_api = None;
                Arc::new(info)
            })
    }

    /// The process exited.
    pub fn forget(&mut self, pid: u32) {
        self.retire(pid);
        // The pid may be reused by a process the rules would trace.
        if self.ignored.remove(&pid) {
            if let Some(interest) = &mut self.interest {
                interest(pid, false);
            }
        }
    }

    /// What was read of the process moves to the departed, for spans reported after it.
    fn retire(&mut self, pid: u32) {
        self.provisional.remove(&pid);
        if let Some(info) = self.processes.remove(&pid) {
            self.departed.retain(|d| d.pid != pid);
            self.departed.push_back(info);
            if self.departed.len() > MAX_DEPARTED {
                self.departed.pop_front();
            }
        }
    }

    /// Re-reads the processes' pods from the API store when it changed since last time: a
    /// pod's metadata may arrive after its first process was seen (the tracer just started,
    /// or the watch lags), and labels change. The selection is decided again with them, so a
    /// process left out for want of labels is let in (and the kernel told) once they arrive.
    pub fn refresh_pods(&mut self) {
        let Some(store) = &self.kube.api else {
            return;
        };
        let generation = store.generation();
        if generation == self.kube.api_generation {
            return;
        }
        self.kube.api_generation = generation;
        let changed: Vec<(u32, Arc<ProcessInfo>)> = self
            .processes
            .iter()
            .filter_map(|(pid, info)| {
                let pod = info.pod.as_deref()?;
                let now = store.get(&pod.uid);
                let same = match (&now, &info.pod_api) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if same {
                    return None;
                }
                let mut updated = ProcessInfo::clone(info);
                updated.set_pod_api(now);
                Some((*pid, Arc::new(updated)))
            })
            .collect();
        for (pid, info) in changed {
            self.decide(pid, &info);
            self.processes.insert(pid, info);
        }
    }

    /// Fills a finished span's process (its resource) from the catalogue.
    pub fn describe(&mut self, span: &mut Span) {
        self.refresh_pods();
        span.process = self.get(span.process.pid);
    }
}

impl Default for Processes {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_processes_are_ignored_until_they_exit() {
        let me = std::process::id();
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = told.clone();
        let exe = std::env::current_exe().unwrap();
        let config = ProcessesConfig {
            node_name: Some("node-1".into()),
            selection: Selection::new(&SelectionRules {
                exclude_exe: vec![exe.file_name().unwrap().to_string_lossy().into_owned()],
                ..Default::default()
            })
            .unwrap(),
            ..Default::default()
        };
        let mut cache = Processes::with_config(
            config,
            Some(Box::new(move |pid, ignore| {
                sink.lock().unwrap().push((pid, ignore))
            })),
        );
        cache.observe(me);
        cache.observe(me);
        assert!(cache.is_ignored(me));
        assert_eq!(cache.get(me).node_name.as_deref(), Some("node-1"));
        cache.forget(me);
        assert!(!cache.is_ignored(me));
        assert_eq!(*told.lock().unwrap(), vec![(me, true), (me, false)]);
    }

    #[test]
    fn reads_own_process() {
        let me = ProcessInfo::read(std::process::id(), "h", None, None);
        assert!(me.executable_path.is_some());
        assert_eq!(me.parent_pid, Some(std::os::unix::process::parent_id()));
        assert!(me.command_line.is_some());
        assert_eq!(me.host_name, "h");
    }
}
