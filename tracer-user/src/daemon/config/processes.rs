//! The process catalogue's flags: which processes are traced and how they are described.

use anyhow::Result;
use clap::Args;

use crate::processes::{ProcessesConfig, Selection, SelectionRules, DEFAULT_POD_LOGS_DIR};

/// Which processes are traced, and how they are described (containers, Kubernetes pods). The
/// rules' semantics are in the README ("Choosing what is traced").
#[derive(Clone, Debug, Args)]
pub struct ProcessesArgs {
    /// Trace only processes whose executable (path or name) contains PATTERN, or matches it as
    /// a glob; repeatable. With several include rules of any kind, matching one is enough.
    #[arg(long, value_name = "PATTERN")]
    pub include_exe: Vec<String>,
    /// Never trace processes whose executable matches PATTERN; repeatable. Excludes win.
    #[arg(long, value_name = "PATTERN")]
    pub exclude_exe: Vec<String>,
    /// Trace only processes whose command line contains PATTERN (or matches it as a glob).
    #[arg(long, value_name = "PATTERN")]
    pub include_cmdline: Vec<String>,
    #[arg(long, value_name = "PATTERN")]
    pub exclude_cmdline: Vec<String>,
    /// Trace only processes in a container whose id starts with PATTERN or whose Kubernetes
    /// container name is PATTERN (or matches it as a glob).
    #[arg(long, value_name = "PATTERN")]
    pub include_container: Vec<String>,
    #[arg(long, value_name = "PATTERN")]
    pub exclude_container: Vec<String>,
    /// Trace only processes in pods of Kubernetes namespace PATTERN (exact, or a glob).
    #[arg(long, value_name = "PATTERN")]
    pub include_namespace: Vec<String>,
    #[arg(long, value_name = "PATTERN")]
    pub exclude_namespace: Vec<String>,
    /// Trace only processes in pods labelled KEY=VALUE (VALUE exact, or a glob); repeatable.
    /// Needs --kube-api.
    #[arg(long, value_name = "KEY=VALUE")]
    pub include_pod_label: Vec<String>,
    /// Never trace processes in pods labelled KEY=VALUE; repeatable. Needs --kube-api.
    #[arg(long, value_name = "KEY=VALUE")]
    pub exclude_pod_label: Vec<String>,
    /// Read pod labels (k8s.pod.label.<key>) and owning workloads (k8s.deployment.name,
    /// k8s.statefulset.name, k8s.daemonset.name, k8s.job.name, k8s.cronjob.name, …) from the
    /// Kubernetes API, watching only this node's pods. Needs the node name and RBAC to
    /// get/list/watch pods and get replicasets and jobs; in a pod the service account is used,
    /// elsewhere KUBECONFIG.
    #[arg(long)]
    pub kube_api: bool,
    /// The kubelet's pod log directory, where pod names, namespaces and container names are
    /// read from (no Kubernetes API access needed).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_POD_LOGS_DIR)]
    pub pod_logs_dir: std::path::PathBuf,
    /// k8s.node.name on every resource. Default: NODE_NAME, then K8S_NODE_NAME (set them from
    /// the downward API's spec.nodeName).
    #[arg(long)]
    pub node_name: Option<String>,
}

impl ProcessesArgs {
    /// The catalogue's settings, checked by `ProcessesConfig::validate` with the rest.
    pub(super) fn resolve(&self, env: &impl Fn(&str) -> Option<String>) -> Result<ProcessesConfig> {
        let rules = SelectionRules {
            include_exe: self.include_exe.clone(),
            exclude_exe: self.exclude_exe.clone(),
            include_cmdline: self.include_cmdline.clone(),
            exclude_cmdline: self.exclude_cmdline.clone(),
            include_container: self.include_container.clone(),
            exclude_container: self.exclude_container.clone(),
            include_namespace: self.include_namespace.clone(),
            exclude_namespace: self.exclude_namespace.clone(),
            include_pod_label: self.include_pod_label.clone(),
            exclude_pod_label: self.exclude_pod_label.clone(),
        };
        let node_name = self
            .node_name
            .clone()
            .or_else(|| env("NODE_NAME"))
            .or_else(|| env("K8S_NODE_NAME"));
        Ok(ProcessesConfig {
            pod_logs_dir: self.pod_logs_dir.clone(),
            node_name,
            selection: Selection::new(&rules)?,
            kube_api: self.kube_api,
            pod_store: None,
        })
    }
}
