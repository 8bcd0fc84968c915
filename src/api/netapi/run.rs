//! Running checked chunks, one after the other, with the master's clients.

use std::sync::Arc;

use serde_json::{Value, json};

use super::acl::guard;
use super::{Client, Prepared, REST_TIMEOUT, Run};
use crate::api::error::ApiError;
use crate::salt::channel::PublishRequest;
use crate::salt::client::args::{publish_request, runner_low, wheel_args};
use crate::salt::client::batch::{Batch, subset_size};
use crate::salt::client::new_jid;
use crate::salt::event::map_get;
use crate::salt::{SaltError, to_json};

/// Runs prepared chunks in order; the first failure ends the run (see the module doc).
pub async fn execute(run: &Run<'_>, chunks: Vec<Prepared>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.into_iter().enumerate() {
        run_chunk(run, chunk, &mut out)
            .await
            .map_err(|error| ApiError::Chunk {
                index,
                error: Box::new(error),
            })?;
    }
    Ok(out)
}

/// Runs one chunk, pushing its result to `out`. Its error is the master's (a `SaltError`,
/// logged with its detail by the error layer) or saltgate's own refusal.
async fn run_chunk(run: &Run<'_>, chunk: Prepared, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let Run {
        salt,
        background,
        shapes,
    } = *run;
    let Prepared {
        client,
        auth,
        low,
        acl,
    } = chunk;
    let acl = acl.as_ref();
    match client {
        Client::Local => {
            let (req, opts) = publish_request(&low);
            guard(acl, &req)?;
            let salt = opts.clients(salt);
            let got = salt.local_sync(req, &auth, opts.timeout).await?;
            let unmatched = got.jid.is_none() || got.error.is_some();
            out.push(match shapes.local_unmatched {
                Some(sentence) if unmatched => Value::String(sentence.to_owned()),
                _ if shapes.local_omits_missing => got.returned(opts.full_return),
                _ => got.shaped(opts.full_return),
            });
        }
        Client::LocalAsync => {
            let (req, _) = publish_request(&low);
            guard(acl, &req)?;
            let published = salt.local_async(req, &auth).await?;
            out.push(match published.jid {
                Some(jid) if published.error.is_none() => {
                    json!({"jid": jid, "minions": published.minions})
                }
                _ => json!({}),
            });
        }
        Client::LocalSubset => {
            let (req, opts) = publish_request(&low);
            let n = subset_size(&low);
            let check = |job: &PublishRequest| guard(acl, job);
            out.push(salt.local_subset(req, &auth, &opts, n, check).await?);
        }
        Client::LocalBatch => {
            let (req, opts) = publish_request(&low);
            let batch = Batch::from_low(&low);
            let check = |job: &PublishRequest| guard(acl, job);
            out.extend(salt.local_batch(req, &auth, &opts, &batch, check).await?);
        }
        Client::Runner => {
            let (fun, args, opts) = runner_low(low);
            let timeout = opts.timeout.unwrap_or(REST_TIMEOUT);
            let ev = salt.runner_sync(&fun, args, &auth, timeout).await?;
            out.push(if opts.full_return {
                json!({"data": to_json(&ev.data), "tag": ev.tag})
            } else {
                ev.get("return").map(to_json).unwrap_or(Value::Null)
            });
        }
        Client::RunnerAsync => {
            let (fun, args, _) = runner_low(low);
            let started = salt.runner_async(&fun, args, &auth).await?;
            out.push(json!({"tag": started.tag, "jid": started.jid}));
        }
        Client::Wheel => {
            let (fun, args) = wheel_args(low);
            let data = salt.wheel(&fun, args, &auth).await?;
            let tag = map_get(&data, "tag").map(to_json).unwrap_or(Value::Null);
            out.push(json!({"tag": tag, "data": to_json(&data)}));
        }
        Client::WheelAsync => {
            let (fun, args) = wheel_args(low);
            // The master runs wheel calls synchronously and picks the jid itself, so as in
            // rest_cherrypy the call runs after the answer and the jid given here is ours.
            let permit = Arc::clone(&background.0).try_acquire_owned().map_err(|_| {
                SaltError::Unavailable("too many wheel_async calls in flight".into())
            })?;
            let jid = new_jid();
            let salt = salt.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = salt.wheel(&fun, args, &auth).await {
                    tracing::warn!(fun = %fun, error = %e, "wheel_async call failed");
                }
            });
            out.push(json!({"tag": format!("salt/wheel/{jid}"), "jid": jid}));
        }
    }
    Ok(())
}
