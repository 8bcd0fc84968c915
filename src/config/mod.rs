//! Configuration: the Salt master config (plus `master.d/*.conf`), salt-api's `rest_cherrypy:`
//! and `rest_wsgi:` blocks taken as they are for drop-in use, and saltgate's own `saltgate:`
//! block. Each salt-api block is one [`Dialect`], served on its own listener ([`Listen`]); the
//! `saltgate:` block applies to all of them.
//!
//! Two stages: [`raw`] is the config as read (serde mirrors of the YAML, each value typed as it
//! parses), [`Config`] the validated whole (checked across keys, secrets read, verifiers built,
//! the bus chosen). [`Config::load`] is a pure function of the files it is given and an
//! environment map; when it refuses, the error names the file and the key path at fault.
//! `saltgate check-config` and `saltgate serve` load through the same function, so they refuse
//! the same configs with the same words. Nothing here is async and nothing here touches HTTP.

pub mod compare;
pub mod error;
pub mod hooks;
pub mod master;
pub mod raw;
pub mod reload;
pub mod shared;
pub mod spool;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use hooks::{AuthMode, HookRule, RawHook};
pub use master::{IpcMode, MasterSettings};
pub use raw::{
    BusChoice, CorsOrigin, FramingSetting, ListenHost, RawConfig, RestCherrypy, RestTornado,
    RestWsgi, SaltgateSettings, Unmatched,
};
pub use reload::Reloaded;

pub(crate) use error::parse_at;

use crate::salt::bus::ipc::PullFraming;
use crate::salt::wire::framing::Framing;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The master config file read, if any.
    pub source: Option<PathBuf>,
    /// The master's settings (defaults when no file was given).
    pub master: MasterSettings,
    /// The `rest_cherrypy:` block.
    pub api: RestCherrypy,
    /// The `saltgate:` block.
    pub saltgate: SaltgateSettings,
    /// Whether to attach to the master (false: built-in bus).
    pub use_master: bool,
    /// Validated hook rules; the last one is the default for unmatched paths.
    pub hooks: Vec<HookRule>,
    /// Keys of the `rest_cherrypy:` block saltgate does not act on (for [`warnings`]).
    pub unread: Vec<String>,
    /// Whether the rest_cherrypy dialect is served: the config has a `rest_cherrypy:` block, or
    /// no other dialect's block.
    pub serve_cherrypy: bool,
    /// The `rest_wsgi:` block: the rest_wsgi dialect is served when it is set.
    pub wsgi: Option<RestWsgi>,
    /// Keys of the `rest_wsgi:` block saltgate does not read (for [`warnings`]).
    pub unread_wsgi: Vec<String>,
    /// The `rest_tornado:` block: the rest_tornado dialect is served when it is set.
    pub tornado: Option<RestTornado>,
    /// Keys of the `rest_tornado:` block saltgate does not read (for [`warnings`]).
    pub unread_tornado: Vec<String>,
    /// The spool, when on.
    pub spool: Option<crate::spool::SpoolConfig>,
    /// The store several saltgates share, when set.
    pub shared: Option<shared::SharedConfig>,
    /// Files hook secrets are read from, by key path (`saltgate.hooks[0].verify.github.secret_file`),
    /// for the review in [`compare`].
    pub secret_files: Vec<(String, PathBuf)>,
}

/// A salt-api module, as saltgate serves it on a listener of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `rest_cherrypy`: the whole API, hooks and streams.
    RestCherrypy,
    /// `rest_wsgi`: `POST /` with credentials in every chunk, nothing else.
    RestWsgi,
    /// `rest_tornado`: the lowstate API, hooks and streams as rest_tornado serves them.
    RestTornado,
}

impl Dialect {
    /// The master config block that configures it.
    pub fn block(self) -> &'static str {
        match self {
            Self::RestCherrypy => "rest_cherrypy",
            Self::RestWsgi => "rest_wsgi",
            Self::RestTornado => "rest_tornado",
        }
    }
}

/// The listen backlog of listeners whose block has no `backlog` key.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// One listener: the dialect it serves, its address and its TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// What it serves.
    pub dialect: Dialect,
    /// The address to bind.
    pub host: ListenHost,
    /// The port to bind.
    pub port: u16,
    /// TLS certificate (PEM).
    pub ssl_crt: Option<PathBuf>,
    /// TLS private key (PEM).
    pub ssl_key: Option<PathBuf>,
    /// Plain HTTP on any address.
    pub disable_ssl: bool,
    /// The listen backlog.
    pub backlog: u32,
}

impl Listen {
    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.ip(), self.port)
    }

    /// Whether it serves TLS.
    pub fn tls(&self) -> bool {
        !self.disable_ssl && self.ssl_crt.is_some()
    }

    /// Whether plain HTTP is allowed: `disable_ssl`, or a loopback address.
    pub fn plaintext_allowed(&self) -> bool {
        self.disable_ssl || self.host.ip().is_loopback()
    }
}

impl Config {
    /// Defaults with the built-in bus: what `saltgate serve` uses without `--config`.
    pub fn builtin() -> Self {
        let api = RestCherrypy {
            host: ListenHost::Ip(IpAddr::from([127, 0, 0, 1])),
            ..RestCherrypy::default()
        };
        let mut config = Self {
            source: None,
            master: MasterSettings::default(),
            api,
            saltgate: SaltgateSettings {
                bus: BusChoice::Builtin,
                ..Default::default()
            },
            use_master: false,
            hooks: Vec::new(),
            unread: Vec::new(),
            serve_cherrypy: true,
            wsgi: None,
            unread_wsgi: Vec::new(),
            tornado: None,
            unread_tornado: Vec::new(),
            // The built-in bus without a spool directory: see `spool::build`.
            spool: None,
            shared: None,
            secret_files: Vec::new(),
        };
        // No rules and no secrets to read: building cannot fail.
        let _ = config.set_hooks(&[], &HashMap::new());
        config
    }

    /// Builds [`Config::hooks`] from rules as written and the `rest_cherrypy` settings (which
    /// decide the default rule); call it again after changing those settings.
    pub fn set_hooks(
        &mut self,
        raw: &[RawHook],
        env: &HashMap<String, String>,
    ) -> Result<(), ConfigError> {
        // The default rule follows the first served block's `webhook_disable_auth` (each
        // listener applies its own: [`HookRule::auth_on`]).
        let disable_auth = match (&self.tornado, self.serve_cherrypy) {
            (Some(t), false) => t.webhook_disable_auth,
            _ => self.api.webhook_disable_auth,
        };
        self.hooks = hooks::build(raw, disable_auth, self.api.max_request_body_size, env)?;
        self.secret_files = raw
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| rule.verify.as_ref().map(|v| (i, v)))
            .flat_map(|(i, v)| {
                v.secret_files().into_iter().map(move |(key, path)| {
                    (
                        format!("saltgate.hooks[{i}].verify.{}.{key}", v.scheme()),
                        path.to_path_buf(),
                    )
                })
            })
            .collect();
        Ok(())
    }

    /// Loads `path` (a master config file, or a directory holding `master`) with its includes.
    /// `env` is the environment secrets may be read from; it is passed in so that loading stays
    /// a pure function of its inputs.
    pub fn load(path: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::load_with(path, env, None).map(|(config, _)| config)
    }

    /// [`Config::load`]; with `running`, for a reload of it ([`Config::reload`]): also the keys
    /// whose running value was kept.
    fn load_with(
        path: &Path,
        env: &HashMap<String, String>,
        running: Option<&Config>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let file = if path.is_dir() {
            path.join("master")
        } else {
            path.to_path_buf()
        };
        let merged = master::read_merged(&file)?;
        Self::from_raw(&merged, env, running).map_err(|e| {
            let in_file = match e.key() {
                Some(key) => merged.file_of(key).to_path_buf(),
                None => merged.file.clone(),
            };
            let rule = e.key().and_then(|key| rule_path(&merged.doc, key));
            let e = match rule {
                Some(path) => e.with_note(&format!("in the rule for {path:?}")),
                None => e,
            };
            e.in_file(&in_file)
        })
    }

    /// Validates the merged document of a master config; with `running` (a reload), then gives
    /// back the running value of every key a reload cannot apply ([`reload`]) and returns
    /// those keys.
    fn from_raw(
        merged: &master::Merged,
        env: &HashMap<String, String>,
        running: Option<&Config>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let RawConfig {
            mut master,
            rest_cherrypy,
            saltgate,
            hooks,
            unread,
            has_rest_cherrypy,
            rest_wsgi,
            unread_wsgi,
            rest_tornado,
            unread_tornado,
        } = RawConfig::parse(&merged.doc)?;
        master.resolve_paths();
        let use_master = match saltgate.bus {
            BusChoice::Master => true,
            BusChoice::Builtin => false,
            BusChoice::Auto => master.ipc_mode == IpcMode::Tcp || master.sock_dir.exists(),
        };
        let spool = spool::build(
            &saltgate.spool,
            &master,
            use_master,
            rest_cherrypy.max_request_body_size,
        )?;
        let shared = shared::build(saltgate.shared.as_ref(), &master)?;
        let mut config = Self {
            source: Some(merged.file.clone()),
            master,
            api: rest_cherrypy,
            saltgate,
            use_master,
            hooks: Vec::new(),
            unread,
            serve_cherrypy: has_rest_cherrypy || (rest_wsgi.is_none() && rest_tornado.is_none()),
            wsgi: rest_wsgi,
            unread_wsgi,
            tornado: rest_tornado,
            unread_tornado,
            spool,
            shared,
            secret_files: Vec::new(),
        };
        config.validate()?;
        config.set_hooks(&hooks, env)?;
        let Some(running) = running else {
            return Ok((config, Vec::new()));
        };
        let kept = reload::keep_running(&mut config, running);
        if !kept.is_empty() {
            // The rules again, with the running defaults they take (the body cap).
            config.validate()?;
            config.set_hooks(&hooks, env)?;
        }
        Ok((config, kept))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.api.webhook_url.starts_with('/') {
            return Err(ConfigError::invalid(
                "rest_cherrypy.webhook_url",
                "must start with /",
            ));
        }
        for (key, value) in [
            ("rest_cherrypy.static_path", &self.api.static_path),
            ("rest_cherrypy.app_path", &self.api.app_path),
        ] {
            if !value.starts_with('/') {
                return Err(ConfigError::invalid(key, "must start with /"));
            }
        }
        if !self.api.root_prefix.starts_with('/') {
            return Err(ConfigError::invalid(
                "rest_cherrypy.root_prefix",
                "must start with /",
            ));
        }
        if self.api.max_request_body_size == 0 {
            return Err(ConfigError::invalid(
                "rest_cherrypy.max_request_body_size",
                "must be > 0",
            ));
        }
        let cors_keys = [
            ("rest_cherrypy.cors_origin", self.api.cors_origin.as_ref()),
            (
                "rest_tornado.cors_origin",
                self.tornado.as_ref().and_then(|t| t.cors_origin.as_ref()),
            ),
        ];
        for (key, cors) in cors_keys {
            let Some(cors) = cors else { continue };
            for origin in cors.origins() {
                let ok = origin == "*"
                    || ((origin.starts_with("http://") || origin.starts_with("https://"))
                        && !origin.ends_with('/')
                        && http::HeaderValue::from_str(origin).is_ok());
                if !ok {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{origin:?} is not \"*\" nor an origin like https://host[:port]"),
                    ));
                }
            }
        }
        let listeners = self.listeners();
        for listen in &listeners {
            let block = listen.dialect.block();
            match (&listen.ssl_crt, &listen.ssl_key, listen.disable_ssl) {
                (Some(_), None, false) => {
                    return Err(ConfigError::invalid(
                        format!("{block}.ssl_key"),
                        "needed with ssl_crt",
                    ));
                }
                (None, Some(_), false) => {
                    return Err(ConfigError::invalid(
                        format!("{block}.ssl_crt"),
                        "needed with ssl_key",
                    ));
                }
                _ => {}
            }
        }
        for (i, a) in listeners.iter().enumerate() {
            for b in &listeners[..i] {
                let (ia, ib) = (a.host.ip(), b.host.ip());
                // Port 0 (any free port, for tests) never clashes.
                let same_port = a.port == b.port && a.port != 0;
                if same_port && (ia == ib || ia.is_unspecified() || ib.is_unspecified()) {
                    return Err(ConfigError::invalid(
                        format!("{}.port", a.dialect.block()),
                        format!(
                            "{} is {}.port too: each block is served on its own listener",
                            a.port,
                            b.dialect.block()
                        ),
                    ));
                }
            }
        }
        let body_caps = [
            (
                "rest_wsgi",
                self.wsgi.as_ref().map(|w| w.max_request_body_size),
            ),
            (
                "rest_tornado",
                self.tornado.as_ref().map(|t| t.max_request_body_size),
            ),
        ];
        for (block, cap) in body_caps {
            let Some(cap) = cap else { continue };
            if cap == 0 {
                return Err(ConfigError::invalid(
                    format!("{block}.max_request_body_size"),
                    "must be > 0",
                ));
            }
            if self.saltgate.max_buffered_body_bytes < cap {
                return Err(ConfigError::invalid(
                    "saltgate.max_buffered_body_bytes",
                    format!("must be at least {block}.max_request_body_size"),
                ));
            }
        }
        if let Some(name) = &self.saltgate.instance {
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    "saltgate.instance",
                    "must be 1 to 64 characters, without control characters",
                ));
            }
        }
        if self.saltgate.request_pool == 0 {
            return Err(ConfigError::invalid("saltgate.request_pool", "must be > 0"));
        }
        if self.saltgate.event_queue == 0 {
            return Err(ConfigError::invalid("saltgate.event_queue", "must be > 0"));
        }
        if self.saltgate.event_queue_bytes < 64 << 10 {
            return Err(ConfigError::invalid(
                "saltgate.event_queue_bytes",
                "must be at least 65536",
            ));
        }
        if self.saltgate.stream_write_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "saltgate.stream_write_timeout_secs",
                "must be > 0",
            ));
        }
        if self.saltgate.stream_keepalive_secs == 0 {
            return Err(ConfigError::invalid(
                "saltgate.stream_keepalive_secs",
                "must be > 0",
            ));
        }
        if !self.saltgate.ui_path.starts_with('/')
            || self.saltgate.ui_path.trim_end_matches('/').is_empty()
        {
            return Err(ConfigError::invalid(
                "saltgate.ui_path",
                "must start with / and not be /",
            ));
        }
        if self.saltgate.max_connections == 0 {
            return Err(ConfigError::invalid(
                "saltgate.max_connections",
                "must be > 0",
            ));
        }
        if !(1..=128).contains(&self.saltgate.rate_limit_ipv6_prefix) {
            return Err(ConfigError::invalid(
                "saltgate.rate_limit_ipv6_prefix",
                "must be 1 to 128",
            ));
        }
        for (key, value) in [
            (
                "saltgate.max_connections_per_client",
                self.saltgate.max_connections_per_client as u64,
            ),
            ("saltgate.max_streams", self.saltgate.max_streams as u64),
            (
                "saltgate.http2_max_streams",
                u64::from(self.saltgate.http2_max_streams),
            ),
            (
                "saltgate.first_byte_timeout_secs",
                self.saltgate.first_byte_timeout_secs,
            ),
            (
                "saltgate.keep_alive_timeout_secs",
                self.saltgate.keep_alive_timeout_secs,
            ),
            (
                "saltgate.body_timeout_secs",
                self.saltgate.body_timeout_secs,
            ),
            (
                "saltgate.write_timeout_secs",
                self.saltgate.write_timeout_secs,
            ),
            (
                "saltgate.auth_failure_burst",
                self.saltgate.auth_failure_burst as u64,
            ),
            (
                "saltgate.auth_failures_per_minute",
                self.saltgate.auth_failures_per_minute as u64,
            ),
            (
                "saltgate.auth_max_in_flight",
                self.saltgate.auth_max_in_flight as u64,
            ),
            (
                "saltgate.rate_limit_max_keys",
                self.saltgate.rate_limit_max_keys as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be > 0"));
            }
        }
        if self.saltgate.max_buffered_body_bytes < self.api.max_request_body_size {
            return Err(ConfigError::invalid(
                "saltgate.max_buffered_body_bytes",
                "must be at least rest_cherrypy.max_request_body_size",
            ));
        }
        Ok(())
    }

    /// The pull-side framing as the bus wants it.
    pub fn pull_framing(&self) -> PullFraming {
        match self.saltgate.event_pull_framing {
            FramingSetting::Auto => PullFraming::Auto,
            FramingSetting::Prefixed => PullFraming::Fixed(Framing::Prefixed),
            FramingSetting::Bare => PullFraming::Fixed(Framing::Bare),
        }
    }

    /// Whether plain HTTP is allowed on the rest_cherrypy listener: `disable_ssl`, or no
    /// certificate and a loopback address.
    pub fn plaintext_allowed(&self) -> bool {
        self.api.disable_ssl || self.api.host.ip().is_loopback()
    }

    /// The listeners to open, one per served dialect: rest_cherrypy first.
    pub fn listeners(&self) -> Vec<Listen> {
        let mut out = Vec::new();
        if self.serve_cherrypy {
            out.push(Listen {
                dialect: Dialect::RestCherrypy,
                host: self.api.host,
                port: self.api.port,
                ssl_crt: self.api.ssl_crt.clone(),
                ssl_key: self.api.ssl_key.clone(),
                disable_ssl: self.api.disable_ssl,
                backlog: DEFAULT_BACKLOG,
            });
        }
        if let Some(tornado) = &self.tornado {
            out.push(Listen {
                dialect: Dialect::RestTornado,
                host: tornado.address,
                port: tornado.port,
                ssl_crt: tornado.ssl_crt.clone(),
                ssl_key: tornado.ssl_key.clone(),
                disable_ssl: tornado.disable_ssl,
                backlog: tornado.backlog.max(1),
            });
        }
        if let Some(wsgi) = &self.wsgi {
            out.push(Listen {
                dialect: Dialect::RestWsgi,
                host: wsgi.host,
                port: wsgi.port,
                ssl_crt: wsgi.ssl_crt.clone(),
                ssl_key: wsgi.ssl_key.clone(),
                disable_ssl: wsgi.disable_ssl,
                backlog: DEFAULT_BACKLOG,
            });
        }
        out
    }

    /// How client addresses are keyed in rate limits and the login/token throttle.
    pub fn client_keys(&self) -> crate::security::ClientKeys {
        crate::security::ClientKeys::new(self.saltgate.rate_limit_ipv6_prefix)
            .with_max_keys(self.saltgate.rate_limit_max_keys)
    }

    /// The login/token throttle's limits.
    pub fn auth_throttle(&self) -> crate::security::throttle::ThrottleSettings {
        use std::num::NonZeroU32;
        crate::security::throttle::ThrottleSettings {
            failure_burst: NonZeroU32::new(self.saltgate.auth_failure_burst)
                .unwrap_or(NonZeroU32::MIN),
            failures_per_minute: NonZeroU32::new(self.saltgate.auth_failures_per_minute)
                .unwrap_or(NonZeroU32::MIN),
            keys: self.client_keys(),
            ..Default::default()
        }
    }

    /// This instance's name: `saltgate.instance`, else the host name.
    pub fn instance_name(&self) -> String {
        if let Some(name) = &self.saltgate.instance {
            return name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "saltgate".to_owned())
    }

    /// The header-read timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.saltgate.header_timeout_secs.max(1))
    }
}

/// The `path` of the rule a key path such as `saltgate.hooks[2].verify.github` is in.
fn rule_path(doc: &serde_yaml::Mapping, key: &str) -> Option<String> {
    let rest = key.strip_prefix("saltgate.hooks[")?;
    let index: usize = rest.split(']').next()?.parse().ok()?;
    let path = doc.get("saltgate")?.get("hooks")?.get(index)?.get("path")?;
    path.as_str().map(str::to_owned)
}

/// Settings that are valid but probably not what the operator means (printed by
/// `saltgate check-config`, logged by `serve` at start).
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = config
        .unread
        .iter()
        .filter_map(|key| match salt_api_only(key) {
            Some(None) => None,
            Some(Some(note)) => Some(format!("rest_cherrypy.{key}: {note}")),
            None => Some(format!(
                "rest_cherrypy.{key}: neither salt-api nor saltgate reads this key (a typo?)"
            )),
        })
        .collect();
    out.extend(config.unread_wsgi.iter().map(|key| {
        format!(
            "rest_wsgi.{key}: neither salt-api's rest_wsgi (which reads only port) nor saltgate \
             reads this key"
        )
    }));
    out.extend(config.unread_tornado.iter().map(|key| {
        format!("rest_tornado.{key}: neither salt-api's rest_tornado nor saltgate reads this key")
    }));
    if config.tornado.as_ref().is_some_and(|t| t.debug) {
        out.push(
            "rest_tornado.debug: not acted on (saltgate has no autoreload and never writes \
             tracebacks into answers)"
                .to_owned(),
        );
    }
    out.extend(hooks::warnings(
        &config.hooks,
        config.saltgate.unmatched_hooks == Unmatched::Allow,
        &config.master.reactor_globs(),
    ));
    out
}

/// What `saltgate check-config` adds below the effective settings: salt-api keys in the config
/// that only tune CherryPy, which saltgate accepts and does not use.
pub fn notes(config: &Config) -> Vec<String> {
    let tuning: Vec<&str> = config
        .unread
        .iter()
        .map(String::as_str)
        .filter(|key| salt_api_only(key) == Some(None))
        .collect();
    if tuning.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "rest_cherrypy: {} tune salt-api's CherryPy server; saltgate accepts and ignores them",
        tuning.join(", ")
    )]
}

/// `Some(note)` for a salt-api key saltgate does not read, `None` for a key salt-api does not
/// know either.
fn salt_api_only(key: &str) -> Option<Option<&'static str>> {
    raw::SALT_API_ONLY_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, note)| *note)
}

/// The effective configuration as YAML, for `saltgate check-config`. Secrets are never part of
/// it: secret values are read from files or the environment and only their sources are shown.
pub fn render_effective(config: &Config) -> String {
    let value = serde_json::json!({
        "source": config.source.as_ref().map(|p| p.display().to_string()),
        "bus": if config.use_master { "master" } else { "builtin" },
        "master": {
            "request_server": config.master.ret_endpoint(),
            "event_publisher": config.master.bus_endpoints().0.to_string(),
            "event_puller": config.master.bus_endpoints().1.to_string(),
            "event_pull_framing": format!("{:?}", config.saltgate.event_pull_framing).to_lowercase(),
            "timeout": config.master.timeout,
            "gather_job_timeout": config.master.gather_job_timeout,
            "netapi_enable_clients": config.master.netapi_enable_clients,
        },
        "rest_cherrypy": {
            "host": config.api.host.to_string(),
            "port": config.api.port,
            "tls": !config.api.disable_ssl && config.api.ssl_crt.is_some(),
            "ssl_crt": config.api.ssl_crt.as_ref().map(|p| p.display().to_string()),
            "webhook_url": config.api.webhook_url,
            "webhook_disable_auth": config.api.webhook_disable_auth,
            "max_request_body_size": config.api.max_request_body_size,
            "root_prefix": config.api.root_prefix,
        },
        "listeners": config.listeners().iter().map(|l| serde_json::json!({
            "dialect": l.dialect.block(),
            "address": l.addr().to_string(),
            "tls": l.tls(),
        })).collect::<Vec<_>>(),
        "rest_wsgi": config.wsgi.as_ref().map(|w| serde_json::json!({
            "host": w.host.to_string(),
            "port": w.port,
            "tls": !w.disable_ssl && w.ssl_crt.is_some(),
            "ssl_crt": w.ssl_crt.as_ref().map(|p| p.display().to_string()),
            "max_request_body_size": w.max_request_body_size,
        })),
        "rest_tornado": config.tornado.as_ref().map(|t| serde_json::json!({
            "address": t.address.to_string(),
            "port": t.port,
            "tls": !t.disable_ssl && t.ssl_crt.is_some(),
            "ssl_crt": t.ssl_crt.as_ref().map(|p| p.display().to_string()),
            "webhook_disable_auth": t.webhook_disable_auth,
            "websockets": t.websockets,
            "max_request_body_size": t.max_request_body_size,
        })),
        "saltgate": {
            "request_pool": config.saltgate.request_pool,
            "max_connections": config.saltgate.max_connections,
            "header_timeout_secs": config.saltgate.header_timeout_secs,
            "max_connections_per_client": config.saltgate.max_connections_per_client,
            "max_streams": config.saltgate.max_streams,
            "max_buffered_body_bytes": config.saltgate.max_buffered_body_bytes,
            "http2_max_streams": config.saltgate.http2_max_streams,
            "first_byte_timeout_secs": config.saltgate.first_byte_timeout_secs,
            "keep_alive_timeout_secs": config.saltgate.keep_alive_timeout_secs,
            "body_timeout_secs": config.saltgate.body_timeout_secs,
            "body_min_bytes_per_sec": config.saltgate.body_min_bytes_per_sec,
            "body_rate_grace_secs": config.saltgate.body_rate_grace_secs,
            "write_timeout_secs": config.saltgate.write_timeout_secs,
            "trusted_proxies": config.saltgate.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "event_queue": config.saltgate.event_queue,
            "event_queue_bytes": config.saltgate.event_queue_bytes,
            "stream_write_timeout_secs": config.saltgate.stream_write_timeout_secs,
            "stream_keepalive_secs": config.saltgate.stream_keepalive_secs,
            "streams_disable_auth": config.saltgate.streams_disable_auth,
            "ui_path": config.saltgate.ui_path,
            "rate_limit_ipv6_prefix": config.saltgate.rate_limit_ipv6_prefix,
            "rate_limit_max_keys": config.saltgate.rate_limit_max_keys,
            "auth_failure_burst": config.saltgate.auth_failure_burst,
            "auth_failures_per_minute": config.saltgate.auth_failures_per_minute,
            "auth_max_in_flight": config.saltgate.auth_max_in_flight,
            "spool": spool::render(config.spool.as_ref()),
            "instance": config.instance_name(),
            "shared": shared::render(config.shared.as_ref()),
        },
    });
    serde_yaml::to_string(&value).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("master"), text).unwrap();
        Config::load(dir.path(), &HashMap::new())
    }

    #[test]
    fn master_keys_and_blocks_are_read() {
        let c = load_text(
            "ret_port: 1234\ninterface: 10.0.0.1\ntimeout: 7\nnetapi_enable_clients: [local]\n\
             rest_cherrypy:\n  port: 9000\n  disable_ssl: true\n  webhook_disable_auth: true\n  \
             thread_pool: 100\nsaltgate:\n  bus: builtin\n  event_pull_framing: bare\n",
        )
        .unwrap();
        assert_eq!(c.master.ret_endpoint(), "tcp://10.0.0.1:1234");
        assert_eq!(c.master.timeout(), Duration::from_secs(7));
        assert_eq!(c.master.netapi_enable_clients, vec!["local".to_owned()]);
        assert_eq!(c.api.port, 9000);
        assert!(c.api.webhook_disable_auth);
        assert!(!c.use_master);
        assert_eq!(c.pull_framing(), PullFraming::Fixed(Framing::Bare));
    }

    /// The key path of the error loading `text` refuses with.
    fn refused_key(text: &str) -> String {
        let e = load_text(text).unwrap_err();
        e.key().unwrap_or_else(|| panic!("no key: {e}")).to_owned()
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            refused_key("rest_cherrypy:\n  port: nope\n"),
            "rest_cherrypy.port"
        );
        let e = load_text("saltgate:\n  colour: red\n").unwrap_err();
        assert_eq!(e.key(), Some("saltgate.colour"), "{e}");
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        assert!(
            e.to_string().contains("`hooks`"),
            "the rules are a key too: {e}"
        );
        assert_eq!(refused_key("ret_port: -1\n"), "ret_port");
        assert_eq!(refused_key("ipc_mode: pipes\n"), "ipc_mode");
        assert_eq!(refused_key("interface: eth0\n"), "interface");
        assert_eq!(
            refused_key("rest_cherrypy:\n  ssl_crt: /x\n"),
            "rest_cherrypy.ssl_key"
        );
        assert_eq!(
            refused_key("rest_cherrypy:\n  cors_origin: [https://ok.example, 'javascript:x']\n"),
            "rest_cherrypy.cors_origin"
        );
        let c = load_text("rest_cherrypy:\n  cors_origin: https://ok.example\n").unwrap();
        assert_eq!(
            c.api.cors_origin.unwrap().origins(),
            vec!["https://ok.example"]
        );
        let e = load_text("[1, 2]").unwrap_err().to_string();
        assert!(e.contains("mapping"), "{e}");
    }

    #[test]
    fn the_spool_block_is_strict_and_defaults_under_the_masters_cachedir() {
        use crate::spool::Storage;
        let master =
            "cachedir: /srv/cache\nuser: salt\nreactor:\n  - 'salt/netapi/hook/*': [/r.sls]\n";
        let c = load_text(&format!("{master}saltgate:\n  bus: master\n")).unwrap();
        let spool = c.spool.expect("on by default on a master");
        assert_eq!(
            spool.storage,
            Storage::Dir(PathBuf::from("/srv/cache/saltgate"))
        );
        assert_eq!(spool.max_bytes, crate::spool::DEFAULT_MAX_BYTES);
        assert_eq!(
            spool.reactor.map(|r| r.key_file),
            Some(PathBuf::from("/srv/cache/.salt_key")),
            "the Reactor check reads the master user's key"
        );
        // The built-in bus: no spool unless a directory is given.
        let builtin = "saltgate:\n  bus: builtin\n";
        assert!(load_text(builtin).unwrap().spool.is_none());
        let c = load_text(&format!("{builtin}  spool:\n    dir: /var/lib/sg\n")).unwrap();
        assert_eq!(
            c.spool.unwrap().storage,
            Storage::Dir(PathBuf::from("/var/lib/sg"))
        );
        let off = format!("{master}saltgate:\n  bus: master\n  spool:\n    enabled: false\n");
        assert!(load_text(&off).unwrap().spool.is_none());
        for (block, key) in [
            ("    colour: red\n", "saltgate.spool.colour"),
            ("    dir: relative/spool\n", "saltgate.spool.dir"),
            ("    max_bytes: 1000\n", "saltgate.spool.max_bytes"),
            ("    max_bytes: lots\n", "saltgate.spool.max_bytes"),
            ("    queue_bytes: 10\n", "saltgate.spool.queue_bytes"),
        ] {
            let text = format!("saltgate:\n  bus: master\n  spool:\n{block}");
            assert_eq!(refused_key(&text), key, "{block}");
        }
    }

    #[test]
    fn errors_name_the_file_the_key_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("master");
        std::fs::write(&master, "rest_cherrypy:\n  port: 8000\n").unwrap();
        std::fs::create_dir(dir.path().join("master.d")).unwrap();
        let include = dir.path().join("master.d/saltgate.conf");
        std::fs::write(
            &include,
            "saltgate:\n  hooks:\n    - path: gitlab/push\n      \
             verify: {gitlab: {secret_env: S, tolerance_secs: 60}}\n",
        )
        .unwrap();
        let e = Config::load(dir.path(), &HashMap::new()).unwrap_err();
        assert_eq!(e.file(), Some(include.as_path()), "{e}");
        let key = "saltgate.hooks[0].verify.gitlab.tolerance_secs";
        assert_eq!(e.key(), Some(key), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{}: {key}: ", include.display())),
            "{text}"
        );
        assert!(text.contains("unknown field `tolerance_secs`"), "{text}");
        assert!(text.contains("in the rule for \"gitlab/push\""), "{text}");
        // A key of the master file itself names that file.
        std::fs::write(&master, "rest_cherrypy:\n  host: api.example.com\n").unwrap();
        std::fs::remove_file(&include).unwrap();
        let e = Config::load(dir.path(), &HashMap::new()).unwrap_err();
        assert_eq!(e.file(), Some(master.as_path()), "{e}");
        assert_eq!(e.key(), Some("rest_cherrypy.host"), "{e}");
        assert!(
            e.to_string()
                .contains("\"api.example.com\" is not an IP address or localhost"),
            "{e}"
        );
    }

    #[test]
    fn host_and_ipc_mode_are_typed() {
        let c = load_text("ipc_mode: tcp\nrest_cherrypy:\n  host: '::1'\n").unwrap();
        assert_eq!(c.master.ipc_mode, IpcMode::Tcp);
        assert_eq!(c.api.host, ListenHost::Ip("::1".parse().unwrap()));
        assert!(c.plaintext_allowed());
        let c = load_text("rest_cherrypy:\n  host: localhost\n").unwrap();
        assert_eq!(c.api.host, ListenHost::Localhost);
        assert_eq!(c.api.host.ip(), IpAddr::from([127, 0, 0, 1]));
        let c = load_text("rest_cherrypy:\n  port: 1\n").unwrap();
        assert_eq!(c.api.host.to_string(), "0.0.0.0");
        assert!(!c.plaintext_allowed());
        for bad in ["300.1.1.1", "api.example.com", "''", "0.0.0.0:8000"] {
            let e = load_text(&format!("rest_cherrypy:\n  host: {bad}\n")).unwrap_err();
            assert_eq!(e.key(), Some("rest_cherrypy.host"), "{e}");
        }
        let e = load_text("rest_cherrypy:\n  host: [1]\n").unwrap_err();
        assert_eq!(e.key(), Some("rest_cherrypy.host"), "{e}");
        let e = load_text("ipc_mode: pipes\n").unwrap_err();
        assert!(e.to_string().contains("expected `ipc` or `tcp`"), "{e}");
    }

    #[test]
    fn salt_api_keys_saltgate_does_not_read_are_accepted_and_reported() {
        let c = load_text(
            "rest_cherrypy:\n  port: 8000\n  thread_pool: 30\n  debug: true\n  \
             api_acl: {users: {'*': ['*']}}\n  prot: 8001\n",
        )
        .unwrap();
        let mut unread = c.unread.clone();
        unread.sort();
        assert_eq!(unread, ["api_acl", "debug", "prot", "thread_pool"]);
        let warnings = warnings(&c);
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("rest_cherrypy.api_acl: not enforced")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("rest_cherrypy.prot: neither salt-api")),
            "{warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("thread_pool")),
            "{warnings:?}"
        );
        assert_eq!(
            notes(&c),
            [
                "rest_cherrypy: thread_pool, debug tune salt-api's CherryPy server; saltgate \
              accepts and ignores them"
            ]
        );
        // Every key salt-api 3006-3008 reads is either read by saltgate or in the table.
        let c = load_text(
            "rest_cherrypy:\n  port: 8000\n  host: 0.0.0.0\n  thread_pool: 100\n  \
             queue_size: 30\n  socket_queue_size: 30\n  max_request_body_size: 1048576\n  \
             debug: false\n  log_access_file: ''\n  log_error_file: ''\n  \
             expire_responses: true\n  collect_stats: false\n  stats_disable_auth: false\n  \
             favicon: /f.ico\n  static: /srv/s\n  static_path: /static\n  app: /srv/a.html\n  \
             app_path: /app\n  enable_sessions: true\n  webhook_url: /hook\n  \
             webhook_disable_auth: false\n  disable_ssl: true\n  ssl_crt: /c\n  ssl_key: /k\n  \
             ssl_chain: /ch\n  root_prefix: /\n  api_acl: {}\n  authorized_ips: []\n",
        )
        .unwrap();
        for key in &c.unread {
            assert!(salt_api_only(key).is_some(), "{key} is in neither list");
        }
        // Keys saltgate reads keep their types.
        assert_eq!(
            refused_key("rest_cherrypy:\n  disable_ssl: maybe\n"),
            "rest_cherrypy.disable_ssl"
        );
    }

    #[test]
    fn listener_limits_are_read_and_checked() {
        let c = load_text(
            "saltgate:\n  max_connections_per_client: 8\n  keep_alive_timeout_secs: 60\n  \
             body_min_bytes_per_sec: 0\n",
        )
        .unwrap();
        assert_eq!(c.saltgate.max_connections_per_client, 8);
        assert_eq!(c.saltgate.keep_alive_timeout_secs, 60);
        assert_eq!(c.saltgate.body_min_bytes_per_sec, 0);
        assert_eq!(c.saltgate.first_byte_timeout_secs, 10);
        for bad in [
            "max_connections_per_client: 0",
            "max_streams: 0",
            "first_byte_timeout_secs: 0",
            "body_timeout_secs: 0",
        ] {
            let key = bad.split(':').next().unwrap();
            assert_eq!(
                refused_key(&format!("saltgate:\n  {bad}\n")),
                format!("saltgate.{key}")
            );
        }
        assert_eq!(
            refused_key("saltgate:\n  max_buffered_body_bytes: 1000\n"),
            "saltgate.max_buffered_body_bytes"
        );
    }

    #[test]
    fn client_keys_and_auth_throttle_settings() {
        let c = load_text("saltgate:\n  bus: builtin\n").unwrap();
        assert_eq!(c.client_keys().ipv6_prefix(), 64);
        let t = c.auth_throttle();
        assert_eq!(t.failure_burst.get(), 10);
        assert_eq!(t.failures_per_minute.get(), 6);
        assert_eq!(c.saltgate.auth_max_in_flight, 2);
        let c = load_text(
            "saltgate:\n  rate_limit_ipv6_prefix: 56\n  auth_failure_burst: 3\n  \
             auth_failures_per_minute: 1\n  auth_max_in_flight: 8\n",
        )
        .unwrap();
        assert_eq!(c.client_keys().ipv6_prefix(), 56);
        assert_eq!(c.auth_throttle().keys.ipv6_prefix(), 56);
        assert_eq!(c.auth_throttle().failure_burst.get(), 3);
        assert_eq!(c.saltgate.auth_max_in_flight, 8);
        for bad in [
            "rate_limit_ipv6_prefix: 0",
            "rate_limit_ipv6_prefix: 129",
            "auth_failure_burst: 0",
            "auth_failures_per_minute: 0",
            "auth_max_in_flight: 0",
            "rate_limit_max_keys: 0",
        ] {
            let key = bad.split(':').next().unwrap();
            assert_eq!(
                refused_key(&format!("saltgate:\n  {bad}\n")),
                format!("saltgate.{key}")
            );
        }
    }

    #[test]
    fn each_salt_api_block_is_a_listener() {
        // No block: rest_cherrypy's defaults, as before.
        let c = load_text("saltgate:\n  bus: builtin\n").unwrap();
        let dialects: Vec<Dialect> = c.listeners().iter().map(|l| l.dialect).collect();
        assert_eq!(dialects, [Dialect::RestCherrypy]);
        // Only rest_wsgi: only it, on localhost as rest_wsgi binds.
        let c = load_text("rest_wsgi:\n  port: 8001\n").unwrap();
        assert_eq!(
            c.listeners(),
            [Listen {
                dialect: Dialect::RestWsgi,
                host: ListenHost::Localhost,
                port: 8001,
                ssl_crt: None,
                ssl_key: None,
                disable_ssl: false,
                backlog: DEFAULT_BACKLOG,
            }]
        );
        assert!(c.listeners()[0].plaintext_allowed());
        assert_eq!(c.wsgi.as_ref().unwrap().max_request_body_size, 1_048_576);
        // Both: both, rest_cherrypy first.
        let c = load_text(
            "rest_cherrypy:\n  port: 8000\n  disable_ssl: true\nrest_wsgi:\n  port: 8001\n  \
             host: 0.0.0.0\n  ssl_crt: /c\n  ssl_key: /k\n",
        )
        .unwrap();
        let listeners = c.listeners();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0].addr().to_string(), "0.0.0.0:8000");
        assert_eq!(listeners[1].addr().to_string(), "0.0.0.0:8001");
        assert!(listeners[1].tls() && !listeners[0].tls());
        assert!(!listeners[1].plaintext_allowed());
    }

    #[test]
    fn rest_wsgi_is_read_leniently_and_checked() {
        // salt-api does not load rest_wsgi without a port; saltgate refuses the block.
        let e = load_text("rest_wsgi:\n  host: 127.0.0.1\n").unwrap_err();
        assert_eq!(e.key(), Some("rest_wsgi"), "{e}");
        assert!(e.to_string().contains("missing field `port`"), "{e}");
        assert_eq!(refused_key("rest_wsgi:\n  port: http\n"), "rest_wsgi.port");
        assert_eq!(
            refused_key("rest_wsgi:\n  port: 8001\n  ssl_crt: /c\n"),
            "rest_wsgi.ssl_key"
        );
        assert_eq!(
            refused_key("rest_wsgi:\n  port: 8001\n  max_request_body_size: 0\n"),
            "rest_wsgi.max_request_body_size"
        );
        // Two blocks on one port: refused, naming the second.
        assert_eq!(
            refused_key("rest_cherrypy:\n  port: 8000\nrest_wsgi:\n  port: 8000\n"),
            "rest_wsgi.port"
        );
        // Different addresses, one port: fine.
        let c = load_text(
            "rest_cherrypy:\n  port: 8000\n  host: 127.0.0.1\nrest_wsgi:\n  port: 8000\n  \
             host: '::1'\n",
        )
        .unwrap();
        assert_eq!(c.listeners().len(), 2);
        // Unknown keys are accepted and reported, as in rest_cherrypy.
        let c = load_text("rest_wsgi:\n  port: 8001\n  prot: 8002\n").unwrap();
        assert_eq!(c.unread_wsgi, ["prot"]);
        let w = warnings(&c);
        assert!(
            w.iter().any(|w| w.starts_with("rest_wsgi.prot: neither")),
            "{w:?}"
        );
        assert!(render_effective(&c).contains("dialect: rest_wsgi"));
    }

    #[test]
    fn auto_bus_needs_the_master_sockets() {
        let c =
            load_text("sock_dir: /nonexistent/saltgate/test\ncachedir: /nonexistent/c/x/y/z/w\n")
                .unwrap();
        assert!(!c.use_master);
        let c = load_text("ipc_mode: tcp\n").unwrap();
        assert!(c.use_master);
    }
}
