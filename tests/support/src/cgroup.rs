//! Container and pod cgroups without a container engine: cgroup v2 directories named as the
//! runtimes name them, under the writable unified hierarchy (see /work/shared/toolchain.md). A
//! process that writes its PID into one's `cgroup.procs` is, to the tracer, in that container.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// Where this machine mounts cgroup v2 (hybrid layout).
pub const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// cgroup directories a test made, removed (innermost first) when dropped.
pub struct Cgroups(pub Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The cgroups containerd's systemd driver makes for a burstable pod's container; returns them
/// (to drop when done) and the container's own, the one to put a process in.
pub fn pod_container_cgroup(uid: &str, container_id: &str) -> Result<(Cgroups, PathBuf)> {
    let kubepods = Path::new(UNIFIED).join("kubepods.slice");
    let pod_slice = kubepods.join(format!(
        "kubepods-burstable-pod{}.slice",
        uid.replace('-', "_")
    ));
    let scope = pod_slice.join(format!("cri-containerd-{container_id}.scope"));
    let mut cgroups = Cgroups(Vec::new());
    for dir in [&kubepods, &pod_slice, &scope] {
        if !dir.exists() {
            std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
            cgroups.0.push(dir.clone());
        }
    }
    Ok((cgroups, scope))
}
