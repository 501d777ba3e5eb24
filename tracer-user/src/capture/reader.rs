//! The ring-buffer reader: decodes records and hands them on without ever waiting for the next
//! stage (pulsar's BpfSender rule: when the queue is full, drop and count).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::debug;

use super::{decode_record, queue::CaptureQueue, validate::Validator, CaptureEvent, ExecSeen};
use crate::streams::tls_records::TlsRecords;
use crate::telemetry::health::Health;

const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// Reads until `stop` fires, then drains what is already in the ring and returns.
pub async fn read_ring_buffer(
    ring: super::ring::RingReader,
    events: CaptureQueue,
    execs: mpsc::Sender<ExecSeen>,
    health: Arc<Health>,
    validator: Arc<Mutex<Validator>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    // Safety: the ring buffer owns its map fd, which stays open and the same until it is dropped
    // together with the AsyncFd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    // AEAD-level TLS records (rustls) become Data here, before validation: an inferred AEAD
    // hook is judged on the byte stream its records make, not on a record's inner plaintext.
    let mut records = TlsRecords::new();
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &events, &execs, &health, &validator, &mut records);
                guard.clear_ready();
                // Let records accumulate before the next wake-up: one wake-up per record costs
                // far more CPU than the records themselves under load. The ring absorbs the
                // pause (32 MiB by default against a few KiB per call).
                tokio::time::sleep(BATCH_WINDOW).await;
            }
            _ = stop.changed() => {
                drain(fd.get_mut(), &events, &execs, &health, &validator, &mut records);
                return Ok(());
            }
        }
    }
}

/// Logs and counts inferred hooks' verdicts when they are made (the attacher, which may be busy
/// analysing a large binary, detaches rejected hooks later; their records are dropped already).
fn report_verdicts(validator: &mut Validator, health: &Health) {
    for (_, hook, protocol) in validator.take_trusted() {
        Health::add(&health.inferred_hooks_trusted, 1);
        tracing::info!(
            binary = hook.binary,
            function = hook.function,
            "inferred TLS hook trusted: its first bytes parsed as {protocol}"
        );
    }
    for r in validator.peek_rejected_new() {
        Health::add(&health.inferred_hooks_rejected, 1);
        let preview: String = r
            .first
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        tracing::warn!(
            binary = r.hook.binary,
            function = r.hook.function,
            first_bytes = preview,
            "inferred TLS hook rejected: its first bytes are not HTTP or WebSocket; detaching it"
        );
    }
}

fn drain(
    ring: &mut super::ring::RingReader,
    events: &CaptureQueue,
    execs: &mpsc::Sender<ExecSeen>,
    health: &Health,
    validator: &Mutex<Validator>,
    records: &mut TlsRecords,
) {
    let mut assembled = Vec::new();
    ring.drain(|record| {
        Health::add(&health.records, 1);
        match decode_record(record) {
            Ok(event) => hand_on(
                event,
                events,
                execs,
                health,
                validator,
                records,
                &mut assembled,
            ),
            Err(e) => {
                debug!("malformed record: {e}");
                Health::add(&health.malformed_records, 1);
            }
        }
    });
}

/// One decoded record on to the pipeline queue (an exec also to the attacher), through the TLS
/// record assembler and, for an inferred hook's data, the validator. Every record that does not
/// reach the queue is counted by its reason.
fn hand_on(
    event: CaptureEvent,
    events: &CaptureQueue,
    execs: &mpsc::Sender<ExecSeen>,
    health: &Health,
    validator: &Mutex<Validator>,
    records: &mut TlsRecords,
    assembled: &mut Vec<CaptureEvent>,
) {
    match &event {
        CaptureEvent::Data(chunk) => Health::add(&health.bytes, chunk.data.len() as u64),
        // The attacher looks at the new program; losing one to a full queue only delays its
        // hooks to the next sweep.
        CaptureEvent::Exec {
            pid, timestamp_ns, ..
        } => {
            let notice = ExecSeen {
                pid: *pid,
                timestamp_ns: *timestamp_ns,
            };
            if execs.try_send(notice).is_err() {
                Health::add(&health.exec_notices_dropped, 1);
            }
        }
        _ => {}
    }
    records.push(event, assembled);
    Health::add(&health.tls_records_unassigned, records.take_unassigned());
    let events_now = assembled.drain(..).flat_map(|event| match event {
        // An inferred hook's records wait for its first bytes' verdict.
        CaptureEvent::Data(chunk) if chunk.cookie != 0 => match validator.lock() {
            Ok(mut v) => {
                let out = v.check(chunk);
                let dropped = v.take_dropped();
                Health::add(&health.inferred_hook_dropped_rejected, dropped.rejected);
                Health::add(&health.inferred_hook_dropped_held, dropped.held_over);
                report_verdicts(&mut v, health);
                out.into_iter().map(CaptureEvent::Data).collect()
            }
            Err(_) => {
                Health::add(&health.inferred_hook_dropped_unavailable, 1);
                Vec::new()
            }
        },
        event => vec![event],
    });
    for event in events_now {
        events.offer(event, health);
    }
}

#[cfg(test)]
mod tests;
