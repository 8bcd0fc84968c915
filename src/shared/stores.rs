//! The stores the hook pipeline and the credential checks consult: the local ones alone, or
//! the local ones with the shared store in front ([`super::SharedStore`]). One shape for both,
//! so the pipeline does not care which it has.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{DedupState, Down, GcraMode, Op, SharedStore};
use crate::security::rate::{ClientKey, ClientKeys, RateLimiter, RateQuota, RetryAfter};
use crate::security::replay::{Duplicate, ReplayGuard, Reservation};
use crate::security::throttle::{AuthThrottle, ThrottleSettings};

/// Why a delivery key was not reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A duplicate, as the local guard says it ([`Duplicate`]).
    Duplicate(Duplicate),
    /// The shared store cannot answer and `fail: closed`: 503.
    Unavailable,
}

/// The delivery-id guard: this instance's [`ReplayGuard`], and the shared store when set.
#[derive(Debug)]
pub struct Dedup {
    local: ReplayGuard,
    shared: Option<SharedStore>,
}

impl Dedup {
    /// The local guard, with `shared` in front of it when set.
    pub fn new(local: ReplayGuard, shared: Option<SharedStore>) -> Self {
        Self { local, shared }
    }

    /// This instance's guard (restored from the spool at start, the fallback).
    pub fn local(&self) -> &ReplayGuard {
        &self.local
    }

    /// Reserves `key`: in this instance's guard first (its own duplicates cost no round trip),
    /// then in the shared store, which decides between instances.
    pub async fn begin(&self, key: &str, now: SystemTime) -> Result<Held, Refused> {
        let local = self.local.begin(key, now).map_err(Refused::Duplicate)?;
        let Some(store) = &self.shared else {
            return Ok(Held {
                hash: local.key_hash(),
                local: Some(local),
                shared: None,
                window: self.local.ttl(),
            });
        };
        let hash = local.key_hash();
        match store.dedup_begin(hash).await {
            Ok(DedupState::Reserved(token)) => Ok(Held {
                hash,
                local: Some(local),
                shared: Some((store.clone(), token)),
                window: self.local.ttl(),
            }),
            // Dropping `local` releases this instance's reservation: the other instance owns it.
            Ok(DedupState::Done) => Err(Refused::Duplicate(Duplicate::Committed)),
            Ok(DedupState::InProgress) => Err(Refused::Duplicate(Duplicate::InProgress)),
            Err(Down) => match store.fall_back(Op::DedupBegin) {
                Ok(()) => Ok(Held {
                    hash,
                    local: Some(local),
                    shared: None,
                    window: self.local.ttl(),
                }),
                Err(Down) => Err(Refused::Unavailable),
            },
        }
    }
}

/// A reserved delivery key. [`Held::commit`] once the hook was accepted; dropped uncommitted,
/// it releases the key here and in the shared store (in the background), so the sender's retry
/// proceeds.
#[derive(Debug)]
#[must_use = "dropping a reservation releases the key; commit it after accepting"]
pub struct Held {
    hash: u128,
    local: Option<Reservation>,
    shared: Option<(SharedStore, String)>,
    window: Duration,
}

impl Held {
    /// The 128-bit key hash (what the spool keeps across restarts).
    pub fn key_hash(&self) -> u128 {
        self.hash
    }

    /// Marks the key accepted at `now`, here and in the shared store. A shared store that
    /// fails now leaves its in-progress key to expire ([`super::IN_PROGRESS`]); this instance
    /// still answers the delivery's retries as duplicates.
    pub async fn commit(mut self, now: SystemTime) {
        if let Some(local) = self.local.take() {
            local.commit(now);
        }
        if let Some((store, _)) = self.shared.take() {
            let _ = store.dedup_commit(self.hash, self.window).await;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((store, token)) = self.shared.take() {
            let hash = self.hash;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = store.dedup_release(hash, &token).await;
                });
            }
        }
    }
}

/// The hook rate limits: one table per rule here, and the shared buckets when set.
#[derive(Debug)]
pub struct Rates {
    local: RateLimiter,
    keys: ClientKeys,
    /// Per limiter slot: the shared bucket's name prefix (the rule path's hash) and quota.
    rules: Vec<(String, RateQuota)>,
    shared: Option<SharedStore>,
}

/// Why a request was not admitted by [`Rates::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRefused {
    /// Over the quota: 429 with `Retry-After`.
    Limited(RetryAfter),
    /// The shared store cannot answer and `fail: closed`: 503.
    Unavailable,
}

impl Rates {
    /// Limits for `quotas` (slot `i`: `quotas[i]`, of the rule at `paths[i]`).
    pub fn new(
        quotas: &[RateQuota],
        paths: &[&str],
        keys: ClientKeys,
        shared: Option<SharedStore>,
    ) -> Self {
        let rules = quotas
            .iter()
            .zip(paths)
            .map(|(q, path)| (bucket_name(path, *q), *q))
            .collect();
        Self {
            local: RateLimiter::new(quotas, keys),
            keys,
            rules,
            shared,
        }
    }

    /// The limits of a reloaded rule set: slot `i` has `quotas[i].0`, of the rule at `paths[i]`,
    /// and keeps this instance's buckets of slot `quotas[i].1` when its quota is unchanged
    /// ([`RateLimiter::reloaded`]). The shared buckets are named by path and quota, so a rule
    /// that stays keeps them without any copying.
    pub fn reloaded(&self, quotas: &[(RateQuota, Option<usize>)], paths: &[&str]) -> Self {
        let rules = quotas
            .iter()
            .zip(paths)
            .map(|((q, _), path)| (bucket_name(path, *q), *q))
            .collect();
        Self {
            local: self.local.reloaded(quotas),
            keys: self.keys,
            rules,
            shared: self.shared.clone(),
        }
    }

    /// Whether slot `slot` uses the same local bucket table as `other`'s slot `other_slot`.
    pub fn shares_table(&self, slot: usize, other: &Self, other_slot: usize) -> bool {
        self.local.shares_table(slot, &other.local, other_slot)
    }

    /// Counts one request from `ip` against slot `slot`.
    pub async fn check(&self, slot: usize, ip: IpAddr) -> Result<(), RateRefused> {
        if let (Some(store), Some((rule, quota))) = (&self.shared, self.rules.get(slot)) {
            let name = format!("{rule}:{}", client_name(self.keys.key(ip)));
            let interval = Duration::from_secs(1) / quota.per_second.get();
            match store
                .gcra(
                    Op::Rate,
                    "rate",
                    &name,
                    interval,
                    quota.burst.get(),
                    GcraMode::Take,
                )
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(RateRefused::Limited(RetryAfter(wait))),
                Err(Down) => {
                    store
                        .fall_back(Op::Rate)
                        .map_err(|Down| RateRefused::Unavailable)?;
                }
            }
        }
        self.local.check(slot, ip).map_err(RateRefused::Limited)
    }

    /// Frees local memory for quiet clients (the shared buckets expire by themselves).
    pub fn housekeep(&self) {
        self.local.housekeep();
    }
}

/// 16 hex digits of the SHA-256 of a rule's path and quota: a bounded key part, the same on
/// every instance with that rule, and a new bucket when the quota changes.
fn bucket_name(path: &str, quota: RateQuota) -> String {
    let text = format!("{path}\0{}/{}", quota.per_second, quota.burst);
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// A client key as a Redis key part: `v4:<address>` or `v6:<network, 32 hex digits>`.
pub fn client_name(key: ClientKey) -> String {
    match key {
        ClientKey::V4(a) => format!("v4:{}", std::net::Ipv4Addr::from(a)),
        ClientKey::V6(n) => format!("v6:{n:032x}"),
    }
}

/// Why [`Throttle::check`] refused a credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleRefused {
    /// Too many recent failures: 429 with `Retry-After`.
    Limited(RetryAfter),
    /// The shared store cannot answer and `fail: closed`: 503.
    Unavailable,
}

/// The login/token failure budgets: this instance's [`AuthThrottle`] (also the cache of tokens
/// the master did not know, which stays local), and the shared budgets when set. Failures are
/// charged to both, so a fallback to the local budget still knows this instance's failures.
#[derive(Debug)]
pub struct Throttle {
    local: AuthThrottle,
    shared: Option<SharedStore>,
    interval: Duration,
    burst: u32,
}

impl Throttle {
    /// Budgets of `settings`, shared on `shared` when set.
    pub fn new(settings: ThrottleSettings, shared: Option<SharedStore>) -> Self {
        Self {
            local: AuthThrottle::new(settings),
            shared,
            interval: Duration::from_secs(60) / settings.failures_per_minute.get(),
            burst: settings.failure_burst.get(),
        }
    }

    /// This instance's throttle (its negative-token cache, its key function).
    pub fn local(&self) -> &AuthThrottle {
        &self.local
    }

    async fn shared_step(
        &self,
        store: &SharedStore,
        client: IpAddr,
        mode: GcraMode,
    ) -> Result<Option<Duration>, Down> {
        let name = client_name(self.local.key(client));
        store
            .gcra(Op::Throttle, "auth", &name, self.interval, self.burst, mode)
            .await
    }

    /// Whether `client` may make one more credential check now.
    pub async fn check(&self, client: IpAddr) -> Result<(), ThrottleRefused> {
        if let Some(store) = &self.shared {
            match self.shared_step(store, client, GcraMode::Peek).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(ThrottleRefused::Limited(RetryAfter(wait))),
                Err(Down) => store
                    .fall_back(Op::Throttle)
                    .map_err(|Down| ThrottleRefused::Unavailable)?,
            }
        }
        self.local.check(client).map_err(ThrottleRefused::Limited)
    }

    /// Whether `client` has no recent failure.
    pub async fn clean(&self, client: IpAddr) -> bool {
        if let Some(store) = &self.shared {
            if let Ok(full) = self.shared_step(store, client, GcraMode::Full).await {
                return full.is_none();
            }
        }
        self.local.clean(client)
    }

    /// Counts one failed check against `client`, here and in the shared store.
    pub async fn failed(&self, client: IpAddr) {
        self.local.failed(client);
        if let Some(store) = &self.shared {
            if self
                .shared_step(store, client, GcraMode::Force)
                .await
                .is_err()
            {
                let _ = store.fall_back(Op::Throttle);
            }
        }
    }
}
