//! Pre-attach: a uprobe attaches to a file, not to a process, so the executables agents are run
//! from can be analysed and hooked before any of them runs. Without it a program is hooked only
//! once its exec has been seen and its file analysed, and a short-lived one (a Go CLI run once,
//! a freshly installed agent) makes its first HTTPS calls before that.
//!
//! Two threads, both off the capture path (the ring-buffer reader never waits on them):
//! - the scan: at start-up, every ELF executable in the directories a user runs agents from
//!   (PATH, the npm/pnpm/bun/yarn global trees, `~/.local/bin`, `~/.cargo/bin`, `/opt`), at a
//!   low CPU priority;
//! - the watcher: inotify on those directories, so a file that appears there (installed,
//!   copied, built) is analysed as soon as it is complete, before its first run if it is not
//!   started at once.
//!
//! Both go through the attacher's [`TargetCache`] (and with it the locators' disk cache), so
//! nothing is analysed twice; they send the paths worth hooking to the attacher, which alone
//! places probes.

use std::{
    collections::{HashSet, VecDeque},
    ffi::OsStr,
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use inotify::{EventMask, Inotify, WatchMask};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::targets::{FileId, TargetCache};

/// Bounds, so a host with huge trees costs a bounded start-up and a bounded number of watches.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Directories watched with inotify (each costs one watch descriptor in the kernel).
    pub max_watched_dirs: usize,
    /// Directory entries looked at by the start-up scan, all roots together.
    pub max_entries: usize,
    /// ELF executables analysed by the start-up scan.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_watched_dirs: 512,
            max_entries: 200_000,
            max_files: 5_000,
        }
    }
}

/// A directory to scan, `depth` levels down (0: its own entries only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
    pub depth: usize,
}

/// `AGENT_TRACER_PREATTACH=off` turns pre-attach off (hooks then come at exec only).
pub fn enabled() -> bool {
    !matches!(
        std::env::var("AGENT_TRACER_PREATTACH").as_deref(),
        Ok("off" | "0" | "false" | "no")
    )
}

/// The directories agents are run from, on this host: PATH, the per-user tool directories of
/// every home, the global package trees of npm, pnpm, bun and yarn, and /opt.
pub fn agent_roots() -> Vec<Root> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut homes: Vec<PathBuf> = std::env::var_os("HOME")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    homes.push(PathBuf::from("/root"));
    if let Ok(entries) = std::fs::read_dir("/home") {
        homes.extend(entries.flatten().take(64).map(|e| e.path()));
    }
    roots_for(&path, &homes)
}

/// [`agent_roots`] for a given PATH and homes: pure but for which directories exist.
pub fn roots_for(path: &OsStr, homes: &[PathBuf]) -> Vec<Root> {
    let flat = |dir: PathBuf| Root { dir, depth: 0 };
    // Package trees: a package's own executables (a native agent binary an npm package ships
    // under vendor/ or bin/) sit a few levels down.
    let tree = |dir: PathBuf| Root { dir, depth: 5 };
    let mut roots: Vec<Root> = std::env::split_paths(path).map(flat).collect();
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        roots.push(flat(PathBuf::from(dir)));
    }
    for dir in ["/usr/local/lib/node_modules", "/usr/lib/node_modules"] {
        roots.push(tree(PathBuf::from(dir)));
    }
    for home in homes {
        for dir in [
            ".local/bin",
            ".cargo/bin",
            ".bun/bin",
            ".deno/bin",
            ".npm-global/bin",
            ".yarn/bin",
            ".volta/bin",
            ".local/share/pnpm",
            "node_modules/.bin",
        ] {
            roots.push(flat(home.join(dir)));
        }
        for dir in [
            ".npm-global/lib/node_modules",
            ".bun/install/global/node_modules",
            ".config/yarn/global/node_modules",
            ".local/share/pnpm/global",
        ] {
            roots.push(tree(home.join(dir)));
        }
    }
    roots.push(Root {
        dir: PathBuf::from("/opt"),
        depth: 4,
    });
    // Existing directories, each once (PATH often names /usr/bin twice, or through /bin).
    let mut seen = HashSet::new();
    roots.retain(|r| {
        r.dir.is_absolute()
            && std::fs::canonicalize(&r.dir)
                .ok()
                .filter(|c| c.is_dir())
                .is_some_and(|c| seen.insert(c))
    });
    roots
}

/// Whether `path` is a regular file with an execute bit that starts like an ELF file. Scripts
/// (npm's bin shims) are not: their interpreter is the target.
pub fn is_elf_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 || meta.len() < 64 {
        return false;
    }
    let mut magic = [0u8; 4];
    // Non-blocking, regular files only: the name may be swapped for a FIFO after the stat.
    super::safe_open::open_host(path)
        .is_ok_and(|mut opened| opened.file.read_exact(&mut magic).is_ok())
        && magic == *b"\x7fELF"
}

/// What a walk of the roots found.
#[derive(Debug, Default)]
pub struct Walk {
    /// ELF executables, canonical paths, each file once.
    pub files: Vec<PathBuf>,
    /// Directories to watch: every root, then subdirectories of trees, up to the limit.
    pub dirs: Vec<PathBuf>,
    pub entries_seen: usize,
    /// A limit cut the walk short.
    pub truncated: bool,
}

/// Walks the roots breadth first (a tree's top levels before its depths), within `limits`.
pub fn walk(roots: &[Root], limits: &Limits) -> Walk {
    let mut out = Walk::default();
    let mut seen_files = HashSet::new();
    let mut seen_dirs = HashSet::new();
    let mut queue: VecDeque<(PathBuf, usize)> =
        roots.iter().map(|r| (r.dir.clone(), r.depth)).collect();
    while let Some((dir, depth)) = queue.pop_front() {
        let Ok(canonical) = std::fs::canonicalize(&dir) else {
            continue;
        };
        if !seen_dirs.insert(canonical.clone()) {
            continue;
        }
        if out.dirs.len() < limits.max_watched_dirs {
            out.dirs.push(canonical.clone());
        }
        let Ok(entries) = std::fs::read_dir(&canonical) else {
            continue;
        };
        for entry in entries.flatten() {
            out.entries_seen += 1;
            if out.entries_seen > limits.max_entries || out.files.len() >= limits.max_files {
                out.truncated = true;
                return out;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            // Real subdirectories only: a symlinked directory is reached (once) by its own path.
            if kind.is_dir() {
                if depth > 0 {
                    queue.push_back((path, depth - 1));
                }
                continue;
            }
            if is_elf_executable(&path) {
                if let Ok(file) = std::fs::canonicalize(&path) {
                    if seen_files.insert(file.clone()) {
                        out.files.push(file);
                    }
                }
            }
        }
    }
    out
}

/// Pre-attach's threads; they end with the process (they hold no resource but an inotify fd).
pub struct PreAttach {
    /// Paths worth hooking (a TLS stack was found in them) that just appeared: about to run,
    /// so the attacher takes them before anything else but execs.
    pub appeared: mpsc::Receiver<PathBuf>,
    /// Paths worth hooking the start-up scan found.
    pub scanned: mpsc::Receiver<PathBuf>,
}

/// Analyses `path` (once per file identity) and says whether the attacher should hook it.
fn worth_hooking(cache: &TargetCache, path: &Path) -> bool {
    let Ok(opened) = super::safe_open::open_host(path) else {
        return false;
    };
    match cache.get_or_analyse(opened.id, &opened.file, &path.display().to_string(), true) {
        Ok(a) => a.go.is_some() || a.hooks().next().is_some(),
        Err(e) => {
            debug!("pre-attach: {e}");
            false
        }
    }
}

/// Starts the scan and the watcher over `roots`, on their own threads: the caller never waits.
pub fn start(cache: Arc<TargetCache>, roots: Vec<Root>, limits: Limits) -> PreAttach {
    let (scan_tx, scanned) = mpsc::channel(1024);
    let (watch_tx, appeared) = mpsc::channel(1024);
    let spawned = std::thread::Builder::new()
        .name("preattach-scan".into())
        .spawn(move || scan(cache, roots, limits, scan_tx, watch_tx));
    if let Err(e) = spawned {
        warn!("pre-attach: cannot start the scan: {e}");
    }
    PreAttach { appeared, scanned }
}

/// Lists the roots, starts the watcher on them, then analyses what they hold.
fn scan(
    cache: Arc<TargetCache>,
    roots: Vec<Root>,
    limits: Limits,
    tx: mpsc::Sender<PathBuf>,
    watch_tx: mpsc::Sender<PathBuf>,
) {
    lower_priority();
    let started = Instant::now();
    let walked = walk(&roots, &limits);
    info!(
        roots = roots.len(),
        dirs = walked.dirs.len(),
        files = walked.files.len(),
        truncated = walked.truncated,
        ms = started.elapsed().as_millis() as u64,
        "pre-attach: directories listed"
    );
    // The watches before the analyses, so a file that appears meanwhile is not missed. The
    // watcher keeps the normal priority: what it finds is about to run.
    match Inotify::init() {
        Ok(inotify) => {
            let cache = cache.clone();
            let tx = watch_tx;
            let dirs = walked.dirs.clone();
            let max_dirs = limits.max_watched_dirs;
            let spawned = std::thread::Builder::new()
                .name("preattach-watch".into())
                .spawn(move || watch(inotify, &dirs, max_dirs, &cache, &tx));
            if let Err(e) = spawned {
                warn!("pre-attach: cannot start the watcher: {e}");
            }
        }
        Err(e) => warn!("pre-attach: inotify unavailable ({e}): new files are hooked at exec"),
    }
    let mut hookable = 0;
    for file in &walked.files {
        if worth_hooking(&cache, file) {
            hookable += 1;
            if tx.blocking_send(file.clone()).is_err() {
                return;
            }
        }
    }
    info!(
        files = walked.files.len(),
        hookable,
        seconds = started.elapsed().as_secs_f64(),
        "pre-attach: start-up scan done"
    );
}

/// The start-up scan yields to everything else on a busy host: nice 10 for this thread only
/// (Linux's nice value is per thread).
fn lower_priority() {
    // Safety: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// How long the watcher lets a burst of events (a package install) settle before looking at the
/// directories it created: their files arrive after them.
const NEW_DIR_SETTLE: Duration = Duration::from_millis(500);

/// Watches `dirs` until the attacher is gone. A file is looked at once it is complete (written
/// and closed, moved in, or made executable); a new directory under a watched one is walked
/// (shallowly) after a pause, and watched while the cap allows.
fn watch(
    mut inotify: Inotify,
    dirs: &[PathBuf],
    limit: usize,
    cache: &TargetCache,
    tx: &mpsc::Sender<PathBuf>,
) {
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR;
    let mut watched = std::collections::HashMap::new();
    for dir in dirs.iter().take(limit) {
        match inotify.watches().add(dir, mask) {
            Ok(wd) => {
                watched.insert(wd, dir.clone());
            }
            Err(e) => debug!("pre-attach: watching {}: {e}", dir.display()),
        }
    }
    info!(
        dirs = watched.len(),
        "pre-attach: watching for new executables"
    );
    let mut buffer = vec![0u8; 64 * 1024];
    let mut new_dirs: Vec<(Instant, PathBuf)> = Vec::new();
    loop {
        let events = match inotify.read_events_blocking(&mut buffer) {
            Ok(events) => events,
            Err(e) => {
                warn!("pre-attach: reading inotify events: {e}");
                return;
            }
        };
        // One look per path per batch: a copy yields CREATE, several MODIFY and CLOSE_WRITE.
        let mut files = Vec::new();
        for event in events {
            let (Some(dir), Some(name)) = (watched.get(&event.wd), event.name) else {
                continue;
            };
            let path = dir.join(name);
            if event.mask.contains(EventMask::ISDIR) {
                if event
                    .mask
                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                {
                    new_dirs.push((Instant::now() + NEW_DIR_SETTLE, path));
                }
            } else if !files.contains(&path) {
                files.push(path);
            }
        }
        for path in files {
            look_at(cache, tx, &path);
        }
        // Directories that settled (checked at the next event; an install makes plenty).
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = new_dirs.drain(..).partition(|(t, _)| *t <= now);
        new_dirs = later;
        for (_, dir) in due {
            let walked = walk(&[Root { dir, depth: 2 }], &Limits::default());
            for sub in walked.dirs {
                if watched.len() >= limit {
                    break;
                }
                if let Ok(wd) = inotify.watches().add(&sub, mask) {
                    watched.insert(wd, sub);
                }
            }
            for file in walked.files {
                look_at(cache, tx, &file);
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// A file that just appeared or changed: analysed now if it is a new ELF executable.
fn look_at(cache: &TargetCache, tx: &mpsc::Sender<PathBuf>, path: &Path) {
    if !is_elf_executable(path) {
        return;
    }
    let Ok(path) = std::fs::canonicalize(path) else {
        return;
    };
    // A stat only to skip known files: the analysis opens the file itself, safely.
    if std::fs::metadata(&path).is_ok_and(|m| cache.knows(&FileId::from_metadata(&m))) {
        return;
    }
    let started = Instant::now();
    if worth_hooking(cache, &path) {
        info!(
            path = %path.display(),
            analysis_ms = started.elapsed().as_secs_f64() * 1e3,
            "pre-attach: a new executable with TLS appeared"
        );
        let _ = tx.blocking_send(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test's own.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("preattach-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn roots_are_existing_directories_each_once() {
        let home = scratch("roots");
        std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
        std::fs::create_dir_all(home.join(".bun/install/global/node_modules")).unwrap();
        let path = std::env::join_paths(["/usr/bin", "/bin", "/no/such/dir", "relative"]).unwrap();
        let roots = roots_for(&path, std::slice::from_ref(&home));
        let dirs: Vec<&Path> = roots.iter().map(|r| r.dir.as_path()).collect();
        assert!(dirs.contains(&Path::new("/usr/bin")), "{dirs:?}");
        assert!(!dirs
            .iter()
            .any(|d| d.ends_with("no/such/dir") || d.ends_with("relative")));
        assert!(dirs.contains(&home.join(".cargo/bin").as_path()));
        let tree = roots
            .iter()
            .find(|r| r.dir.ends_with(".bun/install/global/node_modules"))
            .unwrap();
        assert!(tree.depth > 0);
        // /bin is /usr/bin on a merged-/usr system: the same directory, listed once.
        let canonical: Vec<PathBuf> = roots
            .iter()
            .map(|r| std::fs::canonicalize(&r.dir).unwrap())
            .collect();
        let unique: HashSet<&PathBuf> = canonical.iter().collect();
        assert_eq!(unique.len(), canonical.len());
    }

    #[test]
    fn a_walk_finds_elf_executables_not_scripts_within_its_depth() {
        let root = scratch("walk");
        let deep = root.join("pkg/vendor/x86_64");
        std::fs::create_dir_all(&deep).unwrap();
        let elf = deep.join("agent");
        std::fs::copy("/bin/true", &elf).unwrap();
        let script = root.join("pkg/cli.js");
        std::fs::write(&script, "#!/usr/bin/env node\nconsole.log(1)\n".repeat(10)).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let not_executable = root.join("pkg/lib.so");
        std::fs::copy("/bin/true", &not_executable).unwrap();
        std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();

        let deep_enough = walk(
            &[Root {
                dir: root.clone(),
                depth: 3,
            }],
            &Limits::default(),
        );
        let elf = std::fs::canonicalize(&elf).unwrap();
        assert_eq!(deep_enough.files, vec![elf]);
        assert_eq!(deep_enough.dirs.len(), 4, "{:?}", deep_enough.dirs);
        let shallow = walk(
            &[Root {
                dir: root.clone(),
                depth: 1,
            }],
            &Limits::default(),
        );
        assert!(shallow.files.is_empty());
        let capped = walk(
            &[Root {
                dir: root.clone(),
                depth: 3,
            }],
            &Limits {
                max_entries: 1,
                ..Limits::default()
            },
        );
        assert!(capped.truncated);
    }
}
