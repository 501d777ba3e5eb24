//! Container identity from a process's cgroup path, with no container-engine API: the runtimes
//! name the cgroup after the container id, under both the systemd and cgroupfs drivers.

/// (runtime, 64-hex container id) from the contents of `/proc/PID/cgroup`.
pub fn container_of(cgroup: &str) -> Option<(&'static str, String)> {
    // The innermost path component naming a container wins (pods nest containers).
    cgroup.lines().rev().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(component_container)
    })
}

/// Prefixes (systemd driver `<prefix><id>.scope`; cgroupfs `<prefix><id>` or a parent directory
/// naming the runtime) and the runtime they mean.
const PREFIXES: &[(&str, &str)] = &[
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

fn component_container(component: &str) -> Option<(&'static str, String)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some((runtime, id.to_string()));
            }
        }
    }
    // cgroupfs driver: /docker/<id>, /kubepods/burstable/pod<uid>/<id>: the runtime is not named.
    is_container_id(name).then(|| ("unknown", name.to_string()))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
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

    #[test]
    fn runtimes_and_drivers() {
        let cases = [
            (format!("0::/system.slice/docker-{ID}.scope"), Some(("docker", ID))),
            (format!("12:pids:/docker/{ID}\n0::/docker/{ID}"), Some(("unknown", ID))),
            (
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope"),
                Some(("containerd", ID)),
            ),
            (format!("0::/kubepods/burstable/pod1234-5678/{ID}"), Some(("unknown", ID))),
            (format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"), Some(("cri-o", ID))),
            (format!("0::/machine.slice/libpod-{ID}.scope/container"), Some(("podman", ID))),
            ("0::/user.slice/user-0.slice/session-1.scope".to_string(), None),
            ("0::/".to_string(), None),
            (String::new(), None),
            (format!("0::/docker-{}.scope", &ID[..63]), None),
        ];
        for (cgroup, expected) in cases {
            let got = container_of(&cgroup);
            assert_eq!(
                got.as_ref().map(|(r, id)| (*r, id.as_str())),
                expected,
                "{cgroup}"
            );
        }
    }

    #[test]
    fn namespace_pid_is_the_innermost() {
        assert_eq!(namespace_pid("Name:\tpython3\nNSpid:\t4242\t1\n"), Some(1));
        assert_eq!(namespace_pid("NSpid:\t77\n"), Some(77));
        assert_eq!(namespace_pid("Name: x\n"), None);
        assert_eq!(parent_pid("Name:\tpython3\nPPid:\t4242\n"), Some(4242));
        assert_eq!(parent_pid("PPid:\t0\n"), None);
    }
}
