//! The shared store: several saltgates, one truth, on Redis (or Valkey).
//!
//! Behind a load balancer, or one saltgate per master of a multi-master setup, each instance
//! alone would fire a sender's retry that lands on the other instance a second time, and count
//! rate limits and login throttles per instance. With `saltgate.shared` set, the delivery-id
//! guard, the hook rate limits and the login/token failure budgets are kept in Redis:
//!
//! - **Dedup** ([`SharedStore::dedup_begin`]): one atomic `SET <key> inprogress:<token> NX PX
//!   <IN_PROGRESS>`; the instance that set it fires the delivery, every other one sees the key and
//!   answers as the local guard does (`duplicate` once it is `done`, 409 while in progress).
//!   Accepted: `SET <key> done PX <window>`, queued rather than awaited. One task sends what
//!   every connection queued meanwhile (commits and reservations, [`BATCH`] at most) as one
//!   pipeline: a hook waits for one round trip, shared with the hooks that arrived with it, and
//!   its answer does not wait for its commit. A retry that reaches another instance before
//!   that commit lands (the next round trip, under a millisecond on a loopback Redis) is
//!   answered 409 `in_progress`, which senders retry. A delivery that failed to fire deletes its
//!   own in-progress key (compare-and-delete, a script), so the sender's retry can proceed.
//! - **Rate limits and throttles** ([`SharedStore::gcra`]): a GCRA bucket per rule and client
//!   key in one Lua script (`gcra.lua`, `EVALSHA`, loaded again on `NOSCRIPT`), on the Redis
//!   server's clock, so every instance draws from one bucket.
//!
//! The spool stays local: each instance owns what it accepted. Each instance also keeps its own
//! guard up to date, so when Redis cannot answer within `timeout_ms` (or is marked down after a
//! failure: then no request waits for it until a probe's `PING` succeeds again), `fail: local`
//! decides with the local stores (`saltgate_shared_fallback_total`, a log line at most every
//! [`LOG_EVERY`]) and `fail: closed` answers 503 with `Retry-After`, so the sender retries.
//! Either way nothing answered 2xx is lost: the spool (or the bus) took it before the answer.
//! The connection is redis-rs's `ConnectionManager`, which reconnects with exponential
//! backoff; saltgate's probe drives it while the store is down.
//!
//! Keys: `<key_prefix>dedup:<32 hex digits>` (the 128-bit hash the local guard stores, never
//! the sender's id), `<key_prefix>rate:<16 hex digits of the rule path's hash>:<client key>`,
//! `<key_prefix>auth:<client key>`; every key has an expiry.

pub mod stores;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use redis::aio::ConnectionManager;
use redis::{AsyncConnectionConfig, Client, Script};

use crate::config::shared::{FailMode, SharedConfig};

/// How long an in-progress dedup key lives: a delivery holding it longer (an instance that
/// died mid-delivery) no longer blocks the sender's retry after this.
pub const IN_PROGRESS: Duration = Duration::from_secs(30);

/// Dedup operations sent in one pipeline at most.
pub const BATCH: usize = 512;

/// Dedup operations queued for the pipeline task at most; past it an operation is sent on
/// its own and awaited (back pressure, nothing dropped).
pub const QUEUE: usize = 8192;

/// A fallback is logged at most this often (every one is counted).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// While down, a `PING` is sent this often to find the store back.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

/// Deletes a key only while it still holds the caller's value.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    )
});

/// The shared store did not answer (in time, or at all, or it is marked down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared store is unavailable")]
pub struct Down;

/// What the store says about a dedup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupState {
    /// This caller set it: `token` releases it.
    Reserved(String),
    /// Another delivery with this key was accepted within the window.
    Done,
    /// Another delivery with this key is being processed.
    InProgress,
}

/// What [`SharedStore::gcra`] does with a bucket (see `gcra.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcraMode {
    /// Take one cell when there is one.
    Take,
    /// Answer as `Take` would, store nothing.
    Peek,
    /// Take one cell even from an empty bucket.
    Force,
    /// Whether the bucket is full (`Ok(None)`) or being refilled (`Ok(Some(_))`).
    Full,
}

impl GcraMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Take => "take",
            Self::Peek => "peek",
            Self::Force => "force",
            Self::Full => "full",
        }
    }
}

/// The operations counted by [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Reserve a dedup key.
    DedupBegin,
    /// Mark a dedup key done.
    DedupCommit,
    /// Release an in-progress dedup key.
    DedupRelease,
    /// A hook rate-limit bucket.
    Rate,
    /// A login/token failure budget.
    Throttle,
    /// A `PING` (probe, `check-config --connect`).
    Ping,
}

const OPS: [Op; 6] = [
    Op::DedupBegin,
    Op::DedupCommit,
    Op::DedupRelease,
    Op::Rate,
    Op::Throttle,
    Op::Ping,
];

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::DedupBegin => "dedup_begin",
            Self::DedupCommit => "dedup_commit",
            Self::DedupRelease => "dedup_release",
            Self::Rate => "rate",
            Self::Throttle => "throttle",
            Self::Ping => "ping",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the operation-latency histogram, in seconds.
const BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

/// The shared store's series in `/metrics` (`saltgate_shared_*`): prometheus-client handles the
/// store counts on, registered into the process's registry by [`Stats::register`].
#[derive(Debug)]
pub struct Stats {
    up: Gauge,
    ops: Family<[(&'static str, &'static str); 2], Counter>,
    /// Per op: answered, then failed (handles of `ops`, so counting never looks one up).
    by_op: [[Counter; 2]; OPS.len()],
    fallback: Family<[(&'static str, &'static str); 1], Counter>,
    fallback_by_op: [Counter; OPS.len()],
    refused: Counter,
    latency: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        let ops = Family::<[(&'static str, &'static str); 2], Counter>::default();
        let by_op = OPS.map(|op| {
            ["ok", "error"].map(|result| {
                ops.get_or_create(&[("op", op.as_str()), ("result", result)])
                    .clone()
            })
        });
        let fallback = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let fallback_by_op = OPS.map(|op| fallback.get_or_create(&[("op", op.as_str())]).clone());
        let up = Gauge::default();
        up.set(1);
        Self {
            up,
            ops,
            by_op,
            fallback,
            fallback_by_op,
            refused: Counter::default(),
            latency: Histogram::new(BUCKETS),
        }
    }
}

impl Stats {
    /// Adds the shared store's families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "saltgate_shared_up",
            "1 while the shared store (Redis) answers, else 0 (requests then follow saltgate.shared.fail).",
            self.up.clone(),
        );
        registry.register(
            "saltgate_shared_ops",
            "Operations on the shared store, by operation and result.",
            self.ops.clone(),
        );
        registry.register(
            "saltgate_shared_fallback",
            "Decisions made by this instance's own stores because the shared store could not answer (fail: local).",
            self.fallback.clone(),
        );
        registry.register(
            "saltgate_shared_refused",
            "Requests answered 503 because the shared store could not answer (fail: closed).",
            self.refused.clone(),
        );
        registry.register_with_unit(
            "saltgate_shared_op_duration",
            "Time of answered shared-store operations.",
            Unit::Seconds,
            self.latency.clone(),
        );
    }

    fn counted(&self, op: Op, ok: bool) {
        self.by_op[op.index()][usize::from(!ok)].inc();
    }

    /// Operations `op` that the store answered.
    pub fn answered(&self, op: Op) -> u64 {
        self.by_op[op.index()][0].get()
    }

    /// Fallbacks to the local stores counted for `op`.
    pub fn fallbacks(&self, op: Op) -> u64 {
        self.fallback_by_op[op.index()].get()
    }

    /// Requests answered 503 under `fail: closed`.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

struct Inner {
    conn: ConnectionManager,
    display_url: String,
    prefix: String,
    timeout: Duration,
    fail: FailMode,
    up: AtomicBool,
    probing: AtomicBool,
    started: Instant,
    /// When a fallback was last logged, in milliseconds since `started` (+1; 0: never).
    logged_ms: AtomicU64,
    stats: Stats,
    /// Dedup operations for the pipeline task.
    queue: tokio::sync::mpsc::Sender<Queued>,
}

/// A dedup operation waiting for the pipeline task.
enum Queued {
    /// `SET <key> done PX <ms>`; nobody waits for it.
    Commit { key: String, ms: u64 },
    /// A reservation; its caller waits for `reply`.
    Begin {
        key: String,
        token: String,
        reply: tokio::sync::oneshot::Sender<Result<DedupState, Down>>,
    },
    /// Answered once everything queued before it was sent ([`SharedStore::flush`]).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A connection to the shared store and its state (up or down). Cheap to clone.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("url", &self.inner.display_url)
            .field("up", &self.is_up())
            .finish()
    }
}

/// Sends the queued dedup operations, as many as are queued (up to [`BATCH`]) in one
/// pipeline, until the store is dropped: the commits, then the reservations, whose callers get
/// their answers. A pipeline that fails counts each of its operations failed, marks the store
/// down as a single operation would, and answers its reservations [`Down`]; its commits' keys
/// stay in progress until they expire ([`IN_PROGRESS`]), and this instance's own guard still
/// answers their retries.
async fn pipeline(store: std::sync::Weak<Inner>, mut queue: tokio::sync::mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = SharedStore { inner };
        let mut commits = Vec::new();
        let mut keys = Vec::new();
        let mut replies = Vec::new();
        let mut flushed = Vec::new();
        for item in batch.drain(..) {
            match item {
                Queued::Commit { key, ms } => commits.push((key, ms)),
                Queued::Begin { key, token, reply } => {
                    keys.push((key, token));
                    replies.push(reply);
                }
                Queued::Flush(done) => flushed.push(done),
            }
        }
        if !commits.is_empty() || !keys.is_empty() {
            send_batch(&store, commits, keys, replies).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// One pipeline: `commits`, then the reservations `keys`, whose callers get their answers on
/// `replies` (in order). A reservation whose caller has gone (its client left, or it stopped
/// waiting) is released at once, so it does not hold the id for [`IN_PROGRESS`].
async fn send_batch(
    store: &SharedStore,
    commits: Vec<(String, u64)>,
    keys: Vec<(String, String)>,
    replies: Vec<tokio::sync::oneshot::Sender<Result<DedupState, Down>>>,
) {
    let (c, b) = (commits.len(), keys.len());
    let op = if b > 0 {
        Op::DedupBegin
    } else {
        Op::DedupCommit
    };
    let sent = store.is_up();
    let tokens: Vec<(String, String)> = keys.clone();
    let states = store
        .run(op, |mut conn| async move {
            if keys.is_empty() {
                let mut pipe = redis::pipe();
                add_commits(&mut pipe, commits);
                pipe.query_async::<()>(&mut conn).await?;
                return Ok(Vec::new());
            }
            reserve(&mut conn, commits, keys).await
        })
        .await;
    // `run` counted the pipeline once, as `op`, if it was sent; count every operation in it.
    if sent {
        let stats = &store.inner.stats;
        let ok = states.is_ok();
        let (more_commits, more_begins) = if b > 0 {
            (c, b - 1)
        } else {
            (c.saturating_sub(1), 0)
        };
        for _ in 0..more_commits {
            stats.counted(Op::DedupCommit, ok);
        }
        for _ in 0..more_begins {
            stats.counted(Op::DedupBegin, ok);
        }
    }
    match states {
        Ok(states) if states.len() == b => {
            let mut orphans = Vec::new();
            for ((reply, state), (key, _)) in replies.into_iter().zip(states).zip(tokens) {
                if let Err(Ok(DedupState::Reserved(token))) = reply.send(Ok(state)) {
                    orphans.push((key, token));
                }
            }
            for (key, token) in orphans {
                let _ = store.release_key(key, token).await;
            }
        }
        _ => {
            for reply in replies {
                let _ = reply.send(Err(Down));
            }
        }
    }
}

fn add_commits(pipe: &mut redis::Pipeline, commits: Vec<(String, u64)>) {
    for (key, ms) in commits {
        pipe.cmd("SET")
            .arg(key)
            .arg("done")
            .arg("PX")
            .arg(ms)
            .ignore();
    }
}

/// `commits`, then `SET <key> <token> NX PX <IN_PROGRESS>` for each of `keys`, in one
/// pipeline; then one `GET` pipeline for the keys already held: what each is.
async fn reserve(
    c: &mut ConnectionManager,
    commits: Vec<(String, u64)>,
    keys: Vec<(String, String)>,
) -> redis::RedisResult<Vec<DedupState>> {
    let ms = IN_PROGRESS.as_millis() as u64;
    let mut pipe = redis::pipe();
    add_commits(&mut pipe, commits);
    for (key, token) in &keys {
        pipe.cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ms);
    }
    let set: Vec<Option<String>> = pipe.query_async(c).await?;
    let held: Vec<&str> = keys
        .iter()
        .zip(&set)
        .filter(|(_, s)| s.is_none())
        .map(|((key, _), _)| key.as_str())
        .collect();
    let mut values: Vec<Option<String>> = Vec::new();
    if !held.is_empty() {
        let mut get = redis::pipe();
        for key in &held {
            get.cmd("GET").arg(*key);
        }
        // The reservations made stand whatever becomes of this: a held key whose state cannot
        // be read is answered in progress (the sender retries).
        values = get.query_async(c).await.unwrap_or_default();
    }
    let mut values = values.into_iter();
    Ok(keys
        .into_iter()
        .zip(set)
        .map(|((_, token), set)| match set {
            Some(_) => DedupState::Reserved(token),
            None => match values.next().flatten().as_deref() {
                Some("done") => DedupState::Done,
                // In progress, or gone between the two commands: the sender retries.
                _ => DedupState::InProgress,
            },
        })
        .collect())
}

/// The client redis-rs builds from the configured URL.
fn client(config: &SharedConfig) -> Result<Client, redis::RedisError> {
    match &config.tls_ca {
        None => Client::open(config.url()),
        Some(ca) => Client::build_with_tls(
            config.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
    }
}

impl SharedStore {
    /// A store for `config`; connects lazily (a Redis that is down at start is found later).
    /// Must run inside a tokio runtime.
    pub fn new(config: &SharedConfig) -> Result<Self, redis::RedisError> {
        let timeout = config.timeout;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client(config)?, manager)?;
        let (queue, queued) = tokio::sync::mpsc::channel(QUEUE);
        let store = Self {
            inner: Arc::new(Inner {
                conn,
                display_url: config.display_url().to_owned(),
                prefix: config.key_prefix.clone(),
                timeout,
                fail: config.fail,
                up: AtomicBool::new(true),
                probing: AtomicBool::new(false),
                started: Instant::now(),
                logged_ms: AtomicU64::new(0),
                stats: Stats::default(),
                queue,
            }),
        };
        tokio::spawn(pipeline(Arc::downgrade(&store.inner), queued));
        Ok(store)
    }

    /// Whether the last operation (or probe) succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// `fail: local` or `fail: closed`.
    pub fn fail_mode(&self) -> FailMode {
        self.inner.fail
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Runs `f` on the connection within the timeout, counting it; marks the store down on
    /// failure (and starts the probe). Down: fails at once.
    async fn run<T, F, Fut>(&self, op: Op, f: F) -> Result<T, Down>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() && op != Op::Ping {
            return Err(Down);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.inner.timeout, f(self.inner.conn.clone())).await;
        let stats = &self.inner.stats;
        match result {
            Ok(Ok(v)) => {
                stats.latency.observe(started.elapsed().as_secs_f64());
                stats.counted(op, true);
                Ok(v)
            }
            Ok(Err(e)) => {
                stats.counted(op, false);
                self.went_down(op, &e.to_string());
                Err(Down)
            }
            Err(_) => {
                stats.counted(op, false);
                self.went_down(op, "no answer within timeout_ms");
                Err(Down)
            }
        }
    }

    fn went_down(&self, op: Op, why: &str) {
        if op == Op::Ping {
            return;
        }
        if self.inner.up.swap(false, Ordering::Relaxed) {
            self.inner.stats.up.set(0);
            tracing::warn!(
                shared = %self.inner.display_url,
                op = op.as_str(),
                error = why,
                fail = self.inner.fail.as_str(),
                "The shared store stopped answering"
            );
        }
        self.start_probe();
    }

    /// While down: a `PING` every [`PROBE_EVERY`] until one is answered (redis-rs's manager
    /// reconnects underneath, with its backoff), then the store is up again.
    fn start_probe(&self) {
        if self.inner.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.probing.store(false, Ordering::Relaxed);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let store = SharedStore { inner };
                if store.ping().await.is_ok() {
                    store.inner.up.store(true, Ordering::Relaxed);
                    store.inner.stats.up.set(1);
                    store.inner.probing.store(false, Ordering::Relaxed);
                    tracing::info!(shared = %store.inner.display_url, "The shared store answers again");
                    return;
                }
            }
        });
    }

    /// `PING`, within the timeout (whether the store is marked down or not).
    pub async fn ping(&self) -> Result<(), Down> {
        self.run(Op::Ping, |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .map(|_| ())
    }

    /// The store could not answer `op`: `Ok` (decide locally, counted and logged at most every
    /// [`LOG_EVERY`]) under `fail: local`, `Err` (answer 503) under `fail: closed`.
    pub fn fall_back(&self, op: Op) -> Result<(), Down> {
        let stats = &self.inner.stats;
        if self.inner.fail == FailMode::Closed {
            stats.refused.inc();
            self.log_fallback(op, "answered 503 (fail: closed)");
            return Err(Down);
        }
        stats.fallback_by_op[op.index()].inc();
        self.log_fallback(op, "decided by this instance alone (fail: local)");
        Ok(())
    }

    fn log_fallback(&self, op: Op, what: &str) {
        let now = u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.inner.logged_ms.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .inner
                .logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                shared = %self.inner.display_url,
                op = op.as_str(),
                "The shared store is unavailable: requests are {what} (logged once per {}s)",
                LOG_EVERY.as_secs()
            );
        }
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.inner.prefix)
    }

    fn dedup_key(&self, hash: u128) -> String {
        self.key("dedup", &format!("{hash:032x}"))
    }

    /// Reserves the dedup key `hash` (the local guard's [`crate::security::Reservation::key_hash`]).
    /// Queued for the pipeline task (see the module's notes); sent on its own when the queue is
    /// full.
    pub async fn dedup_begin(&self, hash: u128) -> Result<DedupState, Down> {
        if !self.is_up() {
            return Err(Down);
        }
        let key = self.dedup_key(hash);
        let token = format!("inprogress:{:016x}", rand::random::<u64>());
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self
            .inner
            .queue
            .try_send(Queued::Begin { key, token, reply })
        {
            // Its pipeline waits for at most the one in flight and its own, each bounded by
            // `timeout_ms`; past twice that (a queue deep behind a slow Redis), or with the
            // task gone (the store is being dropped), it is as if Redis did not answer, and
            // a reservation made after all is released by the task.
            Ok(()) => tokio::time::timeout(self.inner.timeout * 2, answer)
                .await
                .map_or(Err(Down), |a| a.unwrap_or(Err(Down))),
            Err(tokio::sync::mpsc::error::TrySendError::Full(item))
            | Err(tokio::sync::mpsc::error::TrySendError::Closed(item)) => {
                let Queued::Begin { key, token, .. } = item else {
                    return Err(Down);
                };
                self.run(Op::DedupBegin, |mut c| async move {
                    let mut states = reserve(&mut c, Vec::new(), vec![(key, token)]).await?;
                    Ok(states.pop().unwrap_or(DedupState::InProgress))
                })
                .await
            }
        }
    }

    /// Marks `hash` accepted: a duplicate everywhere for `window`. Queued for the pipeline
    /// task (see the module's notes); sent on its own and awaited only when the queue is full.
    pub async fn dedup_commit(&self, hash: u128, window: Duration) -> Result<(), Down> {
        let key = self.dedup_key(hash);
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        if !self.is_up() {
            return Err(Down);
        }
        let (key, ms) = match self.inner.queue.try_send(Queued::Commit { key, ms }) {
            Ok(()) => return Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(item))
            | Err(tokio::sync::mpsc::error::TrySendError::Closed(item)) => match item {
                Queued::Commit { key, ms } => (key, ms),
                Queued::Begin { .. } | Queued::Flush(_) => return Err(Down),
            },
        };
        self.run(Op::DedupCommit, |mut c| async move {
            let mut pipe = redis::pipe();
            add_commits(&mut pipe, vec![(key, ms)]);
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Deletes `hash`'s in-progress key if it still holds `token` (a failed delivery).
    pub async fn dedup_release(&self, hash: u128, token: &str) -> Result<(), Down> {
        self.release_key(self.dedup_key(hash), token.to_owned())
            .await
    }

    /// Everything queued for the pipeline task so far is sent (or found unsendable) when this
    /// returns, within `within`: at shutdown, so that no accepted delivery is left "in
    /// progress" instead of "done".
    pub async fn flush(&self, within: Duration) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        let queue = &self.inner.queue;
        let _ = tokio::time::timeout(within, async move {
            if queue.send(Queued::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        })
        .await;
    }

    async fn release_key(&self, key: String, token: String) -> Result<(), Down> {
        self.run(Op::DedupRelease, |mut c| async move {
            RELEASE
                .key(&key)
                .arg(&token)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// One GCRA step on bucket `<prefix><kind>:<name>`: `Ok(None)` allowed (or, for
    /// [`GcraMode::Full`], full), `Ok(Some(wait))` refused until `wait` has passed.
    pub async fn gcra(
        &self,
        op: Op,
        kind: &str,
        name: &str,
        interval: Duration,
        burst: u32,
        mode: GcraMode,
    ) -> Result<Option<Duration>, Down> {
        let key = self.key(kind, name);
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.run(op, |mut c| async move {
            GCRA.key(&key)
                .arg(interval_us)
                .arg(burst.max(1))
                .arg(mode.as_str())
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|wait| match (mode, wait) {
            (_, w) if w <= 0 => None,
            (GcraMode::Full, _) => Some(Duration::ZERO),
            (_, w) => Some(Duration::from_micros(w.unsigned_abs())),
        })
    }
}

/// `check-config --connect`: connects to the configured store, authenticates, selects the
/// database and sends `PING`, within `deadline`. The error says which step failed, without
/// the password.
pub async fn check_connect(config: &SharedConfig, deadline: Duration) -> Result<String, String> {
    let url = config.display_url();
    let client = client(config).map_err(|e| format!("{url}: {e}"))?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(deadline))
        .set_response_timeout(Some(deadline));
    let attempt = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&settings)
            .await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        Ok::<_, redis::RedisError>((pong, version))
    };
    match tokio::time::timeout(deadline, attempt).await {
        Err(_) => Err(format!(
            "{url}: no answer within {} ms",
            deadline.as_millis()
        )),
        Ok(Err(e)) => Err(format!("{url}: {}", explain(&e))),
        Ok(Ok((pong, version))) => Ok(format!("{url}: {pong} (Redis {version})")),
    }
}

/// A connection error in an operator's words.
fn explain(e: &redis::RedisError) -> String {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("wrongpass") || lower.contains("noauth") || lower.contains("auth") {
        format!("authentication refused (check username/password): {text}")
    } else if lower.contains("db index") || lower.contains("select") {
        format!("the database index is refused (check db): {text}")
    } else if e.is_connection_refusal() {
        format!("connection refused (is Redis listening there?): {text}")
    } else {
        text
    }
}
