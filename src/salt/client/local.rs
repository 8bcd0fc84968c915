//! The `local` client: publish a job to minions, then (for the sync form) gather
//! `salt/job/<jid>/ret/<minion>` events.
//!
//! Gathering follows Salt's LocalClient: wait `timeout`; for minions that have not answered,
//! publish `saltutil.find_job` and give them `gather_job_timeout` to say whether the job still
//! runs; those that do get another `timeout`, the others are given up on.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use tokio::time::Instant;

use super::{SaltClients, new_jid};
use crate::salt::bus::BusItem;
use crate::salt::channel::{Auth, PublishRequest, Published};
use crate::salt::error::SaltError;
use crate::salt::event::{Event, text_like};
use crate::salt::wire::payload::to_json;

/// What a synchronous `local` call gathered.
#[derive(Debug, Clone)]
pub struct LocalReturns {
    /// The job id.
    pub jid: Option<String>,
    /// Each minion's return event, by minion id.
    pub returns: BTreeMap<String, Arc<Event>>,
    /// Minions that were targeted but did not return.
    pub missing: Vec<String>,
    /// The master's explanation when nothing was published.
    pub error: Option<String>,
    /// Events may have been missed (the subscriber lagged or the bus dropped).
    pub incomplete: bool,
}

impl LocalReturns {
    /// The returns as `LocalClient.cmd` gives them, `{minion: return}` (with `full_return`,
    /// `{minion: {ret, retcode, jid}}`); targeted minions that did not return are `false`, and
    /// nothing was published when the master explained why (`{}`).
    pub fn shaped(&self, full_return: bool) -> serde_json::Value {
        let mut out = self.returned(full_return);
        if self.error.is_some() {
            return out;
        }
        if let serde_json::Value::Object(map) = &mut out {
            for mid in &self.missing {
                map.insert(mid.clone(), serde_json::Value::Bool(false));
            }
        }
        out
    }

    /// The returns that came, `{minion: return}` (see [`LocalReturns::shaped`]), without the
    /// minions that did not return (rest_tornado's shape).
    pub fn returned(&self, full_return: bool) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if self.error.is_some() {
            return serde_json::Value::Object(out);
        }
        for (mid, ev) in &self.returns {
            let ret = ev.get("return").map(to_json).unwrap_or_default();
            let v = if full_return {
                serde_json::json!({
                    "ret": ret,
                    "retcode": ev.get("retcode").map_or(serde_json::json!(0), to_json),
                    "jid": ev.get("jid").map(to_json).unwrap_or_default(),
                })
            } else {
                ret
            };
            out.insert(mid.clone(), v);
        }
        serde_json::Value::Object(out)
    }
}

impl SaltClients {
    /// Publishes a job and returns at once with its jid and targeted minions.
    pub async fn local_async(
        &self,
        mut req: PublishRequest,
        auth: &Auth,
    ) -> Result<Published, SaltError> {
        if req.jid.is_empty() {
            req.jid = new_jid();
        }
        self.channel.publish(&req, auth).await
    }

    /// Publishes a job and gathers the minions' returns with Salt's semantics.
    pub async fn local_sync(
        &self,
        mut req: PublishRequest,
        auth: &Auth,
        timeout: Option<Duration>,
    ) -> Result<LocalReturns, SaltError> {
        let timeout = timeout.unwrap_or(self.timeout);
        if req.jid.is_empty() {
            req.jid = new_jid();
        }
        let mut sub = self.bus.subscribe();
        let published = self.channel.publish(&req, auth).await?;
        let mut out = LocalReturns {
            jid: published.jid.clone(),
            returns: BTreeMap::new(),
            missing: Vec::new(),
            error: published.error.clone(),
            incomplete: false,
        };
        let Some(jid) = published.jid.clone() else {
            return Ok(out);
        };
        let ret_prefix = format!("salt/job/{jid}/ret/");
        let mut pending: HashSet<String> = published.minions.iter().cloned().collect();
        let mut deadline = Instant::now() + timeout;
        // The find_job round in progress: its ret prefix, its end, the minions still running.
        let mut find: Option<(String, Instant, HashSet<String>)> = None;
        while !pending.is_empty() {
            let wake = find.as_ref().map_or(deadline, |f| f.1);
            let item = tokio::select! {
                item = sub.recv() => item,
                () = tokio::time::sleep_until(wake) => {
                    match find.take() {
                        None => {
                            let prefix = self.find_job(&jid, &pending, auth).await;
                            let end = Instant::now() + self.gather_job_timeout;
                            find = Some((prefix.unwrap_or_default(), end, HashSet::new()));
                        }
                        Some((_, _, running)) => {
                            pending.retain(|m| running.contains(m));
                            if pending.is_empty() {
                                break;
                            }
                            deadline = Instant::now() + timeout;
                        }
                    }
                    continue;
                }
            };
            match item {
                Some(BusItem::Event(ev)) => {
                    if let Some(minion) = ev.tag.strip_prefix(&ret_prefix) {
                        let minion = minion.to_owned();
                        pending.remove(&minion);
                        out.returns.insert(minion, ev);
                    } else if let Some((prefix, _, running)) = find.as_mut() {
                        if !prefix.is_empty() && ev.tag.starts_with(prefix.as_str()) {
                            if let Some(m) = job_still_running(&ev) {
                                running.insert(m);
                            }
                        }
                    }
                }
                Some(BusItem::Lagged(n)) => {
                    tracing::warn!(jid = %jid, missed = n, "Job gatherer lagged behind the event bus");
                    out.incomplete = true;
                }
                Some(BusItem::Disconnected) => {
                    tracing::warn!(jid = %jid, "Event bus dropped while gathering job returns");
                    out.incomplete = true;
                }
                Some(BusItem::Connected) => {}
                None => return Err(SaltError::Unavailable("event bus closed".into())),
            }
        }
        let mut missing: Vec<String> = published
            .minions
            .iter()
            .filter(|m| !out.returns.contains_key(*m))
            .cloned()
            .collect();
        missing.sort();
        out.missing = missing;
        Ok(out)
    }

    /// Asks `minions` whether job `jid` still runs; returns the find_job's ret-tag prefix.
    async fn find_job(&self, jid: &str, minions: &HashSet<String>, auth: &Auth) -> Option<String> {
        let mut req = PublishRequest::new(
            Value::Array(minions.iter().map(|m| Value::from(m.as_str())).collect()),
            "saltutil.find_job",
        );
        req.tgt_type = "list".into();
        req.arg = vec![Value::from(jid)];
        req.jid = new_jid();
        match self.channel.publish(&req, auth).await {
            Ok(Published {
                jid: Some(find_jid),
                ..
            }) => Some(format!("salt/job/{find_jid}/ret/")),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(jid = %jid, error = %e, "saltutil.find_job could not be published");
                None
            }
        }
    }
}

/// A find_job return names a minion whose job still runs when its `return` is a non-empty map.
fn job_still_running(ev: &Event) -> Option<String> {
    let id = ev.get("id").and_then(text_like)?;
    let running = matches!(ev.get("return"), Some(Value::Map(m)) if !m.is_empty());
    running.then_some(id)
}
