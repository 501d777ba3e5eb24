//! Operating it, with the real tools: the shipped alerting rules pass `promtool check rules`,
//! and a real Prometheus (Debian's package) scrapes a running tracer while unmodified Python
//! agents on the official SDKs, each in a pod-like cgroup with the kubelet's log tree, make
//! HTTPS calls to the mock model API. Every query of the shipped Grafana dashboard and every
//! rule's expression is then evaluated by that Prometheus and must return series; the loop and
//! error-rate alerts must be active; the cost per namespace Prometheus adds up must equal the
//! sum of the exported spans' `agent_tracer.cost.usd`. The dashboard picture in the README is
//! drawn from this Prometheus' query results (target/e2e-prometheus/dashboard.png).
//!
//! No cluster or container engine runs here: the pods are cgroup v2 directories named as
//! containerd names a pod's container, and the pod log tree the kubelet would write (as in
//! e2e_kubernetes). The model API is the project's mock; the clients, the tracer, its eBPF and
//! Prometheus are real.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tracer_testkit::{
    cgroup::{pod_container_cgroup, Cgroups},
    e2e::{self, clients_dir, free_port, require_root, start_traced, SERIAL},
    mock_openai::{self, MockOpenAi},
    otlp::{as_f64, as_int, as_str, ReceivedSpan},
    plot, prometheus_server, python,
};

const WAIT: Duration = Duration::from_secs(60);

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn files() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/agent-tracer/files")
}

/// A pod-like container: its cgroup, and its directory in the kubelet's log tree.
struct Pod {
    namespace: String,
    scope: PathBuf,
    _cgroups: Cgroups,
}

fn make_pod(logs: &Path, namespace: &str, pod: &str, container: &str, n: u128) -> Result<Pod> {
    let uid = format!("0c5e0b1a-2d3e-4f5a-9b8c-{:012x}", n & 0xffff_ffff_ffff);
    let container_id = format!("{:064x}", 0x0b5_u128 << 100 | n);
    let (cgroups, scope) = pod_container_cgroup(&uid, &container_id)?;
    let dir = logs.join(format!("pods/{namespace}_{pod}_{uid}/{container}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("0.log"), "")?;
    std::fs::create_dir_all(logs.join("containers"))?;
    std::os::unix::fs::symlink(
        dir.join("0.log"),
        logs.join(format!(
            "containers/{pod}_{namespace}_{container}-{container_id}.log"
        )),
    )?;
    Ok(Pod {
        namespace: namespace.to_string(),
        scope,
        _cgroups: cgroups,
    })
}

/// Runs `python script args` inside `pod`'s cgroup; its pid (the first JSON line's `pid`).
async fn run_in_pod(
    pod: &Pod,
    python: &Path,
    server: &MockOpenAi,
    script: &str,
    args: &[String],
) -> Result<u32> {
    let command = format!(
        "echo $$ > {}/cgroup.procs && exec {} {} {}",
        pod.scope.display(),
        python.display(),
        clients_dir().join(script).display(),
        args.join(" ")
    );
    let out = e2e::run({
        let mut c = Command::new("sh");
        c.args(["-c", &command])
            .env("SSL_CERT_FILE", &server.cert_path)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY");
        c
    })
    .await?;
    if !out.status.success() {
        bail!(
            "{script} in {}: {}\n{}",
            pod.namespace,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines = e2e::json_lines(&out);
    let pid = lines
        .first()
        .and_then(|l| l["pid"].as_u64())
        .context("client pid")?;
    Ok(pid as u32)
}

/// The dashboard's panels: (title, expressions).
fn dashboard_queries() -> Result<Vec<(String, Vec<String>)>> {
    let text = std::fs::read_to_string(files().join("grafana-dashboard.json"))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        let exprs: Vec<String> = targets
            .iter()
            .filter_map(|t| t["expr"].as_str().map(str::to_string))
            .collect();
        if !exprs.is_empty() {
            panels.push((
                panel["title"].as_str().unwrap_or_default().to_string(),
                exprs,
            ));
        }
    }
    Ok(panels)
}

/// A rule's expression without its threshold (`… > 20`): the signal the alert compares.
fn without_threshold(expr: &str) -> &str {
    let trimmed = expr.trim();
    match trimmed.rsplit_once('>') {
        Some((signal, limit)) if limit.trim().parse::<f64>().is_ok() => signal.trim(),
        _ => trimmed,
    }
}

/// Every span of process `pid`, its runs' included (`e2e::of_pid` leaves those out).
fn of_process(spans: &[ReceivedSpan], pid: u32) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| as_int(s.resource_attr("process.pid")) == Some(i64::from(pid)))
        .cloned()
        .collect()
}

fn spans_cost_by_namespace(spans: &[ReceivedSpan]) -> BTreeMap<String, f64> {
    let mut cost = BTreeMap::new();
    for s in spans {
        let (Some(ns), Some("chat")) = (
            as_str(s.resource_attr("k8s.namespace.name")),
            as_str(s.attr("gen_ai.operation.name")),
        ) else {
            continue;
        };
        if let Some(usd) = as_f64(s.attr("agent_tracer.cost.usd")) {
            *cost.entry(ns.to_string()).or_insert(0.0) += usd;
        }
    }
    cost
}

#[test]
fn the_shipped_alerting_rules_pass_promtool() -> Result<()> {
    let out = prometheus_server::check_rules(&files().join("prometheus-rules.yaml"))?;
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    // And promtool does fail on a broken rule: the check above can fail.
    let dir = tracer_testkit::target_dir().join("e2e-prometheus");
    std::fs::create_dir_all(&dir)?;
    let broken = dir.join("broken-rules.yaml");
    std::fs::write(
        &broken,
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum by (a (b)\n",
    )?;
    assert!(prometheus_server::check_rules(&broken).is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_every_dashboard_query_and_rule_from_pods_calls() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let nonce = u128::from(std::process::id());
    let (team_a, team_b) = (format!("team-a-{nonce}"), format!("team-b-{nonce}"));

    let logs = std::env::temp_dir().join(format!("e2e-prom-pods-{nonce}"));
    let _ = std::fs::remove_dir_all(&logs);
    let chat = make_pod(
        &logs,
        &team_a,
        "chat-api-6b9f7c5d4-q2w8e",
        "api",
        nonce << 8 | 1,
    )?;
    let coder = make_pod(
        &logs,
        &team_b,
        "coder-7c8d9e6f5-a1b2c",
        "agent",
        nonce << 8 | 2,
    )?;
    let reviewer = make_pod(&logs, &team_b, "reviewer-0", "agent", nonce << 8 | 3)?;

    let prom_addr = format!("127.0.0.1:{}", free_port()?);
    let pods_arg = logs.join("pods").display().to_string();
    let traced = start_traced(
        tracer_bin(),
        "prometheus-e2e",
        &[
            "--pod-logs-dir",
            &pods_arg,
            "--node-name",
            "node-e2e-1",
            "--prometheus-listen",
            &prom_addr,
            // Other tests' tracers and clients run on this machine: only the pods are traced.
            "--include-namespace",
            &team_a,
            "--include-namespace",
            &team_b,
        ],
    )
    .await?;
    let rules = files().join("prometheus-rules.yaml");
    let prom = prometheus_server::start("dashboard", prom_addr.parse()?, &[&rules]).await?;
    prom.wait_for("up{job=\"agent-tracer\"}", WAIT, |r| {
        r.iter().any(|s| s.value == 1.0)
    })
    .await?;

    let base = server.base_url();
    let anthropic_base = base.trim_end_matches("/v1").to_string();
    let calls = |s: &[&str]| {
        std::iter::once(base.clone())
            .chain(s.iter().map(|x| x.to_string()))
            .collect::<Vec<_>>()
    };
    let mut pids = vec![
        run_in_pod(
            &chat,
            &python,
            &server,
            "openai_calls.py",
            &calls(&["plain", "stream", "rate_limited"]),
        )
        .await?,
        run_in_pod(
            &coder,
            &python,
            &server,
            "stuck_agent.py",
            std::slice::from_ref(&base),
        )
        .await?,
        run_in_pod(
            &reviewer,
            &python,
            &server,
            "anthropic_agent.py",
            std::slice::from_ref(&anthropic_base),
        )
        .await?,
    ];
    // Prometheus sees each counter's first value; rates and increases need a second one.
    prom.wait_for(
        &format!("agent_tracer_model_calls_total{{k8s_namespace_name=\"{team_a}\"}}"),
        WAIT,
        |r| r.len() >= 2,
    )
    .await?;
    pids.push(
        run_in_pod(
            &chat,
            &python,
            &server,
            "openai_calls.py",
            &calls(&["plain", "stream", "rate_limited"]),
        )
        .await?,
    );
    pids.push(
        run_in_pod(
            &reviewer,
            &python,
            &server,
            "anthropic_agent.py",
            &[anthropic_base],
        )
        .await?,
    );

    // Every client's calls are exported, and the agents' runs have ended (their processes
    // exited): the chat clients make three calls a round, the agents end with a run span.
    let (chat_pids, agent_pids) = ([pids[0], pids[3]], [pids[1], pids[2], pids[4]]);
    let spans = traced
        .receiver
        .wait_for("every client's calls and runs", WAIT, |s| {
            let op = |pid: u32, name: &str| {
                of_process(s, pid)
                    .iter()
                    .filter(|s| as_str(s.attr("gen_ai.operation.name")) == Some(name))
                    .count()
            };
            chat_pids.iter().all(|p| op(*p, "chat") >= 3)
                && agent_pids.iter().all(|p| op(*p, "invoke_agent") >= 1)
        })
        .await?;
    let spans: Vec<ReceivedSpan> = pids.iter().flat_map(|p| of_process(&spans, *p)).collect();
    // Scraped after the last span: the runs of both namespaces are in.
    prom.wait_for(
        "sum by (k8s_namespace_name) (agent_tracer_runs_total)",
        WAIT,
        |r| {
            let runs = |ns: &str| {
                r.iter()
                    .find(|s| s.labels.get("k8s_namespace_name").map(String::as_str) == Some(ns))
                    .map_or(0.0, |s| s.value)
            };
            runs(&team_b) >= 3.0
        },
    )
    .await?;
    // Two evaluations of the rules after the last scrape.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Cost per namespace, as Prometheus adds it up, is the spans' cost.
    let from_spans = spans_cost_by_namespace(&spans);
    assert!(
        from_spans.get(&team_a).is_some_and(|c| *c > 0.0),
        "gpt-4o-mini calls are priced: {from_spans:?}"
    );
    let summed = prom
        .query("sum by (k8s_namespace_name) (agent_tracer_model_cost_usd_total)")
        .await?;
    for (ns, want) in &from_spans {
        let got = summed
            .iter()
            .find(|s| s.labels.get("k8s_namespace_name") == Some(ns))
            .map(|s| s.value)
            .with_context(|| format!("no cost for {ns} in {summed:?}"))?;
        assert!(
            (got - want).abs() <= want * 1e-9,
            "{ns}: Prometheus {got} USD, spans {want} USD"
        );
    }
    // The models the table lacks are said, once each.
    let log = std::fs::read_to_string(e2e::tracer_log("prometheus-e2e"))?;
    let unpriced = log
        .lines()
        .filter(|l| l.contains("no price for this model") && l.contains("agent-stuck"))
        .count();
    assert_eq!(unpriced, 1, "one warning for agent-stuck:\n{log}");

    // Every dashboard query returns series.
    let panels = dashboard_queries()?;
    assert!(panels.len() >= 18, "{panels:?}");
    let mut results: Vec<(String, String, usize)> = Vec::new();
    for (title, exprs) in &panels {
        for expr in exprs {
            let series = prom.query(expr).await?;
            results.push((title.clone(), expr.clone(), series.len()));
        }
    }
    let empty: Vec<_> = results.iter().filter(|(_, _, n)| *n == 0).collect();
    assert!(
        empty.is_empty(),
        "dashboard queries without series: {empty:#?}"
    );
    // What the attributes say: cost by workload names the namespace and container; runs by
    // outcome; the loop in team-b; the tool error by tool.
    let by_workload = prom
        .query(
            "sum by (k8s_namespace_name, k8s_container_name) (agent_tracer_model_cost_usd_total)",
        )
        .await?;
    assert!(
        by_workload
            .iter()
            .any(|s| s.labels.get("k8s_namespace_name") == Some(&team_a)
                && s.labels.get("k8s_container_name").map(String::as_str) == Some("api")),
        "{by_workload:?}"
    );
    let loops = prom
        .query("sum by (k8s_namespace_name, gen_ai_agent_name) (agent_tracer_run_loops_total)")
        .await?;
    assert!(
        loops
            .iter()
            .any(|s| s.labels.get("k8s_namespace_name") == Some(&team_b)
                && s.labels.get("gen_ai_agent_name").map(String::as_str) == Some("stuck_agent")
                && s.value >= 1.0),
        "{loops:?}"
    );
    let tool_errors = prom
        .query("sum by (gen_ai_tool_name, k8s_namespace_name) (agent_tracer_tool_errors_total)")
        .await?;
    assert!(
        tool_errors
            .iter()
            .any(
                |s| s.labels.get("gen_ai_tool_name").map(String::as_str) == Some("run_task")
                    && s.labels.get("k8s_namespace_name") == Some(&team_b)
                    && s.value >= 2.0
            ),
        "{tool_errors:?}"
    );
    let outcomes = prom
        .query("sum by (agent_tracer_run_outcome) (agent_tracer_runs_total)")
        .await?;
    assert!(
        outcomes.iter().any(
            |s| s.labels.get("agent_tracer_run_outcome").map(String::as_str) == Some("completed")
        ),
        "{outcomes:?}"
    );
    let coverage = prom.query("agent_tracer_coverage_plaintext_bytes").await?;
    for pid in &pids {
        let series = coverage
            .iter()
            .find(|s| s.labels.get("process_pid") == Some(&pid.to_string()))
            .with_context(|| format!("no coverage for pid {pid}: {coverage:?}"))?;
        assert!(series.value > 0.0, "{series:?}");
        assert_eq!(
            series.labels.get("agent_tracer_hook").map(String::as_str),
            Some("symbol"),
            "{series:?}"
        );
        assert!(
            series
                .labels
                .get("tls_stack")
                .is_some_and(|s| s.contains("OpenSsl")),
            "{series:?}"
        );
    }

    // Every rule loaded and evaluates without error; each expression's signal has series, and
    // the alerts this scenario should raise are raised.
    let loaded = prom.rules().await?;
    assert_eq!(loaded.len(), 6, "{loaded:#?}");
    for (name, query, health, error) in &loaded {
        assert_eq!(health, "ok", "{name}: {error}");
        let signal = prom.query(without_threshold(query)).await?;
        assert!(
            !signal.is_empty(),
            "{name}: {} has no series",
            without_threshold(query)
        );
    }
    let alerts = prom.alerts().await?;
    for expected in ["AgentLoopDetected", "ModelCallErrorRateHigh"] {
        assert!(
            alerts.iter().any(|(name, _, labels)| name == expected
                && labels.values().any(|v| *v == team_a || *v == team_b)),
            "{expected} not raised: {alerts:#?}"
        );
    }

    // The README's picture, from this Prometheus' answers.
    let span = Duration::from_secs(120);
    let step = Duration::from_secs(2);
    let mut drawn = Vec::new();
    for (title, expr, kind, unit) in [
        ("Model cost by namespace (USD)", "sum by (k8s_namespace_name) (agent_tracer_model_cost_usd_total)", "bars", "USD"),
        ("Tokens by namespace and type", "sum by (k8s_namespace_name, gen_ai_token_type) (gen_ai_client_token_usage_sum)", "bars", "tokens"),
        ("Model call duration p95 by model", "histogram_quantile(0.95, sum by (le, gen_ai_request_model) (rate(gen_ai_client_operation_duration_seconds_bucket[1m])))", "lines", "s"),
        ("Model calls by error type", "sum by (error_type) (agent_tracer_model_calls_total{error_type!=\"\"})", "bars", "calls"),
        ("Runs by agent and outcome", "sum by (gen_ai_agent_name, agent_tracer_run_outcome) (agent_tracer_runs_total)", "bars", "runs"),
        ("Loops and tool errors by namespace", "sum by (k8s_namespace_name, __name__) ({__name__=~\"agent_tracer_run_loops_total|agent_tracer_tool_errors_total\"})", "bars", "count"),
        ("Coverage: plaintext bytes captured per process", "sum by (process_executable_name, process_pid, agent_tracer_hook) (agent_tracer_coverage_plaintext_bytes)", "bars", "bytes"),
        ("Tracer: ring-buffer and export drops", "sum by (__name__) ({__name__=~\"agent_tracer_kernel_ringbuf_full_records_total|agent_tracer_export_dropped_spans_total\"})", "bars", "count"),
    ] {
        let series = prom.query_range(expr, span, step).await?;
        assert!(!series.is_empty(), "{expr}");
        let series: Vec<serde_json::Value> = series
            .iter()
            .map(|s| {
                let label = s
                    .labels
                    .iter()
                    .map(|(k, v)| if k == "__name__" { v.trim_start_matches("agent_tracer_").to_string() } else { v.clone() })
                    .collect::<Vec<_>>()
                    .join(" ");
                serde_json::json!({"label": label, "points": s.points.iter().filter(|p| p.1.is_finite()).map(|p| [p.0, p.1]).collect::<Vec<_>>()})
            })
            .collect();
        drawn.push(serde_json::json!({"title": title, "kind": kind, "unit": unit, "series": series}));
    }
    let png = tracer_testkit::target_dir().join("e2e-prometheus/dashboard.png");
    plot::draw(
        &serde_json::Value::Array(drawn),
        "agent-tracer metrics in Prometheus (e2e_prometheus: pods in two namespaces)",
        &png,
    )?;
    let head = std::fs::read(&png)?;
    assert!(head.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}
