//! The agent stage's settings, with their defaults (those of `agent-tracer run`) and checks.

use std::time::Duration;

use anyhow::{bail, Result};

use super::{cost::PriceTable, AgentNames};
use crate::genai::semconv::ContentPolicy;

/// A run with no model call or tool activity for this long ends as abandoned.
pub const DEFAULT_RUN_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Every run is exported.
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;
/// Cap on each content attribute, in bytes.
pub const DEFAULT_CONTENT_MAX_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub content: ContentPolicy,
    /// A run with no activity for this long is closed as abandoned.
    pub run_idle_timeout_ns: u64,
    pub prices: PriceTable,
    /// Share of runs kept (0..=1); runs with errors are always kept.
    pub sample_ratio: f64,
    pub genai_attributes: bool,
    pub openinference_attributes: bool,
    pub names: AgentNames,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            content: ContentPolicy {
                capture: false,
                max_bytes: DEFAULT_CONTENT_MAX_BYTES,
            },
            run_idle_timeout_ns: DEFAULT_RUN_IDLE_TIMEOUT.as_nanos() as u64,
            prices: PriceTable::builtin(),
            sample_ratio: DEFAULT_SAMPLE_RATIO,
            genai_attributes: true,
            openinference_attributes: true,
            names: AgentNames::default(),
        }
    }
}

impl AgentConfig {
    /// The defaults of `agent-tracer run` with `content` as the content policy.
    pub fn with_content(content: ContentPolicy) -> Self {
        AgentConfig {
            content,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bail!(
                "--sample-ratio must be between 0 and 1, not {}",
                self.sample_ratio
            );
        }
        Ok(())
    }
}
