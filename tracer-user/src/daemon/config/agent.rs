//! The agent stage's flags: how calls become agent runs.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::{
    agent::{
        cost::PriceTable, AgentConfig, AgentNames, DEFAULT_RUN_IDLE_TIMEOUT, DEFAULT_SAMPLE_RATIO,
    },
    genai::semconv::ContentPolicy,
};

/// How calls become agent runs.
#[derive(Clone, Debug, Args)]
pub struct AgentArgs {
    /// A run with no model call or tool activity for this long ends as abandoned.
    #[arg(long, default_value_t = DEFAULT_RUN_IDLE_TIMEOUT.as_secs())]
    pub run_idle_timeout_secs: u64,

    /// Price table (JSON, the shape of tracer-user/data/prices.json) laid over the built-in one.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<std::path::PathBuf>,

    /// Share of agent runs exported, decided when a run starts (0.0 to 1.0). Runs with an error
    /// are always exported.
    #[arg(long, default_value_t = DEFAULT_SAMPLE_RATIO)]
    pub sample_ratio: f64,

    /// Attribute conventions on spans: genai (OpenTelemetry GenAI), openinference (Arize
    /// Phoenix), or both.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Convention::Genai, Convention::Openinference])]
    pub conventions: Vec<Convention>,

    /// Names agents by their command line: PATTERN=NAME (the first rule whose PATTERN occurs
    /// in the command line wins); repeatable. Default: the script an interpreter runs, else
    /// the executable's name.
    #[arg(long = "agent-name", value_name = "PATTERN=NAME")]
    pub agent_names: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Convention {
    Genai,
    Openinference,
}

impl AgentArgs {
    /// The agent's settings with `content` (the run's `--capture-content` and
    /// `--content-max-bytes`), checked by `AgentConfig::validate` with the rest.
    pub(super) fn resolve(&self, content: ContentPolicy) -> Result<AgentConfig> {
        Ok(AgentConfig {
            content,
            run_idle_timeout_ns: Duration::from_secs(self.run_idle_timeout_secs).as_nanos() as u64,
            prices: match &self.prices {
                Some(path) => PriceTable::with_overrides(path)?,
                None => PriceTable::builtin(),
            },
            sample_ratio: self.sample_ratio,
            genai_attributes: self.conventions.contains(&Convention::Genai),
            openinference_attributes: self.conventions.contains(&Convention::Openinference),
            names: AgentNames::parse(&self.agent_names)?,
        })
    }
}
