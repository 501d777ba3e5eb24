//! Metrics derived from finished spans, like the OpenTelemetry Collector's spanmetrics
//! connector: every number comes from a span the tracer also exports, so metrics and traces
//! never disagree. Plus the tracer's own health counters.
//!
//! `MetricsRecorder` aggregates (cumulative, since start); `prometheus` serves a scrape endpoint
//! and `otlp` pushes the same snapshot to an OTLP receiver.

pub mod agents;
pub mod config;
pub mod coverage;
pub mod otlp;
pub mod prometheus;
pub mod who;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    model::span::{AttrValue, Span},
    telemetry::health::Health,
};

/// GenAI client duration buckets, in seconds (genai-spec §1.8).
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Token-usage buckets (genai-spec §1.8).
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// The server time-per-output-token buckets (genai-spec §1.8): the only per-token buckets the
/// conventions define.
pub const TIME_PER_TOKEN_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// MCP operation duration buckets, in seconds (genai-spec §4.6).
pub const MCP_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Operations that are model calls (the rest — execute_tool, invoke_agent — are not).
const LLM_OPERATIONS: &[&str] = &["chat", "text_completion", "generate_content", "embeddings"];

/// Distinct attribute sets kept per metric; later ones are folded into one overflow series
/// (the OpenTelemetry SDK's cardinality limit), so a flood of model names cannot grow memory
/// without bound.
pub const MAX_SERIES_PER_METRIC: usize = 2000;
const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// How an OpenTelemetry unit is written as a Prometheus name suffix (OTel→Prometheus
/// compatibility: `s` → `seconds`, annotations like `{token}` are dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromUnit {
    None,
    Seconds,
    Other(&'static str),
}

#[derive(Debug)]
pub struct Instrument {
    pub name: &'static str,
    pub description: &'static str,
    /// UCUM, as OTLP carries it.
    pub unit: &'static str,
    pub prom_unit: PromUnit,
}

pub struct HistogramDef {
    pub instrument: Instrument,
    pub bounds: &'static [f64],
}

pub struct CounterDef {
    pub instrument: Instrument,
    /// Integer-valued (exported as int64 in OTLP).
    pub integer: bool,
}

pub static OPERATION_DURATION: HistogramDef = HistogramDef {
    instrument: Instrument {
        name: "gen_ai.client.operation.duration",
        description: "GenAI operation duration.",
        unit: "s",
        prom_unit: PromUnit::Seconds,
    },
    bounds: DURATION_BUCKETS,
};
pub static TOKEN_USAGE: HistogramDef = HistogramDef {
    instrument: Instrument {
        name: "gen_ai.client.token.usage",
        description: "Number of input and output tokens used.",
        unit: "{token}",
        prom_unit: PromUnit::None,
    },
    bounds: TOKEN_BUCKETS,
};
pub static TIME_TO_FIRST_CHUNK: HistogramDef = HistogramDef {
    instrument: Instrument {
        name: "gen_ai.client.operation.time_to_first_chunk",
        description: "Time from the request to the first response chunk of a streaming call.",
        unit: "s",
        prom_unit: PromUnit::Seconds,
    },
    bounds: DURATION_BUCKETS,
};
/// Not `gen_ai.client.operation.time_per_output_chunk`: that one is recorded per chunk, and a
/// span carries one average per call.
pub static TIME_PER_OUTPUT_TOKEN: HistogramDef = HistogramDef {
    instrument: Instrument {
        name: "agent_tracer.model.time_per_output_token",
        description: "Average time per output token after the first, per streaming call.",
        unit: "s",
        prom_unit: PromUnit::Seconds,
    },
    bounds: TIME_PER_TOKEN_BUCKETS,
};
pub static MCP_DURATION: HistogramDef = HistogramDef {
    instrument: Instrument {
        name: "mcp.client.operation.duration",
        description: "Duration of an MCP request as seen by the client.",
        unit: "s",
        prom_unit: PromUnit::Seconds,
    },
    bounds: MCP_BUCKETS,
};
pub static LLM_CALLS: CounterDef = CounterDef {
    instrument: Instrument {
        name: "agent_tracer.model.calls",
        description: "Model calls.",
        unit: "{call}",
        prom_unit: PromUnit::None,
    },
    integer: true,
};
pub static LLM_COST: CounterDef = CounterDef {
    instrument: Instrument {
        name: "agent_tracer.model.cost",
        description: "Estimated cost of model calls, in US dollars.",
        unit: "USD",
        prom_unit: PromUnit::Other("usd"),
    },
    integer: false,
};

const HISTOGRAMS: [&HistogramDef; 5] = [
    &OPERATION_DURATION,
    &TOKEN_USAGE,
    &TIME_TO_FIRST_CHUNK,
    &TIME_PER_OUTPUT_TOKEN,
    &MCP_DURATION,
];
const COUNTERS: [&CounterDef; 7] = [
    &LLM_CALLS,
    &LLM_COST,
    &agents::RUNS,
    &agents::LOOPS,
    &agents::REPEATED_REQUESTS,
    &agents::TOOL_EXECUTIONS,
    &agents::TOOL_ERRORS,
];

/// An attribute value of a metric series. Ordered so attribute sets can key a map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Label {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// Longest label value kept, in bytes. Values come from the wire and from traced programs
/// (model names, server addresses, agent and executable names): a hostile one must not make every
/// series it lands in megabytes long.
pub const MAX_LABEL_BYTES: usize = 128;

impl Label {
    /// A string label from text the tracer does not control, cut to [`MAX_LABEL_BYTES`] at a
    /// character boundary.
    pub fn text(value: &str) -> Label {
        let mut end = value.len().min(MAX_LABEL_BYTES);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        Label::Str(value[..end].to_string())
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Str(s) => f.write_str(s),
            Label::Int(i) => write!(f, "{i}"),
            Label::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A series' attributes, in a fixed order per metric.
pub type Attributes = Vec<(&'static str, Label)>;

#[derive(Clone, Debug, PartialEq)]
pub struct HistogramPoint {
    /// One count per bucket: `bounds.len() + 1`, the last for values above every bound. Bucket
    /// `i` holds values in `(bounds[i-1], bounds[i]]`, as in OTLP and Prometheus.
    pub bucket_counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl HistogramPoint {
    fn new(bounds: &[f64]) -> Self {
        HistogramPoint {
            bucket_counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, bounds: &[f64], value: f64) {
        let bucket = bounds.partition_point(|b| *b < value);
        if let Some(c) = self.bucket_counts.get_mut(bucket) {
            *c += 1;
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

pub struct HistogramFamily {
    pub def: &'static HistogramDef,
    pub points: Vec<(Attributes, HistogramPoint)>,
}

pub struct CounterFamily {
    pub name: String,
    pub description: String,
    pub unit: &'static str,
    pub prom_unit: PromUnit,
    pub integer: bool,
    pub points: Vec<(Attributes, f64)>,
}

/// Everything at one instant: what both exporters render.
pub struct Snapshot {
    /// Start of every cumulative series (the tracer's start).
    pub start_unix_ns: u64,
    pub time_unix_nano: u64,
    pub histograms: Vec<HistogramFamily>,
    pub counters: Vec<CounterFamily>,
    /// Current values (the per-process coverage), not totals.
    pub gauges: Vec<CounterFamily>,
}

#[derive(Default)]
struct Store {
    histograms: [BTreeMap<Attributes, HistogramPoint>; HISTOGRAMS.len()],
    counters: [BTreeMap<Attributes, f64>; COUNTERS.len()],
}

fn index_of<T>(all: &[&'static T], def: &'static T) -> usize {
    all.iter()
        .position(|d| std::ptr::eq(*d, def))
        .unwrap_or_default()
}

pub struct MetricsRecorder {
    store: Mutex<Store>,
    health: Arc<Health>,
    start_unix_ns: u64,
    /// What the tracer sees of each process that made TLS or model traffic.
    pub coverage: coverage::Coverage,
}

pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match span.attr(key) {
        Some(AttrValue::Str(s)) => Some(s),
        _ => None,
    }
}

fn num_attr(span: &Span, key: &str) -> Option<f64> {
    match span.attr(key) {
        Some(AttrValue::F64(f)) if f.is_finite() => Some(*f),
        Some(AttrValue::Int(i)) => Some(*i as f64),
        _ => None,
    }
}

/// The span's values of `keys`, in that order; absent keys are left out.
fn pick(span: &Span, keys: &[&'static str]) -> Attributes {
    keys.iter()
        .filter_map(|k| {
            let label = match span.attr(k)? {
                AttrValue::Str(s) => Label::text(s),
                AttrValue::Int(i) => Label::Int(*i),
                AttrValue::Bool(b) => Label::Bool(*b),
                // Floats and arrays make no sensible series keys.
                AttrValue::F64(_) | AttrValue::StrArray(_) => return None,
            };
            Some((*k, label))
        })
        .collect()
}

/// `gen_ai.agent.name` when the span belongs to a known agent, else the executable's name, so
/// there is always a "who" to break usage down by.
fn agent_name(span: &Span) -> Label {
    Label::text(str_attr(span, "gen_ai.agent.name").unwrap_or(&span.process.executable_name))
}

const LLM_COMMON: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
];
const LLM_WITH_ERROR: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
    "error.type",
];
/// §4.6's recommended attributes, minus the opt-in resource URI and the per-request id.
const MCP_ATTRIBUTES: &[&str] = &[
    "mcp.method.name",
    "gen_ai.operation.name",
    "gen_ai.tool.name",
    "gen_ai.prompt.name",
    "mcp.protocol.version",
    "rpc.response.status_code",
    "error.type",
    "server.address",
    "server.port",
    "network.transport",
    "network.protocol.name",
];

impl MetricsRecorder {
    pub fn new(health: Arc<Health>) -> Self {
        MetricsRecorder {
            store: Mutex::new(Store::default()),
            health,
            start_unix_ns: unix_now_ns(),
            coverage: coverage::Coverage::default(),
        }
    }

    /// Folds one finished span into the aggregates. In-memory work under a short lock.
    pub fn observe(&self, span: &Span) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        let seconds = span.duration_ns() as f64 / 1e9;
        let who = who::attributes(&span.process);
        if matches!(
            span.attr("agent_tracer.capture.encrypted"),
            Some(AttrValue::Bool(true))
        ) {
            let bytes = num_attr(span, "agent_tracer.tls.sent_bytes").unwrap_or(0.0)
                + num_attr(span, "agent_tracer.tls.received_bytes").unwrap_or(0.0);
            self.coverage.encrypted(
                span.process.pid,
                &span.process.executable_name,
                bytes as u64,
                str_attr(span, "gen_ai.provider.name").is_some(),
            );
        }
        if let Some((outcome, loops, repeated)) = agents::run_counts(span) {
            let mut attrs = vec![
                ("gen_ai.agent.name", agent_name(span)),
                ("agent_tracer.run.outcome", Label::Str(outcome)),
            ];
            attrs.extend(who.iter().cloned());
            store.counter(&agents::RUNS, attrs.clone(), 1.0);
            attrs.retain(|(k, _)| *k != "agent_tracer.run.outcome");
            if loops > 0 {
                store.counter(&agents::LOOPS, attrs.clone(), loops as f64);
            }
            if repeated > 0 {
                store.counter(&agents::REPEATED_REQUESTS, attrs, repeated as f64);
            }
            return;
        }
        if agents::is_tool_execution(span) {
            let mut attrs = pick(span, &["gen_ai.tool.name", "error.type"]);
            attrs.push(("gen_ai.agent.name", agent_name(span)));
            attrs.extend(who.iter().cloned());
            store.counter(&agents::TOOL_EXECUTIONS, attrs.clone(), 1.0);
            if str_attr(span, "error.type").is_some() {
                store.counter(&agents::TOOL_ERRORS, attrs, 1.0);
            }
            return;
        }
        if str_attr(span, "mcp.method.name").is_some() {
            let mut attrs = pick(span, MCP_ATTRIBUTES);
            attrs.push(("gen_ai.agent.name", agent_name(span)));
            store.histogram(&MCP_DURATION, attrs, seconds);
            return;
        }
        if !str_attr(span, "gen_ai.operation.name").is_some_and(|op| LLM_OPERATIONS.contains(&op)) {
            return;
        }
        self.coverage
            .model_call(span.process.pid, &span.process.executable_name);
        let agent = ("gen_ai.agent.name", agent_name(span));
        let mut with_error = pick(span, LLM_WITH_ERROR);
        with_error.push(agent.clone());
        with_error.extend(who.iter().cloned());
        let mut common = pick(span, LLM_COMMON);
        common.push(agent);
        common.extend(who);

        store.histogram(&OPERATION_DURATION, with_error.clone(), seconds);
        store.counter(&LLM_CALLS, with_error, 1.0);
        for (key, token_type) in [
            ("gen_ai.usage.input_tokens", "input"),
            ("gen_ai.usage.output_tokens", "output"),
        ] {
            if let Some(tokens) = num_attr(span, key).filter(|t| *t >= 0.0) {
                let mut attrs = common.clone();
                attrs.push(("gen_ai.token.type", Label::Str(token_type.to_string())));
                store.histogram(&TOKEN_USAGE, attrs, tokens);
            }
        }
        if let Some(ttfc) = num_attr(span, "gen_ai.response.time_to_first_chunk") {
            store.histogram(&TIME_TO_FIRST_CHUNK, common.clone(), ttfc.max(0.0));
        }
        if let Some(tpot) = num_attr(span, "agent_tracer.time_per_output_token") {
            store.histogram(&TIME_PER_OUTPUT_TOKEN, common.clone(), tpot.max(0.0));
        }
        if let Some(cost) = num_attr(span, "agent_tracer.cost.usd").filter(|c| *c >= 0.0) {
            store.counter(&LLM_COST, common, cost);
        }
    }

    /// The current cumulative values, spans and health alike.
    pub fn snapshot(&self) -> Snapshot {
        let (histograms, mut counters) = match self.store.lock() {
            Ok(store) => (
                HISTOGRAMS
                    .iter()
                    .zip(&store.histograms)
                    .map(|(def, points)| HistogramFamily {
                        def,
                        points: points.iter().map(|(a, p)| (a.clone(), p.clone())).collect(),
                    })
                    .collect(),
                COUNTERS
                    .iter()
                    .zip(&store.counters)
                    .map(|(def, points)| CounterFamily {
                        name: def.instrument.name.to_string(),
                        description: def.instrument.description.to_string(),
                        unit: def.instrument.unit,
                        prom_unit: def.instrument.prom_unit,
                        integer: def.integer,
                        points: points.iter().map(|(a, v)| (a.clone(), *v)).collect(),
                    })
                    .collect(),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        };
        counters.extend(health_counters(&self.health));
        Snapshot {
            start_unix_ns: self.start_unix_ns,
            time_unix_nano: unix_now_ns(),
            histograms,
            counters,
            gauges: self.coverage.families(),
        }
    }
}

impl Store {
    fn series<T>(
        map: &mut BTreeMap<Attributes, T>,
        attrs: Attributes,
        new: impl FnOnce() -> T,
    ) -> &mut T {
        let attrs = if map.len() >= MAX_SERIES_PER_METRIC && !map.contains_key(&attrs) {
            vec![(OVERFLOW_ATTRIBUTE, Label::Bool(true))]
        } else {
            attrs
        };
        map.entry(attrs).or_insert_with(new)
    }

    fn histogram(&mut self, def: &'static HistogramDef, attrs: Attributes, value: f64) {
        let i = index_of(&HISTOGRAMS, def);
        Self::series(&mut self.histograms[i], attrs, || {
            HistogramPoint::new(def.bounds)
        })
        .record(def.bounds, value);
    }

    fn counter(&mut self, def: &'static CounterDef, attrs: Attributes, by: f64) {
        let i = index_of(&COUNTERS, def);
        *Self::series(&mut self.counters[i], attrs, || 0.0) += by;
    }
}

/// Every health counter as `agent_tracer.<name>`, and the unsupported-TLS tally per binary.
fn health_counters(health: &Health) -> Vec<CounterFamily> {
    let mut families: Vec<CounterFamily> = Vec::new();
    for (name, description, value) in health.described() {
        // `export_dropped_spans{reason=buffer_full}`: one family, a point per label value.
        let (base, label) = match name.split_once('{') {
            Some((base, rest)) => (base, rest.trim_end_matches('}').split_once('=')),
            None => (name, None),
        };
        let attributes: Attributes = label
            .map(|(k, v)| vec![(k, Label::Str(v.to_string()))])
            .unwrap_or_default();
        let full_name = format!("agent_tracer.{base}");
        if let Some(family) = families.iter_mut().find(|f| f.name == full_name) {
            family.points.push((attributes, value as f64));
            continue;
        }
        let bytes = base.ends_with("_bytes") || base == "bytes";
        families.push(CounterFamily {
            name: full_name,
            description: description.trim().to_string(),
            unit: if bytes { "By" } else { "1" },
            // The names already say what they count (`…_bytes`).
            prom_unit: PromUnit::None,
            integer: true,
            points: vec![(attributes, value as f64)],
        });
    }
    let unsupported: Vec<(Attributes, f64)> = health
        .unsupported_tls
        .lock()
        .map(|map| {
            map.iter()
                .map(|(binary, (stack, n))| {
                    (
                        vec![
                            ("binary", Label::text(binary)),
                            ("stack", Label::Str(stack.to_string())),
                        ],
                        *n as f64,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    families.push(CounterFamily {
        name: "agent_tracer.unsupported_tls".to_string(),
        description: "Processes seen per binary whose TLS stack cannot be hooked yet.".to_string(),
        unit: "{process}",
        prom_unit: PromUnit::None,
        integer: true,
        points: unsupported,
    });
    families
}

/// The running exporters: the Prometheus endpoint and the OTLP push loop.
pub struct MetricsTasks {
    prometheus: Option<JoinHandle<()>>,
    otlp: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// Starts what `config` asks for. A default Prometheus address already taken (another tracer,
/// say) is a warning; an address asked for explicitly must work.
pub async fn start(
    config: &config::MetricsConfig,
    recorder: Arc<MetricsRecorder>,
    health: Arc<Health>,
) -> Result<MetricsTasks> {
    let host_name = crate::processes::procfs::host_name();
    let mut tasks = MetricsTasks {
        prometheus: None,
        otlp: None,
    };
    if let Some(listen) = &config.prometheus {
        match prometheus::serve(listen.addr, recorder.clone(), host_name.clone()).await {
            Ok((addr, task)) => {
                info!("serving Prometheus metrics on http://{addr}/metrics");
                tasks.prometheus = Some(task);
            }
            Err(e) if !listen.explicit => warn!("{e:#}; no Prometheus endpoint"),
            Err(e) => return Err(e),
        }
    }
    if let Some(otlp) = config.otlp.clone() {
        info!(endpoint = %otlp.endpoint, protocol = ?otlp.protocol, interval = ?config.export_interval, "exporting OTLP metrics");
        let exporter = otlp::MetricsExporter::new(otlp, recorder, health, host_name)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(exporter.run(config.export_interval, stop_rx));
        tasks.otlp = Some((stop_tx, task));
    }
    Ok(tasks)
}

impl MetricsTasks {
    /// Pushes the final totals over OTLP and closes the Prometheus endpoint.
    pub async fn shutdown(self) {
        if let Some((stop, task)) = self.otlp {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(task) = self.prometheus {
            task.abort();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
