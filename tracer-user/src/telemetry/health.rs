//! The tracer's own health: what it captured, what it lost and why, what it failed to parse or
//! export. Every stage increments these; they are printed at shutdown and exported as metrics.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
};

use tracer_common::counter;

macro_rules! counters {
    (@name $name:ident) => { stringify!($name) };
    (@name $name:ident $label:literal) => { $label };
    ($($(#[doc = $doc:literal])* $name:ident $(as $label:literal)?),* $(,)?) => {
        #[derive(Default, Debug)]
        pub struct Health {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// The kernel programs' counters ([`counter::ALL`]), by index: copied from the
            /// kernel's map, never added to here.
            pub kernel: [AtomicU64; counter::COUNT as usize],
            /// `tracer.unsupported_tls{binary=...}`: processes seen per binary whose TLS stack
            /// cannot be hooked yet.
            pub unsupported_tls: Mutex<BTreeMap<String, (&'static str, u64)>>,
        }

        impl Health {
            /// Name (with its labels, if any) and value of every counter, for reports.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                self.described().into_iter().map(|(name, _, value)| (name, value)).collect()
            }

            /// Name (`name{label=value}` for labelled ones), description (the counter's doc
            /// comment) and value of every counter, for metrics exporters. The kernel's counters
            /// come first, in their table's order.
            pub fn described(&self) -> Vec<(&'static str, &'static str, u64)> {
                let kernel = counter::ALL
                    .iter()
                    .zip(&self.kernel)
                    .map(|(c, value)| (c.name, c.help, value.load(Relaxed)));
                kernel
                    .chain([$((counters!(@name $name $($label)?), concat!($($doc),*), self.$name.load(Relaxed)),)*])
                    .collect()
            }
        }
    };
}

/// Distinct binaries `unsupported_tls` names; the rest are counted under [`OTHER_BINARIES`].
pub const MAX_UNSUPPORTED_BINARIES: usize = 256;
pub const OTHER_BINARIES: &str = "(other binaries)";

counters! {
    /// Ring-buffer records read.
    records,
    /// Payload bytes read from the ring buffer.
    bytes,
    /// Records of processes the selection rules leave out, dropped in userspace (made before
    /// the kernel learnt of the decision).
    ignored_records,
    /// Processes running at start-up whose stdin and stdout (pipes) were seeded as JSON-RPC
    /// candidates.
    stdio_seeded,
    /// Bytes streams had carried before the tracer first saw them (attached late).
    attached_late_bytes,
    /// Streams whose byte count the kernel started again from zero: a connection object
    /// reused, or its count evicted from the kernel's LRU map (more streams at once than it
    /// holds). Taken as a new stream; what was in flight across the restart is not joined.
    stream_count_restarts,
    /// Binaries whose TLS hooks were placed.
    tls_targets_attached,
    /// Files a process named (its executable, a mapped TLS library) that were not analysed
    /// because they were no regular file (a FIFO, a device) or an unlinked mapping that could
    /// not be opened safely.
    files_refused,
    /// Analyses given up: a file over the size cap or changed while read, a Go function table
    /// beyond its work budget. Their hooks may be missing.
    analyses_given_up,
    /// Hooks placed by inference (no symbols) whose first captured bytes parsed: trusted.
    inferred_hooks_trusted,
    /// Hooks placed by inference whose first captured bytes did not parse as HTTP or
    /// WebSocket: detached, their records dropped.
    inferred_hooks_rejected,
    /// AEAD-level TLS records (rustls) dropped because no socket could be tied to their key
    /// (e.g. a connection already open when the tracer started).
    tls_records_unassigned,
    /// Exec notices the attacher's queue had no room for: that program is looked at by the
    /// attacher's next sweep instead of at once.
    exec_notices_dropped,
    /// Records of an inferred hook that was rejected (its first bytes were not HTTP or
    /// WebSocket).
    inferred_hook_dropped_rejected as "inferred_hook_dropped_records{reason=rejected}",
    /// Records of an inferred hook still awaiting its verdict, dropped oldest first beyond the
    /// number held per hook.
    inferred_hook_dropped_held as "inferred_hook_dropped_records{reason=held_over}",
    /// Records of inferred hooks dropped because the validator was unusable (a panic poisoned
    /// its lock).
    inferred_hook_dropped_unavailable as "inferred_hook_dropped_records{reason=validator_unavailable}",
    /// Records malformed or of an unknown kind.
    malformed_records,
    /// Records dropped because the pipeline queue was full.
    pipeline_queue_full,
    /// Bytes missing from a stream (a gap marker was raised).
    stream_gap_bytes,
    /// Bytes of connections not speaking a protocol we parse (yet).
    unparsed_bytes,
    /// HTTP messages that failed to parse (the parser resynchronised).
    http_parse_errors,
    /// HTTP/1 bytes passed over while looking for the next message start after a parse error.
    http1_dropped_resync as "http1_dropped_bytes{reason=resync}",
    /// HTTP/1 bytes of a message head (or of what followed a message) that a capture gap made
    /// impossible to continue.
    http1_dropped_gap as "http1_dropped_bytes{reason=gap}",
    /// HTTP/1 bytes buffered after a request that was cut short by its answer (the rest of that
    /// request is counted on its span as bytes lost).
    http1_dropped_cut_short as "http1_dropped_bytes{reason=cut_short}",
    /// HTTP/1 requests still arriving when their connection ended: never complete, not
    /// reported.
    http1_dropped_unfinished_request as "http1_dropped_messages{reason=unfinished_request}",
    /// Bytes of HTTP/1 heads still arriving when their connection ended (its end, or its
    /// eviction for the memory budget).
    http1_dropped_unfinished_head as "http1_dropped_bytes{reason=unfinished_head}",
    /// HTTP/1 responses whose request was never seen (sent before the tracer looked, or lost):
    /// too old for any later request, past the few kept, or left at close.
    http1_dropped_unanswered_response as "http1_dropped_messages{reason=response_without_request}",
    /// HTTP/1 requests still waiting for their answer when 256 later ones on the same
    /// connection were waiting too: reported interrupted (`too_many_pending`), not held on.
    http1_pending_evicted,
    /// Peers of connections that never carried data, forgotten when too many were waiting.
    connection_peers_evicted,
    /// Connections ended (their calls in progress reported interrupted, `memory_budget`)
    /// because what every connection's parsers held together passed its share of the memory
    /// budget: the least recently active went first.
    connections_evicted_memory_budget as "connections_evicted{reason=memory_budget}",
    /// HTTP/2 frames (header blocks, DATA pieces) of a stream not tracked because its
    /// connection already had the most streams open that one connection may hold.
    http2_dropped_too_many_streams as "http2_dropped_frames{reason=too_many_streams}",
    /// HTTP/2 frames (header blocks, DATA pieces) for a stream that had already ended.
    http2_dropped_stream_ended as "http2_dropped_frames{reason=stream_ended}",
    /// HTTP/2 streams in progress dropped when a connection joined late turned out to be one
    /// the traced process serves (not traced as calls).
    http2_dropped_server_side as "http2_dropped_streams{reason=server_side}",
    /// HTTP/2 header blocks that decoded to more than a head may hold (128 fields or 64 KiB,
    /// HTTP/1's limits): the fields past it were left out and the message marked incomplete.
    http2_header_blocks_capped,
    /// WebSocket messages longer than the body limit, framed or inflated (a deflate bomb): the
    /// direction is not read any further.
    websocket_messages_oversized,
    /// Complete HTTP request/response exchanges.
    http_exchanges,
    /// Exchanges cut short (process exit, idle timeout, shutdown).
    http_interrupted,
    /// JSON-RPC messages read from stdio streams.
    jsonrpc_messages,
    /// Stdio lines that were not JSON-RPC (the stream resynchronised at the next line).
    jsonrpc_parse_errors,
    /// Stdio lines longer than the body cap, not parsed (counted only).
    jsonrpc_oversized,
    /// JSON-RPC responses whose request was not seen (sent before the tracer looked).
    jsonrpc_unmatched_responses,
    /// JSON-RPC requests not tracked because their connection already waited on the most
    /// answers one connection may.
    jsonrpc_dropped_pending_full as "jsonrpc_dropped_requests{reason=pending_full}",
    /// JSON-RPC requests still waiting when a new request reused their id: only the new one
    /// can be paired with the answer.
    jsonrpc_dropped_id_reused as "jsonrpc_dropped_requests{reason=id_reused}",
    /// Stdio bytes of lines a capture gap cut: the part before the gap, and a fragment after it
    /// that did not parse on its own.
    jsonrpc_dropped_gap_bytes as "jsonrpc_dropped_bytes{reason=gap}",
    /// Stdio connections forgotten while waiting for nothing, when too many were known (their
    /// process exits went missing); a line in progress on one is lost.
    jsonrpc_sessions_evicted,
    /// Processes found gone whose exit record was lost (a full ring buffer): their state in
    /// every stage was ended as their exit would have ended it, marked `exit_lost`.
    process_exits_lost,
    /// Exchanges recognised as LLM calls.
    llm_calls,
    /// MCP JSON-RPC requests.
    mcp_calls,
    /// Other JSON API exchanges, reported as generic HTTP spans.
    http_calls,
    /// TLS client connections reported encrypted-only (no hook saw their plaintext): host from
    /// the SNI, byte counts and timing.
    encrypted_connections,
    /// Counted TLS connections not reported because their process's plaintext is captured by a
    /// TLS hook (a memory-BIO library such as Node's writes the ciphertext outside the hook).
    encrypted_skipped_hooked,
    /// LLM bodies that could not be decoded or parsed.
    llm_parse_errors,
    /// Body bytes past a message's body limit (`--max-body-bytes`), not kept: the message's
    /// body size still counts them.
    body_bytes_over_limit as "body_bytes_not_kept{reason=body_limit}",
    /// Body bytes not kept because the bodies in progress on every connection together held
    /// their share of `--memory-budget-mib`.
    body_bytes_over_budget as "body_bytes_not_kept{reason=memory_budget}",
    /// Calls with a content-encoded body that decoded to more than `--max-body-bytes`: decoding
    /// stopped there, the span carries `agent_tracer.body.decoded_truncated`.
    bodies_decoded_truncated,
    /// Agent runs, counted as they end (a side request folded into its loop is not a run).
    agent_runs,
    /// Runs that ended with a final answer.
    agent_runs_completed,
    /// Runs whose last model call failed.
    agent_runs_failed,
    /// Runs left waiting (idle timeout, process exit, shutdown).
    agent_runs_abandoned,
    /// Tool calls repeated with the same arguments three times in a row.
    agent_loops,
    /// Requests re-sent identical to the previous one of their run.
    agent_repeated_requests,
    /// Spans not exported because their run was sampled out.
    sampled_out_spans,
    /// Spans handed to the sinks. With an OTLP endpoint, at exit this equals `exported_spans`
    /// plus every `export_dropped_spans{...}` (while running, plus what is still buffered).
    spans,
    /// Spans the console sink dropped because its queue was full.
    console_queue_full,
    /// Spans the OTLP receiver accepted.
    exported_spans,
    /// OTLP metric exports that failed (the next export carries the cumulative totals again).
    metrics_export_failures,
    /// Spans lost because the OTLP exporter's input queue was full (the exporter task did not
    /// keep up with the pipeline at all; it never waits on the network while draining it).
    export_dropped_queue_full as "export_dropped_spans{reason=queue_full}",
    /// Spans evicted, oldest first, from the retry buffer once it held `--export-buffer-spans`.
    export_dropped_buffer_full as "export_dropped_spans{reason=buffer_full}",
    /// Spans the receiver refused for good (HTTP 400, gRPC INVALID_ARGUMENT, partial success).
    export_dropped_rejected as "export_dropped_spans{reason=rejected}",
    /// Spans too large for any request the receiver accepts (alone past `max_request_bytes`,
    /// or refused for size on their own: HTTP 413, gRPC RESOURCE_EXHAUSTED without RetryInfo).
    export_dropped_too_large as "export_dropped_spans{reason=too_large}",
    /// Spans still undelivered when the final flush at shutdown ran out of time.
    export_dropped_shutdown as "export_dropped_spans{reason=shutdown}",
    /// Export requests that failed and will be retried (endpoint down, throttled, timed out).
    export_retries,
}

impl Health {
    pub fn add(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    /// The kernel counter at `index` (a [`counter`] constant); a dummy for an index out of the
    /// table, which cannot come from the constants.
    pub fn kernel(&self, index: u32) -> &AtomicU64 {
        static OUT_OF_TABLE: AtomicU64 = AtomicU64::new(0);
        self.kernel.get(index as usize).unwrap_or(&OUT_OF_TABLE)
    }

    /// Counts a process running a binary whose TLS stack cannot be hooked yet; true the first
    /// time the binary is seen (so it is logged once).
    pub fn unsupported_tls(&self, binary: &str, stack: &'static str) -> bool {
        let Ok(mut map) = self.unsupported_tls.lock() else {
            return false;
        };
        // Binaries are named by whoever runs them: past a bound, new ones share one entry so
        // the map (and the metric family made from it) stays bounded.
        let binary = if map.len() >= MAX_UNSUPPORTED_BINARIES && !map.contains_key(binary) {
            OTHER_BINARIES
        } else {
            binary
        };
        let entry = map.entry(binary.to_string()).or_insert((stack, 0));
        entry.1 += 1;
        entry.1 == 1
    }

    /// The counters with a non-zero value, as `name=value` pairs on one line.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .snapshot()
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if let Ok(map) = self.unsupported_tls.lock() {
            parts.extend(map.iter().map(|(binary, (stack, n))| {
                format!("tracer.unsupported_tls{{binary={binary},stack={stack}}}={n}")
            }));
        }
        if parts.is_empty() {
            "nothing captured".to_string()
        } else {
            parts.join(" ")
        }
    }

    /// Every counter, zeros included, and the unsupported-TLS tally: what `--summary-file`
    /// holds. `{"counters": {"records": 12, "export_dropped_spans{reason=shutdown}": 0, ...},
    /// "unsupported_tls": [{"binary": "/usr/bin/x", "stack": "rustls", "processes": 2}]}`.
    pub fn summary_json(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .snapshot()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        let unsupported: Vec<serde_json::Value> = match self.unsupported_tls.lock() {
            Ok(map) => map
                .iter()
                .map(|(binary, (stack, n))| {
                    serde_json::json!({"binary": binary, "stack": stack, "processes": n})
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        serde_json::json!({"counters": counters, "unsupported_tls": unsupported})
    }

    /// Writes [`summary_json`](Self::summary_json) to `path`, whole or not at all (through a
    /// temporary file renamed over it), so a reader never sees half a document.
    pub fn write_summary(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let text = serde_json::to_string_pretty(&self.summary_json())?;
        std::fs::write(&partial, text + "\n")?;
        std::fs::rename(&partial, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_dropped_spans_by_reason() {
        let h = Health::default();
        Health::add(&h.spans, 10);
        Health::add(&h.exported_spans, 7);
        Health::add(&h.export_dropped_buffer_full, 2);
        Health::add(&h.export_dropped_shutdown, 1);
        assert_eq!(
            h.summary(),
            "spans=10 exported_spans=7 export_dropped_spans{reason=buffer_full}=2 \
             export_dropped_spans{reason=shutdown}=1"
        );
    }

    #[test]
    fn unsupported_binaries_past_the_bound_share_one_entry() {
        let h = Health::default();
        for i in 0..MAX_UNSUPPORTED_BINARIES + 10 {
            h.unsupported_tls(&format!("/tmp/x/{i}"), "rustls");
        }
        // A binary already named keeps its own entry.
        h.unsupported_tls("/tmp/x/0", "rustls");
        let map = h.unsupported_tls.lock().unwrap();
        assert_eq!(map.len(), MAX_UNSUPPORTED_BINARIES + 1);
        assert_eq!(map[OTHER_BINARIES].1, 10);
        assert_eq!(map["/tmp/x/0"].1, 2);
    }

    #[test]
    fn json_summary_lists_every_counter_zeros_included() {
        let h = Health::default();
        Health::add(&h.records, 12);
        Health::add(h.kernel(counter::CALLS), 5);
        Health::add(&h.export_dropped_shutdown, 1);
        h.unsupported_tls("/usr/bin/app", "rustls");
        let json = h.summary_json();
        let counters = json["counters"].as_object().unwrap();
        assert_eq!(counters.len(), h.snapshot().len());
        assert_eq!(counters["records"], 12);
        assert_eq!(counters["kernel_tls_calls"], 5);
        assert_eq!(counters["kernel_ignored_stdio"], 0);
        assert_eq!(counters["export_dropped_spans{reason=shutdown}"], 1);
        assert_eq!(
            json["unsupported_tls"],
            serde_json::json!([{"binary": "/usr/bin/app", "stack": "rustls", "processes": 1}])
        );
        let dir = std::env::temp_dir().join(format!("health-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        h.write_summary(&path).unwrap();
        let read: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, json);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
