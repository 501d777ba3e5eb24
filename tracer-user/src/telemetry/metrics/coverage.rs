//! Coverage, per process, as telemetry: for each process that made TLS or model traffic, its
//! executable, its TLS stack and how the tracer hooks it (`symbol`, `inferred`, `fallback`,
//! `none`), and what it saw of it: plaintext bytes the hooks captured, bytes of TLS connections
//! no hook decrypted (reported encrypted-only), model calls read in plaintext and connections to
//! model APIs seen only encrypted. "No data" (nothing captured, nothing sent) is then told apart
//! from "blind" (bytes went by, none readable).
//!
//! Bounded: at most `MAX_PROCESSES` processes, each dropped `AGE_AFTER_EXIT` after its exit (a
//! scrape or push in between still reports its last values).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::capture::targets::TargetCache;

use super::{Attributes, CounterFamily, Label, PromUnit};

pub const MAX_PROCESSES: usize = 1024;
pub const AGE_AFTER_EXIT: Duration = Duration::from_secs(300);

/// How the tracer hooks a process's TLS, best first.
const HOOK_ORDER: [&str; 3] = ["symbol", "inferred", "fallback"];

#[derive(Clone, Default)]
pub struct Coverage(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    processes: HashMap<u32, ProcessCoverage>,
    /// The attacher's analyses, to name each process's TLS stacks (none in unit tests).
    targets: Option<Arc<TargetCache>>,
}

#[derive(Clone, Debug, PartialEq)]
struct ProcessCoverage {
    executable: String,
    /// The stacks found, joined with `+`, or `none`.
    stack: String,
    hook: &'static str,
    plaintext_bytes: u64,
    encrypted_bytes: u64,
    model_calls: u64,
    blind_model_connections: u64,
    exited_at: Option<Instant>,
}

/// What is known of a process's TLS: (stacks, how hooked).
pub fn describe_stacks<'a>(
    found: impl IntoIterator<Item = (&'a str, &'static str)>,
) -> (String, &'static str) {
    let mut stacks = BTreeSet::new();
    let mut hook = "none";
    let rank = |h: &str| {
        HOOK_ORDER
            .iter()
            .position(|x| *x == h)
            .unwrap_or(HOOK_ORDER.len())
    };
    for (stack, how) in found {
        stacks.insert(stack.to_string());
        if rank(how) < rank(hook) {
            hook = HOOK_ORDER[rank(how)];
        }
    }
    let stack = if stacks.is_empty() {
        "none".to_string()
    } else {
        stacks.into_iter().collect::<Vec<_>>().join("+")
    };
    (stack, hook)
}

impl Coverage {
    pub fn set_targets(&self, targets: Arc<TargetCache>) {
        if let Ok(mut inner) = self.0.lock() {
            inner.targets = Some(targets);
        }
    }

    /// Plaintext a TLS hook captured for `pid`.
    pub fn plaintext(&self, pid: u32, bytes: u64) {
        self.update(pid, None, |p| p.plaintext_bytes += bytes);
    }

    /// A TLS connection no hook decrypted, reported encrypted-only; `model_api` when its server
    /// name is a model provider's.
    pub fn encrypted(&self, pid: u32, executable: &str, bytes: u64, model_api: bool) {
        self.update(pid, Some(executable), |p| {
            p.encrypted_bytes += bytes;
            p.blind_model_connections += u64::from(model_api);
        });
    }

    /// A model call read in plaintext.
    pub fn model_call(&self, pid: u32, executable: &str) {
        self.update(pid, Some(executable), |p| p.model_calls += 1);
    }

    /// The process is gone: its series stay for `AGE_AFTER_EXIT`, then leave.
    pub fn exited(&self, pid: u32) {
        if let Ok(mut inner) = self.0.lock() {
            if let Some(p) = inner.processes.get_mut(&pid) {
                p.exited_at.get_or_insert_with(Instant::now);
            }
        }
    }

    fn update(
        &self,
        pid: u32,
        executable: Option<&str>,
        change: impl FnOnce(&mut ProcessCoverage),
    ) {
        let (known, targets) = match self.0.lock() {
            Ok(inner) => (inner.processes.contains_key(&pid), inner.targets.clone()),
            Err(_) => return,
        };
        // Described outside the lock: reading /proc and the analyses may take a moment.
        let described = (!known).then(|| describe(pid, executable, targets.as_deref()));
        let Ok(mut inner) = self.0.lock() else {
            return;
        };
        if let Some(new) = described {
            prune(&mut inner.processes, Instant::now());
            if inner.processes.len() >= MAX_PROCESSES && !inner.processes.contains_key(&pid) {
                return;
            }
            inner.processes.entry(pid).or_insert(new);
        }
        if let Some(p) = inner.processes.get_mut(&pid) {
            change(p);
        }
    }

    /// The gauges, one series per process.
    pub fn families(&self) -> Vec<CounterFamily> {
        let processes: Vec<(u32, ProcessCoverage)> = match self.0.lock() {
            Ok(mut inner) => {
                prune(&mut inner.processes, Instant::now());
                let mut all: Vec<_> = inner
                    .processes
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                all.sort_by_key(|(pid, _)| *pid);
                all
            }
            Err(_) => Vec::new(),
        };
        type Value = fn(&ProcessCoverage) -> u64;
        let gauges: [(&str, &str, &'static str, Value); 4] = [
            (
                "agent_tracer.coverage.plaintext_bytes",
                "Plaintext bytes the TLS hooks captured, per process.",
                "By",
                |p| p.plaintext_bytes,
            ),
            (
                "agent_tracer.coverage.encrypted_bytes",
                "Bytes of TLS connections no hook decrypted (reported encrypted-only), per process.",
                "By",
                |p| p.encrypted_bytes,
            ),
            (
                "agent_tracer.coverage.model_calls",
                "Model calls read in plaintext, per process.",
                "{call}",
                |p| p.model_calls,
            ),
            (
                "agent_tracer.coverage.blind_model_connections",
                "Connections to model APIs seen only encrypted (the tracer is blind to them), per process.",
                "{connection}",
                |p| p.blind_model_connections,
            ),
        ];
        gauges
            .into_iter()
            .map(|(name, description, unit, value)| CounterFamily {
                name: name.to_string(),
                description: description.to_string(),
                unit,
                prom_unit: PromUnit::None,
                integer: true,
                points: processes
                    .iter()
                    .map(|(pid, p)| (labels(*pid, p), value(p) as f64))
                    .collect(),
            })
            .collect()
    }
}

fn labels(pid: u32, p: &ProcessCoverage) -> Attributes {
    vec![
        ("process.pid", Label::Int(i64::from(pid))),
        ("process.executable.name", Label::text(&p.executable)),
        ("tls.stack", Label::Str(p.stack.clone())),
        ("agent_tracer.hook", Label::Str(p.hook.to_string())),
    ]
}

fn prune(processes: &mut HashMap<u32, ProcessCoverage>, now: Instant) {
    processes.retain(|_, p| {
        p.exited_at
            .is_none_or(|at| now.saturating_duration_since(at) < AGE_AFTER_EXIT)
    });
}

fn describe(pid: u32, executable: Option<&str>, targets: Option<&TargetCache>) -> ProcessCoverage {
    let executable = executable
        .filter(|e| !e.is_empty() && *e != "unknown")
        .map(str::to_string)
        .or_else(|| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "unknown".to_string());
    let found = match (
        targets,
        std::fs::read_to_string(format!("/proc/{pid}/maps")),
    ) {
        (Some(cache), Ok(maps)) => crate::daemon::check::process_stacks(cache, pid, &maps),
        _ => BTreeSet::new(),
    };
    let (stack, hook) = describe_stacks(found.iter().map(|f| (f.stack.as_str(), f.how)));
    ProcessCoverage {
        executable,
        stack,
        hook,
        plaintext_bytes: 0,
        encrypted_bytes: 0,
        model_calls: 0,
        blind_model_connections: 0,
        exited_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(families: &[CounterFamily], name: &str, pid: i64) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name == name)?
            .points
            .iter()
            .find(|(a, _)| a.contains(&("process.pid", Label::Int(pid))))
            .map(|(_, v)| *v)
    }

    #[test]
    fn the_best_hook_names_the_process_and_stacks_are_listed() {
        assert_eq!(describe_stacks([]), ("none".to_string(), "none"));
        assert_eq!(
            describe_stacks([("OpenSsl", "fallback"), ("Go", "symbol")]),
            ("Go+OpenSsl".to_string(), "symbol")
        );
        assert_eq!(
            describe_stacks([("BoringSsl", "inferred"), ("BoringSsl", "fallback")]),
            ("BoringSsl".to_string(), "inferred")
        );
    }

    #[test]
    fn counts_per_process_and_ages_out_after_exit() {
        let c = Coverage::default();
        c.plaintext(10, 500);
        c.plaintext(10, 20);
        c.model_call(10, "python3");
        c.encrypted(11, "node", 4096, true);
        c.encrypted(11, "node", 100, false);
        let f = c.families();
        assert_eq!(f.len(), 4);
        assert!(f.iter().all(|f| f.name.contains("coverage")));
        assert_eq!(
            value(&f, "agent_tracer.coverage.plaintext_bytes", 10),
            Some(520.0)
        );
        assert_eq!(
            value(&f, "agent_tracer.coverage.model_calls", 10),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "agent_tracer.coverage.encrypted_bytes", 11),
            Some(4196.0)
        );
        assert_eq!(
            value(&f, "agent_tracer.coverage.blind_model_connections", 11),
            Some(1.0)
        );
        let labels = &f[0]
            .points
            .iter()
            .find(|(a, _)| a.contains(&("process.pid", Label::Int(11))))
            .unwrap()
            .0;
        assert!(labels.contains(&("process.executable.name", Label::Str("node".into()))));
        assert!(labels.contains(&("agent_tracer.hook", Label::Str("none".into()))));

        c.exited(11);
        assert!(value(&c.families(), "agent_tracer.coverage.encrypted_bytes", 11).is_some());
        if let Ok(mut inner) = c.0.lock() {
            let p = inner.processes.get_mut(&11).unwrap();
            p.exited_at = Some(Instant::now() - AGE_AFTER_EXIT);
        }
        assert_eq!(
            value(&c.families(), "agent_tracer.coverage.encrypted_bytes", 11),
            None
        );
        assert!(value(&c.families(), "agent_tracer.coverage.plaintext_bytes", 10).is_some());
    }

    #[test]
    fn bounded_in_processes() {
        let c = Coverage::default();
        for pid in 0..(MAX_PROCESSES as u32 + 50) {
            c.model_call(pid + 1_000_000, "x");
        }
        assert_eq!(c.families()[0].points.len(), MAX_PROCESSES);
    }
}
