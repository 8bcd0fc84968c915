//! The hook pipeline: a webhook becomes the Salt event `salt/netapi/hook/<path>` with
//! `{_stamp, headers, post, body}`, the shape salt-api fires, so existing Reactor SLS files work.
//!
//! Steps, cheapest rejection first (DESIGN.md): response format (406, before any side effect) →
//! path shape: no control characters, no empty, `.` or `..` segments (400, see [`check_path`])
//! → route to the rule with the longest matching path, on segment boundaries (404 only when
//! unmatched paths are refused) → IP allowlist on the resolved client address (403) → rate limit
//! per rule and client (429 + `Retry-After`) → body read with the rule's cap, while streaming
//! (413) → Salt token unless the rule or `webhook_disable_auth` turns it off (hex, as on every
//! route, then checked with the master; 401) → signature over the raw bytes (401) → timestamp
//! window (401) → delivery already fired, by the scheme's delivery id or, with `dedupe: body`,
//! the body's SHA-256 (200 `duplicate`, nothing fired; 409 while the first one is still being
//! fired) → built-in answers (GitHub `ping`, Slack `url_verification`) → parse by Content-Type
//! (400) → fire (503 when the bus cannot take it). A cookie-authenticated hook from another
//! origin is refused before all of this ([`crate::api::csrf`]).
//!
//! Better than salt-api: the body limit is enforced (salt-api ignores `max_request_body_size`),
//! `Remote-Addr` is the real peer and cannot be overridden by a header, credential headers are
//! never put on the bus, and a failed fire is a 503 instead of `{"success": false}` with 200.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use http::{HeaderMap, HeaderName};

use super::answers::built_in_answer;
use super::event::{EventParts, HookDialect, is_yaml};
use super::sns::{CertCache, ReqwestHttp, SnsHttp, confirm_sns, verify_sns};
use crate::api::auth::{Caller, Unauthenticated};
use crate::api::body::read_capped;
use crate::api::error::ApiError;
use crate::api::state::App;
use crate::config::hooks::Dedupe;
use crate::config::hooks::route;
use crate::config::{AuthMode, HookRule};
use crate::salt::Event;
use crate::salt::event::hook_tag;
use crate::security::rate::{ClientKeys, RateQuota};
use crate::security::replay::{Duplicate, ReplayGuard, body_key};
use crate::security::signature::sns::SnsVerified;
use crate::security::{Verified, Verifier, VerifyError, redact};
use crate::shared::SharedStore;
use crate::shared::stores::{Dedup, Held, RateRefused, Rates, Refused};

/// The hook pipeline's state that outlives a reload: the replay guard (keyed by rule path, so
/// a rule that stays keeps its window), how clients are keyed, and where SNS certificates are
/// fetched from, and the shared store when several saltgates share one. The rules themselves are a [`HookRules`], part of the snapshot a reload swaps
/// ([`crate::api::live`]).
#[derive(Debug)]
pub struct Hooks {
    /// Proxies whose `X-Forwarded-For` is believed (not reloadable).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    client_keys: ClientKeys,
    replay: Dedup,
    /// The store several saltgates share (not reloadable): the delivery-id guard and the rate
    /// limits of every rule set are kept there too.
    shared: Option<SharedStore>,
    /// The HTTPS client for SNS certificates tests supply (`None`: the real one).
    sns_http: Option<Arc<dyn SnsHttp>>,
}

impl Hooks {
    /// The state every rule set of this process shares; with `shared`, the delivery-id guard
    /// and the rate limits are shared with the other saltgates on that store.
    pub fn new(
        trusted_proxies: Vec<ipnet::IpNet>,
        client_keys: ClientKeys,
        sns_http: Option<Arc<dyn SnsHttp>>,
        shared: Option<SharedStore>,
    ) -> Self {
        Self {
            trusted_proxies,
            client_keys,
            replay: Dedup::new(
                ReplayGuard::new(100_000, std::time::Duration::from_secs(86_400)),
                shared.clone(),
            ),
            shared,
            sns_http,
        }
    }

    /// Puts replay keys a store kept back into the guard (see [`crate::spool::Spool::dedup_keys`]).
    pub fn restore_replay_keys(&self, keys: &[(u128, SystemTime)]) {
        let now = SystemTime::now();
        // Oldest first, so that the newest are the last the guard would evict.
        for (key, at) in keys.iter().rev() {
            self.replay.local().restore(*key, *at, now);
        }
    }

    /// The store several saltgates share, when set.
    pub fn shared(&self) -> Option<&SharedStore> {
        self.shared.as_ref()
    }

    /// The replay guard's TTL and capacity.
    pub fn replay_limits(&self) -> (std::time::Duration, usize) {
        (self.replay.local().ttl(), self.replay.local().capacity())
    }
}

/// One rule set: the validated rules, their rate limiter and the SNS certificate cache. Built
/// at start and by every reload, and never changed once in force.
#[derive(Debug)]
pub struct HookRules {
    /// Rules; the last is the default for unmatched paths.
    pub rules: Vec<HookRule>,
    /// Refuse paths no configured rule covers.
    pub refuse_unmatched: bool,
    limiter: Rates,
    /// Rule index → limiter slot.
    rate_slots: Vec<Option<usize>>,
    /// SNS signing certificates, fetched over HTTPS and cached; only when a rule verifies SNS.
    sns_certs: Option<Arc<CertCache>>,
}

impl HookRules {
    /// The rule set for validated `rules`. With `previous` (a reload), what a sender has used
    /// carries over: a rule with the same path and the same quota keeps its rate buckets
    /// ([`Rates::reloaded`]; shared buckets are named by rule path and quota, so they carry over
    /// by themselves), and the SNS certificate cache is kept.
    pub fn new(
        hooks: &Hooks,
        rules: Vec<HookRule>,
        refuse_unmatched: bool,
        previous: Option<&HookRules>,
    ) -> Self {
        let mut quotas: Vec<(RateQuota, Option<usize>)> = Vec::new();
        let mut paths: Vec<&str> = Vec::new();
        let rate_slots = rules
            .iter()
            .map(|r| {
                r.rate.map(|q| {
                    let from = previous.and_then(|p| p.slot_of(&r.path));
                    quotas.push((q, from));
                    paths.push(&r.path);
                    quotas.len() - 1
                })
            })
            .collect();
        let limiter = match previous {
            Some(p) => p.limiter.reloaded(&quotas, &paths),
            None => {
                let quotas: Vec<RateQuota> = quotas.iter().map(|(q, _)| *q).collect();
                Rates::new(&quotas, &paths, hooks.client_keys, hooks.shared.clone())
            }
        };
        let wants_sns = rules
            .iter()
            .any(|r| matches!(r.verifier, Some(Verifier::Sns(_))));
        let kept_certs = previous.and_then(|p| p.sns_certs.clone());
        let sns_certs = match (wants_sns, kept_certs) {
            (false, _) => None,
            (true, Some(kept)) => Some(kept),
            (true, None) => sns_cache(hooks.sns_http.clone()),
        };
        Self {
            rules,
            refuse_unmatched,
            limiter,
            rate_slots,
            sns_certs,
        }
    }

    /// The limiter slot of the rule for exactly `path`, if it has a quota.
    fn slot_of(&self, path: &str) -> Option<usize> {
        let rule = self.rules.iter().find(|r| r.path == path)?;
        self.rate_slots.get(rule.index).copied().flatten()
    }

    /// Whether the rule for `path` uses the same rate buckets in `self` and in `other` (tests of
    /// the reload).
    pub fn shares_buckets(&self, path: &str, other: &HookRules) -> bool {
        match (self.slot_of(path), other.slot_of(path)) {
            (Some(a), Some(b)) => self.limiter.shares_table(a, &other.limiter, b),
            _ => false,
        }
    }

    /// Frees rate-limiter memory for addresses that went quiet; called on a timer.
    pub fn housekeep(&self) {
        self.limiter.housekeep();
    }
}

/// The SNS certificate cache over `http` (or the real HTTPS client).
fn sns_cache(http: Option<Arc<dyn SnsHttp>>) -> Option<Arc<CertCache>> {
    let http = match http {
        Some(http) => Ok(http),
        None => ReqwestHttp::new().map(|h| Arc::new(h) as Arc<dyn SnsHttp>),
    };
    match http {
        Ok(http) => Some(Arc::new(CertCache::new(http))),
        Err(e) => {
            tracing::error!(error = ?e, "No HTTPS client for SNS certificates; SNS hooks will answer 503");
            None
        }
    }
}

/// How a delivery that passed every check was answered.
#[derive(Debug)]
pub enum Outcome {
    /// Spooled (or, with the spool off, fired); `queued`: it waits for the bus.
    Fired {
        /// It waits for the bus (answered 202 `queued`).
        queued: bool,
    },
    /// Already fired once: answered, not fired again.
    Duplicate,
    /// Answered without firing (GitHub `ping`, Slack `url_verification`, a confirmed SNS
    /// subscription).
    Answered(serde_json::Value),
}

/// The pipeline of DESIGN.md, in its order.
#[expect(
    clippy::too_many_arguments,
    reason = "the pipeline's inputs: the services, both halves of the hook state, the request"
)]
pub async fn run(
    app: &App,
    hooks: &Hooks,
    set: &HookRules,
    caller: Result<Caller, Unauthenticated>,
    client: std::net::IpAddr,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
    dialect: &HookDialect,
) -> Result<Outcome, ApiError> {
    check_path(path)?;
    let rule = route(&set.rules, path).ok_or(ApiError::NotFound)?;
    if rule.path.is_empty() && set.refuse_unmatched {
        return Err(ApiError::NotFound);
    }
    if !rule.allow.contains(client) {
        return Err(ApiError::Forbidden);
    }
    if let Some(slot) = set.rate_slots.get(rule.index).copied().flatten() {
        set.limiter
            .check(slot, client)
            .await
            .map_err(|refused| match refused {
                RateRefused::Limited(retry) => ApiError::RateLimited(retry.as_header_secs()),
                RateRefused::Unavailable => ApiError::SharedUnavailable,
            })?;
    }
    let raw = read_capped(headers, body, rule.max_body).await?;
    let auth = match dialect.disable_auth {
        None => rule.auth,
        Some(disable) => rule.auth_on(disable),
    };
    if auth == AuthMode::Token {
        authenticate(app, caller).await?;
    }
    let mut delivery_key: Option<String> = None;
    let mut sns: Option<SnsVerified> = None;
    if let Some(verifier) = &rule.verifier {
        let (verified, sns_verified) = verify(set, verifier, headers, &raw).await.map_err(|e| {
            tracing::info!(client_ip = %client, hook = %path, scheme = verifier.name(), reason = %e, "Hook signature refused");
            match e {
                VerifyError::StaleTimestamp(_) => ApiError::Stale,
                VerifyError::CertUnavailable => {
                    ApiError::Unavailable("The sender's signing certificate cannot be fetched")
                }
                _ => ApiError::BadSignature("The request signature or token is not valid"),
            }
        })?;
        delivery_key = verified
            .delivery_id
            .map(|id| format!("{}:{}:{id}", rule.path, verifier.name()));
        sns = sns_verified;
    }
    // Only after the signature (or token) passed, so unverified requests cannot fill the guard.
    let key = match rule.dedupe {
        Dedupe::Id => delivery_key,
        Dedupe::Body => Some(body_key(&rule.path, &raw)),
    };
    let mut reservation: Option<Held> = None;
    if let Some(key) = key {
        match hooks.replay.begin(&key, SystemTime::now()).await {
            Ok(r) => reservation = Some(r),
            Err(Refused::Duplicate(Duplicate::Committed)) => return Ok(Outcome::Duplicate),
            Err(Refused::Duplicate(Duplicate::InProgress)) => return Err(ApiError::InProgress),
            Err(Refused::Unavailable) => return Err(ApiError::SharedUnavailable),
        }
    }
    if let Some(verifier) = &rule.verifier {
        let answer = match sns {
            Some(sns) => confirm_sns(set.sns_certs.as_deref(), verifier, &sns).await?,
            None => built_in_answer(rule, headers, &raw),
        };
        if let Some(answer) = answer {
            if let Some(r) = reservation {
                r.commit(SystemTime::now()).await;
            }
            return Ok(Outcome::Answered(answer));
        }
    }
    let post = {
        let yaml = rule.yaml && is_yaml(headers);
        let media = crate::api::body::media_type(headers).unwrap_or_default();
        let raw = raw.clone();
        let parse = dialect.parse;
        let query = query.map(str::to_owned);
        // Bounded while it parses; large bodies are parsed off the async workers.
        crate::api::body::offload(raw.len(), move || {
            if yaml {
                crate::api::body::parse_yaml(&raw).map(|v| crate::salt::from_json(&v))
            } else {
                parse(&media, &raw, query.as_deref())
            }
        })
        .await??
    };
    let mut hidden: Vec<HeaderName> = rule
        .verifier
        .as_ref()
        .map(|v| v.credential_headers())
        .unwrap_or_default();
    hidden.extend(redact::ALWAYS_REDACTED.iter().cloned());
    let parts = EventParts {
        client,
        headers,
        hidden: &hidden,
        post,
        raw: &raw,
        query,
    };
    let event = Event::new(hook_tag(path), (dialect.data)(parts));
    let key = reservation.as_ref().map(Held::key_hash);
    let queued = deliver(app, event, path, client, key).await?;
    if let Some(r) = reservation {
        r.commit(SystemTime::now()).await;
    }
    tracing::debug!(client_ip = %client, hook = %path, queued, "Hook accepted");
    Ok(Outcome::Fired { queued })
}

/// Commits the event to the spool, answered once it is on disk (`true`: it waits for the
/// bus), with its replay key in the same commit; with the spool off, fires it.
async fn deliver(
    app: &App,
    event: Event,
    path: &str,
    client: std::net::IpAddr,
    key: Option<u128>,
) -> Result<bool, ApiError> {
    use crate::spool::{Hook, SpoolError};
    let Some(spool) = &app.spool else {
        app.bus.fire(event).await.map_err(|e| {
            tracing::warn!(hook = %path, error = %e, "Hook could not be fired");
            ApiError::Unavailable("The event bus cannot take the event")
        })?;
        return Ok(false);
    };
    let hook = Hook {
        path: path.to_owned(),
        client,
        dedup: key,
    };
    match spool.accept(event, hook).await {
        Ok(accepted) => Ok(accepted.queued),
        Err(SpoolError::Full(secs)) => Err(ApiError::SpoolFull(secs)),
        Err(SpoolError::Busy) => Err(ApiError::Busy("The spool's queue is full; retry shortly")),
        Err(e) => {
            tracing::warn!(hook = %path, error = %e, "Hook could not be spooled");
            Err(ApiError::SpoolFailed)
        }
    }
}

/// Runs the rule's verifier; SNS needs its signing certificate, fetched (and cached) first.
async fn verify(
    set: &HookRules,
    verifier: &Verifier,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(Verified, Option<SnsVerified>), VerifyError> {
    match verifier {
        Verifier::Sns(sns) => {
            let cache = set
                .sns_certs
                .as_deref()
                .ok_or(VerifyError::CertUnavailable)?;
            let verified = verify_sns(sns, cache, headers, raw, unix_now()).await?;
            Ok((verified.verified(), Some(verified)))
        }
        other => Ok((other.verify(headers, raw, unix_now())?, None)),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The hook path must name exactly the tag its rule covers: no control characters (a decoded
/// `%0A%0A` would end the event tag early) and no empty, `.` or `..` segments
/// (`github//deploy`, `github/./deploy` would be routed to the default rule, yet a Reactor
/// glob such as `salt/netapi/hook/github/deploy*` may match their tags). Case is kept: Salt tags
/// and Reactor globs are case-sensitive, so `GitHub/Deploy` is another tag, routed as such.
pub fn check_path(path: &str) -> Result<(), ApiError> {
    if path.chars().any(char::is_control) {
        return Err(ApiError::BadPath("The path holds control characters"));
    }
    if !path.is_empty()
        && path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ApiError::BadPath(
            "The path holds an empty, '.' or '..' segment",
        ));
    }
    Ok(())
}

/// Token auth as salt-api: `X-Auth-Token` or the `session_id` cookie, checked for shape (hex,
/// as on every other route) and then with the master.
async fn authenticate(app: &App, caller: Result<Caller, Unauthenticated>) -> Result<(), ApiError> {
    let caller = caller?;
    let Some(salt) = &app.salt else {
        return Err(ApiError::Unauthorized("Token auth needs a Salt master"));
    };
    caller.confirm(salt).await.map(|_| ())
}
