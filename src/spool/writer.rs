//! The writer thread: every write to the store, in grouped commits.
//!
//! It waits for one operation, then takes everything else already queued (hooks from every
//! connection, confirmations from the pusher) into the same transaction, commits it, and only
//! then answers the hooks in it. While one commit's fsync runs, the next batch queues up, so
//! the number of fsyncs follows the disk, not the request rate. A commit with new hooks is
//! durable before anyone is answered; one with only confirmations is not flushed on its own
//! (`Durability::None`): the next durable commit, at most [`SYNC_EVERY`] later, carries it,
//! and losing it in a crash only means those deliveries are pushed once more.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::id::{Slotted, fill};
use super::store::{Prune, Row, Store, Work};
use super::{Shared, SpoolConfig, SpoolError, now_ms};

/// Longest time a non-durable commit waits for a durable one.
pub(super) const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How often delivered entries and replay keys are checked against their retention.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Operations taken into one transaction at most.
const MAX_OPS: usize = 4096;

/// Rows of each kind pruned per transaction at most.
const PRUNE_ROWS: usize = 2048;

/// Bytes of committed entries handed to the pusher and not yet taken, at most; past it the
/// pusher reads them back from the store.
pub(super) const FRESH_BYTES: usize = 8 << 20;

/// A hook to commit.
#[derive(Debug)]
pub(super) struct Ingest {
    pub slotted: Slotted,
    pub path: String,
    pub client: String,
    pub dedup: Option<u128>,
    pub received_ms: u64,
    pub reply: oneshot::Sender<Result<u64, SpoolError>>,
    /// Its place in the queue's byte budget, given back when it is answered.
    pub _permit: OwnedSemaphorePermit,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Op {
    Ingest(Ingest),
    /// Echoes seen: sequence number, attempts.
    Confirm(Vec<(u64, u32)>),
    /// Pending entries pushed again: sequence number, attempts so far.
    Attempts(Vec<(u64, u32)>),
    /// Put a delivered entry back to pending; answers its attempts and event.
    Redeliver(
        u64,
        oneshot::Sender<Result<Option<(u32, Bytes)>, SpoolError>>,
    ),
    /// Make everything durable now.
    Sync(oneshot::Sender<Result<(), SpoolError>>),
}

/// Committed entries for the pusher, in sequence order.
pub(super) type Fresh = Vec<(u64, Bytes)>;

pub(super) struct Writer {
    store: Arc<Store>,
    rx: std::sync::mpsc::Receiver<Op>,
    shared: Arc<Shared>,
    fresh: mpsc::UnboundedSender<Fresh>,
    spool_id: u64,
    next_seq: u64,
    max_bytes: u64,
    retention: Duration,
    dedup_ttl: Duration,
    dedup_capacity: u64,
    /// Non-durable commits since the last durable one.
    dirty: bool,
    last_durable: Instant,
    last_sweep: Instant,
    failing: bool,
}

impl Writer {
    pub(super) fn new(
        store: Arc<Store>,
        rx: std::sync::mpsc::Receiver<Op>,
        shared: Arc<Shared>,
        fresh: mpsc::UnboundedSender<Fresh>,
        config: &SpoolConfig,
        next_seq: u64,
    ) -> Self {
        Self {
            spool_id: store.spool_id(),
            store,
            rx,
            shared,
            fresh,
            next_seq,
            max_bytes: config.max_bytes,
            retention: config.retention,
            dedup_ttl: config.dedup_ttl,
            dedup_capacity: config.dedup_capacity as u64,
            dirty: false,
            last_durable: Instant::now(),
            last_sweep: Instant::now(),
            failing: false,
        }
    }

    pub(super) fn run(mut self) {
        let mut ops = Vec::with_capacity(MAX_OPS);
        loop {
            match self.rx.recv_timeout(SYNC_EVERY / 4) {
                Ok(op) => ops.push(op),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if self.dirty {
                        self.batch(Vec::new(), true);
                    }
                    return;
                }
            }
            while ops.len() < MAX_OPS {
                match self.rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let due = self.dirty && self.last_durable.elapsed() >= SYNC_EVERY;
            if !ops.is_empty() || due || self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.batch(std::mem::take(&mut ops), due);
            }
        }
    }

    /// One transaction for `ops`.
    fn batch(&mut self, ops: Vec<Op>, force_durable: bool) {
        let now = now_ms();
        let mut work = Work {
            now_ms: now,
            ..Work::default()
        };
        let mut replies = Vec::new();
        let mut redeliver_replies = Vec::new();
        let mut syncs = Vec::new();
        let pending_bytes = self.shared.pending_bytes.load(Ordering::Relaxed);
        let mut new_bytes = 0u64;
        let first_seq = self.next_seq;
        for op in ops {
            match op {
                Op::Ingest(ingest) => {
                    let Ingest {
                        mut slotted,
                        path,
                        client,
                        dedup,
                        received_ms,
                        reply,
                        _permit,
                    } = ingest;
                    let row_size = (slotted.bytes.len() + path.len() + client.len()) as u64
                        + super::store::ROW_OVERHEAD;
                    if pending_bytes + new_bytes + row_size > self.max_bytes {
                        self.shared.refused_full.fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(Err(SpoolError::Full(self.retry_after())));
                        continue;
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    fill(&mut slotted.bytes, slotted.id_at, self.spool_id, seq);
                    new_bytes += row_size;
                    work.rows.push(Row {
                        seq,
                        received_ms,
                        path,
                        client,
                        event: Bytes::from(slotted.bytes),
                        dedup,
                    });
                    replies.push((seq, reply));
                }
                Op::Confirm(mut c) => work.confirms.append(&mut c),
                Op::Attempts(mut a) => work.attempts.append(&mut a),
                Op::Redeliver(seq, reply) => {
                    work.redelivers.push(seq);
                    redeliver_replies.push((seq, reply));
                }
                Op::Sync(reply) => syncs.push(reply),
            }
        }
        work.next_seq = self.next_seq;
        work.prune = self.prune_plan(new_bytes);
        if work.is_empty() && syncs.is_empty() && !force_durable {
            return;
        }
        let durable = !work.rows.is_empty()
            || !work.redelivers.is_empty()
            || !syncs.is_empty()
            || force_durable;
        let started = Instant::now();
        let result = self.store.commit(&work, durable);
        self.shared.observe_commit(started.elapsed(), durable);
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                self.shared.commit_failures.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    tracing::error!(error = %e, hooks = replies.len(), "Spool commit failed; hooks are refused with 503 until it works again");
                    self.failing = true;
                }
                self.next_seq = first_seq;
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for (_, reply) in redeliver_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for reply in syncs {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        if self.failing {
            tracing::info!("Spool commits work again");
            self.failing = false;
        }
        if durable {
            self.dirty = false;
            self.last_durable = Instant::now();
        } else {
            self.dirty = true;
        }
        self.account(&work, &applied, new_bytes);
        for (seq, reply) in replies {
            // A handler that gave up (its client left) still has its hook spooled.
            let _ = reply.send(Ok(seq));
        }
        self.hand_over(&work);
        for (seq, reply) in redeliver_replies {
            let found = applied
                .redelivered
                .iter()
                .find(|r| r.0 == seq)
                .map(|r| (r.1, r.2.clone()));
            let _ = reply.send(Ok(found));
        }
        for reply in syncs {
            let _ = reply.send(Ok(()));
        }
    }

    fn account(&self, work: &Work, applied: &super::store::Applied, new_bytes: u64) {
        let s = &self.shared;
        let rows = work.rows.len() as u64;
        let confirmed = applied.confirmed.len() as u64;
        let confirmed_bytes: u64 = applied.confirmed.iter().map(|c| c.1).sum();
        let back = applied.redelivered.len() as u64;
        let back_bytes: u64 = applied.redelivered.iter().map(|r| r.3).sum();
        s.accepted.fetch_add(rows, Ordering::Relaxed);
        s.pending.fetch_add(rows + back, Ordering::Relaxed);
        s.pending_bytes
            .fetch_add(new_bytes + back_bytes, Ordering::Relaxed);
        sub(&s.pending, confirmed);
        sub(&s.pending_bytes, confirmed_bytes);
        s.confirmed.fetch_add(confirmed, Ordering::Relaxed);
        s.delivered.fetch_add(confirmed, Ordering::Relaxed);
        s.delivered_bytes
            .fetch_add(confirmed_bytes, Ordering::Relaxed);
        sub(&s.delivered, back + applied.pruned.0);
        sub(&s.delivered_bytes, back_bytes + applied.pruned.1);
        s.dedup_keys.fetch_add(applied.dedup.0, Ordering::Relaxed);
        sub(&s.dedup_keys, applied.dedup.1);
    }

    /// Hands the new entries to the pusher, unless it already holds [`FRESH_BYTES`] of them
    /// (then it reads them back from the store, told so by `fresh_dropped`).
    fn hand_over(&self, work: &Work) {
        if work.rows.is_empty() {
            return;
        }
        let bytes: usize = work.rows.iter().map(|r| r.event.len()).sum();
        let held = self.shared.fresh_bytes.load(Ordering::Acquire);
        if held + bytes > FRESH_BYTES {
            self.shared.fresh_dropped.store(true, Ordering::Release);
            self.shared.fresh_dropped_wake.notify_one();
            return;
        }
        self.shared.fresh_bytes.fetch_add(bytes, Ordering::AcqRel);
        let batch: Fresh = work.rows.iter().map(|r| (r.seq, r.event.clone())).collect();
        if self.fresh.send(batch).is_err() {
            self.shared.fresh_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// What to prune in this transaction: delivered entries when the spool is over its bytes,
    /// and everything past its retention every [`SWEEP_EVERY`].
    fn prune_plan(&mut self, new_bytes: u64) -> Option<Prune> {
        let s = &self.shared;
        let total = s.pending_bytes.load(Ordering::Relaxed)
            + s.delivered_bytes.load(Ordering::Relaxed)
            + new_bytes;
        let over = total.saturating_sub(self.max_bytes);
        let sweep = self.last_sweep.elapsed() >= SWEEP_EVERY;
        if over == 0 && !sweep {
            return None;
        }
        let now = now_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut prune = Prune {
            free_bytes: over,
            max_rows: PRUNE_ROWS,
            ..Prune::default()
        };
        if sweep {
            self.last_sweep = Instant::now();
            prune.delivered_before_ms = now.saturating_sub(ms(self.retention));
            prune.dedup_before_ms = now.saturating_sub(ms(self.dedup_ttl));
            prune.dedup_over = s
                .dedup_keys
                .load(Ordering::Relaxed)
                .saturating_sub(self.dedup_capacity);
        }
        Some(prune)
    }

    /// `Retry-After` for a full spool: soon while entries are going out, longer while the
    /// master is not taking them.
    fn retry_after(&self) -> u64 {
        if self.shared.delivering.load(Ordering::Relaxed) {
            5
        } else {
            30
        }
    }
}

fn sub(a: &std::sync::atomic::AtomicU64, n: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}
