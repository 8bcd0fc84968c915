//! Salt's batch and subset modes of the `local` client, as rest_cherrypy's `local_batch` and
//! `local_subset` run them: find the minions first (`test.ping`, `sys.list_functions`), then
//! publish the job to them in groups (batch) or to `n` of them chosen at random (subset).
//!
//! Every publish of the job itself is first passed to the caller's `check` (the HTTP edge checks
//! compound commands against the caller's ACL there), so a refusal stops the run before the
//! publish it refuses.

use std::time::Duration;

use rand::seq::SliceRandom;
use rmpv::Value as Mp;
use serde_json::{Map, Value, json};

use super::SaltClients;
use super::args::{LocalOpts, as_f64, as_u64};
use crate::salt::channel::{Auth, PublishRequest};
use crate::salt::error::SaltError;

/// The longest `batch_wait` honoured between batches.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(60);

/// A `local_batch` chunk's batch options.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `batch`: a count (`2`, `"2"`) or a percentage of the minions (`"10%"`, the default).
    pub size: Value,
    /// `batch_wait`: the pause between two batches, at most [`MAX_BATCH_WAIT`].
    pub wait: Duration,
    /// `failhard`: stop after a batch in which a minion failed or did not return.
    pub failhard: bool,
}

impl Batch {
    /// The options of a chunk.
    pub fn from_low(low: &Map<String, Value>) -> Self {
        Self {
            size: low.get("batch").cloned().unwrap_or(json!("10%")),
            wait: low
                .get("batch_wait")
                .and_then(as_f64)
                .map(|s| Duration::from_secs_f64(s.max(0.0)).min(MAX_BATCH_WAIT))
                .unwrap_or_default(),
            failhard: low.get("failhard").and_then(Value::as_bool) == Some(true),
        }
    }
}

/// A `local_subset` chunk's `subset` (or `sub`): how many minions run the job, 3 by default.
pub fn subset_size(low: &Map<String, Value>) -> u64 {
    low.get("subset")
        .or_else(|| low.get("sub"))
        .and_then(as_u64)
        .unwrap_or(3)
        .max(1)
}

impl SaltClients {
    /// Salt's `cmd_subset`: ask the target for `sys.list_functions`, keep the minions that have
    /// the function, pick `n` of them at random, run the job on those (`{}` when none has it).
    pub async fn local_subset<E: From<SaltError>>(
        &self,
        req: PublishRequest,
        auth: &Auth,
        opts: &LocalOpts,
        n: u64,
        check: impl Fn(&PublishRequest) -> Result<(), E>,
    ) -> Result<Value, E> {
        let salt = opts.clients(self);
        let Some(fun) = req.fun.as_str().map(str::to_owned) else {
            return Ok(json!({}));
        };
        let mut probe = PublishRequest::new(req.tgt.clone(), "sys.list_functions");
        probe.tgt_type = req.tgt_type.clone();
        probe.extra = req.extra.clone();
        let listed = salt.local_sync(probe, auth, opts.timeout).await?;
        let mut having: Vec<String> = listed
            .returns
            .iter()
            .filter(|(_, ev)| {
                ev.get("return")
                    .and_then(Mp::as_array)
                    .is_some_and(|fs| fs.iter().any(|f| f.as_str() == Some(fun.as_str())))
            })
            .map(|(mid, _)| mid.clone())
            .collect();
        having.shuffle(&mut rand::rng());
        having.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        if having.is_empty() {
            return Ok(json!({}));
        }
        let mut job = req;
        job.tgt = Mp::Array(having.iter().map(|m| Mp::from(m.as_str())).collect());
        job.tgt_type = "list".into();
        check(&job)?;
        let got = salt.local_sync(job, auth, opts.timeout).await?;
        Ok(got.shaped(opts.full_return))
    }

    /// Salt's batch mode: find the minions that answer `test.ping`, then run the job on them in
    /// batches, one after the other; one result entry per minion (as rest_cherrypy's generator).
    pub async fn local_batch<E: From<SaltError>>(
        &self,
        req: PublishRequest,
        auth: &Auth,
        opts: &LocalOpts,
        batch: &Batch,
        check: impl Fn(&PublishRequest) -> Result<(), E>,
    ) -> Result<Vec<Value>, E> {
        let salt = opts.clients(self);
        let mut probe = PublishRequest::new(req.tgt.clone(), "test.ping");
        probe.tgt_type = req.tgt_type.clone();
        probe.extra = req.extra.clone();
        let pinged = salt.local_sync(probe, auth, opts.timeout).await?;
        let minions: Vec<String> = pinged.returns.keys().cloned().collect();
        let size = batch_size(&batch.size, minions.len());
        let mut out = Vec::new();
        for (i, group) in minions.chunks(size).enumerate() {
            if i > 0 && !batch.wait.is_zero() {
                tokio::time::sleep(batch.wait).await;
            }
            let mut job = req.clone();
            job.jid = String::new();
            job.tgt = Mp::Array(group.iter().map(|m| Mp::from(m.as_str())).collect());
            job.tgt_type = "list".into();
            check(&job)?;
            let got = salt.local_sync(job, auth, opts.timeout).await?;
            let mut failed = false;
            for (mid, v) in got
                .shaped(opts.full_return)
                .as_object()
                .into_iter()
                .flatten()
            {
                let retcode = got
                    .returns
                    .get(mid)
                    .and_then(|ev| ev.get("retcode"))
                    .and_then(Mp::as_i64)
                    .unwrap_or(0);
                failed |= retcode != 0 || v == &Value::Bool(false);
                out.push(json!({ mid.clone(): v.clone() }));
            }
            if batch.failhard && failed {
                break;
            }
        }
        Ok(out)
    }
}

/// `batch`: a count (`2`, `"2"`) or a percentage of the minions (`"10%"`), at least 1.
fn batch_size(batch: &Value, minions: usize) -> usize {
    let text = match batch {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    let size = if let Some(pct) = text.strip_suffix('%') {
        let pct: f64 = pct.trim().parse().unwrap_or(10.0);
        ((minions as f64) * pct / 100.0).ceil() as usize
    } else {
        text.parse::<usize>().unwrap_or(1)
    };
    size.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes() {
        assert_eq!(batch_size(&json!("10%"), 5), 1);
        assert_eq!(batch_size(&json!("50%"), 5), 3);
        assert_eq!(batch_size(&json!(2), 5), 2);
        assert_eq!(batch_size(&json!("2"), 5), 2);
        assert_eq!(batch_size(&json!("junk"), 5), 1);
    }
}
