//! Finds every process's TLS targets and hooks them: all running processes at start, every
//! process that execs afterwards (its executable at once, its libraries again shortly after,
//! when the dynamic loader and dlopen have mapped them), and a slow periodic sweep as a safety
//! net. Each file is hooked once: a uprobe on a file covers every process mapping it, now and
//! later. Files are reached through /proc/PID/root so a container's own libraries resolve.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, info, warn};

use super::{
    libssl::find_libssl,
    loader::Capture,
    safe_open::{self, Opened},
    targets::{is_tls_library_name, FileId, Hook, HookMethod, TargetCache},
    validate::{InferredHook, Validator},
    CaptureEvent,
};
use crate::telemetry::health::Health;

/// After an exec, look at the process's libraries again at these delays.
const RESCAN_AFTER_EXEC: &[Duration] = &[
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
];
/// Files analysed at once off the attacher's task (a burst of new programs queues beyond).
const MAX_ANALYSES_IN_FLIGHT: usize = 4;
const FULL_SWEEP: Duration = Duration::from_secs(30);
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

pub struct Attacher {
    capture: Capture,
    cache: Arc<TargetCache>,
    /// Files hooked, and when their hooks were in place (CLOCK_MONOTONIC ns).
    hooked: HashMap<FileId, u64>,
    coverage: HookCoverage,
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
    /// Once running: where analyses made off this task report back. Before (start-up), files
    /// are analysed in line.
    analysed_tx: Option<mpsc::UnboundedSender<Analysed>>,
    /// Files under analysis off this task, and the processes (with their exec time) waiting.
    analysing: HashMap<FileId, Vec<(u32, Option<u64>)>>,
    /// Analyses waiting for one of the [`MAX_ANALYSES_IN_FLIGHT`] threads.
    queued: std::collections::VecDeque<Analysed>,
    in_flight: usize,
}

/// A file analysed off the attacher's task, held open: it can be hooked through
/// `/proc/self/fd/N` even when the process that revealed it has already gone (a short-lived
/// client is the very case), and a file in a container's mount namespace stays reachable.
struct Analysed {
    file: std::fs::File,
    id: FileId,
    /// The file's name, for the logs (the process's name for it, or the library's path).
    name: PathBuf,
    executable: bool,
    /// The process's name for the file (its executable), for the logs and the unsupported-TLS
    /// report.
    reported_as: Option<(u32, PathBuf)>,
}

impl Attacher {
    pub fn new(capture: Capture, health: Arc<Health>, validator: Arc<Mutex<Validator>>) -> Self {
        Attacher {
            validator,
            inferred_links: HashMap::new(),
            analysed_tx: None,
            analysing: HashMap::new(),
            queued: std::collections::VecDeque::new(),
            in_flight: 0,
            capture,
            cache: Arc::new(TargetCache::default()),
            hooked: HashMap::new(),
            coverage: HookCoverage::default(),
            health,
            own_pid: std::process::id(),
            hooked_paths: Vec::new(),
            unhookable_paths: Vec::new(),
        }
    }

    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    /// Removes every probe at once, at exit. Closing a probe's link waits for a kernel grace
    /// period (`synchronize_rcu_tasks_trace`), up to a second on a busy host: hundreds of
    /// pre-attached probes dropped one by one took minutes. Closed from many threads at once,
    /// the waits share grace periods. Consumes the attacher without dropping it: the links'
    /// descriptors are closed here, not again by their owners.
    pub fn release_at_exit(self) {
        let links: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path()).is_ok_and(|target| {
                            let t = target.to_string_lossy();
                            t == "anon_inode:bpf_link" || t == "anon_inode:[perf_event]"
                        })
                    })
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let threads = links.len().clamp(1, 64);
        std::thread::scope(|scope| {
            for chunk in links.chunks(links.len().div_ceil(threads).max(1)) {
                scope.spawn(move || {
                    for fd in chunk {
                        // Safety: a link descriptor of this process, closed once: its owner is
                        // forgotten below, never dropped.
                        unsafe { libc::close(*fd) };
                    }
                });
            }
        });
        info!(
            links = links.len(),
            ms = started.elapsed().as_millis() as u64,
            "probes removed"
        );
        std::mem::forget(self);
    }

    /// The analyses, for pre-attach to share.
    pub fn target_cache(&self) -> Arc<TargetCache> {
        self.cache.clone()
    }

    /// When each process's hooks were in place, for the encrypted-only fallback.
    pub fn coverage(&self) -> HookCoverage {
        self.coverage.clone()
    }

    /// Hooks what exists now; returns the connections already open (as Connect events) so the
    /// streams stage knows their peers.
    pub fn start_up(&mut self) -> Vec<CaptureEvent> {
        for lib in find_libssl() {
            self.consider_host(&lib, false);
        }
        // Runtimes agents run on, hooked before any of them starts: their first process then never
        // races the analysis of a large binary.
        for runtime in runtimes_on_path() {
            self.consider_host(&runtime, true);
        }
        let pids = all_pids();
        // Stdio first: a seeded server's next read is then caught, whatever the scans cost.
        for pid in &pids {
            self.seed_stdio(*pid);
        }
        for pid in &pids {
            self.scan_process(*pid, None);
        }
        let mut connects = Vec::new();
        for pid in pids {
            connects.extend(self.seed_sockets(pid));
        }
        connects
    }

    /// The executable and TLS libraries of one process. Returns when the last of its hooks was
    /// placed (CLOCK_MONOTONIC ns), `None` when it has none yet (and records it in the
    /// coverage). Once running, a file not analysed yet is analysed off this task: the process
    /// is recorded when its hooks are placed. `exec_ns`: when it exec'd, for the latency log.
    pub fn scan_process(&mut self, pid: u32, exec_ns: Option<u64>) -> Option<u64> {
        if pid == self.own_pid {
            return None;
        }
        let label = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let mut hooked_at = match safe_open::open_exe(pid) {
            Ok(exe) => {
                let name = label.clone().unwrap_or_else(|| PathBuf::from("(exe)"));
                self.look_at(exe, name, true, label.map(|l| (pid, l)), pid, exec_ns)
            }
            Err(e) => {
                self.refused(pid, &e);
                None
            }
        };
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            self.record_coverage(pid, hooked_at);
            return hooked_at;
        };
        // Each TLS library once (its mappings are several), by the name the process maps.
        let mut seen = std::collections::BTreeSet::new();
        let libraries: Vec<safe_open::Mapping<'_>> = safe_open::mappings(&maps)
            .filter(|m| {
                Path::new(m.name())
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_tls_library_name)
            })
            .filter(|m| seen.insert(m.path))
            .collect();
        for lib in libraries {
            // Through map_files: the mapped file itself, never what now sits at its name.
            let opened = match safe_open::open_mapping(pid, &lib) {
                Ok(opened) => opened,
                Err(e) => {
                    self.refused(pid, &e);
                    continue;
                }
            };
            let at = self.look_at(opened, PathBuf::from(lib.name()), false, None, pid, exec_ns);
            hooked_at = hooked_at.max(at);
        }
        self.record_coverage(pid, hooked_at);
        hooked_at
    }

    /// A file a process named that was not opened: counted, and logged at debug (a process
    /// gone meanwhile is the common case; a FIFO or a device is the hostile one).
    fn refused(&self, pid: u32, e: &safe_open::OpenError) {
        if !matches!(e, safe_open::OpenError::Io { .. }) {
            Health::add(&self.health.files_refused, 1);
            warn!(pid, "not analysed: {e}");
        } else {
            debug!(pid, "not analysed: {e}");
        }
    }

    /// One file of a process: hooked at once when its analysis is known, else (once running)
    /// analysed on a blocking thread, so a 300 MB binary never holds up the next exec's hooks.
    fn look_at(
        &mut self,
        opened: Opened,
        name: PathBuf,
        executable: bool,
        reported_as: Option<(u32, PathBuf)>,
        pid: u32,
        exec_ns: Option<u64>,
    ) -> Option<u64> {
        let Opened { file, id } = opened;
        if let Some(at) = self.hooked.get(&id) {
            return Some(*at);
        }
        let Some(tx) = self
            .analysed_tx
            .clone()
            .filter(|_| !self.cache.analysed(&id))
        else {
            let shown = reported_as.as_ref().map(|(p, l)| (*p, l.as_path()));
            return self.consider(&file, id, &name, executable, shown);
        };
        if let Some(waiting) = self.analysing.get_mut(&id) {
            waiting.push((pid, exec_ns));
            return None;
        }
        // A library is named by its path in the logs (an executable, by the process's name).
        let reported_as = reported_as.or_else(|| Some((pid, name.clone())));
        self.analysing.insert(id, vec![(pid, exec_ns)]);
        let job = Analysed {
            file,
            id,
            name,
            executable,
            reported_as,
        };
        if self.in_flight >= MAX_ANALYSES_IN_FLIGHT {
            self.queued.push_back(job);
        } else {
            self.start_analysis(job, tx);
        }
        None
    }

    /// A thread of its own, not tokio's blocking pool: the runtime waits for that pool at exit,
    /// and a debug build of a large binary can take a minute to analyse.
    fn start_analysis(&mut self, job: Analysed, tx: mpsc::UnboundedSender<Analysed>) {
        let cache = self.cache.clone();
        let id = job.id;
        self.in_flight += 1;
        let spawned = std::thread::Builder::new()
            .name("analyse".into())
            .spawn(move || {
                // The result stays in the cache; the attacher reads it from there.
                let shown = job.name.display().to_string();
                let _ = cache.get_or_analyse(job.id, &job.file, &shown, job.executable);
                let _ = tx.send(job);
            });
        if let Err(e) = spawned {
            self.in_flight -= 1;
            self.analysing.remove(&id);
            warn!("cannot start an analysis thread: {e}");
        }
    }

    /// An analysis made off this task is done: hook the file, and record the processes that
    /// waited for it.
    fn analysed(&mut self, done: Analysed) {
        let shown = done.reported_as.as_ref().map(|(p, l)| (*p, l.as_path()));
        let hooked_at = self.consider(&done.file, done.id, &done.name, done.executable, shown);
        let waiting = self.analysing.remove(&done.id).unwrap_or_default();
        self.in_flight = self.in_flight.saturating_sub(1);
        if let (Some(next), Some(tx)) = (self.queued.pop_front(), self.analysed_tx.clone()) {
            self.start_analysis(next, tx);
        }
        let Some(at) = hooked_at else {
            return;
        };
        for (pid, exec_ns) in waiting {
            self.coverage.record(pid, at);
            // The program ran before its hooks were in place: for how long (its calls until
            // then get only the encrypted-only span).
            if let Some(exec_ns) = exec_ns.filter(|e| at > *e) {
                let ms = (at - exec_ns) as f64 / 1e6;
                let exe = done
                    .reported_as
                    .as_ref()
                    .map(|(_, l)| l.display().to_string())
                    .unwrap_or_default();
                info!(
                    pid,
                    exe,
                    exec_to_hooked_ms = ms,
                    "hooks in place after the exec"
                );
            }
        }
    }

    fn record_coverage(&self, pid: u32, hooked_at: Option<u64>) {
        if let Some(at) = hooked_at {
            self.coverage.record(pid, at);
        }
    }

    /// A file on the host (libraries, runtimes, pre-attach's finds), opened the safe way.
    fn consider_host(&mut self, path: &Path, executable: bool) -> Option<u64> {
        match safe_open::open_host(path) {
            Ok(Opened { file, id }) => self.consider(&file, id, path, executable, None),
            Err(e) => {
                self.refused(0, &e);
                None
            }
        }
    }

    /// Analyses an open file (once) and hooks it (once), through `/proc/self/fd/N`: the file
    /// opened, whatever its name now leads to. `name` names it in the logs; `reported_as`
    /// names the process for the unsupported-TLS report. Returns when the file's hooks were
    /// placed, if it has any.
    fn consider(
        &mut self,
        file: &std::fs::File,
        id: FileId,
        name: &Path,
        executable: bool,
        reported_as: Option<(u32, &Path)>,
    ) -> Option<u64> {
        if let Some(at) = self.hooked.get(&id) {
            return Some(*at);
        }
        let fd = fd_path(file);
        let path = fd.as_path();
        let shown_name = name.display().to_string();
        let analysis = match self.cache.get_or_analyse(id, file, &shown_name, executable) {
            Ok(a) => a,
            Err(e) => {
                debug!("{e}");
                return None;
            }
        };
        if let (Some(stack), Some((pid, binary))) = (analysis.unsupported, reported_as) {
            let binary = binary.display().to_string();
            if self.health.unsupported_tls(&binary, stack) {
                warn!(pid, binary, stack, "this program's TLS stack cannot be hooked yet: its HTTPS traffic is not captured");
            }
        }
        let placing = std::time::Instant::now();
        let mut placed = 0;
        // All or nothing: a Go function hooked at its entry but not at every RET loses data.
        if let Some(go) = &analysis.go {
            match super::gotls::attach(self.capture.ebpf_mut(), path, go) {
                Ok(n) => {
                    debug!("Go crypto/tls: {}", super::locate::go::describe(name, go));
                    placed += n;
                }
                Err(e) => warn!("could not hook Go crypto/tls in {shown_name}: {e:#}"),
            }
        }
        // Every stack the file carries, each the way its hooks were found.
        for stack in &analysis.stacks {
            if stack.hooks.is_empty() {
                continue;
            }
            placed += match stack.method {
                HookMethod::Inferred => {
                    let shown = reported_as.map_or(name, |(_, b)| b).display().to_string();
                    self.attach_inferred(path, &shown, &stack.hooks)
                }
                HookMethod::Symbol => self.capture.attach_hooks(path, &stack.hooks),
            };
        }
        if analysis.go.is_none() && analysis.hooks().next().is_none() {
            return None;
        }
        if placed > 0 {
            let at = super::Clock::monotonic_now_ns();
            self.hooked.insert(id, at);
            self.coverage.placed(at);
            Health::add(&self.health.tls_targets_attached, 1);
            let shown = reported_as
                .map(|(_, b)| b.to_path_buf())
                .unwrap_or_else(|| name.to_path_buf());
            info!(
                attach_ms = placing.elapsed().as_secs_f64() * 1e3,
                "attached {placed} TLS hooks ({}) to {}",
                analysis.stack_names(),
                shown.display()
            );
            self.hooked_paths.push(shown);
            Some(at)
        } else {
            self.unhookable_paths.push(name.to_path_buf());
            None
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
    /// `preattached`: files pre-attach found worth hooking (see `preattach.rs`), already analysed.
    pub async fn run(
        mut self,
        mut execs: mpsc::Receiver<ExecSeen>,
        preattach: Option<super::preattach::PreAttach>,
    ) -> Self {
        let (mut appeared, mut scanned) = match preattach {
            Some(p) => (Some(p.appeared), Some(p.scanned)),
            None => (None, None),
        };
        let (analysed_tx, mut analysed) = mpsc::unbounded_channel();
        self.analysed_tx = Some(analysed_tx);
        let mut rescans: BTreeMap<Instant, Vec<u32>> = BTreeMap::new();
        let mut sweep = tokio::time::interval(FULL_SWEEP);
        let mut counters = tokio::time::interval(COUNTERS_EVERY);
        sweep.tick().await;
        loop {
            let next_rescan = rescans.keys().next().copied();
            // Biased, in this order: execs (a process is running now), analyses done (one may
            // be waiting), files that just appeared (about to run), then the rest.
            tokio::select! {
                biased;
                exec = execs.recv() => match exec {
                    Some(ExecSeen { pid, timestamp_ns }) => {
                        self.scan_process(pid, Some(timestamp_ns));
                        let now = Instant::now();
                        for delay in RESCAN_AFTER_EXEC {
                            rescans.entry(now + *delay).or_default().push(pid);
                        }
                    }
                    None => break,
                },
                Some(done) = analysed.recv() => self.analysed(done),
                _ = async { tokio::time::sleep_until(next_rescan.unwrap_or_else(Instant::now)).await }, if next_rescan.is_some() => {
                    let due: Vec<Instant> = rescans.range(..=Instant::now()).map(|(t, _)| *t).collect();
                    for t in due {
                        for pid in rescans.remove(&t).unwrap_or_default() {
                            self.scan_process(pid, None);
                        }
                    }
                }
                found = async { appeared.as_mut()?.recv().await }, if appeared.is_some() => match found {
                    Some(path) => {
                        self.consider_host(&path, true);
                    }
                    None => appeared = None,
                },
                found = async { scanned.as_mut()?.recv().await }, if scanned.is_some() => match found {
                    Some(path) => {
                        self.consider_host(&path, true);
                    }
                    None => scanned = None,
                },
                _ = sweep.tick() => {
                    for pid in all_pids() {
                        self.scan_process(pid, None);
                    }
                }
                _ = counters.tick() => {
                    self.settle_inferred();
                    self.health.analyses_given_up.store(
                        self.cache.given_up.load(std::sync::atomic::Ordering::Relaxed),
                        std::sync::atomic::Ordering::Relaxed,
                    );
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

/// A path to an open file that the kernel resolves to that file, whatever happened to the name
/// it was opened by.
fn fd_path(file: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd as _;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// An exec the ring buffer reported: the process and the kernel's CLOCK_MONOTONIC time of it.
#[derive(Clone, Copy, Debug)]
pub struct ExecSeen {
    pub pid: u32,
    pub timestamp_ns: u64,
}

/// When each process's TLS hooks were last completed (CLOCK_MONOTONIC ns): a TLS connection the
/// process opened before that may have carried bytes no hook saw, so its encrypted-only span is
/// kept even if the process produced plaintext afterwards. Shared by the attacher (writer) and
/// the pipeline (reader, which forgets a process at its exit).
#[derive(Clone, Debug, Default)]
pub struct HookCoverage(Arc<CoverageInner>);

#[derive(Debug, Default)]
struct CoverageInner {
    processes: Mutex<HashMap<u32, u64>>,
    /// When hooks were last placed on any file: stands for a process gone before its exec was
    /// looked at (it has no entry, and may have been hooked during its short life).
    last_placed: std::sync::atomic::AtomicU64,
}

/// Processes remembered at most (a pid is forgotten at its exit; this bounds a missed exit).
const COVERAGE_MAX: usize = 65_536;

impl HookCoverage {
    pub fn record(&self, pid: u32, hooked_at: u64) {
        let mut map = self.0.processes.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= COVERAGE_MAX && !map.contains_key(&pid) {
            return;
        }
        let at = map.entry(pid).or_insert(hooked_at);
        *at = (*at).max(hooked_at);
    }

    pub fn placed(&self, at: u64) {
        self.0
            .last_placed
            .fetch_max(at, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the process's hooks were in place, as far as is known: its own record, else the
    /// last placement on any file (`None`: nothing was ever hooked after start-up).
    pub fn hooked_at(&self, pid: u32) -> Option<u64> {
        let own = self
            .0
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .copied();
        own.or_else(|| {
            Some(
                self.0
                    .last_placed
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .filter(|t| *t > 0)
        })
    }

    pub fn forget(&self, pid: u32) {
        self.0
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
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
