//! Token validation and its cache: every check of a Salt token, every login (`mk_token`) and
//! every command whose credentials the master checks goes through [`TokenCache`], which caches
//! the master's answers, throttles failures per client and caps the checks in flight. Also the
//! shape every token must have ([`checked_token`]) and its removal from the master's file token
//! store ([`remove_token`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::ApiError;
use crate::config::Config;
use crate::salt::channel::Token;
use crate::salt::{SaltClients, SaltError};
use crate::security::client_ip;
use crate::security::rate::{ClientKey, RetryAfter};
use crate::security::throttle::ThrottleSettings;
use crate::shared::SharedStore;
use crate::shared::stores::{Throttle, ThrottleRefused};

/// The message of every 401 for a token that is missing, unknown or expired (salt-api's).
pub const NO_PERMISSION: &str = "No permission -- see authorization schemes";

/// The address of the client whose request is being served, for credential checks.
///
/// [`in_client_scope`] sets it once around every request the router serves, so each check made
/// while handling the request, wherever a handler makes it, is counted against the right
/// client without threading the address through every handler. Checks made outside a request
/// (an open stream rechecking its token) use [`TokenCache::recheck`].
mod scope {
    tokio::task_local! {
        pub(super) static CLIENT: std::net::IpAddr;
    }
}

/// What an unscoped check (a bug: every request is scoped) is counted against: one shared
/// budget, so such a check is still throttled rather than free.
const UNSCOPED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// How long a credential check waits for one of the `auth_max_in_flight` slots to the master.
pub const AUTH_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Resolves the client address (the TCP peer, or behind one of the trusted proxies the
/// `X-Forwarded-For` hop) and serves the request inside its scope ([`super::frame`] does it for
/// every request).
pub async fn in_client_scope(
    trusted_proxies: &[ipnet::IpNet],
    req: Request,
    next: Next,
) -> Response {
    let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
    else {
        return next.run(req).await;
    };
    let client = client_ip::resolve_from_headers(peer.ip(), req.headers(), trusted_proxies);
    scope::CLIENT.scope(client, next.run(req)).await
}

/// The client of the request being served.
fn current_client() -> IpAddr {
    scope::CLIENT.try_with(|c| *c).unwrap_or_else(|_| {
        tracing::warn!("Credential check outside a request scope; counted as one shared client");
        UNSCOPED
    })
}

/// Why a credential check was not answered yes or no.
#[derive(Debug)]
pub enum AuthError {
    /// The client made too many failed checks: 429 with `Retry-After`.
    Throttled(RetryAfter),
    /// The shared failure budgets cannot be read and `saltgate.shared.fail` is `closed`: 503.
    SharedUnavailable,
    /// Every slot to the master stayed busy for [`AUTH_QUEUE_WAIT`]: 503.
    Busy,
    /// The master refused or failed.
    Salt(SaltError),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Throttled(wait) => ApiError::RateLimited(wait.as_header_secs()),
            AuthError::SharedUnavailable => ApiError::SharedUnavailable,
            AuthError::Busy => {
                ApiError::Unavailable("Too many credential checks are waiting for the Salt master")
            }
            AuthError::Salt(e) => e.into(),
        }
    }
}

/// Credential checks with the master: logins, token lookups, and eauth sent with commands.
///
/// - Tokens the master confirmed are cached for `ttl`, so a burst of requests with the same
///   token costs one `get_token`. Bounded: when full it is cleared (a refill costs one round
///   trip each).
/// - Tokens the master did not know are remembered for a few seconds, hashed, in a bounded
///   LRU ([`AuthThrottle`]).
/// - Failed checks are counted per client ([`AuthThrottle`]); a client over its budget is
///   refused with 429 before anything reaches the master. Successes are never counted, and a
///   cached token is answered whatever the client's budget.
/// - At most `auth_max_in_flight` checks are sent to the master at once, so a flood cannot take
///   all of the master's request workers; the rest wait up to [`AUTH_QUEUE_WAIT`] (503 after).
///   Each client has one check at the master or in that queue at a time: its other checks wait
///   their turn, and once the client has a recent failure they are refused (429) instead, so
///   one guesser cannot fill the queue in front of everyone else.
#[derive(Debug)]
pub struct TokenCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (Instant, Token)>>,
    throttle: Throttle,
    in_flight: Semaphore,
    clients: ClientSlots,
    queue_wait: Duration,
}

/// How often a check waiting for its client's turn re-reads the client's budget.
const CLIENT_TURN_TICK: Duration = Duration::from_millis(100);

/// A check's places: its client's turn and a slot to the master.
struct Slot<'a> {
    _master: SemaphorePermit<'a>,
    _own: Option<ClientTurn<'a>>,
}

/// One check at a time per client key: a semaphore of one for each client with a check
/// pending, dropped when nobody holds or waits for it (so at most one per request in flight).
#[derive(Debug, Default)]
struct ClientSlots(Mutex<HashMap<ClientKey, Arc<Semaphore>>>);

impl ClientSlots {
    fn get(&self, key: ClientKey) -> Arc<Semaphore> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(1))),
        )
    }
}

/// A client's turn (held or awaited); gives the client's entry back when the last one ends.
struct ClientTurn<'a> {
    slots: &'a ClientSlots,
    key: ClientKey,
    sem: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ClientTurn<'_> {
    fn drop(&mut self) {
        self.permit.take();
        let mut map = self.slots.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map's handle and this one are left: no check holds or awaits it.
        if Arc::strong_count(&self.sem) == 2 {
            map.remove(&self.key);
        }
    }
}

impl TokenCache {
    /// A cache keeping answers for `ttl`, at most `capacity` of them, with the default throttle.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self::with_throttle(ttl, capacity, ThrottleSettings::default(), 2, None)
    }

    /// The cache and throttle `config` asks for, the failure budgets shared on `shared`.
    pub fn from_config(config: &Config, shared: Option<SharedStore>) -> Self {
        Self::with_throttle(
            Duration::from_secs(10),
            10_000,
            config.auth_throttle(),
            config.saltgate.auth_max_in_flight,
            shared,
        )
    }

    /// A cache keeping answers for `ttl`, at most `capacity` of them, throttled by `throttle`,
    /// with at most `max_in_flight` checks at the master at once, the failure budgets shared on
    /// `shared` when set.
    pub fn with_throttle(
        ttl: Duration,
        capacity: usize,
        throttle: ThrottleSettings,
        max_in_flight: usize,
        shared: Option<SharedStore>,
    ) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
            throttle: Throttle::new(throttle, shared),
            in_flight: Semaphore::new(max_in_flight.max(1)),
            clients: ClientSlots::default(),
            queue_wait: AUTH_QUEUE_WAIT,
        }
    }

    /// Validates `token` for the client being served, with the master or from the caches.
    /// `Ok(None)`: unknown or expired (and counted as a failure of the client's).
    pub async fn validate(
        &self,
        salt: &SaltClients,
        token: &str,
    ) -> Result<Option<Token>, AuthError> {
        self.check_token(salt, Some(current_client()), token).await
    }

    /// Validates a token that was valid when a stream opened: not charged to any client
    /// (nobody is guessing), but cached and capped in flight like every check.
    pub async fn recheck(
        &self,
        salt: &SaltClients,
        token: &str,
    ) -> Result<Option<Token>, AuthError> {
        self.check_token(salt, None, token).await
    }

    async fn check_token(
        &self,
        salt: &SaltClients,
        client: Option<IpAddr>,
        token: &str,
    ) -> Result<Option<Token>, AuthError> {
        let now_unix = unix_now();
        if let Some(t) = self.cached(token, now_unix) {
            return Ok(Some(t));
        }
        if self.throttle.local().known_bad(token) {
            return Ok(None);
        }
        let _slot = self.slot(client).await?;
        // While this waited, another request may have asked about the same token.
        if let Some(t) = self.cached(token, now_unix) {
            return Ok(Some(t));
        }
        if self.throttle.local().known_bad(token) {
            return Ok(None);
        }
        let found = salt
            .channel
            .get_token(token)
            .await
            .map_err(AuthError::Salt)?
            .filter(|t| t.expire > now_unix);
        match &found {
            Some(t) => self.store(token, t),
            None => {
                self.throttle.local().remember_bad(token);
                if let Some(client) = client {
                    tracing::debug!(client_ip = %client, "Unknown or expired token");
                    self.throttle.failed(client).await;
                }
            }
        }
        Ok(found)
    }

    /// The token as the master knows it, for the client being served: 401 when unknown or
    /// expired.
    pub async fn confirm(&self, salt: &SaltClients, token: &str) -> Result<Token, ApiError> {
        self.validate(salt, token)
            .await?
            .ok_or(ApiError::Unauthorized(NO_PERMISSION))
    }

    /// Logs in with the master's eauth (`mk_token`) for the client being served. A refusal is
    /// counted as a failure of the client's; the new token is cached as valid.
    pub async fn login(
        &self,
        salt: &SaltClients,
        eauth: &str,
        username: &str,
        password: &str,
    ) -> Result<Token, AuthError> {
        let client = current_client();
        let _slot = self.slot(Some(client)).await?;
        match salt.channel.mk_token(eauth, username, password).await {
            Ok(t) => {
                self.throttle.local().forget_bad(&t.token);
                self.store(&t.token, &t);
                Ok(t)
            }
            Err(e @ (SaltError::AuthRefused(_) | SaltError::Master(_))) => {
                self.throttle.failed(client).await;
                Err(AuthError::Salt(e))
            }
            Err(e) => Err(AuthError::Salt(e)),
        }
    }

    /// For credentials the master checks as part of a command (`/run`'s per-chunk `token` or
    /// eauth): refuses a client over its failure budget. Call [`TokenCache::refused`] when the
    /// master then refuses the credentials.
    pub async fn admit(&self) -> Result<(), AuthError> {
        self.admit_client(current_client()).await
    }

    /// Counts credentials the master refused with a command as a failure of the client's.
    pub async fn refused(&self) {
        self.throttle.failed(current_client()).await;
    }

    /// Refuses a client over its budget; waits for the client's own turn (one check per
    /// client at a time), then for a slot to the master, and checks the budget again
    /// (failures that finished while it waited count).
    async fn slot(&self, client: Option<IpAddr>) -> Result<Slot<'_>, AuthError> {
        let deadline = tokio::time::Instant::now() + self.queue_wait;
        let own = match client {
            Some(c) => Some(self.client_turn(c, deadline).await?),
            None => None,
        };
        let master = match tokio::time::timeout_at(deadline, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    wait_secs = self.queue_wait.as_secs(),
                    "Credential check refused: every slot to the Salt master stayed busy"
                );
                return Err(AuthError::Busy);
            }
        };
        if let Some(c) = client {
            self.admit_client(c).await?;
        }
        Ok(Slot {
            _master: master,
            _own: own,
        })
    }

    /// Waits until no other check of `client`'s is in progress. A client with a recent
    /// failure does not wait: a second check while one is in progress is refused (429), so a
    /// guesser holds at most one place in the queue to the master.
    async fn client_turn(
        &self,
        client: IpAddr,
        deadline: tokio::time::Instant,
    ) -> Result<ClientTurn<'_>, AuthError> {
        let key = self.throttle.local().key(client);
        let mut turn = ClientTurn {
            slots: &self.clients,
            key,
            sem: self.clients.get(key),
            permit: None,
        };
        loop {
            self.admit_client(client).await?;
            if let Ok(p) = Arc::clone(&turn.sem).try_acquire_owned() {
                turn.permit = Some(p);
                return Ok(turn);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || !self.throttle.clean(client).await {
                tracing::info!(
                    client_ip = %client,
                    "Credential check refused: this client already has one in progress"
                );
                return Err(AuthError::Throttled(RetryAfter(Duration::from_secs(1))));
            }
            let wait = (deadline - now).min(CLIENT_TURN_TICK);
            if let Ok(Ok(p)) =
                tokio::time::timeout(wait, Arc::clone(&turn.sem).acquire_owned()).await
            {
                turn.permit = Some(p);
                return Ok(turn);
            }
        }
    }

    async fn admit_client(&self, client: IpAddr) -> Result<(), AuthError> {
        self.throttle.check(client).await.map_err(|e| match e {
            ThrottleRefused::Limited(wait) => throttled(client, wait),
            ThrottleRefused::Unavailable => AuthError::SharedUnavailable,
        })
    }

    fn cached(&self, token: &str, now_unix: f64) -> Option<Token> {
        let entries = self.entries.lock().ok()?;
        let (at, t) = entries.get(token)?;
        (at.elapsed() < self.ttl && t.expire > now_unix).then(|| t.clone())
    }

    fn store(&self, token: &str, t: &Token) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.capacity {
                entries.clear();
            }
            entries.insert(token.to_owned(), (Instant::now(), t.clone()));
        }
    }

    /// Forgets a token (after logout).
    pub fn forget(&self, token: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(token);
        }
    }
}

fn throttled(client: IpAddr, wait: RetryAfter) -> AuthError {
    tracing::info!(
        client_ip = %client,
        retry_after_secs = wait.as_header_secs(),
        "Credential check refused: too many failures from this client"
    );
    AuthError::Throttled(wait)
}

/// A Salt token must be hex (as rest_cherrypy checks), which also keeps it a safe file name.
pub fn checked_token(token: &str) -> Result<String, ApiError> {
    let t = token.trim();
    if t.is_empty() || t.len() > 256 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Unauthorized("Invalid token"));
    }
    Ok(t.to_owned())
}

/// Deletes the token from the master's file token store: `<cachedir>/tokens/<token>` (the
/// `localfs` token module of 3006 and 3007) or `<cachedir>/tokens/<token>.p` (3008 keeps tokens
/// in `salt.cache`'s `localfs` driver, bank `tokens`). `token` is hex (checked by
/// [`checked_token`]), so it cannot name another file.
pub fn remove_token(config: &Config, token: &str) {
    let dir = config.master.cachedir.join("tokens");
    let mut removed = false;
    for path in [dir.join(token), dir.join(format!("{token}.p"))] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "Logout: could not remove the token file"),
        }
    }
    if removed {
        tracing::info!("Token revoked");
    } else {
        tracing::warn!(
            dir = %dir.display(),
            "Logout: token not found in the file token store; it stays valid until it expires"
        );
    }
}

/// Seconds since the epoch, as Salt's token times are.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
