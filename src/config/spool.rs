//! `saltgate.spool:`: the durable spool (see [`crate::spool`]).
//!
//! ```yaml
//! saltgate:
//!   spool:
//!     enabled: true                 # false: fire directly (503 when the bus cannot take a hook)
//!     dir: /var/cache/salt/master/saltgate   # default: <cachedir>/saltgate (built-in bus: no spool)
//!     max_bytes: 268435456          # pending + delivered entries; full: 503 + Retry-After
//!     queue_bytes: 33554432         # hooks waiting for the writer; full: 503 busy
//!     retention_secs: 86400         # delivered entries kept for the delivery log
//!     wait_for_reactor: true        # after the master (re)connects, deliver once its Reactor answers
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, MasterSettings};
use crate::spool::{ReactorCheck, SpoolConfig, Storage};

/// `saltgate.spool` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSpool {
    /// Commit every accepted hook to the spool before answering, and deliver it from there.
    /// Off: hooks are fired directly, answered 503 when the bus cannot take them, and lost if
    /// saltgate dies before they are written.
    pub enabled: bool,
    /// The directory of the spool file (`spool.redb`), an absolute path; created (mode 0700)
    /// when missing. Default on a master: `<cachedir>/saltgate` (the master's `cachedir`). On
    /// the built-in bus there is no default and no spool unless `dir` is set: nothing outside
    /// saltgate reads that bus, so there is nobody to deliver to after a restart.
    pub dir: Option<PathBuf>,
    /// Bytes of entries the spool holds: hooks not yet delivered plus delivered ones kept for
    /// the log (those make room first). Once undelivered hooks fill it, hooks are refused
    /// with 503 and `Retry-After`. Default 256 MiB (at least four of the largest body).
    pub max_bytes: Option<u64>,
    /// Bytes of hooks waiting to be committed; past it hooks get 503 `busy` (`Retry-After: 1`).
    pub queue_bytes: u64,
    /// Seconds delivered entries are kept for the delivery log.
    pub retention_secs: u64,
    /// After the master (re)connects, hold spooled hooks until its Reactor answers saltgate's
    /// `salt/reactors/manage/is_leader` request (needs the master's key file,
    /// `<cachedir>/.<user>_key`, readable). Only when the master config has a `reactor:` list.
    pub wait_for_reactor: bool,
}

impl Default for RawSpool {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            max_bytes: None,
            queue_bytes: crate::spool::DEFAULT_QUEUE_BYTES as u64,
            retention_secs: crate::spool::DEFAULT_RETENTION.as_secs(),
            wait_for_reactor: true,
        }
    }
}

/// The validated spool settings (`None`: off). `max_body` is the largest body a hook rule
/// accepts.
pub fn build(
    raw: &RawSpool,
    master: &MasterSettings,
    use_master: bool,
    max_body: u64,
) -> Result<Option<SpoolConfig>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let storage = match &raw.dir {
        Some(dir) if !dir.is_absolute() => {
            return Err(ConfigError::invalid(
                "saltgate.spool.dir",
                "must be an absolute path",
            ));
        }
        Some(dir) => Storage::Dir(dir.clone()),
        None if use_master => Storage::Dir(master.cachedir.join("saltgate")),
        None => return Ok(None),
    };
    let max_bytes = raw
        .max_bytes
        .unwrap_or(crate::spool::DEFAULT_MAX_BYTES.max(4 * max_body));
    if max_bytes < (1 << 20).max(2 * max_body) {
        return Err(ConfigError::invalid(
            "saltgate.spool.max_bytes",
            "must be at least 1048576 and twice the largest hook body allowed",
        ));
    }
    if raw.queue_bytes < 64 << 10 {
        return Err(ConfigError::invalid(
            "saltgate.spool.queue_bytes",
            "must be at least 65536",
        ));
    }
    let has_reactor = match &master.reactor {
        serde_json::Value::Null => false,
        serde_json::Value::Array(list) => !list.is_empty(),
        _ => true,
    };
    let user = &master.user;
    let reactor = (use_master && has_reactor && raw.wait_for_reactor).then(|| ReactorCheck {
        key_file: master.cachedir.join(format!(".{user}_key")),
    });
    let mut config = SpoolConfig::new(storage);
    config.max_bytes = max_bytes;
    config.queue_bytes = usize::try_from(raw.queue_bytes).unwrap_or(usize::MAX);
    config.retention = std::time::Duration::from_secs(raw.retention_secs);
    config.reactor = reactor;
    Ok(Some(config))
}

/// The spool as `check-config` shows it.
pub fn render(spool: Option<&SpoolConfig>) -> serde_json::Value {
    match spool {
        None => serde_json::json!({"enabled": false}),
        Some(s) => serde_json::json!({
            "enabled": true,
            "storage": match &s.storage {
                Storage::Dir(d) => d.display().to_string(),
                Storage::Memory => "memory".to_owned(),
            },
            "max_bytes": s.max_bytes,
            "queue_bytes": s.queue_bytes,
            "retention_secs": s.retention.as_secs(),
            "reactor_key_file": s.reactor.as_ref().map(|r| r.key_file.display().to_string()),
        }),
    }
}
