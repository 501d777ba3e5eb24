//! Delivery that survives an unreachable or throttling OTLP endpoint.
//!
//! Spans wait in one ordered, bounded buffer. Requests are cut from its front, one in flight at a
//! time, so spans arrive in the order they were produced even across an outage. A request that
//! fails with a retryable error puts its spans back at the front and the next attempt waits with
//! exponential backoff and jitter (or what the receiver asked for). Throughout, the input channel
//! keeps being drained: the pipeline never waits on the network. When the buffer holds more than
//! its bound the oldest spans go first; every span that is not delivered is counted under the
//! reason it was lost, so `spans == exported + dropped (+ still buffered)` holds at all times.
//!
//! Requests are cut by bytes as well as by count, and a request refused for its size is split
//! in halves and sent again, down to a single span, which is then dropped and counted: one
//! oversized span must not block every span after it.

use std::{collections::VecDeque, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    sync::mpsc::{self, error::TryRecvError},
    time::{sleep_until, timeout_at, Instant},
};
use tracing::{debug, info, warn};

use crate::{model::span::Span, telemetry::health::Health};

/// What became of one export request.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted; `rejected` of its spans were refused all the same (OTLP partial success).
    Delivered { rejected: u64, message: String },
    /// Worth trying again: endpoint unreachable, overloaded, throttling, timed out.
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Refused for good (malformed, unauthorised): retrying would get the same answer.
    Reject { error: String },
    /// Refused for its size (HTTP 413, gRPC RESOURCE_EXHAUSTED without RetryInfo, a message
    /// over the receiver's limit): smaller requests may pass.
    TooLarge { error: String },
}

pub type SendFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Sends one export request. The future owns what it needs, so the delivery loop can keep
/// draining its input while a request is in flight.
pub trait Transport: Send + 'static {
    fn send(&self, spans: &[Arc<Span>]) -> SendFuture;
    /// The span's share of a request's encoded size, to cut requests by bytes.
    fn encoded_len(&self, _span: &Span) -> usize {
        0
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    /// Most spans per request.
    pub max_batch: usize,
    /// Most encoded bytes per request (gRPC receivers refuse messages over 4 MiB by default).
    pub max_request_bytes: usize,
    /// How long a span may wait for others to fill a request.
    pub batch_delay: Duration,
    /// Spans held while the endpoint is unavailable; beyond this the oldest are dropped. (A
    /// request in flight holds up to `max_batch` more: its spans are not dropped while its
    /// outcome is unknown.)
    pub buffer_spans: usize,
    /// The same bound in bytes (each span at its encoded size, as `Transport::encoded_len`
    /// estimates it): spans with content are tens of KiB each, so a count alone does not bound
    /// memory. The oldest are dropped past either bound.
    pub buffer_bytes: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Upper bound on a receiver's own `Retry-After` / `RetryInfo`.
    pub retry_after_max: Duration,
    /// Time given to delivering what is buffered once the input closes (shutdown).
    pub final_flush: Duration,
}

pub const DEFAULT_BUFFER_SPANS: u64 = 100_000;
/// A quarter of the default memory budget (see `daemon/config`).
pub const DEFAULT_BUFFER_BYTES: usize = 192 * 1024 * 1024;
/// Under the 4 MiB that gRPC servers (the OpenTelemetry Collector's included) accept by default,
/// leaving room for the resource and scope around the spans.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024 + 512 * 1024;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_batch: 512,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            batch_delay: Duration::from_millis(500),
            buffer_spans: DEFAULT_BUFFER_SPANS as usize,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(300),
            final_flush: Duration::from_secs(5),
        }
    }
}

impl Policy {
    /// Exponential, capped, with "equal jitter" (half fixed, half random) so that many tracers
    /// that lost the same collector do not come back in lockstep.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .backoff_initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let capped = exp.min(self.backoff_max);
        capped.mul_f64(rand::random_range(0.5..=1.0))
    }
}

struct Delivery<T> {
    transport: T,
    policy: Policy,
    health: Arc<Health>,
    /// Spans not yet delivered, oldest first, with when each arrived.
    queue: VecDeque<(Instant, Arc<Span>)>,
    /// The spans of the request in flight, in order.
    sending: Vec<(Instant, Arc<Span>)>,
    in_flight: Option<SendFuture>,
    retry_at: Option<Instant>,
    /// Consecutive failed attempts.
    failures: u32,
    /// Whether the current outage already logged that it drops spans.
    drop_logged: bool,
    /// Sizes (in spans) of the next requests, from halving one refused for its size.
    cuts: VecDeque<usize>,
    /// Encoded bytes of every span held (queued or in flight).
    held_bytes: usize,
}

/// Delivers spans from `input` until it closes, then flushes for at most `policy.final_flush`.
pub async fn deliver<T: Transport>(
    transport: T,
    policy: Policy,
    health: Arc<Health>,
    mut input: mpsc::Receiver<Arc<Span>>,
) {
    let mut d = Delivery {
        transport,
        policy,
        health,
        queue: VecDeque::new(),
        sending: Vec::new(),
        in_flight: None,
        retry_at: None,
        failures: 0,
        drop_logged: false,
        held_bytes: 0,
        cuts: VecDeque::new(),
    };
    'run: loop {
        // Take everything already waiting before deciding what to send, so a burst goes out in
        // full requests and the bound is applied to all of it.
        loop {
            match input.try_recv() {
                Ok(span) => d.accept(span),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break 'run,
            }
        }
        let now = Instant::now();
        d.start_if_due(now, false);
        let wake = d.next_wake();
        tokio::select! {
            span = input.recv() => match span {
                Some(span) => d.accept(span),
                None => break 'run,
            },
            outcome = poll_in_flight(&mut d.in_flight) => d.finish(outcome),
            _ = sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
        }
    }
    d.final_flush().await;
}

/// The in-flight request's outcome; pending forever when there is none.
async fn poll_in_flight(in_flight: &mut Option<SendFuture>) -> Outcome {
    match in_flight.as_mut() {
        Some(request) => request.await,
        None => std::future::pending().await,
    }
}

impl<T: Transport> Delivery<T> {
    fn accept(&mut self, span: Arc<Span>) {
        self.held_bytes = self
            .held_bytes
            .saturating_add(self.transport.encoded_len(&span));
        self.queue.push_back((Instant::now(), span));
        self.enforce_bound();
    }

    /// Spans leaving for good (delivered, refused, dropped): their bytes are no longer held.
    fn release<'a>(&mut self, spans: impl IntoIterator<Item = &'a Arc<Span>>) {
        for span in spans {
            self.held_bytes = self
                .held_bytes
                .saturating_sub(self.transport.encoded_len(span));
        }
    }

    fn enforce_bound(&mut self) {
        let mut dropped = 0u64;
        while self.queue.len() > self.policy.buffer_spans
            || (self.held_bytes > self.policy.buffer_bytes && !self.queue.is_empty())
        {
            if let Some((_, span)) = self.queue.pop_front() {
                self.release([&span]);
                dropped += 1;
            }
        }
        if dropped == 0 {
            return;
        }
        Health::add(&self.health.export_dropped_buffer_full, dropped);
        if !self.drop_logged {
            self.drop_logged = true;
            warn!(
                "OTLP retry buffer full ({} spans or {} bytes): dropping the oldest spans until \
                 the endpoint accepts again (counted in export_dropped_spans{{reason=buffer_full}})",
                self.policy.buffer_spans, self.policy.buffer_bytes
            );
        }
    }

    /// Starts a request when none is in flight, no backoff is pending and a request is worth
    /// sending (full, or its oldest span has waited long enough, or `flush`).
    fn start_if_due(&mut self, now: Instant, flush: bool) {
        if self.in_flight.is_some() || self.retry_at.is_some_and(|t| t > now) {
            return;
        }
        let Some((oldest, _)) = self.queue.front() else {
            return;
        };
        if !flush
            && self.queue.len() < self.policy.max_batch
            && *oldest + self.policy.batch_delay > now
        {
            return;
        }
        let mut n = self.queue.len().min(self.policy.max_batch.max(1));
        if let Some(cut) = self.cuts.pop_front() {
            n = n.min(cut.max(1));
        }
        let n = self.fit_bytes(n);
        if n == 0 {
            return;
        }
        self.sending = self.queue.drain(..n).collect();
        let spans: Vec<Arc<Span>> = self.sending.iter().map(|(_, s)| s.clone()).collect();
        self.in_flight = Some(self.transport.send(&spans));
    }

    /// How many of the first `n` queued spans fit in one request's bytes (at least one). A span
    /// over the limit on its own is dropped and counted here, before it is ever sent.
    fn fit_bytes(&mut self, n: usize) -> usize {
        let limit = self.policy.max_request_bytes;
        loop {
            let Some((_, first)) = self.queue.front() else {
                return 0;
            };
            if self.transport.encoded_len(first) <= limit {
                break;
            }
            if let Some((_, span)) = self.queue.pop_front() {
                self.release([&span]);
            }
            Health::add(&self.health.export_dropped_too_large, 1);
            warn!(
                "dropping a span larger than one OTLP request may be ({limit} bytes; counted in \
                 export_dropped_spans{{reason=too_large}})"
            );
        }
        let mut bytes = 0usize;
        let mut fits = 0;
        for (_, span) in self.queue.iter().take(n) {
            bytes = bytes.saturating_add(self.transport.encoded_len(span));
            if fits > 0 && bytes > limit {
                break;
            }
            fits += 1;
        }
        fits
    }

    /// When the loop must wake up on its own to start a request.
    fn next_wake(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        let (oldest, _) = self.queue.front()?;
        let batch_due = if self.queue.len() >= self.policy.max_batch {
            None
        } else {
            Some(*oldest + self.policy.batch_delay)
        };
        match (batch_due, self.retry_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.in_flight = None;
        let batch = std::mem::take(&mut self.sending);
        let n = batch.len() as u64;
        match outcome {
            Outcome::Delivered { rejected, message } => {
                self.release(batch.iter().map(|(_, s)| s));
                let rejected = rejected.min(n);
                Health::add(&self.health.exported_spans, n - rejected);
                if rejected > 0 {
                    Health::add(&self.health.export_dropped_rejected, rejected);
                    warn!("OTLP receiver refused {rejected} of {n} spans: {message}");
                }
                if self.failures > 0 {
                    info!(
                        "OTLP export recovered after {} failed attempts",
                        self.failures
                    );
                }
                debug!("exported {} spans", n - rejected);
                self.failures = 0;
                self.retry_at = None;
                self.drop_logged = false;
            }
            Outcome::Retry { after, error } => {
                self.failures += 1;
                Health::add(&self.health.export_retries, 1);
                let delay = match after {
                    Some(asked) => asked.min(self.policy.retry_after_max),
                    None => self.policy.backoff(self.failures),
                };
                if self.failures == 1 {
                    warn!(
                        "OTLP export failed, retrying with backoff while buffering up to {} \
                         spans: {error}",
                        self.policy.buffer_spans
                    );
                } else {
                    debug!(
                        "OTLP export attempt {} failed, next in {delay:?}: {error}",
                        self.failures
                    );
                }
                self.retry_at = Some(Instant::now() + delay);
                for item in batch.into_iter().rev() {
                    self.queue.push_front(item);
                }
                self.enforce_bound();
            }
            Outcome::Reject { error } => {
                self.release(batch.iter().map(|(_, s)| s));
                Health::add(&self.health.export_dropped_rejected, n);
                warn!("OTLP receiver rejected {n} spans, not retrying: {error}");
                self.retry_at = None;
            }
            Outcome::TooLarge { error } if batch.len() > 1 => {
                let half = batch.len() / 2;
                debug!("OTLP request of {n} spans too large, sending it in halves: {error}");
                self.cuts.push_front(batch.len() - half);
                self.cuts.push_front(half);
                for item in batch.into_iter().rev() {
                    self.queue.push_front(item);
                }
                self.retry_at = None;
            }
            Outcome::TooLarge { error } => {
                self.release(batch.iter().map(|(_, s)| s));
                Health::add(&self.health.export_dropped_too_large, n);
                warn!(
                    "OTLP receiver refused a span for its size, dropping it (counted in \
                     export_dropped_spans{{reason=too_large}}): {error}"
                );
                self.retry_at = None;
            }
        }
    }

    async fn final_flush(&mut self) {
        let deadline = Instant::now() + self.policy.final_flush;
        // One attempt right away, whatever the backoff said: the endpoint may be back.
        if self.in_flight.is_none() {
            self.retry_at = None;
        }
        if !self.queue.is_empty() || self.in_flight.is_some() {
            debug!(
                "flushing {} buffered spans",
                self.queue.len() + self.sending.len()
            );
        }
        loop {
            self.start_if_due(Instant::now(), true);
            if let Some(request) = self.in_flight.as_mut() {
                match timeout_at(deadline, request).await {
                    Ok(outcome) => self.finish(outcome),
                    Err(_) => {
                        // Its outcome is unknown; counted as lost, though the receiver may yet
                        // have taken it.
                        self.in_flight = None;
                        self.queue.extend(self.sending.drain(..));
                        break;
                    }
                }
                continue;
            }
            match self.retry_at {
                _ if self.queue.is_empty() => break,
                Some(at) if at < deadline => sleep_until(at).await,
                Some(_) => break,
                None => {}
            }
        }
        let left = (self.queue.len() + self.sending.len()) as u64;
        if left > 0 {
            Health::add(&self.health.export_dropped_shutdown, left);
            warn!(
                "OTLP export: {left} spans not delivered within {:?} of shutdown (counted in \
                 export_dropped_spans{{reason=shutdown}})",
                self.policy.final_flush
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The delivery logic against a fake transport (a real receiver is used by the OTLP
    //! transport tests in otlp.rs and by the end-to-end outage test): it lets a test say exactly
    //! when the endpoint is "down" and see every request in order.

    use std::sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Mutex,
    };

    use super::*;
    use crate::{
        model::span::{SpanKind, SpanStatus},
        processes::ProcessInfo,
    };

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Mode {
        Up,
        Down,
        Reject,
        Throttle(Duration),
    }

    /// A request: when it was made, its span names, and the mode it met.
    type Attempt = (Instant, Vec<String>, Mode);

    #[derive(Clone)]
    struct Fake {
        mode: Arc<Mutex<Mode>>,
        /// Every request's span names and when it was made, failed or not.
        attempts: Arc<Mutex<Vec<Attempt>>>,
        delivered: Arc<Mutex<Vec<String>>>,
        hang: Arc<AtomicBool>,
        /// What `encoded_len` says of every span (0: sizes play no part).
        bytes_per_span: usize,
    }

    impl Fake {
        fn new(mode: Mode) -> Self {
            Fake {
                mode: Arc::new(Mutex::new(mode)),
                attempts: Arc::default(),
                delivered: Arc::default(),
                hang: Arc::default(),
                bytes_per_span: 0,
            }
        }
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
        fn delivered(&self) -> Vec<String> {
            self.delivered.lock().unwrap().clone()
        }
        fn attempts(&self) -> Vec<Attempt> {
            self.attempts.lock().unwrap().clone()
        }
    }

    impl Transport for Fake {
        fn encoded_len(&self, _span: &Span) -> usize {
            self.bytes_per_span
        }

        fn send(&self, spans: &[Arc<Span>]) -> SendFuture {
            let names: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
            let mode = *self.mode.lock().unwrap();
            self.attempts
                .lock()
                .unwrap()
                .push((Instant::now(), names.clone(), mode));
            let delivered = self.delivered.clone();
            let hang = self.hang.load(SeqCst);
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                match mode {
                    Mode::Up => {
                        delivered.lock().unwrap().extend(names);
                        Outcome::Delivered {
                            rejected: 0,
                            message: String::new(),
                        }
                    }
                    Mode::Down => Outcome::Retry {
                        after: None,
                        error: "connection refused".into(),
                    },
                    Mode::Throttle(after) => Outcome::Retry {
                        after: Some(after),
                        error: "429".into(),
                    },
                    Mode::Reject => Outcome::Reject {
                        error: "400".into(),
                    },
                }
            })
        }
    }

    fn span(i: usize) -> Arc<Span> {
        Arc::new(Span {
            trace_id: [1; 16],
            span_id: (i as u64).to_be_bytes(),
            parent_span_id: None,
            name: format!("s{i}"),
            kind: SpanKind::Client,
            start_unix_ns: 1,
            end_unix_ns: 2,
            attributes: Vec::new(),
            status: SpanStatus::Unset,
            events: Vec::new(),
            process: Arc::new(ProcessInfo::unknown(1)),
        })
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("s{i}")).collect()
    }

    fn quick(buffer_spans: usize) -> Policy {
        Policy {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_batch: 4,
            batch_delay: Duration::from_millis(5),
            buffer_spans,
            buffer_bytes: usize::MAX,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            retry_after_max: Duration::from_secs(5),
            final_flush: Duration::from_millis(300),
        }
    }

    async fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn dropped(h: &Health) -> [u64; 4] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            h.export_dropped_queue_full.load(Relaxed),
            h.export_dropped_buffer_full.load(Relaxed),
            h.export_dropped_rejected.load(Relaxed),
            h.export_dropped_shutdown.load(Relaxed),
        ]
    }

    fn exported(h: &Health) -> u64 {
        h.exported_spans.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test]
    async fn bound_drops_exactly_the_oldest_and_counts_them() {
        let fake = Fake::new(Mode::Down);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        // All 25 are waiting before the loop runs, so it takes them in one go.
        for i in 0..25 {
            tx.send(span(i)).await.unwrap();
        }
        let task = tokio::spawn(deliver(fake.clone(), quick(10), health.clone(), rx));
        wait_until("a failed attempt", || !fake.attempts().is_empty()).await;
        assert_eq!(dropped(&health), [0, 15, 0, 0]);
        assert_eq!(
            fake.attempts()[0].1,
            names(15..19),
            "oldest kept span first"
        );

        // While down, 3 more arrive: the 3 oldest of the kept ones go.
        for i in 25..28 {
            tx.send(span(i)).await.unwrap();
        }
        wait_until("3 more dropped", || dropped(&health)[1] == 18).await;
        fake.set(Mode::Up);
        wait_until("delivery", || fake.delivered().len() == 10).await;
        assert_eq!(fake.delivered(), names(18..28), "in order, none twice");
        drop(tx);
        task.await.unwrap();
        assert_eq!(exported(&health), 10);
        assert_eq!(dropped(&health), [0, 18, 0, 0]);
        assert_eq!(exported(&health) + dropped(&health).iter().sum::<u64>(), 28);
    }

    #[tokio::test]
    async fn the_byte_bound_drops_the_oldest_too() {
        let fake = Fake {
            bytes_per_span: 1000,
            ..Fake::new(Mode::Down)
        };
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        for i in 0..25 {
            tx.send(span(i)).await.unwrap();
        }
        // Room for 100 spans by count, 8 by bytes.
        let policy = Policy {
            buffer_bytes: 8 * 1000,
            ..quick(100)
        };
        let task = tokio::spawn(deliver(fake.clone(), policy, health.clone(), rx));
        wait_until("a failed attempt", || !fake.attempts().is_empty()).await;
        assert_eq!(dropped(&health), [0, 17, 0, 0]);
        assert_eq!(
            fake.attempts()[0].1,
            names(17..21),
            "oldest kept span first"
        );
        fake.set(Mode::Up);
        wait_until("delivery", || fake.delivered().len() == 8).await;
        assert_eq!(fake.delivered(), names(17..25));
        // Delivered spans free their bytes: 8 more fit again.
        fake.set(Mode::Down);
        for i in 25..33 {
            tx.send(span(i)).await.unwrap();
        }
        wait_until("a second failed attempt", || {
            fake.attempts().iter().filter(|a| a.2 == Mode::Down).count() >= 2
        })
        .await;
        assert_eq!(dropped(&health), [0, 17, 0, 0], "nothing more dropped");
        fake.set(Mode::Up);
        wait_until("delivery", || fake.delivered().len() == 16).await;
        drop(tx);
        task.await.unwrap();
        assert_eq!(exported(&health) + dropped(&health).iter().sum::<u64>(), 33);
    }

    #[tokio::test]
    async fn outage_keeps_accepting_then_delivers_everything_in_order() {
        let fake = Fake::new(Mode::Down);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(deliver(fake.clone(), quick(1000), health.clone(), rx));
        // A channel of 4 and 200 spans: they only all fit if the loop drains its input while
        // it backs off.
        for i in 0..200 {
            tokio::time::timeout(Duration::from_secs(1), tx.send(span(i)))
                .await
                .expect("the exporter never stops taking spans")
                .unwrap();
        }
        wait_until("several attempts", || fake.attempts().len() >= 4).await;
        let attempts = fake.attempts();
        assert!(attempts.iter().all(|a| a.1 == names(0..4)), "head retried");
        // Backoff grows: 10 ms, 20 ms, then the 40 ms cap, each with up to half of it jitter.
        let gap = |i: usize| attempts[i].0 - attempts[i - 1].0;
        assert!(gap(1) >= Duration::from_millis(5), "{:?}", gap(1));
        assert!(gap(3) >= Duration::from_millis(19), "{:?}", gap(3));
        assert!(health.export_retries.load(SeqCst) >= 3);

        fake.set(Mode::Up);
        wait_until("all delivered", || fake.delivered().len() == 200).await;
        assert_eq!(fake.delivered(), names(0..200));
        drop(tx);
        task.await.unwrap();
        assert_eq!(exported(&health), 200);
        assert_eq!(dropped(&health), [0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn rejected_requests_are_dropped_and_counted_without_retry() {
        let fake = Fake::new(Mode::Reject);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        for i in 0..6 {
            tx.send(span(i)).await.unwrap();
        }
        let task = tokio::spawn(deliver(fake.clone(), quick(1000), health.clone(), rx));
        wait_until("both requests", || dropped(&health)[2] == 6).await;
        fake.set(Mode::Up);
        tx.send(span(6)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        let attempts = fake.attempts();
        assert_eq!(attempts.len(), 3, "no retries: {attempts:?}");
        assert_eq!(fake.delivered(), names(6..7));
        assert_eq!(health.export_retries.load(SeqCst), 0);
        assert_eq!((exported(&health), dropped(&health)), (1, [0, 0, 6, 0]));
    }

    #[tokio::test]
    async fn retry_after_from_the_receiver_replaces_the_backoff() {
        let fake = Fake::new(Mode::Throttle(Duration::from_millis(300)));
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        tx.send(span(0)).await.unwrap();
        let task = tokio::spawn(deliver(fake.clone(), quick(1000), health.clone(), rx));
        wait_until("the throttled attempt", || fake.attempts().len() == 1).await;
        fake.set(Mode::Up);
        wait_until("delivery", || fake.delivered().len() == 1).await;
        let attempts = fake.attempts();
        assert_eq!(attempts.len(), 2);
        // The own backoff would have retried within 10 ms.
        assert!(attempts[1].0 - attempts[0].0 >= Duration::from_millis(290));
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_flushes_within_its_bound_and_counts_the_rest() {
        // Down for good: everything buffered is counted as lost at shutdown.
        let fake = Fake::new(Mode::Down);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        for i in 0..7 {
            tx.send(span(i)).await.unwrap();
        }
        drop(tx);
        let started = Instant::now();
        deliver(fake.clone(), quick(1000), health.clone(), rx).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2));
        assert_eq!((exported(&health), dropped(&health)), (0, [0, 0, 0, 7]));

        // Up again at shutdown: a pending backoff does not delay the final flush.
        let fake = Fake::new(Mode::Up);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        for i in 0..7 {
            tx.send(span(i)).await.unwrap();
        }
        drop(tx);
        let started = Instant::now();
        deliver(fake.clone(), quick(1000), health.clone(), rx).await;
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(fake.delivered(), names(0..7));
        assert_eq!((exported(&health), dropped(&health)), (7, [0, 0, 0, 0]));

        // A request that never answers: its spans count as lost once the flush time is up.
        let fake = Fake::new(Mode::Up);
        fake.hang.store(true, SeqCst);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(100);
        for i in 0..6 {
            tx.send(span(i)).await.unwrap();
        }
        drop(tx);
        deliver(fake.clone(), quick(1000), health.clone(), rx).await;
        assert_eq!((exported(&health), dropped(&health)), (0, [0, 0, 0, 6]));
    }
}
