//! Tokens into money: a price table (the versioned `data/prices.json`, overridable by the user's
//! file) applied to a call's usage. A model the table does not name has no cost: a guess would
//! be a wrong number on a bill. Such a model is warned about once, so a missing cost is not
//! read as a zero one.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use serde::Deserialize;
use tracing::warn;

use crate::genai::Usage;

/// The table shipped with the tracer.
const DEFAULT_PRICES: &str = include_str!("../../data/prices.json");

/// USD per million tokens.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached input read; the input price when the provider has no discount.
    pub cache_read: Option<f64>,
    /// Input written to the cache (Anthropic charges a premium).
    pub cache_write: Option<f64>,
}

#[derive(Deserialize)]
struct PriceFile {
    version: String,
    models: HashMap<String, Price>,
}

/// Unknown models warned about at most: a flood of made-up names cannot grow memory or the log.
const MAX_UNPRICED_WARNINGS: usize = 256;

#[derive(Clone, Debug)]
pub struct PriceTable {
    pub version: String,
    models: HashMap<String, Price>,
    /// Models seen without a price, each warned about once (shared by the table's clones).
    unpriced: Arc<Mutex<HashSet<String>>>,
}

impl PriceTable {
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_PRICES).unwrap_or_else(|_| PriceTable {
            version: "none".into(),
            models: HashMap::new(),
            unpriced: Arc::default(),
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        let file: PriceFile = serde_json::from_str(text).context("price table")?;
        Ok(PriceTable {
            version: file.version,
            models: file.models,
            unpriced: Arc::default(),
        })
    }

    /// The built-in table with the user's entries laid over it.
    pub fn with_overrides(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the price table {}", path.display()))?;
        let user = Self::parse(&text).with_context(|| path.display().to_string())?;
        let mut table = Self::builtin();
        table.version = format!("{}+{}", table.version, user.version);
        table.models.extend(user.models);
        Ok(table)
    }

    /// The price of `model`: its own entry, or that of the model it is a dated snapshot of
    /// (`gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`).
    pub fn price(&self, model: &str) -> Option<Price> {
        let name = normalise(model);
        if let Some(p) = self.models.get(name) {
            return Some(*p);
        }
        let mut rest = name;
        for _ in 0..3 {
            let Some((head, _)) = rest.rsplit_once('-') else {
                break;
            };
            let remainder = &name[head.len() + 1..];
            if is_snapshot_suffix(remainder) || remainder == "latest" {
                if let Some(p) = self.models.get(head) {
                    return Some(*p);
                }
            }
            rest = head;
        }
        None
    }

    /// Cost in USD of one call, when the model is priced and usage was reported. Input tokens
    /// include cached ones (the conventions' definition), output tokens include reasoning.
    /// A model with usage but no price is warned about, once.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        let input = usage.input_tokens?;
        let Some(price) = self.price(model) else {
            self.warn_unpriced(model);
            return None;
        };
        let output = usage.output_tokens.unwrap_or(0);
        let read = usage.cache_read_input_tokens.unwrap_or(0);
        let write = usage.cache_creation_input_tokens.unwrap_or(0);
        let fresh = (input - read - write).max(0);
        let usd = fresh as f64 * price.input
            + read as f64 * price.cache_read.unwrap_or(price.input)
            + write as f64 * price.cache_write.unwrap_or(price.input)
            + output as f64 * price.output;
        Some(usd / 1e6)
    }
}

impl PriceTable {
    /// Logs the first call of each unpriced model; true when this call was the one warned about.
    fn warn_unpriced(&self, model: &str) -> bool {
        let Ok(mut seen) = self.unpriced.lock() else {
            return false;
        };
        if seen.len() >= MAX_UNPRICED_WARNINGS || !seen.insert(model.to_string()) {
            return false;
        }
        warn!(
            model,
            prices = %self.version,
            "no price for this model: its calls get no agent_tracer.cost.usd (cost unknown, not \
             zero); add it with --prices FILE"
        );
        true
    }
}

/// Strips what routes a model rather than names it: a gateway's `vendor/` prefix, Vertex's
/// `models/`, Bedrock's `us.anthropic.` and `-v2:0`.
fn normalise(model: &str) -> &str {
    let mut name = model.rsplit('/').next().unwrap_or(model);
    if let Some((prefix, rest)) = name.split_once('.') {
        if ["us", "eu", "apac", "global"].contains(&prefix) {
            name = rest;
        }
    }
    for vendor in ["anthropic.", "meta.", "amazon.", "mistral.", "cohere."] {
        name = name.strip_prefix(vendor).unwrap_or(name);
    }
    if let Some((head, version)) = name.rsplit_once("-v") {
        let version = version.split(':').next().unwrap_or(version);
        if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit()) {
            name = head;
        }
    }
    name
}

/// `2024-08-06` (as the dash-separated tail `2024-08-06`), `20250929`, `0125`.
fn is_snapshot_suffix(tail: &str) -> bool {
    let parts: Vec<&str> = tail.split('-').collect();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match parts.as_slice() {
        [d] => digits(d) && (d.len() == 8 || d.len() == 4),
        [y, m, d] => digits(y) && y.len() == 4 && digits(m) && digits(d),
        [m, d] => digits(m) && digits(d) && m.len() == 2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: i64, output: i64, read: i64, write: i64) -> Usage {
        Usage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            cache_read_input_tokens: Some(read),
            cache_creation_input_tokens: Some(write),
            reasoning_output_tokens: None,
        }
    }

    #[test]
    fn snapshots_resolve_to_their_model_and_unknown_models_have_no_price() {
        let t = PriceTable::builtin();
        assert!(t.version.len() >= 8, "{}", t.version);
        assert_eq!(t.price("gpt-4o-2024-08-06"), t.price("gpt-4o"));
        assert_eq!(t.price("gpt-4o-mini-2024-07-18"), t.price("gpt-4o-mini"));
        assert_ne!(t.price("gpt-4o-mini"), t.price("gpt-4o"));
        assert_eq!(
            t.price("claude-sonnet-4-5-20250929"),
            t.price("claude-sonnet-4-5")
        );
        assert_eq!(
            t.price("us.anthropic.claude-3-5-haiku-20241022-v1:0"),
            t.price("claude-3-5-haiku")
        );
        assert_eq!(t.price("openai/gpt-4o"), t.price("gpt-4o"));
        assert!(t.price("gpt-4o").is_some());
        // A variant is not its base model.
        assert_eq!(t.price("gpt-4o-audio-preview"), None);
        assert_eq!(t.price("my-finetune"), None);
        assert_eq!(t.price("llama3.2"), None);
    }

    #[test]
    fn cost_counts_cached_and_written_input_apart() {
        let t = PriceTable::parse(
            r#"{"version": "t", "models": {"m": {"input": 3.0, "output": 15.0,
                "cache_read": 0.3, "cache_write": 3.75}}}"#,
        )
        .unwrap();
        // 1000 input of which 200 read and 100 written; 500 output.
        let c = t.cost("m", &usage(1000, 500, 200, 100)).unwrap();
        let want = (700.0 * 3.0 + 200.0 * 0.3 + 100.0 * 3.75 + 500.0 * 15.0) / 1e6;
        assert!((c - want).abs() < 1e-12, "{c} vs {want}");
        assert_eq!(t.cost("other", &usage(1, 1, 0, 0)), None);
        let no_usage = Usage::default();
        assert_eq!(t.cost("m", &no_usage), None);
    }

    #[test]
    fn current_models_of_every_provider_are_priced() {
        let t = PriceTable::builtin();
        assert_eq!(t.version, "2026-12-01");
        for model in [
            "gpt-5-codex",
            "gpt-5.1-codex-max",
            "gpt-5.1-chat-latest",
            "gpt-5.2-2025-12-11",
            "gpt-5.3-codex",
            "gpt-5.4-mini",
            "gpt-5.5",
            "codex-mini-latest",
            "claude-opus-4-8",
            "claude-sonnet-4-6",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-5-20251101",
            "claude-3-7-sonnet-latest",
            "gemini-3.1-pro-preview",
            "gemini-3-flash-preview",
            "gemini-2.5-flash-preview-09-2025",
            "models/gemini-2.5-pro",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "global.anthropic.claude-haiku-4-5-20251001-v1:0",
            "us.amazon.nova-pro-v1:0",
            "meta.llama3-3-70b-instruct-v1:0",
        ] {
            let price = t.price(model);
            assert!(price.is_some(), "{model} has no price");
            assert!(
                price.is_some_and(|p| p.cache_read.is_some()) || model.contains("llama"),
                "{model} has no cached-input price"
            );
        }
        // Anthropic charges for cache writes; its entries say how much.
        for model in ["claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5"] {
            let p = t.price(model).unwrap();
            assert_eq!(p.cache_write, Some(p.input * 1.25), "{model}");
            assert_eq!(p.cache_read, Some(p.input / 10.0), "{model}");
        }
        assert_eq!(t.price("gpt-5-codex"), t.price("gpt-5"));
        assert_ne!(t.price("gpt-4o-2024-05-13"), t.price("gpt-4o"));
    }

    #[test]
    fn an_unpriced_model_is_warned_about_once() {
        let t = PriceTable::parse(r#"{"version": "t", "models": {}}"#).unwrap();
        let clone = t.clone();
        assert!(t.warn_unpriced("mystery-1"));
        assert!(
            !clone.warn_unpriced("mystery-1"),
            "clones share what was said"
        );
        assert!(t.warn_unpriced("mystery-2"));
        assert_eq!(t.cost("mystery-1", &usage(10, 1, 0, 0)), None);
        for i in 0..MAX_UNPRICED_WARNINGS * 2 {
            t.warn_unpriced(&format!("flood-{i}"));
        }
        assert_eq!(t.unpriced.lock().unwrap().len(), MAX_UNPRICED_WARNINGS);
    }

    #[test]
    fn user_file_overrides_and_extends() {
        let dir = std::env::temp_dir().join(format!("prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.json");
        std::fs::write(
            &path,
            r#"{"version": "mine", "models": {"gpt-4o": {"input": 1.0, "output": 2.0},
                "local-llama": {"input": 0.0, "output": 0.0}}}"#,
        )
        .unwrap();
        let t = PriceTable::with_overrides(&path).unwrap();
        assert_eq!(t.price("gpt-4o").unwrap().input, 1.0);
        assert!(t.price("local-llama").is_some());
        assert!(t.price("claude-sonnet-4-5").is_some());
        assert!(t.version.ends_with("+mine"));
        assert!(PriceTable::with_overrides(&dir.join("missing.json")).is_err());
    }
}
