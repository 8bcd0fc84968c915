//! The formatted event views of salt-api (`/ws?format_events` in rest_cherrypy,
//! `/formatted_events/<token>` in rest_tornado): a pure state machine that folds bus events into
//! a jobs view and a minions view, and says which view changed.
//!
//! Behaviour, as Salt's `SaltInfo` (3007):
//! - `salt/job/<jid>/new` adds the job `{jid, start_time, minions: {<mid>: {"success": false}},
//!   fun, tgt, tgt_type, state: "running"}`; `salt/job/<jid>/ret/<mid>` records the minion's
//!   `return`, `retcode` and `success`, and the job becomes `"complete"` once every minion it
//!   holds has `success: true` (a job with a failed minion stays `"running"`, as in Salt). A ret
//!   for a job whose `new` was missed makes a job holding only `minions` (and `state` once
//!   complete). A `grains.items` ret also stores the return as that minion's `grains`.
//! - `salt/key` with `act: accept` adds a minion, `act: delete` removes it.
//! - `salt/presence/present` and `salt/presence/change` drop minions that left and add those that
//!   arrived; the caller runs `grains.items` on the arrivals ([`Changes::grains_for`]).
//! - After each change the whole view is sent: `{"jobs": {<jid>: job, ...}}` and
//!   `{"minions": ...}`, a list of `{grains, id}` for rest_cherrypy and a map keyed by minion id
//!   for rest_tornado, whose frames also end in `"\n\n"`. JSON is written as Python writes it.
//!
//! Differences from salt-api, on purpose:
//! - **Bounded.** Salt keeps every job for the life of the socket. Here the jobs view keeps the
//!   newest [`Limits::jobs`] jobs and at most [`Limits::bytes`] of job data (returns are
//!   counted by an estimate of their JSON size); older jobs are evicted and vanish from the next
//!   snapshot. The minions view holds at most [`Limits::minions`] minions and [`Limits::bytes`]
//!   of grains; a minion beyond the cap is not added, and grains beyond the budget are not
//!   stored (the minion stays, without grains). Each case is logged at debug.
//! - **Malformed events are skipped**, with a debug log: a tag with too few parts
//!   (`salt/job/error`, which ends Salt's stream), missing or mistyped keys (Salt raises and the
//!   socket dies). Only tags under `salt/` are read; Salt looks at the second tag part whatever
//!   the first is, so `myapp/job/1/new` would be taken for a job.
//! - **Presence** reads `lost`/`new` when the event has them and `present` otherwise. rest_tornado
//!   treats a `change` event with an empty `lost` as "every minion left" and empties the view;
//!   rest_cherrypy reads only `present` and raises on `change` events. Arrivals are added to the
//!   view at once (as rest_tornado), so a minion whose grains never come is not asked again on
//!   every presence tick (rest_cherrypy asks until its grains arrive), and the grains job targets
//!   them as a `list` (Salt sends the comma-joined ids as a glob, which matches nothing when more
//!   than one minion arrived).
//! - A `grains.items` job does not empty the minions view (rest_cherrypy does, so a
//!   `grains.items` on one minion wipes the whole fleet from its view; rest_tornado no longer
//!   does).
//! - A `new` event for a job that already has returns keeps them (Salt replaces the job and
//!   loses them).

use indexmap::IndexMap;
use rmpv::Value;

use super::pyjson::{push_str_json, write_py_json};
use crate::salt::Event;
use crate::salt::event::text_like;

/// The most jobs the jobs view keeps.
pub const MAX_JOBS: usize = 1_000;
/// The most minions the minions view keeps.
pub const MAX_MINIONS: usize = 10_000;
/// The estimated JSON bytes each view may hold.
pub const MAX_VIEW_BYTES: usize = 8 << 20;

/// Which salt-api's output the views follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// rest_cherrypy `/ws?format_events`: minions as a list, frames as bare JSON.
    Cherrypy,
    /// rest_tornado `/formatted_events`: minions as a map, frames end in `"\n\n"`.
    Tornado,
}

impl Dialect {
    /// Finishes a JSON text as this dialect's frame.
    pub fn frame(self, mut json: String) -> String {
        if self == Self::Tornado {
            json.push_str("\n\n");
        }
        json
    }
}

/// How much the views may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Jobs kept; the oldest go first.
    pub jobs: usize,
    /// Minions kept; more are not added.
    pub minions: usize,
    /// Estimated JSON bytes per view.
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            jobs: MAX_JOBS,
            minions: MAX_MINIONS,
            bytes: MAX_VIEW_BYTES,
        }
    }
}

/// What one event changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The jobs view changed (Salt resends it).
    pub jobs: bool,
    /// The minions view changed (Salt resends it).
    pub minions: bool,
    /// Minions that just arrived: run `grains.items` on them.
    pub grains_for: Vec<String>,
}

impl Changes {
    /// Folds `other` into `self`, for a burst of events sent as one snapshot.
    pub fn merge(&mut self, other: Changes) {
        self.jobs |= other.jobs;
        self.minions |= other.minions;
        for mid in other.grains_for {
            if !self.grains_for.contains(&mid) {
                self.grains_for.push(mid);
            }
        }
    }
}

/// The jobs and minions views of one socket.
#[derive(Debug)]
pub struct Digest {
    dialect: Dialect,
    limits: Limits,
    jobs: IndexMap<String, Job>,
    job_bytes: usize,
    minions: IndexMap<String, Minion>,
    minion_bytes: usize,
}

/// The fields a `new` event gives a job, in Salt's key order.
#[derive(Debug, Clone)]
struct JobHeader {
    jid: Value,
    start_time: Value,
    fun: Value,
    tgt: Value,
    tgt_type: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Complete,
}

#[derive(Debug, Default)]
struct Job {
    header: Option<JobHeader>,
    minions: IndexMap<String, MinionResult>,
    state: Option<State>,
    bytes: usize,
}

/// One minion's part in a job.
#[derive(Debug, Default)]
struct MinionResult {
    /// Listed by the `new` event before any return: Salt's dict then starts with `success`.
    success_first: bool,
    returned: Option<Returned>,
}

#[derive(Debug)]
struct Returned {
    ret: Value,
    retcode: Value,
    success: bool,
}

impl MinionResult {
    fn success(&self) -> bool {
        self.returned.as_ref().is_some_and(|r| r.success)
    }

    fn bytes(&self, mid: &str) -> usize {
        mid.len()
            + 32
            + self
                .returned
                .as_ref()
                .map_or(0, |r| approx_size(&r.ret) + approx_size(&r.retcode))
    }
}

#[derive(Debug, Default)]
struct Minion {
    grains: Option<Value>,
}

impl Minion {
    fn bytes(&self, mid: &str) -> usize {
        2 * mid.len() + 32 + self.grains.as_ref().map_or(0, approx_size)
    }
}

/// The tags the views read.
enum Kind<'a> {
    JobNew,
    JobRet { jid: &'a str, mid: &'a str },
    Key,
    Presence,
}

fn classify(tag: &str) -> Option<Kind<'_>> {
    let mut parts = tag.split('/');
    if parts.next() != Some("salt") {
        return None;
    }
    let rest: Vec<&str> = parts.collect();
    match rest.as_slice() {
        ["job", jid, "new"] if !jid.is_empty() => Some(Kind::JobNew),
        ["job", jid, "ret", mid] if !jid.is_empty() && !mid.is_empty() => {
            Some(Kind::JobRet { jid, mid })
        }
        ["key"] => Some(Kind::Key),
        ["presence", _] => Some(Kind::Presence),
        ["job", ..] | ["presence", ..] => {
            tracing::debug!(
                tag,
                "Formatted events: skipped an event with an unexpected tag"
            );
            None
        }
        _ => None,
    }
}

impl Digest {
    /// Empty views, as a socket starts.
    pub fn new(dialect: Dialect, limits: Limits) -> Self {
        Self {
            dialect,
            limits,
            jobs: IndexMap::new(),
            job_bytes: 0,
            minions: IndexMap::new(),
            minion_bytes: 0,
        }
    }

    /// Folds one event into the views.
    pub fn apply(&mut self, event: &Event) -> Changes {
        let Some(kind) = classify(&event.tag) else {
            return Changes::default();
        };
        if event.data.as_map().is_none() {
            tracing::debug!(tag = %event.tag, "Formatted events: skipped an event whose data is not a map");
            return Changes::default();
        }
        let changes = match kind {
            Kind::JobNew => self.job_new(event),
            Kind::JobRet { jid, mid } => self.job_ret(event, jid, mid),
            Kind::Key => self.key(event),
            Kind::Presence => self.presence(event),
        };
        if changes.is_none() {
            tracing::debug!(tag = %event.tag, "Formatted events: skipped a malformed event");
        }
        changes.unwrap_or_default()
    }

    fn job_new(&mut self, event: &Event) -> Option<Changes> {
        let jid_value = event.get("jid")?;
        let jid = text_like(jid_value)?;
        let targeted: Vec<String> = event
            .get("minions")?
            .as_array()?
            .iter()
            .filter_map(text_like)
            .collect();
        let header = JobHeader {
            jid: jid_value.clone(),
            start_time: event.get("_stamp")?.clone(),
            fun: event.get("fun")?.clone(),
            tgt: event.get("tgt")?.clone(),
            tgt_type: event.get("tgt_type")?.clone(),
        };
        let job = self.jobs.entry(jid.clone()).or_default();
        let old_bytes = job.bytes;
        let had_returns = !job.minions.is_empty();
        for mid in targeted {
            job.minions.entry(mid).or_insert_with(|| MinionResult {
                success_first: true,
                returned: None,
            });
        }
        job.state = Some(
            if had_returns && job.minions.values().all(MinionResult::success) {
                State::Complete
            } else {
                State::Running
            },
        );
        job.bytes = header_bytes(&header)
            + job
                .minions
                .iter()
                .map(|(mid, m)| m.bytes(mid))
                .sum::<usize>();
        job.header = Some(header);
        self.job_bytes = self.job_bytes - old_bytes + job.bytes;
        self.evict_jobs();
        Some(Changes {
            jobs: true,
            ..Changes::default()
        })
    }

    fn job_ret(&mut self, event: &Event, jid: &str, mid: &str) -> Option<Changes> {
        let returned = Returned {
            ret: event.get("return")?.clone(),
            retcode: event.get("retcode")?.clone(),
            success: event.get("success")?.as_bool()?,
        };
        let grains = (event.get("fun").and_then(text_like).as_deref() == Some("grains.items"))
            .then(|| returned.ret.clone());
        let job = self.jobs.entry(jid.to_owned()).or_default();
        let before = job.minions.get(mid).map_or(0, |m| m.bytes(mid));
        let entry = job.minions.entry(mid.to_owned()).or_default();
        entry.returned = Some(returned);
        let after = entry.bytes(mid);
        job.bytes = job.bytes - before + after;
        self.job_bytes = self.job_bytes - before + after;
        if job.minions.values().all(MinionResult::success) {
            job.state = Some(State::Complete);
        }
        self.evict_jobs();
        let mut changes = Changes {
            jobs: true,
            ..Changes::default()
        };
        if let Some(grains) = grains {
            changes.minions = self.set_grains(mid, grains);
        }
        Some(changes)
    }

    fn key(&mut self, event: &Event) -> Option<Changes> {
        let act = text_like(event.get("act")?)?;
        let mid = text_like(event.get("id")?)?;
        match act.as_str() {
            "delete" => self.remove_minion(&mid),
            "accept" => {
                self.add_minion(&mid);
            }
            _ => {}
        }
        // Salt resends the minions view on every key event, whatever the act.
        Some(Changes {
            minions: true,
            ..Changes::default()
        })
    }

    fn presence(&mut self, event: &Event) -> Option<Changes> {
        let list = |key: &str| -> Option<Vec<String>> {
            let items = event.get(key)?.as_array()?;
            Some(items.iter().filter_map(text_like).collect())
        };
        let (lost, new, present) = (list("lost"), list("new"), list("present"));
        if lost.is_none() && new.is_none() && present.is_none() {
            return None;
        }
        let gone: Vec<String> = match (&lost, &present) {
            (Some(lost), _) => lost.clone(),
            (None, Some(present)) => self
                .minions
                .keys()
                .filter(|m| !present.contains(m))
                .cloned()
                .collect(),
            (None, None) => Vec::new(),
        };
        let arrived: Vec<String> = match (new, present) {
            (Some(new), _) => new,
            (None, Some(present)) => present
                .into_iter()
                .filter(|m| !self.minions.contains_key(m))
                .collect(),
            (None, None) => Vec::new(),
        };
        let mut changes = Changes::default();
        for mid in &gone {
            if self.minions.contains_key(mid) {
                self.remove_minion(mid);
                changes.minions = true;
            }
        }
        for mid in arrived {
            if changes.grains_for.contains(&mid) {
                continue;
            }
            if self.add_minion(&mid) {
                // A minion that came back loses its old grains until the new ones arrive.
                self.set_grains_none(&mid);
                changes.minions = true;
                changes.grains_for.push(mid);
            }
        }
        Some(changes)
    }

    /// Adds `mid` if there is room; whether it is (now) in the view.
    fn add_minion(&mut self, mid: &str) -> bool {
        if self.minions.contains_key(mid) {
            return true;
        }
        if self.minions.len() >= self.limits.minions {
            tracing::debug!(
                minion = mid,
                "Formatted events: the minions view is full; minion not added"
            );
            return false;
        }
        let minion = Minion::default();
        self.minion_bytes += minion.bytes(mid);
        self.minions.insert(mid.to_owned(), minion);
        true
    }

    fn remove_minion(&mut self, mid: &str) {
        if let Some(m) = self.minions.shift_remove(mid) {
            self.minion_bytes -= m.bytes(mid);
        }
    }

    fn set_grains_none(&mut self, mid: &str) {
        if let Some(m) = self.minions.get_mut(mid) {
            let before = m.bytes(mid);
            m.grains = None;
            self.minion_bytes = self.minion_bytes - before + m.bytes(mid);
        }
    }

    /// Stores a minion's grains; whether the view changed.
    fn set_grains(&mut self, mid: &str, grains: Value) -> bool {
        if !self.add_minion(mid) {
            return false;
        }
        self.set_grains_none(mid);
        let size = approx_size(&grains);
        if self.minion_bytes + size > self.limits.bytes {
            tracing::debug!(
                minion = mid,
                size,
                "Formatted events: the minions view is full; grains not stored"
            );
            return true;
        }
        if let Some(m) = self.minions.get_mut(mid) {
            m.grains = Some(grains);
            self.minion_bytes += size;
        }
        true
    }

    fn evict_jobs(&mut self) {
        while self.jobs.len() > self.limits.jobs || self.job_bytes > self.limits.bytes {
            let Some((jid, job)) = self.jobs.shift_remove_index(0) else {
                break;
            };
            self.job_bytes -= job.bytes;
            tracing::debug!(
                jid,
                "Formatted events: evicted the oldest job from the view"
            );
        }
    }

    /// The frames for `changes`: the jobs view first, then the minions view, as Salt sends them.
    pub fn frames(&self, changes: &Changes) -> Vec<String> {
        let mut out = Vec::with_capacity(2);
        if changes.jobs {
            out.push(self.dialect.frame(self.jobs_json()));
        }
        if changes.minions {
            out.push(self.dialect.frame(self.minions_json()));
        }
        out
    }

    /// `{"jobs": {...}}`.
    pub fn jobs_json(&self) -> String {
        let mut out = String::with_capacity(64 + self.job_bytes);
        out.push_str("{\"jobs\": {");
        for (i, (jid, job)) in self.jobs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_str_json(&mut out, jid);
            out.push_str(": ");
            write_job(&mut out, job);
        }
        out.push_str("}}");
        out
    }

    /// `{"minions": [...]}` (rest_cherrypy) or `{"minions": {...}}` (rest_tornado).
    pub fn minions_json(&self) -> String {
        let mut out = String::with_capacity(64 + self.minion_bytes);
        let (open, close) = match self.dialect {
            Dialect::Cherrypy => ('[', ']'),
            Dialect::Tornado => ('{', '}'),
        };
        out.push_str("{\"minions\": ");
        out.push(open);
        for (i, (mid, minion)) in self.minions.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            if self.dialect == Dialect::Tornado {
                push_str_json(&mut out, mid);
                out.push_str(": ");
            }
            out.push('{');
            if let Some(grains) = &minion.grains {
                out.push_str("\"grains\": ");
                write_py_json(&mut out, grains);
                out.push_str(", ");
            }
            out.push_str("\"id\": ");
            push_str_json(&mut out, mid);
            out.push('}');
        }
        out.push(close);
        out.push('}');
        out
    }
}

fn header_bytes(h: &JobHeader) -> usize {
    64 + [&h.jid, &h.start_time, &h.fun, &h.tgt, &h.tgt_type]
        .into_iter()
        .map(approx_size)
        .sum::<usize>()
}

fn write_job(out: &mut String, job: &Job) {
    let field = |out: &mut String, first: bool, key: &str, value: &Value| {
        if !first {
            out.push_str(", ");
        }
        push_str_json(out, key);
        out.push_str(": ");
        write_py_json(out, value);
    };
    out.push('{');
    if let Some(h) = &job.header {
        field(out, true, "jid", &h.jid);
        field(out, false, "start_time", &h.start_time);
        out.push_str(", ");
    }
    out.push_str("\"minions\": {");
    for (i, (mid, m)) in job.minions.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_str_json(out, mid);
        out.push_str(": {");
        match (&m.returned, m.success_first) {
            (None, _) => out.push_str("\"success\": false"),
            (Some(r), true) => {
                field(out, true, "success", &Value::Boolean(r.success));
                field(out, false, "return", &r.ret);
                field(out, false, "retcode", &r.retcode);
            }
            (Some(r), false) => {
                field(out, true, "return", &r.ret);
                field(out, false, "retcode", &r.retcode);
                field(out, false, "success", &Value::Boolean(r.success));
            }
        }
        out.push('}');
    }
    out.push('}');
    if let Some(h) = &job.header {
        field(out, false, "fun", &h.fun);
        field(out, false, "tgt", &h.tgt);
        field(out, false, "tgt_type", &h.tgt_type);
    }
    match job.state {
        Some(State::Running) => out.push_str(", \"state\": \"running\""),
        Some(State::Complete) => out.push_str(", \"state\": \"complete\""),
        None => {}
    }
    out.push('}');
}

/// Roughly the JSON size of `value`, without recursion.
fn approx_size(value: &Value) -> usize {
    let mut stack = vec![value];
    let mut size = 0;
    while let Some(v) = stack.pop() {
        size += match v {
            Value::String(s) => s.as_bytes().len() + 2,
            Value::Binary(b) => b.len() + 2,
            Value::Ext(_, b) => b.len() + 4,
            Value::Array(items) => {
                stack.extend(items.iter());
                2 + 2 * items.len()
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    stack.push(k);
                    stack.push(v);
                }
                2 + 4 * entries.len()
            }
            _ => 8,
        };
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    const JID: &str = "20260105093012345678";

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    fn strs(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::from(*s)).collect())
    }

    /// `salt/job/<jid>/new` as a 3007 master fires it for `salt '*' <fun>`.
    fn new_job(jid: &str, fun: &str, minions: &[&str]) -> Event {
        Event::new(
            format!("salt/job/{jid}/new"),
            map(vec![
                ("jid", Value::from(jid)),
                ("tgt_type", Value::from("glob")),
                ("tgt", Value::from("*")),
                ("user", Value::from("saltdev")),
                ("fun", Value::from(fun)),
                ("arg", Value::Array(vec![])),
                ("minions", strs(minions)),
                ("missing", Value::Array(vec![])),
                ("_stamp", Value::from("2026-01-05T09:30:12.351022")),
            ]),
        )
    }

    /// `salt/job/<jid>/ret/<mid>` as a 3007 minion returns it.
    fn ret(jid: &str, mid: &str, fun: &str, value: Value, success: bool) -> Event {
        Event::new(
            format!("salt/job/{jid}/ret/{mid}"),
            map(vec![
                ("cmd", Value::from("_return")),
                ("id", Value::from(mid)),
                ("success", Value::Boolean(success)),
                ("return", value),
                ("retcode", Value::from(if success { 0 } else { 1 })),
                ("jid", Value::from(jid)),
                ("fun", Value::from(fun)),
                ("fun_args", Value::Array(vec![])),
                ("user", Value::from("saltdev")),
                ("_stamp", Value::from("2026-01-05T09:30:12.512345")),
            ]),
        )
    }

    fn key(act: &str, mid: &str) -> Event {
        Event::new(
            "salt/key",
            map(vec![
                ("id", Value::from(mid)),
                ("act", Value::from(act)),
                ("result", Value::Boolean(true)),
                ("_stamp", Value::from("2026-01-05T09:31:00.000001")),
            ]),
        )
    }

    fn presence_present(minions: &[&str]) -> Event {
        Event::new(
            "salt/presence/present",
            map(vec![
                ("present", strs(minions)),
                ("_stamp", Value::from("2026-01-05T09:32:00.000001")),
            ]),
        )
    }

    fn presence_change(new: &[&str], lost: &[&str]) -> Event {
        Event::new(
            "salt/presence/change",
            map(vec![
                ("new", strs(new)),
                ("lost", strs(lost)),
                ("_stamp", Value::from("2026-01-05T09:32:00.000001")),
            ]),
        )
    }

    fn grains(mid: &str) -> Value {
        map(vec![
            ("id", Value::from(mid)),
            ("os", Value::from("Debian")),
            ("num_cpus", Value::from(2)),
            ("ipv4", strs(&["127.0.0.1", "10.0.0.5"])),
        ])
    }

    fn jobs_only() -> Changes {
        Changes {
            jobs: true,
            ..Changes::default()
        }
    }

    fn minions_only() -> Changes {
        Changes {
            minions: true,
            ..Changes::default()
        }
    }

    #[test]
    fn a_job_goes_from_running_to_complete_in_salts_key_order() {
        let mut d = Digest::new(Dialect::Cherrypy, Limits::default());
        assert_eq!(
            d.apply(&new_job(JID, "test.ping", &["m1", "m2"])),
            jobs_only()
        );
        assert_eq!(
            d.jobs_json(),
            format!(
                r#"{{"jobs": {{"{JID}": {{"jid": "{JID}", "start_time": "2026-01-05T09:30:12.351022", "minions": {{"m1": {{"success": false}}, "m2": {{"success": false}}}}, "fun": "test.ping", "tgt": "*", "tgt_type": "glob", "state": "running"}}}}}}"#
            )
        );
        assert_eq!(
            d.apply(&ret(JID, "m1", "test.ping", Value::Boolean(true), true)),
            jobs_only()
        );
        assert!(d.jobs_json().contains(r#""state": "running""#));
        assert!(d.jobs_json().contains(
            r#""m1": {"success": true, "return": true, "retcode": 0}, "m2": {"success": false}"#
        ));
        d.apply(&ret(JID, "m2", "test.ping", Value::Boolean(true), true));
        assert!(d.jobs_json().ends_with(r#""state": "complete"}}}"#));
    }

    #[test]
    fn a_failed_minion_keeps_the_job_running_as_salt_does() {
        let mut d = Digest::new(Dialect::Cherrypy, Limits::default());
        d.apply(&new_job(JID, "cmd.run", &["m1"]));
        d.apply(&ret(JID, "m1", "cmd.run", Value::from("boom"), false));
        let json = d.jobs_json();
        assert!(
            json.contains(r#""m1": {"success": false, "return": "boom", "retcode": 1}"#),
            "{json}"
        );
        assert!(json.contains(r#""state": "running""#), "{json}");
    }

    #[test]
    fn a_ret_without_its_new_event_makes_a_bare_job() {
        let mut d = Digest::new(Dialect::Tornado, Limits::default());
        d.apply(&ret(JID, "m1", "test.ping", Value::Boolean(true), true));
        assert_eq!(
            d.jobs_json(),
            format!(
                r#"{{"jobs": {{"{JID}": {{"minions": {{"m1": {{"return": true, "retcode": 0, "success": true}}}}, "state": "complete"}}}}}}"#
            )
        );
        // The late `new` keeps the return and gives the job its fields.
        d.apply(&new_job(JID, "test.ping", &["m1"]));
        let json = d.jobs_json();
        assert!(json.contains(r#""jid": ""#), "{json}");
        assert!(json.contains(r#""m1": {"return": true"#), "{json}");
        assert!(json.contains(r#""state": "complete""#), "{json}");
    }

    #[test]
    fn grains_returns_fill_the_minions_view_in_each_dialect() {
        for (dialect, expected) in [
            (
                Dialect::Cherrypy,
                r#"{"minions": [{"grains": {"id": "m1", "os": "Debian", "num_cpus": 2, "ipv4": ["127.0.0.1", "10.0.0.5"]}, "id": "m1"}]}"#,
            ),
            (
                Dialect::Tornado,
                r#"{"minions": {"m1": {"grains": {"id": "m1", "os": "Debian", "num_cpus": 2, "ipv4": ["127.0.0.1", "10.0.0.5"]}, "id": "m1"}}}"#,
            ),
        ] {
            let mut d = Digest::new(dialect, Limits::default());
            d.apply(&new_job(JID, "grains.items", &["m1"]));
            let changes = d.apply(&ret(JID, "m1", "grains.items", grains("m1"), true));
            assert_eq!(
                changes,
                Changes {
                    jobs: true,
                    minions: true,
                    grains_for: vec![]
                }
            );
            assert_eq!(d.minions_json(), expected);
            let frames = d.frames(&changes);
            assert_eq!(frames.len(), 2);
            assert!(frames[0].starts_with("{\"jobs\": "));
            assert!(frames[1].starts_with("{\"minions\": "));
            let suffix = if dialect == Dialect::Tornado {
                "\n\n"
            } else {
                "}"
            };
            assert!(frames.iter().all(|f| f.ends_with(suffix)), "{frames:?}");
        }
    }

    #[test]
    fn a_grains_job_does_not_empty_the_minions_view() {
        let mut d = Digest::new(Dialect::Cherrypy, Limits::default());
        d.apply(&key("accept", "m1"));
        d.apply(&key("accept", "m2"));
        d.apply(&new_job(JID, "grains.items", &["m2"]));
        assert_eq!(
            d.minions_json(),
            r#"{"minions": [{"id": "m1"}, {"id": "m2"}]}"#
        );
    }

    #[test]
    fn key_events_add_and_remove_minions() {
        let mut d = Digest::new(Dialect::Tornado, Limits::default());
        assert_eq!(d.apply(&key("accept", "web1")), minions_only());
        assert_eq!(d.minions_json(), r#"{"minions": {"web1": {"id": "web1"}}}"#);
        assert_eq!(d.apply(&key("reject", "web2")), minions_only());
        assert_eq!(d.apply(&key("delete", "web1")), minions_only());
        assert_eq!(d.minions_json(), r#"{"minions": {}}"#);
    }

    #[test]
    fn presence_present_drops_the_gone_and_asks_grains_of_the_new() {
        let mut d = Digest::new(Dialect::Cherrypy, Limits::default());
        let c = d.apply(&presence_present(&["m1", "m2"]));
        assert_eq!(c.grains_for, vec!["m1", "m2"]);
        assert!(c.minions);
        // Nothing new: nothing to send, nobody asked again.
        assert_eq!(
            d.apply(&presence_present(&["m2", "m1"])),
            Changes::default()
        );
        let c = d.apply(&presence_present(&["m2", "m3"]));
        assert_eq!(c.grains_for, vec!["m3"]);
        assert_eq!(
            d.minions_json(),
            r#"{"minions": [{"id": "m2"}, {"id": "m3"}]}"#
        );
    }

    #[test]
    fn presence_change_with_nobody_lost_keeps_the_others() {
        let mut d = Digest::new(Dialect::Tornado, Limits::default());
        d.apply(&presence_present(&["m1", "m2"]));
        d.apply(&ret("1", "m1", "grains.items", grains("m1"), true));
        let c = d.apply(&presence_change(&["m3"], &[]));
        assert_eq!(c.grains_for, vec!["m3"]);
        let json = d.minions_json();
        assert!(json.contains(r#""m1": {"grains""#), "{json}");
        assert!(json.contains(r#""m2": {"id": "m2"}"#), "{json}");
        let c = d.apply(&presence_change(&[], &["m2"]));
        assert_eq!(c, minions_only());
        assert!(!d.minions_json().contains("m2"));
    }

    #[test]
    fn malformed_events_are_skipped_without_a_change() {
        let mut d = Digest::new(Dialect::Cherrypy, Limits::default());
        d.apply(&new_job(JID, "test.ping", &["m1"]));
        let before = d.jobs_json();
        let no_map = |tag: &str| Event::new(tag, Value::from("nope"));
        let cases = [
            // Too few parts: Salt indexes past the end and its stream ends.
            Event::new("salt/job/error", map(vec![("message", Value::from("x"))])),
            Event::new("salt/job", map(vec![])),
            Event::new("salt/job//new", map(vec![])),
            Event::new(format!("salt/job/{JID}/ret"), map(vec![])),
            Event::new(format!("salt/job/{JID}/ret/m1/extra"), map(vec![])),
            no_map(&format!("salt/job/{JID}/new")),
            no_map("salt/key"),
            // Missing or mistyped keys.
            Event::new(
                format!("salt/job/{JID}/new"),
                map(vec![("jid", Value::from(JID))]),
            ),
            Event::new(
                format!("salt/job/{JID}/new"),
                map(vec![
                    ("jid", Value::from(JID)),
                    ("minions", Value::from("m1")),
                ]),
            ),
            Event::new(
                format!("salt/job/{JID}/ret/m1"),
                map(vec![("return", Value::Boolean(true))]),
            ),
            Event::new(
                format!("salt/job/{JID}/ret/m1"),
                map(vec![
                    ("return", Value::Boolean(true)),
                    ("retcode", Value::from(0)),
                    ("success", Value::from("yes")),
                ]),
            ),
            Event::new("salt/key", map(vec![("act", Value::from("accept"))])),
            Event::new(
                "salt/key",
                map(vec![("act", Value::from(1)), ("id", Value::from("m"))]),
            ),
            Event::new(
                "salt/presence/present",
                map(vec![("present", Value::from(3))]),
            ),
            Event::new("salt/presence/present/x", map(vec![])),
            // Not Salt's: the second part alone does not make a job.
            new_job_with_tag("myapp/job/1/new"),
            Event::new("salt/run/1/new", map(vec![])),
        ];
        for ev in &cases {
            assert_eq!(d.apply(ev), Changes::default(), "{}", ev.tag);
        }
        assert_eq!(d.jobs_json(), before);
        assert_eq!(d.minions_json(), r#"{"minions": []}"#);
    }

    fn new_job_with_tag(tag: &str) -> Event {
        let mut ev = new_job("1", "test.ping", &["m1"]);
        ev.tag = tag.into();
        ev
    }

    #[test]
    fn the_jobs_view_keeps_the_newest_jobs() {
        let limits = Limits {
            jobs: 3,
            ..Limits::default()
        };
        let mut d = Digest::new(Dialect::Cherrypy, limits);
        for i in 0..10 {
            d.apply(&new_job(&i.to_string(), "test.ping", &["m1"]));
        }
        assert_eq!(d.jobs.keys().collect::<Vec<_>>(), ["7", "8", "9"]);
        // A late return for an evicted job comes back as a bare job, and the oldest goes.
        d.apply(&ret("2", "m1", "test.ping", Value::Boolean(true), true));
        assert_eq!(d.jobs.keys().collect::<Vec<_>>(), ["8", "9", "2"]);
    }

    #[test]
    fn the_jobs_view_keeps_within_its_byte_budget() {
        let limits = Limits {
            bytes: 10_000,
            ..Limits::default()
        };
        let mut d = Digest::new(Dialect::Cherrypy, limits);
        let big = Value::from("x".repeat(3_000));
        for i in 0..10 {
            let jid = i.to_string();
            d.apply(&new_job(&jid, "cmd.run", &["m1"]));
            d.apply(&ret(&jid, "m1", "cmd.run", big.clone(), true));
            assert!(d.job_bytes <= 10_000, "{}", d.job_bytes);
            assert!(d.jobs_json().len() <= 10_000);
        }
        assert_eq!(d.jobs.len(), 3);
        assert!(d.jobs.contains_key("9"));
        let sum: usize = d.jobs.values().map(|j| j.bytes).sum();
        assert_eq!(sum, d.job_bytes, "the running total matches the jobs");
    }

    #[test]
    fn the_minions_view_is_capped_in_count_and_bytes() {
        let limits = Limits {
            minions: 2,
            bytes: 400,
            ..Limits::default()
        };
        let mut d = Digest::new(Dialect::Tornado, limits);
        let c = d.apply(&presence_present(&["m1", "m2", "m3"]));
        assert_eq!(
            c.grains_for,
            vec!["m1", "m2"],
            "no grains for an unlisted minion"
        );
        d.apply(&ret("1", "m1", "grains.items", grains("m1"), true));
        d.apply(&ret(
            "1",
            "m2",
            "grains.items",
            Value::from("y".repeat(500)),
            true,
        ));
        d.apply(&ret("1", "m3", "grains.items", grains("m3"), true));
        assert_eq!(
            d.minions_json(),
            r#"{"minions": {"m1": {"grains": {"id": "m1", "os": "Debian", "num_cpus": 2, "ipv4": ["127.0.0.1", "10.0.0.5"]}, "id": "m1"}, "m2": {"id": "m2"}}}"#
        );
        d.apply(&key("delete", "m1"));
        d.apply(&key("delete", "m2"));
        assert_eq!(d.minion_bytes, 0, "removals give the bytes back");
    }

    #[test]
    fn changes_merge_for_one_snapshot() {
        let mut c = jobs_only();
        c.merge(Changes {
            jobs: false,
            minions: true,
            grains_for: vec!["m1".into()],
        });
        c.merge(Changes {
            grains_for: vec!["m1".into(), "m2".into()],
            ..Changes::default()
        });
        assert_eq!(
            c,
            Changes {
                jobs: true,
                minions: true,
                grains_for: vec!["m1".into(), "m2".into()]
            }
        );
    }
}
