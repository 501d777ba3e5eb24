//! Real coding agents from the npm registry, at the versions pinned in `real-agents.txt`
//! (beside this crate's Cargo.toml), installed once into the user's cache (outside target/, so
//! `cargo clean` keeps them: Claude Code alone is 400 MB) and reused:
//! `${XDG_CACHE_HOME:-$HOME/.cache}/agent-tracer-tests/agents/<package>@<version>`.
//! `cargo xtask setup` installs them ahead; a test installs what is missing itself, so a test
//! run alone works.
//!
//! With `AGENT_TRACER_LATEST_AGENTS=1` (what `cargo xtask test --latest-agents` sets) each
//! agent is installed at its newest release instead, to find out early what a new release
//! breaks.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The environment variable that selects the newest releases instead of the pinned ones.
pub const LATEST_ENV: &str = "AGENT_TRACER_LATEST_AGENTS";

/// The pinned list, shared with `cargo xtask setup`.
const PINNED: &str = include_str!("../real-agents.txt");

/// One agent of the list: the npm package, its pinned version, and the file that runs
/// (relative to `node_modules/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealAgent {
    pub name: String,
    pub package: String,
    pub version: String,
    pub executable: PathBuf,
}

/// Every agent of `real-agents.txt`.
pub fn pinned() -> Vec<RealAgent> {
    parse(PINNED)
}

fn parse(text: &str) -> Vec<RealAgent> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            Some(RealAgent {
                name: fields.next()?.to_string(),
                package: fields.next()?.to_string(),
                version: fields.next()?.to_string(),
                executable: PathBuf::from(fields.next()?),
            })
        })
        .collect()
}

/// Whether the newest releases were asked for.
pub fn latest_requested() -> bool {
    std::env::var(LATEST_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Where installed agents live.
pub fn cache_root() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    cache.join("agent-tracer-tests").join("agents")
}

/// An installed agent: the file that runs, and the version it is.
#[derive(Clone, Debug)]
pub struct Installed {
    pub executable: PathBuf,
    pub version: String,
}

/// The agent called `name` in `real-agents.txt`, installed (at its newest release when
/// [`latest_requested`]) if it is not yet.
pub fn install(name: &str) -> Result<Installed> {
    let agent = pinned()
        .into_iter()
        .find(|a| a.name == name)
        .with_context(|| format!("no agent {name:?} in real-agents.txt"))?;
    install_agent(&agent, latest_requested())
}

/// `agent` installed at its pinned version, or at its newest one when `latest`.
pub fn install_agent(agent: &RealAgent, latest: bool) -> Result<Installed> {
    let version = if latest {
        crate::npm::latest_version(&agent.package)?
    } else {
        agent.version.clone()
    };
    let root = cache_root();
    let dir = root.join(format!("{}@{version}", agent.package));
    let executable = crate::npm::install_package(
        &root,
        ".lock",
        &dir,
        &agent.package,
        &version,
        &agent.executable,
    )?;
    Ok(Installed {
        executable,
        version,
    })
}

/// Claude Code's native Linux build: one Bun executable with BoringSSL linked in.
pub fn claude_code() -> Result<Installed> {
    install("claude-code")
}

/// Gemini CLI's bundle, run with `node`.
pub fn gemini_cli() -> Result<Installed> {
    install("gemini-cli")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_list_names_each_agent_once_with_a_version() {
        let agents = pinned();
        let mut names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        assert!(names.contains(&"claude-code") && names.contains(&"gemini-cli"));
        names.dedup();
        assert_eq!(names.len(), agents.len());
        assert!(agents
            .iter()
            .all(|a| a.version.split('.').count() == 3 && a.package.starts_with('@')));
    }

    #[test]
    fn comments_and_short_lines_are_skipped() {
        let agents = parse("# a comment\n\nx @s/x 1.2.3 @s/x/bin\nbroken line\n");
        assert_eq!(
            agents,
            vec![RealAgent {
                name: "x".into(),
                package: "@s/x".into(),
                version: "1.2.3".into(),
                executable: "@s/x/bin".into(),
            }]
        );
    }
}
