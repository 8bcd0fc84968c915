//! Salt's netapi clients as rest_cherrypy drives them: a lowstate's chunks checked before any
//! runs ([`prepare`]), compound commands checked against the caller's ACL ([`acl`]), then run in
//! order with the master's clients ([`run::execute`]). Shared by the lowstate routes and the
//! resource views; the order of checks and the differences from rest_cherrypy are in
//! [`super::lowstate`]. What a chunk's arguments mean to Salt (the publish, the runner's `low`,
//! batch and subset) is [`crate::salt::client`]'s.

pub mod acl;
pub mod run;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::auth::Caller;
use super::error::ApiError;
use super::state::App;
use super::tokens::checked_token;
use crate::salt::SaltClients;
use crate::salt::channel::{Auth, Token};
use crate::security::acl::AuthList;

pub use run::execute;

/// How long a `runner` chunk waits for its return without a `timeout` (Salt's `rest_timeout`).
pub const REST_TIMEOUT: Duration = Duration::from_secs(300);
/// `wheel_async` calls running in the background at once; more are refused with 503.
pub const MAX_BACKGROUND: usize = 64;

/// The bound on background (`wheel_async`) calls, shared by the routes (a part of the
/// router's state).
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

    /// Whether the client is listed in `netapi_enable_clients` (Salt serves none by default).
    pub fn enabled_in(self, enabled: &[String]) -> bool {
        enabled.iter().any(|e| e == self.name())
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// The client's name in a chunk.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }

    /// Whether the client publishes to minions (and needs `tgt`).
    pub fn needs_target(self) -> bool {
        matches!(
            self,
            Self::Local | Self::LocalAsync | Self::LocalBatch | Self::LocalSubset
        )
    }
}

/// How a dialect writes a client's results where the salt-api modules differ.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shapes {
    /// `local` when nothing was published (no minion matched): this sentence instead of `{}`
    /// (rest_tornado's).
    pub local_unmatched: Option<&'static str>,
    /// `local`: targeted minions that did not return are left out (rest_tornado) instead of
    /// answered `false` (rest_cherrypy, `LocalClient.cmd`).
    pub local_omits_missing: bool,
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
    /// [`acl::authorize_eauth`]); every publish of the chunk's job is checked against it again.
    pub acl: Option<AuthList>,
}

/// Runs a parsed lowstate: shaped ([`shape`]), every chunk checked ([`prepare`]), then
/// authorized and run in order; the results in chunk order. With a `caller` its session token
/// runs every chunk; without one each chunk's own credentials do (throttled like a login: a
/// client over its failure budget is refused before the master is asked, and a refusal by the
/// master counts against it). `forced` replaces every chunk's client (`POST /minions`).
/// Shared by every dialect that runs lowstates (each with its [`Shapes`]); the order of checks
/// is in [`super::lowstate`].
pub async fn run_lowstate(
    app: &App,
    background: &Background,
    caller: Option<&Caller>,
    lowstate: Value,
    forced: Option<Client>,
    shapes: Shapes,
) -> Result<Vec<Value>, ApiError> {
    let creds = match caller {
        None => Credentials::PerChunk,
        Some(caller) => Credentials::Session(caller.token().to_owned()),
    };
    let chunks = shape(lowstate)?;
    let prepared = prepare(
        chunks,
        &creds,
        &app.config.master.netapi_enable_clients,
        forced,
    )?;
    let salt = app.master()?;
    let session = match caller {
        Some(caller) => Some(caller.confirm(salt).await?),
        // The master checks per-chunk credentials with the command: throttled like a login.
        None => {
            app.tokens.admit().await?;
            None
        }
    };
    let mut fresh = Vec::new();
    let run = Run {
        salt,
        background,
        shapes,
    };
    let results = authorize_and_execute(app, &run, prepared, session, &mut fresh).await;
    acl::revoke(app, &fresh);
    match results {
        Ok(r) => Ok(r),
        Err(Stage::Checks(e)) => Err(e),
        Err(Stage::Run(e)) => {
            if caller.is_none() && e.status_code().0 == http::StatusCode::UNAUTHORIZED {
                app.tokens.refused().await;
            }
            Err(e)
        }
    }
}

/// Where a request failed: in saltgate's checks (whose credential failures are already
/// counted), or when the chunks ran (the master refused the credentials it was sent).
enum Stage {
    Checks(ApiError),
    Run(ApiError),
}

/// What running chunks needs: the master's clients, the background bound and the dialect's
/// shapes.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The master's clients.
    pub salt: &'a SaltClients,
    /// The bound on background calls.
    pub background: &'a Background,
    /// How results are written.
    pub shapes: Shapes,
}

async fn authorize_and_execute(
    app: &App,
    run: &Run<'_>,
    mut prepared: Vec<Prepared>,
    session: Option<Token>,
    fresh: &mut Vec<Token>,
) -> Result<Vec<Value>, Stage> {
    acl::authorize_eauth(app, run.salt, &mut prepared, fresh)
        .await
        .map_err(Stage::Checks)?;
    acl::authorize_tokens(app, run.salt, &mut prepared, session.as_ref())
        .await
        .map_err(Stage::Checks)?;
    execute(run, prepared).await.map_err(Stage::Run)
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
    if !client.enabled_in(enabled) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
