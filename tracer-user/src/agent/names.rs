//! The agent's name on its runs: a user's rule (`--agent-name PATTERN=NAME`, matched against
//! the command line) or what the command line says (see `lineage::agent_name`).

use anyhow::{bail, Result};

use super::lineage::agent_name;

#[derive(Clone, Debug, Default)]
pub struct AgentNames {
    /// (substring of the command line, name), first match wins.
    rules: Vec<(String, String)>,
}

impl AgentNames {
    pub fn parse(rules: &[String]) -> Result<Self> {
        let mut parsed = Vec::new();
        for rule in rules {
            match rule.rsplit_once('=') {
                Some((pattern, name)) if !pattern.is_empty() && !name.is_empty() => {
                    parsed.push((pattern.to_string(), name.to_string()))
                }
                _ => bail!("agent name rule {rule:?} is not PATTERN=NAME"),
            }
        }
        Ok(AgentNames { rules: parsed })
    }

    pub fn name_of(&self, args: &[String], executable: &str) -> String {
        let command_line = args.join(" ");
        self.rules
            .iter()
            .find(|(pattern, _)| {
                command_line.contains(pattern.as_str()) || executable.contains(pattern.as_str())
            })
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| agent_name(args, executable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_win_over_the_command_line() {
        let names =
            AgentNames::parse(&["codex exec=Codex".into(), "claude=Claude Code".into()]).unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names.name_of(&args(&["codex", "exec", "fix"]), "/bin/codex"),
            "Codex"
        );
        assert_eq!(names.name_of(&[], "/opt/claude/bin/claude"), "Claude Code");
        assert_eq!(
            names.name_of(&args(&["python3", "bot.py"]), "/usr/bin/python3"),
            "bot"
        );
        assert!(AgentNames::parse(&["nothing".into()]).is_err());
        assert!(AgentNames::parse(&["=x".into()]).is_err());
    }
}
