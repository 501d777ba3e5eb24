//! Processes whose exit record was lost. A full ring buffer drops an exit like any other
//! record, and every stage keeps its per-process state (connections, bodies in progress, TLS
//! records, lineage, the catalogue's entry) until that exit arrives: without this, each lost
//! exit would hold its state for the daemon's life. Every [`SWEEP_INTERVAL_NS`] the pipeline
//! asks which processes it holds state for have sent nothing since the last sweep and are gone
//! from `/proc`, and ends each as its exit record would have, marked as inferred.
//!
//! Only where `/proc` shows the kernel's own pids: the records carry pids of the initial pid
//! namespace, so a daemon in a container without the host's pid namespace (no `hostPID`)
//! cannot tell, and does not guess.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::capture::CaptureEvent;

/// How often gone processes are looked for; one that sent a record since the last sweep is
/// left for the next, so an exit is inferred between one and two intervals after the fact.
pub const SWEEP_INTERVAL_NS: u64 = 30_000_000_000;

/// The initial pid namespace's inode (`PROC_PID_INIT_INO` in the kernel, fixed since 3.8).
const INIT_PID_NS: &str = "pid:[4026531836]";

/// The processes the pipeline has heard from, and when.
#[derive(Debug)]
pub struct LostExits {
    /// Where `/proc` is (a directory of the test's own in tests); `None`: not the initial pid
    /// namespace's, so no exit is inferred.
    proc_root: Option<PathBuf>,
    /// pid → (when it was last heard from, heard from since the last sweep).
    heard: HashMap<u32, (u64, bool)>,
    last_sweep_ns: Option<u64>,
}

impl LostExits {
    /// Against this host's `/proc`, when it shows the initial pid namespace.
    pub fn for_this_host() -> Self {
        let proc_root = Path::new("/proc");
        let ns = std::fs::read_link(proc_root.join("self/ns/pid")).ok();
        let in_init_ns = ns.as_deref() == Some(Path::new(INIT_PID_NS));
        if !in_init_ns {
            tracing::warn!(
                "this daemon's /proc is not the host's pid namespace ({ns:?}): the state of \
                 processes whose exit record is lost is kept until shutdown (run with hostPID)"
            );
        }
        Self::with_proc_root(in_init_ns.then(|| proc_root.to_path_buf()))
    }

    pub fn with_proc_root(proc_root: Option<PathBuf>) -> Self {
        LostExits {
            proc_root,
            heard: HashMap::new(),
            last_sweep_ns: None,
        }
    }

    /// Notes the process a record came from (and, for a fork, the child it made); forgets one
    /// whose exit arrived.
    pub fn heard(&mut self, event: &CaptureEvent) {
        let (pid, at) = match event {
            CaptureEvent::ProcessExit { pid, .. } => {
                self.heard.remove(pid);
                return;
            }
            CaptureEvent::Fork {
                parent,
                child,
                timestamp_ns,
            } => {
                self.note(*child, Some(*timestamp_ns));
                (*parent, Some(*timestamp_ns))
            }
            CaptureEvent::Data(chunk) => (chunk.pid, Some(chunk.timestamp_ns)),
            CaptureEvent::TlsRecord(chunk) => (chunk.pid, Some(chunk.timestamp_ns)),
            CaptureEvent::Close {
                pid, timestamp_ns, ..
            }
            | CaptureEvent::TlsSummary {
                pid, timestamp_ns, ..
            }
            | CaptureEvent::Exec {
                pid, timestamp_ns, ..
            } => (*pid, Some(*timestamp_ns)),
            CaptureEvent::Connect { pid, .. }
            | CaptureEvent::TlsLink { pid, .. }
            | CaptureEvent::AeadLink { pid, .. }
            | CaptureEvent::ClientHello { pid, .. }
            | CaptureEvent::ExecArgs { pid, .. } => (*pid, None),
        };
        self.note(pid, at);
    }

    fn note(&mut self, pid: u32, at: Option<u64>) {
        let entry = self.heard.entry(pid).or_insert((0, true));
        entry.1 = true;
        if let Some(at) = at {
            entry.0 = entry.0.max(at);
        }
    }

    /// At most once per [`SWEEP_INTERVAL_NS`]: the exits to infer, each timed when its process
    /// was last heard from.
    pub fn sweep(&mut self, now_ns: u64) -> Vec<CaptureEvent> {
        let Some(proc_root) = &self.proc_root else {
            return Vec::new();
        };
        match self.last_sweep_ns {
            Some(last) if now_ns.saturating_sub(last) < SWEEP_INTERVAL_NS => return Vec::new(),
            // The first tick starts the first interval: every process has had one to speak.
            None => {
                self.last_sweep_ns = Some(now_ns);
                self.heard
                    .values_mut()
                    .for_each(|(_, recent)| *recent = false);
                return Vec::new();
            }
            Some(_) => {}
        }
        self.last_sweep_ns = Some(now_ns);
        let mut gone = Vec::new();
        self.heard.retain(|pid, (last_ns, recent)| {
            if std::mem::take(recent) || proc_root.join(pid.to_string()).exists() {
                return true;
            }
            gone.push(CaptureEvent::ProcessExit {
                pid: *pid,
                timestamp_ns: *last_ns,
                status: None,
                exit_lost: true,
            });
            false
        });
        gone
    }

    /// Processes heard from and not known to have exited.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heard.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pid: u32, at: u64) -> CaptureEvent {
        CaptureEvent::Exec {
            pid,
            filename: "/bin/true".into(),
            timestamp_ns: at,
            cgroup_id: 0,
        }
    }

    fn inferred(events: &[CaptureEvent]) -> Vec<(u32, u64)> {
        events
            .iter()
            .map(|e| match e {
                CaptureEvent::ProcessExit {
                    pid,
                    timestamp_ns,
                    exit_lost: true,
                    status: None,
                } => (*pid, *timestamp_ns),
                other => panic!("not an inferred exit: {other:?}"),
            })
            .collect()
    }

    /// A directory standing in for /proc: the live processes are its entries.
    fn proc_with(pids: &[u32]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for pid in pids {
            std::fs::create_dir(dir.path().join(pid.to_string())).unwrap();
        }
        dir
    }

    #[test]
    fn a_process_gone_quiet_and_gone_from_proc_is_ended_once() {
        let proc = proc_with(&[20]);
        let mut lost = LostExits::with_proc_root(Some(proc.path().to_path_buf()));
        lost.heard(&exec(10, 5));
        lost.heard(&exec(20, 6));
        let t0 = 1_000_000_000;
        assert!(
            lost.sweep(t0).is_empty(),
            "the first sweep only starts the clock"
        );
        assert!(
            lost.sweep(t0 + SWEEP_INTERVAL_NS - 1).is_empty(),
            "not yet due"
        );
        assert_eq!(inferred(&lost.sweep(t0 + SWEEP_INTERVAL_NS)), vec![(10, 5)]);
        assert_eq!(lost.len(), 1, "20 is alive");
        assert!(lost.sweep(t0 + 2 * SWEEP_INTERVAL_NS).is_empty());
    }

    #[test]
    fn a_process_heard_from_since_the_last_sweep_is_left_for_the_next() {
        let proc = proc_with(&[]);
        let mut lost = LostExits::with_proc_root(Some(proc.path().to_path_buf()));
        let t0 = 1_000_000_000;
        lost.sweep(t0);
        lost.heard(&exec(10, 7));
        assert!(lost.sweep(t0 + SWEEP_INTERVAL_NS).is_empty());
        assert_eq!(
            inferred(&lost.sweep(t0 + 2 * SWEEP_INTERVAL_NS)),
            vec![(10, 7)]
        );
    }

    #[test]
    fn an_exit_that_arrived_and_a_forks_child_are_accounted_for() {
        let proc = proc_with(&[]);
        let mut lost = LostExits::with_proc_root(Some(proc.path().to_path_buf()));
        lost.heard(&exec(10, 1));
        lost.heard(&CaptureEvent::Fork {
            parent: 10,
            child: 11,
            timestamp_ns: 3,
        });
        lost.heard(&CaptureEvent::ProcessExit {
            pid: 10,
            timestamp_ns: 4,
            status: Some(0),
            exit_lost: false,
        });
        let t0 = 1_000_000_000;
        lost.sweep(t0);
        assert_eq!(inferred(&lost.sweep(t0 + SWEEP_INTERVAL_NS)), vec![(11, 3)]);
        assert!(lost.is_empty());
    }

    #[test]
    fn without_the_hosts_proc_nothing_is_inferred() {
        let mut lost = LostExits::with_proc_root(None);
        lost.heard(&exec(10, 1));
        for i in 0..3 {
            assert!(lost.sweep(i * SWEEP_INTERVAL_NS).is_empty());
        }
        assert_eq!(lost.len(), 1);
    }

    #[test]
    fn this_host_shows_the_initial_pid_namespace() {
        // The tests run as root on the host, as the daemon does: the check must say so, or the
        // daemon would never clean up after a lost exit.
        assert!(LostExits::for_this_host().proc_root.is_some());
    }
}
