//! The configuration as read: serde mirrors of the master config's keys that saltgate uses,
//! salt-api's `rest_cherrypy:`, `rest_tornado:` and `rest_wsgi:` blocks and saltgate's own
//! `saltgate:` block.
//!
//! Values that parse on their own are typed here, as they are read (addresses, enums,
//! networks, numbers), so serde refuses a wrong one with its key path. What needs several keys,
//! a file or the environment (TLS pairs, secrets, verifiers) is checked when
//! [`super::Config::load`] turns a [`RawConfig`] into a [`super::Config`].
//!
//! Strictness follows ownership. The master config belongs to Salt: keys saltgate does not use
//! are none of its business. `rest_cherrypy:` belongs to salt-api: saltgate reads the keys it
//! knows, accepts the others as salt-api does, and reports them ([`RawConfig::unread`]) so that
//! `check-config` can say which ones it does not act on. `saltgate:` and its hook rules are
//! saltgate's own: every unknown key is an error, per verifier scheme too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use super::error::{ConfigError, at_key, parse_at};
use super::hooks::RawHook;
use super::master::MasterSettings;

/// A master config as read, before anything is checked across keys.
#[derive(Debug, Clone)]
pub struct RawConfig {
    /// The master's own keys.
    pub master: MasterSettings,
    /// The `rest_cherrypy:` block.
    pub rest_cherrypy: RestCherrypy,
    /// The `saltgate:` block (its rules are read into `hooks`).
    pub saltgate: SaltgateSettings,
    /// `saltgate.hooks`, as written.
    pub hooks: Vec<RawHook>,
    /// Keys of the `rest_cherrypy:` block saltgate does not read (`thread_pool`, a typo).
    pub unread: Vec<String>,
    /// Whether the config has a `rest_cherrypy:` block (without one, and with another
    /// dialect's block, saltgate serves only that dialect).
    pub has_rest_cherrypy: bool,
    /// The `rest_wsgi:` block, when there is one.
    pub rest_wsgi: Option<RestWsgi>,
    /// Keys of the `rest_wsgi:` block saltgate does not read.
    pub unread_wsgi: Vec<String>,
    /// The `rest_tornado:` block, when there is one.
    pub rest_tornado: Option<RestTornado>,
    /// Keys of the `rest_tornado:` block saltgate does not read.
    pub unread_tornado: Vec<String>,
}

impl RawConfig {
    /// Reads the merged master config document.
    pub fn parse(doc: &serde_yaml::Mapping) -> Result<Self, ConfigError> {
        let master = parse_at(serde_yaml::Value::Mapping(doc.clone()), None)?;
        let mut unread = Vec::new();
        let rest_cherrypy = match block(doc, "rest_cherrypy") {
            None => RestCherrypy::default(),
            Some(value) => {
                let mut note = |path: serde_ignored::Path<'_>| unread.push(path.to_string());
                let de = serde_ignored::Deserializer::new(value, &mut note);
                at_key(serde_path_to_error::deserialize(de), Some("rest_cherrypy"))?
            }
        };
        let mut unread_wsgi = Vec::new();
        let rest_wsgi = match block(doc, "rest_wsgi") {
            None => None,
            Some(value) => {
                let mut note = |path: serde_ignored::Path<'_>| unread_wsgi.push(path.to_string());
                let de = serde_ignored::Deserializer::new(value, &mut note);
                Some(at_key(
                    serde_path_to_error::deserialize(de),
                    Some("rest_wsgi"),
                )?)
            }
        };
        let mut unread_tornado = Vec::new();
        let rest_tornado = match block(doc, "rest_tornado") {
            None => None,
            Some(value) => {
                let mut note =
                    |path: serde_ignored::Path<'_>| unread_tornado.push(path.to_string());
                let de = serde_ignored::Deserializer::new(value, &mut note);
                Some(at_key(
                    serde_path_to_error::deserialize(de),
                    Some("rest_tornado"),
                )?)
            }
        };
        let (saltgate, hooks) = match block(doc, "saltgate") {
            None => (SaltgateSettings::default(), Vec::new()),
            Some(value) => {
                let settings = parse_at(value.clone(), Some("saltgate"))?;
                let hooks = match value.get("hooks") {
                    None | Some(serde_yaml::Value::Null) => Vec::new(),
                    Some(list) => parse_at(list.clone(), Some("saltgate.hooks")).map_err(|e| {
                        if e.key().is_some_and(|k| k.ends_with(".verify")) {
                            e.with_note(
                                "verify takes one scheme and its settings, such as \
                                 {github: {secret_file: /etc/saltgate/github.secret}}",
                            )
                        } else {
                            e
                        }
                    })?,
                };
                (settings, hooks)
            }
        };
        Ok(Self {
            master,
            rest_cherrypy,
            saltgate,
            hooks,
            unread,
            has_rest_cherrypy: block(doc, "rest_cherrypy").is_some(),
            rest_wsgi,
            unread_wsgi,
            rest_tornado,
            unread_tornado,
        })
    }
}

/// salt-api's `rest_cherrypy:` keys that saltgate does not read (3006 to 3008), each with what
/// an operator should know when the key is set, or `None` when it only tunes CherryPy itself.
pub const SALT_API_ONLY_KEYS: &[(&str, Option<&str>)] = &[
    (
        "api_acl",
        Some(
            "not enforced: /login and /token accept whoever the master's eauth accepts, from \
             any address; restrict who reaches the port instead",
        ),
    ),
    (
        "authorized_ips",
        Some(
            "not enforced (salt-api compares it with a header the client sends); restrict who \
             reaches the port, and use allow_from on hook rules",
        ),
    ),
    (
        "enable_sessions",
        Some("not read: /login, /logout, /minions and /jobs are always served"),
    ),
    (
        "ssl_chain",
        Some("not read: put the intermediate certificates after the certificate in ssl_crt"),
    ),
    ("favicon", Some("not read: /favicon.ico is not served")),
    (
        "log_access_file",
        Some("not written: saltgate logs to standard output (RUST_LOG filters it)"),
    ),
    (
        "log_error_file",
        Some("not written: saltgate logs to standard output (RUST_LOG filters it)"),
    ),
    ("debug", None),
    ("thread_pool", None),
    ("queue_size", None),
    ("socket_queue_size", None),
    ("expire_responses", None),
];

/// A top-level block; absent and `~` read as empty.
fn block(doc: &serde_yaml::Mapping, name: &str) -> Option<serde_yaml::Value> {
    doc.get(name).filter(|v| !v.is_null()).cloned()
}

/// `rest_cherrypy.host`: an IP address, or `localhost` (bound as 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenHost {
    /// An address.
    Ip(IpAddr),
    /// `localhost`.
    Localhost,
}

impl ListenHost {
    /// The address to bind.
    pub fn ip(self) -> IpAddr {
        match self {
            Self::Ip(ip) => ip,
            Self::Localhost => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

impl From<IpAddr> for ListenHost {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

impl FromStr for ListenHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "localhost" {
            return Ok(Self::Localhost);
        }
        s.parse().map(Self::Ip).map_err(|_| {
            format!(
                "{s:?} is not an IP address or localhost (saltgate binds an address, not a name)"
            )
        })
    }
}

impl fmt::Display for ListenHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Localhost => f.write_str("localhost"),
        }
    }
}

impl<'de> Deserialize<'de> for ListenHost {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        String::deserialize(de)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// salt-api's `rest_cherrypy:` block, the keys saltgate reads. Other keys are accepted, as
/// salt-api accepts them (it has many that only concern CherryPy), and reported by
/// [`RawConfig::unread`]; the keys read must have the right type.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RestCherrypy {
    /// The port to listen on.
    pub port: u16,
    /// The address to listen on: an IP address or `localhost`.
    pub host: ListenHost,
    /// TLS certificate (PEM).
    pub ssl_crt: Option<PathBuf>,
    /// TLS private key (PEM).
    pub ssl_key: Option<PathBuf>,
    /// Serve plain HTTP.
    pub disable_ssl: bool,
    /// Accept hooks without a Salt token.
    pub webhook_disable_auth: bool,
    /// The URL prefix of hooks.
    pub webhook_url: String,
    /// The largest request body accepted, in bytes.
    pub max_request_body_size: u64,
    /// Serve `/stats`.
    pub collect_stats: bool,
    /// Serve `/stats` without a token.
    pub stats_disable_auth: bool,
    /// A prefix for every route.
    pub root_prefix: String,
    /// A directory of static files to serve (rest_cherrypy's `static`).
    #[serde(rename = "static")]
    pub static_dir: Option<PathBuf>,
    /// The URL the static files are served under.
    pub static_path: String,
    /// An HTML file served at `app_path` and below (rest_cherrypy's `app`).
    pub app: Option<PathBuf>,
    /// The URL of the app page.
    pub app_path: String,
    /// Origins allowed to call the API from a browser (rest_tornado's key): `"*"`, one origin,
    /// or a list. Unset: no CORS headers at all (rest_cherrypy reflects any origin instead).
    pub cors_origin: Option<CorsOrigin>,
}

/// `cors_origin`: one origin (or `*`) or a list of them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CorsOrigin {
    /// `"*"` or one origin.
    One(String),
    /// Several origins.
    Many(Vec<String>),
}

impl CorsOrigin {
    /// The origins as a list.
    pub fn origins(&self) -> Vec<&str> {
        match self {
            Self::One(o) => vec![o.as_str()],
            Self::Many(os) => os.iter().map(String::as_str).collect(),
        }
    }
}

impl Default for RestCherrypy {
    fn default() -> Self {
        Self {
            port: 8000,
            host: ListenHost::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ssl_crt: None,
            ssl_key: None,
            disable_ssl: false,
            webhook_disable_auth: false,
            webhook_url: "/hook".into(),
            max_request_body_size: 1_048_576,
            collect_stats: false,
            stats_disable_auth: false,
            root_prefix: "/".into(),
            static_dir: None,
            static_path: "/static".into(),
            app: None,
            app_path: "/app".into(),
            cors_origin: None,
        }
    }
}

/// salt-api's `rest_wsgi:` block. salt-api reads one key, `port` (it loads rest_wsgi only when
/// `port` is set), and binds `localhost`. saltgate adds the keys a listener of its own needs:
/// `host` (default `localhost`, as rest_wsgi), the TLS pair (rest_wsgi never served TLS) and the
/// body cap. Other keys are accepted and reported, as in `rest_cherrypy:`.
#[derive(Debug, Clone, Deserialize)]
pub struct RestWsgi {
    /// The port to listen on (required, as salt-api requires it).
    pub port: u16,
    /// The address to listen on (saltgate's key; rest_wsgi binds `localhost`).
    #[serde(default = "localhost")]
    pub host: ListenHost,
    /// TLS certificate (PEM; saltgate's key).
    #[serde(default)]
    pub ssl_crt: Option<PathBuf>,
    /// TLS private key (PEM; saltgate's key).
    #[serde(default)]
    pub ssl_key: Option<PathBuf>,
    /// Serve plain HTTP even on a non-loopback `host` (saltgate's key).
    #[serde(default)]
    pub disable_ssl: bool,
    /// The largest request body accepted, in bytes (saltgate's key; rest_wsgi has no cap).
    #[serde(default = "default_body_size")]
    pub max_request_body_size: u64,
}

/// salt-api's `rest_tornado:` block. salt-api loads rest_tornado only when `port` is set, binds
/// `address` (every interface when unset) with `backlog`, and refuses to start without
/// `ssl_crt` unless `disable_ssl` is set. saltgate reads the same keys, plus the body cap
/// (rest_tornado takes up to 100 MB, Tornado's default). Other keys are accepted and reported.
#[derive(Debug, Clone, Deserialize)]
pub struct RestTornado {
    /// The port to listen on (required, as salt-api requires it).
    pub port: u16,
    /// The address to listen on (rest_tornado: every interface when unset).
    #[serde(default = "any_address")]
    pub address: ListenHost,
    /// The listen backlog (rest_tornado's default, 128).
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    /// TLS certificate (PEM).
    #[serde(default)]
    pub ssl_crt: Option<PathBuf>,
    /// TLS private key (PEM).
    #[serde(default)]
    pub ssl_key: Option<PathBuf>,
    /// Serve plain HTTP.
    #[serde(default)]
    pub disable_ssl: bool,
    /// Tornado's debug mode (autoreload, tracebacks in error pages): read and never acted on.
    #[serde(default)]
    pub debug: bool,
    /// Accept hooks without a Salt token.
    #[serde(default)]
    pub webhook_disable_auth: bool,
    /// Origins allowed to call the API from a browser: `"*"`, one origin, or a list.
    #[serde(default)]
    pub cors_origin: Option<CorsOrigin>,
    /// Serve `/all_events/<token>` and `/formatted_events/<token>`.
    #[serde(default)]
    pub websockets: bool,
    /// Tornado's worker processes: read, not needed (saltgate's workers are threads).
    #[serde(default)]
    pub num_processes: Option<u32>,
    /// The largest request body accepted, in bytes (saltgate's key; rest_tornado: 100 MB).
    #[serde(default = "default_body_size")]
    pub max_request_body_size: u64,
}

fn any_address() -> ListenHost {
    ListenHost::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn default_backlog() -> u32 {
    128
}

fn localhost() -> ListenHost {
    ListenHost::Localhost
}

fn default_body_size() -> u64 {
    RestCherrypy::default().max_request_body_size
}

/// Which event bus saltgate attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusChoice {
    /// The master's bus when its sockets exist on this machine, else the built-in one.
    #[default]
    Auto,
    /// Always the master's bus (reconnecting until it is there).
    Master,
    /// Always the built-in in-process bus.
    Builtin,
}

/// The pull-side framing setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FramingSetting {
    /// Detect by echo.
    #[default]
    Auto,
    /// 4-byte length prefix (3006.26+, 3007.15+, 3008.2+).
    Prefixed,
    /// Bare msgpack (older releases).
    Bare,
}

/// saltgate's own `saltgate:` block. Unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaltgateSettings {
    /// Which bus to use.
    pub bus: BusChoice,
    /// The master event puller's framing.
    pub event_pull_framing: FramingSetting,
    /// Concurrent requests to the master's request server.
    pub request_pool: usize,
    /// Open connections accepted at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Seconds a client has to send its request headers.
    pub header_timeout_secs: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Events each stream subscriber (`/events`, `/ws`) may fall behind by before it is told how
    /// many it missed; memory per subscriber is bounded by this queue.
    pub event_queue: usize,
    /// Bytes of events (decoded, with their stream rendering) the subscribers' shared queue
    /// holds before the slowest subscriber is told it missed some; bounds what stalled readers
    /// pin whatever the event size.
    pub event_queue_bytes: usize,
    /// Seconds a WebSocket stream may take to write one event before the subscriber is dropped;
    /// also the write deadline of a connection carrying an event stream (instead of
    /// `write_timeout_secs`).
    pub stream_write_timeout_secs: u64,
    /// Seconds between keep-alive comments on `/events` (pings on `/ws`); token recheck period.
    pub stream_keepalive_secs: u64,
    /// Serve `/events`, `/ws` and the events page without a Salt token. The built-in bus has no
    /// master to check tokens, so there streams are refused unless this is set.
    pub streams_disable_auth: bool,
    /// URL of the events page.
    pub ui_path: String,
    /// The hook rules: read on their own into [`RawConfig::hooks`] (so each error can name its
    /// rule), built into [`super::HookRule`]s.
    #[serde(rename = "hooks")]
    pub(super) hooks_as_written: serde::de::IgnoredAny,
    /// What happens to hook paths no rule covers.
    pub unmatched_hooks: Unmatched,
    /// Open connections one client address (IPv6: one /64) may hold; `trusted_proxies` peers
    /// are not counted (only `max_connections` bounds them).
    pub max_connections_per_client: usize,
    /// Open event streams (`/events`, `/ws`, `/all_events`, `/formatted_events`); a stream
    /// leaves the `max_connections` budget once open.
    pub max_streams: usize,
    /// Request-body bytes buffered at once over all requests; past it bodies get 503.
    pub max_buffered_body_bytes: u64,
    /// HTTP/2 (TLS only) concurrent streams per connection.
    pub http2_max_streams: u32,
    /// Seconds from accept (or TLS handshake) to a client's first byte.
    pub first_byte_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit idle between requests.
    pub keep_alive_timeout_secs: u64,
    /// Longest pause, in seconds, inside a request body (408).
    pub body_timeout_secs: u64,
    /// Minimum average request-body rate in bytes/s once `body_rate_grace_secs` has passed
    /// (408 below it); 0 turns the rate check off.
    pub body_min_bytes_per_sec: u64,
    /// Seconds a request body may take before `body_min_bytes_per_sec` applies.
    pub body_rate_grace_secs: u64,
    /// Seconds a response write may stay blocked on a client that reads nothing.
    pub write_timeout_secs: u64,
    /// IPv6 clients are counted by this network prefix in rate limits and the login/token
    /// throttle (IPv4 clients per address).
    pub rate_limit_ipv6_prefix: u8,
    /// Client keys each rate-limit table (per hook rule, and the login/token throttle) tracks;
    /// past it the least recently used key is forgotten.
    pub rate_limit_max_keys: usize,
    /// Failed logins and token checks a client may make at once before it is refused (429).
    pub auth_failure_burst: u32,
    /// Failed logins and token checks a client may make per minute after its burst.
    pub auth_failures_per_minute: u32,
    /// Login and token checks sent to the master at once.
    pub auth_max_in_flight: usize,
    /// The durable spool ([`super::spool::RawSpool`]).
    pub spool: super::spool::RawSpool,
    /// This instance's name, shown on the events page (default: the host name).
    pub instance: Option<String>,
    /// The store several saltgates share ([`super::shared::RawShared`]); unset: this instance's
    /// own stores only.
    pub shared: Option<super::shared::RawShared>,
}

/// What happens to hook paths no rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Accepted under the default rule (`webhook_disable_auth` decides token auth), as salt-api.
    #[default]
    Allow,
    /// Refused with 404.
    Refuse,
}

impl Default for SaltgateSettings {
    fn default() -> Self {
        Self {
            bus: BusChoice::Auto,
            event_pull_framing: FramingSetting::Auto,
            request_pool: 32,
            max_connections: 4096,
            header_timeout_secs: 10,
            trusted_proxies: Vec::new(),
            event_queue: 8192,
            event_queue_bytes: crate::salt::bus::DEFAULT_QUEUE_BYTES,
            stream_write_timeout_secs: 30,
            stream_keepalive_secs: 15,
            streams_disable_auth: false,
            ui_path: "/ui".into(),
            hooks_as_written: serde::de::IgnoredAny,
            unmatched_hooks: Unmatched::Allow,
            max_connections_per_client: 256,
            max_streams: 1024,
            max_buffered_body_bytes: 64 * 1024 * 1024,
            http2_max_streams: 32,
            first_byte_timeout_secs: 10,
            keep_alive_timeout_secs: 10,
            body_timeout_secs: 10,
            body_min_bytes_per_sec: 500,
            body_rate_grace_secs: 5,
            write_timeout_secs: 30,
            rate_limit_ipv6_prefix: crate::security::rate::DEFAULT_IPV6_PREFIX,
            rate_limit_max_keys: crate::security::rate::DEFAULT_MAX_KEYS,
            auth_failure_burst: crate::security::throttle::DEFAULT_FAILURE_BURST,
            auth_failures_per_minute: crate::security::throttle::DEFAULT_FAILURES_PER_MINUTE,
            auth_max_in_flight: 2,
            spool: super::spool::RawSpool::default(),
            instance: None,
            shared: None,
        }
    }
}
