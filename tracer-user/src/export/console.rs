//! The embedded default: live, readable agent activity on the terminal. Each agent run is a
//! tree that grows as its steps finish (model calls, tools, what the tools did), closed by a
//! summary line when the run ends; calls outside runs are listed under their process.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    sync::Arc,
};

use tokio::sync::mpsc;

use crate::span::{AttrValue, Span, SpanStatus};

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// Where each run's spans go in its tree.
#[derive(Default)]
struct Trees {
    depth: HashMap<[u8; 8], usize>,
    runs_shown: HashSet<[u8; 16]>,
    last_pid: Option<u32>,
}

/// Bounds the tree state of a tracer running for weeks.
const MAX_TREE_SPANS: usize = 100_000;

impl Trees {
    fn render(&mut self, span: &Span, style: &Style) -> String {
        if self.depth.len() > MAX_TREE_SPANS {
            self.depth.clear();
            self.runs_shown.clear();
        }
        let mut text = String::new();
        let is_root = span.parent_span_id.is_none() && span.name.starts_with("invoke_agent");
        let Some(parent) = span.parent_span_id.filter(|_| !is_root) else {
            if is_root {
                text.push_str(&run_summary(span, style));
                self.runs_shown.remove(&span.trace_id);
                self.last_pid = None;
            } else {
                if self.last_pid != Some(span.process.pid) {
                    text.push_str(&process_header(span, style));
                    text.push('\n');
                    self.last_pid = Some(span.process.pid);
                }
                text.push_str(&format!("  └─ {}", span_line(span, style)));
            }
            text.push('\n');
            return text;
        };
        if self.runs_shown.insert(span.trace_id) {
            text.push_str(&run_header(span, style));
            text.push('\n');
        }
        self.last_pid = None;
        // A step whose parent was not shown hangs from the run itself.
        let depth = self.depth.get(&parent).map_or(1, |d| d + 1);
        self.depth.insert(span.span_id, depth);
        text.push_str(&"   ".repeat(depth));
        text.push_str(&format!("├─ {}", span_line(span, style)));
        text.push('\n');
        text
    }
}

pub async fn run(mut spans: mpsc::Receiver<Arc<Span>>, color: bool) {
    let style = Style { color };
    let mut trees = Trees::default();
    while let Some(span) = spans.recv().await {
        let text = trees.render(&span, &style);
        let mut out = std::io::stdout().lock();
        // A closed stdout (piped into `head`) must not stop the tracer.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

fn process_header(span: &Span, style: &Style) -> String {
    let p = &span.process;
    let cmd = p.command_line.as_deref().unwrap_or("");
    format!(
        "{} {} {} {}",
        style.paint("1;36", "●"),
        style.paint("1", &p.executable_name),
        style.paint("2", &who(span)),
        style.paint("2", cmd)
    )
}

/// The process as a user finds it: host pid, the pid its namespace shows, its pod
/// (namespace/name, when known), its container.
fn who(span: &Span) -> String {
    let p = &span.process;
    let mut who = format!("pid {}", p.pid);
    if let Some(ns) = p.namespace_pid {
        who.push_str(&format!(" (ns pid {ns})"));
    }
    if let Some(pod) = p.pod.as_deref() {
        if let (Some(ns), Some(name)) = (&pod.namespace, &pod.name) {
            who.push_str(&format!(" pod {ns}/{name}"));
        }
    }
    if let Some(id) = &p.container_id {
        who.push_str(&format!(" container {}", &id[..12.min(id.len())]));
    }
    who
}

fn run_header(span: &Span, style: &Style) -> String {
    let agent =
        text(span, "gen_ai.agent.name").unwrap_or_else(|| span.process.executable_name.clone());
    let mut who = who(span);
    if let Some(c) = text(span, "gen_ai.conversation.id") {
        who.push_str(&format!(" conversation {c}"));
    }
    format!(
        "{} {} {}",
        style.paint("1;35", "▶ run"),
        style.paint("1", &agent),
        style.paint("2", &who)
    )
}

/// The run's end: outcome, size, tokens, cost, duration.
fn run_summary(span: &Span, style: &Style) -> String {
    let outcome = text(span, "agent_tracer.run.outcome").unwrap_or_default();
    let mark = match outcome.as_str() {
        "completed" => style.paint("1;32", "■ run completed"),
        "error" => style.paint("1;31", "■ run failed"),
        _ => style.paint("1;33", &format!("■ run {outcome}")),
    };
    let mut parts = vec![
        mark,
        style.paint("1", &text(span, "gen_ai.agent.name").unwrap_or_default()),
    ];
    if let Some(n) = text(span, "agent_tracer.run.llm_calls") {
        parts.push(format!("{n} calls"));
    }
    if let Some(n) = text(span, "agent_tracer.run.tool_executions") {
        parts.push(format!("{n} tools"));
    }
    if let (Some(i), Some(o)) = (
        text(span, "gen_ai.usage.input_tokens"),
        text(span, "gen_ai.usage.output_tokens"),
    ) {
        parts.push(format!("tokens {i}→{o}"));
    }
    if let Some(AttrValue::F64(usd)) = span.attr("agent_tracer.cost.usd") {
        parts.push(format!("${usd:.6}"));
    }
    if let Some(e) = text(span, "error.type") {
        parts.push(style.paint("1;31", &format!("✗ {e}")));
    }
    if span.attr("agent_tracer.run.loop_detected").is_some() {
        parts.push(style.paint("1;33", "loop detected"));
    }
    parts.push(millis(span.duration_ns()));
    parts.join("  ")
}

fn text(span: &Span, key: &str) -> Option<String> {
    match span.attr(key)? {
        AttrValue::Str(s) => Some(s.clone()),
        AttrValue::Int(i) => Some(i.to_string()),
        AttrValue::F64(f) => Some(f.to_string()),
        AttrValue::Bool(b) => Some(b.to_string()),
        AttrValue::StrArray(a) => Some(a.join(",")),
    }
}

fn millis(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.0}ms")
    }
}

/// One line per call: what, where, outcome, tokens, timing.
fn span_line(span: &Span, style: &Style) -> String {
    let mut parts = vec![style.paint("1", &span.name)];
    if let Some(p) = text(span, "gen_ai.provider.name") {
        parts.push(p);
    }
    if let (Some(a), Some(port)) = (text(span, "server.address"), text(span, "server.port")) {
        parts.push(style.paint("2", &format!("{a}:{port}")));
    }
    if let Some(code) = text(span, "process.exit.code") {
        let args = text(span, "process.command_args").unwrap_or_default();
        parts.push(style.paint("2", &args.replace(',', " ")));
        if code != "0" {
            parts.push(style.paint("1;31", &format!("✗ exit {code}")));
        } else {
            parts.push(style.paint("32", "exit 0"));
        }
    }
    match (&span.status, text(span, "http.response.status_code")) {
        (SpanStatus::Error(_), status) => {
            let what = text(span, "error.type").unwrap_or_default();
            let status = status.map(|s| format!("{s} ")).unwrap_or_default();
            parts.push(style.paint("1;31", &format!("✗ {status}{what}")));
        }
        (SpanStatus::Unset, Some(status)) => parts.push(style.paint("32", &status)),
        (SpanStatus::Unset, None) => {}
    }
    if let Some(m) = text(span, "gen_ai.response.model") {
        parts.push(format!("→ {m}"));
    }
    let (input, output) = (
        text(span, "gen_ai.usage.input_tokens"),
        text(span, "gen_ai.usage.output_tokens"),
    );
    if input.is_some() || output.is_some() {
        parts.push(format!(
            "tokens {}→{}",
            input.unwrap_or_else(|| "?".into()),
            output.unwrap_or_else(|| "?".into())
        ));
    }
    if let Some(f) = text(span, "gen_ai.response.finish_reasons") {
        parts.push(format!("finish {f}"));
    }
    if let Some(tools) = text(span, "agent_tracer.response.tool_call.names") {
        parts.push(style.paint("33", &format!("tools {tools}")));
    }
    if let Some(AttrValue::F64(usd)) = span.attr("agent_tracer.cost.usd") {
        parts.push(format!("${usd:.6}"));
    }
    parts.push(millis(span.duration_ns()));
    if let Some(AttrValue::F64(ttft)) = span.attr("gen_ai.response.time_to_first_chunk") {
        parts.push(format!("ttft {}", millis((ttft * 1e9) as u64)));
    }
    if let Some(lost) = text(span, "agent_tracer.capture.bytes_lost") {
        parts.push(style.paint("1;33", &format!("lost {lost} bytes")));
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{enrich::ProcessInfo, span::SpanKind};

    #[test]
    fn line_shows_the_essentials_without_colour() {
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: "chat gpt-4o".into(),
            kind: SpanKind::Client,
            events: Vec::new(),
            start_unix_ns: 0,
            end_unix_ns: 1_500_000_000,
            attributes: vec![
                ("gen_ai.provider.name", "openai".into()),
                ("http.response.status_code", 200u16.into()),
                ("gen_ai.usage.input_tokens", 12i64.into()),
                ("gen_ai.usage.output_tokens", 5i64.into()),
                (
                    "gen_ai.response.finish_reasons",
                    vec!["stop".to_string()].into(),
                ),
                ("gen_ai.response.time_to_first_chunk", 0.25.into()),
            ],
            status: SpanStatus::Unset,
            process: Arc::new(ProcessInfo::unknown(1)),
        };
        let line = span_line(&span, &Style { color: false });
        assert_eq!(
            line,
            "chat gpt-4o  openai  200  tokens 12→5  finish stop  1.50s  ttft 250ms"
        );
    }

    fn span(
        name: &str,
        id: u8,
        parent: Option<u8>,
        attributes: Vec<(&'static str, AttrValue)>,
    ) -> Span {
        Span {
            trace_id: [7; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            name: name.into(),
            kind: SpanKind::Internal,
            events: Vec::new(),
            start_unix_ns: 0,
            end_unix_ns: 2_000_000,
            attributes,
            status: SpanStatus::Unset,
            process: Arc::new(ProcessInfo::unknown(9)),
        }
    }

    #[test]
    fn a_run_renders_as_a_tree_closed_by_its_summary() {
        let style = Style { color: false };
        let mut trees = Trees::default();
        let agent = || ("gen_ai.agent.name", AttrValue::from("bot"));
        let mut out = String::new();
        out += &trees.render(&span("chat m", 2, Some(1), vec![agent()]), &style);
        out += &trees.render(&span("execute_tool t", 3, Some(1), vec![agent()]), &style);
        out += &trees.render(
            &span(
                "exec sh",
                4,
                Some(3),
                vec![
                    ("process.exit.code", 3i64.into()),
                    (
                        "process.command_args",
                        vec!["sh".to_string(), "-c".into()].into(),
                    ),
                ],
            ),
            &style,
        );
        out += &trees.render(
            &span(
                "invoke_agent bot",
                1,
                None,
                vec![
                    agent(),
                    ("agent_tracer.run.outcome", "completed".into()),
                    ("agent_tracer.run.llm_calls", 1u64.into()),
                    ("agent_tracer.cost.usd", 0.0015.into()),
                ],
            ),
            &style,
        );
        assert_eq!(
            out,
            "▶ run bot pid 9\n\
             \x20  ├─ chat m  2ms\n\
             \x20  ├─ execute_tool t  2ms\n\
             \x20     ├─ exec sh  sh -c  ✗ exit 3  2ms\n\
             ■ run completed  bot  1 calls  $0.001500  2ms\n"
        );
    }

    #[test]
    fn headers_name_the_pod_when_known() {
        let style = Style { color: false };
        let mut process = ProcessInfo::unknown(4242);
        process.executable_name = "python3".into();
        process.namespace_pid = Some(1);
        process.container_id = Some("c0de".repeat(16));
        process.pod = Some(Arc::new(crate::enrich::PodInfo {
            uid: "u-1".into(),
            name: Some("research-agent-5d78c9869d-x7k2p".into()),
            namespace: Some("agents".into()),
            container_name: Some("agent".into()),
        }));
        let mut call = span("chat m", 2, None, Vec::new());
        call.process = Arc::new(process.clone());
        assert_eq!(
            process_header(&call, &style),
            "● python3 pid 4242 (ns pid 1) pod agents/research-agent-5d78c9869d-x7k2p \
             container c0dec0dec0de "
        );
        let mut step = span("chat m", 3, Some(1), Vec::new());
        step.process = Arc::new(process.clone());
        assert!(run_header(&step, &style)
            .contains("pid 4242 (ns pid 1) pod agents/research-agent-5d78c9869d-x7k2p container"));

        // A pod whose name is not known (no log tree, no API) is not shown half-named.
        process.pod = Some(Arc::new(crate::enrich::PodInfo {
            uid: "u-1".into(),
            name: None,
            namespace: None,
            container_name: None,
        }));
        call.process = Arc::new(process);
        assert_eq!(
            process_header(&call, &style),
            "● python3 pid 4242 (ns pid 1) container c0dec0dec0de "
        );
    }
}
