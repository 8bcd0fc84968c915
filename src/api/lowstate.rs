//! `POST /` and `POST /run` (and `POST /minions`): lowstate chunks → Salt clients → results.
//!
//! A lowstate is a list of chunks (a single map is taken as a one-chunk list), each naming a
//! `client` and its arguments. The answer is `{"return": [r1, r2, ...]}` in chunk order, each
//! result shaped as rest_cherrypy shapes it (`local`: `{minion: return}`, silent minions `false`;
//! `local_async`: `{jid, minions}`; `local_batch`: one entry per minion; `runner`: the runner's
//! return; `runner_async`/`wheel_async`: `{tag, jid}`; `wheel`: `{tag, data}`).
//!
//! Credentials: on `/` the Salt token comes from `X-Auth-Token` or the `session_id` cookie and
//! replaces any credentials in the chunks (a session cannot be elevated with body credentials);
//! on `/run` each chunk carries `token` or `eauth` + `username` + `password`. Authentication and
//! authorization are the master's: every call carries the credentials on the clear channel.
//! One exception: the master lets a *compound command* (`fun` a list) through when any one of
//! its functions is allowed, so saltgate checks every function of one against the caller's
//! `external_auth` entries itself ([`crate::security::acl`]) and refuses with 403 naming the
//! function; single functions are left to the master, whose check is exact for them.
//!
//! Order of checks, cheapest first and all before any side effect: `Accept` (406) → session
//! token present (401) → body size (413) → `Content-Type` (415) → parse (400) → shape of *every*
//! chunk: a map, a known client, enabled in `netapi_enable_clients`, credentials present, `fun`
//! (and `tgt`) present, no key that saltgate sets in the master's request (`cmd`, `user`, `key`;
//! for wheel also `__jid__`, `__tag__`, `__user__`) (400/401) → a master is attached (503) → the
//! session token is valid (401), or on `/run` the client is within its failure budget (429) →
//! eauth chunks with a compound command log in with the master's `mk_token` (throttled as
//! `/login`; a wrong password is 401, the same as for any chunk, whatever the ACL) and their
//! command is checked against the new token's user and groups (403) → compound commands of
//! token chunks, against the token's user and groups (403). Then the chunks run one after the
//! other (an eauth chunk checked that way runs with its new token, which is revoked when the
//! request ends); each publish of a compound command is checked again against the same list.
//!
//! A failing chunk: a chunk that fails at run time (refused by the master, timeout, master
//! gone) ends the request with that chunk's error (`message` starts with `chunk <n>:`); the
//! results of earlier chunks are not returned, but their effects stay, and later chunks do not
//! run. That is rest_cherrypy's rule (API.md §3.4), kept because clients rely on a non-200 status
//! to notice failure. Unlike rest_cherrypy, malformed or disabled chunks are found *before*
//! anything runs, so a bad third chunk no longer leaves the first two executed.
//!
//! Differences from rest_cherrypy, on purpose: 406 before running (rest_cherrypy runs the
//! command, then refuses the response); errors are `{status, code, message}` in the negotiated
//! format instead of CherryPy HTML pages; an authorization refusal is 403 (rest_cherrypy: 401);
//! missing `tgt`/`fun` is 400 (rest_cherrypy: 500); YAML parse errors are 400 (rest_cherrypy:
//! 500); the `ssh` client is not served (400); a compound command with a function the caller's
//! `external_auth` does not allow is 403 (rest_cherrypy runs it: the master's check passes a
//! `fun` list when one function is allowed); a chunk with `cmd`, `user` or `key` (wheel: also
//! `__jid__`, `__tag__`, `__user__`) is 400 (rest_cherrypy's wheel client sets `cmd` over the
//! chunk's).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use rand::seq::SliceRandom;
use rmpv::Value as Mp;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::body;
use super::error::{ApiError, render_body};
use super::extract::{read_capped, session_token};
use super::negotiate::{Format, response_format};
use super::state::{AppState, AuthError};
use crate::salt::channel::{Auth, PublishRequest, Token};
use crate::salt::client::local::LocalReturns;
use crate::salt::client::new_jid;
use crate::salt::event::map_get;
use crate::salt::wire::payload::{from_json, to_json};
use crate::salt::{SaltClients, SaltError};
use crate::security::acl::{self, AuthList, Caller};

/// How long a `runner` chunk waits for its return without a `timeout` (Salt's `rest_timeout`).
pub const REST_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest `batch_wait` honoured between batches.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(60);
/// `wheel_async` calls running in the background at once; more are refused with 503.
pub const MAX_BACKGROUND: usize = 64;

/// The bound on background (`wheel_async`) calls, shared by the router's handlers.
#[derive(Debug, Clone)]
pub struct Background(Arc<Semaphore>);

impl Background {
    /// Room for [`MAX_BACKGROUND`] calls.
    pub fn new() -> Self {
        Self(Arc::new(Semaphore::new(MAX_BACKGROUND)))
    }
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}

/// The clients saltgate serves, as named in a chunk's `client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Publish and gather returns.
    Local,
    /// Publish and return the jid.
    LocalAsync,
    /// Publish to the matched minions in batches.
    LocalBatch,
    /// Publish to N of the matched minions that have the function.
    LocalSubset,
    /// Run a runner and wait for its return.
    Runner,
    /// Start a runner.
    RunnerAsync,
    /// Run a wheel function.
    Wheel,
    /// Start a wheel function in the background.
    WheelAsync,
}

impl Client {
    /// Every client saltgate serves, with its name.
    pub const ALL: [(&'static str, Client); 8] = [
        ("local", Client::Local),
        ("local_async", Client::LocalAsync),
        ("local_batch", Client::LocalBatch),
        ("local_subset", Client::LocalSubset),
        ("runner", Client::Runner),
        ("runner_async", Client::RunnerAsync),
        ("wheel", Client::Wheel),
        ("wheel_async", Client::WheelAsync),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }

    fn needs_target(self) -> bool {
        matches!(
            self,
            Self::Local | Self::LocalAsync | Self::LocalBatch | Self::LocalSubset
        )
    }
}

/// Where a request's credentials come from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The session's Salt token, for every chunk.
    Session(String),
    /// Each chunk's own `token` or `eauth`/`username`/`password`.
    PerChunk,
}

/// A checked chunk, ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// Which client runs it.
    pub client: Client,
    /// Its credentials.
    pub auth: Auth,
    /// The chunk without `client` and credentials.
    pub low: Map<String, Value>,
    /// The caller's auth list, once a compound command passed saltgate's check (see
    /// [`authorize_eauth`]); every publish of the chunk's job is checked against it again.
    pub acl: Option<AuthList>,
}

/// rest_cherrypy's shaping: a non-empty map is a one-chunk list; anything but a list is refused.
pub fn shape(body: Value) -> Result<Vec<Value>, ApiError> {
    match body {
        Value::Object(m) if !m.is_empty() => Ok(vec![Value::Object(m)]),
        Value::Array(chunks) => Ok(chunks),
        _ => Err(ApiError::BadLowstate("Lowstates must be a list".into())),
    }
}

/// Checks every chunk before any runs. `forced` replaces the chunk's client (`POST /minions`).
pub fn prepare(
    chunks: Vec<Value>,
    creds: &Credentials,
    enabled: &[String],
    forced: Option<Client>,
) -> Result<Vec<Prepared>, ApiError> {
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            prepare_one(chunk, creds, enabled, forced).map_err(|error| ApiError::Chunk {
                index,
                error: Box::new(error),
            })
        })
        .collect()
}

fn prepare_one(
    chunk: Value,
    creds: &Credentials,
    enabled: &[String],
    forced: Option<Client>,
) -> Result<Prepared, ApiError> {
    let Value::Object(mut low) = chunk else {
        return Err(ApiError::BadLowstate("a chunk must be a map".into()));
    };
    let named = low.remove("client");
    let client = match forced {
        Some(c) => c,
        None => {
            let name = match &named {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "None".to_owned(),
            };
            Client::parse(&name).ok_or_else(|| {
                if name == "ssh" || name == "destroy" {
                    ApiError::ClientDisabled(format!("Client not served by saltgate: '{name}'"))
                } else {
                    ApiError::BadLowstate(format!("Invalid client specified: '{name}'"))
                }
            })?
        }
    };
    if !enabled.iter().any(|e| e == client.name()) {
        return Err(ApiError::ClientDisabled(format!(
            "Client disabled: '{}'. Add to 'netapi_enable_clients' master config option to enable.",
            client.name()
        )));
    }
    let token = low.remove("token");
    let eauth = low.remove("eauth");
    let username = low.remove("username");
    let password = low.remove("password");
    let auth = match creds {
        Credentials::Session(t) => Auth::Token(t.clone()),
        Credentials::PerChunk => match (token, eauth, username, password) {
            (Some(Value::String(t)), ..) => Auth::Token(checked_token(&t)?),
            (Some(_), ..) => return Err(ApiError::Unauthorized("Invalid token")),
            (None, Some(Value::String(eauth)), Some(Value::String(username)), password) => {
                Auth::Eauth {
                    eauth,
                    username,
                    password: match password {
                        Some(Value::String(p)) => p,
                        _ => String::new(),
                    },
                }
            }
            _ => {
                return Err(ApiError::Unauthorized(
                    "No authentication credentials given",
                ));
            }
        },
    };
    if low.contains_key("raw_shell") {
        return Err(ApiError::Unauthorized("Raw shell option not allowed."));
    }
    reserved_keys(client, &low)?;
    if !is_fun(low.get("fun")) {
        return Err(ApiError::BadLowstate(
            "a chunk needs 'fun' (a string, or a list for local clients)".into(),
        ));
    }
    if client.needs_target() && !is_target(low.get("tgt")) {
        return Err(ApiError::BadLowstate(
            "a local chunk needs 'tgt' (a string or a list)".into(),
        ));
    }
    if !client.needs_target() && !matches!(low.get("fun"), Some(Value::String(_))) {
        return Err(ApiError::BadLowstate("'fun' must be a string".into()));
    }
    Ok(Prepared {
        client,
        auth,
        low,
        acl: None,
    })
}

/// Keys of the master's request that saltgate sets itself (`cmd` routes it to a client, `user`
/// and `key` are the master-side identity): a chunk may not carry them, on any client. Salt's
/// decoder keeps the last of two equal keys, so a wheel chunk's `cmd` used to re-route the call.
const RESERVED_KEYS: &[&str] = &["cmd", "user", "key"];
/// Keys Salt's wheel client reads from the request to name the job's jid, event tag and user.
const WHEEL_RESERVED_KEYS: &[&str] = &["__jid__", "__tag__", "__user__"];

/// 400 for a chunk carrying a key saltgate sets in the master's request.
fn reserved_keys(client: Client, low: &Map<String, Value>) -> Result<(), ApiError> {
    let wheel = matches!(client, Client::Wheel | Client::WheelAsync);
    let found = RESERVED_KEYS
        .iter()
        .chain(if wheel { WHEEL_RESERVED_KEYS } else { &[] })
        .find(|k| low.contains_key(**k));
    match found {
        Some(key) => Err(ApiError::BadLowstate(format!(
            "'{key}' is set by saltgate in the master's request and cannot be given in a chunk"
        ))),
        None => Ok(()),
    }
}

/// A Salt token must be hex (as rest_cherrypy checks), which also keeps it a safe file name.
pub fn checked_token(token: &str) -> Result<String, ApiError> {
    let t = token.trim();
    if t.is_empty() || t.len() > 256 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Unauthorized("Invalid token"));
    }
    Ok(t.to_owned())
}

fn is_fun(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => {
            !items.is_empty() && items.iter().all(|i| matches!(i, Value::String(_)))
        }
        _ => false,
    }
}

fn is_target(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => items.iter().all(|i| matches!(i, Value::String(_))),
        _ => false,
    }
}

/// Runs prepared chunks in order; the first failure ends the run (see the module doc).
pub async fn execute(
    salt: &SaltClients,
    background: &Background,
    chunks: Vec<Prepared>,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.into_iter().enumerate() {
        let client = chunk.client.name();
        match run_chunk(salt, background, chunk, &mut out).await {
            Ok(()) => {}
            Err(Failure::Salt(e)) => {
                tracing::info!(chunk = index, client, error = %e, "Lowstate chunk failed");
                return Err(ApiError::Chunk {
                    index,
                    error: Box::new(ApiError::from(e)),
                });
            }
            Err(Failure::Refused(e)) => {
                return Err(ApiError::Chunk {
                    index,
                    error: Box::new(e),
                });
            }
        }
    }
    Ok(out)
}

/// Why a chunk failed at run time: the master's answer, or saltgate's own refusal.
#[derive(Debug)]
enum Failure {
    Salt(SaltError),
    Refused(ApiError),
}

impl From<SaltError> for Failure {
    fn from(e: SaltError) -> Self {
        Self::Salt(e)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::Refused(e)
    }
}

async fn run_chunk(
    salt: &SaltClients,
    background: &Background,
    chunk: Prepared,
    out: &mut Vec<Value>,
) -> Result<(), Failure> {
    let Prepared {
        client,
        auth,
        low,
        acl,
    } = chunk;
    let acl = acl.as_ref();
    match client {
        Client::Local => {
            let (req, opts) = publish_request(&low);
            guard(acl, &req)?;
            let salt = opts.clients(salt);
            let got = salt.local_sync(req, &auth, opts.timeout).await?;
            out.push(local_result(&got, opts.full_return));
        }
        Client::LocalAsync => {
            let (req, _) = publish_request(&low);
            guard(acl, &req)?;
            let published = salt.local_async(req, &auth).await?;
            out.push(match published.jid {
                Some(jid) if published.error.is_none() => {
                    json!({"jid": jid, "minions": published.minions})
                }
                _ => json!({}),
            });
        }
        Client::LocalSubset => {
            let (req, opts) = publish_request(&low);
            let n = low
                .get("subset")
                .or_else(|| low.get("sub"))
                .and_then(as_u64)
                .unwrap_or(3)
                .max(1);
            out.push(local_subset(&opts.clients(salt), req, &auth, acl, &opts, n).await?);
        }
        Client::LocalBatch => {
            let (req, opts) = publish_request(&low);
            let batch = low.get("batch").cloned().unwrap_or(json!("10%"));
            let wait = low
                .get("batch_wait")
                .and_then(as_f64)
                .map(|s| Duration::from_secs_f64(s.max(0.0)).min(MAX_BATCH_WAIT))
                .unwrap_or_default();
            let failhard = low.get("failhard").and_then(Value::as_bool) == Some(true);
            local_batch(
                &opts.clients(salt),
                req,
                &auth,
                acl,
                &opts,
                &batch,
                wait,
                failhard,
                out,
            )
            .await?;
        }
        Client::Runner => {
            let (fun, args, opts) = runner_low(low);
            let timeout = opts.timeout.unwrap_or(REST_TIMEOUT);
            let ev = salt.runner_sync(&fun, args, &auth, timeout).await?;
            out.push(if opts.full_return {
                json!({"data": to_json(&ev.data), "tag": ev.tag})
            } else {
                ev.get("return").map(to_json).unwrap_or(Value::Null)
            });
        }
        Client::RunnerAsync => {
            let (fun, args, _) = runner_low(low);
            let started = salt.runner_async(&fun, args, &auth).await?;
            out.push(json!({"tag": started.tag, "jid": started.jid}));
        }
        Client::Wheel => {
            let (fun, args) = wheel_args(low);
            let data = salt.wheel(&fun, args, &auth).await?;
            let tag = map_get(&data, "tag").map(to_json).unwrap_or(Value::Null);
            out.push(json!({"tag": tag, "data": to_json(&data)}));
        }
        Client::WheelAsync => {
            let (fun, args) = wheel_args(low);
            // The master runs wheel calls synchronously and picks the jid itself, so as in
            // rest_cherrypy the call runs after the answer and the jid given here is ours.
            let permit = Arc::clone(&background.0).try_acquire_owned().map_err(|_| {
                SaltError::Unavailable("too many wheel_async calls in flight".into())
            })?;
            let jid = new_jid();
            let salt = salt.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = salt.wheel(&fun, args, &auth).await {
                    tracing::warn!(fun = %fun, error = %e, "wheel_async call failed");
                }
            });
            out.push(json!({"tag": format!("salt/wheel/{jid}"), "jid": jid}));
        }
    }
    Ok(())
}

/// Per-chunk options of the local clients.
#[derive(Debug, Default)]
struct LocalOpts {
    timeout: Option<Duration>,
    gather_job_timeout: Option<Duration>,
    full_return: bool,
}

impl LocalOpts {
    fn clients(&self, salt: &SaltClients) -> SaltClients {
        let mut c = salt.clone();
        if let Some(g) = self.gather_job_timeout {
            c.gather_job_timeout = g;
        }
        c
    }
}

/// Keys of a local chunk that go to the master's publish `kwargs` as they are.
const PUBLISH_EXTRAS: &[&str] = &[
    "metadata",
    "ret_config",
    "ret_kwargs",
    "delimiter",
    "module_executors",
    "executor_opts",
];

fn publish_request(low: &Map<String, Value>) -> (PublishRequest, LocalOpts) {
    let tgt = low.get("tgt").map(from_json).unwrap_or(Mp::from("*"));
    let fun = low.get("fun").map(from_json).unwrap_or(Mp::Nil);
    let mut req = PublishRequest::new(tgt, fun);
    req.arg = match low.get("arg") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(from_json).collect(),
        Some(one) => vec![from_json(one)],
    };
    if let Some(Value::Object(kw)) = low.get("kwarg") {
        let mut m = vec![(Mp::from("__kwarg__"), Mp::Boolean(true))];
        m.extend(kw.iter().map(|(k, v)| (Mp::from(k.as_str()), from_json(v))));
        req.arg.push(Mp::Map(m));
    }
    if let Some(t) = low
        .get("tgt_type")
        .or_else(|| low.get("expr_form"))
        .and_then(Value::as_str)
    {
        req.tgt_type = t.to_owned();
    }
    if let Some(r) = low.get("ret").and_then(Value::as_str) {
        req.ret = r.to_owned();
    }
    if let Some(j) = low.get("jid").and_then(Value::as_str) {
        if !j.is_empty() && j.bytes().all(|b| b.is_ascii_digit()) {
            req.jid = j.to_owned();
        }
    }
    for key in PUBLISH_EXTRAS {
        if let Some(v) = low.get(*key) {
            req.extra.push(((*key).to_owned(), from_json(v)));
        }
    }
    let opts = LocalOpts {
        timeout: low
            .get("timeout")
            .and_then(as_f64)
            .filter(|s| *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0))),
        gather_job_timeout: low
            .get("gather_job_timeout")
            .and_then(as_f64)
            .filter(|s| *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3_600.0))),
        full_return: low.get("full_return").and_then(Value::as_bool) == Some(true),
    };
    (req, opts)
}

/// `{minion: return}`; targeted minions that did not return are `false`, as LocalClient.cmd.
fn local_result(got: &LocalReturns, full_return: bool) -> Value {
    let mut out = Map::new();
    if got.error.is_some() {
        return Value::Object(out);
    }
    for (mid, ev) in &got.returns {
        let ret = ev.get("return").map(to_json).unwrap_or(Value::Null);
        let v = if full_return {
            json!({
                "ret": ret,
                "retcode": ev.get("retcode").map(to_json).unwrap_or(json!(0)),
                "jid": ev.get("jid").map(to_json).unwrap_or(Value::Null),
            })
        } else {
            ret
        };
        out.insert(mid.clone(), v);
    }
    for mid in &got.missing {
        out.insert(mid.clone(), Value::Bool(false));
    }
    Value::Object(out)
}

/// Salt's `cmd_subset`: ask the target for `sys.list_functions`, keep the minions that have the
/// function, pick `n` of them at random, run the job on those.
async fn local_subset(
    salt: &SaltClients,
    req: PublishRequest,
    auth: &Auth,
    acl: Option<&AuthList>,
    opts: &LocalOpts,
    n: u64,
) -> Result<Value, Failure> {
    let Some(fun) = req.fun.as_str().map(str::to_owned) else {
        return Ok(json!({}));
    };
    let mut probe = PublishRequest::new(req.tgt.clone(), "sys.list_functions");
    probe.tgt_type = req.tgt_type.clone();
    probe.extra = req.extra.clone();
    let listed = salt.local_sync(probe, auth, opts.timeout).await?;
    let mut having: Vec<String> = listed
        .returns
        .iter()
        .filter(|(_, ev)| {
            ev.get("return")
                .and_then(Mp::as_array)
                .is_some_and(|fs| fs.iter().any(|f| f.as_str() == Some(fun.as_str())))
        })
        .map(|(mid, _)| mid.clone())
        .collect();
    having.shuffle(&mut rand::rng());
    having.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    if having.is_empty() {
        return Ok(json!({}));
    }
    let mut job = req;
    job.tgt = Mp::Array(having.iter().map(|m| Mp::from(m.as_str())).collect());
    job.tgt_type = "list".into();
    guard(acl, &job)?;
    let got = salt.local_sync(job, auth, opts.timeout).await?;
    Ok(local_result(&got, opts.full_return))
}

/// Salt's batch mode: find the minions that answer `test.ping`, then run the job on them in
/// batches, one after the other; one result entry per minion (as rest_cherrypy's generator).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the batch knobs are read from the chunk right above it"
)]
async fn local_batch(
    salt: &SaltClients,
    req: PublishRequest,
    auth: &Auth,
    acl: Option<&AuthList>,
    opts: &LocalOpts,
    batch: &Value,
    wait: Duration,
    failhard: bool,
    out: &mut Vec<Value>,
) -> Result<(), Failure> {
    let mut probe = PublishRequest::new(req.tgt.clone(), "test.ping");
    probe.tgt_type = req.tgt_type.clone();
    probe.extra = req.extra.clone();
    let pinged = salt.local_sync(probe, auth, opts.timeout).await?;
    let minions: Vec<String> = pinged.returns.keys().cloned().collect();
    let size = batch_size(batch, minions.len());
    for (i, group) in minions.chunks(size).enumerate() {
        if i > 0 && !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mut job = req.clone();
        job.jid = String::new();
        job.tgt = Mp::Array(group.iter().map(|m| Mp::from(m.as_str())).collect());
        job.tgt_type = "list".into();
        guard(acl, &job)?;
        let got = salt.local_sync(job, auth, opts.timeout).await?;
        let mut failed = false;
        for (mid, v) in local_result(&got, opts.full_return)
            .as_object()
            .into_iter()
            .flatten()
        {
            let retcode = got
                .returns
                .get(mid)
                .and_then(|ev| ev.get("retcode"))
                .and_then(Mp::as_i64)
                .unwrap_or(0);
            failed |= retcode != 0 || v == &Value::Bool(false);
            out.push(json!({ mid.clone(): v.clone() }));
        }
        if failhard && failed {
            break;
        }
    }
    Ok(())
}

/// `batch`: a count (`2`, `"2"`) or a percentage of the minions (`"10%"`), at least 1.
fn batch_size(batch: &Value, minions: usize) -> usize {
    let text = match batch {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    let size = if let Some(pct) = text.strip_suffix('%') {
        let pct: f64 = pct.trim().parse().unwrap_or(10.0);
        ((minions as f64) * pct / 100.0).ceil() as usize
    } else {
        text.parse::<usize>().unwrap_or(1)
    };
    size.max(1)
}

/// Salt's `parse_input`: `name=value` strings in `arg` become keyword arguments.
fn split_kwarg(s: &str) -> Option<(&str, &str)> {
    let (k, v) = s.split_once('=')?;
    if v.starts_with('=') || s.contains('\n') {
        return None;
    }
    let mut chars = k.chars();
    let first = chars.next()?;
    let ok_first = first.is_alphabetic() || first == '_';
    let ok_rest = chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (ok_first && ok_rest).then_some((k, v))
}

/// Runner arguments as RunnerClient's `_reformat_low` builds them: `arg` (with `k=v` split out),
/// `kwarg`, then every other key as a keyword. With positional arguments the master gets
/// `{arg, kwarg}`; without, the flat keywords, which the master matches to the function's
/// signature (dropping ones it does not take, as Salt's own client does).
fn runner_low(mut low: Map<String, Value>) -> (String, Mp, LocalOpts) {
    let fun = low
        .remove("fun")
        .and_then(|f| f.as_str().map(str::to_owned))
        .unwrap_or_default();
    let opts = LocalOpts {
        timeout: low
            .remove("timeout")
            .as_ref()
            .and_then(as_f64)
            .filter(|s| *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0))),
        gather_job_timeout: None,
        full_return: low.remove("full_return").and_then(|v| v.as_bool()) == Some(true),
    };
    let mut args = Vec::new();
    let mut kwargs = Map::new();
    match low.remove("arg") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item.as_str().and_then(split_kwarg) {
                    Some((k, v)) => {
                        kwargs.insert(k.to_owned(), Value::String(v.to_owned()));
                    }
                    None => args.push(item),
                }
            }
        }
        Some(one) => args.push(one),
    }
    if let Some(Value::Object(kw)) = low.remove("kwarg") {
        kwargs.extend(kw);
    }
    kwargs.extend(low);
    let low = if args.is_empty() {
        Value::Object(kwargs)
    } else {
        json!({"arg": args, "kwarg": kwargs})
    };
    (fun, from_json(&low), opts)
}

/// Wheel arguments are the chunk's top-level keys.
fn wheel_args(mut low: Map<String, Value>) -> (String, Vec<(String, Mp)>) {
    let fun = low
        .remove("fun")
        .and_then(|f| f.as_str().map(str::to_owned))
        .unwrap_or_default();
    for k in ["timeout", "full_return"] {
        low.remove(k);
    }
    let args = low.iter().map(|(k, v)| (k.clone(), from_json(v))).collect();
    (fun, args)
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Which lowstate route is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `POST /`: session token.
    Session,
    /// `POST /run`: credentials in each chunk.
    Run,
    /// `POST /minions`: session token, every chunk `local_async`, 202 with `_links`.
    Minions,
}

/// `POST /` and `POST /index`.
pub async fn root(
    State(app): State<AppState>,
    Extension(bg): Extension<Background>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&app, &bg, &headers, body, Mode::Session).await
}

/// `POST /run`.
pub async fn run(
    State(app): State<AppState>,
    Extension(bg): Extension<Background>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&app, &bg, &headers, body, Mode::Run).await
}

/// The whole lowstate request, rendered.
pub async fn handle(
    app: &AppState,
    background: &Background,
    headers: &HeaderMap,
    body: Body,
    mode: Mode,
) -> Response {
    let Some(format) = response_format(headers) else {
        return ApiError::NotAcceptable.render(Format::Json);
    };
    match respond(app, background, headers, body, mode).await {
        Ok((status, value)) => render_body(status, format, &value),
        Err(e) => e.render(format),
    }
}

async fn respond(
    app: &AppState,
    background: &Background,
    headers: &HeaderMap,
    body: Body,
    mode: Mode,
) -> Result<(StatusCode, Value), ApiError> {
    let creds = match mode {
        Mode::Run => Credentials::PerChunk,
        Mode::Session | Mode::Minions => Credentials::Session(session(headers)?),
    };
    let raw = read_capped(headers, body, app.config.api.max_request_body_size).await?;
    let chunks = shape(body::parse_async(headers, &raw).await?)?;
    let forced = (mode == Mode::Minions).then_some(Client::LocalAsync);
    let prepared = prepare(
        chunks,
        &creds,
        &app.config.master.netapi_enable_clients,
        forced,
    )?;
    let salt = master(app)?;
    let per_chunk = matches!(creds, Credentials::PerChunk);
    let session = match &creds {
        Credentials::Session(token) => Some(valid_token(app, salt, token).await?),
        // The master checks per-chunk credentials with the command: throttled like a login.
        Credentials::PerChunk => {
            app.tokens.admit()?;
            None
        }
    };
    let mut fresh = Vec::new();
    let results = authorize_and_execute(app, salt, background, prepared, session, &mut fresh).await;
    revoke(app, &fresh);
    let results = match results {
        Ok(r) => r,
        Err(Stage::Checks(e)) => return Err(e),
        Err(Stage::Run(e)) => {
            if per_chunk && e.status_code().0 == StatusCode::UNAUTHORIZED {
                app.tokens.refused();
            }
            return Err(e);
        }
    };
    if mode == Mode::Minions {
        let links: Vec<Value> = results
            .iter()
            .filter_map(|r| r.get("jid").and_then(Value::as_str))
            .map(|jid| json!({"href": format!("/jobs/{jid}")}))
            .collect();
        return Ok((
            StatusCode::ACCEPTED,
            json!({"return": results, "_links": {"jobs": links}}),
        ));
    }
    Ok((StatusCode::OK, json!({ "return": results })))
}

/// Where a request failed: in saltgate's checks (whose credential failures are already
/// counted), or when the chunks ran (the master refused the credentials it was sent).
enum Stage {
    Checks(ApiError),
    Run(ApiError),
}

async fn authorize_and_execute(
    app: &AppState,
    salt: &SaltClients,
    background: &Background,
    mut prepared: Vec<Prepared>,
    session: Option<Token>,
    fresh: &mut Vec<Token>,
) -> Result<Vec<Value>, Stage> {
    authorize_eauth(app, salt, &mut prepared, fresh)
        .await
        .map_err(Stage::Checks)?;
    authorize_tokens(app, salt, &mut prepared, session.as_ref())
        .await
        .map_err(Stage::Checks)?;
    execute(salt, background, prepared)
        .await
        .map_err(Stage::Run)
}

/// The session's Salt token from `X-Auth-Token` or the `session_id` cookie, checked for shape.
pub fn session(headers: &HeaderMap) -> Result<String, ApiError> {
    let token = session_token(headers).ok_or(ApiError::Unauthorized(
        "No permission -- see authorization schemes",
    ))?;
    checked_token(&token)
}

/// The master's clients, or 503 on the built-in bus.
pub fn master(app: &AppState) -> Result<&SaltClients, ApiError> {
    app.salt.as_ref().ok_or(ApiError::Unavailable(
        "No Salt master is attached: this saltgate runs on its built-in bus",
    ))
}

/// 401 unless the master knows the token and it has not expired.
pub async fn require_valid(
    app: &AppState,
    salt: &SaltClients,
    token: &str,
) -> Result<(), ApiError> {
    valid_token(app, salt, token).await.map(|_| ())
}

/// The token as the master knows it; 401 when unknown or expired.
pub async fn valid_token(
    app: &AppState,
    salt: &SaltClients,
    token: &str,
) -> Result<Token, ApiError> {
    app.tokens
        .validate(salt, token)
        .await?
        .ok_or(ApiError::Unauthorized(
            "No permission -- see authorization schemes",
        ))
}

// Compound commands: saltgate's own ACL check (see `security::acl` for why the master's is not
// enough). Checked before anything runs; eauth chunks after their credentials are.

/// Whether a chunk publishes a compound command (a `fun` list of two or more).
fn is_compound(p: &Prepared) -> bool {
    p.client.needs_target() && matches!(p.low.get("fun"), Some(Value::Array(f)) if f.len() >= 2)
}

/// Logs in, with the master's `mk_token`, the eauth credentials of every chunk with a compound
/// command, then checks the command against the new token's user, backend and groups as
/// [`authorize_tokens`] does; the chunk then runs with that token instead of the password.
///
/// Authentication comes first so that a wrong password is the same 401 whatever the ACL says
/// (no 401/403 oracle on the master's `external_auth`), and so that `<group>%` entries are
/// decidable (the token names the groups). The login is the throttled one of `/login`: a refusal
/// counts as a failure of the client's. The same credentials in several chunks log in once.
/// Each token made here is pushed to `fresh`, for [`revoke`] once the request is done.
/// Single-function chunks are left to the master (no extra round trip).
pub async fn authorize_eauth(
    app: &AppState,
    salt: &SaltClients,
    chunks: &mut [Prepared],
    fresh: &mut Vec<Token>,
) -> Result<(), ApiError> {
    let options = app.config.master.acl_options();
    let mut logins: Vec<(String, String, String, Token)> = Vec::new();
    for (index, chunk) in chunks.iter_mut().enumerate() {
        if !is_compound(chunk) {
            continue;
        }
        let Auth::Eauth {
            eauth,
            username,
            password,
        } = &chunk.auth
        else {
            continue;
        };
        let seen = logins
            .iter()
            .find(|(e, u, p, _)| e == eauth && u == username && p == password)
            .map(|(.., t)| t.clone());
        let token = match seen {
            Some(t) => t,
            None => {
                let t = match app.tokens.login(salt, eauth, username, password).await {
                    Ok(t) => t,
                    Err(AuthError::Salt(SaltError::AuthRefused(_) | SaltError::Master(_))) => {
                        tracing::info!(
                            chunk = index, user = %username, eauth = %eauth,
                            "Compound command: credentials refused by the Salt master"
                        );
                        // What a single function with a wrong password gets from the master.
                        return Err(in_chunk(
                            index,
                            SaltError::AuthRefused(String::new()).into(),
                        ));
                    }
                    Err(e) => return Err(in_chunk(index, e.into())),
                };
                fresh.push(t.clone());
                logins.push((eauth.clone(), username.clone(), password.clone(), t.clone()));
                t
            }
        };
        let caller = Caller::Token {
            eauth: &token.eauth,
            name: &token.name,
            groups: &token.groups,
        };
        let list = acl::auth_list(&app.config.master.external_auth, &options, &caller);
        check_chunk(&list, &chunk.low).map_err(|e| in_chunk(index, e))?;
        chunk.acl = Some(list);
        chunk.auth = Auth::Token(token.token.clone());
    }
    Ok(())
}

/// Revokes the tokens [`authorize_eauth`] made, once the request's chunks have run: forgotten by
/// saltgate and removed from the master's file token store (as `/logout` does; other token
/// stores keep them until they expire).
pub fn revoke(app: &AppState, fresh: &[Token]) {
    for t in fresh {
        app.tokens.forget(&t.token);
        super::session::remove_token(&app.config, &t.token);
    }
}

/// Checks the compound commands of chunks with a token against the token's user, backend and
/// groups (`session`: the request's token, already confirmed; other tokens are looked up).
pub async fn authorize_tokens(
    app: &AppState,
    salt: &SaltClients,
    chunks: &mut [Prepared],
    session: Option<&Token>,
) -> Result<(), ApiError> {
    let options = app.config.master.acl_options();
    for (index, chunk) in chunks.iter_mut().enumerate() {
        if !is_compound(chunk) {
            continue;
        }
        let Auth::Token(token) = &chunk.auth else {
            continue;
        };
        let known = match session {
            Some(t) if t.token == *token => t.clone(),
            _ => valid_token(app, salt, token)
                .await
                .map_err(|e| in_chunk(index, e))?,
        };
        let caller = Caller::Token {
            eauth: &known.eauth,
            name: &known.name,
            groups: &known.groups,
        };
        let list = acl::auth_list(&app.config.master.external_auth, &options, &caller);
        check_chunk(&list, &chunk.low).map_err(|e| in_chunk(index, e))?;
        chunk.acl = Some(list);
    }
    Ok(())
}

fn in_chunk(index: usize, error: ApiError) -> ApiError {
    ApiError::Chunk {
        index,
        error: Box::new(error),
    }
}

/// The chunk's job, as it would be published, against the auth list.
fn check_chunk(list: &AuthList, low: &Map<String, Value>) -> Result<(), ApiError> {
    let (req, _) = publish_request(low);
    check_publish(list, &req)
}

fn check_publish(list: &AuthList, req: &PublishRequest) -> Result<(), ApiError> {
    let job = acl::Publish {
        tgt: &req.tgt,
        tgt_type: &req.tgt_type,
        fun: &req.fun,
        arg: &req.arg,
    };
    list.check(&job).map_err(|refusal| {
        tracing::info!(
            fun = ?refusal.fun,
            index = refusal.index,
            undecided = refusal.undecided.is_some(),
            "Compound command refused by saltgate's ACL check"
        );
        ApiError::AclRefused(refusal.to_string())
    })
}

/// Before every publish of a chunk's own job: a compound command is published only against the
/// auth list that passed it (fail closed for a path that skipped the check).
fn guard(acl: Option<&AuthList>, req: &PublishRequest) -> Result<(), ApiError> {
    match (acl, &req.fun) {
        (Some(list), _) => check_publish(list, req),
        (None, Mp::Array(funs)) if funs.len() >= 2 => Err(ApiError::AclRefused(
            "a compound command was not checked against the caller's ACL; refused".into(),
        )),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Vec<String> {
        Client::ALL.iter().map(|(n, _)| (*n).to_owned()).collect()
    }

    #[track_caller]
    fn check(chunk: Value, creds: &Credentials, expected: Result<Client, &str>) {
        let got = prepare(vec![chunk], creds, &enabled(), None);
        match (got, expected) {
            (Ok(p), Ok(c)) => assert_eq!(p[0].client, c),
            (Err(e), Err(code)) => assert_eq!(e.status_code().1, code, "{e:?}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn chunks_are_checked_before_running() {
        let s = Credentials::Session("abcdef".into());
        let r = Credentials::PerChunk;
        check(
            json!({"client": "local", "tgt": "*", "fun": "test.ping"}),
            &s,
            Ok(Client::Local),
        );
        check(
            json!({"client": "runner", "fun": "x.y", "token": "ab12"}),
            &r,
            Ok(Client::Runner),
        );
        check(
            json!({"client": "wheel", "fun": "key.list_all", "eauth": "pam", "username": "u", "password": "p"}),
            &r,
            Ok(Client::Wheel),
        );
        check(
            json!({"client": "runner", "fun": "x.y"}),
            &r,
            Err("unauthorized"),
        );
        check(
            json!({"client": "runner", "fun": "x.y", "token": "../../etc"}),
            &r,
            Err("unauthorized"),
        );
        check(
            json!({"client": "runner", "fun": "x.y", "token": 12}),
            &r,
            Err("unauthorized"),
        );
        check(
            json!({"client": "bogus", "fun": "x"}),
            &s,
            Err("bad_lowstate"),
        );
        check(json!({"fun": "x"}), &s, Err("bad_lowstate"));
        check(
            json!({"client": "ssh", "tgt": "*", "fun": "x"}),
            &s,
            Err("client_disabled"),
        );
        check(
            json!({"client": "local", "fun": "test.ping"}),
            &s,
            Err("bad_lowstate"),
        );
        check(
            json!({"client": "local", "tgt": "*", "fun": "cmd.run", "raw_shell": true}),
            &s,
            Err("unauthorized"),
        );
        check(json!("text"), &s, Err("bad_lowstate"));
        let only_local = vec!["local".to_owned()];
        let e = prepare(
            vec![
                json!({"client": "local", "tgt": "*", "fun": "test.ping"}),
                json!({"client": "runner", "fun": "x"}),
            ],
            &s,
            &only_local,
            None,
        )
        .unwrap_err();
        assert_eq!(e.status_code().1, "client_disabled");
        assert!(
            e.message()
                .starts_with("chunk 1: Client disabled: 'runner'")
        );
    }

    #[test]
    fn shaping_follows_rest_cherrypy() {
        assert_eq!(shape(json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
        assert_eq!(shape(json!([])).unwrap(), Vec::<Value>::new());
        for bad in [json!({}), json!(null), json!("x"), json!(42)] {
            assert_eq!(shape(bad).unwrap_err().status_code().1, "bad_lowstate");
        }
    }

    #[test]
    fn local_chunks_become_publishes() {
        let low = json!({"tgt": ["a", "b"], "tgt_type": "list", "fun": "test.arg",
            "arg": "one", "kwarg": {"x": 1}, "timeout": "7", "jid": "../x", "metadata": {"m": 1}});
        let (req, opts) = publish_request(low.as_object().unwrap());
        assert_eq!(req.tgt_type, "list");
        assert_eq!(req.arg.len(), 2);
        assert_eq!(to_json(&req.arg[1]), json!({"__kwarg__": true, "x": 1}));
        assert!(req.jid.is_empty());
        assert_eq!(opts.timeout, Some(Duration::from_secs(7)));
        assert_eq!(req.extra[0].0, "metadata");
    }

    #[test]
    fn runner_args_follow_reformat_low() {
        let low = json!({"fun": "test.arg", "arg": ["x", "y=z"], "kwarg": {"a": 1}, "b": 2});
        let (fun, args, _) = runner_low(low.as_object().unwrap().clone());
        assert_eq!(fun, "test.arg");
        assert_eq!(
            to_json(&args),
            json!({"arg": ["x"], "kwarg": {"y": "z", "a": 1, "b": 2}})
        );
        let low = json!({"fun": "jobs.lookup_jid", "jid": "1", "timeout": 3});
        let (_, args, opts) = runner_low(low.as_object().unwrap().clone());
        assert_eq!(to_json(&args), json!({"jid": "1"}));
        assert_eq!(opts.timeout, Some(Duration::from_secs(3)));
        assert_eq!(split_kwarg("a==b"), None);
        assert_eq!(split_kwarg("1a=b"), None);
        assert_eq!(split_kwarg("a.b-c=d=e"), Some(("a.b-c", "d=e")));
    }

    #[test]
    fn batch_sizes() {
        assert_eq!(batch_size(&json!("10%"), 5), 1);
        assert_eq!(batch_size(&json!("50%"), 5), 3);
        assert_eq!(batch_size(&json!(2), 5), 2);
        assert_eq!(batch_size(&json!("2"), 5), 2);
        assert_eq!(batch_size(&json!("junk"), 5), 1);
    }
}
