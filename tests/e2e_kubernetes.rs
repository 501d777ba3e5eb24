//! Kubernetes attribution and process selection, end to end with real eBPF and a real HTTPS
//! client. No container engine or cluster can run here, so the test builds what a node would
//! show: a cgroup v2 directory named as containerd's systemd driver names a pod's container
//! (`kubepods.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`), a PID
//! namespace made with `unshare`, and the kubelet's pod log tree in a temporary directory handed
//! to the tracer with `--pod-logs-dir`. The client itself is real: its process, cgroup and
//! namespace are what the tracer reads from /proc.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tracer_testkit::{
    cgroup::pod_container_cgroup,
    e2e::{
        self, clients_dir, of_pid, recorded, require_root, start_traced, start_traced_with_env,
        SERIAL,
    },
    kube_api,
    mock_openai::{self, MockOpenAi},
    otlp::{as_int, as_str},
};

const WAIT: Duration = Duration::from_secs(30);

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

/// A directory tree removed when dropped.
struct TempTree(PathBuf);

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_container_in_its_pid_namespace_is_named_from_cgroup_and_pod_logs() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let nonce = std::process::id();
    let uid = format!("7b0f3c2a-1d4e-4f5a-9b8c-{nonce:012x}");
    let container_id = format!("{:064x}", 0xc0de_u128 << 64 | nonce as u128);
    let (namespace, pod, container) = ("agents", "research-agent-5d78c9869d-x7k2p", "agent");

    // The cgroups containerd's systemd driver would make for a burstable pod's container.
    let (cgroups, scope) = pod_container_cgroup(&uid, &container_id)?;

    // The kubelet's log tree: a directory per container, and the `containers` symlinks that
    // name the container id. A second container (a sidecar) makes the single-container
    // fallback inapplicable: the name can only come from the id.
    let logs = TempTree(std::env::temp_dir().join(format!("e2e-pod-logs-{nonce}")));
    let _ = std::fs::remove_dir_all(&logs.0);
    let pod_dir = logs.0.join(format!("pods/{namespace}_{pod}_{uid}"));
    for c in [container, "sidecar"] {
        std::fs::create_dir_all(pod_dir.join(c))?;
        std::fs::write(pod_dir.join(c).join("0.log"), "")?;
    }
    std::fs::create_dir_all(logs.0.join("containers"))?;
    std::os::unix::fs::symlink(
        pod_dir.join(container).join("0.log"),
        logs.0.join(format!(
            "containers/{pod}_{namespace}_{container}-{container_id}.log"
        )),
    )?;
    let sidecar_id = format!("{:064x}", 0x51de_u128 << 64 | nonce as u128);
    std::os::unix::fs::symlink(
        pod_dir.join("sidecar").join("0.log"),
        logs.0.join(format!(
            "containers/{pod}_{namespace}_sidecar-{sidecar_id}.log"
        )),
    )?;

    let pods_arg = logs.0.join("pods").display().to_string();
    let traced = start_traced(
        tracer_bin(),
        "kubernetes-pod",
        &["--pod-logs-dir", &pods_arg, "--node-name", "node-e2e-1"],
    )
    .await?;
    // The shell joins the container's cgroup, then unshare starts the client as PID 1 of a new
    // PID namespace, as a container's entrypoint would be.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare -p -f --mount-proc python3 {} {}/chat/completions",
        scope.display(),
        clients_dir().join("http_post.py").display(),
        server.base_url()
    );
    let out = e2e::run({
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .env("SSL_CERT_FILE", &server.cert_path);
        c
    })
    .await?;
    let lines = e2e::json_lines(&out);
    assert_eq!(lines[0]["pid"].as_i64(), Some(1), "PID 1 in its namespace");
    assert_eq!(lines[0]["status"].as_i64(), Some(200));
    let spans = traced
        .receiver
        .wait_for("the pod's call", WAIT, |s| {
            s.iter()
                .any(|s| as_str(s.resource_attr("container.id")) == Some(container_id.as_str()))
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(cgroups);

    let span = spans
        .iter()
        .find(|s| as_str(s.resource_attr("container.id")) == Some(container_id.as_str()))
        .context("span")?;
    let r = |k: &str| as_str(span.resource_attr(k)).map(str::to_string);
    assert_eq!(r("container.runtime").as_deref(), Some("containerd"));
    assert_eq!(r("k8s.pod.uid").as_deref(), Some(uid.as_str()));
    assert_eq!(r("k8s.pod.name").as_deref(), Some(pod));
    assert_eq!(r("k8s.namespace.name").as_deref(), Some(namespace));
    assert_eq!(r("k8s.container.name").as_deref(), Some(container));
    assert_eq!(r("k8s.node.name").as_deref(), Some("node-e2e-1"));
    let host_pid = as_int(span.resource_attr("process.pid")).context("process.pid")?;
    assert!(host_pid > 1, "process.pid is the host's view: {host_pid}");
    assert_eq!(as_int(span.resource_attr("process.vpid")), Some(1));
    assert_eq!(
        as_int(span.resource_attr("agent_tracer.process.namespace_pid")),
        Some(1)
    );
    assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
    Ok(())
}

/// A client that is gone before the tracer handles its exec still names its container and
/// pod: the kernel reads the process's cgroup id at exec and the tracer turns the id into the
/// cgroup's path, where /proc/PID/cgroup no longer exists. The tracer is paused (SIGSTOP) while
/// a real curl, in a pod container's cgroup, makes its HTTPS call and exits; the pause is a
/// loaded machine made certain (the records wait in the ring buffer), not a mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_client_gone_before_its_exec_is_handled_keeps_its_container_and_pod(
) -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let nonce = std::process::id();
    let uid = format!("5c1e9a77-0b3d-4e2f-8a6b-{nonce:012x}");
    let container_id = format!("{:064x}", 0x5407_u128 << 64 | nonce as u128);
    let (cgroups, scope) = pod_container_cgroup(&uid, &container_id)?;

    let traced = start_traced(tracer_bin(), "kubernetes-short-lived", &[]).await?;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"quick"}]}"#;
    // sh joins the container's cgroup and execs curl, which keeps sh's pid.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec curl -sS --http1.1 --cacert {} -H 'content-type: application/json' -d '{body}' {}/chat/completions",
        scope.display(),
        server.cert_path.display(),
        server.base_url()
    );
    let (pid, out) = {
        let _paused = traced.tracer.pause();
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let pid = child.id();
        // Reaped before the tracer resumes: its /proc entry is gone.
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        (pid, out)
    };
    assert!(out.status.success(), "curl failed: {out:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the client is gone before the tracer resumes"
    );
    let spans = traced
        .receiver
        .wait_for("the short-lived client's call", WAIT, |s| {
            !of_pid(s, pid).is_empty()
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(cgroups);

    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 1, "one call, one span: {mine:#?}");
    let span = &mine[0];
    let r = |k: &str| as_str(span.resource_attr(k)).map(str::to_string);
    assert_eq!(r("container.id").as_deref(), Some(container_id.as_str()));
    assert_eq!(r("container.runtime").as_deref(), Some("containerd"));
    assert_eq!(r("k8s.pod.uid").as_deref(), Some(uid.as_str()));
    assert_eq!(r("process.executable.name").as_deref(), Some("curl"));
    assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
    Ok(())
}

fn http_post(server: &MockOpenAi, model: &str) -> String {
    format!(
        "python3 {} {}/chat/completions --model {model}",
        clients_dir().join("http_post.py").display(),
        server.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_process_is_not_copied_by_the_kernel_and_the_other_is_traced() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let marker = format!("excluded-model-{}", std::process::id());
    let rule = format!("--exclude-cmdline={marker}");
    let traced = start_traced(tracer_bin(), "kubernetes-selection", &[&rule]).await?;

    // The excluded client waits a second inside a shell whose own command line already matches,
    // so the decision (made when the shell execs) reaches the kernel before its first call; the
    // exec into python keeps the pid and the decision.
    let run = |script: String| {
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .env("SSL_CERT_FILE", &server.cert_path);
        c
    };
    let excluded = e2e::json_lines(
        &e2e::run(run(format!(
            "sleep 1 && exec {}",
            http_post(&server, &marker)
        )))
        .await?,
    );
    let kept = e2e::json_lines(
        &e2e::run(run(format!("exec {}", http_post(&server, "kept-model")))).await?,
    );
    // The exclusion changes nothing for the client itself.
    assert_eq!(excluded[0]["status"].as_i64(), Some(200));
    assert_eq!(kept[0]["status"].as_i64(), Some(200));
    let excluded_pid = excluded[0]["pid"].as_u64().context("pid")? as u32;
    let kept_pid = kept[0]["pid"].as_u64().context("pid")? as u32;

    let spans = traced
        .receiver
        .wait_for("the kept client's call", WAIT, |s| {
            !of_pid(s, kept_pid).is_empty()
        })
        .await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);

    assert_eq!(
        of_pid(&spans, kept_pid).len(),
        1,
        "the kept client is traced"
    );
    let leaked: Vec<_> = spans
        .iter()
        .filter(|s| as_int(s.resource_attr("process.pid")) == Some(excluded_pid as i64))
        .collect();
    assert!(leaked.is_empty(), "excluded client exported: {leaked:#?}");
    // Nothing of it reached the streams stage either.
    assert!(recorded(&traced.record_dir, excluded_pid, "egress").is_empty());
    assert!(recorded(&traced.record_dir, excluded_pid, "ingress").is_empty());
    assert!(!recorded(&traced.record_dir, kept_pid, "egress").is_empty());

    // The kernel skipped its TLS calls (at least its SSL_write and SSL_read) without copying
    // them, and userspace had nothing of it to drop: it was never copied at all. Only
    // processes matching the rule (the marker is unique to this test) are in the kernel's map.
    let summary = &stopped.summary;
    let counter = |name: &str| stopped.counter(name);
    assert!(
        counter("kernel_ignored_calls")? >= 2,
        "kernel skipped the excluded calls: {summary}"
    );
    assert_eq!(counter("ignored_records")?, 0, "{summary}");
    assert!(counter("kernel_tls_calls")? >= 2, "{summary}");
    Ok(())
}

/// [`http_post`] that stays alive a second after its call (it waits for a second request that
/// never comes): the tracer reads a process's cgroup from /proc when it handles its exec, which
/// on a loaded machine may be after a short-lived client has already exited.
fn lingering_http_post(server: &MockOpenAi, model: &str) -> String {
    format!(
        "sleep 1 | {} --repeat 2 --wait-stdin",
        http_post(server, model)
    )
}

/// The node the recorded pods run on (tests/fixtures/kube/pods-list.json).
const RECORDED_NODE: &str = "ip-10-0-1-17.ec2.internal";

/// `--kube-api` against recorded API server responses: no cluster can run here, so the
/// tracer's real `kube` client reads a kubeconfig (KUBECONFIG) naming a local HTTPS server
/// (tracer_testkit::kube_api) that serves the recorded pod list, watch events, ReplicaSets and
/// Jobs. The agent is a real HTTPS client in the cgroup the recorded pod's UID names; the pod
/// log tree is empty, so its name and namespace can only come from the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_labels_and_workload_reach_the_span_and_pod_labels_select() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let script = kube_api::recorded()?;
    let uid = script.pod_list["items"][0]["metadata"]["uid"]
        .as_str()
        .context("recorded pod uid")?
        .to_string();
    let api = kube_api::start(script, &e2e::certs_dir()).await?;
    let nonce = std::process::id();
    let container_id = format!("{:064x}", 0xa91_u128 << 64 | nonce as u128);
    let (cgroups, scope) = pod_container_cgroup(&uid, &container_id)?;
    let logs = TempTree(std::env::temp_dir().join(format!("e2e-kube-api-logs-{nonce}")));
    std::fs::create_dir_all(logs.0.join("pods"))?;
    let pods_arg = logs.0.join("pods").display().to_string();
    let kubeconfig = api.kubeconfig.display().to_string();

    let traced = start_traced_with_env(
        tracer_bin(),
        "kubernetes-api",
        &[
            "--kube-api",
            "--node-name",
            RECORDED_NODE,
            "--pod-logs-dir",
            &pods_arg,
            "--include-pod-label",
            "app.kubernetes.io/name=research-*",
        ],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await?;
    // The tracer lists the node's pods, then watches; once the watch is open the pod (and its
    // recorded MODIFIED labels) is known, and the client below is let in by its label.
    let deadline = std::time::Instant::now() + WAIT;
    while api.watches() == 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the tracer never watched pods: {:?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let run = |script: String| {
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .env("SSL_CERT_FILE", &server.cert_path);
        c
    };
    // Outside any pod: no label, not included.
    let outside = e2e::json_lines(
        &e2e::run(run(format!(
            "exec {}",
            http_post(&server, "outside-the-pod")
        )))
        .await?,
    );
    let inside = e2e::json_lines(
        &e2e::run(run(format!(
            "echo $$ > {}/cgroup.procs && {}",
            scope.display(),
            lingering_http_post(&server, "inside-the-pod")
        )))
        .await?,
    );
    assert_eq!(outside[0]["status"].as_i64(), Some(200));
    assert_eq!(inside[0]["status"].as_i64(), Some(200));
    let outside_pid = outside[0]["pid"].as_u64().context("pid")? as u32;

    let spans = traced
        .receiver
        .wait_for("the pod's call", WAIT, |s| {
            s.iter()
                .any(|s| as_str(s.resource_attr("k8s.pod.uid")) == Some(uid.as_str()))
        })
        .await;
    let spans = match spans {
        Ok(spans) => spans,
        Err(e) => {
            let stopped = traced.tracer.stop()?;
            anyhow::bail!("{e:#}\ntracer stderr:\n{}", stopped.stderr);
        }
    };
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(cgroups);

    let span = spans
        .iter()
        .find(|s| as_str(s.resource_attr("k8s.pod.uid")) == Some(uid.as_str()))
        .context("span")?;
    let r = |k: &str| as_str(span.resource_attr(k)).map(str::to_string);
    assert_eq!(r("container.id").as_deref(), Some(container_id.as_str()));
    assert_eq!(
        r("k8s.pod.name").as_deref(),
        Some("research-agent-5d78c9869d-x7k2p"),
        "from the API: the log tree is empty"
    );
    assert_eq!(r("k8s.namespace.name").as_deref(), Some("agents"));
    assert_eq!(r("k8s.node.name").as_deref(), Some(RECORDED_NODE));
    assert_eq!(
        r("k8s.pod.label.app.kubernetes.io/name").as_deref(),
        Some("research-agent")
    );
    assert_eq!(r("k8s.pod.label.team").as_deref(), Some("ml"));
    assert_eq!(
        r("k8s.pod.label.tier").as_deref(),
        Some("gold"),
        "the recorded MODIFIED event's label"
    );
    assert_eq!(
        r("k8s.replicaset.name").as_deref(),
        Some("research-agent-5d78c9869d")
    );
    assert_eq!(
        r("k8s.deployment.name").as_deref(),
        Some("research-agent"),
        "through the ReplicaSet's owner reference"
    );
    assert_eq!(r("k8s.statefulset.name"), None);

    let leaked: Vec<_> = spans
        .iter()
        .filter(|s| as_int(s.resource_attr("process.pid")) == Some(outside_pid as i64))
        .collect();
    assert!(
        leaked.is_empty(),
        "a process outside the pod was exported: {leaked:#?}"
    );
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.starts_with("/api/v1/pods?"))
            .all(|r| r.contains(&format!("fieldSelector=spec.nodeName%3D{RECORDED_NODE}"))),
        "only this node's pods: {requests:?}"
    );
    assert!(requests.iter().any(
        |r| r.starts_with("/apis/apps/v1/namespaces/agents/replicasets/research-agent-5d78c9869d?")
    ));
    Ok(())
}

/// With `--kube-api` and no API server answering, the tracer warns once and traces as before:
/// the span carries what the cgroup gives (pod UID), without labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kube_api_is_warned_about_once_and_capture_goes_on() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    // A kubeconfig naming a port nothing listens on.
    let api = kube_api::start(kube_api::recorded()?, &e2e::certs_dir()).await?;
    let port = e2e::free_port()?;
    let text = std::fs::read_to_string(&api.kubeconfig)?.replace(
        &format!("127.0.0.1:{}", api.addr.port()),
        &format!("127.0.0.1:{port}"),
    );
    let kubeconfig = e2e::certs_dir().join(format!("kubeconfig-unreachable-{port}"));
    std::fs::write(&kubeconfig, text)?;
    let kubeconfig_path = kubeconfig.clone();
    let kubeconfig = kubeconfig.display().to_string();
    let nonce = std::process::id();
    let uid = format!("5e1d2c3b-4a59-4687-9a1b-{nonce:012x}");
    let container_id = format!("{:064x}", 0xdead_u128 << 64 | nonce as u128);
    let (cgroups, scope) = pod_container_cgroup(&uid, &container_id)?;

    let traced = start_traced_with_env(
        tracer_bin(),
        "kubernetes-api-unreachable",
        &["--kube-api", "--node-name", "node-e2e-1"],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await?;
    // Long enough for several retries with backoff.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = e2e::run({
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && {}",
                scope.display(),
                lingering_http_post(&server, "no-api")
            ),
        ])
        .env("SSL_CERT_FILE", &server.cert_path);
        c
    })
    .await?;
    assert_eq!(e2e::json_lines(&out)[0]["status"].as_i64(), Some(200));
    let spans = traced
        .receiver
        .wait_for("the pod's call", WAIT, |s| {
            s.iter()
                .any(|s| as_str(s.resource_attr("k8s.pod.uid")) == Some(uid.as_str()))
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(cgroups);
    let _ = std::fs::remove_file(&kubeconfig_path);
    let span = spans
        .iter()
        .find(|s| as_str(s.resource_attr("k8s.pod.uid")) == Some(uid.as_str()))
        .context("span")?;
    assert!(span.resource_attr("k8s.pod.label.team").is_none());
    let warnings = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("watching pods on node"))
        .count();
    assert_eq!(
        warnings, 1,
        "warned once, not per retry:\n{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("ERROR")
            && !stopped
                .stderr
                .contains("watching pods on node node-e2e-1 again"),
        "retries are quiet, and no recovery is claimed:\n{}",
        stopped.stderr
    );
    Ok(())
}
