//! `saltgate.shared:`: several saltgates, one Redis (see [`crate::shared`]).
//!
//! ```yaml
//! saltgate:
//!   instance: gate-a              # shown on /ui; default: the host name
//!   shared:
//!     backend: redis
//!     url: redis://127.0.0.1:6379/0   # or host/port/db/username/password(_file)/tls
//!     tls_ca_file: /etc/saltgate/redis-ca.pem   # rediss:// only; default: the system's roots
//!     key_prefix: "saltgate:"
//!     timeout_ms: 50                # every Redis operation, 1 to 5000
//!     fail: local                   # local: fall back to this instance's stores; closed: 503
//! ```
//!
//! Without `url` (and without `host`), Salt's own `redis.host`, `redis.port`, `redis.db` and
//! `redis.password` master keys (those of Salt's Redis returner and cache) are the defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::{ConfigError, MasterSettings};

/// The only backend so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Redis or Valkey, through the redis-rs crate.
    Redis,
}

/// What a request does when the shared store cannot answer within `timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Decide with this instance's own stores (counted in `saltgate_shared_fallback_total`).
    #[default]
    Local,
    /// Answer 503 with `Retry-After`, so that the sender retries.
    Closed,
}

impl FailMode {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Closed => "closed",
        }
    }
}

/// `saltgate.shared` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    /// `redis`.
    pub backend: Backend,
    /// `redis://[user[:password]@]host[:port][/db]` (`rediss://` for TLS).
    #[serde(default)]
    pub url: Option<String>,
    /// The server's host name or address (instead of `url`).
    #[serde(default)]
    pub host: Option<String>,
    /// The server's port (default 6379).
    #[serde(default)]
    pub port: Option<u16>,
    /// The database index (default 0).
    #[serde(default)]
    pub db: Option<u32>,
    /// An ACL user name (Redis 6+).
    #[serde(default)]
    pub username: Option<String>,
    /// The password, written in the config.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (trailing newline removed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connect with TLS (the system's trust store, or `tls_ca_file`).
    #[serde(default)]
    pub tls: bool,
    /// PEM certificates to trust for a `rediss://` server instead of the system's roots (a
    /// private CA, or the server's own self-signed certificate).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Put before every key saltgate writes.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Milliseconds each operation may take before `fail` applies.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// `local` or `closed`.
    #[serde(default)]
    pub fail: FailMode,
}

fn default_prefix() -> String {
    "saltgate:".into()
}

fn default_timeout() -> u64 {
    50
}

/// The longest `timeout_ms` accepted: a shared store slower than this is not shared state
/// but a stalled request path.
pub const MAX_TIMEOUT_MS: u64 = 5000;

/// The validated shared-store settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// The connection URL, password included: never printed (see [`SharedConfig::display_url`]).
    url: String,
    /// The URL without its password, for logs and `check-config`.
    display_url: String,
    /// Put before every key.
    pub key_prefix: String,
    /// Each operation's deadline.
    pub timeout: Duration,
    /// What happens when the store cannot answer.
    pub fail: FailMode,
    /// PEM certificates trusted for TLS instead of the system's roots (`tls_ca_file`).
    pub tls_ca: Option<Vec<u8>>,
}

impl fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConfig")
            .field("url", &self.display_url)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("fail", &self.fail)
            .field("tls_ca", &self.tls_ca.as_ref().map(Vec::len))
            .finish()
    }
}

impl SharedConfig {
    /// Settings for `url` (tests; the config goes through [`build`]).
    pub fn new(url: &str, fail: FailMode) -> Result<Self, ConfigError> {
        let display_url = checked_url("saltgate.shared.url", url)?;
        Ok(Self {
            url: url.to_owned(),
            display_url,
            key_prefix: default_prefix(),
            timeout: Duration::from_millis(default_timeout()),
            fail,
            tls_ca: None,
        })
    }

    /// The URL to connect to (holds the password, if any).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any password replaced by `***`.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }
}

/// Salt's own `redis.*` master keys, as written (a port or db may be written as a string).
fn salt_key(master: &MasterSettings, key: &str) -> Option<String> {
    let value = match key {
        "redis.host" => &master.redis_host,
        "redis.port" => &master.redis_port,
        "redis.db" => &master.redis_db,
        _ => &master.redis_password,
    };
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Validates `saltgate.shared` (`None`: not configured, one instance alone).
pub fn build(
    raw: Option<&RawShared>,
    master: &MasterSettings,
) -> Result<Option<SharedConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let Backend::Redis = raw.backend;
    if raw.timeout_ms == 0 || raw.timeout_ms > MAX_TIMEOUT_MS {
        return Err(ConfigError::invalid(
            "saltgate.shared.timeout_ms",
            format!("must be 1 to {MAX_TIMEOUT_MS}"),
        ));
    }
    if raw.key_prefix.len() > 64 || raw.key_prefix.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            "saltgate.shared.key_prefix",
            "must be at most 64 characters, without control characters",
        ));
    }
    if raw.password.is_some() && raw.password_file.is_some() {
        return Err(ConfigError::invalid(
            "saltgate.shared.password_file",
            "give password or password_file, not both",
        ));
    }
    let password = match &raw.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    "saltgate.shared.password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let text = text.trim_end_matches(['\r', '\n']).to_owned();
            if text.is_empty() {
                return Err(ConfigError::invalid(
                    "saltgate.shared.password_file",
                    format!("{} is empty", path.display()),
                ));
            }
            Some(text)
        }
        None => raw.password.clone(),
    };
    let url = match &raw.url {
        Some(url) => {
            let parts = [
                ("host", raw.host.is_some()),
                ("port", raw.port.is_some()),
                ("db", raw.db.is_some()),
                ("username", raw.username.is_some()),
                ("tls", raw.tls),
            ];
            if let Some((key, _)) = parts.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(
                    format!("saltgate.shared.{key}"),
                    "give either url or host/port/db/username/tls, not both",
                ));
            }
            match password {
                None => url.clone(),
                Some(p) => with_password(url, &p)?,
            }
        }
        None => {
            let key = "saltgate.shared.host";
            let host = raw
                .host
                .clone()
                .or_else(|| salt_key(master, "redis.host"))
                .unwrap_or_else(|| "127.0.0.1".into());
            let port = match raw.port {
                Some(p) => p,
                None => match salt_key(master, "redis.port") {
                    Some(p) => p.parse().map_err(|_| {
                        ConfigError::invalid("redis.port", format!("{p:?} is not a port"))
                    })?,
                    None => 6379,
                },
            };
            let db = match raw.db {
                Some(d) => d,
                None => match salt_key(master, "redis.db") {
                    Some(d) => d.parse().map_err(|_| {
                        ConfigError::invalid("redis.db", format!("{d:?} is not a database index"))
                    })?,
                    None => 0,
                },
            };
            let password = password.or_else(|| salt_key(master, "redis.password"));
            if host.is_empty()
                || host.contains(['/', '@', '?', '#'])
                || host.contains(char::is_whitespace)
            {
                return Err(ConfigError::invalid(
                    key,
                    format!("{host:?} is not a host name or address"),
                ));
            }
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            let scheme = if raw.tls { "rediss" } else { "redis" };
            let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
            let auth = match (&raw.username, &password) {
                (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
                (Some(u), None) => format!("{}@", enc(u)),
                (None, Some(p)) => format!(":{}@", enc(p)),
                (None, None) => String::new(),
            };
            format!("{scheme}://{auth}{host}:{port}/{db}")
        }
    };
    let display_url = checked_url("saltgate.shared.url", &url)?;
    let tls_ca = match &raw.tls_ca_file {
        None => None,
        Some(path) => {
            let key = "saltgate.shared.tls_ca_file";
            if !url.starts_with("rediss://") {
                return Err(ConfigError::invalid(
                    key,
                    "needs TLS: a rediss:// url, or tls: true",
                ));
            }
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
            })?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            // The client parses the certificates as it is built: a broken one fails here, in
            // check-config, not at start.
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            redis::Client::build_with_tls(url.as_str(), certs).map_err(|e| {
                ConfigError::invalid(
                    key,
                    format!("{}: {}", path.display(), redacted(&e.to_string(), &url)),
                )
            })?;
            Some(pem)
        }
    };
    Ok(Some(SharedConfig {
        url,
        display_url,
        key_prefix: raw.key_prefix.clone(),
        timeout: Duration::from_millis(raw.timeout_ms),
        fail: raw.fail,
        tls_ca,
    }))
}

/// `url` with its password set to `password` (from `password_file`).
fn with_password(url: &str, password: &str) -> Result<String, ConfigError> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::invalid("saltgate.shared.url", format!("not a URL: {e}")))?;
    if parsed.password().is_some() {
        return Err(ConfigError::invalid(
            "saltgate.shared.password_file",
            "the url holds a password already",
        ));
    }
    parsed
        .set_password(Some(password))
        .map_err(|()| ConfigError::invalid("saltgate.shared.url", "cannot carry a password"))?;
    Ok(parsed.to_string())
}

/// Checks that `url` is a Redis URL the client takes, and returns it without its password.
fn checked_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(ConfigError::invalid(
            key,
            "must start with redis:// or rediss:// (TLS)",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, "names no host"));
    }
    redis::Client::open(url)
        .map_err(|e| ConfigError::invalid(key, redacted(&e.to_string(), url)))?;
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    Ok(parsed.to_string())
}

/// `text` with any password `url` holds replaced.
fn redacted(text: &str, url: &str) -> String {
    match reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(p) if !p.is_empty() => text.replace(&p, "***"),
        _ => text.to_owned(),
    }
}

/// The shared store as `check-config` shows it.
pub fn render(shared: Option<&SharedConfig>) -> serde_json::Value {
    match shared {
        None => serde_json::json!({"backend": "none"}),
        Some(s) => serde_json::json!({
            "backend": "redis",
            "url": s.display_url,
            "key_prefix": s.key_prefix,
            "timeout_ms": s.timeout.as_millis(),
            "fail": s.fail.as_str(),
            "tls_roots": if s.tls_ca.is_some() { "tls_ca_file" } else { "system" },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawShared {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn built(yaml: &str) -> Result<SharedConfig, ConfigError> {
        build(Some(&raw(yaml)), &MasterSettings::default()).map(Option::unwrap)
    }

    #[test]
    fn url_or_parts_and_defaults() {
        let c = built("backend: redis\nurl: redis://10.0.0.5:6380/2\n").unwrap();
        assert_eq!(c.url(), "redis://10.0.0.5:6380/2");
        assert_eq!(c.timeout, Duration::from_millis(50));
        assert_eq!(c.key_prefix, "saltgate:");
        assert_eq!(c.fail, FailMode::Local);
        let c = built(
            "backend: redis\nhost: redis.example\nport: 6390\ndb: 3\nusername: gate\n\
             password: 'p@ss/w:rd'\ntls: true\nfail: closed\ntimeout_ms: 200\n",
        )
        .unwrap();
        assert_eq!(
            c.url(),
            "rediss://gate:p%40ss%2Fw%3Ard@redis.example:6390/3"
        );
        assert_eq!(c.display_url(), "rediss://gate:***@redis.example:6390/3");
        assert!(!format!("{c:?}").contains("p%40ss"), "{c:?}");
        assert_eq!(c.fail, FailMode::Closed);
        let c = built("backend: redis\nhost: '::1'\n").unwrap();
        assert_eq!(c.url(), "redis://[::1]:6379/0");
    }

    #[test]
    fn salt_redis_keys_are_the_defaults_without_url() {
        let mut master: MasterSettings = serde_yaml::from_str(
            "redis.host: 10.1.1.1\nredis.port: '6381'\nredis.db: 4\nredis.password: pw\n",
        )
        .unwrap();
        let c = build(Some(&raw("backend: redis\n")), &master)
            .unwrap()
            .unwrap();
        assert_eq!(c.url(), "redis://:pw@10.1.1.1:6381/4");
        // saltgate's own keys win
        let c = build(Some(&raw("backend: redis\nport: 7000\n")), &master)
            .unwrap()
            .unwrap();
        assert_eq!(c.url(), "redis://:pw@10.1.1.1:7000/4");
        // an explicit url ignores them
        let c = build(Some(&raw("backend: redis\nurl: redis://h/1\n")), &master)
            .unwrap()
            .unwrap();
        assert_eq!(c.url(), "redis://h/1");
        master.redis_port = serde_json::json!("many");
        let e = build(Some(&raw("backend: redis\n")), &master).unwrap_err();
        assert_eq!(e.key(), Some("redis.port"));
    }

    #[test]
    fn tls_ca_file_needs_tls_and_a_pem_certificate() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.crt");
        let c = built(&format!(
            "backend: redis\nurl: rediss://r:6380/0\ntls_ca_file: {ca}\n"
        ))
        .unwrap();
        assert!(
            c.tls_ca
                .as_ref()
                .is_some_and(|p| p.starts_with(b"-----BEGIN"))
        );
        assert_eq!(render(Some(&c))["tls_roots"], "tls_ca_file");
        let c = built(&format!("backend: redis\ntls: true\ntls_ca_file: {ca}\n")).unwrap();
        assert!(c.url().starts_with("rediss://") && c.tls_ca.is_some());
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (yaml, why) in [
            (format!("url: redis://r/0\ntls_ca_file: {ca}"), "needs TLS"),
            (
                format!("url: rediss://r/0\ntls_ca_file: {}", broken.display()),
                "broken.pem",
            ),
            (
                "url: rediss://r/0\ntls_ca_file: /nonexistent/ca.pem".into(),
                "cannot read",
            ),
            (
                format!(
                    "url: rediss://r/0\ntls_ca_file: {}",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")
                ),
                "no PEM certificate",
            ),
        ] {
            let e = built(&format!("backend: redis\n{yaml}\n")).unwrap_err();
            assert_eq!(e.key(), Some("saltgate.shared.tls_ca_file"), "{yaml}");
            assert!(e.to_string().contains(why), "{yaml}: {e}");
        }
    }

    #[test]
    fn password_file_is_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let f = file.display();
        let c = built(&format!(
            "backend: redis\nurl: redis://r:6379/0\npassword_file: {f}\n"
        ))
        .unwrap();
        assert_eq!(c.url(), "redis://:s3cret@r:6379/0");
        assert!(!render(Some(&c)).to_string().contains("s3cret"));
        let c = built(&format!(
            "backend: redis\nusername: u\npassword_file: {f}\n"
        ))
        .unwrap();
        assert_eq!(c.url(), "redis://u:s3cret@127.0.0.1:6379/0");
        let e = built(&format!(
            "backend: redis\npassword: x\npassword_file: {f}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key(), Some("saltgate.shared.password_file"));
        let e = built("backend: redis\npassword_file: /nonexistent/pw\n").unwrap_err();
        assert_eq!(e.key(), Some("saltgate.shared.password_file"));
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (yaml, key) in [
            ("backend: redis\nurl: http://x/\n", "saltgate.shared.url"),
            ("backend: redis\nurl: 'not a url'\n", "saltgate.shared.url"),
            (
                "backend: redis\nurl: redis://x/0\nhost: y\n",
                "saltgate.shared.host",
            ),
            (
                "backend: redis\nurl: redis://x/0\ntls: true\n",
                "saltgate.shared.tls",
            ),
            (
                "backend: redis\ntimeout_ms: 0\n",
                "saltgate.shared.timeout_ms",
            ),
            (
                "backend: redis\ntimeout_ms: 60000\n",
                "saltgate.shared.timeout_ms",
            ),
            ("backend: redis\nhost: 'a/b'\n", "saltgate.shared.host"),
            (
                "backend: redis\nkey_prefix: \"a\\nb\"\n",
                "saltgate.shared.key_prefix",
            ),
        ] {
            let e = built(yaml).unwrap_err();
            assert_eq!(e.key(), Some(key), "{yaml}: {e}");
        }
        for yaml in [
            "backend: memcached\n",
            "backend: redis\ncolour: red\n",
            "backend: redis\nfail: open\n",
            "url: redis://x/0\n",
        ] {
            assert!(serde_yaml::from_str::<RawShared>(yaml).is_err(), "{yaml}");
        }
    }
}
