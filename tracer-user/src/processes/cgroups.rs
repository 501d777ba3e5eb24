//! A cgroup v2 id (what the kernel reads at exec, see `tracer-ebpf/src/process.rs`) back to the
//! cgroup's path, without the process: the id is the inode number of the cgroup's directory in
//! the cgroup2 filesystem, so the directory tree says which path it is. A process that exited
//! before its exec was handled still has its cgroup named this way, as long as the cgroup
//! itself lives (a container outlives its short-lived commands).

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::DirEntryExt as _,
    path::{Path, PathBuf},
};

/// Cgroups remembered; a host with more is walked again on a miss rather than cached in full.
const MAX_CGROUPS: usize = 65_536;
/// Directory levels walked: deeper than any runtime nests (kubepods/QoS/pod/container/...).
const MAX_DEPTH: usize = 16;
/// Ids not found in a fresh walk, remembered so that a gone cgroup's processes do not each
/// cause a walk; ids are never reused, so a miss stays a miss.
const MAX_MISSING: usize = 4096;

/// Paths of the cgroup v2 hierarchy's cgroups by id, read from its mount lazily.
#[derive(Debug)]
pub struct CgroupPaths {
    /// Where cgroup2 is mounted, and the cgroup path of the mount's root (not `/` when a cgroup
    /// namespace or a bind mount shows only a subtree); `None` without cgroup v2.
    mount: Option<(PathBuf, String)>,
    by_id: HashMap<u64, String>,
    missing: HashSet<u64>,
}

impl CgroupPaths {
    /// The cgroup2 filesystem this process sees, found in its mount table.
    pub fn from_mounts() -> Self {
        let mount = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        Self::at(mount)
    }

    /// The hierarchy mounted at `mount.0`, whose root is the cgroup `mount.1`.
    pub fn at(mount: Option<(PathBuf, String)>) -> Self {
        CgroupPaths {
            mount,
            by_id: HashMap::new(),
            missing: HashSet::new(),
        }
    }

    /// The cgroup path (`/system.slice/docker-<id>.scope`) of cgroup `id`; `None` when the
    /// cgroup is gone, or there is no cgroup v2.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if id == 0 || self.missing.contains(&id) {
            return None;
        }
        if let Some(path) = self.by_id.get(&id) {
            return Some(path.clone());
        }
        let (dir, root) = self.mount.as_ref()?;
        // A cgroup made since the last walk (a new container): walk again, from scratch so that
        // removed cgroups are forgotten.
        self.by_id = walk(dir, root);
        let found = self.by_id.get(&id).cloned();
        if found.is_none() {
            if self.missing.len() >= MAX_MISSING {
                self.missing.clear();
            }
            self.missing.insert(id);
        }
        found
    }
}

/// Every cgroup under `dir` by inode number, with `root` as the path of `dir` itself.
fn walk(dir: &Path, root: &str) -> HashMap<u64, String> {
    let mut found = HashMap::new();
    if let Ok(meta) = std::fs::metadata(dir) {
        found.insert(std::os::unix::fs::MetadataExt::ino(&meta), root.to_string());
    }
    let mut pending = vec![(dir.to_path_buf(), root.trim_end_matches('/').to_string(), 0)];
    while let Some((dir, path, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if found.len() >= MAX_CGROUPS {
                return found;
            }
            // The directory entry's type and inode number come with readdir: no stat per cgroup.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child = format!("{path}/{}", entry.file_name().to_string_lossy());
            found.insert(entry.ino(), child.clone());
            if depth + 1 < MAX_DEPTH {
                pending.push((entry.path(), child, depth + 1));
            }
        }
    }
    found
}

/// The cgroup2 mount point and the cgroup path of its root, from `/proc/self/mountinfo`
/// (`id parent dev root mountpoint options [tags] - fstype source super-options`).
pub fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace().skip(3);
        let root = unescape(fields.next()?);
        let point = unescape(fields.next()?);
        Some((PathBuf::from(point), root))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + (b - b'0') as u32));
        match octal {
            Some(n) if n <= 0xff => {
                out.push(n as u8);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn finds_the_cgroup2_mount_among_v1_ones() {
        let hybrid = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".to_string()))
        );
        // In a cgroup namespace (or a bind mount of a subtree) the root is not `/`.
        let nested = "40 30 0:27 /kubepods.slice /host\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(nested),
            Some((PathBuf::from("/host cgroup"), "/kubepods.slice".to_string()))
        );
        assert_eq!(
            cgroup2_mount("27 25 0:24 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(cgroup2_mount("garbage\n - \n\\"), None);
        assert_eq!(unescape("a\\\\b\\0"), "a\\\\b\\0");
    }

    #[test]
    fn paths_by_inode_in_a_directory_tree() {
        let dir = std::env::temp_dir().join(format!("cgroup-paths-{}", std::process::id()));
        let inner = dir.join("kubepods.slice").join("pod.slice");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut paths = CgroupPaths::at(Some((dir.clone(), "/".to_string())));
        assert_eq!(
            paths.path_of(ino(&inner)).as_deref(),
            Some("/kubepods.slice/pod.slice")
        );
        assert_eq!(paths.path_of(ino(&dir)).as_deref(), Some("/"));
        // A cgroup made after the first walk is found by walking again.
        let later = dir.join("docker-1.scope");
        std::fs::create_dir(&later).unwrap();
        assert_eq!(
            paths.path_of(ino(&later)).as_deref(),
            Some("/docker-1.scope")
        );
        // Files are not cgroups.
        assert_eq!(paths.path_of(ino(&dir.join("cgroup.procs"))), None);
        assert_eq!(paths.path_of(0), None);
        let mut under = CgroupPaths::at(Some((dir.clone(), "/ns".to_string())));
        assert_eq!(
            under.path_of(ino(&inner)).as_deref(),
            Some("/ns/kubepods.slice/pod.slice")
        );
        assert_eq!(CgroupPaths::at(None).path_of(ino(&inner)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The real hierarchy: this process's cgroup, named by the inode of its directory, is the
    /// path /proc says it is in.
    #[test]
    fn own_cgroup_by_its_id() {
        let mut paths = CgroupPaths::from_mounts();
        let Some((dir, _)) = paths.mount.clone() else {
            panic!("no cgroup2 mount: every supported host has one (hybrid or unified)");
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line")
            .to_string();
        let id = std::fs::metadata(dir.join(path.trim_start_matches('/')))
            .unwrap()
            .ino();
        assert_eq!(paths.path_of(id), Some(path));
    }
}
