//! Who spent it: the Kubernetes namespace, workload and container (or, off the cluster, the
//! container's short id) of the process a span came from, as metric attributes.
//!
//! Only the names that group a team's spend are kept: not the pod's name or uid, and not the
//! ReplicaSet (a new one per rollout), so the series count follows the number of workloads, not
//! pods; the per-metric cap in `Store::series` bounds it either way.

use crate::processes::ProcessInfo;

use super::{Attributes, Label};

/// Characters of a container id kept off the cluster (`docker ps` shows as many).
const SHORT_CONTAINER_ID: usize = 12;

/// `k8s.namespace.name`, the workload (`k8s.deployment.name`, `k8s.statefulset.name`,
/// `k8s.daemonset.name`, `k8s.job.name`, `k8s.cronjob.name`) and `k8s.container.name` when
/// known; else `container.id` (short form) for a process in a container; else nothing.
pub fn attributes(process: &ProcessInfo) -> Attributes {
    let mut attrs: Attributes = Vec::new();
    let namespace = process
        .pod
        .as_ref()
        .and_then(|p| p.namespace.clone())
        .or_else(|| process.pod_api.as_ref().map(|p| p.namespace.clone()))
        .filter(|n| !n.is_empty());
    if let Some(ns) = namespace {
        attrs.push(("k8s.namespace.name", Label::Str(ns)));
    }
    if let Some(api) = &process.pod_api {
        for (key, value) in api.workload.attributes() {
            if key != "k8s.replicaset.name" {
                attrs.push((key, Label::Str(value.to_string())));
            }
        }
    }
    if let Some(container) = process.pod.as_ref().and_then(|p| p.container_name.clone()) {
        attrs.push(("k8s.container.name", Label::Str(container)));
    }
    if attrs.is_empty() && process.pod.is_none() {
        if let Some(id) = &process.container_id {
            let short: String = id.chars().take(SHORT_CONTAINER_ID).collect();
            attrs.push(("container.id", Label::Str(short)));
        }
    }
    attrs
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::processes::{
        kube_api::{PodMeta, Workload},
        pods::PodInfo,
    };

    fn keys(attrs: &Attributes) -> Vec<(&str, String)> {
        attrs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn pods_give_namespace_workload_and_container() {
        let mut p = ProcessInfo::unknown(1);
        p.container_id = Some("a".repeat(64));
        p.pod = Some(Arc::new(PodInfo {
            uid: "u".into(),
            name: Some("agent-7d9-x".into()),
            namespace: Some("team-a".into()),
            container_name: Some("agent".into()),
        }));
        assert_eq!(
            keys(&attributes(&p)),
            vec![
                ("k8s.namespace.name", "team-a".into()),
                ("k8s.container.name", "agent".into())
            ]
        );
        p.pod_api = Some(Arc::new(PodMeta {
            namespace: "team-a".into(),
            workload: Workload {
                replicaset: Some("agent-7d9".into()),
                deployment: Some("agent".into()),
                ..Default::default()
            },
            ..Default::default()
        }));
        assert_eq!(
            keys(&attributes(&p)),
            vec![
                ("k8s.namespace.name", "team-a".into()),
                ("k8s.deployment.name", "agent".into()),
                ("k8s.container.name", "agent".into())
            ],
            "the ReplicaSet changes every rollout: not a series key"
        );
    }

    #[test]
    fn off_the_cluster_a_short_container_id_or_nothing() {
        let mut p = ProcessInfo::unknown(1);
        assert!(attributes(&p).is_empty());
        p.container_id = Some("0123456789abcdef".repeat(4));
        assert_eq!(
            keys(&attributes(&p)),
            vec![("container.id", "0123456789ab".into())]
        );
    }
}
