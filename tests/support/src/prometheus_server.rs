//! A real Prometheus (Debian's `prometheus` package, installed by `cargo xtask setup`) for the
//! tests: it scrapes a tracer's endpoint every second, evaluates alerting rules, and answers
//! PromQL over its HTTP API on 127.0.0.1. Its data lives in a directory under target/, emptied
//! at start.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::e2e::{free_port, start_listening, ChildServer};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

pub struct PrometheusServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    client: reqwest::Client,
    _server: ChildServer,
}

/// One series of an instant query.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range query: (unix seconds, value) points.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// Starts Prometheus as `name`, scraping `target`'s /metrics every second and evaluating
/// `rule_files` every second.
pub async fn start(
    name: &str,
    target: SocketAddr,
    rule_files: &[&Path],
) -> Result<PrometheusServer> {
    let dir = crate::target_dir().join("e2e-prometheus").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rules: Vec<String> = rule_files
        .iter()
        .map(|p| format!("  - {:?}", p.display().to_string()))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\nscrape_configs:\n  - job_name: agent-tracer\n    static_configs:\n      - targets: [\"{target}\"]\n",
        if rules.is_empty() { "  []".to_string() } else { rules.join("\n") }
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let mut cmd = Command::new(PROMETHEUS);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log);
    let server = start_listening(cmd, port)
        .await
        .with_context(|| format!("starting {PROMETHEUS} (log: {})", dir.display()))?;
    Ok(PrometheusServer {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
        client: reqwest::Client::builder().no_proxy().build()?,
        _server: server,
    })
}

fn labels(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn number(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

impl PrometheusServer {
    async fn api(&self, path: &str, params: &[(&str, String)]) -> Result<Value> {
        let url = reqwest::Url::parse_with_params(&format!("http://{}{path}", self.addr), params)?;
        let bytes = self
            .client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?
            .bytes()
            .await?;
        let body: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{path}: {}", String::from_utf8_lossy(&bytes)))?;
        if body["status"] != "success" {
            bail!("{path} {params:?}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// An instant query now; a PromQL error is an error.
    pub async fn query(&self, query: &str) -> Result<Vec<Series>> {
        let data = self
            .api("/api/v1/query", &[("query", query.to_string())])
            .await?;
        Ok(data["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| Series {
                        labels: labels(&s["metric"]),
                        value: number(&s["value"][1]),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A range query over the last `span`, a point every `step`.
    pub async fn query_range(
        &self,
        query: &str,
        span: Duration,
        step: Duration,
    ) -> Result<Vec<RangeSeries>> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query", query.to_string()),
                    ("start", format!("{:.3}", end - span.as_secs_f64())),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{}", step.as_secs_f64())),
                ],
            )
            .await?;
        Ok(data["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| RangeSeries {
                        labels: labels(&s["metric"]),
                        points: s["values"]
                            .as_array()
                            .map(|v| {
                                v.iter()
                                    .map(|p| (p[0].as_f64().unwrap_or_default(), number(&p[1])))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Queries until `done` holds for the result, or `wait` passes (then the last result is an
    /// error naming the query).
    pub async fn wait_for(
        &self,
        query: &str,
        wait: Duration,
        done: impl Fn(&[Series]) -> bool,
    ) -> Result<Vec<Series>> {
        let deadline = Instant::now() + crate::patience(wait);
        loop {
            let result = self.query(query).await?;
            if done(&result) {
                return Ok(result);
            }
            if Instant::now() > deadline {
                bail!("{query}: still {result:?} after {wait:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every loaded rule: (alert name, expression, health, last error).
    pub async fn rules(&self) -> Result<Vec<(String, String, String, String)>> {
        let data = self.api("/api/v1/rules", &[]).await?;
        let mut out = Vec::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let s = |k: &str| rule[k].as_str().unwrap_or_default().to_string();
                out.push((s("name"), s("query"), s("health"), s("lastError")));
            }
        }
        Ok(out)
    }

    /// Active alerts: (alert name, state `pending` or `firing`, labels).
    pub async fn alerts(&self) -> Result<Vec<(String, String, BTreeMap<String, String>)>> {
        let data = self.api("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let l = labels(&a["labels"]);
                (
                    l.get("alertname").cloned().unwrap_or_default(),
                    a["state"].as_str().unwrap_or_default().to_string(),
                    l,
                )
            })
            .collect())
    }
}

/// `promtool check rules FILE`: its output, or an error with it.
pub fn check_rules(file: &Path) -> Result<String> {
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .with_context(|| {
            format!("running {PROMTOOL} (cargo xtask setup installs Debian's prometheus)")
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("promtool check rules {}: {text}", file.display());
    }
    Ok(text)
}
