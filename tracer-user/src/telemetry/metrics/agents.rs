//! Agents gone wrong, as metrics: runs by outcome, loops and repeated requests per run, tool
//! executions and errors by tool. Derived from the `invoke_agent` and `execute_tool` spans the
//! agent stage makes, so a run is counted once, when it ends.

use crate::model::span::{AttrValue, Span};

use super::{CounterDef, Instrument, PromUnit};

/// The event the agent stage adds to a run each time a tool call repeats into a loop.
const LOOP_EVENT: &str = "agent_tracer.loop_detected";

pub static RUNS: CounterDef = CounterDef {
    instrument: Instrument {
        name: "agent_tracer.runs",
        description: "Agent runs ended, by outcome (completed, error, abandoned).",
        unit: "{run}",
        prom_unit: PromUnit::None,
    },
    integer: true,
};
pub static LOOPS: CounterDef = CounterDef {
    instrument: Instrument {
        name: "agent_tracer.run.loops",
        description: "Loops detected in ended runs: the same tool call (name and arguments) three times in a row.",
        unit: "{loop}",
        prom_unit: PromUnit::None,
    },
    integer: true,
};
pub static REPEATED_REQUESTS: CounterDef = CounterDef {
    instrument: Instrument {
        name: "agent_tracer.run.repeated_requests",
        description: "Model requests re-sent identical to the previous one, in ended runs.",
        unit: "{request}",
        prom_unit: PromUnit::None,
    },
    integer: true,
};
pub static TOOL_EXECUTIONS: CounterDef = CounterDef {
    instrument: Instrument {
        name: "agent_tracer.tool.executions",
        description: "Tool executions of agent runs, by tool.",
        unit: "{execution}",
        prom_unit: PromUnit::None,
    },
    integer: true,
};
pub static TOOL_ERRORS: CounterDef = CounterDef {
    instrument: Instrument {
        name: "agent_tracer.tool.errors",
        description: "Tool executions whose result reported an error, by tool.",
        unit: "{execution}",
        prom_unit: PromUnit::None,
    },
    integer: true,
};

/// What a run span adds: (outcome, loops, repeated requests).
pub fn run_counts(span: &Span) -> Option<(String, u64, u64)> {
    let outcome = match span.attr("agent_tracer.run.outcome")? {
        AttrValue::Str(s) => s.clone(),
        _ => return None,
    };
    let loops = span.events.iter().filter(|e| e.name == LOOP_EVENT).count() as u64;
    let repeated = match span.attr("agent_tracer.run.repeated_requests") {
        Some(AttrValue::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    Some((outcome, loops, repeated))
}

/// Whether a span is an agent's tool execution (MCP requests have their own metric).
pub fn is_tool_execution(span: &Span) -> bool {
    matches!(span.attr("gen_ai.operation.name"), Some(AttrValue::Str(op)) if op == "execute_tool")
        && span.attr("mcp.method.name").is_none()
}
