//! What a reload may change. [`Config::reload`] validates the new files as fully as a start
//! would, then puts back the running value of every key a reload cannot apply (listeners,
//! the master's sockets and settings, the spool, limits and timeouts, ...), naming each key it
//! kept. What it applies: `saltgate.hooks` (rules, secrets, allowlists, quotas, verifiers,
//! re-read from their files), `saltgate.unmatched_hooks`, `rest_cherrypy.webhook_disable_auth`,
//! `rest_cherrypy.cors_origin`, and the `ssl_crt`/`ssl_key` files of a listener that serves TLS
//! (a listener cannot move between TLS and plain HTTP without a restart). The shared store
//! (`saltgate.shared`, `saltgate.instance`, Salt's `redis.*` keys it reads) is restart-only: its
//! connection is made once, at start.
//!
//! Every field of every block is sorted here into one list or the other, by name: a field added
//! to a block without being sorted does not compile.

use std::collections::HashMap;
use std::path::Path;

use super::{
    Config, ConfigError, MasterSettings, RestCherrypy, RestTornado, RestWsgi, SaltgateSettings,
};

/// A reloaded config and the keys that changed in the files but need a restart (they keep
/// their running values).
#[derive(Debug)]
pub struct Reloaded {
    /// The config to put in force: the new files' reloadable keys over the running config.
    pub config: Config,
    /// Key paths whose new value was not applied (`rest_cherrypy.port`, ...).
    pub kept: Vec<String>,
}

impl Config {
    /// Reads `path` again (with `env`) for a reload of `running`: refused exactly as
    /// [`Config::load`] refuses, then every key a reload cannot apply is given its running
    /// value back (see the module's documentation).
    pub fn reload(
        path: &Path,
        env: &HashMap<String, String>,
        running: &Config,
    ) -> Result<Reloaded, ConfigError> {
        let (config, kept) = Self::load_with(path, env, Some(running))?;
        Ok(Reloaded { config, kept })
    }
}

/// Puts `running`'s value of every field named in `fixed` back into `new` where they differ,
/// naming the key in `kept`. The pattern lists every field of the type, so each new field must
/// be sorted into `fixed` or `reloadable`.
macro_rules! keep {
    ($kept:ident, $block:literal, $new:expr, $running:expr,
     $ty:ident { fixed: [$($f:ident),* $(,)?], reloadable: [$($r:ident),* $(,)?] $(,)? }) => {{
        let $ty { $($f: _,)* $($r: _,)* } = &$new;
        $(
            if $new.$f != $running.$f {
                $kept.push(key($block, stringify!($f)));
                $new.$f = $running.$f.clone();
            }
        )*
    }};
}

/// The key path of a field as written in the config.
fn key(block: &str, field: &str) -> String {
    let field = match field {
        "static_dir" => "static",
        "expanded_auth_matching" => "auth.enable_expanded_auth_matching",
        "redis_host" => "redis.host",
        "redis_port" => "redis.port",
        "redis_db" => "redis.db",
        "redis_password" => "redis.password",
        other => other,
    };
    if block.is_empty() {
        field.to_owned()
    } else {
        format!("{block}.{field}")
    }
}

/// Gives `new` the running value of everything a reload cannot apply; returns the keys whose
/// new value was thereby not applied.
pub(super) fn keep_running(new: &mut Config, running: &Config) -> Vec<String> {
    let mut kept = Vec::new();
    let Config {
        source: _,
        master: _,
        api: _,
        saltgate: _,
        use_master: _,
        hooks: _,
        unread: _,
        serve_cherrypy: _,
        wsgi: _,
        unread_wsgi: _,
        tornado: _,
        unread_tornado: _,
        spool: _,
        shared: _,
        secret_files: _,
    } = &new;
    keep!(
        kept,
        "",
        new.master,
        running.master,
        MasterSettings {
            fixed: [
                root_dir,
                sock_dir,
                cachedir,
                user,
                ipc_mode,
                tcp_master_pub_port,
                tcp_master_pull_port,
                ipv6,
                interface,
                ret_port,
                timeout,
                gather_job_timeout,
                token_expire,
                netapi_enable_clients,
                external_auth,
                reactor,
                permissive_acl,
                keep_acl_in_token,
                eauth_acl_module,
                expanded_auth_matching,
                key_cache,
                enable_ssh_minions,
                redis_host,
                redis_port,
                redis_db,
                redis_password,
            ],
            reloadable: [],
        }
    );
    keep!(
        kept,
        "rest_cherrypy",
        new.api,
        running.api,
        RestCherrypy {
            fixed: [
                port,
                host,
                disable_ssl,
                webhook_url,
                max_request_body_size,
                collect_stats,
                stats_disable_auth,
                root_prefix,
                static_dir,
                static_path,
                app,
                app_path,
            ],
            reloadable: [ssl_crt, ssl_key, webhook_disable_auth, cors_origin],
        }
    );
    keep_tls_mode(&mut kept, "rest_cherrypy", &mut new.api, &running.api);
    keep!(
        kept,
        "saltgate",
        new.saltgate,
        running.saltgate,
        SaltgateSettings {
            fixed: [
                bus,
                event_pull_framing,
                request_pool,
                max_connections,
                header_timeout_secs,
                trusted_proxies,
                event_queue,
                event_queue_bytes,
                stream_write_timeout_secs,
                stream_keepalive_secs,
                streams_disable_auth,
                ui_path,
                max_connections_per_client,
                max_streams,
                max_buffered_body_bytes,
                http2_max_streams,
                first_byte_timeout_secs,
                keep_alive_timeout_secs,
                body_timeout_secs,
                body_min_bytes_per_sec,
                body_rate_grace_secs,
                write_timeout_secs,
                rate_limit_ipv6_prefix,
                rate_limit_max_keys,
                auth_failure_burst,
                auth_failures_per_minute,
                auth_max_in_flight,
                spool,
                instance,
                shared,
            ],
            reloadable: [hooks_as_written, unmatched_hooks],
        }
    );
    if new.use_master != running.use_master {
        // `bus: auto` and the master's sockets appeared or went away.
        push_once(&mut kept, "saltgate.bus");
        new.use_master = running.use_master;
    }
    if new.serve_cherrypy != running.serve_cherrypy {
        kept.push("rest_cherrypy".to_owned());
        new.serve_cherrypy = running.serve_cherrypy;
    }
    match (&mut new.wsgi, &running.wsgi) {
        (Some(wsgi), Some(old)) => {
            keep!(
                kept,
                "rest_wsgi",
                *wsgi,
                *old,
                RestWsgi {
                    fixed: [port, host, disable_ssl, max_request_body_size],
                    reloadable: [ssl_crt, ssl_key],
                }
            );
            let tls = |w: &RestWsgi| !w.disable_ssl && w.ssl_crt.is_some();
            if tls(wsgi) != tls(old) {
                kept.push("rest_wsgi.ssl_crt".to_owned());
                wsgi.ssl_crt.clone_from(&old.ssl_crt);
                wsgi.ssl_key.clone_from(&old.ssl_key);
            }
        }
        (None, None) => {}
        _ => {
            kept.push("rest_wsgi".to_owned());
            new.wsgi.clone_from(&running.wsgi);
        }
    }
    match (&mut new.tornado, &running.tornado) {
        (Some(tornado), Some(old)) => {
            keep!(
                kept,
                "rest_tornado",
                *tornado,
                *old,
                RestTornado {
                    fixed: [
                        port,
                        address,
                        backlog,
                        disable_ssl,
                        debug,
                        websockets,
                        num_processes,
                        max_request_body_size,
                    ],
                    reloadable: [ssl_crt, ssl_key, webhook_disable_auth, cors_origin],
                }
            );
            let tls = |t: &RestTornado| !t.disable_ssl && t.ssl_crt.is_some();
            if tls(tornado) != tls(old) {
                kept.push("rest_tornado.ssl_crt".to_owned());
                tornado.ssl_crt.clone_from(&old.ssl_crt);
                tornado.ssl_key.clone_from(&old.ssl_key);
            }
        }
        (None, None) => {}
        _ => {
            kept.push("rest_tornado".to_owned());
            new.tornado.clone_from(&running.tornado);
        }
    }
    // Derived from keys kept above: the running one.
    new.spool.clone_from(&running.spool);
    new.shared.clone_from(&running.shared);
    new.unread.clone_from(&running.unread);
    new.unread_wsgi.clone_from(&running.unread_wsgi);
    new.unread_tornado.clone_from(&running.unread_tornado);
    kept
}

/// A listener cannot move between TLS and plain HTTP without a restart: if it would, its
/// running certificate paths stay.
fn keep_tls_mode(kept: &mut Vec<String>, block: &str, new: &mut RestCherrypy, old: &RestCherrypy) {
    let tls = |a: &RestCherrypy| !a.disable_ssl && a.ssl_crt.is_some();
    if tls(new) != tls(old) {
        kept.push(format!("{block}.ssl_crt"));
        new.ssl_crt.clone_from(&old.ssl_crt);
        new.ssl_key.clone_from(&old.ssl_key);
    }
}

fn push_once(kept: &mut Vec<String>, key: &str) {
    if !kept.iter().any(|k| k == key) {
        kept.push(key.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_store_and_salts_redis_keys_are_restart_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        let write = |url: &str, instance: &str, host: &str| {
            let text = format!(
                "redis.host: {host}\nsaltgate:\n  bus: builtin\n  instance: {instance}\n  \
                 shared: {{backend: redis, url: '{url}', fail: closed}}\n"
            );
            std::fs::write(&path, text).unwrap();
        };
        write("redis://127.0.0.1:6379/0", "gate-a", "redis-a");
        let env = HashMap::new();
        let running = Config::load(&path, &env).unwrap();
        write("redis://10.0.0.9:6379/1", "gate-b", "redis-b");
        let Reloaded { config, kept } = Config::reload(&path, &env, &running).unwrap();
        for key in ["saltgate.shared", "saltgate.instance", "redis.host"] {
            assert!(kept.iter().any(|k| k == key), "{key} not kept: {kept:?}");
        }
        assert_eq!(config.shared, running.shared);
        assert_eq!(
            config.shared.as_ref().map(|s| s.display_url()),
            Some("redis://127.0.0.1:6379/0")
        );
        assert_eq!(config.instance_name(), "gate-a");
    }
}
