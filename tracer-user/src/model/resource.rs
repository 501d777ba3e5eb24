//! The resource a span belongs to: the traced process, and the container and Kubernetes pod
//! it runs in. The processes stage (`enrich`) fills these in from /proc, cgroups, the node's
//! pod log tree and the Kubernetes API.

use std::{collections::BTreeMap, sync::Arc};

/// A traced process, described when it was first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub executable_path: Option<String>,
    pub executable_name: String,
    /// With secret-looking arguments redacted.
    pub command_line: Option<String>,
    pub host_name: String,
    /// The PID inside the process's own PID namespace (a container's view), when different.
    pub namespace_pid: Option<u32>,
    /// The process that started it (for a stdio MCP server: its client), host PID.
    pub parent_pid: Option<u32>,
    pub container_id: Option<String>,
    pub container_runtime: Option<&'static str>,
    /// The Kubernetes pod the process runs in, from its cgroup and the node's pod log tree.
    pub pod: Option<Arc<PodInfo>>,
    /// The pod's labels and workload, from the Kubernetes API (`--kube-api`).
    pub pod_api: Option<Arc<PodMeta>>,
    /// The Kubernetes node (configured: the node this tracer runs on).
    pub node_name: Option<String>,
}

impl ProcessInfo {
    pub fn unknown(pid: u32) -> Self {
        ProcessInfo {
            pid,
            executable_path: None,
            executable_name: "unknown".to_string(),
            command_line: None,
            host_name: String::new(),
            namespace_pid: None,
            parent_pid: None,
            container_id: None,
            container_runtime: None,
            pod: None,
            pod_api: None,
            node_name: None,
        }
    }
}

/// The Kubernetes pod a process runs in, as its cgroup and the node's pod log tree name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub container_name: Option<String>,
}

/// The workload a pod belongs to, as far as its owner references lead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub replicaset: Option<String>,
    pub deployment: Option<String>,
    pub statefulset: Option<String>,
    pub daemonset: Option<String>,
    pub job: Option<String>,
    pub cronjob: Option<String>,
}

impl Workload {
    /// The OpenTelemetry resource attributes (`k8s.deployment.name`, …) that are known.
    pub fn attributes(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("k8s.replicaset.name", &self.replicaset),
            ("k8s.deployment.name", &self.deployment),
            ("k8s.statefulset.name", &self.statefulset),
            ("k8s.daemonset.name", &self.daemonset),
            ("k8s.job.name", &self.job),
            ("k8s.cronjob.name", &self.cronjob),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
    }
}

/// What the API says about one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub workload: Workload,
}
