//! Container and pod identity from a process's cgroup path, with no container-engine or
//! Kubernetes API: the runtimes name the cgroup after the container id and the kubelet names the
//! pod's cgroup after the pod's UID, under both the systemd and cgroupfs drivers, in cgroup v1,
//! v2 and hybrid hierarchies.

/// What a process's cgroup path says about where it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// 64 hex digits.
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman`; `None` when the path does not name it (the
    /// cgroupfs driver under Kubernetes names only the id).
    pub runtime: Option<&'static str>,
    /// The pod's UID with dashes (`kubepods…pod<uid>`), or a static pod's 32-hex config hash.
    pub pod_uid: Option<String>,
}

/// Reads the contents of `/proc/PID/cgroup`. Lines are `id:controllers:path`: cgroup v1 has one
/// per hierarchy, v2 the single `0::path`, hybrid both. The v2 line is preferred (it is the one a
/// runtime always places), then the v1 lines in order; within a path the innermost component
/// naming a container wins (pods nest containers, Docker-in-Docker nests engines).
pub fn identity_of(cgroup: &str) -> CgroupIdentity {
    let paths = cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, _controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((id == "0", path.trim()))
        })
        .filter(|(_, path)| !path.is_empty() && *path != "/");
    let (v2, v1): (Vec<_>, Vec<_>) = paths.partition(|(v2, _)| *v2);
    v2.into_iter()
        .chain(v1)
        .map(|(_, path)| identity_of_path(path))
        .find(|id| id.container_id.is_some() || id.pod_uid.is_some())
        .unwrap_or_default()
}

/// What one cgroup path (`/kubepods.slice/…/cri-containerd-<id>.scope`) says.
pub fn identity_of_path(path: &str) -> CgroupIdentity {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let kube_at = components.iter().position(|c| c.contains("kubepods"));
    let anchored = kubepods_anchored(&components);
    // A `kubepods…/pod<uid>/<id>` tree below some other cgroup is one a process with a delegated
    // cgroup (a user session, a rootless engine, a kind node) can make: only what lies above it
    // is believed, so neither its pod nor its containers (a kind node's own container, seen from
    // the host, still is).
    let believed = match kube_at {
        Some(at) if !anchored => {
            let kubelet_slice = at
                .checked_sub(1)
                .filter(|p| components[*p] == "kubelet.slice");
            &components[..kubelet_slice.unwrap_or(at)]
        }
        _ => &components[..],
    };
    let mut identity = CgroupIdentity::default();
    // Innermost container: search from the leaf up.
    for (i, component) in believed.iter().enumerate().rev() {
        if let Some((runtime, id)) = component_container(component) {
            // cgroupfs drivers name only the id; the parent directory may name the engine.
            let runtime =
                runtime.or_else(|| i.checked_sub(1).and_then(|p| engine_directory(believed[p])));
            identity.container_id = Some(id);
            identity.runtime = runtime;
            break;
        }
    }
    if kube_at.is_some() && anchored {
        identity.pod_uid = components.iter().rev().find_map(|c| pod_uid_of(c));
    }
    identity
}

/// Whether the Kubernetes hierarchy starts where only the kubelet and the runtime create cgroups:
/// at the root (`/kubepods.slice/…`, `/kubepods/…`), under the kubelet's own slice
/// (`/kubelet.slice/kubelet-kubepods.slice/…`), or as containerd's unexpanded systemd path
/// (`/system.slice/containerd.service/kubepods-…:cri-containerd:<id>`).
fn kubepods_anchored(components: &[&str]) -> bool {
    match components {
        [first, ..] if first.starts_with("kubepods") => true,
        ["kubelet.slice", second, ..] => second.starts_with("kubelet-kubepods"),
        ["system.slice", "containerd.service", third, ..] => third.starts_with("kubepods"),
        _ => false,
    }
}

/// Prefixes (systemd driver `<prefix><id>.scope`; cgroupfs `<prefix><id>`) and the runtime
/// they mean.
const PREFIXES: &[(&str, &str)] = &[
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// Monitor processes next to a container, not in it.
const MONITORS: &[&str] = &["crio-conmon-", "libpod-conmon-"];

fn component_container(component: &str) -> Option<(Option<&'static str>, String)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if MONITORS.iter().any(|m| name.starts_with(m)) {
        return None;
    }
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some((Some(runtime), id.to_string()));
            }
        }
    }
    // A systemd-style cgroupsPath the runtime did not turn into a unit (systemd driver asked
    // for, cgroupfs in effect): `<slice>:<prefix>:<id>`.
    let mut parts = name.rsplitn(3, ':');
    if let (Some(id), Some(prefix), Some(_slice)) = (parts.next(), parts.next(), parts.next()) {
        if is_container_id(id) {
            let runtime = PREFIXES
                .iter()
                .find(|(p, _)| p.strip_suffix('-') == Some(prefix))
                .map(|(_, r)| *r);
            return Some((runtime, id.to_string()));
        }
    }
    // cgroupfs driver: /docker/<id>, /kubepods/burstable/pod<uid>/<id>.
    is_container_id(name).then(|| (None, name.to_string()))
}

/// A cgroupfs parent directory that names the engine: `/docker/<id>`, `/libpod_parent/...`.
fn engine_directory(component: &str) -> Option<&'static str> {
    match component {
        "docker" => Some("docker"),
        "libpod_parent" => Some("podman"),
        _ => None,
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `kubepods-burstable-pod<uid with _>.slice` (systemd), `pod<uid>` (cgroupfs), also under a
/// kubelet cgroup root (`kubelet-kubepods-…`): the UID with dashes.
fn pod_uid_of(component: &str) -> Option<String> {
    // An unexpanded `<slice>:<prefix>:<id>` names the pod in its slice part.
    let slice = component.split(':').next().unwrap_or(component);
    let name = slice.strip_suffix(".slice").unwrap_or(slice);
    let uid = match name.rfind("-pod") {
        Some(at) => &name[at + 4..],
        None => name.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (8-4-4-4-12 hex), or the 32-hex config hash the kubelet gives static pods.
fn is_pod_uid(s: &str) -> bool {
    let hex = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_hexdigit());
    if s.len() == 32 {
        return hex(s);
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && hex(p))
}

/// The PID inside the process's innermost PID namespace, from `/proc/PID/status`.
pub fn namespace_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|pids| pids.split_whitespace().last())
        .and_then(|p| p.parse().ok())
}

/// The parent's PID, from `/proc/PID/status` (`PPid:`, in the tracer's PID namespace).
pub fn parent_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const OUTER: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const UID: &str = "7b0f3c2a-1d4e-4f5a-9b8c-0e1f2a3b4c5d";
    const UID_: &str = "7b0f3c2a_1d4e_4f5a_9b8c_0e1f2a3b4c5d";

    /// (what /proc/PID/cgroup reads, runtime, container id, pod uid). Contents are shaped after
    /// real hosts: Docker on cgroup v1 (cgroupfs and systemd drivers), on v2 and hybrid;
    /// Kubernetes with containerd and CRI-O under both drivers and every QoS class;
    /// Podman rootful and under libpod_parent.
    type Case = (
        String,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn cases() -> Vec<Case> {
        vec![
            // Docker, cgroup v2, systemd driver.
            (format!("0::/system.slice/docker-{ID}.scope"), Some("docker"), Some(ID), None),
            // Docker, cgroup v1, cgroupfs driver: every hierarchy names it.
            (
                format!(
                    "12:perf_event:/docker/{ID}\n11:memory:/docker/{ID}\n\
                     5:cpu,cpuacct:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/system.slice/containerd.service"
                ),
                Some("docker"),
                Some(ID),
                None,
            ),
            // Docker, cgroup v1, systemd driver.
            (
                format!("9:pids:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope"),
                Some("docker"),
                Some(ID),
                None,
            ),
            // Hybrid: v1 hierarchies and the v2 unified line both place it.
            (
                format!("4:memory:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope\n0::/system.slice/docker-{ID}.scope"),
                Some("docker"),
                Some(ID),
                None,
            ),
            // Hybrid where only the v1 hierarchies place it (v2 line is the root).
            (format!("3:cpuset:/docker/{ID}\n0::/"), Some("docker"), Some(ID), None),
            // Docker-in-Docker: the innermost container.
            (format!("0::/docker/{OUTER}/docker/{ID}"), Some("docker"), Some(ID), None),
            // Kubernetes + containerd, systemd driver, cgroup v2, burstable.
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
                Some(ID),
                Some(UID),
            ),
            // Besteffort, systemd driver, v1 lines.
            (
                format!("10:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
                Some(ID),
                Some(UID),
            ),
            // Guaranteed QoS has no class slice.
            (
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
                Some(ID),
                Some(UID),
            ),
            // Kubernetes + containerd, cgroupfs driver: the runtime is not named.
            (format!("0::/kubepods/burstable/pod{UID}/{ID}"), None, Some(ID), Some(UID)),
            (format!("0::/kubepods/besteffort/pod{UID}/{ID}"), None, Some(ID), Some(UID)),
            (format!("0::/kubepods/pod{UID}/{ID}"), None, Some(ID), Some(UID)),
            (
                format!("11:devices:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}"),
                None,
                Some(ID),
                Some(UID),
            ),
            // CRI-O, systemd driver; and its conmon, which is next to the container, not in it.
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"),
                Some("cri-o"),
                Some(ID),
                Some(UID),
            ),
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"),
                None,
                None,
                Some(UID),
            ),
            // CRI-O, cgroupfs driver.
            (format!("0::/kubepods/burstable/pod{UID}/crio-{ID}"), Some("cri-o"), Some(ID), Some(UID)),
            // A systemd cgroupsPath left unexpanded (systemd driver configured, cgroupfs used).
            (
                format!("0::/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
                Some("containerd"),
                Some(ID),
                Some(UID),
            ),
            // kind / nested kubelet with its own cgroup root.
            (
                format!("0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
                Some(ID),
                Some(UID),
            ),
            // A static pod: its UID is the config hash.
            (
                format!("0::/kubepods/burstable/pod0123456789abcdef0123456789abcdef/{ID}"),
                None,
                Some(ID),
                Some("0123456789abcdef0123456789abcdef"),
            ),
            // Podman: systemd driver (the container's processes sit in a `container` sub-cgroup
            // on v2), conmon, cgroupfs driver.
            (format!("0::/machine.slice/libpod-{ID}.scope/container"), Some("podman"), Some(ID), None),
            (format!("0::/machine.slice/libpod-conmon-{ID}.scope"), None, None, None),
            (format!("0::/libpod_parent/libpod-{ID}"), Some("podman"), Some(ID), None),
            (format!("0::/libpod_parent/{ID}"), Some("podman"), Some(ID), None),
            // containerd without Kubernetes (nerdctl / ctr, namespace "default").
            (format!("0::/default/{ID}"), None, Some(ID), None),
            // Not containers.
            ("0::/user.slice/user-0.slice/session-1.scope".to_string(), None, None, None),
            ("12:pids:/user.slice\n1:name=systemd:/init.scope\n0::/init.scope".to_string(), None, None, None),
            ("0::/".to_string(), None, None, None),
            (String::new(), None, None, None),
            ("garbage without colons\n::\n0:".to_string(), None, None, None),
            (format!("0::/docker-{}.scope", &ID[..63]), None, None, None),
            (format!("0::/docker-{}g.scope", &ID[..63]), None, None, None),
            // "pod" + something that is not a UID.
            ("0::/kubepods/burstable/podnotauid/x".to_string(), None, None, None),
            // The same trees made under a delegated cgroup (a user's session, a rootless
            // engine): not the kubelet's, so neither pod nor container is believed.
            (
                format!("0::/user.slice/user-1000.slice/user@1000.service/kubepods/burstable/pod{UID}/{ID}"),
                None,
                None,
                None,
            ),
            (
                format!("0::/system.slice/evil.service/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                None,
                None,
                None,
            ),
            // A kind node seen from the host: its pods' cgroups lie inside the node's container,
            // which is what is believed.
            (
                format!("0::/system.slice/docker-{OUTER}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                Some("docker"),
                Some(OUTER),
                None,
            ),
        ]
    }

    #[test]
    fn runtimes_drivers_and_hierarchies() {
        for (cgroup, runtime, id, pod) in cases() {
            let got = identity_of(&cgroup);
            assert_eq!(got.runtime, runtime, "runtime of {cgroup:?}");
            assert_eq!(got.container_id.as_deref(), id, "container of {cgroup:?}");
            assert_eq!(got.pod_uid.as_deref(), pod, "pod of {cgroup:?}");
        }
    }

    #[test]
    fn pod_uids() {
        assert_eq!(
            pod_uid_of(&format!("kubepods-burstable-pod{UID_}.slice")).as_deref(),
            Some(UID)
        );
        assert_eq!(pod_uid_of(&format!("pod{UID}")).as_deref(), Some(UID));
        assert_eq!(pod_uid_of("kubepods-burstable.slice"), None);
        assert_eq!(pod_uid_of("pod"), None);
        assert_eq!(pod_uid_of(&format!("pod{}", &UID[..35])), None);
    }

    #[test]
    fn namespace_pid_is_the_innermost() {
        assert_eq!(namespace_pid("Name:\tpython3\nNSpid:\t4242\t1\n"), Some(1));
        assert_eq!(namespace_pid("NSpid:\t77\n"), Some(77));
        assert_eq!(namespace_pid("Name: x\n"), None);
        assert_eq!(parent_pid("Name:\tpython3\nPPid:\t4242\n"), Some(4242));
        assert_eq!(parent_pid("PPid:\t0\n"), None);
    }

    proptest::proptest! {
        /// Whatever /proc says, reading it never panics.
        #[test]
        fn never_panics(s in "[0-9a-z:/_.\\-\n]{0,200}") {
            let _ = identity_of(&s);
        }
    }
}
