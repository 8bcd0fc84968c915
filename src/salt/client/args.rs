//! A lowstate chunk's arguments as Salt's clients read them: the publish of a `local` chunk, the
//! `low` of a runner (`RunnerClient._reformat_low`, with `parse_input`'s `name=value` split),
//! the keyword arguments of a wheel call, and the per-chunk options (`timeout`,
//! `gather_job_timeout`, `full_return`).
//!
//! The chunk is the JSON map the HTTP edge parsed, already checked (a `fun`, a `tgt` for the
//! local clients, no credentials); what is read here is never refused, only shaped.

use std::time::Duration;

use rmpv::Value as Mp;
use serde_json::{Map, Value, json};

use super::SaltClients;
use crate::salt::channel::PublishRequest;
use crate::salt::wire::payload::from_json;

/// Per-chunk options of the local and runner clients.
#[derive(Debug, Default, Clone)]
pub struct LocalOpts {
    /// How long to wait for returns (Salt's `timeout`); the client's default when `None`.
    pub timeout: Option<Duration>,
    /// How long minions get to answer `saltutil.find_job`; the client's default when `None`.
    pub gather_job_timeout: Option<Duration>,
    /// Return each minion's `{ret, retcode, jid}` (local) or the whole return event (runner).
    pub full_return: bool,
}

impl LocalOpts {
    /// The clients with this chunk's `gather_job_timeout`.
    pub fn clients(&self, salt: &SaltClients) -> SaltClients {
        let mut c = salt.clone();
        if let Some(g) = self.gather_job_timeout {
            c.gather_job_timeout = g;
        }
        c
    }
}

/// Keys of a local chunk that go to the master's publish `kwargs` as they are.
const PUBLISH_EXTRAS: &[&str] = &[
    "metadata",
    "ret_config",
    "ret_kwargs",
    "delimiter",
    "module_executors",
    "executor_opts",
];

/// The publish a `local` chunk makes (`tgt`, `fun`, `arg` with `kwarg` as a `__kwarg__` map,
/// `tgt_type` or its old name `expr_form`, `ret`, a client-chosen all-digit `jid`, and the
/// [`PUBLISH_EXTRAS`]), and the chunk's options.
pub fn publish_request(low: &Map<String, Value>) -> (PublishRequest, LocalOpts) {
    let tgt = low.get("tgt").map(from_json).unwrap_or(Mp::from("*"));
    let fun = low.get("fun").map(from_json).unwrap_or(Mp::Nil);
    let mut req = PublishRequest::new(tgt, fun);
    req.arg = match low.get("arg") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(from_json).collect(),
        Some(one) => vec![from_json(one)],
    };
    if let Some(Value::Object(kw)) = low.get("kwarg") {
        let mut m = vec![(Mp::from("__kwarg__"), Mp::Boolean(true))];
        m.extend(kw.iter().map(|(k, v)| (Mp::from(k.as_str()), from_json(v))));
        req.arg.push(Mp::Map(m));
    }
    if let Some(t) = low
        .get("tgt_type")
        .or_else(|| low.get("expr_form"))
        .and_then(Value::as_str)
    {
        req.tgt_type = t.to_owned();
    }
    if let Some(r) = low.get("ret").and_then(Value::as_str) {
        req.ret = r.to_owned();
    }
    if let Some(j) = low.get("jid").and_then(Value::as_str) {
        if !j.is_empty() && j.bytes().all(|b| b.is_ascii_digit()) {
            req.jid = j.to_owned();
        }
    }
    for key in PUBLISH_EXTRAS {
        if let Some(v) = low.get(*key) {
            req.extra.push(((*key).to_owned(), from_json(v)));
        }
    }
    let opts = LocalOpts {
        timeout: low
            .get("timeout")
            .and_then(as_f64)
            .filter(|s| *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0))),
        gather_job_timeout: low
            .get("gather_job_timeout")
            .and_then(as_f64)
            .filter(|s| *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3_600.0))),
        full_return: low.get("full_return").and_then(Value::as_bool) == Some(true),
    };
    (req, opts)
}

/// Salt's `parse_input`: `name=value` strings in `arg` become keyword arguments.
fn split_kwarg(s: &str) -> Option<(&str, &str)> {
    let (k, v) = s.split_once('=')?;
    if v.starts_with('=') || s.contains('\n') {
        return None;
    }
    let mut chars = k.chars();
    let first = chars.next()?;
    let ok_first = first.is_alphabetic() || first == '_';
    let ok_rest = chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (ok_first && ok_rest).then_some((k, v))
}

/// Runner arguments as RunnerClient's `_reformat_low` builds them: `arg` (with `k=v` split out),
/// `kwarg`, then every other key as a keyword. With positional arguments the master gets
/// `{arg, kwarg}`; without, the flat keywords, which the master matches to the function's
/// signature (dropping ones it does not take, as Salt's own client does).
pub fn runner_low(mut low: Map<String, Value>) -> (String, Mp, LocalOpts) {
    let fun = low
        .remove("fun")
        .and_then(|f| f.as_str().map(str::to_owned))
        .unwrap_or_default();
    let opts = LocalOpts {
        timeout: low
            .remove("timeout")
            .as_ref()
            .and_then(as_f64)
            .filter(|s| *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0))),
        gather_job_timeout: None,
        full_return: low.remove("full_return").and_then(|v| v.as_bool()) == Some(true),
    };
    let mut args = Vec::new();
    let mut kwargs = Map::new();
    match low.remove("arg") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item.as_str().and_then(split_kwarg) {
                    Some((k, v)) => {
                        kwargs.insert(k.to_owned(), Value::String(v.to_owned()));
                    }
                    None => args.push(item),
                }
            }
        }
        Some(one) => args.push(one),
    }
    if let Some(Value::Object(kw)) = low.remove("kwarg") {
        kwargs.extend(kw);
    }
    kwargs.extend(low);
    let low = if args.is_empty() {
        Value::Object(kwargs)
    } else {
        json!({"arg": args, "kwarg": kwargs})
    };
    (fun, from_json(&low), opts)
}

/// Wheel arguments are the chunk's top-level keys (less the options).
pub fn wheel_args(mut low: Map<String, Value>) -> (String, Vec<(String, Mp)>) {
    let fun = low
        .remove("fun")
        .and_then(|f| f.as_str().map(str::to_owned))
        .unwrap_or_default();
    for k in ["timeout", "full_return"] {
        low.remove(k);
    }
    let args = low.iter().map(|(k, v)| (k.clone(), from_json(v))).collect();
    (fun, args)
}

/// A number, or a string holding one (Salt's options arrive either way).
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A whole number, or a string holding one.
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salt::wire::payload::to_json;

    #[test]
    fn local_chunks_become_publishes() {
        let low = json!({"tgt": ["a", "b"], "tgt_type": "list", "fun": "test.arg",
            "arg": "one", "kwarg": {"x": 1}, "timeout": "7", "jid": "../x", "metadata": {"m": 1}});
        let (req, opts) = publish_request(low.as_object().unwrap());
        assert_eq!(req.tgt_type, "list");
        assert_eq!(req.arg.len(), 2);
        assert_eq!(to_json(&req.arg[1]), json!({"__kwarg__": true, "x": 1}));
        assert!(req.jid.is_empty());
        assert_eq!(opts.timeout, Some(Duration::from_secs(7)));
        assert_eq!(req.extra[0].0, "metadata");
    }

    #[test]
    fn runner_args_follow_reformat_low() {
        let low = json!({"fun": "test.arg", "arg": ["x", "y=z"], "kwarg": {"a": 1}, "b": 2});
        let (fun, args, _) = runner_low(low.as_object().unwrap().clone());
        assert_eq!(fun, "test.arg");
        assert_eq!(
            to_json(&args),
            json!({"arg": ["x"], "kwarg": {"y": "z", "a": 1, "b": 2}})
        );
        let low = json!({"fun": "jobs.lookup_jid", "jid": "1", "timeout": 3});
        let (_, args, opts) = runner_low(low.as_object().unwrap().clone());
        assert_eq!(to_json(&args), json!({"jid": "1"}));
        assert_eq!(opts.timeout, Some(Duration::from_secs(3)));
        assert_eq!(split_kwarg("a==b"), None);
        assert_eq!(split_kwarg("1a=b"), None);
        assert_eq!(split_kwarg("a.b-c=d=e"), Some(("a.b-c", "d=e")));
    }
}
