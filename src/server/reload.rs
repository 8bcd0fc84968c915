//! Reload without restart (SIGHUP, systemd's `ExecReload`): the config files saltgate started
//! from are read again and validated as fully as at start (secret files read, verifiers built,
//! certificates read and matched with their keys); only then is anything swapped, and a config
//! that fails any of it is refused as a whole, the running one staying in force.
//!
//! What is swapped (docs/OPERATIONS.md, "Reloading"): the hook rule set and the CORS origins,
//! one [`Snapshot`] stored at once ([`crate::api::live`]), then each TLS listener's certificate
//! ([`super::tls::CertSlot`]). Requests in flight keep the snapshot they started with; open
//! connections and event streams are never touched, and TLS connections keep the certificate
//! they were set up with. A rule that keeps its path and quota keeps its senders' rate buckets;
//! the replay guard is not part of a rule set and is never reset. Keys a reload cannot apply
//! (listeners, the master, the spool, limits) keep their running values and each changed one is
//! logged ([`crate::config::reload`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;

use super::Listener;
use super::notify::{self, Notifier};
use super::tls::{self, CertSlot};
use crate::api::AppState;
use crate::api::cors::Cors;
use crate::api::hook::{HookRules, Hooks};
use crate::api::live::Snapshot;
use crate::config::{Config, Dialect, Reloaded, Unmatched};

/// The reloadable part of `config`. With `previous` (a reload), rate buckets of unchanged rules
/// carry over ([`HookRules::new`]).
pub fn snapshot(config: &Config, hooks: &Hooks, previous: Option<&Snapshot>) -> Snapshot {
    Snapshot {
        hooks: HookRules::new(
            hooks,
            config.hooks.clone(),
            config.saltgate.unmatched_hooks == Unmatched::Refuse,
            previous.map(|p| &p.hooks),
        ),
        cors: Cors::new(config.api.cors_origin.as_ref()),
        tornado: crate::api::dialect::tornado::Reloadable::new(config),
    }
}

/// What a reload needs: where the config came from, the state it swaps in, and the TLS
/// listeners' certificate slots.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    env: HashMap<String, String>,
    /// The config in force (its restart-only keys are the start's).
    running: Mutex<Config>,
    state: AppState,
    certs: Vec<(Dialect, Arc<CertSlot>)>,
}

/// A reload that was applied.
#[derive(Debug)]
pub struct Applied {
    /// Keys that changed but need a restart; their running values stay.
    pub kept: Vec<String>,
    /// Hook rules now in force (with the default rule).
    pub rules: usize,
    /// TLS listeners whose certificate was read again.
    pub certificates: usize,
}

impl Reloader {
    /// A reloader of `path` (read with `env`) into `state`, whose listeners are `listeners`.
    pub fn new(
        path: PathBuf,
        env: HashMap<String, String>,
        state: AppState,
        listeners: &[Listener],
    ) -> Self {
        let certs = listeners
            .iter()
            .filter_map(|l| l.tls.as_ref().map(|t| (l.dialect, Arc::clone(&t.cert))))
            .collect();
        Self {
            path,
            env,
            running: Mutex::new(state.config.clone()),
            state,
            certs,
        }
    }

    /// Reads, validates and applies the config files; on any error nothing changes. Blocking
    /// (it reads files): run it off the async workers.
    pub fn reload(&self) -> anyhow::Result<Applied> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let Reloaded { config, kept } = Config::reload(&self.path, &self.env, &running)?;
        let mut certificates = Vec::with_capacity(self.certs.len());
        for (dialect, slot) in &self.certs {
            let listen = config
                .listeners()
                .into_iter()
                .find(|l| l.dialect == *dialect)
                .with_context(|| format!("{}: the listener is gone", dialect.block()))?;
            let (Some(crt), Some(key)) = (&listen.ssl_crt, &listen.ssl_key) else {
                anyhow::bail!("{}: no ssl_crt/ssl_key", dialect.block());
            };
            certificates.push((slot, tls::certified_key(dialect.block(), crt, key)?));
        }
        // Everything is read and checked: swap.
        let previous = self.state.live.load();
        let next = snapshot(&config, &self.state.hooks, Some(&previous));
        let rules = next.hooks.rules.len();
        self.state.live.store(next);
        for (slot, key) in &certificates {
            slot.store(Arc::clone(key));
        }
        *running = config;
        Ok(Applied {
            kept,
            rules,
            certificates: certificates.len(),
        })
    }

    /// Reloads, logs the outcome (the error names the file and key at fault, never a secret's
    /// value), counts it in the metrics and returns the status line for systemd.
    pub async fn reload_logged(self: &Arc<Self>, listening: &str) -> String {
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || this.reload())
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload task failed: {e}")));
        let metrics = &self.state.metrics;
        match result {
            Ok(applied) => {
                metrics.config_loaded(true);
                for key in &applied.kept {
                    tracing::warn!(
                        key = %key,
                        "Reload: {key} changed but needs a restart; its running value stays"
                    );
                }
                tracing::info!(
                    config = %self.path.display(),
                    hook_rules = applied.rules,
                    tls_certificates = applied.certificates,
                    restart_needed = applied.kept.len(),
                    "Configuration reloaded (SIGHUP)"
                );
                notify::serving_status(listening, &self.state.bus).1
            }
            Err(e) => {
                metrics.config_refused();
                tracing::error!(
                    config = %self.path.display(),
                    error = format!("{e:#}"),
                    "Reload refused: the running configuration stays in force"
                );
                format!("Reload refused, running configuration kept: {e:#}")
            }
        }
    }
}

/// SIGHUP: `RELOADING=1` (with `MONOTONIC_USEC=`), the reload, then `READY=1` with a status
/// line, whether it was applied or refused. Without a config file (`saltgate serve` without
/// `--config`) there is nothing to read again: logged, and the running config stays.
pub async fn on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    notifier: Notifier,
    reloader: Option<Arc<Reloader>>,
    state: AppState,
    listening: String,
) {
    while hangups.recv().await.is_some() {
        let announced = notifier.reloading();
        let status = match &reloader {
            Some(reloader) => reloader.reload_logged(&listening).await,
            None => {
                tracing::warn!(
                    "Reload requested (SIGHUP), but saltgate runs without --config: \
                     nothing to read again"
                );
                notify::serving_status(&listening, &state.bus).1
            }
        };
        if announced {
            notifier.ready(&status);
        }
    }
}
