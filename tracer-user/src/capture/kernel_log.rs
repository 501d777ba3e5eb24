//! The kernel programs' own messages (`tracer-ebpf/src/report.rs`: a read of user memory that
//! failed, a full ring buffer, a call cut, a map that refused an entry) in the daemon's log.
//!
//! They are debug messages of the `tracer_ebpf` target, so `AGENT_TRACER_LOG=debug` (or
//! `info,tracer_ebpf=debug`) turns them on, and the default filter leaves them off. Off means
//! off in the kernel: aya-log-ebpf's level is a read-only global of the programs, set here at
//! load time to what the daemon's filter would show, which the verifier folds into a constant
//! (see `report.rs` for why that costs the programs nothing).

use std::{
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya_log::EbpfLogger;

/// The log target of the programs' messages (aya-log names them by their module there).
const TARGET: &str = "tracer_ebpf";

/// How long the forwarding thread sleeps between checks of its stop flag.
const POLL_MS: i32 = 250;

/// The level for the programs' `AYA_LOG_LEVEL` global ([`aya_log::LEVEL`]): the most verbose
/// level this process's log filter lets through for the programs' target, 0 (none) when it
/// lets none through.
pub fn level() -> u8 {
    use aya_log::Level as Kernel;
    use tracing::Level;
    // `enabled!` needs its level as a constant: one call per level, most verbose first.
    let level = if tracing::enabled!(target: TARGET, Level::TRACE) {
        Some(Kernel::Trace)
    } else if tracing::enabled!(target: TARGET, Level::DEBUG) {
        Some(Kernel::Debug)
    } else if tracing::enabled!(target: TARGET, Level::INFO) {
        Some(Kernel::Info)
    } else if tracing::enabled!(target: TARGET, Level::WARN) {
        Some(Kernel::Warn)
    } else if tracing::enabled!(target: TARGET, Level::ERROR) {
        Some(Kernel::Error)
    } else {
        None
    };
    level.map_or(0, u8::from)
}

/// A thread moving the programs' messages from their ring buffer into this process's log (aya-log
/// writes them through the `log` crate, which tracing-subscriber forwards to the log). Stopped
/// and joined when dropped.
pub struct KernelLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KernelLog {
    /// Starts forwarding the messages of the programs loaded in `ebpf`, when `level` (what the
    /// programs were loaded with, [`level`]) lets any through; `None` otherwise. It must live as
    /// long as programs may still be loaded: it takes the programs' message map, whose fd their
    /// instructions name.
    pub fn start(ebpf: &mut Ebpf, level: u8) -> Result<Option<Self>> {
        if level == 0 {
            return Ok(None);
        }
        let mut logger = EbpfLogger::init(ebpf).context("opening the programs' log map")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kernel-log".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let mut ready = libc::pollfd {
                        fd: logger.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // Safety: one valid pollfd, for the duration of the call. A failure (EINTR)
                    // only means reading the ring again sooner.
                    unsafe { libc::poll(&mut ready, 1, POLL_MS) };
                    logger.flush();
                }
                logger.flush();
            })
            .context("starting the kernel log thread")?;
        tracing::debug!("kernel programs' debug messages on (target {TARGET})");
        Ok(Some(KernelLog {
            stop,
            thread: Some(thread),
        }))
    }
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // aya-log's flush panics on a record it cannot parse (only a program built against
            // another aya-log-ebpf writes one): that ends this thread, not the daemon.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::{layer::SubscriberExt as _, EnvFilter, Registry};

    use super::level;

    /// The programs' level under `filter`, as the daemon would load them.
    fn level_under(filter: &str) -> u8 {
        let subscriber = Registry::default().with(EnvFilter::new(filter));
        tracing::subscriber::with_default(subscriber, level)
    }

    #[test]
    fn the_programs_log_at_what_the_filter_shows_for_their_target() {
        let debug = u8::from(aya_log::Level::Debug);
        // The daemon's default filter: the messages (all debug) stay off in the kernel.
        assert!(level_under("info,kube_client::client::builder=off") < debug);
        assert_eq!(level_under("debug"), debug);
        assert_eq!(level_under("info,tracer_ebpf=debug"), debug);
        assert_eq!(level_under("trace"), u8::from(aya_log::Level::Trace));
        assert_eq!(level_under("off"), 0);
        // Another crate's debug does not turn the kernel's on.
        assert!(level_under("info,tracer_user=debug") < debug);
    }
}
