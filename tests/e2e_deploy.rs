//! The deployment files, checked with the real tools: the Helm chart linted and rendered by the
//! real `helm`, every rendered object and every plain manifest in deploy/kubernetes validated
//! against the Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors), the
//! Dockerfile linted by hadolint, and the chart's config file and probes driven through the real
//! tracer: it starts from the rendered config.toml and answers /healthz and /readyz.
//!
//! Not checked here: building and running the image (tests/e2e_image.rs does, with podman) and
//! running the DaemonSet on a cluster (none here).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tracer_testkit::{deploy_tools, e2e::require_root, tracer};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/agent-tracer")
}

fn work_dir(name: &str) -> Result<PathBuf> {
    let dir = tracer_testkit::target_dir().join("e2e-deploy").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `cmd`; its stdout, or an error with everything it printed.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Every value the chart has, set away from its default.
const ALL_VALUES: &str = r#"
image: {repository: registry.example/agent-tracer, tag: "1.2.3", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
otlp:
  endpoint: http://127.0.0.1:4317
  protocol: grpc
  headersSecret: {name: otlp-auth, key: headers}
  resourceAttributes: deployment.environment=prod
captureContent: true
config:
  sample_ratio: 0.25
  agent_name: ["crew.py=research-crew"]
  content_max_bytes: 4096
kubeApi: {enabled: true}
podLogsDir: /var/log/pods
health: {port: 9555}
securityContext:
  privileged: true
  capabilities: [BPF]
  seccompProfile: {type: RuntimeDefault}
mountDebugfs: true
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: "1", memory: 512Mi}}
tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
nodeSelector: {agents: "yes"}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
priorityClassName: system-node-critical
podAnnotations: {team: ml}
podLabels: {tier: observability}
serviceAccount: {create: true, name: tracer}
logLevel: debug
"#;

/// kubernetes-validate over `files`, strictly, for the oldest and newest Kubernetes it knows.
fn validate(tools: &deploy_tools::DeployTools, files: &[PathBuf]) -> Result<()> {
    for version in ["1.25.0", "1.37.0"] {
        output(
            Command::new(&tools.kubernetes_validate)
                .args(["--strict", "-k", version])
                .args(files),
        )
        .with_context(|| format!("Kubernetes {version} schemas"))?;
    }
    Ok(())
}

fn helm_template(tools: &deploy_tools::DeployTools, extra: &[&str]) -> Result<String> {
    output(
        Command::new(&tools.helm)
            .args(["template", "agent-tracer"])
            .arg(chart())
            .args(["--namespace", "observability"])
            .args(extra),
    )
}

#[test]
fn the_chart_renders_to_valid_kubernetes_objects() -> Result<()> {
    let tools = deploy_tools::tools()?;
    let version = output(Command::new(&tools.helm).args(["version", "--short"]))?;
    assert!(version.starts_with(deploy_tools::HELM_VERSION), "{version}");
    let dir = work_dir("chart")?;
    let all_values = dir.join("all-values.yaml");
    std::fs::write(&all_values, ALL_VALUES)?;

    output(
        Command::new(&tools.helm)
            .args(["lint", "--strict"])
            .arg(chart()),
    )?;
    output(
        Command::new(&tools.helm)
            .args(["lint", "--strict", "-f"])
            .arg(&all_values)
            .arg(chart()),
    )?;

    let defaults = helm_template(&tools, &[])?;
    let everything = helm_template(&tools, &["-f", all_values.to_str().context("path")?])?;
    let rendered = [
        (dir.join("defaults.yaml"), &defaults),
        (dir.join("everything.yaml"), &everything),
    ];
    for (path, text) in &rendered {
        std::fs::write(path, text)?;
    }
    validate(
        &tools,
        &rendered.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
    )?;

    // Defaults: explicit capabilities, no API access, the documented mounts and probes.
    for expected in [
        "kind: DaemonSet",
        "hostPID: true",
        "privileged: false",
        "drop: [\"ALL\"]",
        "- PERFMON",
        "- DAC_READ_SEARCH",
        "automountServiceAccountToken: false",
        "path: /sys/kernel/btf",
        "path: /sys/kernel/tracing",
        "path: /var/log/pods",
        "fieldPath: spec.nodeName",
        "path: /healthz",
        "path: /readyz",
        "health_listen = \"0.0.0.0:9465\"",
    ] {
        assert!(
            defaults.contains(expected),
            "defaults lack {expected:?}:\n{defaults}"
        );
    }
    // Least privilege: nothing is pinned, so no bpffs; the runtime's default seccomp profile.
    assert!(
        !defaults.contains("/sys/fs/bpf"),
        "bpffs is mounted though nothing is pinned:\n{defaults}"
    );
    assert!(
        defaults.contains("type: RuntimeDefault") && !defaults.contains("Unconfined"),
        "the default seccomp profile is not RuntimeDefault:\n{defaults}"
    );
    for absent in [
        "kind: ClusterRole",
        "kube_api",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "/sys/kernel/debug",
    ] {
        assert!(!defaults.contains(absent), "defaults have {absent:?}");
    }
    // Every value lands where it should.
    for expected in [
        "kind: ClusterRole",
        "kind: ClusterRoleBinding",
        "verbs: [\"get\", \"list\", \"watch\"]",
        // Least privilege: the owners of pods are read with cached gets, never listed.
        "apiGroups: [\"apps\"]\n    resources: [\"replicasets\"]\n    verbs: [\"get\"]",
        "apiGroups: [\"batch\"]\n    resources: [\"jobs\"]\n    verbs: [\"get\"]",
        "kube_api = true",
        "automountServiceAccountToken: true",
        "privileged: true",
        "path: /sys/kernel/debug",
        "name: otlp-auth",
        "image: \"registry.example/agent-tracer:1.2.3\"",
        "otlp_endpoint = \"http://127.0.0.1:4317\"",
        "capture_content = true",
        "sample_ratio = 0.25",
        "containerPort: 9555",
        "k8s.node.name=$(NODE_NAME),deployment.environment=prod",
        "priorityClassName: system-node-critical",
        "name: tracer",
    ] {
        assert!(
            everything.contains(expected),
            "lacks {expected:?}:\n{everything}"
        );
    }
    assert!(
        !everything.contains("capabilities:"),
        "privileged replaces them"
    );

    // Selection rules become the tracer's include/exclude settings in its config file.
    let selected = helm_template(
        &tools,
        &[
            "--set",
            "selection.include.namespace[0]=agents",
            "--set",
            "selection.include.namespace[1]=ml-*",
            "--set",
            "selection.exclude.exe[0]=*/prometheus",
        ],
    )?;
    let toml: toml::Table = config_toml(&selected)?.parse()?;
    assert_eq!(
        toml.get("include_namespace"),
        Some(&toml::Value::Array(vec!["agents".into(), "ml-*".into()]))
    );
    assert_eq!(
        toml.get("exclude_exe"),
        Some(&toml::Value::Array(vec!["*/prometheus".into()]))
    );
    assert!(toml.get("include_exe").is_none());

    // Pod label rules go the same way, and need the API.
    let label_rule = ["--set", "selection.exclude.pod_label[0]=team=batch"];
    let labelled = helm_template(
        &tools,
        &[&label_rule[..], &["--set", "kubeApi.enabled=true"]].concat(),
    )?;
    let toml: toml::Table = config_toml(&labelled)?.parse()?;
    assert_eq!(
        toml.get("exclude_pod_label"),
        Some(&toml::Value::Array(vec!["team=batch".into()]))
    );
    assert_eq!(toml.get("kube_api"), Some(&toml::Value::Boolean(true)));
    let err = helm_template(&tools, &label_rule).unwrap_err().to_string();
    assert!(err.contains("need kubeApi.enabled"), "{err}");
    Ok(())
}

/// The monitoring objects: off by default; on, the Service and the ServiceMonitor for the
/// endpoint on the pod's address, the PrometheusRule only when the operator's API is served,
/// and the dashboard ConfigMap, their contents the very files in the chart (parsed back).
#[test]
fn the_chart_ships_the_dashboard_the_rules_and_a_service_monitor() -> Result<()> {
    let tools = deploy_tools::tools()?;
    let dir = work_dir("monitoring")?;
    let defaults = helm_template(&tools, &[])?;
    for absent in [
        "kind: Service\n",
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
        "grafana_dashboard",
        "prometheus_listen",
    ] {
        assert!(!defaults.contains(absent), "defaults have {absent:?}");
    }
    // The operator's CRD present: the rules come by default.
    let with_crd = helm_template(
        &tools,
        &["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"],
    )?;
    assert!(with_crd.contains("kind: PrometheusRule"), "{with_crd}");
    let on = [
        "--set",
        "metrics.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kps",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.namespace=grafana",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ];
    let rendered = helm_template(&tools, &on)?;
    let path = dir.join("monitoring.yaml");
    std::fs::write(&path, &rendered)?;
    for expected in [
        "prometheus_listen = \"0.0.0.0:9464\"",
        "containerPort: 9464",
        "clusterIP: None",
        "kind: ServiceMonitor",
        "release: kps",
        "grafana_dashboard: \"1\"",
        "namespace: grafana",
    ] {
        assert!(
            rendered.contains(expected),
            "lacks {expected:?}:\n{rendered}"
        );
    }
    // The objects' payloads are the chart's files, intact.
    // The venv kubernetes-validate runs in has PyYAML.
    let python = tools
        .kubernetes_validate
        .parent()
        .context("venv bin")?
        .join("python");
    output(
        Command::new(python)
            .args(["-c", SAME_AS_FILES])
            .arg(&path)
            .arg(chart().join("files")),
    )
    .context("the rendered rules and dashboard")?;
    // Everything but the operator's kinds validates against the Kubernetes schemas.
    let plain = dir.join("plain.yaml");
    std::fs::write(
        &plain,
        rendered
            .split("\n---")
            .filter(|doc| !doc.contains("monitoring.coreos.com"))
            .collect::<Vec<_>>()
            .join("\n---"),
    )?;
    validate(&tools, &[plain])?;
    let err = helm_template(&tools, &["--set", "metrics.serviceMonitor.enabled=true"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs metrics.enabled"), "{err}");
    Ok(())
}

/// argv[1]: a rendering with the monitoring objects; argv[2]: the chart's files/ directory.
const SAME_AS_FILES: &str = r##"
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
dash = [d for d in docs if d["kind"] == "ConfigMap" and "agent-tracer.json" in d.get("data", {})]
assert len(rules) == 1 and len(dash) == 1, (len(rules), len(dash))
want_rules = yaml.safe_load(open(sys.argv[2] + "/prometheus-rules.yaml"))
assert rules[0]["spec"] == want_rules, "PrometheusRule spec differs from the rules file"
want_dash = json.load(open(sys.argv[2] + "/grafana-dashboard.json"))
assert json.loads(dash[0]["data"]["agent-tracer.json"]) == want_dash, "dashboard differs"
"##;

/// argv[1]: the chart's rendering; the rest: the plain manifests. Exits 1 with the first
/// difference. The plain files differ from the chart on purpose only in what is normalised here.
const COMPARE_WITH_CHART: &str = r##"
import sys, yaml
def objects(paths):
    out = {}
    for path in paths:
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            for meta in [doc["metadata"]] + ([doc["spec"]["template"]["metadata"]] if doc["kind"] == "DaemonSet" else []):
                for key in ("helm.sh/chart", "app.kubernetes.io/managed-by"):
                    meta.get("labels", {}).pop(key, None)
                meta.get("annotations", {}).pop("checksum/config", None)
                if meta.get("annotations") == {}:
                    del meta["annotations"]
            if doc["kind"] == "ConfigMap":
                doc["data"] = {k: chr(10).join(l for l in v.splitlines() if l.strip() and not l.lstrip().startswith("#"))
                               for k, v in doc["data"].items()}
            # Plain manifests leave the token on, and the tracer's kube_api, only with rbac.yaml (a
            # comment says so); the chart ties all three to kubeApi.
            if doc["kind"] == "ConfigMap":
                doc["data"] = {k: chr(10).join(l for l in v.splitlines() if l.strip() != "kube_api = true")
                               for k, v in doc["data"].items()}
            if doc["kind"] == "ServiceAccount":
                doc.pop("automountServiceAccountToken", None)
            if doc["kind"] == "DaemonSet":
                doc["spec"]["template"]["spec"].pop("automountServiceAccountToken", None)
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out
chart = objects(sys.argv[1:2])
plain = objects(sys.argv[2:])
plain.pop(("Namespace", "agent-tracer"), None)
if chart.keys() != plain.keys():
    sys.exit(f"objects differ: chart {sorted(chart)} plain {sorted(plain)}")
for key in chart:
    if chart[key] != plain[key]:
        sys.exit(f"{key} differs: chart {chart[key]} plain {plain[key]}")
"##;

#[test]
fn the_plain_manifests_are_valid_kubernetes_objects() -> Result<()> {
    let tools = deploy_tools::tools()?;
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    assert_eq!(
        names,
        [
            "configmap.yaml",
            "daemonset.yaml",
            "namespace.yaml",
            "rbac.yaml",
            "serviceaccount.yaml"
        ]
    );
    validate(&tools, &files)?;

    // They are the chart's rendering (release and namespace agent-tracer, the headers Secret
    // optional, the API role on) but for Helm's own labels and annotations and comments: compared
    // as parsed YAML so a change to one without the other fails here.
    let rendered = tracer_testkit::target_dir().join("e2e-deploy/plain-vs-chart.yaml");
    std::fs::create_dir_all(rendered.parent().context("parent")?)?;
    std::fs::write(
        &rendered,
        output(
            Command::new(&tools.helm)
                .args(["template", "agent-tracer"])
                .arg(chart())
                .args(["--namespace", "agent-tracer"])
                .args(["--set", "otlp.headersSecret.name=agent-tracer-otlp"])
                .args(["--set", "otlp.headersSecret.optional=true"])
                .args(["--set", "kubeApi.enabled=true"]),
        )?,
    )?;
    let python = tools
        .kubernetes_validate
        .parent()
        .context("venv bin")?
        .join("python");
    output(
        Command::new(python)
            .args(["-c", COMPARE_WITH_CHART])
            .arg(&rendered)
            .args(&files),
    )?;

    let daemonset = std::fs::read_to_string(dir.join("daemonset.yaml"))?;
    for expected in [
        "hostPID: true",
        "privileged: false",
        "path: /readyz",
        "- SYS_PTRACE",
    ] {
        assert!(daemonset.contains(expected), "{expected}");
    }
    Ok(())
}

#[test]
fn the_dockerfile_passes_hadolint() -> Result<()> {
    let tools = deploy_tools::tools()?;
    output(
        Command::new(&tools.hadolint)
            .arg("--no-color")
            .arg(repo().join("deploy/Dockerfile")),
    )?;
    Ok(())
}

const PROBE_VALUES: &str = r#"
captureContent: true
otlp: {endpoint: "http://127.0.0.1:4317"}
kubeApi: {enabled: true}
config:
  sample_ratio: 0.5
  content_max_bytes: 4096
  agent_name: ["crew.py=research-crew"]
  conventions: [genai]
"#;

/// The `config.toml` of the rendered ConfigMap.
fn config_toml(rendered: &str) -> Result<String> {
    let start = rendered
        .find("config.toml: |\n")
        .context("no config.toml in the ConfigMap")?
        + "config.toml: |\n".len();
    Ok(rendered[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn the_tracer_starts_from_the_charts_config_and_answers_the_probes() -> Result<()> {
    require_root();
    let tools = deploy_tools::tools()?;
    // The chart's config with content capture and extra settings of each TOML type; the endpoint
    // stays on this machine (nothing listens: no span is produced in this test anyway). Helm
    // writes YAML numbers as floats (4096.0): the tracer must take them.
    let dir = work_dir("probes")?;
    let values = dir.join("values.yaml");
    std::fs::write(&values, PROBE_VALUES)?;
    let rendered = helm_template(&tools, &["-f", values.to_str().context("path")?])?;
    let config = dir.join("config.toml");
    let toml = config_toml(&rendered)?;
    for expected in [
        "capture_content = true",
        "content_max_bytes = 4096.0",
        "agent_name = [\"crew.py=research-crew\"]",
        "kube_api = true",
    ] {
        assert!(toml.contains(expected), "{toml}");
    }
    std::fs::write(&config, &toml)?;

    // The DaemonSet's arguments, with the probe address moved to loopback (a flag beats the
    // file) and a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let listen = addr.to_string();
    let bin = Path::new(env!("CARGO_BIN_EXE_agent-tracer"));
    // Polls /readyz from the start: the server is up before the programs load (seconds), so it
    // answers 503 first; a 200 must never come before `tracer ready` is logged.
    let log = tracer_testkit::target_dir().join("e2e-logs/deploy-probes.err");
    let _ = std::fs::remove_file(&log);
    let poller = std::thread::spawn(move || -> Result<(bool, bool)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let mut saw_not_ready = false;
        while std::time::Instant::now() < deadline {
            match http_get(addr, "/readyz") {
                Ok((503, body)) => {
                    assert_eq!(body, "not ready\n");
                    saw_not_ready = true;
                }
                Ok((200, _)) => {
                    let logged = std::fs::read_to_string(&log)?.contains("tracer ready");
                    return Ok((saw_not_ready, logged));
                }
                Ok(other) => bail!("/readyz answered {other:?}"),
                Err(_) => {} // not listening yet
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("/readyz never answered 200")
    });
    let running = tracer::start(
        bin,
        "deploy-probes",
        &[
            "run",
            "--config",
            config.to_str().context("path")?,
            "--health-listen",
            &listen,
        ],
        // No cluster here: the API watch (on, from the file) has no configuration and is
        // warned about, which shows the setting reached the tracer.
        &[
            ("NODE_NAME", "node-1"),
            ("KUBECONFIG", "/nonexistent/agent-tracer-kubeconfig"),
        ],
    )?;
    let (saw_not_ready, ready_was_logged) = poller.join().expect("poller panicked")?;
    assert!(saw_not_ready, "/readyz never said 503 while starting");
    assert!(ready_was_logged, "/readyz said 200 before `tracer ready`");
    // `tracer ready` was logged: both probes pass.
    assert_eq!(http_get(addr, "/healthz")?, (200, "ok\n".to_string()));
    assert_eq!(http_get(addr, "/readyz")?, (200, "ready\n".to_string()));
    assert_eq!(http_get(addr, "/nothing")?.0, 404);
    let stopped = running.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // The file's settings were applied.
    assert!(
        stopped.stderr.contains("capture_content=true"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("127.0.0.1:4317"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped
            .stderr
            .contains("watching this node's pods in the Kubernetes API")
            && stopped
                .stderr
                .contains("--kube-api: no usable Kubernetes API configuration"),
        "{}",
        stopped.stderr
    );
    Ok(())
}

/// The unit's hardening, as systemd itself rates it, offline (no systemd runs as PID 1 here, so
/// the unit is assessed and verified, not started).
#[test]
fn the_systemd_unit_is_valid_and_hardened() -> Result<()> {
    let unit = repo().join("deploy/systemd/agent-tracer.service");
    // verify: every directive known and well-formed. The binary is not installed here, which is
    // the one complaint expected.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .context("running systemd-analyze (installed by `cargo xtask setup`)")?;
    let complaints: Vec<String> = String::from_utf8_lossy(&verify.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&verify.stdout).lines())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("/usr/local/bin/agent-tracer is not executable"))
        .map(str::to_string)
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
    // security: the overall exposure, in tenths (4.7 today; 7.5 before the hardening). Fails
    // when a change raises it past 5.0.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=50", "--no-pager"])
        .arg(&unit)
        .output()?;
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(
        security.status.success(),
        "exposure above 5.0:\n{report}{}",
        String::from_utf8_lossy(&security.stderr)
    );
    assert!(report.contains("Overall exposure level"), "{report}");
    Ok(())
}
