//! Configuration: the Salt master config (plus `master.d/*.conf`), salt-api's `rest_cherrypy:`
//! block taken as is for drop-in use, and saltgate's own `saltgate:` block.
//!
//! [`Config::load`] is a pure function of the files it is given and an environment map; it
//! validates everything into typed values and names the key at fault when it refuses. Nothing
//! here is async and nothing here touches HTTP.

pub mod error;
pub mod hooks;
pub mod master;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::ConfigError;
pub use hooks::{AuthMode, HookRule};
pub use master::MasterSettings;

use crate::salt::bus::ipc::PullFraming;
use crate::salt::wire::framing::Framing;

/// salt-api's `rest_cherrypy:` block. Unknown keys are accepted (salt-api has many that only
/// concern CherryPy); known keys must have the right type.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RestCherrypy {
    /// The port to listen on.
    pub port: u16,
    /// The address to listen on.
    pub host: String,
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
            host: "0.0.0.0".into(),
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

/// saltgate's own `saltgate:` block.
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
    /// Per-hook rules.
    pub hooks: Vec<hooks::RawHook>,
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
            hooks: Vec::new(),
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
        }
    }
}

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
}

impl Config {
    /// Defaults with the built-in bus: what `saltgate serve` uses without `--config`.
    pub fn builtin() -> Self {
        let api = RestCherrypy {
            host: "127.0.0.1".into(),
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
        };
        // No rules and no secrets to read: building cannot fail.
        let _ = config.rebuild_hooks(&HashMap::new());
        config
    }

    /// Rebuilds [`Config::hooks`] from the raw rules and the `rest_cherrypy` settings.
    pub fn rebuild_hooks(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        self.hooks = hooks::build(
            &self.saltgate.hooks,
            self.api.webhook_disable_auth,
            self.api.max_request_body_size,
            env,
        )?;
        Ok(())
    }

    /// Loads `path` (a master config file, or a directory holding `master`) with its includes.
    /// `env` is the environment secrets may be read from; it is passed in so that loading stays
    /// a pure function of its inputs.
    pub fn load(path: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let file = if path.is_dir() {
            path.join("master")
        } else {
            path.to_path_buf()
        };
        let merged = master::read_merged(&file)?;
        let root = serde_yaml::Value::Mapping(merged);
        let mut master: MasterSettings = typed(&root, None)?;
        master.resolve_paths();
        let api: RestCherrypy = typed(&root, Some("rest_cherrypy"))?;
        let saltgate: SaltgateSettings = typed(&root, Some("saltgate"))?;
        let use_master = match saltgate.bus {
            BusChoice::Master => true,
            BusChoice::Builtin => false,
            BusChoice::Auto => master.ipc_mode == "tcp" || master.sock_dir.exists(),
        };
        let mut config = Self {
            source: Some(file),
            master,
            api,
            saltgate,
            use_master,
            hooks: Vec::new(),
        };
        config.validate()?;
        config.rebuild_hooks(env)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.api.host.parse::<IpAddr>().is_err() && self.api.host != "localhost" {
            return Err(ConfigError::invalid(
                "rest_cherrypy.host",
                "must be an IP address",
            ));
        }
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
        if let Some(cors) = &self.api.cors_origin {
            for origin in cors.origins() {
                let ok = origin == "*"
                    || ((origin.starts_with("http://") || origin.starts_with("https://"))
                        && !origin.ends_with('/')
                        && http::HeaderValue::from_str(origin).is_ok());
                if !ok {
                    return Err(ConfigError::invalid(
                        "rest_cherrypy.cors_origin",
                        format!("{origin:?} is not \"*\" nor an origin like https://host[:port]"),
                    ));
                }
            }
        }
        match (&self.api.ssl_crt, &self.api.ssl_key, self.api.disable_ssl) {
            (Some(_), None, false) => {
                return Err(ConfigError::invalid(
                    "rest_cherrypy.ssl_key",
                    "needed with ssl_crt",
                ));
            }
            (None, Some(_), false) => {
                return Err(ConfigError::invalid(
                    "rest_cherrypy.ssl_crt",
                    "needed with ssl_key",
                ));
            }
            _ => {}
        }
        if !matches!(self.master.ipc_mode.as_str(), "ipc" | "tcp") {
            return Err(ConfigError::invalid("ipc_mode", "must be ipc or tcp"));
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

    /// Whether plain HTTP is allowed: `disable_ssl`, or no certificate and a loopback address.
    pub fn plaintext_allowed(&self) -> bool {
        self.api.disable_ssl
            || self.api.host == "localhost"
            || self
                .api
                .host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
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

    /// The header-read timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.saltgate.header_timeout_secs.max(1))
    }
}

/// Deserializes the whole document or one block of it, naming the key path on error.
fn typed<T: serde::de::DeserializeOwned + Default>(
    root: &serde_yaml::Value,
    block: Option<&str>,
) -> Result<T, ConfigError> {
    let value = match block {
        None => root.clone(),
        Some(name) => match root.get(name) {
            None | Some(serde_yaml::Value::Null) => return Ok(T::default()),
            Some(v) => v.clone(),
        },
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match (block, path.as_str()) {
            (Some(b), ".") => b.to_owned(),
            (Some(b), p) => format!("{b}.{p}"),
            (None, p) => p.to_owned(),
        };
        ConfigError::invalid(key, e.into_inner().to_string())
    })
}

/// Settings that are valid but probably not what the operator means (printed by
/// `saltgate check-config`, logged by `serve` at start).
pub fn warnings(config: &Config) -> Vec<String> {
    hooks::warnings(
        &config.hooks,
        config.saltgate.unmatched_hooks == Unmatched::Allow,
        &config.master.reactor_globs(),
    )
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
            "host": config.api.host,
            "port": config.api.port,
            "tls": !config.api.disable_ssl && config.api.ssl_crt.is_some(),
            "ssl_crt": config.api.ssl_crt.as_ref().map(|p| p.display().to_string()),
            "webhook_url": config.api.webhook_url,
            "webhook_disable_auth": config.api.webhook_disable_auth,
            "max_request_body_size": config.api.max_request_body_size,
            "root_prefix": config.api.root_prefix,
        },
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

    #[test]
    fn errors_name_the_key() {
        let e = load_text("rest_cherrypy:\n  port: nope\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rest_cherrypy.port:"), "{e}");
        let e = load_text("saltgate:\n  colour: red\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("saltgate"), "{e}");
        assert!(e.contains("colour"), "{e}");
        let e = load_text("ret_port: -1\n").unwrap_err().to_string();
        assert!(e.starts_with("ret_port:"), "{e}");
        let e = load_text("ipc_mode: pipes\n").unwrap_err().to_string();
        assert!(e.starts_with("ipc_mode:"), "{e}");
        let e = load_text("rest_cherrypy:\n  ssl_crt: /x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rest_cherrypy.ssl_key:"), "{e}");
        let e = load_text("rest_cherrypy:\n  cors_origin: [https://ok.example, 'javascript:x']\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rest_cherrypy.cors_origin:"), "{e}");
        let c = load_text("rest_cherrypy:\n  cors_origin: https://ok.example\n").unwrap();
        assert_eq!(
            c.api.cors_origin.unwrap().origins(),
            vec!["https://ok.example"]
        );
        let e = load_text("[1, 2]").unwrap_err().to_string();
        assert!(e.contains("mapping"), "{e}");
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
            let e = load_text(&format!("saltgate:\n  {bad}\n"))
                .unwrap_err()
                .to_string();
            let key = bad.split(':').next().unwrap();
            assert!(e.starts_with(&format!("saltgate.{key}:")), "{e}");
        }
        let e = load_text("saltgate:\n  max_buffered_body_bytes: 1000\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("saltgate.max_buffered_body_bytes:"), "{e}");
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
            let e = load_text(&format!("saltgate:\n  {bad}\n"))
                .unwrap_err()
                .to_string();
            let key = bad.split(':').next().unwrap();
            assert!(e.starts_with(&format!("saltgate.{key}")), "{e}");
        }
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
