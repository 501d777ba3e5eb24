//! The daemon: wires capture, the pipeline and the exporters, and shuts them down in order.

use std::{
    io::IsTerminal,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    capture::{self, reader::read_ring_buffer, Attacher, Capture, Clock},
    daemon::config::Config,
    daemon::pipeline::{Pipeline, PipelineConfig},
    export::{console, otlp::OtlpExporter},
    model::span::Span,
    processes::{kube_api, PodStore},
    telemetry::health::Health,
    telemetry::health_server::{self, ProbeState},
    telemetry::metrics::{self, MetricsRecorder},
};

/// Seconds between hand-backs of freed memory to the kernel ([`crate::freed_memory`]).
const TICKS_PER_MEMORY_RELEASE: u64 = 10;

/// Capture records waiting for the pipeline. Large enough for a burst of several MiB.
const CAPTURE_QUEUE: usize = 64 * 1024;
const SINK_QUEUE: usize = 16 * 1024;
/// Execs waiting for the attacher.
const EXEC_QUEUE: usize = 4096;

/// A sink's queue, and the counter its losses go to when it is full.
struct SinkQueue {
    tx: mpsc::Sender<Arc<Span>>,
    full: fn(&Health) -> &AtomicU64,
}

struct Sinks {
    queues: Vec<SinkQueue>,
    tasks: Vec<JoinHandle<()>>,
    health: Arc<Health>,
    metrics: Arc<MetricsRecorder>,
}

impl Sinks {
    fn dispatch(&self, spans: &mut Vec<Span>) {
        for span in spans.drain(..) {
            Health::add(&self.health.spans, 1);
            // Before any exporter can drop it: metrics count every span.
            self.metrics.observe(&span);
            let span = Arc::new(span);
            for queue in &self.queues {
                if queue.tx.try_send(span.clone()).is_err() {
                    Health::add((queue.full)(&self.health), 1);
                }
            }
        }
    }

    async fn close(self) {
        drop(self.queues);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub async fn run(config: Config) -> Result<()> {
    // Served first: liveness answers while the programs load and the targets are analysed.
    let probes = Arc::new(ProbeState::default());
    let probe_server = match config.health_listen {
        Some(addr) => Some(health_server::serve(addr, probes.clone()).await?),
        None => None,
    };
    capture::prepare_host().context("preparing the host for eBPF")?;
    let health = Arc::new(Health::default());
    let clock = Clock::new();

    let recorder = Arc::new(MetricsRecorder::new(health.clone()));
    let metrics = metrics::start(&config.metrics, recorder.clone(), health.clone()).await?;
    let mut sinks = Sinks {
        queues: Vec::new(),
        tasks: Vec::new(),
        health: health.clone(),
        metrics: recorder,
    };
    if config.console {
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        sinks.tasks.push(tokio::spawn(console::run(
            rx,
            std::io::stdout().is_terminal(),
        )));
        sinks.queues.push(SinkQueue {
            tx,
            full: |h| &h.console_queue_full,
        });
    }
    if let Some(otlp) = config.otlp.clone() {
        info!(endpoint = %otlp.endpoint, protocol = ?otlp.protocol, "exporting OTLP traces");
        let exporter = OtlpExporter::new(otlp, health.clone())?;
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        sinks.tasks.push(tokio::spawn(exporter.run(rx)));
        sinks.queues.push(SinkQueue {
            tx,
            full: |h| &h.export_dropped_queue_full,
        });
    }

    let mut processes = config.pipeline.processes.clone();
    // Started before capture so the node's pods are usually listed by the time the first
    // processes are described; nothing waits for it (an unreachable API only costs labels).
    let kube_watch = match (&processes.node_name, processes.kube_api) {
        (Some(node), true) => {
            let store = Arc::new(PodStore::default());
            processes.pod_store = Some(store.clone());
            info!(node = %node, "watching this node's pods in the Kubernetes API");
            Some(tokio::spawn(kube_api::watch(node.clone(), store)))
        }
        _ => None,
    };

    let mut capture = Capture::load(config.ring_buffer_bytes)?;
    let ring = capture.take_ring_buffer()?;
    let mut ignored_pids = capture.take_ignored_pids()?;
    let (event_tx, mut events) =
        capture::queue::capture_queue(CAPTURE_QUEUE, config.memory_budget_bytes / 4);
    let (exec_tx, exec_rx) = mpsc::channel(EXEC_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Read before hooking so nothing the hooks produce waits in a full ring.
    // Judges the first bytes of inferred hooks: the reader asks it, the attacher detaches.
    let validator = Arc::new(std::sync::Mutex::new(
        capture::validate::Validator::default(),
    ));
    let reader = tokio::spawn(read_ring_buffer(
        ring,
        event_tx,
        exec_tx,
        health.clone(),
        validator.clone(),
        stop_rx,
    ));
    let mut attacher = Attacher::new(capture, health.clone(), validator);
    attacher.target_cache().skip(
        skipped_executables(&config.skip_executables)?
            .into_iter()
            .chain(own_executable()),
    );
    // Pre-attach (see capture/preattach.rs) starts first: its threads list and analyse the
    // directories agents run from while the running processes are scanned here.
    let preattached = capture::preattach::enabled().then(|| {
        capture::preattach::start(
            attacher.target_cache(),
            capture::preattach::agent_roots(),
            capture::preattach::Limits::default(),
        )
    });
    let open_connections = attacher.start_up();
    let hooked = std::mem::take(&mut attacher.hooked_paths);
    let unhookable = std::mem::take(&mut attacher.unhookable_paths);
    // TLS libraries were found but none could be hooked: the tracer would run blind to HTTPS.
    // Say so loudly, and stay not-ready so a rollout shows it.
    let blind = hooked.is_empty() && !unhookable.is_empty();
    if blind {
        warn!(
            unhookable = ?unhookable,
            "no TLS hook could be placed: attaching uprobes failed (is CAP_SYS_ADMIN held? run \
             `agent-tracer check`); encrypted traffic will not be seen"
        );
    }
    let hook_coverage = attacher.coverage();
    let target_cache = attacher.target_cache();
    let mut attacher = tokio::spawn(attacher.run(exec_rx, preattached));
    // Set when the attacher's task ends before the stop: its result, awaited only once.
    let mut attacher_ended = None;

    let mut spans = Vec::new();
    let mut pipeline = Pipeline::new(
        PipelineConfig {
            processes,
            ..config.pipeline.clone()
        },
        clock,
        health.clone(),
        Some(Box::new(move |pid, ignored| ignored_pids.set(pid, ignored))),
    )?;
    pipeline.set_hook_coverage(hook_coverage);
    sinks.metrics.coverage.set_targets(target_cache);
    pipeline.set_metrics_coverage(sinks.metrics.coverage.clone());
    pipeline.observe_running(crate::capture::all_pids());
    for event in open_connections {
        pipeline.handle(event, &mut spans);
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    info!(
        tls_targets = ?hooked,
        console = config.console,
        capture_content = config.pipeline.genai.capture_content,
        "tracer ready"
    );
    probes.beat();
    probes.set_ready(!blind);

    // Why the loop ended, when it was not asked to: the daemon then exits non-zero, so that a
    // supervisor (`Restart=on-failure`, a pod's restart policy) brings it back.
    let mut died = None;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => pipeline.handle(event, &mut spans),
                None => {
                    died = Some("the ring buffer reader stopped");
                    break;
                }
            },
            ended = &mut attacher, if attacher_ended.is_none() => {
                attacher_ended = Some(ended);
                died = Some("the attacher stopped");
                break;
            }
            _ = tick.tick() => {
                probes.beat();
                pipeline.tick(Clock::monotonic_now_ns(), &mut spans);
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(TICKS_PER_MEMORY_RELEASE) {
                    // Large bodies and bursts leave freed memory in malloc's arenas.
                    crate::freed_memory::give_back();
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        sinks.dispatch(&mut spans);
    }

    info!("stopping: draining captured data");
    probes.set_ready(false);
    let _ = stop_tx.send(true);
    while let Some(event) = events.recv().await {
        pipeline.handle(event, &mut spans);
    }
    let reader_end = match reader.await {
        Ok(Err(e)) => Some(format!("ring buffer reader: {e:#}")),
        Err(e) => Some(format!("ring buffer reader task: {e}")),
        Ok(Ok(())) => None,
    };
    if let Some(end) = &reader_end {
        warn!("{end}");
    }
    pipeline.close_all(&mut spans);
    sinks.dispatch(&mut spans);
    sinks.close().await;
    // The reader has gone, and with it the exec queue: the attacher returns.
    let attacher = match attacher_ended {
        Some(ended) => ended,
        None => attacher.await,
    }
    .context("attacher task")?;
    let counters = attacher.capture().read_kernel_counters(&health);
    attacher.release_at_exit();
    metrics.shutdown().await;
    counters?;
    if let Some(server) = probe_server {
        server.abort();
    }
    if let Some(watch) = kube_watch {
        watch.abort();
    }
    // Before the log line: whoever waits for that line finds the file complete.
    if let Some(path) = &config.summary_file {
        if let Err(e) = health.write_summary(path) {
            warn!("writing the summary to {}: {e:#}", path.display());
        }
    }
    info!("tracer stopped: {}", health.summary());
    exit_status(died, reader_end)
}

/// The daemon's result once it has shut down: a task that ended on its own, or a reader that
/// failed, is an error (a non-zero exit), even though everything was drained and flushed.
fn exit_status(died: Option<&str>, reader_end: Option<String>) -> Result<()> {
    match (died, reader_end) {
        (None, None) => Ok(()),
        (Some(died), None) => anyhow::bail!("{died} before it was asked to"),
        (None, Some(end)) => anyhow::bail!("{end}"),
        (Some(died), Some(end)) => anyhow::bail!("{died} before it was asked to: {end}"),
    }
}

/// The files `--skip-executable` names, by identity. A path that cannot be opened is an error:
/// a typo would otherwise leave a server hooked that its owner meant to spare.
fn skipped_executables(paths: &[std::path::PathBuf]) -> Result<Vec<capture::targets::FileId>> {
    paths
        .iter()
        .map(|path| {
            let file = std::fs::File::open(path)
                .with_context(|| format!("--skip-executable {}", path.display()))?;
            let meta = file
                .metadata()
                .with_context(|| format!("--skip-executable {}", path.display()))?;
            anyhow::ensure!(
                meta.is_file(),
                "--skip-executable {}: not a regular file",
                path.display()
            );
            info!("never hooked: {}", path.display());
            Ok(capture::targets::FileId::from_metadata(&meta))
        })
        .collect()
}

/// The tracer's own executable, never analysed or hooked: it names every locator's strings
/// (so it was read whole and a "BoringSSL" reported in it), and pre-attach found its rustls and
/// hooked every later tracer, `agent-tracer check` included.
fn own_executable() -> Option<capture::targets::FileId> {
    std::fs::metadata("/proc/self/exe")
        .ok()
        .map(|meta| capture::targets::FileId::from_metadata(&meta))
}

#[cfg(test)]
mod tests {
    use super::exit_status;

    #[test]
    fn a_task_that_ends_on_its_own_makes_the_exit_non_zero() {
        assert!(
            exit_status(None, None).is_ok(),
            "a stop asked for by a signal"
        );
        let died = exit_status(Some("the ring buffer reader stopped"), None).unwrap_err();
        assert_eq!(
            died.to_string(),
            "the ring buffer reader stopped before it was asked to"
        );
        let failed = exit_status(
            Some("the ring buffer reader stopped"),
            Some("ring buffer reader: epoll failed".into()),
        )
        .unwrap_err();
        assert!(failed
            .to_string()
            .ends_with("ring buffer reader: epoll failed"));
        // A reader error found while stopping normally still fails the run.
        assert!(exit_status(None, Some("ring buffer reader task: panicked".into())).is_err());
    }
}
