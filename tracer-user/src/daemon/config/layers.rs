//! The layers under the command line: each `run` flag's `AGENT_TRACER_<FLAG>` variable and its
//! setting in the TOML config file, laid under the flags generically, by flag name, from clap's
//! own description of `run`.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{parser::ValueSource, Args, FromArgMatches as _};

use super::RunArgs;

/// Read by `run` when `--config` (or `AGENT_TRACER_CONFIG`) names no file and this one exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/agent-tracer/config.toml";

/// Prefix of the environment variable of each `run` flag: `--capture-content` is
/// `AGENT_TRACER_CAPTURE_CONTENT`.
pub const ENV_PREFIX: &str = "AGENT_TRACER_";
impl RunArgs {
    /// Parses `run`'s arguments (`argv[0]` is the subcommand's name) with the environment
    /// variables and the config file laid under them. `env` looks up a variable (a function so
    /// tests need not touch the real environment); `default_file` is read when it exists and
    /// neither `--config` nor `AGENT_TRACER_CONFIG` names a file.
    ///
    /// How: clap parses the command line once and says which flags it was given
    /// (`ArgMatches::value_source`); every other flag's variable or file value is appended as
    /// `--flag=value` and the whole is parsed again, so values from the environment and the file
    /// go through the same parsers and checks as typed ones.
    pub fn parse_layered(
        argv: impl IntoIterator<Item = OsString>,
        env: impl Fn(&str) -> Option<String>,
        default_file: Option<&Path>,
    ) -> Result<Self> {
        let argv: Vec<OsString> = argv.into_iter().collect();
        let cmd = Self::augment_args(clap::Command::new("agent-tracer run"));
        let matches = cmd
            .clone()
            .try_get_matches_from(&argv)
            .map_err(|e| anyhow!("{}", e.render()))?;
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);

        let file = if given("config") {
            matches.get_one::<PathBuf>("config").cloned()
        } else if let Some(path) = env(&env_name("config")) {
            Some(PathBuf::from(path))
        } else {
            default_file.filter(|p| p.exists()).map(Path::to_path_buf)
        };
        let table = match &file {
            Some(path) => read_config_file(path)?,
            None => toml::Table::new(),
        };

        let mut extra: Vec<OsString> = Vec::new();
        let mut from_file = BTreeSet::new();
        let mut known_keys = BTreeSet::new();
        // (flag, where its value came from), to name the source of a value clap rejects.
        let mut sources: Vec<(String, String)> = Vec::new();
        for arg in cmd.get_arguments() {
            let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
                continue;
            };
            if long == "config" || long == "help" {
                continue;
            }
            let keys = [long.to_string(), long.replace('-', "_")];
            known_keys.extend(keys.iter().cloned());
            if given(id) {
                continue;
            }
            let takes_values = arg.get_action().takes_values();
            let variable = env_name(long);
            if let Some(value) = env(&variable) {
                extra.extend(
                    env_args(long, takes_values, &value)
                        .with_context(|| format!("environment variable {variable}"))?,
                );
                sources.push((
                    format!("--{long}"),
                    format!("environment variable {variable}"),
                ));
            } else if let Some((key, value)) = keys
                .iter()
                .find_map(|k| table.get(k).map(|v| (k.as_str(), v)))
            {
                let path = file.as_deref().unwrap_or(Path::new("config file"));
                extra.extend(
                    file_args(long, takes_values, value)
                        .with_context(|| format!("{}: setting `{key}`", path.display()))?,
                );
                from_file.insert(id.to_string());
                sources.push((
                    format!("--{long}"),
                    format!("{}: setting `{key}`", path.display()),
                ));
            }
        }
        if let Some(unknown) = table.keys().find(|k| !known_keys.contains(*k)) {
            let path = file.as_deref().unwrap_or(Path::new("config file"));
            bail!(
                "{}: unknown setting `{unknown}` (settings are the long names of \
                 `agent-tracer run`'s flags, see --help)",
                path.display()
            );
        }

        let matches = cmd
            .try_get_matches_from(argv.into_iter().chain(extra))
            .map_err(|e| {
                let flag = e
                    .get(clap::error::ContextKind::InvalidArg)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let source = sources
                    .iter()
                    .find(|(long, _)| flag.split_whitespace().next() == Some(long.as_str()))
                    .map(|(_, source)| source.as_str())
                    .unwrap_or("an AGENT_TRACER_* environment variable or the config file");
                anyhow!("{}", e.render()).context(format!("invalid value from {source}"))
            })?;
        let mut args = Self::from_arg_matches(&matches).map_err(|e| anyhow!("{}", e.render()))?;
        args.from_file = from_file;
        Ok(args)
    }

    /// The flag's value unless it came from the config file (which ranks below OTEL_* variables).
    pub(super) fn above_env(&self, id: &str, value: &Option<String>) -> Option<String> {
        value.clone().filter(|_| !self.from_file.contains(id))
    }

    /// The flag's value only if it came from the config file.
    pub(super) fn in_file(&self, id: &str, value: &Option<String>) -> Option<String> {
        value.clone().filter(|_| self.from_file.contains(id))
    }
}

fn env_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

fn read_config_file(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))
}

fn env_args(long: &str, takes_values: bool, value: &str) -> Result<Vec<OsString>> {
    if takes_values {
        return Ok(vec![format!("--{long}={value}").into()]);
    }
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(vec![format!("--{long}").into()]),
        "" | "0" | "false" | "no" | "off" => Ok(Vec::new()),
        other => bail!("expected true or false, not `{other}`"),
    }
}

fn file_args(long: &str, takes_values: bool, value: &toml::Value) -> Result<Vec<OsString>> {
    use toml::Value as V;
    if !takes_values {
        return match value {
            V::Boolean(true) => Ok(vec![format!("--{long}").into()]),
            V::Boolean(false) => Ok(Vec::new()),
            other => bail!("expected true or false, not {}", other.type_str()),
        };
    }
    let scalar = |v: &V| -> Result<String> {
        Ok(match v {
            V::String(s) => s.clone(),
            V::Integer(i) => i.to_string(),
            V::Float(f) => f.to_string(),
            V::Boolean(b) => b.to_string(),
            other => bail!("expected a string or a number, not {}", other.type_str()),
        })
    };
    let values = match value {
        V::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>>>()?,
        v => vec![scalar(v)?],
    };
    Ok(values
        .into_iter()
        .map(|v| format!("--{long}={v}").into())
        .collect())
}
