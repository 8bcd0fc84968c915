//! [`MasterChannel`]: clear-channel requests to the master's request server.
//!
//! Commands: `ping`, `mk_token`, `get_token`, `publish`, `runner`, `wheel`. Every call has a
//! bounded timeout and returns a typed [`SaltError`]; see [`crate::salt::wire::zmq`] for the
//! socket rules that keep a dead master from queueing requests that would run later.

use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;

use crate::salt::error::SaltError;
use crate::salt::event::{map_get, text_like};
use crate::salt::wire::payload::{check_reply, clear_request, decode_reply, error_from, map};
use crate::salt::wire::zmq::ReqPool;

/// How a request proves who sends it.
#[derive(Clone)]
pub enum Auth {
    /// A Salt eauth token (from `mk_token`).
    Token(String),
    /// External auth credentials, checked by the master against `external_auth`.
    Eauth {
        /// The eauth backend, e.g. `pam`, `file`, `ldap`.
        eauth: String,
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Auth::Token([redacted])"),
            Self::Eauth {
                eauth, username, ..
            } => f
                .debug_struct("Auth::Eauth")
                .field("eauth", eauth)
                .field("username", username)
                .field("password", &"[redacted]")
                .finish(),
        }
    }
}

impl Auth {
    /// The auth fields as load entries.
    fn fields(&self) -> Vec<(String, Value)> {
        match self {
            Self::Token(t) => vec![("token".into(), Value::from(t.as_str()))],
            Self::Eauth {
                eauth,
                username,
                password,
            } => vec![
                ("eauth".into(), Value::from(eauth.as_str())),
                ("username".into(), Value::from(username.as_str())),
                ("password".into(), Value::from(password.as_str())),
            ],
        }
    }
}

/// A Salt eauth token as the master keeps it.
#[derive(Clone, PartialEq)]
pub struct Token {
    /// The token string.
    pub token: String,
    /// The user it belongs to.
    pub name: String,
    /// The eauth backend that issued it.
    pub eauth: String,
    /// Issue time, unix seconds.
    pub start: f64,
    /// Expiry, unix seconds.
    pub expire: f64,
    /// The user's groups, when the eauth backend reports them (`pam` does, `file` does not).
    pub groups: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("token", &"[redacted]")
            .field("name", &self.name)
            .field("eauth", &self.eauth)
            .field("start", &self.start)
            .field("expire", &self.expire)
            .field("groups", &self.groups)
            .finish()
    }
}

impl Token {
    /// Reads a token from a `mk_token` / `get_token` reply; `None` without a `token` string.
    pub fn from_value(v: &Value) -> Option<Self> {
        let num =
            |k| map_get(v, k).and_then(|x| x.as_f64().or_else(|| x.as_i64().map(|i| i as f64)));
        Some(Self {
            token: map_get(v, "token").and_then(text_like)?,
            name: map_get(v, "name").and_then(text_like).unwrap_or_default(),
            eauth: map_get(v, "eauth").and_then(text_like).unwrap_or_default(),
            start: num("start").unwrap_or_default(),
            expire: num("expire").unwrap_or_default(),
            groups: match map_get(v, "groups") {
                Some(Value::Array(items)) => items.iter().filter_map(text_like).collect(),
                _ => Vec::new(),
            },
        })
    }
}

/// A job to publish to minions.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The target: a string, or a list for `tgt_type: list`.
    pub tgt: Value,
    /// The function, or a list of functions for a multi-function job.
    pub fun: Value,
    /// Positional arguments; keyword arguments go in as a map holding `__kwarg__: true`.
    pub arg: Vec<Value>,
    /// `glob`, `list`, `pcre`, `grain`, `compound`, ...
    pub tgt_type: String,
    /// Returner name, or empty.
    pub ret: String,
    /// A client-chosen jid (20 digits), or empty for the master to choose.
    pub jid: String,
    /// Extra `kwargs` entries (`delimiter`, `metadata`, `ret_config`, ...).
    pub extra: Vec<(String, Value)>,
}

impl PublishRequest {
    /// A job with glob targeting and no arguments.
    pub fn new(tgt: impl Into<Value>, fun: impl Into<Value>) -> Self {
        Self {
            tgt: tgt.into(),
            fun: fun.into(),
            arg: Vec::new(),
            tgt_type: "glob".into(),
            ret: String::new(),
            jid: String::new(),
            extra: Vec::new(),
        }
    }
}

/// The master's answer to a publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The job id; `None` when no minion matched.
    pub jid: Option<String>,
    /// Minions expected to run the job.
    pub minions: Vec<String>,
    /// Minions the master knows are not connected.
    pub missing: Vec<String>,
    /// The master's explanation when nothing was published.
    pub error: Option<String>,
}

/// The master's answer to a runner call: the job runs in the background.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerStarted {
    /// `salt/run/<jid>`.
    pub tag: String,
    /// The runner job id.
    pub jid: String,
}

/// Per-command timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `ping`, `mk_token`, `get_token`.
    pub auth: Duration,
    /// `publish` (Salt's `publish_timeout` is 30 s).
    pub publish: Duration,
    /// `runner` (the master only starts it).
    pub runner: Duration,
    /// `wheel` (synchronous, may be slow).
    pub wheel: Duration,
    /// How long a send may wait for a connection to the master.
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            auth: Duration::from_secs(10),
            publish: Duration::from_secs(30),
            runner: Duration::from_secs(10),
            wheel: Duration::from_secs(60),
            connect: Duration::from_secs(2),
        }
    }
}

/// The clear request channel to one master.
#[derive(Debug, Clone)]
pub struct MasterChannel {
    pool: Arc<ReqPool>,
    timeouts: Timeouts,
}

impl MasterChannel {
    /// A channel to `endpoint` (`tcp://<interface>:<ret_port>`) with at most `pool_size` requests
    /// in flight.
    pub fn new(endpoint: impl Into<String>, pool_size: usize, timeouts: Timeouts) -> Self {
        Self {
            pool: Arc::new(ReqPool::new(endpoint, pool_size, timeouts.connect)),
            timeouts,
        }
    }

    /// The request server's endpoint.
    pub fn endpoint(&self) -> &str {
        self.pool.endpoint()
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    async fn call(&self, load: Value, timeout: Duration) -> Result<Value, SaltError> {
        let reply = self.pool.request(clear_request(load)?, timeout).await?;
        decode_reply(&reply)
    }

    /// Liveness: the master echoes the load. Needs no credentials and does no work.
    pub async fn ping(&self) -> Result<(), SaltError> {
        let reply = self
            .call(map([("cmd", Value::from("ping"))]), self.timeouts.auth)
            .await?;
        match map_get(&reply, "cmd").and_then(text_like).as_deref() {
            Some("ping") => Ok(()),
            _ => Err(SaltError::Protocol("ping was not echoed".into())),
        }
    }

    /// Authenticates through the master's eauth and returns a new token.
    pub async fn mk_token(
        &self,
        eauth: &str,
        username: &str,
        password: &str,
    ) -> Result<Token, SaltError> {
        let load = map([
            ("cmd", Value::from("mk_token")),
            ("eauth", Value::from(eauth)),
            ("username", Value::from(username)),
            ("password", Value::from(password)),
        ]);
        let reply = self.call(load, self.timeouts.auth).await?;
        if text_like(&reply).is_some_and(|s| s.is_empty()) {
            return Err(SaltError::AuthRefused("bad credentials".into()));
        }
        let reply = check_reply(reply)?;
        Token::from_value(&reply)
            .ok_or_else(|| SaltError::Protocol("mk_token reply without a token".into()))
    }

    /// Looks a token up on the master; `None` when it is unknown or expired.
    pub async fn get_token(&self, token: &str) -> Result<Option<Token>, SaltError> {
        let load = map([
            ("cmd", Value::from("get_token")),
            ("token", Value::from(token)),
        ]);
        let reply = check_reply(self.call(load, self.timeouts.auth).await?)?;
        match &reply {
            Value::Map(m) if m.is_empty() => Ok(None),
            Value::Boolean(false) => Ok(None),
            Value::Map(_) => Ok(Token::from_value(&reply)),
            _ => Err(SaltError::Protocol("unexpected get_token reply".into())),
        }
    }

    /// Publishes a job to minions.
    pub async fn publish(&self, req: &PublishRequest, auth: &Auth) -> Result<Published, SaltError> {
        let mut kwargs: Vec<(String, Value)> = auth.fields();
        kwargs.extend(req.extra.iter().cloned());
        let load = map([
            ("cmd", Value::from("publish")),
            ("tgt", req.tgt.clone()),
            ("fun", req.fun.clone()),
            ("arg", Value::Array(req.arg.clone())),
            ("tgt_type", Value::from(req.tgt_type.as_str())),
            ("ret", Value::from(req.ret.as_str())),
            ("jid", Value::from(req.jid.as_str())),
            ("user", Value::from("saltgate")),
            ("kwargs", map(kwargs)),
        ]);
        let reply = check_reply(self.call(load, self.timeouts.publish).await?)?;
        let load = map_get(&reply, "load").unwrap_or(&reply);
        let list = |k| -> Vec<String> {
            map_get(load, k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(text_like).collect())
                .unwrap_or_default()
        };
        Ok(Published {
            jid: map_get(load, "jid").and_then(text_like),
            minions: list("minions"),
            missing: list("missing"),
            error: map_get(load, "error").map(|e| error_from(e).to_string()),
        })
    }

    /// Starts a runner function. `low` holds its arguments: `arg` and `kwarg`, or named keys.
    pub async fn runner(
        &self,
        fun: &str,
        low: Value,
        auth: &Auth,
    ) -> Result<RunnerStarted, SaltError> {
        let mut load = vec![
            ("cmd".to_owned(), Value::from("runner")),
            ("fun".to_owned(), Value::from(fun)),
            ("kwarg".to_owned(), low),
        ];
        load.extend(auth.fields());
        let reply = check_reply(self.call(map(load), self.timeouts.runner).await?)?;
        let jid = map_get(&reply, "jid").and_then(text_like);
        let tag = map_get(&reply, "tag").and_then(text_like);
        match (tag, jid) {
            (Some(tag), Some(jid)) => Ok(RunnerStarted { tag, jid }),
            _ => Err(SaltError::Protocol(
                "runner reply without tag and jid".into(),
            )),
        }
    }

    /// Runs a wheel function synchronously and returns its `data` map (`return`, `success`,
    /// `jid`, `tag`, `user`, ...). `args` are flat keyword arguments, or `arg` + `kwarg` together.
    pub async fn wheel(
        &self,
        fun: &str,
        args: Vec<(String, Value)>,
        auth: &Auth,
    ) -> Result<Value, SaltError> {
        // The arguments first: the master keeps the last of two equal keys, so the routing and
        // credentials below win even if an argument shares their name (callers refuse those).
        let mut load = args;
        load.push(("cmd".to_owned(), Value::from("wheel")));
        load.push(("fun".to_owned(), Value::from(fun)));
        load.extend(auth.fields());
        let reply = check_reply(self.call(map(load), self.timeouts.wheel).await?)?;
        map_get(&reply, "data")
            .cloned()
            .ok_or_else(|| SaltError::Protocol("wheel reply without data".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: Vec<(&str, Value)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn token_reply_keeps_groups_when_the_backend_gives_them() {
        let reply = m(vec![
            ("token", Value::from("abc")),
            ("name", Value::from("alice")),
            ("eauth", Value::from("pam")),
            ("start", Value::from(1.5)),
            ("expire", Value::from(43_201)),
            (
                "groups",
                Value::Array(vec![Value::from("ops"), Value::from(7), Value::from("web")]),
            ),
        ]);
        let t = Token::from_value(&reply).expect("token");
        assert_eq!(t.groups, ["ops", "web"], "non-text entries are skipped");
        assert_eq!(t.expire, 43_201.0);
        assert!(!format!("{t:?}").contains("abc"), "the token is redacted");
        let plain = m(vec![
            ("token", Value::from("abc")),
            ("name", Value::from("bob")),
        ]);
        assert!(Token::from_value(&plain).expect("token").groups.is_empty());
        assert!(Token::from_value(&Value::from("")).is_none());
    }
}
