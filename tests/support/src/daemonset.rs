//! The Helm chart's DaemonSet as podman runs it on one host: the chart rendered by the real Helm,
//! parsed, and its pod translated field by field into `podman create` options (host namespaces,
//! the container's security context, host and ConfigMap mounts, environment, arguments, memory
//! limit), so a test runs the image exactly as the chart tells the kubelet to. A field this
//! translation does not know fails it instead of being dropped: a change to the chart is either
//! translated here or stops the test.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{Map, Value};

use crate::deploy_tools::DeployTools;

/// Renders `chart` with `sets` (`key=value`, as `helm --set`) and returns its objects, parsed.
pub fn render(tools: &DeployTools, chart: &Path, sets: &[String]) -> Result<Vec<Value>> {
    let mut helm = Command::new(&tools.helm);
    helm.args(["template", "agent-tracer"])
        .arg(chart)
        .args(["--namespace", "agent-tracer"]);
    for set in sets {
        helm.arg("--set").arg(set);
    }
    let rendered = output(&mut helm, None)?;
    // The venv kubernetes-validate runs in has PyYAML; this crate has no YAML parser.
    let python = tools
        .kubernetes_validate
        .parent()
        .context("the deploy venv's bin")?
        .join("python");
    let json = output(
        Command::new(python).args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ]),
        Some(rendered.as_bytes()),
    )?;
    Ok(serde_json::from_str(&json)?)
}

fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut pipe = child.stdin.take().context("stdin")?;
    if let Some(bytes) = stdin {
        pipe.write_all(bytes)?;
    }
    drop(pipe);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// An HTTP probe of the container (`httpGet` on a named or numbered port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub path: String,
    pub port: u16,
}

/// The pod's one container, ready for `podman create OPTIONS IMAGE ARGS...`.
#[derive(Debug)]
pub struct PodRun {
    pub options: Vec<String>,
    pub image: String,
    /// After the image's entry point (the container's `args`).
    pub args: Vec<String>,
    /// `capabilities.add`, as written in the chart (`BPF`, not `CAP_BPF`); empty when privileged.
    pub capabilities: Vec<String>,
    pub privileged: bool,
    /// false: the pod has its own network namespace (podman `--network=none`: loopback only).
    pub host_network: bool,
    pub readiness: Option<HttpProbe>,
    pub liveness: Option<HttpProbe>,
    /// `terminationGracePeriodSeconds`: how long a stop waits before killing.
    pub grace_seconds: u64,
    /// `DirectoryOrCreate` host paths that did not exist and were made (to remove afterwards).
    pub created_dirs: Vec<PathBuf>,
}

/// The DaemonSet of `objects` (a rendering of the chart), translated. Its ConfigMap volumes are
/// written under `files` (mounted read-only, as the kubelet does); `node_name` is what
/// `spec.nodeName` gives.
pub fn pod_run(objects: &[Value], node_name: &str, files: &Path) -> Result<PodRun> {
    let daemonsets: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "DaemonSet")
        .collect();
    let [daemonset] = daemonsets[..] else {
        bail!("{} DaemonSets in the rendering", daemonsets.len());
    };
    let pod = object(&daemonset["spec"]["template"]["spec"], "the pod spec")?;
    let mut run = PodRun {
        options: Vec::new(),
        image: String::new(),
        args: Vec::new(),
        capabilities: Vec::new(),
        privileged: false,
        host_network: false,
        readiness: None,
        liveness: None,
        grace_seconds: 30,
        created_dirs: Vec::new(),
    };
    let mut volumes: BTreeMap<String, Volume> = BTreeMap::new();
    let mut containers = None;
    for (key, value) in pod {
        match key.as_str() {
            "hostPID" if value == true => run.options.push("--pid=host".into()),
            "hostIPC" if value == true => run.options.push("--ipc=host".into()),
            "hostNetwork" => run.host_network = value == true,
            "hostPID" | "hostIPC" => {}
            "containers" => containers = Some(value),
            "volumes" => {
                for volume in array(value, "volumes")? {
                    let name = string(&volume["name"], "a volume's name")?;
                    volumes.insert(name.to_string(), Volume::of(volume, objects)?);
                }
            }
            "terminationGracePeriodSeconds" => {
                run.grace_seconds = value.as_u64().context("terminationGracePeriodSeconds")?
            }
            // The token would be a projected volume from the API server, which this host has
            // not: only the chart's default (off) is translated.
            "automountServiceAccountToken" => ensure!(
                value == false,
                "automountServiceAccountToken: true is not translated (no API server here)"
            ),
            // Scheduling and API identity: nothing a container runtime sees on its node.
            "serviceAccountName" | "nodeSelector" | "tolerations" | "affinity"
            | "priorityClassName" | "imagePullSecrets" => {}
            other => bail!("the pod's `{other}` is not translated to podman"),
        }
    }
    run.options.push(if run.host_network {
        "--network=host".into()
    } else {
        "--network=none".into()
    });
    let containers = array(containers.context("no containers")?, "containers")?;
    let [container] = &containers[..] else {
        bail!("{} containers in the pod", containers.len());
    };
    container_options(container, &volumes, node_name, files, &mut run)?;
    Ok(run)
}

enum Volume {
    Host { path: String, kind: String },
    Files(Map<String, Value>),
}

impl Volume {
    fn of(volume: &Value, objects: &[Value]) -> Result<Self> {
        let name = string(&volume["name"], "a volume's name")?;
        let keys: Vec<&str> = object(volume, "a volume")?
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "name")
            .collect();
        match keys[..] {
            ["hostPath"] => Ok(Volume::Host {
                path: string(&volume["hostPath"]["path"], "hostPath.path")?.to_string(),
                kind: volume["hostPath"]["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            }),
            ["configMap"] => {
                let wanted = string(&volume["configMap"]["name"], "configMap.name")?;
                let map = objects
                    .iter()
                    .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == wanted)
                    .with_context(|| format!("volume {name}: no ConfigMap {wanted} rendered"))?;
                ensure!(
                    object(&volume["configMap"], "configMap")?
                        .keys()
                        .all(|k| k == "name"),
                    "volume {name}: only a configMap's name is translated"
                );
                Ok(Volume::Files(object(&map["data"], "data")?.clone()))
            }
            _ => bail!("volume {name}: only hostPath and configMap volumes are translated"),
        }
    }
}

fn container_options(
    container: &Value,
    volumes: &BTreeMap<String, Volume>,
    node_name: &str,
    files: &Path,
    run: &mut PodRun,
) -> Result<()> {
    let mut ports: BTreeMap<String, u16> = BTreeMap::new();
    for port in container["ports"].as_array().into_iter().flatten() {
        let number = port["containerPort"].as_u64().context("containerPort")?;
        if let Some(name) = port["name"].as_str() {
            ports.insert(name.to_string(), u16::try_from(number)?);
        }
    }
    for (key, value) in object(container, "the container")? {
        match key.as_str() {
            "image" => run.image = string(value, "image")?.to_string(),
            "args" => {
                for arg in array(value, "args")? {
                    run.args.push(string(arg, "an argument")?.to_string());
                }
            }
            "command" => {
                run.options
                    .push(format!("--entrypoint={}", serde_json::to_string(value)?));
            }
            "env" => env_options(value, node_name, &mut run.options)?,
            "securityContext" => security_options(value, run)?,
            "volumeMounts" => {
                for mount in array(value, "volumeMounts")? {
                    mount_option(mount, volumes, files, run)?;
                }
            }
            "resources" => resource_options(value, &mut run.options)?,
            "readinessProbe" => run.readiness = Some(http_probe(value, &ports)?),
            "livenessProbe" => run.liveness = Some(http_probe(value, &ports)?),
            // Ports are reached inside the pod's network namespace; the name is podman's own;
            // the image is built locally, never pulled.
            "name" | "ports" | "imagePullPolicy" => {}
            other => bail!("the container's `{other}` is not translated to podman"),
        }
    }
    ensure!(!run.image.is_empty(), "the container has no image");
    Ok(())
}

/// `$(NAME)` references to variables defined before, expanded as the kubelet does (`$$` is a
/// literal `$`; an unknown reference stays as written).
pub fn expand(value: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|a| a.split_once(')'))
            .filter(|(name, _)| defined.contains_key(*name))
        {
            out.push_str(&defined[name]);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn env_options(env: &Value, node_name: &str, options: &mut Vec<String>) -> Result<()> {
    let mut defined = BTreeMap::new();
    for var in array(env, "env")? {
        let name = string(&var["name"], "an env name")?.to_string();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &defined)
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            ensure!(
                field == "spec.nodeName",
                "env {name}: fieldRef {field} is not translated"
            );
            node_name.to_string()
        } else if var["valueFrom"]["secretKeyRef"]["optional"] == true {
            // No Secret on this host: an optional one is left out, as the kubelet does.
            continue;
        } else {
            bail!("env {name}: only values, spec.nodeName and optional Secrets are translated");
        };
        options.push(format!("--env={name}={value}"));
        defined.insert(name, value);
    }
    Ok(())
}

/// Kernel capability numbers (linux/capability.h), to compare a capability set with a list of
/// names.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The bit mask of capability `names` (`BPF` or `CAP_BPF`).
pub fn capability_mask(names: &[String]) -> Result<u64> {
    let mut mask = 0;
    for name in names {
        let bare = name.strip_prefix("CAP_").unwrap_or(name);
        let bit = CAPABILITIES
            .iter()
            .position(|c| *c == bare)
            .with_context(|| format!("unknown capability {name}"))?;
        mask |= 1 << bit;
    }
    Ok(mask)
}

fn security_options(context: &Value, run: &mut PodRun) -> Result<()> {
    let context = object(context, "securityContext")?;
    let dropped_all = context
        .get("capabilities")
        .and_then(|c| c["drop"].as_array())
        .is_some_and(|d| d.iter().any(|c| *c == "ALL"));
    for (key, value) in context {
        match key.as_str() {
            "runAsUser" => run
                .options
                .push(format!("--user={}", value.as_u64().context("runAsUser")?)),
            "readOnlyRootFilesystem" if value == true => {
                // Kubernetes gives a read-only root no writable /tmp or /run; podman would.
                run.options
                    .extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
            }
            "readOnlyRootFilesystem" => {}
            "privileged" => {
                run.privileged = value == true;
                if run.privileged {
                    run.options.push("--privileged".into());
                }
            }
            "capabilities" => {
                // Kubernetes' and podman's default sets differ; with everything dropped first
                // the result is the same list in both.
                ensure!(
                    dropped_all,
                    "capabilities without drop: [ALL] are not translated"
                );
                run.options.push("--cap-drop=all".into());
                for cap in value["add"].as_array().into_iter().flatten() {
                    let cap = string(cap, "a capability")?;
                    capability_mask(&[cap.to_string()])?;
                    run.options.push(format!("--cap-add=CAP_{cap}"));
                    run.capabilities.push(cap.to_string());
                }
            }
            "seccompProfile" => match value["type"].as_str() {
                Some("Unconfined") => run.options.push("--security-opt=seccomp=unconfined".into()),
                // podman's default profile stands for the runtime's default.
                Some("RuntimeDefault") => {}
                other => bail!("seccompProfile {other:?} is not translated"),
            },
            "allowPrivilegeEscalation" if value == false => {
                run.options.push("--security-opt=no-new-privileges".into())
            }
            "allowPrivilegeEscalation" => {}
            other => bail!("securityContext.{other} is not translated to podman"),
        }
    }
    Ok(())
}

fn mount_option(
    mount: &Value,
    volumes: &BTreeMap<String, Volume>,
    files: &Path,
    run: &mut PodRun,
) -> Result<()> {
    let name = string(&mount["name"], "a mount's name")?;
    let target = string(&mount["mountPath"], "mountPath")?;
    for key in object(mount, "a volume mount")?.keys() {
        ensure!(
            ["name", "mountPath", "readOnly"].contains(&key.as_str()),
            "volumeMounts[{name}].{key} is not translated"
        );
    }
    let read_only = mount["readOnly"] == true;
    let source = match volumes
        .get(name)
        .with_context(|| format!("no volume {name}"))?
    {
        Volume::Host { path, kind } => {
            let path = PathBuf::from(path);
            match kind.as_str() {
                "Directory" => ensure!(
                    path.is_dir(),
                    "hostPath {} (type Directory) does not exist on this host",
                    path.display()
                ),
                "DirectoryOrCreate" => {
                    if !path.exists() {
                        std::fs::create_dir_all(&path)
                            .with_context(|| format!("creating {}", path.display()))?;
                        run.created_dirs.push(path.clone());
                    }
                }
                other => bail!("hostPath type {other:?} is not translated"),
            }
            path
        }
        Volume::Files(data) => {
            let dir = files.join(name);
            std::fs::create_dir_all(&dir)?;
            for (file, text) in data {
                std::fs::write(dir.join(file), string(text, "ConfigMap data")?)?;
            }
            // ConfigMap volumes are read-only whatever the mount says.
            return push_mount(run, &dir, target, true);
        }
    };
    push_mount(run, &source, target, read_only)
}

fn push_mount(run: &mut PodRun, source: &Path, target: &str, read_only: bool) -> Result<()> {
    let source = source
        .to_str()
        .context("a mount source that is not UTF-8")?;
    let mode = if read_only { "ro" } else { "rw" };
    run.options
        .push(format!("--volume={source}:{target}:{mode}"));
    Ok(())
}

/// `1Gi`, `512Mi`, `100M`, `1000`: bytes.
pub fn memory_bytes(quantity: &str) -> Result<u64> {
    const UNITS: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (number, unit) = UNITS
        .iter()
        .find_map(|(suffix, unit)| quantity.strip_suffix(*suffix).map(|n| (n, *unit)))
        .unwrap_or((quantity, 1));
    let number: u64 = number
        .parse()
        .with_context(|| format!("memory quantity {quantity:?}"))?;
    number
        .checked_mul(unit)
        .with_context(|| format!("memory quantity {quantity:?} overflows"))
}

/// `500m`, `2`, `1.5`: CPUs.
pub fn cpus(quantity: &str) -> Result<f64> {
    let parsed = match quantity.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => quantity.parse::<f64>(),
    };
    parsed.with_context(|| format!("CPU quantity {quantity:?}"))
}

fn resource_options(resources: &Value, options: &mut Vec<String>) -> Result<()> {
    for key in object(resources, "resources")?.keys() {
        ensure!(
            key == "limits" || key == "requests",
            "resources.{key} is not translated"
        );
    }
    if resources["limits"].is_null() {
        return Ok(());
    }
    // Requests only place the pod; limits are what the runtime enforces.
    for (key, value) in object(&resources["limits"], "limits")? {
        let quantity = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => bail!("limits.{key}: {value}"),
        };
        match key.as_str() {
            "memory" => options.push(format!("--memory={}", memory_bytes(&quantity)?)),
            "cpu" => options.push(format!("--cpus={}", cpus(&quantity)?)),
            other => bail!("limits.{other} is not translated"),
        }
    }
    Ok(())
}

fn http_probe(probe: &Value, ports: &BTreeMap<String, u16>) -> Result<HttpProbe> {
    let get = &probe["httpGet"];
    ensure!(get.is_object(), "only httpGet probes are translated");
    let port = match &get["port"] {
        Value::String(name) => *ports
            .get(name)
            .with_context(|| format!("probe port {name} is not a container port"))?,
        Value::Number(n) => u16::try_from(n.as_u64().context("probe port")?)?,
        other => bail!("probe port {other}"),
    };
    Ok(HttpProbe {
        path: string(&get["path"], "probe path")?.to_string(),
        port,
    })
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .with_context(|| format!("{what} is not an object: {value}"))
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>> {
    value
        .as_array()
        .with_context(|| format!("{what} is not a list: {value}"))
}

fn string<'a>(value: &'a Value, what: &str) -> Result<&'a str> {
    value
        .as_str()
        .with_context(|| format!("{what} is not a string: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_the_kubelets() {
        let defined = BTreeMap::from([("NODE_NAME".to_string(), "node-1".to_string())]);
        assert_eq!(
            expand("k8s.node.name=$(NODE_NAME),a=b", &defined),
            "k8s.node.name=node-1,a=b"
        );
        assert_eq!(
            expand("$$(NODE_NAME) $(OTHER) $", &defined),
            "$(NODE_NAME) $(OTHER) $"
        );
    }

    #[test]
    fn quantities() -> Result<()> {
        assert_eq!(memory_bytes("1Gi")?, 1 << 30);
        assert_eq!(memory_bytes("128Mi")?, 128 << 20);
        assert_eq!(memory_bytes("100M")?, 100_000_000);
        assert_eq!(memory_bytes("4096")?, 4096);
        assert!(memory_bytes("lots").is_err());
        assert_eq!(cpus("500m")?, 0.5);
        assert_eq!(cpus("2")?, 2.0);
        Ok(())
    }

    #[test]
    fn capability_masks() -> Result<()> {
        let chart = [
            "BPF",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_PTRACE",
            "DAC_READ_SEARCH",
        ]
        .map(String::from);
        assert_eq!(capability_mask(&chart)?, 0xc0_0028_0004);
        assert!(capability_mask(&["FLY".to_string()]).is_err());
        Ok(())
    }

    #[test]
    fn an_unknown_field_stops_the_translation() {
        let objects = serde_json::json!([{
            "kind": "DaemonSet",
            "spec": {"template": {"spec": {
                "hostPID": true,
                "dnsPolicy": "ClusterFirstWithHostNet",
                "containers": [{"name": "c", "image": "i"}],
            }}},
        }]);
        let err = pod_run(objects.as_array().unwrap(), "n", Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dnsPolicy"), "{err}");
    }
}
