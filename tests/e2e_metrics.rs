//! End-to-end metrics, everything real: the eBPF programs loaded by the agent-tracer binary, an
//! unmodified Python program using the official `openai` SDK over HTTPS (system OpenSSL)
//! against a local OpenAI-compatible server, the tracer's Prometheus endpoint scraped over HTTP
//! on 127.0.0.1, and real OTLP receivers (gRPC MetricsService, HTTP /v1/metrics). The numbers
//! are checked against what the client sent, what the server answered and the exported spans.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{metric::Data, number_data_point, HistogramDataPoint, Metric},
};
use tracer_testkit::{
    e2e::{self, free_port, of_pid, require_root, SERIAL},
    mock_openai::{self, MockOpenAi, RESPONSE_MODEL},
    otlp::{self, as_f64, as_int, as_str, find, OtlpReceiver},
    prometheus::{self, matching, Sample},
    python, tracer,
};

const SPAN_WAIT: Duration = Duration::from_secs(30);
const METRICS_WAIT: Duration = Duration::from_secs(15);
/// The genai-spec §1.8 buckets, as the tracer must use them.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/openai_calls.py")
}

/// Runs the client to completion; its pid (from its first line).
async fn run_client(python: &Path, server: &MockOpenAi, scenarios: &[&str]) -> Result<u32> {
    let mut child = Command::new(python)
        .arg(client_script())
        .arg(server.base_url())
        .args(scenarios)
        .env("SSL_CERT_FILE", &server.cert_path)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the Python client")?;
    let mut stdout = BufReader::new(child.stdout.take().context("client stdout")?);
    tokio::task::spawn_blocking(move || {
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        let pid: serde_json::Value = serde_json::from_str(&first)
            .with_context(|| format!("client's first line {first:?}"))?;
        let pid = pid["pid"].as_u64().context("client pid")? as u32;
        for _ in stdout.lines().map_while(Result::ok) {}
        let status = child.wait()?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("client failed ({status}): {err}");
        }
        Ok(pid)
    })
    .await?
}

/// How many of `values` each bound holds (cumulative, Prometheus-style), ending with +Inf.
fn cumulative(values: &[f64], bounds: &[f64]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .map(|b| (b, values.iter().filter(|v| **v <= b).count() as u64))
        .collect()
}

/// Asserts a Prometheus histogram series: count, sum, and every bucket.
fn assert_prom_histogram(
    samples: &[Sample],
    name: &str,
    labels: &[(&str, &str)],
    values: &[f64],
    bounds: &[f64],
) {
    let one = |suffix: &str, extra: Option<(&str, &str)>| -> f64 {
        let mut l = labels.to_vec();
        l.extend(extra);
        let found = matching(samples, &format!("{name}_{suffix}"), &l);
        assert_eq!(found.len(), 1, "{name}_{suffix} {l:?}: {found:#?}");
        found[0].value
    };
    assert_eq!(
        one("count", None),
        values.len() as f64,
        "{name} count {labels:?}"
    );
    let sum: f64 = values.iter().sum();
    assert!(
        (one("sum", None) - sum).abs() < 1e-6,
        "{name} sum {labels:?}: {} vs {sum}",
        one("sum", None)
    );
    let buckets = matching(samples, &format!("{name}_bucket"), labels);
    assert_eq!(buckets.len(), bounds.len() + 1, "{name} buckets {labels:?}");
    for (bound, expected) in cumulative(values, bounds) {
        let got = buckets
            .iter()
            .find(|s| {
                s.labels.get("le").and_then(|le| match le.as_str() {
                    "+Inf" => Some(f64::INFINITY),
                    v => v.parse::<f64>().ok(),
                }) == Some(bound)
            })
            .unwrap_or_else(|| panic!("{name} has no le={bound} bucket"));
        assert_eq!(got.value, expected as f64, "{name} le={bound} {labels:?}");
    }
}

fn attr_is(attrs: &[KeyValue], key: &str, value: &str) -> bool {
    as_str(find(attrs, key)) == Some(value)
}

/// The histogram point of `metric` whose attributes include `labels` (exactly one).
fn otlp_histogram<'a>(
    metric: &'a Metric,
    labels: &[(&str, &str)],
    port: u16,
) -> &'a HistogramDataPoint {
    let Some(Data::Histogram(h)) = &metric.data else {
        panic!("{} is not a histogram", metric.name)
    };
    let found: Vec<&HistogramDataPoint> = h
        .data_points
        .iter()
        .filter(|p| {
            as_int(find(&p.attributes, "server.port")) == Some(port.into())
                && labels.iter().all(|(k, v)| attr_is(&p.attributes, k, v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{} {labels:?}: {found:#?}", metric.name);
    found[0]
}

fn assert_otlp_histogram(point: &HistogramDataPoint, values: &[f64], bounds: &[f64]) {
    assert_eq!(point.count, values.len() as u64);
    let sum: f64 = values.iter().sum();
    assert!((point.sum.unwrap_or_default() - sum).abs() < 1e-6);
    assert_eq!(point.explicit_bounds, bounds);
    let per_bucket: Vec<u64> = cumulative(values, bounds)
        .iter()
        .scan(0, |prev, (_, c)| {
            let n = c - *prev;
            *prev = *c;
            Some(n)
        })
        .collect();
    assert_eq!(point.bucket_counts, per_bucket);
}

/// The monotonic sum `name` at the attributes `labels`, over OTLP.
fn otlp_counter(
    receiver: &OtlpReceiver,
    name: &str,
    labels: &[(&str, &str)],
    port: Option<u16>,
) -> Option<f64> {
    let (_, metric) = receiver.latest_metric(name)?;
    let Some(Data::Sum(sum)) = &metric.data else {
        return None;
    };
    assert!(sum.is_monotonic, "{name} is a counter");
    sum.data_points
        .iter()
        .find(|p| {
            port.is_none_or(|port| as_int(find(&p.attributes, "server.port")) == Some(port.into()))
                && labels.iter().all(|(k, v)| attr_is(&p.attributes, k, v))
        })
        .and_then(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
            Some(number_data_point::Value::AsDouble(d)) => Some(d),
            None => None,
        })
}

async fn scrape(addr: SocketAddr) -> Result<Vec<Sample>> {
    let s = prometheus::get(addr, "/metrics").await?;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(
        s.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(s.body.ends_with("# EOF\n"), "{}", s.body);
    prometheus::parse(&s.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_calls_in_prometheus_and_otlp_grpc_metrics() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let receiver = otlp::start_grpc().await?;
    let prom: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let running = tracer::start(
        tracer_bin(),
        "metrics-grpc",
        &[
            "run",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
            "--prometheus-listen",
            &prom.to_string(),
        ],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "500")],
    )?;

    let pid = run_client(&python, &server, &["plain", "stream", "rate_limited"]).await?;
    let spans = receiver
        .wait_for("the client's 3 calls", SPAN_WAIT, |s| {
            of_pid(s, pid).len() >= 3
        })
        .await?;
    let spans = of_pid(&spans, pid);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let received = server.received();
    assert_eq!(received.len(), 3, "the SDK must not retry");
    let port = server.addr.port();
    let port_s = port.to_string();
    // The agent stage names an interpreted agent after its script.
    let agent = "openai_calls".to_string();
    let seconds = |i: usize| {
        (spans[i].span.end_time_unix_nano - spans[i].span.start_time_unix_nano) as f64 / 1e9
    };
    let ttfc = as_f64(spans[1].attr("gen_ai.response.time_to_first_chunk")).context("ttfc")?;
    // What the server answered: usage for the plain call depends on the request's size.
    let plain_input = mock_openai::prompt_tokens_for(received[0].body_len) as f64;
    assert_eq!(
        as_int(spans[0].attr("gen_ai.usage.input_tokens")),
        Some(plain_input as i64)
    );
    let inputs = [plain_input, 57.0];
    let outputs = [5.0, 17.0];

    // Prometheus, scraped live: the spans were counted before they were exported. The kernel's
    // own counters are read on the tracer's once-a-second tick, which may not have come since
    // the calls: scrape until it has (the assertion below still fails if it never does).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let samples = scrape(prom).await?;
        let refreshed = matching(&samples, "agent_tracer_kernel_tls_calls_total", &[])
            .first()
            .is_some_and(|s| s.value > 0.0);
        if refreshed || std::time::Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ok: Vec<(&str, &str)> = vec![
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "openai"),
        ("gen_ai_request_model", "gpt-4o-mini"),
        ("gen_ai_response_model", RESPONSE_MODEL),
        ("server_address", "127.0.0.1"),
        ("server_port", &port_s),
        ("gen_ai_agent_name", &agent),
    ];
    let limited: Vec<(&str, &str)> = vec![
        ("gen_ai_request_model", "rate-limited"),
        ("server_port", &port_s),
        ("error_type", "rate_limit_exceeded"),
        ("gen_ai_agent_name", &agent),
    ];
    let calls = matching(
        &samples,
        "agent_tracer_model_calls_total",
        &[("server_port", &port_s)],
    );
    assert_eq!(
        calls.len(),
        2,
        "one series per model and outcome: {calls:#?}"
    );
    let ok_calls = matching(&samples, "agent_tracer_model_calls_total", &ok);
    assert_eq!(ok_calls.len(), 1);
    assert_eq!(ok_calls[0].value, 2.0);
    assert!(!ok_calls[0].labels.contains_key("error_type"));
    let limited_calls = matching(&samples, "agent_tracer_model_calls_total", &limited);
    assert_eq!(limited_calls.len(), 1);
    assert_eq!(limited_calls[0].value, 1.0);

    let duration = "gen_ai_client_operation_duration_seconds";
    assert_prom_histogram(
        &samples,
        duration,
        &ok,
        &[seconds(0), seconds(1)],
        DURATION_BUCKETS,
    );
    assert_prom_histogram(
        &samples,
        duration,
        &limited,
        &[seconds(2)],
        DURATION_BUCKETS,
    );
    let tokens = "gen_ai_client_token_usage";
    let mut input = ok.clone();
    input.push(("gen_ai_token_type", "input"));
    let mut output = ok.clone();
    output.push(("gen_ai_token_type", "output"));
    assert_prom_histogram(&samples, tokens, &input, &inputs, TOKEN_BUCKETS);
    assert_prom_histogram(&samples, tokens, &output, &outputs, TOKEN_BUCKETS);
    assert!(
        matching(
            &samples,
            "gen_ai_client_token_usage_count",
            &[("gen_ai_request_model", "rate-limited")]
        )
        .is_empty(),
        "no usage metric for a call that reported none"
    );
    assert_prom_histogram(
        &samples,
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        &ok,
        &[ttfc],
        DURATION_BUCKETS,
    );
    let records = matching(&samples, "agent_tracer_records_total", &[]);
    assert_eq!(records.len(), 1);
    assert!(records[0].value > 0.0, "{records:?}");
    let llm_calls = matching(&samples, "agent_tracer_llm_calls_total", &[]);
    assert!(llm_calls[0].value >= 3.0, "{llm_calls:?}");
    let ringbuf_full = matching(
        &samples,
        "agent_tracer_kernel_ringbuf_full_records_total",
        &[],
    );
    assert_eq!(ringbuf_full.len(), 1, "kernel drop counters are exported");
    let tls_calls = matching(&samples, "agent_tracer_kernel_tls_calls_total", &[]);
    assert!(
        tls_calls[0].value > 0.0,
        "kernel counters refresh while running: {tls_calls:?}"
    );

    // The same numbers over OTLP gRPC.
    receiver
        .wait_until("OTLP metrics with the 3 calls", METRICS_WAIT, |r| {
            let ok = otlp_counter(
                r,
                "agent_tracer.model.calls",
                &[("gen_ai.request.model", "gpt-4o-mini")],
                Some(port),
            );
            let limited = otlp_counter(
                r,
                "agent_tracer.model.calls",
                &[("gen_ai.request.model", "rate-limited")],
                Some(port),
            );
            ok == Some(2.0) && limited == Some(1.0)
        })
        .await?;
    let (resource_metrics, token_usage) = receiver
        .latest_metric("gen_ai.client.token.usage")
        .context("token usage over OTLP")?;
    let resource = resource_metrics.resource.context("resource")?.attributes;
    assert_eq!(
        as_str(find(&resource, "service.name")),
        Some("agent-tracer")
    );
    assert_eq!(token_usage.unit, "{token}");
    let otlp_ok = [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o-mini"),
        ("gen_ai.response.model", RESPONSE_MODEL),
        ("gen_ai.agent.name", agent.as_str()),
    ];
    let mut otlp_input = otlp_ok.to_vec();
    otlp_input.push(("gen_ai.token.type", "input"));
    let mut otlp_output = otlp_ok.to_vec();
    otlp_output.push(("gen_ai.token.type", "output"));
    assert_otlp_histogram(
        otlp_histogram(&token_usage, &otlp_input, port),
        &inputs,
        TOKEN_BUCKETS,
    );
    assert_otlp_histogram(
        otlp_histogram(&token_usage, &otlp_output, port),
        &outputs,
        TOKEN_BUCKETS,
    );
    let (_, duration) = receiver
        .latest_metric("gen_ai.client.operation.duration")
        .context("duration over OTLP")?;
    assert_eq!(duration.unit, "s");
    assert_otlp_histogram(
        otlp_histogram(&duration, &otlp_ok, port),
        &[seconds(0), seconds(1)],
        DURATION_BUCKETS,
    );
    assert_otlp_histogram(
        otlp_histogram(&duration, &[("error.type", "rate_limit_exceeded")], port),
        &[seconds(2)],
        DURATION_BUCKETS,
    );
    let records = otlp_counter(&receiver, "agent_tracer.records", &[], None).context("records")?;
    assert!(records > 0.0);

    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stderr.contains(&format!(
            "serving Prometheus metrics on http://{prom}/metrics"
        )),
        "{}",
        output.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_configured_http_metrics_flushed_at_shutdown() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let python = python::venv_python()?;
    let server = mock_openai::start(&e2e::certs_dir()).await?;
    let receiver = otlp::start_http().await?;
    let endpoint = receiver.endpoint();
    let running = tracer::start(
        tracer_bin(),
        "metrics-http",
        &["run", "--prometheus-listen", "off"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            // Far beyond the test: the only export is the one at shutdown.
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        ],
    )?;
    let pid = run_client(&python, &server, &["plain"]).await?;
    receiver
        .wait_for("the plain call", SPAN_WAIT, |s| !of_pid(s, pid).is_empty())
        .await?;
    assert!(
        receiver.metrics_requests().is_empty(),
        "no periodic export within the interval"
    );
    let output = running.stop()?;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        !output.stderr.contains("serving Prometheus"),
        "{}",
        output.stderr
    );

    assert_eq!(
        receiver.metrics_requests().len(),
        1,
        "one export, at shutdown"
    );
    let received = server.received();
    let port = server.addr.port();
    let input = mock_openai::prompt_tokens_for(received[0].body_len) as f64;
    let (_, tokens) = receiver
        .latest_metric("gen_ai.client.token.usage")
        .context("token usage")?;
    assert_otlp_histogram(
        otlp_histogram(&tokens, &[("gen_ai.token.type", "input")], port),
        &[input],
        TOKEN_BUCKETS,
    );
    assert_otlp_histogram(
        otlp_histogram(&tokens, &[("gen_ai.token.type", "output")], port),
        &[5.0],
        TOKEN_BUCKETS,
    );
    assert_eq!(
        otlp_counter(&receiver, "agent_tracer.model.calls", &[], Some(port)),
        Some(1.0)
    );
    // The flush comes after the span exporters closed, so their final counts are in it.
    let exported = otlp_counter(&receiver, "agent_tracer.exported_spans", &[], None)
        .context("exported_spans")?;
    assert!(exported >= 1.0, "{exported}");
    for reason in ["queue_full", "buffer_full", "rejected", "shutdown"] {
        assert_eq!(
            otlp_counter(
                &receiver,
                "agent_tracer.export_dropped_spans",
                &[("reason", reason)],
                None
            ),
            Some(0.0),
            "{reason}"
        );
    }
    Ok(())
}
