//! The embedded default: live, readable agent activity on the terminal. Each agent run is a
//! tree that grows as its steps finish (model calls, tools, what the tools did), closed by a
//! summary line when the run ends; calls outside runs are listed under their process.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    sync::Arc,
};

use tokio::sync::mpsc;

use crate::model::span::{AttrValue, Span, SpanStatus};

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

/// Where each run's spans go in its tree. Spans come as they finish, children before their
/// parents (a `tee` inside a tool's `bash` ends before the `bash`): a span whose parent has not
/// been drawn waits for it and is drawn beneath it, so every span stands under its parent
/// whatever order they finish in.
#[derive(Default)]
struct Trees {
    depth: HashMap<[u8; 8], usize>,
    /// Spans waiting for their parent to be drawn, by that parent, in the order they came.
    waiting: HashMap<[u8; 8], Vec<Arc<Span>>>,
    waiting_count: usize,
    /// Each trace's run root, learnt from its first model call or tool (the root itself comes
    /// last, as the run's summary). Steps of a sub-agent's run in the same trace hang from
    /// their own root, which waits like any span.
    run_roots: HashMap<[u8; 16], [u8; 8]>,
    runs_shown: HashSet<[u8; 16]>,
    /// Runs whose summary was drawn: what comes for them later is drawn at once.
    runs_ended: HashSet<[u8; 16]>,
    last_pid: Option<u32>,
}

/// Bounds the tree state of a tracer running for weeks.
const MAX_TREE_SPANS: usize = 100_000;

/// Bounds the spans held back for a parent that may never come.
const MAX_WAITING_SPANS: usize = 10_000;

/// Longer command lines are cut, their length said.
const MAX_COMMAND_CHARS: usize = 160;

impl Trees {
    fn render(&mut self, span: Arc<Span>, style: &Style) -> String {
        if self.depth.len() > MAX_TREE_SPANS || self.runs_ended.len() > MAX_TREE_SPANS {
            self.depth.clear();
            self.run_roots.clear();
            self.runs_shown.clear();
            self.runs_ended.clear();
        }
        let mut text = String::new();
        let is_root = span.parent_span_id.is_none() && span.name.starts_with("invoke_agent");
        let Some(parent) = span.parent_span_id.filter(|_| !is_root) else {
            if is_root {
                self.draw_orphans(span.trace_id, style, &mut text);
                text.push_str(&run_summary(&span, style));
                self.runs_shown.remove(&span.trace_id);
                self.runs_ended.insert(span.trace_id);
                self.run_roots.remove(&span.trace_id);
                self.last_pid = None;
            } else {
                if self.last_pid != Some(span.process.pid) {
                    text.push_str(&process_header(&span, style));
                    text.push('\n');
                    self.last_pid = Some(span.process.pid);
                }
                text.push_str(&format!("  └─ {}", span_line(&span, style)));
            }
            text.push('\n');
            return text;
        };
        if let Some(depth) = self.depth.get(&parent) {
            let depth = depth + 1;
            self.draw(span, depth, style, &mut text);
        } else if self.run_roots.get(&span.trace_id) == Some(&parent) {
            self.draw(span, 1, style, &mut text);
        } else if is_run_step(&span) && !self.run_roots.contains_key(&span.trace_id) {
            self.run_roots.insert(span.trace_id, parent);
            self.draw(span, 1, style, &mut text);
            // What came before the run's first step and hangs from its root.
            if let Some(children) = self.waiting.remove(&parent) {
                self.waiting_count -= children.len();
                for child in children {
                    self.draw(child, 1, style, &mut text);
                }
            }
        } else if self.runs_ended.contains(&span.trace_id)
            || self.waiting_count >= MAX_WAITING_SPANS
        {
            // Its parent will not be drawn now: it hangs from the run itself.
            self.draw(span, 1, style, &mut text);
        } else {
            self.waiting_count += 1;
            self.waiting.entry(parent).or_default().push(span);
        }
        text
    }

    /// One step at `depth`, then whatever waited for it, beneath it.
    fn draw(&mut self, span: Arc<Span>, depth: usize, style: &Style, text: &mut String) {
        if self.runs_shown.insert(span.trace_id) {
            text.push_str(&run_header(&span, style));
            text.push('\n');
        }
        self.last_pid = None;
        self.depth.insert(span.span_id, depth);
        text.push_str(&"   ".repeat(depth));
        text.push_str(&format!("├─ {}", span_line(&span, style)));
        text.push('\n');
        if let Some(children) = self.waiting.remove(&span.span_id) {
            self.waiting_count -= children.len();
            for child in children {
                self.draw(child, depth + 1, style, text);
            }
        }
    }

    /// At the run's end, what still waits for a parent that never came hangs from the run.
    fn draw_orphans(&mut self, trace_id: [u8; 16], style: &Style, text: &mut String) {
        let waiting_ids: HashSet<[u8; 8]> = self
            .waiting
            .values()
            .flatten()
            .filter(|s| s.trace_id == trace_id)
            .map(|s| s.span_id)
            .collect();
        let mut tops: Vec<Arc<Span>> = Vec::new();
        self.waiting.retain(|parent, children| {
            let of_run = children.iter().any(|s| s.trace_id == trace_id);
            if of_run && !waiting_ids.contains(parent) {
                tops.append(children);
                false
            } else {
                true
            }
        });
        self.waiting_count -= tops.len();
        tops.sort_by_key(|s| s.end_unix_ns);
        for span in tops {
            self.draw(span, 1, style, text);
        }
    }
}

/// A run's own step (a model call, a tool): its parent is the run's root.
fn is_run_step(span: &Span) -> bool {
    matches!(
        span.attr("gen_ai.operation.name"),
        Some(AttrValue::Str(op)) if op != "invoke_agent"
    )
}

/// Text from a process or the wire, on one line: newlines and other control characters
/// escaped (a shell wrapper's script must not break the tree over many lines, nor an escape
/// sequence repaint the terminal), cut past `max_chars` with its full length said.
fn one_line(text: &str, max_chars: usize) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.extend(c.escape_unicode()),
            c => escaped.push(c),
        }
    }
    if escaped.chars().count() <= max_chars {
        return escaped;
    }
    let cut: String = escaped.chars().take(max_chars).collect();
    format!("{cut}… ({} chars)", text.chars().count())
}

pub async fn run(mut spans: mpsc::Receiver<Arc<Span>>, color: bool) {
    let style = Style { color };
    let mut trees = Trees::default();
    while let Some(span) = spans.recv().await {
        let text = trees.render(span, &style);
        if text.is_empty() {
            continue;
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout (piped into `head`) must not stop the tracer.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

fn process_header(span: &Span, style: &Style) -> String {
    let p = &span.process;
    let cmd = one_line(p.command_line.as_deref().unwrap_or(""), MAX_COMMAND_CHARS);
    format!(
        "{} {} {} {}",
        style.paint("1;36", "●"),
        style.paint("1", &one_line(&p.executable_name, MAX_COMMAND_CHARS)),
        style.paint("2", &who(span)),
        style.paint("2", &cmd)
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
    let agent = text(span, "gen_ai.agent.name")
        .unwrap_or_else(|| one_line(&span.process.executable_name, 64));
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

/// An attribute as shown: on one line, whatever it holds.
fn text(span: &Span, key: &str) -> Option<String> {
    let value = match span.attr(key)? {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::F64(f) => f.to_string(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::StrArray(a) => a.join(","),
    };
    Some(one_line(&value, MAX_COMMAND_CHARS))
}

/// A process's arguments as a command line, on one line and cut when long.
fn command_args(span: &Span) -> String {
    match span.attr("process.command_args") {
        Some(AttrValue::StrArray(args)) => one_line(&args.join(" "), MAX_COMMAND_CHARS),
        Some(AttrValue::Str(args)) => one_line(args, MAX_COMMAND_CHARS),
        _ => String::new(),
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
    let mut parts = vec![style.paint("1", &one_line(&span.name, MAX_COMMAND_CHARS))];
    if let Some(p) = text(span, "gen_ai.provider.name") {
        parts.push(p);
    }
    if let (Some(a), Some(port)) = (text(span, "server.address"), text(span, "server.port")) {
        parts.push(style.paint("2", &format!("{a}:{port}")));
    }
    if let Some(code) = text(span, "process.exit.code") {
        parts.push(style.paint("2", &command_args(span)));
        if code != "0" {
            parts.push(style.paint("1;31", &format!("✗ exit {code}")));
        } else {
            parts.push(style.paint("32", "exit 0"));
        }
    }
    let exited = span.attr("process.exit.code").is_some();
    match (&span.status, text(span, "http.response.status_code")) {
        // A process's failure is its exit status, shown already.
        (SpanStatus::Error(_), None) if exited => {}
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
    use crate::{model::span::SpanKind, processes::ProcessInfo};

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

    fn step(name: &str, id: u8, op: &str) -> Arc<Span> {
        Arc::new(span(
            name,
            id,
            Some(1),
            vec![
                ("gen_ai.agent.name", "bot".into()),
                ("gen_ai.operation.name", op.into()),
            ],
        ))
    }

    fn exec(id: u8, parent: u8, code: i64, args: &[&str]) -> Arc<Span> {
        let name = format!("exec {}", args[0]);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut attributes: Vec<(&'static str, AttrValue)> = vec![
            ("process.exit.code", code.into()),
            ("process.command_args", args.into()),
        ];
        let mut exec = span(&name, id, Some(parent), Vec::new());
        if code != 0 {
            // As the agent reports a failed process.
            attributes.push(("error.type", code.to_string().into()));
            exec.status = SpanStatus::Error(format!("exit status {code}"));
        }
        exec.attributes = attributes;
        Arc::new(exec)
    }

    fn summary() -> Arc<Span> {
        Arc::new(span(
            "invoke_agent bot",
            1,
            None,
            vec![
                ("gen_ai.agent.name", "bot".into()),
                ("agent_tracer.run.outcome", "completed".into()),
                ("agent_tracer.run.llm_calls", 1u64.into()),
                ("agent_tracer.cost.usd", 0.0015.into()),
            ],
        ))
    }

    #[test]
    fn a_run_renders_as_a_tree_closed_by_its_summary() {
        let style = Style { color: false };
        let mut trees = Trees::default();
        let mut out = String::new();
        out += &trees.render(step("chat m", 2, "chat"), &style);
        out += &trees.render(step("execute_tool t", 3, "execute_tool"), &style);
        out += &trees.render(exec(4, 3, 3, &["sh", "-c"]), &style);
        out += &trees.render(summary(), &style);
        assert_eq!(
            out,
            "▶ run bot pid 9\n\
             \x20  ├─ chat m  2ms\n\
             \x20  ├─ execute_tool t  2ms\n\
             \x20     ├─ exec sh  sh -c  ✗ exit 3  2ms\n\
             ■ run completed  bot  1 calls  $0.001500  2ms\n"
        );
    }

    /// The agent emits a tool's processes in the order they ended: `tee` inside the tool's
    /// `bash` before the `bash`. Each is still drawn under its own parent.
    #[test]
    fn a_grandchild_that_finishes_first_is_drawn_under_its_parent() {
        let style = Style { color: false };
        let mut trees = Trees::default();
        let mut out = String::new();
        out += &trees.render(step("chat m", 2, "chat"), &style);
        out += &trees.render(step("execute_tool Bash", 3, "execute_tool"), &style);
        let tee = trees.render(exec(5, 4, 0, &["tee", "out.txt"]), &style);
        assert_eq!(tee, "", "tee waits for its bash");
        out += &trees.render(exec(4, 3, 0, &["bash", "-c", "ls | tee out.txt"]), &style);
        out += &trees.render(step("chat m", 6, "chat"), &style);
        out += &trees.render(summary(), &style);
        assert_eq!(
            out,
            "▶ run bot pid 9\n\
             \x20  ├─ chat m  2ms\n\
             \x20  ├─ execute_tool Bash  2ms\n\
             \x20     ├─ exec bash  bash -c ls | tee out.txt  exit 0  2ms\n\
             \x20        ├─ exec tee  tee out.txt  exit 0  2ms\n\
             \x20  ├─ chat m  2ms\n\
             ■ run completed  bot  1 calls  $0.001500  2ms\n"
        );
        assert_eq!(trees.waiting_count, 0);
    }

    /// A process whose parent never shows (its parent span was not kept) is drawn under the
    /// run before the run's summary, not lost.
    #[test]
    fn a_span_whose_parent_never_comes_hangs_from_the_run_at_its_end() {
        let style = Style { color: false };
        let mut trees = Trees::default();
        let mut out = String::new();
        out += &trees.render(step("chat m", 2, "chat"), &style);
        out += &trees.render(exec(5, 4, 0, &["tee", "x"]), &style);
        out += &trees.render(summary(), &style);
        assert_eq!(
            out,
            "▶ run bot pid 9\n\
             \x20  ├─ chat m  2ms\n\
             \x20  ├─ exec tee  tee x  exit 0  2ms\n\
             ■ run completed  bot  1 calls  $0.001500  2ms\n"
        );
        assert!(trees.waiting.is_empty());
    }

    /// A sub-agent launched by a tool runs in the same trace; its steps come before its root,
    /// which hangs from the process the tool spawned. They are drawn under that root.
    #[test]
    fn a_sub_agents_steps_are_drawn_under_its_own_root() {
        let style = Style { color: false };
        let mut trees = Trees::default();
        let inner = |name: &str, id: u8, op: &str| {
            Arc::new(span(
                name,
                id,
                Some(5),
                vec![("gen_ai.operation.name", op.into())],
            ))
        };
        let mut out = String::new();
        out += &trees.render(step("chat m", 2, "chat"), &style);
        out += &trees.render(step("execute_tool t", 3, "execute_tool"), &style);
        out += &trees.render(exec(4, 3, 0, &["python", "sub.py"]), &style);
        for span in [
            inner("chat s", 6, "chat"),
            inner("execute_tool u", 7, "execute_tool"),
            exec(8, 7, 0, &["sh", "-c", "x"]),
            inner("chat s", 9, "chat"),
        ] {
            assert_eq!(
                trees.render(span, &style),
                "",
                "waits for the sub-agent's root"
            );
        }
        out += &trees.render(
            Arc::new(span(
                "invoke_agent sub",
                5,
                Some(4),
                vec![("gen_ai.operation.name", "invoke_agent".into())],
            )),
            &style,
        );
        out += &trees.render(step("chat m", 10, "chat"), &style);
        out += &trees.render(summary(), &style);
        assert_eq!(
            out,
            "▶ run bot pid 9\n\
             \x20  ├─ chat m  2ms\n\
             \x20  ├─ execute_tool t  2ms\n\
             \x20     ├─ exec python  python sub.py  exit 0  2ms\n\
             \x20        ├─ invoke_agent sub  2ms\n\
             \x20           ├─ chat s  2ms\n\
             \x20           ├─ execute_tool u  2ms\n\
             \x20              ├─ exec sh  sh -c x  exit 0  2ms\n\
             \x20           ├─ chat s  2ms\n\
             \x20  ├─ chat m  2ms\n\
             ■ run completed  bot  1 calls  $0.001500  2ms\n"
        );
    }

    /// Claude Code and Gemini CLI run tools through multi-line shell wrappers.
    #[test]
    fn a_command_line_with_newlines_stays_on_one_line() {
        let style = Style { color: false };
        let mut trees = Trees::default();
        trees.render(step("execute_tool Bash", 3, "execute_tool"), &style);
        let wrapper = "shopt -u extglob 2>/dev/null || true\neval 'ls | tee out.txt' < /dev/null\n\
                       pwd -P >| /tmp/claude-1a2b-cwd\t\x1b[31m";
        let out = trees.render(exec(4, 3, 0, &["/bin/bash", "-c", "-l", wrapper]), &style);
        assert_eq!(
            out,
            "      ├─ exec /bin/bash  /bin/bash -c -l shopt -u extglob 2>/dev/null || true\\neval \
             'ls | tee out.txt' < /dev/null\\npwd -P >| /tmp/claude-1a2b-cwd\\t\\u{1b}[31m  exit 0  \
             2ms\n"
        );
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn a_long_command_line_is_cut_with_its_length() {
        let script = format!("python3 -c \"{}\"", "x = 1; ".repeat(100));
        let line = one_line(&script, MAX_COMMAND_CHARS);
        assert_eq!(
            line.chars().count(),
            MAX_COMMAND_CHARS + "… (713 chars)".chars().count()
        );
        assert!(line.starts_with("python3 -c \"x = 1; x = 1;"));
        assert!(line.ends_with("… (713 chars)"), "{line}");
        assert_eq!(one_line("short", MAX_COMMAND_CHARS), "short");
    }

    #[test]
    fn headers_name_the_pod_when_known() {
        let style = Style { color: false };
        let mut process = ProcessInfo::unknown(4242);
        process.executable_name = "python3".into();
        process.namespace_pid = Some(1);
        process.container_id = Some("c0de".repeat(16));
        process.pod = Some(Arc::new(crate::processes::PodInfo {
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
        process.pod = Some(Arc::new(crate::processes::PodInfo {
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
