//! Which processes are traced. Everything is, unless rules say otherwise:
//!
//! - with no include rule, every process is included; with include rules, a process is included
//!   when it matches at least one of them (of any kind);
//! - an included process matching any exclude rule is not traced (exclude wins).
//!
//! Executable and command-line patterns match as substrings, or as whole-string globs when they
//! contain `*`, `?` or `[`. The executable is its full path or its file name; the command line is
//! the one exported (secrets redacted). Container patterns match the container id by prefix (the
//! 12-digit short id works), or the Kubernetes container name exactly, or either as a glob.
//! Namespace patterns match the Kubernetes namespace exactly or as a glob. Pod label rules are
//! `KEY=VALUE`: the pod (as the Kubernetes API describes it, `--kube-api`) has label KEY with
//! value VALUE, exactly or as a glob; a process whose pod's labels are not (yet) known matches
//! no label rule, and is decided again when they arrive.

use globset::{Glob, GlobMatcher};
use thiserror::Error;

use super::ProcessInfo;

#[derive(Debug, Error)]
pub enum PatternError {
    #[error("bad selection pattern {pattern:?}: {source}")]
    Glob {
        pattern: String,
        source: globset::Error,
    },
    #[error("bad pod label rule {0:?}: expected KEY=VALUE, e.g. app.kubernetes.io/name=my-agent")]
    Label(String),
}

#[derive(Clone, Debug)]
enum Pattern {
    Literal(String),
    Glob(GlobMatcher),
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.contains(['*', '?', '[']) {
            let glob = Glob::new(pattern).map_err(|source| PatternError::Glob {
                pattern: pattern.to_string(),
                source,
            })?;
            Ok(Pattern::Glob(glob.compile_matcher()))
        } else {
            Ok(Pattern::Literal(pattern.to_string()))
        }
    }

    fn substring(&self, s: &str) -> bool {
        match self {
            Pattern::Literal(l) => s.contains(l.as_str()),
            Pattern::Glob(g) => g.is_match(s),
        }
    }

    fn exact(&self, s: &str) -> bool {
        match self {
            Pattern::Literal(l) => s == l,
            Pattern::Glob(g) => g.is_match(s),
        }
    }

    fn prefix(&self, s: &str) -> bool {
        match self {
            Pattern::Literal(l) => !l.is_empty() && s.starts_with(l.as_str()),
            Pattern::Glob(g) => g.is_match(s),
        }
    }
}

/// The rules as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct SelectionRules {
    pub include_exe: Vec<String>,
    pub exclude_exe: Vec<String>,
    pub include_cmdline: Vec<String>,
    pub exclude_cmdline: Vec<String>,
    pub include_container: Vec<String>,
    pub exclude_container: Vec<String>,
    pub include_namespace: Vec<String>,
    pub exclude_namespace: Vec<String>,
    /// `KEY=VALUE`.
    pub include_pod_label: Vec<String>,
    pub exclude_pod_label: Vec<String>,
}

impl SelectionRules {
    /// Rules that need the pod's labels, hence the Kubernetes API.
    pub fn uses_pod_labels(&self) -> bool {
        !self.include_pod_label.is_empty() || !self.exclude_pod_label.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
struct Rules {
    exe: Vec<Pattern>,
    cmdline: Vec<Pattern>,
    container: Vec<Pattern>,
    namespace: Vec<Pattern>,
    pod_label: Vec<(String, Pattern)>,
}

impl Rules {
    fn parse(
        exe: &[String],
        cmdline: &[String],
        container: &[String],
        namespace: &[String],
        pod_label: &[String],
    ) -> Result<Self, PatternError> {
        let all = |v: &[String]| {
            v.iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
        };
        let labels = pod_label
            .iter()
            .map(|rule| {
                let (key, value) = rule
                    .split_once('=')
                    .filter(|(k, _)| !k.trim().is_empty())
                    .ok_or_else(|| PatternError::Label(rule.clone()))?;
                Ok((key.trim().to_string(), Pattern::parse(value.trim())?))
            })
            .collect::<Result<Vec<_>, PatternError>>()?;
        Ok(Rules {
            exe: all(exe)?,
            cmdline: all(cmdline)?,
            container: all(container)?,
            namespace: all(namespace)?,
            pod_label: labels,
        })
    }

    fn is_empty(&self) -> bool {
        self.exe.is_empty()
            && self.cmdline.is_empty()
            && self.container.is_empty()
            && self.namespace.is_empty()
            && self.pod_label.is_empty()
    }

    fn matches(&self, p: &ProcessInfo) -> bool {
        let exe = self.exe.iter().any(|r| {
            r.substring(&p.executable_name)
                || p.executable_path.as_deref().is_some_and(|e| r.substring(e))
        });
        let cmdline = || {
            self.cmdline
                .iter()
                .any(|r| p.command_line.as_deref().is_some_and(|c| r.substring(c)))
        };
        let container = || {
            self.container.iter().any(|r| {
                p.container_id.as_deref().is_some_and(|id| r.prefix(id))
                    || p.pod
                        .as_ref()
                        .and_then(|pod| pod.container_name.as_deref())
                        .is_some_and(|n| r.exact(n))
            })
        };
        let namespace = || {
            self.namespace.iter().any(|r| {
                p.pod
                    .as_ref()
                    .and_then(|pod| pod.namespace.as_deref())
                    .is_some_and(|n| r.exact(n))
            })
        };
        let pod_label = || {
            self.pod_label.iter().any(|(key, value)| {
                p.pod_api
                    .as_ref()
                    .and_then(|pod| pod.labels.get(key))
                    .is_some_and(|v| value.exact(v))
            })
        };
        exe || cmdline() || container() || namespace() || pod_label()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Selection {
    include: Rules,
    exclude: Rules,
}

impl Selection {
    pub fn new(rules: &SelectionRules) -> Result<Self, PatternError> {
        Ok(Selection {
            include: Rules::parse(
                &rules.include_exe,
                &rules.include_cmdline,
                &rules.include_container,
                &rules.include_namespace,
                &rules.include_pod_label,
            )?,
            exclude: Rules::parse(
                &rules.exclude_exe,
                &rules.exclude_cmdline,
                &rules.exclude_container,
                &rules.exclude_namespace,
                &rules.exclude_pod_label,
            )?,
        })
    }

    /// Rules that need the pod's labels, hence the Kubernetes API.
    pub fn uses_pod_labels(&self) -> bool {
        !self.include.pod_label.is_empty() || !self.exclude.pod_label.is_empty()
    }

    /// Traces everything: no rule at all.
    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    pub fn traces(&self, p: &ProcessInfo) -> bool {
        (self.include.is_empty() || self.include.matches(p)) && !self.exclude.matches(p)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::processes::{pods::PodInfo, PodMeta};

    fn process(exe: &str, cmd: &str, container: Option<&str>, ns: Option<&str>) -> ProcessInfo {
        let mut p = ProcessInfo::unknown(7);
        p.executable_path = Some(exe.to_string());
        p.executable_name = exe.rsplit('/').next().unwrap_or(exe).to_string();
        p.command_line = Some(cmd.to_string());
        p.container_id = container.map(str::to_string);
        p.pod = ns.map(|ns| {
            Arc::new(PodInfo {
                uid: "u".into(),
                name: Some("pod".into()),
                namespace: Some(ns.into()),
                container_name: Some("agent".into()),
            })
        });
        p
    }

    fn select(f: impl FnOnce(&mut SelectionRules)) -> Selection {
        let mut rules = SelectionRules::default();
        f(&mut rules);
        Selection::new(&rules).unwrap()
    }

    const C: &str = "a9e7000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn everything_by_default() {
        let s = select(|_| {});
        assert!(s.is_everything());
        assert!(s.traces(&process("/usr/bin/python3", "python3 a.py", None, None)));
        assert!(s.traces(&ProcessInfo::unknown(1)));
    }

    #[test]
    fn rule_semantics() {
        let py = process(
            "/usr/bin/python3.11",
            "python3 agent.py --model x",
            Some(C),
            Some("ai"),
        );
        let node = process("/usr/bin/node", "node server.js", None, None);
        let curl = process("/usr/bin/curl", "curl https://h", None, Some("kube-system"));
        type Case = (fn(&mut SelectionRules), [bool; 3]);
        let cases: &[Case] = &[
            // Substring of the path or the name.
            (
                |r| r.include_exe = vec!["python".into()],
                [true, false, false],
            ),
            // A glob matches the whole path or the whole name.
            (
                |r| r.include_exe = vec!["python3*".into()],
                [true, false, false],
            ),
            (
                |r| r.include_exe = vec!["/usr/bin/*".into()],
                [true, true, true],
            ),
            (
                |r| r.include_exe = vec!["pyth?n".into()],
                [false, false, false],
            ),
            (|r| r.exclude_exe = vec!["curl".into()], [true, true, false]),
            (
                |r| r.include_cmdline = vec!["agent.py".into()],
                [true, false, false],
            ),
            (
                |r| r.include_cmdline = vec!["* --model *".into()],
                [true, false, false],
            ),
            (
                |r| r.exclude_cmdline = vec!["server".into()],
                [true, false, true],
            ),
            // Any include of any kind lets a process in.
            (
                |r| {
                    r.include_exe = vec!["node".into()];
                    r.include_cmdline = vec!["curl".into()]
                },
                [false, true, true],
            ),
            // Exclude wins over include.
            (
                |r| {
                    r.include_exe = vec!["/usr/bin/".into()];
                    r.exclude_exe = vec!["node".into()]
                },
                [true, false, true],
            ),
            // Containers: id prefix (the short id), the container name, or a glob.
            (
                |r| r.include_container = vec![C[..12].into()],
                [true, false, false],
            ),
            (
                |r| r.include_container = vec!["agent".into()],
                [true, false, true],
            ),
            (
                |r| r.include_container = vec!["age*".into()],
                [true, false, true],
            ),
            (
                |r| r.include_container = vec![C[1..13].into()],
                [false, false, false],
            ),
            (
                |r| r.exclude_container = vec![C.into()],
                [false, true, true],
            ),
            // Namespaces: exact or glob; a process outside any pod matches no namespace rule.
            (
                |r| r.exclude_namespace = vec!["kube-system".into()],
                [true, true, false],
            ),
            (
                |r| r.exclude_namespace = vec!["kube".into()],
                [true, true, true],
            ),
            (
                |r| r.exclude_namespace = vec!["kube-*".into()],
                [true, true, false],
            ),
            (
                |r| r.include_namespace = vec!["ai".into()],
                [true, false, false],
            ),
        ];
        for (i, (rules, expected)) in cases.iter().enumerate() {
            let s = select(rules);
            let got = [s.traces(&py), s.traces(&node), s.traces(&curl)];
            assert_eq!(&got, expected, "case {i}: {s:?}");
        }
    }

    #[test]
    fn pod_label_rules_match_the_labels_the_api_gave() {
        let labels = |pairs: &[(&str, &str)]| {
            Some(Arc::new(PodMeta {
                labels: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }))
        };
        let mut agent = process("/usr/bin/python3", "python3 a.py", None, Some("ai"));
        agent.pod_api = labels(&[("app.kubernetes.io/name", "research-agent"), ("team", "ml")]);
        let mut batch = process("/usr/bin/python3", "python3 b.py", None, Some("ai"));
        batch.pod_api = labels(&[("app.kubernetes.io/name", "nightly-eval")]);
        // In a pod whose labels the API has not given (yet), and outside any pod.
        let unknown = process("/usr/bin/python3", "python3 c.py", None, Some("ai"));
        let host = process("/usr/bin/python3", "python3 d.py", None, None);
        type Case = (fn(&mut SelectionRules), [bool; 4]);
        let cases: &[Case] = &[
            (
                |r| r.include_pod_label = vec!["team=ml".into()],
                [true, false, false, false],
            ),
            (
                |r| r.include_pod_label = vec!["app.kubernetes.io/name=*-agent".into()],
                [true, false, false, false],
            ),
            (
                |r| r.include_pod_label = vec!["team=m".into()],
                [false, false, false, false],
            ),
            (
                |r| r.exclude_pod_label = vec!["app.kubernetes.io/name=nightly-eval".into()],
                [true, false, true, true],
            ),
            // A key with an empty value is a rule on the empty value, not on the key alone.
            (
                |r| r.include_pod_label = vec!["team=".into()],
                [false, false, false, false],
            ),
        ];
        for (i, (rules, expected)) in cases.iter().enumerate() {
            let s = select(rules);
            let got = [
                s.traces(&agent),
                s.traces(&batch),
                s.traces(&unknown),
                s.traces(&host),
            ];
            assert_eq!(&got, expected, "case {i}: {s:?}");
        }
        for bad in ["team", "=ml", ""] {
            let rules = SelectionRules {
                exclude_pod_label: vec![bad.into()],
                ..Default::default()
            };
            let err = Selection::new(&rules).unwrap_err().to_string();
            assert!(err.contains("KEY=VALUE"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_bad_glob_is_a_clear_error() {
        let rules = SelectionRules {
            include_exe: vec!["[abc".into()],
            ..Default::default()
        };
        let err = Selection::new(&rules).unwrap_err().to_string();
        assert!(err.contains("[abc"), "{err}");
    }
}
