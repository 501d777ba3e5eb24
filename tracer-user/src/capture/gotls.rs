//! Go crypto/tls probes: attaching the `go_tls_*` uprobes (tracer-ebpf/src/gotls.rs) where
//! [`locate::go`](super::locate::go) found `crypto/tls.(*Conn).Write` and `Read`.
//!
//! Go code must never get uretprobes: a uretprobe replaces the return address on the stack, and
//! Go moves goroutine stacks when it grows them, which then crashes the program. So each function
//! gets a plain uprobe on its entry and one on every `RET` instruction in its body.

// Addresses, offsets and sizes here are read from files any local user can write: an overflow
// would be a panic (debug) or a wrong probe address (release), so the lint refuses unchecked
// arithmetic rather than a comment promising there is none.
#![deny(clippy::arithmetic_side_effects)]

use std::path::Path;

use anyhow::Context as _;
use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};

use super::locate::go::{GoTlsHooks, READ_FUNCTION, WRITE_FUNCTION};

const WRITE_ENTRY: &str = "go_tls_write_entry";
const WRITE_RETURN: &str = "go_tls_write_return";
const READ_ENTRY: &str = "go_tls_read_entry";
const READ_RETURN: &str = "go_tls_read_return";

/// The kernel programs `attach` uses: the loader loads them once, before any `attach`.
pub const GO_PROGRAMS: &[&str] = &[WRITE_ENTRY, WRITE_RETURN, READ_ENTRY, READ_RETURN];

/// Attaches the four `go_tls_*` programs (already loaded, see [`GO_PROGRAMS`]) at `hooks` in the
/// file at `path`, for every process that runs it. All or nothing: on an error, what was
/// attached is detached again. Returns the number of probes attached.
pub fn attach(ebpf: &mut Ebpf, path: &Path, hooks: &GoTlsHooks) -> anyhow::Result<usize> {
    let mut attached: Vec<(&'static str, UProbeLinkId)> = Vec::new();
    for (program, _, offset) in attach_plan(hooks) {
        let result = go_uprobe(ebpf, program).and_then(|probe| {
            probe
                .attach(
                    UProbeAttachLocation::AbsoluteOffset(offset),
                    path,
                    UProbeScope::AllProcesses,
                )
                .with_context(|| {
                    format!("attaching {program} at {offset:#x} in {}", path.display())
                })
        });
        match result {
            Ok(link) => attached.push((program, link)),
            Err(e) => {
                for (program, link) in attached.into_iter().rev() {
                    if let Ok(probe) = go_uprobe(ebpf, program) {
                        let _ = probe.detach(link);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(attached.len())
}

fn go_uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut UProbe> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing"))?;
    Ok(program.try_into()?)
}

/// (program, Go function, file offset) for every probe, in attach order. Each function's `RET`
/// probes go in before its entry probe: an entry recorded while its returns were not yet probed
/// would never be answered.
pub fn attach_plan(hooks: &GoTlsHooks) -> Vec<(&'static str, &'static str, u64)> {
    let mut plan = Vec::new();
    for (function, name, entry, ret) in [
        (&hooks.write, WRITE_FUNCTION, WRITE_ENTRY, WRITE_RETURN),
        (&hooks.read, READ_FUNCTION, READ_ENTRY, READ_RETURN),
    ] {
        plan.extend(function.returns.iter().map(|&offset| (ret, name, offset)));
        plan.push((entry, name, function.entry));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::locate::go::GoFunction;

    #[test]
    fn return_probes_go_in_before_their_entry() {
        let hooks = GoTlsHooks {
            write: GoFunction {
                entry: 0x100,
                returns: vec![0x150, 0x180],
            },
            read: GoFunction {
                entry: 0x200,
                returns: vec![0x260],
            },
            go_version: None,
            from_symbols: true,
        };
        let (w, r) = (WRITE_FUNCTION, READ_FUNCTION);
        assert_eq!(
            attach_plan(&hooks),
            vec![
                (WRITE_RETURN, w, 0x150),
                (WRITE_RETURN, w, 0x180),
                (WRITE_ENTRY, w, 0x100),
                (READ_RETURN, r, 0x260),
                (READ_ENTRY, r, 0x200),
            ]
        );
        for (program, _, _) in attach_plan(&hooks) {
            assert!(GO_PROGRAMS.contains(&program));
        }
    }
}
