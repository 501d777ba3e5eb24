//! "Added latency per TLS call": the HTTPS keep-alive loop from three clients whose TLS the
//! tracer hooks in three different ways (Python on the shared libssl, node's statically linked
//! OpenSSL, Go's crypto/tls), without and with the tracer. The added latency per request is
//! divided by the TLS calls each request makes, counted by the tracer itself.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result};

use super::{
    cpu_count, header, list, machine, median, run_with_tracer, today, Client, ClientResult, Env,
    Others, TracerRun, RUNS, WARMUP,
};
use crate::util::{output_of, target_dir};

pub(super) const SECTION: &str = "## Added latency per TLS call: OpenSSL, Node, Go";

const CLIENT_MJS: &str = include_str!("../../bench-clients/tls_client.mjs");
const CLIENT_GO: &str = include_str!("../../bench-clients/tls_client.go");
/// The Go client's executable name, which the tracer's `attached` log line names.
const GO_BINARY: &str = "tls-client-go";

/// One client's runs.
struct Measured {
    client: Client,
    /// What the client is and which TLS code the tracer hooks in it, for the table.
    stack: String,
    off: Vec<ClientResult>,
    on: Vec<TracerRun>,
}

pub(super) fn measure(env: &Env, python: Client) -> Result<String> {
    header("building the node and Go bench clients");
    let node_script = env.dir.join("tls_client.mjs");
    fs::write(&node_script, CLIENT_MJS)
        .with_context(|| format!("writing {}", node_script.display()))?;
    let go_binary = build_go_client(&env.dir)?;
    println!("{}\n{}", node_script.display(), go_binary.display());

    let node = Client {
        name: "node",
        program: "node".into(),
        script: Some(node_script.into()),
        hooked_at_exec: None,
        ..python.clone()
    };
    let go = Client {
        name: "go",
        program: go_binary,
        script: None,
        // The tracer finds a Go program when a process runs it, so each traced run holds the
        // client until it is hooked.
        hooked_at_exec: Some(GO_BINARY.to_string()),
        ..python.clone()
    };
    let mut measured = vec![
        Measured {
            stack: python_stack(),
            client: python,
            off: Vec::new(),
            on: Vec::new(),
        },
        Measured {
            stack: node_stack(),
            client: node,
            off: Vec::new(),
            on: Vec::new(),
        },
        Measured {
            stack: go_stack(),
            client: go,
            off: Vec::new(),
            on: Vec::new(),
        },
    ];

    let mut others = Others::default();
    for m in &mut measured {
        let name = m.client.name;
        for i in 1..=RUNS {
            header(&format!("{name}: run {i}/{RUNS} without the tracer"));
            env.before_run(&mut others)?;
            let result = m.client.run(None)?;
            others.check(&[]);
            println!("{}", result.line);
            m.off.push(result);

            header(&format!("{name}: run {i}/{RUNS} with the tracer"));
            env.before_run(&mut others)?;
            let result = run_with_tracer(env, &format!("tls-{name}-{i}"), &m.client, &mut others)?;
            println!("{}", result.client.line);
            println!("{}", result.final_line);
            m.on.push(result);
        }
    }
    Ok(render(env.requests, &measured, &others))
}

/// `go build` of the standard-library-only client, in GOPATH mode with caches under target/.
pub(super) fn build_go_client(dir: &Path) -> Result<std::path::PathBuf> {
    let source = dir.join("tls_client.go");
    fs::write(&source, CLIENT_GO).with_context(|| format!("writing {}", source.display()))?;
    let out = dir.join(GO_BINARY);
    let go = target_dir().join("bench").join("go");
    output_of(
        Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&out)
            .arg(&source)
            // A standard-library-only file needs no go.mod and no module download.
            .env("GO111MODULE", "off")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env_remove("GOFLAGS")
            .env("GOCACHE", go.join("cache"))
            .env("GOPATH", go.join("path"))
            // A static binary, without a C toolchain, as the end-to-end tests build theirs.
            .env("CGO_ENABLED", "0"),
    )
    .context("building the Go bench client")?;
    Ok(out)
}

fn python_stack() -> String {
    let version = output_of(Command::new("python3").args([
        "-c",
        "import ssl, sys; print(sys.version.split()[0] + ' / ' + ssl.OPENSSL_VERSION)",
    ]))
    .unwrap_or_else(|_| "?".into());
    format!("Python `http.client` ({version}, the shared libssl)")
}

fn node_stack() -> String {
    let version = output_of(Command::new("node").args([
        "-p",
        "process.version + ' / OpenSSL ' + process.versions.openssl",
    ]))
    .unwrap_or_else(|_| "?".into());
    format!("node `https` ({version}, linked into the node binary)")
}

fn go_stack() -> String {
    let version = output_of(Command::new("go").arg("version"))
        .ok()
        .and_then(|v| v.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("Go `net/http` ({version}, crypto/tls)")
}

/// A signed microsecond figure.
fn us(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.1} µs")
    } else {
        "n/a".into()
    }
}

fn render(requests: u32, measured: &[Measured], others: &Others) -> String {
    let per_run = f64::from(requests + WARMUP);
    let cpus = cpu_count();
    let mut s = String::new();
    s.push_str(SECTION);
    s.push_str("\n\n");
    s.push_str(&format!(
        "Measured {date} on {machine} with `cargo xtask bench --requests {requests}`.\n\n\
         Three clients each send {requests} chat-completion POSTs (after {WARMUP} warm-up \
         requests) over one keep-alive HTTPS connection to the local mock OpenAI server \
         (`mock-llm`, rustls, never hooked: `--skip-executable`) and time each request: Python `http.client`, node's \
         `https` module (`https.Agent({{keepAlive: true, maxSockets: 1}})`, timed with \
         `process.hrtime.bigint()`) and Go's `net/http` (HTTP/1.1 forced, \
         `MaxIdleConnsPerHost: 1`). Per client, {RUNS} runs without the tracer and {RUNS} with a \
         fresh `agent-tracer run --console never` (no exporter), interleaved; each figure is the \
         median of its {RUNS} runs. The Go client is held before its first request until the \
         tracer's log says it hooked the executable (the tracer finds a Go program when it is \
         executed); node and the shared libssl are hooked at the tracer's start.\n\n\
         *TLS calls per request* is the tracer's own `kernel_tls_calls` counter at the end of a \
         traced run divided by the {requests} + {WARMUP} requests of that run. It counts the \
         calls that moved bytes: a call that returns nothing (a non-blocking `SSL_read` that \
         would block, which node's event loop makes) is probed too but not counted, so for such \
         a client the per-call figure overstates what one probed call costs. *Added per TLS \
         call* is the added latency per request divided by that number.\n\n",
        date = today(),
        machine = machine(),
    ));
    if cpus <= 2 {
        s.push_str(&format!(
            "With only {cpus} CPUs the client, the mock server and the tracer share cores: the \
             added latency includes the tracer's user-space work (reading the ring buffer, \
             parsing HTTP, building spans) competing with the client and the server for a CPU, \
             not only the time the probes take inside the client's TLS calls.\n\n"
        ));
    } else {
        s.push_str(&format!(
            "On {cpus} CPUs the client, the mock server and the tracer may still share cores: \
             the added latency can include the tracer's user-space work competing for a CPU, not \
             only the probes' own time.\n\n"
        ));
    }
    s.push_str(&others.caution());
    let loads: Vec<f64> = measured
        .iter()
        .flat_map(|m| {
            m.off
                .iter()
                .chain(m.on.iter().map(|t| &t.client))
                .map(|r| r.other_cpus)
        })
        .collect();
    s.push_str(&super::load_note(&loads));
    s.push_str(
        "| client (TLS hooked) | TLS calls per request | p50 without → with | added at p50 | \
         p99 without → with | added at p99 | added per TLS call at p50 | added per TLS call at \
         p99 | tracer CPU per 1,000 requests |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let mut details = String::new();
    let mut finals = String::new();
    let mut mismatched = Vec::new();
    for m in measured {
        let off_p50 = median(m.off.iter().map(|r| r.p50_us).collect());
        let on_p50 = median(m.on.iter().map(|r| r.client.p50_us).collect());
        let off_p99 = median(m.off.iter().map(|r| r.p99_us).collect());
        let on_p99 = median(m.on.iter().map(|r| r.client.p99_us).collect());
        let calls: Vec<f64> =
            m.on.iter()
                .map(|r| r.counters.get("kernel_tls_calls") as f64 / per_run)
                .collect();
        let calls_per_request = median(calls.clone());
        let cpu_per_1000 = median(
            m.on.iter()
                .map(|r| r.cpu_run_s * 1000.0 * 1000.0 / f64::from(requests))
                .collect(),
        );
        let (added_p50, added_p99) = (on_p50 - off_p50, on_p99 - off_p99);
        let per_call = |added: f64| {
            if calls_per_request > 0.0 {
                us(added / calls_per_request)
            } else {
                "n/a (no TLS call counted)".into()
            }
        };
        s.push_str(&format!(
            "| {stack} | {calls_per_request:.2} | {off_p50:.0} → {on_p50:.0} µs | {} | \
             {off_p99:.0} → {on_p99:.0} µs | {} | {} | {} | {cpu_per_1000:.1} ms |\n",
            us(added_p50),
            us(added_p99),
            per_call(added_p50),
            per_call(added_p99),
            stack = m.stack,
        ));
        details.push_str(&format!(
            "- {name}: p50 µs without {}; with {}. p99 µs without {}; with {}. Throughput req/s \
             without {}; with {}. TLS calls per request {}.\n",
            list(m.off.iter().map(|r| r.p50_us), 0),
            list(m.on.iter().map(|r| r.client.p50_us), 0),
            list(m.off.iter().map(|r| r.p99_us), 0),
            list(m.on.iter().map(|r| r.client.p99_us), 0),
            list(m.off.iter().map(|r| r.rps), 0),
            list(m.on.iter().map(|r| r.client.rps), 0),
            list(calls, 2),
            name = m.client.name,
        ));
        for r in &m.on {
            finals.push_str(&format!("{}: {}\n", m.client.name, r.final_line));
            if r.counters.get("llm_calls") != u64::from(requests + WARMUP) {
                mismatched.push(m.client.name);
            }
        }
    }
    s.push('\n');
    s.push_str("Per run:\n\n");
    s.push_str(&details);
    s.push('\n');
    if !mismatched.is_empty() {
        mismatched.dedup();
        s.push_str(&format!(
            "Caution: in some traced runs of {} the tracer did not count exactly {} LLM calls, so \
             other TLS traffic on the host (or missed calls) may be in its TLS call count; see the \
             final log lines.\n\n",
            mismatched.join(", "),
            requests + WARMUP
        ));
    }
    s.push_str(&format!(
        "The tracer's final log line of each traced run ({requests} + {WARMUP} warm-up calls \
         each):\n\n```text\n{finals}```\n"
    ));
    s
}
