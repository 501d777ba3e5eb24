//! Issue 17 item 8's adversarial input through the real stages: a streamed model response of
//! 500 000 one-byte SSE events, each in its own read (a 4 MB body), becomes one complete and
//! correct model call. How long the stages take on it is measured by `cargo xtask bench --only
//! pipeline`, not here: this checks the answer.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use super::{Pipeline, PipelineConfig};
use crate::{
    capture::Clock,
    daemon::workload::{sse_flood, SSE_FLOOD_ID, SSE_FLOOD_MODEL, SSE_FLOOD_START_NS},
    model::span::{AttrValue, Span, SpanStatus},
    telemetry::health::Health,
};

const TINY_EVENTS: usize = 500_000;

fn attr<'a>(span: &'a Span, key: &str) -> &'a AttrValue {
    span.attr(key)
        .unwrap_or_else(|| panic!("{key} missing from {:#?}", span.attributes))
}

#[test]
fn half_a_million_one_byte_events_in_as_many_reads_make_one_whole_call() {
    let flood = sse_flood(std::process::id(), TINY_EVENTS);
    assert_eq!(flood.records.len(), TINY_EVENTS + 4);
    assert!(flood.body_len > 4_000_000, "{}", flood.body_len);

    let health = Arc::new(Health::default());
    let clock = Clock::new();
    let mut pipeline =
        Pipeline::new(PipelineConfig::default(), clock, health.clone(), None).unwrap();
    let mut spans = Vec::new();
    for record in flood.records {
        pipeline.handle(record, &mut spans);
    }
    // The response ends with its Content-Length: the call is complete before any close. Its
    // span waits in its agent run, which shutdown ends.
    assert_eq!(health.llm_calls.load(Relaxed), 1);
    pipeline.close_all(&mut spans);
    let calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.attr("gen_ai.operation.name") == Some(&AttrValue::from("chat")))
        .collect();
    assert_eq!(calls.len(), 1, "{spans:#?}");
    let call = calls[0];

    assert_eq!(call.status, SpanStatus::Unset, "{call:#?}");
    assert_eq!(
        attr(call, "gen_ai.response.model"),
        &AttrValue::from(SSE_FLOOD_MODEL)
    );
    assert_eq!(
        attr(call, "gen_ai.response.id"),
        &AttrValue::from(SSE_FLOOD_ID)
    );
    assert_eq!(
        attr(call, "gen_ai.response.finish_reasons"),
        &AttrValue::StrArray(vec!["stop".to_string()])
    );
    assert_eq!(
        attr(call, "gen_ai.usage.output_tokens"),
        &AttrValue::Int(TINY_EVENTS as i64)
    );
    assert_eq!(
        attr(call, "http.response.body.size"),
        &AttrValue::Int(flood.body_len as i64)
    );
    // Timed by the reads: the first event by the read that completed it, the end by the last.
    let first_chunk = (flood.first_event_ns - SSE_FLOOD_START_NS) as f64 / 1e9;
    assert_eq!(
        attr(call, "gen_ai.response.time_to_first_chunk"),
        &AttrValue::F64(first_chunk)
    );
    assert_eq!(call.start_unix_ns, clock.unix_ns(SSE_FLOOD_START_NS));
    assert_eq!(call.end_unix_ns, clock.unix_ns(flood.last_read_ns));
    assert!(call.attr("agent_tracer.capture.bytes_lost").is_none());

    assert_eq!(health.llm_calls.load(Relaxed), 1);
    assert_eq!(health.http_exchanges.load(Relaxed), 1);
    assert_eq!(health.llm_parse_errors.load(Relaxed), 0);
    assert_eq!(health.http_parse_errors.load(Relaxed), 0);
    assert_eq!(health.stream_gap_bytes.load(Relaxed), 0);
}
