//! The writer thread and the store thread: every write to the spool, in grouped commits.
//!
//! The writer waits for one operation, then takes everything else already queued (hooks from
//! every connection, confirmations from the pusher) into one group. Its hooks are appended to
//! the log ([`super::wal`]) and fsynced, and only then answered; the group goes on to the store
//! thread. While one group's fsync runs, the next queues up, so the number of fsyncs follows
//! the disk, not the request rate.
//!
//! The store thread commits what the writer handed it to the redb store, several groups in
//! one transaction when they queued up, without an fsync (`Durability::None`), then hands the
//! new entries to the pusher. A durable commit (a checkpoint) follows at most [`SYNC_EVERY`]
//! later, or at once when the log has moved to its other file; the log's files are reused only
//! once a checkpoint covers them. A crash loses only what no checkpoint covered: the hooks in
//! it are in the log and committed again at the next start; confirmations and attempt counts
//! are not, so those deliveries are pushed once more.
//!
//! Without a log (a spool in memory, or a group larger than a log file, or a log whose other
//! file no checkpoint covers yet) the store thread commits the group durably and answers its
//! hooks itself. Redeliveries and `Sync` are answered after a durable commit too.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::id::{Slotted, fill};
use super::store::{Applied, Prune, Row, Store, Work};
use super::wal::{Appended, Wal};
use super::{Shared, SpoolConfig, SpoolError, now_ms};

/// Longest time a non-durable commit waits for a durable one.
pub(super) const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How often delivered entries and replay keys are checked against their retention.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Operations taken into one group at most.
const MAX_OPS: usize = 4096;

/// Groups waiting for the store thread at most.
pub(super) const APPLY_QUEUE: usize = 512;

/// Bytes of events waiting for the store thread past which the writer waits (and the next
/// hooks with it) until the store thread takes some: they are answered and in memory, so this
/// is what a store thread that falls behind costs in RSS, about twice over (the allocator's
/// pages). Measured at 64 connections on the built-in bus with a master beside it
/// (2026-12-04, one run each, ±2 MiB between runs): up to 512 groups waiting, 36-37 MiB max
/// RSS; 2 MiB, 32.7; 1 MiB, 31.4; 256 KiB, 29.0, at the same 27,000 hooks/s. A count of 16
/// groups gave 28-29 MiB too, but made small groups (8 connections on a master) wait through
/// checkpoints: spool on / off 0.85 there, against 0.90-1.11 in four runs with a byte bound.
pub(super) const APPLY_BYTES: u64 = 256 << 10;

/// Longest wait of the writer for room at the store thread; then it sends anyway (the
/// channel still holds at most [`APPLY_QUEUE`] groups).
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Groups the store thread takes into one transaction at most.
const APPLY_MERGE: usize = 64;

/// Pause of the store thread after a failed commit of hooks already answered, before it
/// tries again.
const APPLY_RETRY: Duration = Duration::from_millis(100);

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
    pub reply: Reply,
    /// Its place in the queue's byte budget, given back once the store has it.
    pub _permit: OwnedSemaphorePermit,
}

/// Where a hook's sequence number (or why it was refused) goes.
pub(super) type Reply = oneshot::Sender<Result<u64, SpoolError>>;
type RedeliverReply = oneshot::Sender<Result<Option<(u32, Bytes)>, SpoolError>>;
type SyncReply = oneshot::Sender<Result<(), SpoolError>>;

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Op {
    Ingest(Ingest),
    /// Echoes seen: sequence number, attempts.
    Confirm(Vec<(u64, u32)>),
    /// Pending entries pushed again: sequence number, attempts so far.
    Attempts(Vec<(u64, u32)>),
    /// Put a delivered entry back to pending; answers its attempts and event.
    Redeliver(u64, RedeliverReply),
    /// Make everything durable now.
    Sync(SyncReply),
}

/// Committed entries for the pusher, in sequence order.
pub(super) type Fresh = Vec<(u64, Bytes)>;

/// One group, from the writer to the store thread.
#[derive(Debug, Default)]
pub(super) struct Apply {
    work: Work,
    /// Bytes of its new entries not counted yet (those answered from the log are counted by
    /// the writer).
    new_bytes: u64,
    /// Its hooks are in the log and answered; otherwise they are answered (`replies`) after a
    /// durable commit.
    logged: bool,
    replies: Vec<(u64, Reply)>,
    redeliver_replies: Vec<(u64, RedeliverReply)>,
    syncs: Vec<SyncReply>,
    /// Commit durably, at once: someone waits for this commit, or the log moved to its other
    /// file (the one it left is free again once a checkpoint covers it).
    durable: bool,
    permits: Vec<OwnedSemaphorePermit>,
}

/// The writer: groups, the log, answers.
pub(super) struct Writer {
    rx: std::sync::mpsc::Receiver<Op>,
    shared: Arc<Shared>,
    wal: Option<Wal>,
    apply: std::sync::mpsc::SyncSender<Apply>,
    spool_id: u64,
    next_seq: u64,
    max_bytes: u64,
    retention: Duration,
    dedup_ttl: Duration,
    dedup_capacity: u64,
    last_sweep: Instant,
    failing: bool,
}

/// What the writer is made of.
pub(super) struct WriterParts {
    pub rx: std::sync::mpsc::Receiver<Op>,
    pub shared: Arc<Shared>,
    pub wal: Option<Wal>,
    pub apply: std::sync::mpsc::SyncSender<Apply>,
    pub spool_id: u64,
    pub next_seq: u64,
}

impl Writer {
    pub(super) fn new(parts: WriterParts, config: &SpoolConfig) -> Self {
        Self {
            rx: parts.rx,
            shared: parts.shared,
            wal: parts.wal,
            apply: parts.apply,
            spool_id: parts.spool_id,
            next_seq: parts.next_seq,
            max_bytes: config.max_bytes,
            retention: config.retention,
            dedup_ttl: config.dedup_ttl,
            dedup_capacity: config.dedup_capacity as u64,
            last_sweep: Instant::now(),
            failing: false,
        }
    }

    pub(super) fn run(mut self) {
        let mut ops = Vec::with_capacity(MAX_OPS);
        loop {
            match self.rx.recv_timeout(SWEEP_EVERY / 4) {
                Ok(op) => ops.push(op),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // Dropping `apply` tells the store thread to make everything durable and stop.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            while ops.len() < MAX_OPS {
                match self.rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if !ops.is_empty() || self.last_sweep.elapsed() >= SWEEP_EVERY {
                // Drained, so the vector (and its capacity) serves every group.
                self.batch(ops.drain(..));
            }
        }
    }

    /// One group for `ops`.
    fn batch(&mut self, ops: impl Iterator<Item = Op>) {
        let mut apply = Apply {
            work: Work {
                now_ms: now_ms(),
                ..Work::default()
            },
            ..Apply::default()
        };
        let s = &self.shared;
        let held = s.pending_bytes.load(Ordering::Relaxed) + s.staged_bytes.load(Ordering::Relaxed);
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
                    if held + apply.new_bytes + row_size > self.max_bytes {
                        self.shared.refused_full.fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(Err(SpoolError::Full(self.retry_after())));
                        continue;
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    fill(&mut slotted.bytes, slotted.id_at, self.spool_id, seq);
                    apply.new_bytes += row_size;
                    apply.work.rows.push(Row {
                        seq,
                        received_ms,
                        path,
                        client,
                        event: Bytes::from(slotted.bytes),
                        dedup,
                    });
                    apply.replies.push((seq, reply));
                    apply.permits.push(_permit);
                }
                Op::Confirm(mut c) => apply.work.confirms.append(&mut c),
                Op::Attempts(mut a) => apply.work.attempts.append(&mut a),
                Op::Redeliver(seq, reply) => {
                    apply.work.redelivers.push(seq);
                    apply.redeliver_replies.push((seq, reply));
                }
                Op::Sync(reply) => apply.syncs.push(reply),
            }
        }
        apply.work.prune = self.prune_plan(apply.new_bytes);
        apply.durable = !apply.work.redelivers.is_empty() || !apply.syncs.is_empty();
        if !apply.work.rows.is_empty() {
            self.log(&mut apply, first_seq);
        }
        apply.work.next_seq = self.next_seq;
        if apply.work.is_empty() && apply.syncs.is_empty() {
            return;
        }
        let s = &self.shared;
        if apply.logged {
            // Counted now: a hook answered is pending, whether the store has it yet or not.
            let rows = apply.replies.len() as u64;
            s.accepted.fetch_add(rows, Ordering::Relaxed);
            s.pending.fetch_add(rows, Ordering::Relaxed);
            s.pending_bytes
                .fetch_add(apply.new_bytes, Ordering::Relaxed);
            apply.new_bytes = 0;
            s.answered_next.store(self.next_seq, Ordering::Release);
            for (seq, reply) in apply.replies.drain(..) {
                // A handler that gave up (its client left) still has its hook spooled.
                let _ = reply.send(Ok(seq));
            }
        }
        s.staged_bytes.fetch_add(apply.new_bytes, Ordering::AcqRel);
        wait_for_room(&self.shared, APPLY_WAIT);
        s.apply_queued
            .fetch_add(apply.event_bytes(), Ordering::AcqRel);
        if let Err(std::sync::mpsc::SendError(apply)) = self.apply.send(apply) {
            // The store thread is gone (it only stops after this one): nothing more lands.
            self.shared
                .staged_bytes
                .fetch_sub(apply.new_bytes, Ordering::AcqRel);
            self.shared
                .apply_queued
                .fetch_sub(apply.event_bytes(), Ordering::AcqRel);
            apply.refuse(&SpoolError::Stopped);
        }
    }

    /// Appends the group's hooks to the log; marks the group `logged` when they are durable
    /// there, or `durable` when the store must make them so.
    fn log(&mut self, apply: &mut Apply, first_seq: u64) {
        let Some(wal) = self.wal.as_mut() else {
            apply.durable = true;
            return;
        };
        let started = Instant::now();
        let durable_next = self.shared.durable_next.load(Ordering::Acquire);
        match wal.append(&apply.work.rows, durable_next) {
            Ok(Appended::Written) => apply.logged = true,
            Ok(Appended::Switched) => {
                apply.logged = true;
                apply.durable = true;
            }
            Ok(Appended::NoRoom) => {
                self.shared.log_full.fetch_add(1, Ordering::Relaxed);
                apply.durable = true;
                return;
            }
            Err(e) => {
                self.shared.commit_failures.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    tracing::error!(error = %e, hooks = apply.replies.len(), "Spool log write failed; hooks are refused with 503 until it works again");
                    self.failing = true;
                }
                self.next_seq = first_seq;
                for (_, reply) in apply.replies.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
                apply.work.rows.clear();
                apply.permits.clear();
                apply.new_bytes = 0;
                return;
            }
        }
        self.shared.observe_commit(started.elapsed(), true);
        if self.failing {
            tracing::info!("Spool log writes work again");
            self.failing = false;
        }
    }

    /// What to prune in this transaction: delivered entries when the spool is over its bytes,
    /// and everything past its retention every [`SWEEP_EVERY`].
    fn prune_plan(&mut self, new_bytes: u64) -> Option<Prune> {
        let s = &self.shared;
        let total = s.pending_bytes.load(Ordering::Relaxed)
            + s.staged_bytes.load(Ordering::Relaxed)
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

impl Apply {
    /// Its events' bytes: what it counts in `Shared::apply_queued` while it waits (its rows
    /// are not touched between the writer's send and the store thread's take).
    fn event_bytes(&self) -> u64 {
        self.work.rows.iter().map(|r| r.event.len() as u64).sum()
    }

    /// Answers everyone waiting on this group with `e`.
    fn refuse(self, e: &SpoolError) {
        for (_, reply) in self.replies {
            let _ = reply.send(Err(e.clone()));
        }
        for (_, reply) in self.redeliver_replies {
            let _ = reply.send(Err(e.clone()));
        }
        for reply in self.syncs {
            let _ = reply.send(Err(e.clone()));
        }
    }
}

/// The store thread.
pub(super) struct Applier {
    store: Arc<Store>,
    rx: std::sync::mpsc::Receiver<Apply>,
    shared: Arc<Shared>,
    fresh: mpsc::UnboundedSender<Fresh>,
    /// Every sequence number below this is in the store (durably or not).
    applied_next: u64,
    /// Non-durable commits since the last durable one.
    dirty: bool,
    last_durable: Instant,
    /// Groups already answered whose commit failed: committed first, next time.
    retry: Vec<Apply>,
    failing: bool,
}

impl Applier {
    pub(super) fn new(
        store: Arc<Store>,
        rx: std::sync::mpsc::Receiver<Apply>,
        shared: Arc<Shared>,
        fresh: mpsc::UnboundedSender<Fresh>,
        next_seq: u64,
    ) -> Self {
        Self {
            store,
            rx,
            shared,
            fresh,
            applied_next: next_seq,
            dirty: false,
            last_durable: Instant::now(),
            retry: Vec::new(),
            failing: false,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let wait = if self.retry.is_empty() {
                SYNC_EVERY / 4
            } else {
                APPLY_RETRY
            };
            let mut groups = std::mem::take(&mut self.retry);
            match self.rx.recv_timeout(wait) {
                Ok(apply) => self.take(&mut groups, apply),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if self.dirty || !groups.is_empty() {
                        self.commit(groups, true);
                    }
                    return;
                }
            }
            // What queued up meanwhile goes into the same transaction. No wait for more: on
            // two cores a store thread asleep 4 ms for 128 hooks cost 4-6% of the hooks/s and
            // 1 MiB of RSS (2026-12-04), and the hooks are answered already.
            self.drain_queued(&mut groups);
            self.shared.applied_cv.notify_all();
            let due = self.dirty && self.last_durable.elapsed() >= SYNC_EVERY;
            if !groups.is_empty() || due {
                self.commit(groups, due);
            }
        }
    }

    fn drain_queued(&mut self, groups: &mut Vec<Apply>) {
        while groups.len() < APPLY_MERGE {
            match self.rx.try_recv() {
                Ok(apply) => self.take(groups, apply),
                Err(_) => break,
            }
        }
    }

    /// A group taken from the queue: its bytes no longer count against [`APPLY_BYTES`].
    fn take(&self, groups: &mut Vec<Apply>, apply: Apply) {
        self.shared
            .apply_queued
            .fetch_sub(apply.event_bytes(), Ordering::AcqRel);
        groups.push(apply);
    }

    /// One transaction for `groups`.
    fn commit(&mut self, mut groups: Vec<Apply>, force_durable: bool) {
        let mut work = Work::default();
        // Hooks answered here (not from the log), and their bytes: counted after the commit.
        let mut new_rows = 0u64;
        let mut new_bytes = 0u64;
        let mut durable = force_durable;
        for g in &mut groups {
            merge(&mut work, &mut g.work);
            new_rows += g.replies.len() as u64;
            new_bytes += g.new_bytes;
            durable |= g.durable;
        }
        let answers = new_rows > 0;
        let started = Instant::now();
        let result = self.store.commit(&work, durable);
        let took = started.elapsed();
        if answers {
            // Hooks waited for this one.
            self.shared.observe_commit(took, true);
        } else if durable {
            self.shared.observe_checkpoint(took);
        } else {
            self.shared.observe_commit(took, false);
        }
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                self.failed(groups, work, &e);
                return;
            }
        };
        if self.failing {
            tracing::info!("Spool commits work again");
            self.failing = false;
        }
        self.applied_next = self.applied_next.max(work.next_seq);
        if durable {
            self.dirty = false;
            self.last_durable = Instant::now();
            self.shared
                .durable_next
                .store(self.applied_next, Ordering::Release);
        } else {
            self.dirty = true;
        }
        self.account(&applied, new_rows, new_bytes);
        self.shared
            .staged_bytes
            .fetch_sub(new_bytes, Ordering::AcqRel);
        self.hand_over(&work);
        self.shared.applied(self.applied_next);
        for g in groups {
            for (seq, reply) in g.replies {
                let _ = reply.send(Ok(seq));
            }
            for (seq, reply) in g.redeliver_replies {
                let found = applied
                    .redelivered
                    .iter()
                    .find(|r| r.0 == seq)
                    .map(|r| (r.1, r.2.clone()));
                let _ = reply.send(Ok(found));
            }
            for reply in g.syncs {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// A failed transaction: the groups whose hooks were answered from the log are kept and
    /// committed again, with every confirmation (they are on disk, and the pusher must get
    /// them); everyone else waiting on it is refused.
    fn failed(&mut self, groups: Vec<Apply>, mut work: Work, e: &SpoolError) {
        self.shared.commit_failures.fetch_add(1, Ordering::Relaxed);
        if !self.failing {
            tracing::error!(error = %e, "Spool commit failed; trying again, and hooks not in the log are refused with 503");
            self.failing = true;
        }
        let mut refused = std::collections::HashSet::new();
        let mut keep = Apply {
            logged: true,
            ..Apply::default()
        };
        for mut g in groups {
            if g.logged {
                keep.permits.append(&mut g.permits);
            } else {
                refused.extend(g.replies.iter().map(|r| r.0));
                self.shared
                    .staged_bytes
                    .fetch_sub(g.new_bytes, Ordering::AcqRel);
            }
            g.refuse(e);
        }
        work.rows.retain(|r| !refused.contains(&r.seq));
        work.redelivers.clear();
        if !work.rows.is_empty() || !work.confirms.is_empty() || !work.attempts.is_empty() {
            keep.work = work;
            self.retry.push(keep);
        }
    }

    /// Counts what a commit changed; `rows` new entries of `new_bytes` were answered by it.
    fn account(&self, applied: &Applied, rows: u64, new_bytes: u64) {
        let s = &self.shared;
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
    /// (then it reads them back from the store, told so by `fresh_dropped`). Only after they
    /// are in the store: what the pusher reads back there is everything not handed over.
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
}

/// Moves `from` into `into` (groups in arrival order: rows stay in sequence order).
fn merge(into: &mut Work, from: &mut Work) {
    // The first group's vectors are taken as they are, not copied into new ones.
    fn take<T>(into: &mut Vec<T>, from: &mut Vec<T>) {
        if into.is_empty() {
            std::mem::swap(into, from);
        } else {
            into.append(from);
        }
    }
    take(&mut into.rows, &mut from.rows);
    take(&mut into.confirms, &mut from.confirms);
    take(&mut into.attempts, &mut from.attempts);
    take(&mut into.redelivers, &mut from.redelivers);
    into.next_seq = into.next_seq.max(from.next_seq);
    into.now_ms = into.now_ms.max(from.now_ms);
    into.prune = match (into.prune, from.prune) {
        (None, p) | (p, None) => p,
        (Some(a), Some(b)) => Some(Prune {
            delivered_before_ms: a.delivered_before_ms.max(b.delivered_before_ms),
            free_bytes: a.free_bytes.max(b.free_bytes),
            dedup_before_ms: a.dedup_before_ms.max(b.dedup_before_ms),
            dedup_over: a.dedup_over.max(b.dedup_over),
            max_rows: a.max_rows.max(b.max_rows),
        }),
    };
}

fn sub(a: &std::sync::atomic::AtomicU64, n: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Waits (at most `limit`, [`APPLY_WAIT`] for the writer) while more than [`APPLY_BYTES`]
/// wait for the store thread.
fn wait_for_room(s: &Shared, limit: Duration) {
    if s.apply_queued.load(Ordering::Acquire) <= APPLY_BYTES {
        return;
    }
    let deadline = Instant::now() + limit;
    let mut guard = s.applied.lock().unwrap_or_else(|p| p.into_inner());
    while s.apply_queued.load(Ordering::Acquire) > APPLY_BYTES {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Short steps: the store thread notifies without the lock, so a wake-up can fall
        // between the check and the wait.
        let step = (deadline - now).min(Duration::from_millis(2));
        guard = match s.applied_cv.wait_timeout(guard, step) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_waits_for_room_until_the_store_thread_takes_groups_or_its_limit() {
        let shared = Arc::new(Shared::default());
        // Room: no wait at all.
        let t = Instant::now();
        wait_for_room(&shared, Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_millis(100));
        // Over the bound: waits until the store thread takes some and notifies.
        shared
            .apply_queued
            .store(APPLY_BYTES + 1, Ordering::Release);
        let store = Arc::clone(&shared);
        let taker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            store.apply_queued.store(APPLY_BYTES, Ordering::Release);
            store.applied_cv.notify_all();
        });
        let t = Instant::now();
        wait_for_room(&shared, Duration::from_secs(5));
        let waited = t.elapsed();
        taker.join().unwrap();
        assert!(waited >= Duration::from_millis(140), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // A store thread that never takes anything: the wait ends at its limit.
        shared
            .apply_queued
            .store(APPLY_BYTES * 4, Ordering::Release);
        let t = Instant::now();
        wait_for_room(&shared, Duration::from_millis(200));
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(190), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }
}
