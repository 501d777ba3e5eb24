//! A kernel program the verifier refused, told so a user can act on it (and send it to us): which
//! program, the kernel's error, and the end of the verifier's log, where it names the instruction
//! it refused and why. The whole log can run to thousands of lines (every instruction on the
//! path that failed); it goes to the debug log, the end of it to the error.

use aya::programs::ProgramError;

/// Lines of the verifier's log an error carries: the refused instruction, the reason, and the
/// state and source lines leading to it.
pub const TAIL_LINES: usize = 20;

/// A verifier refusal found in an error's chain.
#[derive(Debug)]
pub struct Refusal {
    /// What the loader was doing, outermost first (`verifying program NAME`, by the loader's
    /// convention), joined by `: `.
    pub context: String,
    /// The `BPF_PROG_LOAD` syscall's error.
    pub errno: String,
    /// The verifier's log, whole.
    pub log: String,
}

impl Refusal {
    /// The refusal in `error`'s chain, when a program's load is what failed.
    pub fn find(error: &anyhow::Error) -> Option<Self> {
        let mut context = Vec::new();
        for cause in error.chain() {
            if let Some(ProgramError::LoadError {
                io_error,
                verifier_log,
            }) = cause.downcast_ref::<ProgramError>()
            {
                return Some(Refusal {
                    context: context.join(": "),
                    errno: io_error.to_string(),
                    log: verifier_log.to_string(),
                });
            }
            context.push(cause.to_string());
        }
        None
    }

    /// The last `lines` non-empty lines of the log.
    pub fn log_tail(&self, lines: usize) -> Vec<&str> {
        let all: Vec<&str> = self
            .log
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        all[all.len().saturating_sub(lines)..].to_vec()
    }

    /// The refusal in a few lines: the first names the program and the error, the others are the
    /// log's last [`TAIL_LINES`].
    pub fn summary(&self) -> String {
        let total = self.log.lines().filter(|l| !l.trim().is_empty()).count();
        let tail = self.log_tail(TAIL_LINES);
        let mut text = format!(
            "{}: the kernel's verifier refused it ({}); the last {} of its {total} log lines \
             (AGENT_TRACER_LOG=debug logs them all):",
            self.context,
            self.errno,
            tail.len(),
        );
        for line in tail {
            text.push_str("\n  ");
            text.push_str(line);
        }
        text
    }
}

/// `error` as the user's log should show it: a verifier refusal as its [`Refusal::summary`],
/// after logging the whole verifier log at debug level; any other error unchanged.
pub fn for_user(error: anyhow::Error) -> anyhow::Error {
    match Refusal::find(&error) {
        Some(refusal) => {
            tracing::debug!(
                "{}: the verifier's whole log:\n{}",
                refusal.context,
                refusal.log
            );
            anyhow::anyhow!(refusal.summary())
        }
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use anyhow::{Context as _, Result};
    use aya::{programs::BtfTracePoint, Btf, EbpfLoader};

    use super::*;

    /// A real refusal by this kernel's verifier, of a real program of ours: `sys_enter_btf` reads
    /// its tracepoint's second argument, so verified for `sched_process_free`, which has one,
    /// the kernel refuses it. What the user gets names the program and ends with the verifier's
    /// reason.
    #[test]
    fn a_refused_program_is_named_with_the_end_of_the_verifier_log() -> Result<()> {
        tracer_testkit::e2e::require_root();
        let (programs, _) = crate::capture::loader::programs_for_this_kernel();
        let mut ebpf = EbpfLoader::new().load(programs)?;
        let btf = Btf::from_sys_fs()?;
        let program: &mut BtfTracePoint = ebpf
            .program_mut("sys_enter_btf")
            .context("program sys_enter_btf missing")?
            .try_into()?;
        let Err(error) = program
            .load("sched_process_free", &btf)
            .context("verifying program sys_enter_btf")
        else {
            anyhow::bail!("the kernel verified sys_enter_btf for a one-argument tracepoint");
        };

        let refusal = Refusal::find(&error).context("no verifier refusal in the error")?;
        assert_eq!(refusal.context, "verifying program sys_enter_btf");
        assert!(refusal.errno.contains("os error 13"), "{}", refusal.errno);
        let reason = "invalid bpf_context access";
        assert!(refusal.log.contains(reason), "{}", refusal.log);

        let shown = format!("{:#}", for_user(error));
        let mut lines = shown.lines();
        let first = lines.next().unwrap_or_default();
        assert!(
            first.starts_with("verifying program sys_enter_btf: the kernel's verifier refused it"),
            "{shown}"
        );
        assert!(shown.contains(reason), "{shown}");
        assert!(lines.count() <= TAIL_LINES, "{shown}");
        Ok(())
    }

    #[test]
    fn other_errors_pass_unchanged() {
        let error = anyhow::anyhow!("map EVENTS missing").context("loading");
        assert!(Refusal::find(&error).is_none());
        assert_eq!(
            format!("{:#}", for_user(error)),
            "loading: map EVENTS missing"
        );
    }

    #[test]
    fn a_long_log_is_cut_to_its_end() {
        let log: String = (0..500).map(|i| format!("{i}: insn\n\n")).collect();
        let refusal = Refusal {
            context: "verifying program p".into(),
            errno: "Permission denied (os error 13)".into(),
            log,
        };
        let summary = refusal.summary();
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(lines.len(), 1 + TAIL_LINES);
        assert!(
            lines[0].contains("the last 20 of its 500 log lines"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "  480: insn");
        assert_eq!(lines[TAIL_LINES], "  499: insn");
    }
}
