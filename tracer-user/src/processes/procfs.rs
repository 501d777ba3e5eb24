//! The /proc reads that describe a process, in one place: the catalogue reads them when a
//! process is first seen, and other stages (the agent, the metrics) ask here rather than
//! opening /proc themselves. Each returns nothing when the process is gone or unreadable.

use super::container;

/// A process's command line (empty when it is gone).
pub fn args(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| crate::capture::nul_separated(&raw))
        .unwrap_or_default()
}

/// The path of the executable the process runs (`/proc/PID/exe`).
pub fn executable(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The process's command name (`/proc/PID/comm`), trimmed.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .ok()
}

/// `/proc/PID/status`, whose lines `container::namespace_pid` and `container::parent_pid` read.
pub fn status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// `/proc/PID/cgroup`.
pub fn cgroup(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// The parent's PID (the PPid line of `/proc/PID/status`).
pub fn parent_pid(pid: u32) -> Option<u32> {
    container::parent_pid(&status(pid)?)
}

/// This host's name (`/proc/sys/kernel/hostname`); empty when unreadable.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
