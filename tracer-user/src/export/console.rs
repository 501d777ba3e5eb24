//! The embedded default: live, readable agent activity on the terminal, grouped by process.

use std::{io::Write, sync::Arc};

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

pub async fn run(mut spans: mpsc::Receiver<Arc<Span>>, color: bool) {
    let style = Style { color };
    let mut last_pid = None;
    while let Some(span) = spans.recv().await {
        let mut text = String::new();
        if last_pid != Some(span.process.pid) {
            text.push_str(&process_header(&span, &style));
            text.push('\n');
            last_pid = Some(span.process.pid);
        }
        text.push_str(&span_line(&span, &style));
        text.push('\n');
        let mut out = std::io::stdout().lock();
        // A closed stdout (piped into `head`) must not stop the tracer.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

fn process_header(span: &Span, style: &Style) -> String {
    let p = &span.process;
    let cmd = p.command_line.as_deref().unwrap_or("");
    let mut who = format!("pid {}", p.pid);
    if let Some(ns) = p.namespace_pid {
        who.push_str(&format!(" (ns pid {ns})"));
    }
    if let Some(id) = &p.container_id {
        who.push_str(&format!(" container {}", &id[..12.min(id.len())]));
    }
    format!(
        "{} {} {} {}",
        style.paint("1;36", "●"),
        style.paint("1", &p.executable_name),
        style.paint("2", &who),
        style.paint("2", cmd)
    )
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
    parts.push(millis(span.duration_ns()));
    if let Some(AttrValue::F64(ttft)) = span.attr("gen_ai.response.time_to_first_chunk") {
        parts.push(format!("ttft {}", millis((ttft * 1e9) as u64)));
    }
    if let Some(lost) = text(span, "agent_tracer.capture.bytes_lost") {
        parts.push(style.paint("1;33", &format!("lost {lost} bytes")));
    }
    format!("  └─ {}", parts.join("  "))
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
            "  └─ chat gpt-4o  openai  200  tokens 12→5  finish stop  1.50s  ttft 250ms"
        );
    }
}
