//! The pusher task: committed entries onto the bus, in order, and their confirmation.
//!
//! - Entries come straight from the writer after each commit, or, when the pusher is behind
//!   (after a start, an outage, a full window), are read back from the store from `cursor` on.
//! - At most [`WINDOW`] entries ([`WINDOW_BYTES`]) are pushed and unconfirmed at once, so a
//!   master that stops taking events is not buried, and memory stays bounded.
//! - An entry is confirmed when its echo comes back on the master's publisher (the tap hands
//!   the sequence number over; the bus reader never waits). Its deadline is the retransmission
//!   timeout of TCP (RFC 6298) over the measured push-to-echo times: smoothed time plus four
//!   deviations, within [`MIN_RTO`]..[`MAX_RTO`], doubled per attempt; only first pushes are
//!   measured. The publisher relays one connection's events in order, so a deadline that passes
//!   while echoes are still arriving for earlier pushes only means the entry is queued behind
//!   them: it waits one more deadline. An entry is pushed again when an echo of a later push
//!   came first, or when nothing came back for a whole deadline.
//! - When the bus goes down nothing is pushed; when it (re)connects, the master's Reactor is
//!   asked first ([`super::reactor`]) and only its answer resumes pushing: every unconfirmed
//!   entry again, then the rest in order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::reactor::ReactorCheck;
use super::store::Store;
use super::writer::{Fresh, Op};
use super::{Ctl, Shared};
use crate::salt::SharedBus;

/// Entries pushed and not confirmed, at most.
pub(super) const WINDOW: usize = 8192;
/// Bytes of entries pushed and not confirmed, at most.
pub(super) const WINDOW_BYTES: usize = 8 << 20;
/// Entries per write to the bus at most.
const PUSH_BATCH: usize = 512;
/// Re-push deadlines stay within these.
pub(super) const MIN_RTO: Duration = Duration::from_millis(200);
/// See [`MIN_RTO`].
pub(super) const MAX_RTO: Duration = Duration::from_secs(30);
/// The deadline before any push-to-echo time was measured (RFC 2988's 3 s rather than RFC
/// 6298's 1 s: a master that has just started answers its first events slowly).
const INITIAL_RTO: Duration = Duration::from_secs(3);
/// First and longest wait for the Reactor's answer before asking again.
const ASK_FIRST: Duration = Duration::from_millis(500);
const ASK_MAX: Duration = Duration::from_secs(5);
/// After this long without the Reactor's answer, say so.
const ASK_WARN: Duration = Duration::from_secs(30);
/// First and longest pause after a failed push or store read.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Echoes of entries not yet pushed by this process (pushed by the one before it) remembered
/// at most, so that they are not pushed again.
const EARLY_MAX: usize = 65_536;

/// The bus connection as the tap reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Link {
    /// Bumped at every (re)connection.
    pub generation: u64,
    /// Whether it is up.
    pub up: bool,
}

/// What the pusher is made of.
pub(super) struct Parts {
    pub bus: SharedBus,
    pub store: Arc<Store>,
    pub ops: std::sync::mpsc::Sender<Op>,
    pub shared: Arc<Shared>,
    /// The bus confirms by the fire itself (built-in bus): no echo, no Reactor to ask.
    pub instant: bool,
    pub reactor: Option<ReactorCheck>,
    /// The first pending entry (or the next sequence number).
    pub first: u64,
    /// Whether the bus was connected when the tap was installed.
    pub connected: bool,
}

/// What the pusher listens to.
pub(super) struct Inputs {
    pub echo: mpsc::Receiver<u64>,
    pub link: watch::Receiver<Link>,
    pub reactor: watch::Receiver<u64>,
    pub fresh: mpsc::UnboundedReceiver<Fresh>,
    pub ctl: mpsc::UnboundedReceiver<Ctl>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The bus is down: nothing is pushed.
    Down,
    /// Connected; waiting for the Reactor's answer to the request sent at `asked`.
    Asking {
        since: Instant,
        asked: Instant,
        wait: Duration,
        /// The Reactor's answers counted when the request was sent.
        seen: u64,
        warned: bool,
    },
    /// Pushing.
    Up,
}

#[derive(Debug)]
struct Flight {
    event: Bytes,
    pushed: Instant,
    attempt: u32,
    /// The order of the push, across all entries.
    push_no: u64,
    /// Whether its echo measures the push-to-echo time (first pushes only, as Karn's rule).
    sample: bool,
}

/// RFC 6298's estimator.
#[derive(Debug, Clone, Copy, Default)]
struct Rto {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rto {
    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(s * 7 / 8 + r / 8);
            }
        }
    }

    /// The deadline of a push that is the `attempt`th of its entry.
    fn timeout(&self, attempt: u32) -> Duration {
        let base = match self.srtt {
            None => INITIAL_RTO,
            Some(s) => s + (self.rttvar * 4).max(Duration::from_millis(10)),
        }
        .clamp(MIN_RTO, MAX_RTO);
        let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(8));
        doubled.min(MAX_RTO)
    }
}

pub(super) struct Pusher {
    bus: SharedBus,
    store: Arc<Store>,
    ops: std::sync::mpsc::Sender<Op>,
    shared: Arc<Shared>,
    instant: bool,
    reactor: Option<ReactorCheck>,
    connected_at_start: bool,
    phase: Phase,
    generation: u64,
    reactor_answers: u64,
    inflight: BTreeMap<u64, Flight>,
    inflight_bytes: usize,
    timers: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    /// Every entry before it was pushed by this process (or confirmed).
    cursor: u64,
    /// No committed entry from `cursor` on waits in the store unseen.
    caught_up: bool,
    rto: Rto,
    push_no: u64,
    /// The latest push whose echo came, and when.
    echo_high: u64,
    echo_at: Instant,
    confirms: Vec<(u64, u32)>,
    attempts: Vec<(u64, u32)>,
    /// Pushing (or reading the store) failed: not before this, and the pause so far.
    retry: Option<(Instant, Duration)>,
    early: HashSet<u64>,
    drains: Vec<(Instant, oneshot::Sender<()>)>,
    key_warned: bool,
}

impl Pusher {
    pub(super) fn new(parts: Parts) -> Self {
        Self {
            bus: parts.bus,
            store: parts.store,
            ops: parts.ops,
            shared: parts.shared,
            instant: parts.instant,
            reactor: parts.reactor,
            connected_at_start: parts.connected,
            phase: Phase::Down,
            generation: 0,
            reactor_answers: 0,
            inflight: BTreeMap::new(),
            inflight_bytes: 0,
            timers: BinaryHeap::new(),
            cursor: parts.first,
            caught_up: false,
            rto: Rto::default(),
            push_no: 0,
            echo_high: 0,
            echo_at: Instant::now(),
            confirms: Vec::new(),
            attempts: Vec::new(),
            retry: None,
            early: HashSet::new(),
            drains: Vec::new(),
            key_warned: false,
        }
    }

    pub(super) async fn run(mut self, mut inputs: Inputs, stop: CancellationToken) {
        let shared = Arc::clone(&self.shared);
        if self.instant {
            self.phase = Phase::Up;
        } else if self.connected_at_start {
            self.connected().await;
        }
        loop {
            if shared.fresh_dropped.swap(false, Ordering::AcqRel) {
                self.caught_up = false;
            }
            self.flush_ops();
            self.publish();
            self.check_drains();
            if self.can_scan() {
                self.scan().await;
                continue;
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(seq) = inputs.echo.recv() => {
                    self.echoed(seq);
                    while let Ok(seq) = inputs.echo.try_recv() {
                        self.echoed(seq);
                    }
                }
                Ok(()) = inputs.link.changed() => {
                    let link = *inputs.link.borrow_and_update();
                    self.link(link).await;
                }
                Ok(()) = inputs.reactor.changed() => {
                    let answers = *inputs.reactor.borrow_and_update();
                    self.reactor_answered(answers).await;
                }
                Some(batch) = inputs.fresh.recv() => self.fresh(batch).await,
                Some(ctl) = inputs.ctl.recv() => self.ctl(ctl).await,
                () = shared.fresh_dropped_wake.notified() => {}
                () = tokio::time::sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {
                    self.due().await;
                }
            }
        }
        self.flush_ops();
    }

    fn can_scan(&self) -> bool {
        matches!(self.phase, Phase::Up)
            && !self.caught_up
            && self.room() > 0
            && self.retry.is_none_or(|(at, _)| Instant::now() >= at)
    }

    /// Entries that may be pushed now without passing the window.
    fn room(&self) -> usize {
        if self.instant {
            return PUSH_BATCH * 4;
        }
        if self.inflight_bytes >= WINDOW_BYTES {
            return 0;
        }
        WINDOW.saturating_sub(self.inflight.len())
    }

    fn live(&self) -> bool {
        matches!(self.phase, Phase::Up) && self.retry.is_none()
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut wake = self.timers.peek().map(|Reverse((t, _, _))| *t);
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let Phase::Asking { asked, wait, .. } = self.phase {
            at(asked + wait);
        }
        if let Some((t, _)) = self.retry {
            at(t);
        }
        if !self.drains.is_empty() {
            // The writer's commits do not wake the pusher: look again shortly.
            at(Instant::now() + Duration::from_millis(50));
        }
        wake
    }

    fn publish(&self) {
        let s = &self.shared;
        s.inflight
            .store(self.inflight.len() as u64, Ordering::Relaxed);
        let rto = u64::try_from(self.rto.timeout(1).as_micros()).unwrap_or(u64::MAX);
        s.rto_micros.store(rto, Ordering::Relaxed);
        let link = match self.phase {
            Phase::Down => 0,
            Phase::Asking { .. } => 1,
            Phase::Up => 2,
        };
        s.link.store(link, Ordering::Relaxed);
        s.delivering
            .store(self.live() && self.room() > 0, Ordering::Release);
    }

    fn flush_ops(&mut self) {
        if !self.confirms.is_empty() {
            let _ = self
                .ops
                .send(Op::Confirm(std::mem::take(&mut self.confirms)));
        }
        if !self.attempts.is_empty() {
            let _ = self
                .ops
                .send(Op::Attempts(std::mem::take(&mut self.attempts)));
        }
    }

    fn check_drains(&mut self) {
        if self.drains.is_empty() {
            return;
        }
        let now = Instant::now();
        let empty = self.inflight.is_empty() && self.shared.pending.load(Ordering::Relaxed) == 0;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.drains)
            .into_iter()
            .partition(|(deadline, _)| empty || now >= *deadline);
        self.drains = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }

    async fn link(&mut self, link: Link) {
        if !link.up {
            if !matches!(self.phase, Phase::Down) {
                tracing::warn!(
                    pending = self.shared.pending.load(Ordering::Relaxed),
                    "Master event bus down: hooks are spooled until it is back"
                );
            }
            self.phase = Phase::Down;
            return;
        }
        if link.generation != self.generation || matches!(self.phase, Phase::Down) {
            self.generation = link.generation;
            self.connected().await;
        }
    }

    /// The bus is (again) up: ask the Reactor, or resume at once when there is none to ask.
    async fn connected(&mut self) {
        if self.reactor.is_none() {
            self.resume().await;
            return;
        }
        let now = Instant::now();
        self.phase = Phase::Asking {
            since: now,
            asked: now,
            wait: ASK_FIRST,
            seen: self.reactor_answers,
            warned: false,
        };
        self.ask().await;
    }

    /// Sends the Reactor its request (again).
    async fn ask(&mut self) {
        let Phase::Asking {
            since,
            wait,
            warned,
            ..
        } = self.phase
        else {
            return;
        };
        let Some(check) = &self.reactor else {
            return;
        };
        let request = match check.ask() {
            Ok(r) => r,
            Err(e) => {
                if !self.key_warned {
                    tracing::warn!(key_file = %check.key_file.display(), error = %e, "Cannot read the master's key to ask whether its Reactor is listening; delivering without asking");
                    self.key_warned = true;
                }
                self.resume().await;
                return;
            }
        };
        let seen = self.reactor_answers;
        self.shared.reactor_asks.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.bus.fire(request).await {
            tracing::debug!(error = %e, "Could not ask the master's Reactor yet");
        }
        let now = Instant::now();
        let waited = now.duration_since(since);
        let warn = !warned && waited >= ASK_WARN;
        if warn {
            tracing::warn!(
                waited_secs = waited.as_secs(),
                pending = self.shared.pending.load(Ordering::Relaxed),
                "The master's Reactor does not answer; spooled hooks wait for it \
                 (saltgate.spool.wait_for_reactor: false delivers without asking)"
            );
        }
        self.phase = Phase::Asking {
            since,
            asked: now,
            wait: (wait * 2).min(ASK_MAX),
            seen,
            warned: warned || warn,
        };
    }

    async fn reactor_answered(&mut self, answers: u64) {
        self.reactor_answers = answers;
        if let Phase::Asking { since, seen, .. } = self.phase {
            if answers > seen {
                tracing::info!(
                    waited_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    pending = self.shared.pending.load(Ordering::Relaxed),
                    "The master's Reactor is listening: delivering spooled hooks"
                );
                self.resume().await;
            }
        }
    }

    /// Pushing again: every unconfirmed entry first, then the rest from the store.
    async fn resume(&mut self) {
        self.phase = Phase::Up;
        self.caught_up = false;
        // Another master process, maybe: earlier measurements say nothing about it, and the
        // patience for echoes counts from now.
        self.rto = Rto::default();
        self.echo_at = Instant::now();
        let again: Vec<u64> = self.inflight.keys().copied().collect();
        self.repush(again).await;
    }

    fn echoed(&mut self, seq: u64) {
        let now = Instant::now();
        if let Some(f) = self.inflight.remove(&seq) {
            self.inflight_bytes -= f.event.len();
            if f.sample {
                self.rto.sample(now.duration_since(f.pushed));
            }
            self.echo_high = self.echo_high.max(f.push_no);
            self.echo_at = now;
            self.confirms.push((seq, f.attempt));
        } else if seq >= self.cursor {
            // Pushed before this process started, by the one before it: delivered.
            if self.early.len() < EARLY_MAX {
                self.early.insert(seq);
            }
            self.confirms.push((seq, 1));
        } else {
            self.shared.repeats.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn fresh(&mut self, batch: Fresh) {
        let bytes: usize = batch.iter().map(|e| e.1.len()).sum();
        self.shared.fresh_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if !self.live() || !self.caught_up {
            self.caught_up = false;
            return;
        }
        let Some(&(first, _)) = batch.first() else {
            return;
        };
        if first > self.cursor {
            // Some were not handed over: read them back, in order.
            self.caught_up = false;
            return;
        }
        let mut todo: Vec<(u64, u32, Bytes)> = batch
            .into_iter()
            .filter(|(seq, _)| *seq >= self.cursor)
            .map(|(seq, event)| (seq, 1, event))
            .collect();
        let room = self.room();
        if todo.len() > room {
            todo.truncate(room);
            self.caught_up = false;
        }
        if let Some(last) = todo.last() {
            self.cursor = last.0 + 1;
        }
        self.push_all(todo, true).await;
    }

    /// Reads pending entries from `cursor` on and pushes them.
    async fn scan(&mut self) {
        let room = self.room().min(PUSH_BATCH * 4);
        let bytes = WINDOW_BYTES.saturating_sub(self.inflight_bytes).max(1);
        let store = Arc::clone(&self.store);
        let from = self.cursor;
        let rows = tokio::task::spawn_blocking(move || store.pending_from(from, room, bytes)).await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                self.failed(&e.to_string(), 0);
                return;
            }
            Err(e) => {
                self.failed(&e.to_string(), 0);
                return;
            }
        };
        let Some(last) = rows.last().map(|r| r.0) else {
            self.caught_up = true;
            return;
        };
        self.cursor = last + 1;
        let todo: Vec<(u64, u32, Bytes)> = rows
            .into_iter()
            .filter(|(seq, _, _)| !self.early.remove(seq))
            .map(|(seq, attempts, event)| (seq, attempts + 1, event))
            .collect();
        self.push_all(todo, true).await;
    }

    async fn ctl(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Redeliver(seq, attempts, event) => {
                if seq >= self.cursor {
                    // Pending again, ahead of the cursor: the store read finds it.
                    self.caught_up = false;
                    return;
                }
                let entry = vec![(seq, attempts + 1, event)];
                if self.live() {
                    self.push_all(entry, false).await;
                } else {
                    // Pushed with the others when the bus is back.
                    for (seq, attempt, event) in entry {
                        self.track(seq, attempt, event, false, Instant::now());
                    }
                }
            }
            Ctl::Drain(deadline, reply) => self.drains.push((deadline, reply)),
        }
    }

    /// Deadlines that passed: the Reactor's answer, a pause, unconfirmed pushes.
    async fn due(&mut self) {
        let now = Instant::now();
        if let Phase::Asking { asked, wait, .. } = self.phase {
            if now >= asked + wait {
                self.ask().await;
            }
        }
        let patience = self.rto.timeout(1);
        let mut lost = Vec::new();
        while let Some(&Reverse((t, seq, no))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(f) = self.inflight.get(&seq) else {
                continue;
            };
            if f.push_no != no || !matches!(self.phase, Phase::Up) {
                // Stale, or the bus is down: pushed again when it is back.
                continue;
            }
            let behind = self.echo_high < no && now.duration_since(self.echo_at) < patience;
            if behind && self.retry.is_none() {
                // Echoes still come for earlier pushes: this one is queued behind them.
                self.timers.push(Reverse((now + patience, seq, no)));
                continue;
            }
            lost.push(seq);
        }
        self.repush(lost).await;
        if self.timers.len() > 4 * self.inflight.len() + 1024 {
            self.timers = self
                .inflight
                .iter()
                .map(|(seq, f)| Reverse((f.pushed + self.rto.timeout(f.attempt), *seq, f.push_no)))
                .collect();
        }
    }

    /// Pushes unconfirmed entries again, in order.
    async fn repush(&mut self, mut seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        seqs.sort_unstable();
        let entries: Vec<(u64, u32, Bytes)> = seqs
            .iter()
            .filter_map(|seq| {
                self.inflight
                    .get(seq)
                    .map(|f| (*seq, f.attempt + 1, f.event.clone()))
            })
            .collect();
        self.shared
            .repushed
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.attempts
            .extend(entries.iter().map(|(seq, attempt, _)| (*seq, *attempt)));
        self.push_all(entries, false).await;
    }

    async fn push_all(&mut self, entries: Vec<(u64, u32, Bytes)>, sample: bool) {
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<_> = entries.by_ref().take(PUSH_BATCH).collect();
            self.push(chunk, sample).await;
        }
    }

    async fn push(&mut self, entries: Vec<(u64, u32, Bytes)>, sample: bool) {
        if entries.is_empty() {
            return;
        }
        let events: Vec<Bytes> = entries.iter().map(|e| e.2.clone()).collect();
        let result = self.bus.fire_packed(events).await;
        let now = Instant::now();
        match result {
            Ok(()) => {
                if self.retry.take().is_some() {
                    tracing::info!("Pushing spooled hooks onto the bus works again");
                }
                for (seq, attempt, event) in entries {
                    if self.instant {
                        if let Some(f) = self.inflight.remove(&seq) {
                            self.inflight_bytes -= f.event.len();
                        }
                        self.confirms.push((seq, attempt));
                    } else {
                        let deadline = now + self.rto.timeout(attempt);
                        self.track(seq, attempt, event, sample && attempt == 1, deadline);
                    }
                }
            }
            Err(e) => {
                let n = entries.len();
                let pause = self.failed(&e.to_string(), n);
                for (seq, attempt, event) in entries {
                    self.track(seq, attempt, event, false, now + pause);
                }
            }
        }
    }

    /// Records a failed push or read; returns the pause before the next try.
    fn failed(&mut self, why: &str, events: usize) -> Duration {
        let pause = self
            .retry
            .map_or(RETRY_FIRST, |(_, p)| (p * 2).min(RETRY_MAX));
        if self.retry.is_none() {
            tracing::warn!(error = %why, events, "Cannot push spooled hooks onto the bus; retrying");
        }
        self.retry = Some((Instant::now() + pause, pause));
        pause
    }

    fn track(&mut self, seq: u64, attempt: u32, event: Bytes, sample: bool, deadline: Instant) {
        self.push_no += 1;
        let no = self.push_no;
        self.inflight_bytes += event.len();
        let flight = Flight {
            event,
            pushed: Instant::now(),
            attempt,
            push_no: no,
            sample,
        };
        if let Some(old) = self.inflight.insert(seq, flight) {
            self.inflight_bytes -= old.event.len();
        }
        self.timers.push(Reverse((deadline, seq, no)));
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_follows_the_measured_echo_time() {
        let mut rto = Rto::default();
        assert_eq!(rto.timeout(1), INITIAL_RTO);
        for _ in 0..50 {
            rto.sample(Duration::from_millis(2));
        }
        assert_eq!(rto.timeout(1), MIN_RTO, "fast echoes: the floor");
        let mut slow = Rto::default();
        for ms in [400, 600, 500, 450, 550] {
            slow.sample(Duration::from_millis(ms));
        }
        let t = slow.timeout(1);
        assert!(
            t > Duration::from_millis(600) && t < Duration::from_secs(2),
            "{t:?}"
        );
        assert_eq!(slow.timeout(2), t * 2);
        assert_eq!(slow.timeout(40), MAX_RTO);
    }
}
