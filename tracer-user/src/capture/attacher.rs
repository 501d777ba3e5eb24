//! Finds every process's TLS targets and hooks them: all running processes at start, every
//! process that execs afterwards (its executable at once, its libraries again shortly after,
//! when the dynamic loader and dlopen have mapped them), and a slow periodic sweep as a safety
//! net. Each file is hooked once: a uprobe on a file covers every process mapping it, now and
//! later. Files are reached through /proc/PID/root so a container's own libraries resolve.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, info, warn};

use super::{
    libssl::{find_libssl, mapped_paths},
    loader::Capture,
    targets::{is_tls_library_name, FileId, Hook, HookMethod, TargetCache},
    validate::{InferredHook, Validator},
    CaptureEvent,
};
use crate::health::Health;

/// After an exec, look at the process's libraries again at these delays.
const RESCAN_AFTER_EXEC: &[Duration] = &[
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
];
const FULL_SWEEP: Duration = Duration::from_secs(30);
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

pub struct Attacher {
    capture: Capture,
    cache: TargetCache,
    hooked: HashSet<FileId>,
    health: Arc<Health>,
    own_pid: u32,
    /// Paths hooked, for the start-up log.
    pub hooked_paths: Vec<PathBuf>,
    /// TLS targets found whose hooks could not be placed (e.g. uprobes refused for lack of
    /// CAP_SYS_ADMIN): the tracer runs but cannot see their plaintext.
    pub unhookable_paths: Vec<PathBuf>,
    validator: Arc<Mutex<Validator>>,
    /// The probes of each inferred hook's cookie, to detach when its first bytes fail.
    inferred_links: HashMap<u32, Vec<(String, aya::programs::uprobe::UProbeLinkId)>>,
}

impl Attacher {
    pub fn new(capture: Capture, health: Arc<Health>, validator: Arc<Mutex<Validator>>) -> Self {
        Attacher {
            validator,
            inferred_links: HashMap::new(),
            capture,
            cache: TargetCache::default(),
            hooked: HashSet::new(),
            health,
            own_pid: std::process::id(),
            hooked_paths: Vec::new(),
            unhookable_paths: Vec::new(),
        }
    }

    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    /// Hooks what exists now; returns the connections already open (as Connect events) so the
    /// streams stage knows their peers.
    pub fn start_up(&mut self) -> Vec<CaptureEvent> {
        for lib in find_libssl() {
            self.consider(&lib, false, None);
        }
        // Runtimes agents run on, hooked before any of them starts: their first process then never
        // races the analysis of a large binary.
        for runtime in runtimes_on_path() {
            self.consider(&runtime, true, None);
        }
        let pids = all_pids();
        // Stdio first: a seeded server's next read is then caught, whatever the scans cost.
        for pid in &pids {
            self.seed_stdio(*pid);
        }
        for pid in &pids {
            self.scan_process(*pid);
        }
        let mut connects = Vec::new();
        for pid in pids {
            connects.extend(self.seed_sockets(pid));
        }
        connects
    }

    /// The executable and TLS libraries of one process.
    pub fn scan_process(&mut self, pid: u32) {
        if pid == self.own_pid {
            return;
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let label = std::fs::read_link(&exe).ok();
        self.consider(&exe, true, label.as_deref().map(|l| (pid, l)));
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        let libraries: Vec<String> = mapped_paths(&maps)
            .filter(|p| {
                Path::new(p)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_tls_library_name)
            })
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for lib in libraries {
            self.consider(
                &PathBuf::from(format!("/proc/{pid}/root{lib}")),
                false,
                None,
            );
        }
    }

    /// Analyses a file (once) and hooks it (once). `reported_as` names the process for the
    /// unsupported-TLS report.
    fn consider(&mut self, path: &Path, executable: bool, reported_as: Option<(u32, &Path)>) {
        let Ok(id) = FileId::of(path) else {
            return;
        };
        if self.hooked.contains(&id) {
            return;
        }
        let analysis = match self.cache.get_or_analyse(id, path, executable) {
            Ok(a) => a,
            Err(e) => {
                debug!("{e}");
                return;
            }
        };
        if let (Some(stack), Some((pid, binary))) = (analysis.unsupported, reported_as) {
            let binary = binary.display().to_string();
            if self.health.unsupported_tls(&binary, stack) {
                warn!(pid, binary, stack, "this program's TLS stack cannot be hooked yet: its HTTPS traffic is not captured");
            }
        }
        let mut placed = 0;
        // All or nothing: a Go function hooked at its entry but not at every RET loses data.
        if let Some(go) = &analysis.go {
            match super::gotls::attach(self.capture.ebpf_mut(), path, go) {
                Ok(n) => {
                    debug!("Go crypto/tls: {}", super::gotls::describe(path, go));
                    placed += n;
                }
                Err(e) => warn!("could not hook Go crypto/tls in {}: {e:#}", path.display()),
            }
        }
        // Every stack the file carries, each the way its hooks were found.
        for stack in &analysis.stacks {
            if stack.hooks.is_empty() {
                continue;
            }
            placed += match stack.method {
                HookMethod::Inferred => {
                    let shown = reported_as.map_or(path, |(_, b)| b).display().to_string();
                    self.attach_inferred(path, &shown, &stack.hooks)
                }
                HookMethod::Symbol => self.capture.attach_hooks(path, &stack.hooks),
            };
        }
        if analysis.go.is_none() && analysis.hooks().next().is_none() {
            return;
        }
        if placed > 0 {
            self.hooked.insert(id);
            Health::add(&self.health.tls_targets_attached, 1);
            let shown = reported_as
                .map(|(_, b)| b.to_path_buf())
                .unwrap_or_else(|| path.to_path_buf());
            info!(
                "attached {placed} TLS hooks ({}) to {}",
                analysis.stack_names(),
                shown.display()
            );
            self.hooked_paths.push(shown);
        } else {
            self.unhookable_paths.push(path.to_path_buf());
        }
    }

    /// Attaches hooks a locator inferred, one cookie per function (its entry and return probes),
    /// so that the validator can judge and the attacher detach each function on its own.
    fn attach_inferred(&mut self, path: &Path, shown: &str, hooks: &[Hook]) -> usize {
        let mut placed = 0;
        let mut cookies: HashMap<u64, u32> = HashMap::new();
        for hook in hooks {
            let cookie = *cookies.entry(hook.offset).or_insert_with(|| {
                let mut v = self.validator.lock().unwrap_or_else(|e| e.into_inner());
                v.register(InferredHook {
                    binary: shown.to_string(),
                    function: hook.symbol.to_string(),
                })
            });
            match self
                .capture
                .attach_with_cookie(path, hook, u64::from(cookie))
            {
                Ok(link) => {
                    placed += 1;
                    self.inferred_links
                        .entry(cookie)
                        .or_default()
                        .push((hook.program.to_string(), link));
                }
                Err(e) => debug!(
                    "{} on inferred {} in {}: {e:#}",
                    hook.program,
                    hook.symbol,
                    path.display()
                ),
            }
        }
        for cookie in cookies.into_values() {
            if !self.inferred_links.contains_key(&cookie) {
                let mut v = self.validator.lock().unwrap_or_else(|e| e.into_inner());
                v.unregister(cookie);
            }
        }
        placed
    }

    /// Detaches inferred hooks whose first bytes did not parse (the reader reported them).
    fn settle_inferred(&mut self) {
        let rejected = {
            let mut v = self.validator.lock().unwrap_or_else(|e| e.into_inner());
            v.take_rejected()
        };
        for r in rejected {
            let links = self.inferred_links.remove(&r.cookie).unwrap_or_default();
            let n = links.len();
            for (program, link) in links {
                if let Err(e) = self.capture.detach(&program, link) {
                    warn!("detaching {program} from {}: {e:#}", r.hook.binary);
                }
            }
            info!(
                binary = r.hook.binary,
                function = r.hook.function,
                "detached {n} probes of a rejected inferred TLS hook"
            );
        }
    }

    /// A running process's stdio, when it is a pair of pipes (see `stdio.rs`).
    fn seed_stdio(&mut self, pid: u32) {
        if pid == self.own_pid {
            return;
        }
        let Some(fds) = super::stdio::stdio_fds(pid) else {
            return;
        };
        match self.capture.seed_stdio(pid, &fds) {
            Ok(()) => Health::add(&self.health.stdio_seeded, 1),
            Err(e) => debug!("seeding the stdio of {pid}: {e:#}"),
        }
    }

    /// Marks the process's open TCP connections for capture and reports their peers.
    fn seed_sockets(&mut self, pid: u32) -> Vec<CaptureEvent> {
        if pid == self.own_pid {
            return Vec::new();
        }
        let Ok(process) = procfs::process::Process::new(pid as i32) else {
            return Vec::new();
        };
        let mut peers = std::collections::HashMap::new();
        for table in [process.tcp(), process.tcp6()].into_iter().flatten() {
            for entry in table {
                if entry.state == procfs::net::TcpState::Established {
                    peers.insert(entry.inode, entry.remote_address);
                }
            }
        }
        let Ok(fds) = process.fd() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for fd in fds.flatten() {
            let procfs::process::FDTarget::Socket(inode) = fd.target else {
                continue;
            };
            let Some(peer) = peers.get(&inode) else {
                continue;
            };
            match self.capture.seed_socket(pid, fd.fd as u32) {
                Ok(()) => events.push(CaptureEvent::Connect {
                    pid,
                    fd: fd.fd,
                    peer: Some(*peer),
                    accepted: false,
                }),
                Err(e) => debug!("seeding socket {pid}/{}: {e:#}", fd.fd),
            }
        }
        events
    }

    /// Reacts to execs until the queue closes; returns itself so the caller can read final
    /// counters and then detach by dropping it.
    pub async fn run(mut self, mut execs: mpsc::Receiver<u32>) -> Self {
        let mut rescans: BTreeMap<Instant, Vec<u32>> = BTreeMap::new();
        let mut sweep = tokio::time::interval(FULL_SWEEP);
        let mut counters = tokio::time::interval(COUNTERS_EVERY);
        sweep.tick().await;
        loop {
            let next_rescan = rescans.keys().next().copied();
            tokio::select! {
                exec = execs.recv() => match exec {
                    Some(pid) => {
                        self.scan_process(pid);
                        let now = Instant::now();
                        for delay in RESCAN_AFTER_EXEC {
                            rescans.entry(now + *delay).or_default().push(pid);
                        }
                    }
                    None => break,
                },
                _ = async { tokio::time::sleep_until(next_rescan.unwrap_or_else(Instant::now)).await }, if next_rescan.is_some() => {
                    let due: Vec<Instant> = rescans.range(..=Instant::now()).map(|(t, _)| *t).collect();
                    for t in due {
                        for pid in rescans.remove(&t).unwrap_or_default() {
                            self.scan_process(pid);
                        }
                    }
                }
                _ = sweep.tick() => {
                    for pid in all_pids() {
                        self.scan_process(pid);
                    }
                }
                _ = counters.tick() => {
                    self.settle_inferred();
                    if let Err(e) = self.capture.read_kernel_counters(&self.health) {
                        debug!("reading kernel counters: {e:#}");
                    }
                }
            }
        }
        self.settle_inferred();
        self
    }
}

/// Executables that carry their own TLS and run most agent CLIs.
const RUNTIMES: &[&str] = &["node", "nodejs", "bun", "deno"];

fn runtimes_on_path() -> Vec<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
    let mut found: Vec<PathBuf> = std::env::split_paths(&path)
        .flat_map(|dir| RUNTIMES.iter().map(move |name| dir.join(name)))
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    found.sort();
    found.dedup();
    found
}

pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}
