//! `POST /hook/<path>`: a webhook becomes the Salt event `salt/netapi/hook/<path>` with
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
//! origin is refused before all of this ([`super::csrf`]).
//!
//! Better than salt-api: the body limit is enforced (salt-api ignores `max_request_body_size`),
//! `Remote-Addr` is the real peer and cannot be overridden by a header, credential headers are
//! never put on the bus, and a failed fire is a 503 instead of `{"success": false}` with 200.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use rmpv::Value;

use super::error::{ApiError, render_body};
use super::extract::read_capped;
use super::negotiate::{Format, response_format};
use super::state::AppState;
use crate::api::sns::{CertCache, ReqwestHttp, SnsHttp, confirm_subscription, verify_sns};
use crate::config::hooks::Dedupe;
use crate::config::hooks::route;
use crate::config::{AuthMode, HookRule};
use crate::salt::Event;
use crate::salt::event::{hook_tag, stamp_now};
use crate::security::rate::{ClientKeys, RateLimiter, RateQuota};
use crate::security::replay::{Duplicate, ReplayGuard, Reservation, body_key};
use crate::security::signature::sns::SnsVerified;
use crate::security::{Verified, Verifier, VerifyError, client_ip, redact};
use std::sync::Arc;

/// The hook pipeline's shared state: rules, limiter, replay guard.
#[derive(Debug)]
pub struct Hooks {
    /// Rules; the last is the default for unmatched paths.
    pub rules: Vec<HookRule>,
    /// Refuse paths no configured rule covers.
    pub refuse_unmatched: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    limiter: RateLimiter,
    /// Rule index → limiter slot.
    rate_slots: Vec<Option<usize>>,
    replay: ReplayGuard,
    /// SNS signing certificates, fetched over HTTPS and cached; only when a rule verifies SNS.
    sns_certs: Option<CertCache>,
}

impl Hooks {
    /// Builds the pipeline state from validated rules.
    pub fn new(
        rules: Vec<HookRule>,
        refuse_unmatched: bool,
        trusted_proxies: Vec<ipnet::IpNet>,
        client_keys: ClientKeys,
        sns_http: Option<Arc<dyn SnsHttp>>,
    ) -> Self {
        let mut quotas: Vec<RateQuota> = Vec::new();
        let rate_slots = rules
            .iter()
            .map(|r| {
                r.rate.map(|q| {
                    quotas.push(q);
                    quotas.len() - 1
                })
            })
            .collect();
        let wants_sns = rules
            .iter()
            .any(|r| matches!(r.verifier, Some(Verifier::Sns(_))));
        let sns_certs = if wants_sns {
            let http = match sns_http {
                Some(http) => Ok(http),
                None => ReqwestHttp::new().map(|h| Arc::new(h) as Arc<dyn SnsHttp>),
            };
            match http {
                Ok(http) => Some(CertCache::new(http)),
                Err(e) => {
                    tracing::error!(error = ?e, "No HTTPS client for SNS certificates; SNS hooks will answer 503");
                    None
                }
            }
        } else {
            None
        };
        Self {
            rules,
            refuse_unmatched,
            trusted_proxies,
            limiter: RateLimiter::new(&quotas, client_keys),
            rate_slots,
            replay: ReplayGuard::new(100_000, std::time::Duration::from_secs(86_400)),
            sns_certs,
        }
    }

    /// Puts replay keys a store kept back into the guard (see [`crate::spool::Spool::dedup_keys`]).
    pub fn restore_replay_keys(&self, keys: &[(u128, SystemTime)]) {
        let now = SystemTime::now();
        // Oldest first, so that the newest are the last the guard would evict.
        for (key, at) in keys.iter().rev() {
            self.replay.restore(*key, *at, now);
        }
    }

    /// The replay guard's TTL and capacity.
    pub fn replay_limits(&self) -> (std::time::Duration, usize) {
        (self.replay.ttl(), self.replay.capacity())
    }

    /// Frees rate-limiter memory for addresses that went quiet; called on a timer.
    pub fn housekeep(&self) {
        self.limiter.housekeep();
    }
}

/// `POST <webhook_url>` with no further path.
pub async fn hook_root(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, peer, String::new(), headers, body).await
}

/// `POST <webhook_url>/<path>`.
pub async fn hook_path(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, peer, path, headers, body).await
}

/// How a delivery that passed every check was answered.
enum Outcome {
    /// Spooled (or, with the spool off, fired); `queued`: it waits for the bus.
    Fired {
        queued: bool,
    },
    Duplicate,
    /// Answered without firing (GitHub `ping`, Slack `url_verification`).
    Answered(serde_json::Value),
}

async fn handle(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = path.trim_matches('/').to_owned();
    let client = client_ip::resolve_from_headers(peer.ip(), &headers, &app.hooks.trusted_proxies);
    let Some(format) = response_format(&headers) else {
        tracing::info!(client_ip = %client, hook = %path, status = 406, "Hook refused: no acceptable format");
        app.record_hook(&path, client, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
        return ApiError::NotAcceptable.render(Format::Json);
    };
    match run(&app, client, &path, &headers, body).await {
        Ok(Outcome::Fired { queued: false }) => {
            app.record_hook(&path, client, StatusCode::OK, "accepted");
            render_body(
                StatusCode::OK,
                format,
                &serde_json::json!({"success": true}),
            )
        }
        Ok(Outcome::Fired { queued: true }) => {
            app.record_hook(&path, client, StatusCode::ACCEPTED, "queued");
            render_body(
                StatusCode::ACCEPTED,
                format,
                &serde_json::json!({"success": true, "queued": true}),
            )
        }
        Ok(Outcome::Duplicate) => {
            app.record_hook(&path, client, StatusCode::OK, "duplicate");
            tracing::info!(client_ip = %client, hook = %path, "Duplicate delivery answered, nothing fired");
            render_body(
                StatusCode::OK,
                format,
                &serde_json::json!({"success": true, "duplicate": true}),
            )
        }
        Ok(Outcome::Answered(body)) => {
            app.record_hook(&path, client, StatusCode::OK, "answered");
            render_body(StatusCode::OK, format, &body)
        }
        Err(e) => {
            let (status, code) = e.status_code();
            app.record_hook(&path, client, status, code);
            tracing::info!(client_ip = %client, hook = %path, status = status.as_u16(), code, "Hook refused");
            e.render(format)
        }
    }
}

/// The pipeline of DESIGN.md, in its order.
async fn run(
    app: &AppState,
    client: std::net::IpAddr,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Outcome, ApiError> {
    let hooks = &app.hooks;
    check_path(path)?;
    let rule = route(&hooks.rules, path).ok_or(ApiError::NotFound)?;
    if rule.path.is_empty() && hooks.refuse_unmatched {
        return Err(ApiError::NotFound);
    }
    if !rule.allow.contains(client) {
        return Err(ApiError::Forbidden);
    }
    if let Some(slot) = hooks.rate_slots.get(rule.index).copied().flatten() {
        hooks
            .limiter
            .check(slot, client)
            .map_err(|retry| ApiError::RateLimited(retry.as_header_secs()))?;
    }
    let raw = read_capped(headers, body, rule.max_body).await?;
    if rule.auth == AuthMode::Token {
        authenticate(app, headers).await?;
    }
    let mut delivery_key: Option<String> = None;
    let mut sns: Option<SnsVerified> = None;
    if let Some(verifier) = &rule.verifier {
        let (verified, sns_verified) = verify(hooks, verifier, headers, &raw).await.map_err(|e| {
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
    let mut reservation: Option<Reservation> = None;
    if let Some(key) = key {
        match hooks.replay.begin(&key, SystemTime::now()) {
            Ok(r) => reservation = Some(r),
            Err(Duplicate::Committed) => return Ok(Outcome::Duplicate),
            Err(Duplicate::InProgress) => return Err(ApiError::InProgress),
        }
    }
    if let Some(verifier) = &rule.verifier {
        let answer = match sns {
            Some(sns) => confirm_sns(hooks, verifier, &sns).await?,
            None => built_in_answer(rule, headers, &raw),
        };
        if let Some(answer) = answer {
            if let Some(r) = reservation {
                r.commit(SystemTime::now());
            }
            return Ok(Outcome::Answered(answer));
        }
    }
    let post = {
        let yaml = rule.yaml && is_yaml(headers);
        let media = super::body::media_type(headers).unwrap_or_default();
        let raw = raw.clone();
        // Bounded while it parses; large bodies are parsed off the async workers.
        super::body::offload(raw.len(), move || {
            if yaml {
                super::body::parse_yaml(&raw).map(|v| crate::salt::wire::payload::from_json(&v))
            } else {
                parse_media(&media, &raw)
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
    let event = Event::new(
        hook_tag(path),
        event_data(client, headers, &hidden, post, &raw),
    );
    let key = reservation.as_ref().map(Reservation::key_hash);
    let queued = deliver(app, event, path, client, key).await?;
    if let Some(r) = reservation {
        r.commit(SystemTime::now());
    }
    tracing::debug!(client_ip = %client, hook = %path, queued, "Hook accepted");
    Ok(Outcome::Fired { queued })
}

/// Commits the event to the spool, answered once it is on disk (`true`: it waits for the
/// bus), with its replay key in the same commit; with the spool off, fires it.
async fn deliver(
    app: &AppState,
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
    hooks: &Hooks,
    verifier: &Verifier,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(Verified, Option<SnsVerified>), VerifyError> {
    match verifier {
        Verifier::Sns(sns) => {
            let cache = hooks
                .sns_certs
                .as_ref()
                .ok_or(VerifyError::CertUnavailable)?;
            let verified = verify_sns(sns, cache, headers, raw, unix_now()).await?;
            Ok((verified.verified(), Some(verified)))
        }
        other => Ok((other.verify(headers, raw, unix_now())?, None)),
    }
}

/// An SNS `SubscriptionConfirmation` is confirmed here when the rule opts in (GET of the
/// checked `SubscribeURL`), and then not fired; otherwise it is fired for the Reactor.
async fn confirm_sns(
    hooks: &Hooks,
    verifier: &Verifier,
    sns: &SnsVerified,
) -> Result<Option<serde_json::Value>, ApiError> {
    let (Verifier::Sns(rule), Some(url)) = (verifier, &sns.subscribe_url) else {
        return Ok(None);
    };
    if !rule.confirm_subscriptions() {
        return Ok(None);
    }
    let cache = hooks
        .sns_certs
        .as_ref()
        .ok_or(ApiError::Unavailable("No HTTPS client for SNS"))?;
    confirm_subscription(cache, url).await.map_err(|e| {
        tracing::warn!(topic = %sns.topic_arn, error = ?e, "SNS subscription could not be confirmed");
        ApiError::Unavailable("The SNS subscription could not be confirmed")
    })?;
    tracing::info!(topic = %sns.topic_arn, "Confirmed an SNS subscription");
    Ok(Some(
        serde_json::json!({"success": true, "confirmed": true}),
    ))
}

/// Answers senders expect without the Reactor: GitHub `ping` (unless the rule fires pings) and
/// Slack's `url_verification` challenge. Only called after the signature passed.
fn built_in_answer(rule: &HookRule, headers: &HeaderMap, raw: &[u8]) -> Option<serde_json::Value> {
    let verifier = rule.verifier.as_ref()?;
    match verifier.name() {
        "github" if !rule.fire_ping => {
            let event = headers.get("x-github-event")?.to_str().ok()?;
            (event == "ping").then(|| serde_json::json!({"success": true, "ping": true}))
        }
        "slack" => {
            let body: serde_json::Value = serde_json::from_slice(raw).ok()?;
            if body.get("type")?.as_str()? != "url_verification" {
                return None;
            }
            let challenge = body.get("challenge")?.as_str()?;
            Some(serde_json::json!({"challenge": challenge}))
        }
        _ => None,
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
async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = super::lowstate::session(headers)?;
    let Some(salt) = &app.salt else {
        return Err(ApiError::Unauthorized("Token auth needs a Salt master"));
    };
    match app.tokens.validate(salt, &token).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized(
            "No permission -- see authorization schemes",
        )),
    }
}

/// The event data: `{_stamp, headers, post, body}`.
fn event_data(
    client: std::net::IpAddr,
    headers: &HeaderMap,
    hidden: &[HeaderName],
    post: Value,
    raw: &Bytes,
) -> Value {
    let mut hdrs: Vec<(Value, Value)> = Vec::with_capacity(headers.len() + 1);
    hdrs.push((Value::from("Remote-Addr"), Value::from(client.to_string())));
    for (name, value) in headers {
        if hidden.contains(name) || name.as_str() == "remote-addr" {
            continue;
        }
        let name = name.as_str();
        let key = Value::from(title_case(name));
        let value = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        // Repeated headers: the last one wins, as in CherryPy's dict.
        if let Some(slot) = hdrs.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            hdrs.push((key, value));
        }
    }
    let body = match std::str::from_utf8(raw) {
        Ok(text) => Value::from(text),
        Err(_) => Value::Binary(raw.to_vec()),
    };
    Value::Map(vec![
        (Value::from("_stamp"), Value::from(stamp_now())),
        (Value::from("headers"), Value::Map(hdrs)),
        (Value::from("post"), post),
        (Value::from("body"), body),
    ])
}

/// CherryPy's header names: `x-hub-signature-256` → `X-Hub-Signature-256`.
pub fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut prev_letter = false;
    for c in name.chars() {
        if c.is_alphabetic() {
            if prev_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_letter = true;
        } else {
            out.push(c);
            prev_letter = false;
        }
    }
    out
}

/// Parses the body by its media type into the event's `post`.
pub fn parse_body(headers: &HeaderMap, raw: &[u8]) -> Result<Value, ApiError> {
    parse_media(&super::body::media_type(headers).unwrap_or_default(), raw)
}

fn parse_media(media: &str, raw: &[u8]) -> Result<Value, ApiError> {
    if raw.is_empty() {
        return Ok(Value::Map(Vec::new()));
    }
    let json = |r: Result<serde_json::Value, ApiError>| {
        r.map(|v| crate::salt::wire::payload::from_json(&v))
    };
    match media {
        "application/json" => json(super::body::parse_json(raw)),
        m if m.ends_with("+json") => json(super::body::parse_json(raw)),
        // CherryPy's form processing, as on the lowstate routes: repeated keys become a list,
        // `arg` is a list and `arg` items and `kwarg` are read as YAML scalars.
        "application/x-www-form-urlencoded" => json(super::body::parse_form(raw)),
        // salt-api reads text/plain as JSON when it is JSON, else keeps the text.
        "text/plain" => Ok(json(super::body::parse_json(raw)).unwrap_or_else(|_| text_value(raw))),
        // YAML is parsed only when the rule asks for it (see `run`); otherwise it is text.
        _ => Ok(text_value(raw)),
    }
}

fn is_yaml(headers: &HeaderMap) -> bool {
    matches!(
        super::body::media_type(headers).as_deref(),
        Some("application/x-yaml" | "application/yaml" | "text/yaml" | "text/x-yaml")
    )
}

fn text_value(raw: &[u8]) -> Value {
    match std::str::from_utf8(raw) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Binary(raw.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, v.parse().unwrap());
        h
    }

    #[test]
    fn title_cases_like_cherrypy() {
        assert_eq!(title_case("x-hub-signature-256"), "X-Hub-Signature-256");
        assert_eq!(title_case("x-github-event"), "X-Github-Event");
        assert_eq!(title_case("content-md5"), "Content-Md5");
    }

    #[test]
    fn bodies_parse_by_type() {
        let v = parse_body(&ct("application/json"), br#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(
            crate::salt::wire::payload::to_json(&v),
            serde_json::json!({"a": [1, 2]})
        );
        let v = parse_body(&ct("application/x-www-form-urlencoded"), b"a=1&a=2&b=x").unwrap();
        assert_eq!(
            crate::salt::wire::payload::to_json(&v),
            serde_json::json!({"a": ["1", "2"], "b": "x"})
        );
        // CherryPy's form processing (API.md §7): `arg` a list, `kwarg` read as YAML.
        let v = parse_body(
            &ct("application/x-www-form-urlencoded"),
            b"a=1&a=2&b=x&arg=hello&kwarg=%7B%22k%22%3A1%7D",
        )
        .unwrap();
        assert_eq!(
            crate::salt::wire::payload::to_json(&v),
            serde_json::json!({"a": ["1", "2"], "b": "x", "arg": ["hello"], "kwarg": {"k": 1}})
        );
        let v = parse_body(&ct("text/plain"), b"hello").unwrap();
        assert_eq!(v, Value::from("hello"));
        let v = parse_body(&HeaderMap::new(), b"").unwrap();
        assert_eq!(v, Value::Map(vec![]));
        assert!(matches!(
            parse_body(&ct("application/json"), b"{nope"),
            Err(ApiError::BadBody(_))
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse_body(&ct("application/json"), deep.as_bytes()),
            Err(ApiError::BadBody(_))
        ));
    }

    #[test]
    fn credentials_and_spoofed_remote_addr_stay_off_the_bus() {
        let mut h = ct("application/json");
        h.insert("x-auth-token", "secret-token".parse().unwrap());
        h.insert("cookie", "session_id=secret".parse().unwrap());
        h.insert("remote-addr", "6.6.6.6".parse().unwrap());
        h.insert("x-github-event", "push".parse().unwrap());
        let hidden: Vec<HeaderName> = redact::ALWAYS_REDACTED.to_vec();
        let data = event_data(
            "10.1.2.3".parse().unwrap(),
            &h,
            &hidden,
            Value::Nil,
            &Bytes::from_static(b"{}"),
        );
        let json = crate::salt::wire::payload::to_json(&data);
        let headers = &json["headers"];
        assert_eq!(headers["Remote-Addr"], "10.1.2.3");
        assert_eq!(headers["X-Github-Event"], "push");
        assert!(headers.get("X-Auth-Token").is_none());
        assert!(headers.get("Cookie").is_none());
        assert!(!json.to_string().contains("secret"));
        assert_eq!(json["body"], "{}");
        assert_eq!(json["_stamp"].as_str().unwrap().len(), 26);
    }
}
