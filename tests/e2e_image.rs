//! The image people deploy, built and run as the chart runs it. podman builds it from
//! deploy/Dockerfile's `prebuilt` way (FROM scratch: the binary Cargo built for these tests and
//! exactly the libraries it links, laid out by deploy/image-rootfs.sh) with no daemon and no
//! registry, and runs it under the DaemonSet that the real Helm renders from the chart, translated
//! field by field (tracer_testkit::daemonset): its capability list after dropping ALL (not
//! privileged), seccomp, user, read-only root, hostPID, its hostPath mounts, its ConfigMap as the
//! config file, its environment, arguments and memory limit, and the pod's own network namespace
//! (the chart has no hostNetwork).
//!
//! Inside, `agent-tracer check` must pass with exactly the chart's capabilities; and the
//! DaemonSet's `run` must export to an OTLP receiver an HTTPS model call that a real curl makes
//! on the host. The receiver listens on 127.0.0.1 inside the pod's network namespace, where the
//! container's tracer looks for it (the test binds it there). Its probes are asked there too.
//!
//! Not reproduced: what a cluster adds (the API server, a CNI network, image pulls); this
//! machine's root lacks CAP_SYS_RESOURCE, so that one capability of the chart cannot be granted
//! here, and the test checks that `check` then reports it absent and still passes.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use tracer_testkit::{
    daemonset::{self, capability_mask, PodRun},
    deploy_tools,
    e2e::{self, of_pid, require_root, wait_for_log, SERIAL},
    mock_openai,
    otlp::{self, as_int, as_str},
    podman::{self, Container, Image},
};

const NODE: &str = "image-test-node";
const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn work_dir(name: &str) -> Result<PathBuf> {
    let dir = tracer_testkit::target_dir().join("e2e-image").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The image, built from the binary under test, and the chart's DaemonSet rendered for it with
/// `sets`, translated to podman.
struct Deployed {
    _image: Image,
    pod: PodRun,
    /// The chart's `DirectoryOrCreate` paths this test made, removed when dropped.
    _made: MadeDirs,
}

struct MadeDirs(Vec<PathBuf>);

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn deploy(name: &str, sets: &[String]) -> Result<Deployed> {
    let work = work_dir(name)?;
    // Unique per run, so concurrent runs on one machine never share or remove each other's.
    let repository = "localhost/agent-tracer-e2e";
    let tag = format!("{name}-{}", std::process::id());
    let image = podman::build_image(
        &repo(),
        Path::new(env!("CARGO_BIN_EXE_agent-tracer")),
        &format!("{repository}:{tag}"),
        &work,
    )?;
    let tools = deploy_tools::tools()?;
    let mut all = vec![
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
    ];
    all.extend_from_slice(sets);
    let objects = daemonset::render(&tools, &repo().join("deploy/helm/agent-tracer"), &all)?;
    let pod = daemonset::pod_run(&objects, NODE, &work.join("files"))?;
    let made = MadeDirs(pod.created_dirs.clone());
    assert_eq!(pod.image, image.tag, "the chart names the image built here");
    assert!(!pod.privileged, "the chart's default is not privileged");
    Ok(Deployed {
        _image: image,
        pod,
        _made: made,
    })
}

/// The container's options: the chart's, and the limits podman must be told to leave alone.
fn options(pod: &PodRun) -> Result<Vec<String>> {
    let mut options = pod.options.clone();
    options.extend(podman::inherited_ulimits()?);
    Ok(options)
}

/// This process' bounding set: capabilities no container started from here can hold.
fn own_bounding_set() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .context("no CapBnd")?
        .trim();
    Ok(u64::from_str_radix(hex, 16)?)
}

#[test]
fn check_passes_in_the_image_with_the_daemonsets_security_context() -> Result<()> {
    require_root();
    let _serial = SERIAL.blocking_lock();
    let started = Instant::now();
    let deployed = deploy("check", &[])?;
    let pod = &deployed.pod;
    let name = format!("agent-tracer-e2e-check-{}", std::process::id());
    let container = Container::create(&name, &options(pod)?, &pod.image, &["check".to_string()])?;
    // The image holds the binary and exactly the libraries it links, nothing else.
    assert_eq!(
        files_in(&container.name)?,
        expected_files(Path::new(env!("CARGO_BIN_EXE_agent-tracer")))?
    );
    let out = podman::podman()
        .args(["start", "--attach", &container.name])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check failed in the image ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("agent-tracer can run on this host"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every program loads and passes the verifier"),
        "{stdout}"
    );
    // tracefs through the chart's hostPath; no bpffs, which nothing needs (nothing is pinned).
    assert!(
        stdout.contains("tracefs mounted at /sys/kernel/tracing"),
        "{stdout}"
    );

    // Exactly the chart's capabilities, those this machine can grant: no more (podman's own
    // defaults are dropped), and each one `check` names is held.
    let grantable = own_bounding_set()?;
    let chart = capability_mask(&pod.capabilities)?;
    let effective = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("capabilities (effective set 0x"))
        .and_then(|rest| rest.strip_suffix("):"))
        .with_context(|| format!("no effective set in:\n{stdout}"))?;
    assert_eq!(
        u64::from_str_radix(effective, 16)?,
        chart & grantable,
        "the container holds the chart's capabilities:\n{stdout}"
    );
    for cap in &pod.capabilities {
        let held = capability_mask(std::slice::from_ref(cap))? & grantable != 0;
        let expected = if held { "ok" } else { "absent" };
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(&format!("CAP_{cap}:")[..]));
        if let Some(line) = line {
            assert_eq!(
                line.split_whitespace().next(),
                Some(expected),
                "CAP_{cap}:\n{stdout}"
            );
        }
        if !held {
            eprintln!("CAP_{cap} is not in this machine's bounding set: not granted here");
        }
    }
    drop(container);
    drop(deployed);
    eprintln!(
        "check in the image: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The regular files of container `name`'s filesystem (`podman export`), without the leading /.
fn files_in(name: &str) -> Result<BTreeSet<String>> {
    let tar = podman::podman().args(["export", name]).output()?;
    if !tar.status.success() {
        bail!("podman export: {}", String::from_utf8_lossy(&tar.stderr));
    }
    let mut list = Command::new("tar")
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = list.stdin.take().context("tar's stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&tar.stdout));
    let listed = list.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to tar panicked"))??;
    Ok(String::from_utf8(listed.stdout)?
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(str::to_string)
        .collect())
}

/// The binary's path in the image and the libraries ldd resolves for it on this host.
fn expected_files(binary: &Path) -> Result<BTreeSet<String>> {
    let ldd = Command::new("ldd").arg(binary).output()?;
    let mut files = BTreeSet::from(["usr/local/bin/agent-tracer".to_string()]);
    for line in String::from_utf8(ldd.stdout)?.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let path = match fields[..] {
            [_, "=>", path, ..] if path.starts_with('/') => path,
            [path, ..] if path.starts_with('/') => path,
            _ => continue,
        };
        files.insert(path.trim_start_matches('/').to_string());
    }
    Ok(files)
}

/// GET `path` on 127.0.0.1:`port` in the pod's network namespace: the status.
fn probe(netns: &Path, port: u16, path: &str) -> Result<u16> {
    let path = path.to_string();
    podman::in_netns(netns, move || {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {response:?}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemonsets_tracer_in_the_image_exports_a_call_made_on_the_host() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    // Free here, and in the pod's fresh network namespace anything is.
    let port = e2e::free_port()?;
    let deployed = deploy(
        "run",
        &[
            format!("otlp.endpoint=http://127.0.0.1:{port}"),
            "otlp.protocol=grpc".to_string(),
        ],
    )?;
    let pod = &deployed.pod;
    let name = format!("agent-tracer-e2e-run-{}", std::process::id());
    let container = Container::create(&name, &options(pod)?, &pod.image, &pod.args)?;
    let netns = container.init()?;
    let listener = if pod.host_network {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?
    } else {
        podman::in_netns(&netns, move || {
            Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?)
        })?
    };
    let receiver = otlp::start_grpc_on(listener).await?;

    // The container's output, as the tracer's own would be (target/e2e-logs/image-run.err).
    let logs = tracer_testkit::target_dir().join("e2e-logs");
    std::fs::create_dir_all(&logs)?;
    let log_name = "image-run";
    let mut attached = podman::podman()
        .args(["start", "--attach", &container.name])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(logs.join(format!("{log_name}.out")))?)
        .stderr(std::fs::File::create(e2e::tracer_log(log_name))?)
        .spawn()?;

    // Ready as the kubelet would see it: the chart's readiness probe, asked in the pod.
    let readiness = pod
        .readiness
        .clone()
        .context("the chart has a readiness probe")?;
    let deadline = Instant::now() + tracer_testkit::patience(WAIT);
    loop {
        if let Ok(200) = probe(&netns, readiness.port, &readiness.path) {
            break;
        }
        if let Some(status) = attached.try_wait()? {
            bail!(
                "the container exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(e2e::tracer_log(log_name))?
            );
        }
        if Instant::now() > deadline {
            bail!(
                "not ready after {WAIT:?}:\n{}",
                std::fs::read_to_string(e2e::tracer_log(log_name))?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let liveness = pod
        .liveness
        .clone()
        .context("the chart has a liveness probe")?;
    assert_eq!(probe(&netns, liveness.port, &liveness.path)?, 200);

    // A real curl on the host, linked to the host's libssl. It reads its body from stdin before
    // it connects, so it is held until the tracer in the container has hooked that libssl.
    const PROMPT: &str = "hello from the host, seen from the image";
    const API_KEY: &str = "sk-image-test-do-not-export";
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": PROMPT}],
    })
    .to_string();
    let mut curl = Command::new("curl")
        .args(["-sS", "--http1.1", "-H", "content-type: application/json"])
        .args(["-H", &format!("authorization: Bearer {API_KEY}")])
        .arg("--cacert")
        .arg(&server.cert_path)
        .args(["--data-binary", "@-"])
        .arg(format!("{}/chat/completions", server.base_url()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = curl.id();
    wait_for_log(log_name, &["attached", "libssl"], WAIT)
        .await
        .context("the tracer in the image did not hook libssl")?;
    let mut stdin = curl.stdin.take().context("curl's stdin")?;
    stdin.write_all(body.as_bytes())?;
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || curl.wait_with_output()).await??;
    assert!(out.status.success(), "curl: {}", out.status);
    let response: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(response["id"], "chatcmpl-mock-nonstream");

    let spans = receiver
        .wait_for("curl's call, from the container", WAIT, |s| {
            !of_pid(s, pid).is_empty()
        })
        .await?;
    let mine = of_pid(&spans, pid);
    assert_eq!(mine.len(), 1, "one call, one span: {mine:#?}");
    let span = &mine[0];
    assert_eq!(as_str(span.attr("http.request.method")), Some("POST"));
    assert_eq!(as_str(span.attr("url.path")), Some("/v1/chat/completions"));
    assert_eq!(as_int(span.attr("http.response.status_code")), Some(200));
    assert_eq!(as_str(span.attr("gen_ai.operation.name")), Some("chat"));
    assert_eq!(
        as_str(span.attr("gen_ai.request.model")),
        Some("gpt-4o-mini")
    );
    let received = server.received();
    assert_eq!(
        as_int(span.attr("gen_ai.usage.input_tokens")),
        Some(mock_openai::prompt_tokens_for(body.len())),
        "{received:?}"
    );
    assert_eq!(
        as_str(span.resource_attr("process.executable.name")),
        Some("curl")
    );
    // The chart's environment reached the tracer: NODE_NAME from spec.nodeName, expanded into
    // OTEL_RESOURCE_ATTRIBUTES.
    assert_eq!(as_str(span.resource_attr("k8s.node.name")), Some(NODE));
    // The chart's default exports no content, and a key never leaves.
    let raw = receiver.raw_bytes();
    assert!(!e2e::contains(&raw, PROMPT.as_bytes()), "content exported");
    assert!(
        !e2e::contains(&raw, API_KEY.as_bytes()),
        "the API key exported"
    );

    // Stopped as the kubelet stops it: SIGTERM, then the grace period. The tracer flushes and
    // exits 0.
    podman::run(&[
        "stop",
        "--time",
        &pod.grace_seconds.to_string(),
        &container.name,
    ])?;
    let status = tokio::task::spawn_blocking(move || attached.wait()).await??;
    let log = std::fs::read_to_string(e2e::tracer_log(log_name))?;
    assert!(status.success(), "the container exited {status}:\n{log}");
    assert!(log.contains("tracer stopped"), "{log}");
    drop(container);
    drop(deployed);
    eprintln!(
        "image built, run and traced: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
