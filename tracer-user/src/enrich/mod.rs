//! Stage 6, enrich: who made the call. Process metadata is read from /proc when a process is
//! first seen (it may be gone by the time its last span is built) and forgotten when it exits.

mod container;

use std::{collections::HashMap, sync::Arc};

use crate::span::Span;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub executable_path: Option<String>,
    pub executable_name: String,
    /// With secret-looking arguments redacted.
    pub command_line: Option<String>,
    pub host_name: String,
    /// The PID inside the process's own PID namespace (a container's view), when different.
    pub namespace_pid: Option<u32>,
    /// The process that started it (for a stdio MCP server: its client), host PID.
    pub parent_pid: Option<u32>,
    pub container_id: Option<String>,
    pub container_runtime: Option<&'static str>,
}

impl ProcessInfo {
    pub fn unknown(pid: u32) -> Self {
        ProcessInfo {
            pid,
            executable_path: None,
            executable_name: "unknown".to_string(),
            command_line: None,
            host_name: String::new(),
            namespace_pid: None,
            parent_pid: None,
            container_id: None,
            container_runtime: None,
        }
    }

    fn read(pid: u32, host_name: &str) -> Self {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .ok();
        let executable_name = exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .map(str::to_string)
            .or(comm)
            .unwrap_or_else(|| "unknown".to_string());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
        let namespace_pid = status
            .as_deref()
            .and_then(container::namespace_pid)
            .filter(|ns| *ns != pid);
        let parent_pid = status.as_deref().and_then(container::parent_pid);
        let container = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|c| container::container_of(&c));
        ProcessInfo {
            pid,
            namespace_pid,
            parent_pid,
            container_runtime: container.as_ref().map(|(r, _)| *r),
            container_id: container.map(|(_, id)| id),
            executable_path: exe,
            executable_name,
            command_line: (!args.is_empty()).then(|| redact_args(&args).join(" ")),
            host_name: host_name.to_string(),
        }
    }
}

/// Replaces values of arguments that look like credentials (`--api-key X`, `--token=X`,
/// `OPENAI_API_KEY=X`, a header argument `authorization: Bearer X`, a bare `Bearer X`) with
/// `REDACTED`.
pub fn redact_args(args: &[String]) -> Vec<String> {
    fn secret_name(name: &str) -> bool {
        let n = name.trim_start_matches('-').to_ascii_lowercase();
        [
            "key",
            "token",
            "secret",
            "password",
            "passwd",
            "auth",
            "credential",
            "cookie",
        ]
        .iter()
        .any(|s| n.contains(s))
    }
    let mut out = Vec::with_capacity(args.len());
    let mut redact_next = false;
    for arg in args {
        if redact_next {
            out.push("REDACTED".to_string());
            redact_next = false;
            continue;
        }
        let header = arg
            .split_once(':')
            .filter(|(name, _)| !name.contains('/') && secret_name(name));
        if let Some((name, _)) = header {
            out.push(format!("{name}: REDACTED"));
            continue;
        }
        if arg.trim_start().to_ascii_lowercase().starts_with("bearer ") {
            out.push("Bearer REDACTED".to_string());
            continue;
        }
        match arg.split_once('=') {
            Some((name, _)) if secret_name(name) => out.push(format!("{name}=REDACTED")),
            None if arg.starts_with('-') && secret_name(arg) => {
                out.push(arg.clone());
                redact_next = true;
            }
            _ => out.push(arg.clone()),
        }
    }
    out
}

/// Bounded: beyond this many live processes, new ones are described on demand and not cached.
const MAX_PROCESSES: usize = 65_536;

pub struct ProcessCache {
    host_name: String,
    processes: HashMap<u32, Arc<ProcessInfo>>,
}

impl ProcessCache {
    pub fn new() -> Self {
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        ProcessCache {
            host_name,
            processes: HashMap::new(),
        }
    }

    /// Called when a process is first seen, while it is surely alive.
    pub fn observe(&mut self, pid: u32) {
        if self.processes.len() < MAX_PROCESSES && !self.processes.contains_key(&pid) {
            let info = Arc::new(ProcessInfo::read(pid, &self.host_name));
            self.processes.insert(pid, info);
        }
    }

    /// A process that just exec'd `filename`: read now; the file name stands in for the path if
    /// the process is already gone.
    pub fn observe_exec(&mut self, pid: u32, filename: &str) {
        self.observe(pid);
        if let Some(info) = self.processes.get_mut(&pid) {
            if info.executable_path.is_none() && filename.starts_with('/') {
                let info = Arc::make_mut(info);
                info.executable_path = Some(filename.to_string());
                if info.executable_name == "unknown" {
                    if let Some(name) = filename.rsplit('/').next() {
                        info.executable_name = name.to_string();
                    }
                }
            }
        }
    }

    pub fn get(&self, pid: u32) -> Arc<ProcessInfo> {
        self.processes
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| Arc::new(ProcessInfo::read(pid, &self.host_name)))
    }

    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    pub fn enrich(&self, span: &mut Span) {
        span.process = self.get(span.process.pid);
    }
}

impl Default for ProcessCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn redacts_secret_flags_and_assignments() {
        assert_eq!(
            redact_args(&s(&[
                "agent",
                "--api-key",
                "sk-1",
                "--token=abc",
                "OPENAI_API_KEY=sk-2",
                "--model",
                "gpt"
            ])),
            s(&[
                "agent",
                "--api-key",
                "REDACTED",
                "--token=REDACTED",
                "OPENAI_API_KEY=REDACTED",
                "--model",
                "gpt"
            ])
        );
    }

    #[test]
    fn redacts_header_arguments_but_not_urls() {
        assert_eq!(
            redact_args(&s(&[
                "curl",
                "-H",
                "authorization: Bearer sk-1",
                "-H",
                "x-api-key:abc",
                "-H",
                "content-type: application/json",
                "https://h/v1"
            ])),
            s(&[
                "curl",
                "-H",
                "authorization: REDACTED",
                "-H",
                "x-api-key: REDACTED",
                "-H",
                "content-type: application/json",
                "https://h/v1"
            ])
        );
        assert_eq!(
            redact_args(&s(&["tool", "Bearer abc"])),
            s(&["tool", "Bearer REDACTED"])
        );
    }

    #[test]
    fn reads_own_process() {
        let me = ProcessInfo::read(std::process::id(), "h");
        assert!(me.executable_path.is_some());
        assert_eq!(me.parent_pid, Some(std::os::unix::process::parent_id()));
        assert!(me.command_line.is_some());
        assert_eq!(me.host_name, "h");
    }
}
