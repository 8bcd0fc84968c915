//! The eauth ACL of compound commands, checked by saltgate with Salt's own matching rules.
//!
//! A compound command publishes several functions in one job (`fun: ["cmd.run", "test.ping"]`,
//! `arg: [["id"], []]`). The master's authorization (`CkMinions.auth_check`, Salt 3006 to 3008)
//! returns *true as soon as one function* of the list matches the caller's auth list, so a user
//! allowed only `test.ping` runs `cmd.run` by listing `test.ping` next to it. Salt's own clients
//! and rest_cherrypy pass such jobs through. saltgate checks every function of a compound command
//! itself, against the same auth list the master compiles, before the job is published:
//!
//! - **the auth list** ([`auth_list`]) is Salt's `fill_auth_list` over the master's
//!   `external_auth[<eauth>]`: every key matching the user name (Salt's `expr_match`: a glob, then
//!   a regex anchored at both ends, *with the user name as the pattern* and the key as the
//!   subject), the `<group>%` keys of the caller's groups, and `*` unless a key matched the user
//!   (all as `permissive_acl` changes them). A token carries its user, backend and groups; eauth
//!   credentials in the request do not carry the backend's groups (`pam`, `ldap`, `yubico`), so
//!   for them the `<group>%` entries are unknown ([`Caller::Eauth`]; the lowstate API does not
//!   use it: it logs eauth credentials of a compound command in first, which also keeps a wrong
//!   password from learning what the ACL allows, and checks the token);
//! - **a function** is allowed (Salt's `auth_check` for that function alone) when an entry that
//!   is a string matches it as a Python regex (`re.match`: anchored at the start only), or when an
//!   entry `{target: [conditions]}` covers every targeted minion and one of its conditions matches
//!   the function, with the `args` (by position) and `kwargs` (by name) regexes of Salt's
//!   `__args_check` matching the function's own arguments, converted with Python's `str()`.
//!   `saltutil.find_job` is always allowed, as the master allows it;
//! - **a compound command** is allowed only when every function is.
//!
//! What saltgate cannot decide with certainty counts as *not allowed*, so an answer here is never
//! more permissive than the master's check of each function alone: regexes outside the subset of
//! Python's syntax whose meaning is the same in both engines (see [`py_regex`]); subjects that are
//! not printable ASCII; arguments that are not strings, integers, booleans or `None`; targeted
//! entries other than `*` (saltgate does not know which minions a target names); backends that
//! compute the ACL themselves (`django`, `rest`, `eauth_acl_module`, `keep_acl_in_token`) or that
//! saltgate does not know; group entries of eauth credentials. The refusal says which function and
//! why. A single function (a string, or a list of one) is left to the master: its check is exact
//! for one function.
//!
//! This module is pure (no I/O, no clock): the caller passes the master's settings.

use std::collections::HashMap;
use std::fmt;

use regex::Regex;
use rmpv::Value as Mp;
use serde_json::Value;

/// The one function the master allows to every caller (its `auth_check` whitelist).
const WHITELIST: &str = "saltutil.find_job";
/// Patterns longer than this are not evaluated (they count as undecided).
const MAX_PATTERN: usize = 1024;
/// The largest `{m,n}` bound translated.
const MAX_REPEAT: u32 = 1000;

/// Backends whose `auth` is all they add: no `groups`, no `acl`, no `process_acl`.
const PLAIN_BACKENDS: &[&str] = &["auto", "file", "keystone", "mysql", "pki", "sharedsecret"];
/// Backends with a `groups` function (and, for `ldap`, a `process_acl` that only adds entries).
const GROUP_BACKENDS: &[&str] = &["pam", "ldap", "yubico"];

/// The master settings that change how an auth list is compiled or matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AclOptions {
    /// `permissive_acl`.
    pub permissive_acl: bool,
    /// `keep_acl_in_token`: the master uses the ACL stored in the token, which saltgate cannot
    /// read.
    pub keep_acl_in_token: bool,
    /// `eauth_acl_module` is set: a module supplies the ACL of eauth credentials.
    pub eauth_acl_module: bool,
    /// `auth.enable_expanded_auth_matching`: another algorithm for targeted entries.
    pub expanded_matching: bool,
    /// `key_cache` is set: the master's minion list may be stale.
    pub key_cache: bool,
    /// `enable_ssh_minions`: roster targets join the minion list.
    pub ssh_minions: bool,
}

/// Who publishes.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// eauth credentials in the request.
    Eauth {
        /// The backend (`pam`, `file`, ...).
        eauth: &'a str,
        /// The user name as given.
        username: &'a str,
    },
    /// A token the master confirmed.
    Token {
        /// The backend that issued it.
        eauth: &'a str,
        /// Its user.
        name: &'a str,
        /// Its groups (empty for backends without groups).
        groups: &'a [String],
    },
}

/// The caller's auth list as the master compiles it, or the part of it that is certain.
#[derive(Debug, Clone)]
pub struct AuthList {
    entries: Vec<Value>,
    /// Why entries may be missing, when some may be.
    partial: Option<&'static str>,
    who: String,
    options: AclOptions,
}

/// A job about to be published, as the master receives it.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// `tgt`.
    pub tgt: &'a Mp,
    /// `tgt_type`.
    pub tgt_type: &'a str,
    /// `fun`: a string or a list of functions.
    pub fun: &'a Mp,
    /// `arg`: for a compound command, one argument list per function.
    pub arg: &'a [Mp],
}

/// Why a compound command is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The first function not allowed.
    pub fun: String,
    /// Its position in the list, from 0.
    pub index: usize,
    /// `None`: the auth list does not allow it. `Some`: saltgate cannot decide, and why.
    pub undecided: Option<&'static str>,
    /// The caller, for the message.
    pub who: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            fun, index, who, ..
        } = self;
        match self.undecided {
            None => write!(
                f,
                "'{fun}' (function {index} of a compound command) is not allowed for {who} \
                 by the master's external_auth"
            ),
            Some(why) => write!(
                f,
                "saltgate cannot tell whether '{fun}' (function {index} of a compound command) \
                 is allowed for {who}: {why}; refused (send it as a single command)"
            ),
        }
    }
}

/// A three-valued answer: certain yes, certain no, or cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
    Undecided(&'static str),
}

impl Verdict {
    /// Either holds.
    fn or(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Allow, _) | (_, Verdict::Allow) => Verdict::Allow,
            (Verdict::Undecided(w), _) | (_, Verdict::Undecided(w)) => Verdict::Undecided(w),
            _ => Verdict::Deny,
        }
    }

    /// Both hold.
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Deny, _) | (_, Verdict::Deny) => Verdict::Deny,
            (Verdict::Undecided(w), _) | (_, Verdict::Undecided(w)) => Verdict::Undecided(w),
            _ => Verdict::Allow,
        }
    }

    fn from_bool(b: bool) -> Verdict {
        if b { Verdict::Allow } else { Verdict::Deny }
    }
}

const WHY_REGEX: &str = "an ACL pattern uses regular-expression syntax saltgate does not evaluate";
const WHY_SUBJECT: &str = "a name or argument is not printable ASCII";
const WHY_ARG: &str = "an argument constrained by the ACL is not a string, number, boolean or null";
const WHY_ARG_SHAPE: &str = "the arguments are not one list per function";
const WHY_TARGET: &str =
    "a minion-targeted ACL entry other than '*' (saltgate does not resolve targets)";
const WHY_TARGET_OPTS: &str = "minion-targeted ACL entries with key_cache, enable_ssh_minions or \
     auth.enable_expanded_auth_matching set on the master";
const WHY_GROUPS: &str = "the user's group entries ('<group>%') are known only from a token \
     (log in with /login and use the token)";
const WHY_USER_MATCH: &str = "an external_auth key cannot be matched against the user name";
const WHY_BACKEND_ACL: &str = "the eauth backend supplies its own ACL";
const WHY_TOKEN_ACL: &str = "keep_acl_in_token is set, and the token's stored ACL is not visible";
const WHY_BACKEND_UNKNOWN: &str = "an eauth backend saltgate does not know";
const WHY_NOT_TEXT: &str = "a function name is not a string";

/// The caller's auth list: Salt's `LoadAuth.get_auth_list` with `fill_auth_list`, over the
/// master's `external_auth` setting.
pub fn auth_list(external_auth: &Value, options: &AclOptions, caller: &Caller<'_>) -> AuthList {
    let (eauth, name, groups) = match *caller {
        Caller::Eauth { eauth, username } => {
            let groups: Option<&[String]> = if PLAIN_BACKENDS.contains(&eauth) {
                Some(&[])
            } else {
                None
            };
            (eauth, username, groups)
        }
        Caller::Token {
            eauth,
            name,
            groups,
        } => (eauth, name, Some(groups)),
    };
    let who = format!("'{name}' (eauth '{eauth}')");
    let unknown = |why| AuthList {
        entries: Vec::new(),
        partial: Some(why),
        who: who.clone(),
        options: *options,
    };
    match caller {
        Caller::Eauth { .. } => {
            if options.eauth_acl_module || ["django", "rest"].contains(&eauth) {
                return unknown(WHY_BACKEND_ACL);
            }
            if !PLAIN_BACKENDS.contains(&eauth) && !GROUP_BACKENDS.contains(&eauth) {
                return unknown(WHY_BACKEND_UNKNOWN);
            }
        }
        // For a token the master reads `external_auth` for the token's backend, never the
        // backend's own ACL functions (the publish load names no eauth).
        Caller::Token { .. } if options.keep_acl_in_token => return unknown(WHY_TOKEN_ACL),
        Caller::Token { .. } => {}
    }
    let (entries, partial) = match external_auth.get(eauth) {
        Some(provider) => fill_auth_list(provider, name, groups, options.permissive_acl),
        None => (Vec::new(), None),
    };
    AuthList {
        entries,
        partial,
        who,
        options: *options,
    }
}

/// Salt's `CkMinions.fill_auth_list`: the entries of every key matching the user, of the
/// caller's groups, and of `*` when no key matched (or as any key, with `permissive_acl`).
/// Returns the certain entries and why some may be missing.
fn fill_auth_list(
    provider: &Value,
    name: &str,
    groups: Option<&[String]>,
    permissive: bool,
) -> (Vec<Value>, Option<&'static str>) {
    let Value::Object(provider) = provider else {
        // The master fails on anything but a mapping: nothing is allowed.
        return (Vec::new(), None);
    };
    let mut list = Vec::new();
    let mut partial = None;
    let mut name_matched = Verdict::Deny;
    for (key, entries) in provider {
        if key == "*" && !permissive {
            continue;
        }
        if key.ends_with('%') {
            match groups {
                Some(groups) => {
                    let group = key.trim_end_matches('%');
                    if groups.iter().any(|g| g == group) && !extend(&mut list, entries) {
                        return (Vec::new(), None);
                    }
                }
                None => partial = Some(WHY_GROUPS),
            }
            continue;
        }
        match expr_match(key, name) {
            Verdict::Allow => {
                name_matched = Verdict::Allow;
                if !extend(&mut list, entries) {
                    return (Vec::new(), None);
                }
            }
            Verdict::Undecided(_) => {
                name_matched = name_matched.or(Verdict::Undecided(WHY_USER_MATCH));
                partial = Some(WHY_USER_MATCH);
            }
            Verdict::Deny => {}
        }
    }
    if !permissive {
        if let Some(star) = provider.get("*") {
            match name_matched {
                Verdict::Deny => {
                    if !extend(&mut list, star) {
                        return (Vec::new(), None);
                    }
                }
                Verdict::Allow => {}
                Verdict::Undecided(_) => partial = Some(WHY_USER_MATCH),
            }
        }
    }
    (list, partial)
}

/// Python's `list.extend`: a list adds its items, a string its characters, a mapping its keys;
/// anything else raises on the master (false: nothing is allowed).
fn extend(list: &mut Vec<Value>, entries: &Value) -> bool {
    match entries {
        Value::Array(items) => list.extend(items.iter().cloned()),
        Value::String(s) => list.extend(s.chars().map(|c| Value::String(c.to_string()))),
        Value::Object(m) => list.extend(m.keys().map(|k| Value::String(k.clone()))),
        _ => return false,
    }
    true
}

/// Salt's `expr_match(line, expr)` as `fill_auth_list` calls it: `line` is the external_auth key,
/// `expr` the user name, tried as a glob (`fnmatch`), then as the regex `\A<expr>\Z`.
fn expr_match(key: &str, name: &str) -> Verdict {
    let glob = fnmatch(key, name);
    if glob == Verdict::Allow {
        return glob;
    }
    let anchored = format!("\\A{name}\\Z");
    glob.or(py_match(&mut Matcher::default(), &anchored, key))
}

impl AuthList {
    /// Checks every function of a compound command (`fun` a list of two or more). Any other job
    /// is the master's to decide, and passes.
    pub fn check(&self, job: &Publish<'_>) -> Result<(), Refusal> {
        let Mp::Array(funs) = job.fun else {
            return Ok(());
        };
        if funs.len() < 2 {
            return Ok(());
        }
        let mut matcher = Matcher::default();
        for (index, fun) in funs.iter().enumerate() {
            let refuse = |undecided, fun: String| Refusal {
                fun,
                index,
                undecided,
                who: self.who.clone(),
            };
            let Some(name) = fun.as_str() else {
                return Err(refuse(Some(WHY_NOT_TEXT), fun.to_string()));
            };
            match self.allows(&mut matcher, name, job.arg.get(index), job) {
                Verdict::Allow => {}
                Verdict::Deny => return Err(refuse(None, name.to_owned())),
                Verdict::Undecided(why) => return Err(refuse(Some(why), name.to_owned())),
            }
        }
        Ok(())
    }

    /// Salt's `auth_check` for one function with its own arguments.
    fn allows(&self, m: &mut Matcher, fun: &str, args: Option<&Mp>, job: &Publish<'_>) -> Verdict {
        if fun == WHITELIST {
            return Verdict::Allow;
        }
        let mut verdict = Verdict::Deny;
        for entry in &self.entries {
            let v = match entry {
                Value::String(pattern) => py_match(m, pattern, fun),
                Value::Object(one) if one.len() == 1 => {
                    let Some((target, conditions)) = one.iter().next() else {
                        continue;
                    };
                    // The master splits the function's arguments before it looks at the entry
                    // (failing on a missing or odd list, so nothing runs).
                    match split_args(args) {
                        Err(v) => v,
                        Ok(split) => match fun_check(m, conditions, fun, split) {
                            Verdict::Deny => Verdict::Deny,
                            v => v.and(self.covers(target, job)),
                        },
                    }
                }
                _ => Verdict::Deny,
            };
            verdict = verdict.or(v);
            if verdict == Verdict::Allow {
                return verdict;
            }
        }
        match (verdict, self.partial) {
            (Verdict::Deny, Some(why)) => Verdict::Undecided(why),
            (v, _) => v,
        }
    }

    /// Salt's `validate_tgt`: does the entry's target cover every minion the job targets? Only
    /// `*` is decided (every minion the master can target is under it); other targets would need
    /// the master's minion list.
    fn covers(&self, target: &str, job: &Publish<'_>) -> Verdict {
        let o = &self.options;
        if o.expanded_matching || o.key_cache || o.ssh_minions {
            return Verdict::Undecided(WHY_TARGET_OPTS);
        }
        const FROM_THE_KEY_LIST: &[&str] = &[
            "glob",
            "pcre",
            "list",
            "grain",
            "grain_pcre",
            "pillar",
            "pillar_pcre",
            "pillar_exact",
            "compound",
            "nodegroup",
            "ipcidr",
        ];
        if target == "*" && FROM_THE_KEY_LIST.contains(&job.tgt_type) {
            Verdict::Allow
        } else {
            Verdict::Undecided(WHY_TARGET)
        }
    }
}

/// Salt's `__fun_check`: one of the conditions (a function regex, or `{regex: argument rules}`)
/// matches.
fn fun_check(m: &mut Matcher, valid: &Value, fun: &str, args: Args<'_>) -> Verdict {
    let conditions: Vec<&Value> = match valid {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let mut verdict = Verdict::Deny;
    for cond in conditions {
        let v = match cond {
            Value::String(pattern) => py_match(m, pattern, fun),
            Value::Object(one) if one.len() == 1 => match one.iter().next() {
                Some((pattern, rules)) => match py_match(m, pattern, fun) {
                    Verdict::Deny => Verdict::Deny,
                    v => v.and(args_check(m, rules, args)),
                },
                None => Verdict::Deny,
            },
            _ => Verdict::Deny,
        };
        verdict = verdict.or(v);
        if verdict == Verdict::Allow {
            break;
        }
    }
    verdict
}

/// A function's positional and keyword arguments.
type Args<'a> = (Option<&'a [Mp]>, Option<&'a [(Mp, Mp)]>);

/// A function's arguments as `auth_check` splits them: the last item of its list is the
/// keywords when it is a map holding `__kwarg__`.
fn split_args(args: Option<&Mp>) -> Result<Args<'_>, Verdict> {
    match args {
        // The master fails on a missing list (IndexError): nothing runs.
        None => Err(Verdict::Deny),
        Some(Mp::Nil) => Ok((None, None)),
        Some(Mp::Array(items)) => match items.split_last() {
            Some((Mp::Map(kw), rest))
                if kw.iter().any(|(k, _)| k.as_str() == Some("__kwarg__")) =>
            {
                Ok((Some(rest), Some(kw.as_slice())))
            }
            _ if items.is_empty() => Ok((None, None)),
            _ => Ok((Some(items.as_slice()), None)),
        },
        Some(_) => Err(Verdict::Undecided(WHY_ARG_SHAPE)),
    }
}

/// Salt's `__args_check`: one rule (`{args: [regex...], kwargs: {name: regex}}`) matches; a
/// `null` regex accepts any value, but the argument must be there.
fn args_check(m: &mut Matcher, valid: &Value, args: Args<'_>) -> Verdict {
    let (positional, keywords) = args;
    let rules: Vec<&Value> = match valid {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let mut verdict = Verdict::Deny;
    for rule in rules {
        let Value::Object(rule) = rule else {
            continue;
        };
        let mut v = Verdict::Allow;
        match rule.get("args") {
            None => {}
            Some(Value::Array(wanted)) => {
                for (i, want) in wanted.iter().enumerate() {
                    let Some(have) = positional.and_then(|p| p.get(i)) else {
                        v = Verdict::Deny;
                        break;
                    };
                    v = v.and(value_match(m, want, have));
                    if v == Verdict::Deny {
                        break;
                    }
                }
            }
            Some(_) => v = Verdict::Undecided(WHY_REGEX),
        }
        if v != Verdict::Deny {
            match rule.get("kwargs") {
                None => {}
                Some(Value::Object(wanted)) => {
                    for (name, want) in wanted {
                        // Python dict lookup: the last of duplicate keys wins.
                        let have = keywords.and_then(|kw| {
                            kw.iter()
                                .rev()
                                .find(|(k, _)| k.as_str() == Some(name.as_str()))
                                .map(|(_, v)| v)
                        });
                        let Some(have) = have else {
                            v = Verdict::Deny;
                            break;
                        };
                        v = v.and(value_match(m, want, have));
                        if v == Verdict::Deny {
                            break;
                        }
                    }
                }
                Some(_) => v = Verdict::Deny,
            }
        }
        verdict = verdict.or(v);
        if verdict == Verdict::Allow {
            break;
        }
    }
    verdict
}

/// One argument rule: `null` accepts anything, a string is a regex over `str(value)`; anything
/// else never matches (the master's `re.match` raises and counts it as no match).
fn value_match(m: &mut Matcher, want: &Value, have: &Mp) -> Verdict {
    match want {
        Value::Null => Verdict::Allow,
        Value::String(pattern) => match py_str(have) {
            Some(text) => py_match(m, pattern, &text),
            None => Verdict::Undecided(WHY_ARG),
        },
        _ => Verdict::Deny,
    }
}

/// Python's `str()` of a decoded msgpack value, for the types whose text is certain.
fn py_str(v: &Mp) -> Option<String> {
    match v {
        Mp::String(s) => s.as_str().map(str::to_owned),
        Mp::Integer(i) => Some(i.to_string()),
        Mp::Boolean(true) => Some("True".into()),
        Mp::Boolean(false) => Some("False".into()),
        Mp::Nil => Some("None".into()),
        _ => None,
    }
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Compiled patterns, kept for one check.
#[derive(Default)]
struct Matcher {
    compiled: HashMap<String, Option<Regex>>,
}

/// Python's `re.match(pattern, subject)` (anchored at the start only), when certain.
fn py_match(m: &mut Matcher, pattern: &str, subject: &str) -> Verdict {
    if !printable(subject) {
        return Verdict::Undecided(WHY_SUBJECT);
    }
    let compiled = m.compiled.entry(pattern.to_owned()).or_insert_with(|| {
        let rust = py_regex(pattern)?;
        regex::RegexBuilder::new(&format!(r"\A(?:{rust})"))
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build()
            .ok()
    });
    match compiled {
        Some(re) => Verdict::from_bool(re.is_match(subject)),
        None => Verdict::Undecided(WHY_REGEX),
    }
}

/// Translates a Python `re` pattern into a Rust `regex` pattern with the same matches over
/// printable-ASCII subjects, or `None` when the pattern leaves the subset where that holds (or
/// is invalid in Python, where `re.match` raises and the master counts no match).
///
/// The subset: printable-ASCII literals and escaped punctuation; `.`, `^`, `$`, `\A`, `\Z`, `\b`,
/// `\d`, `\D`, `\w`, `\W`, `\s`, `\S`; classes with literals, ranges and those class
/// escapes; groups `( )` and `(?: )`; `|`; the quantifiers `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`,
/// `{,n}`, each optionally lazy. Not in it: other escapes, backreferences, lookaround, named
/// groups, inline flags, possessive quantifiers, and a `{` that is not a quantifier.
pub fn py_regex(pattern: &str) -> Option<String> {
    if pattern.len() > MAX_PATTERN || !printable(pattern) {
        return None;
    }
    let mut p = PyParser {
        s: pattern.as_bytes(),
        i: 0,
        out: String::with_capacity(pattern.len() * 2),
    };
    p.alternation(0)?;
    (p.i == p.s.len()).then_some(p.out)
}

struct PyParser<'a> {
    s: &'a [u8],
    i: usize,
    out: String,
}

/// What the last item of a sequence was, for Python's repeat rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Nothing yet (or right after `|` or `(`).
    Nothing,
    /// A zero-width assertion: cannot be repeated.
    Anchor,
    /// Something repeatable.
    Atom,
    /// A repeat: cannot be repeated again.
    Repeat,
}

impl PyParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn alternation(&mut self, depth: usize) -> Option<()> {
        if depth > 32 {
            return None;
        }
        self.sequence(depth)?;
        while self.peek() == Some(b'|') {
            self.i += 1;
            self.out.push('|');
            self.sequence(depth)?;
        }
        Some(())
    }

    fn sequence(&mut self, depth: usize) -> Option<()> {
        let mut last = Last::Nothing;
        while let Some(c) = self.peek() {
            match c {
                b'|' | b')' => break,
                b'*' | b'+' | b'?' => {
                    if last != Last::Atom {
                        return None;
                    }
                    self.i += 1;
                    self.out.push(c as char);
                    self.lazy();
                    last = Last::Repeat;
                }
                b'{' => match self.braces() {
                    Some((lo, hi)) => {
                        if last != Last::Atom {
                            return None;
                        }
                        match hi {
                            Some(hi) => self.out.push_str(&format!("{{{lo},{hi}}}")),
                            None => self.out.push_str(&format!("{{{lo},}}")),
                        }
                        self.lazy();
                        last = Last::Repeat;
                    }
                    None => return None,
                },
                b'(' => {
                    self.i += 1;
                    if self.peek() == Some(b'?') {
                        if self.s.get(self.i + 1) != Some(&b':') {
                            return None;
                        }
                        self.i += 2;
                    }
                    self.out.push_str("(?:");
                    self.alternation(depth + 1)?;
                    if self.peek() != Some(b')') {
                        return None;
                    }
                    self.i += 1;
                    self.out.push(')');
                    last = Last::Atom;
                }
                b'[' => {
                    self.class()?;
                    last = Last::Atom;
                }
                b'.' => {
                    self.i += 1;
                    self.out.push('.');
                    last = Last::Atom;
                }
                b'^' | b'$' => {
                    self.i += 1;
                    self.out.push(c as char);
                    last = Last::Anchor;
                }
                b'\\' => {
                    let e = *self.s.get(self.i + 1)?;
                    self.i += 2;
                    last = match e {
                        b'A' => {
                            self.out.push_str(r"\A");
                            Last::Anchor
                        }
                        b'Z' => {
                            self.out.push_str(r"\z");
                            Last::Anchor
                        }
                        // Not `\B`: Python's never matches an empty string, Rust's does.
                        b'b' => {
                            self.out.push_str(r"\b");
                            Last::Anchor
                        }
                        b'd' | b'D' | b'w' | b'W' | b's' | b'S' => {
                            self.out.push('\\');
                            self.out.push(e as char);
                            Last::Atom
                        }
                        _ if e.is_ascii_alphanumeric() => return None,
                        _ => {
                            self.literal(e);
                            Last::Atom
                        }
                    };
                }
                _ => {
                    self.i += 1;
                    self.literal(c);
                    last = Last::Atom;
                }
            }
        }
        Some(())
    }

    /// A lazy `?` after a repeat; a further repeat character is Python's "multiple repeat"
    /// error (or, from Python 3.11, a possessive quantifier): both leave the subset.
    fn lazy(&mut self) {
        if self.peek() == Some(b'?') {
            self.i += 1;
            self.out.push('?');
        }
    }

    /// `{m}`, `{m,}`, `{m,n}`, `{,n}` at `self.i` (a `{`): the bounds, consuming it. `None` when it
    /// is not such a quantifier (Python would take the `{` as a literal: not in the subset).
    fn braces(&mut self) -> Option<(u32, Option<u32>)> {
        let rest = &self.s[self.i..];
        let end = rest.iter().position(|&b| b == b'}')?;
        let inner = std::str::from_utf8(&rest[1..end]).ok()?;
        let number = |t: &str| -> Option<u32> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok().filter(|n| *n <= MAX_REPEAT)
        };
        let (lo, hi) = match inner.split_once(',') {
            None => {
                let n = number(inner)?;
                (n, Some(n))
            }
            Some(("", "")) => return None,
            Some(("", hi)) => (0, Some(number(hi)?)),
            Some((lo, "")) => (number(lo)?, None),
            Some((lo, hi)) => (number(lo)?, Some(number(hi)?)),
        };
        if hi.is_some_and(|hi| hi < lo) {
            return None;
        }
        self.i += end + 1;
        Some((lo, hi))
    }

    fn literal(&mut self, c: u8) {
        self.out.push_str(&regex::escape(&(c as char).to_string()));
    }

    /// A character class, as Python's `sre_parse` reads one; written with hex escapes so that no
    /// Rust class syntax (`[`, `&&`, `--`, `~~`) can change its meaning.
    fn class(&mut self) -> Option<()> {
        self.i += 1;
        let mut out = String::from("[");
        if self.peek() == Some(b'^') {
            self.i += 1;
            out.push('^');
        }
        let start = self.i;
        loop {
            let c = self.peek()?;
            self.i += 1;
            if c == b']' && self.i - 1 != start {
                break;
            }
            let first = if c == b'\\' {
                let e = self.peek()?;
                self.i += 1;
                match e {
                    b'd' | b'D' | b'w' | b'W' | b's' | b'S' => Item::Escape(e),
                    _ if e.is_ascii_alphanumeric() => return None,
                    _ => Item::Char(e),
                }
            } else {
                Item::Char(c)
            };
            if self.peek() == Some(b'-') {
                self.i += 1;
                let that = self.peek()?;
                self.i += 1;
                if that == b']' {
                    push_item(&mut out, &first);
                    out.push_str(r"\x{2D}");
                    break;
                }
                let hi = if that == b'\\' {
                    let e = self.peek()?;
                    self.i += 1;
                    if e.is_ascii_alphanumeric() {
                        return None;
                    }
                    e
                } else {
                    that
                };
                let Item::Char(lo) = first else {
                    return None;
                };
                if hi < lo {
                    return None;
                }
                out.push_str(&format!(r"\x{{{lo:02X}}}-\x{{{hi:02X}}}"));
            } else {
                push_item(&mut out, &first);
            }
        }
        out.push(']');
        self.out.push_str(&out);
        Some(())
    }
}

/// One member of a character class.
enum Item {
    Char(u8),
    Escape(u8),
}

fn push_item(out: &mut String, item: &Item) {
    match item {
        Item::Char(c) => out.push_str(&format!(r"\x{{{c:02X}}}")),
        Item::Escape(e) => {
            out.push('\\');
            out.push(*e as char);
        }
    }
}

/// Python's `fnmatch.fnmatch(name, pattern)` on POSIX (case-sensitive), when certain: `*`, `?`,
/// and sets of literal characters (`[abc]`, `[!abc]`); sets with ranges or backslashes are not
/// evaluated.
fn fnmatch(name: &str, pattern: &str) -> Verdict {
    if !printable(name) || !printable(pattern) || pattern.len() > MAX_PATTERN {
        return Verdict::Undecided(WHY_USER_MATCH);
    }
    enum Tok {
        Star,
        Any,
        Lit(u8),
        Set(bool, Vec<u8>),
    }
    let p = pattern.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => toks.push(Tok::Star),
            b'?' => toks.push(Tok::Any),
            b'[' => {
                let mut j = i + 1;
                if p.get(j) == Some(&b'!') {
                    j += 1;
                }
                if p.get(j) == Some(&b']') {
                    j += 1;
                }
                while j < p.len() && p[j] != b']' {
                    j += 1;
                }
                if j >= p.len() {
                    toks.push(Tok::Lit(b'['));
                } else {
                    let stuff = &p[i + 1..j];
                    let (negate, set) = match stuff.split_first() {
                        Some((b'!', rest)) => (true, rest),
                        _ => (false, stuff),
                    };
                    if set.is_empty() || set.iter().any(|b| matches!(b, b'-' | b'\\')) {
                        return Verdict::Undecided(WHY_USER_MATCH);
                    }
                    toks.push(Tok::Set(negate, set.to_vec()));
                    i = j;
                }
            }
            c => toks.push(Tok::Lit(c)),
        }
        i += 1;
    }
    let one = |t: &Tok, c: u8| match t {
        Tok::Any => true,
        Tok::Lit(l) => *l == c,
        Tok::Set(negate, set) => set.contains(&c) != *negate,
        Tok::Star => false,
    };
    let n = name.as_bytes();
    let (mut ti, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match toks.get(ti) {
            Some(Tok::Star) => {
                star = Some((ti, ni));
                ti += 1;
            }
            Some(t) if one(t, n[ni]) => {
                ti += 1;
                ni += 1;
            }
            _ => match star {
                Some((st, sn)) => {
                    ti = st + 1;
                    ni = sn + 1;
                    star = Some((st, sn + 1));
                }
                None => return Verdict::Deny,
            },
        }
    }
    Verdict::from_bool(toks[ti..].iter().all(|t| matches!(t, Tok::Star)))
}

/// The master settings [`AclOptions`] reads, with Python's truthiness over YAML 1.1 scalars (as
/// the master's YAML loader reads `yes`, `no`, `on`, `off`).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => {
            !(s.is_empty()
                || matches!(
                    s.as_str(),
                    "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE"
                ))
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// JSON as the msgpack the master decodes.
    fn mp(v: &Value) -> Mp {
        match v {
            Value::Null => Mp::Nil,
            Value::Bool(b) => Mp::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Mp::from(i),
                None => Mp::F64(n.as_f64().unwrap()),
            },
            Value::String(s) => Mp::from(s.as_str()),
            Value::Array(a) => Mp::Array(a.iter().map(mp).collect()),
            Value::Object(o) => Mp::Map(
                o.iter()
                    .map(|(k, v)| (Mp::from(k.as_str()), mp(v)))
                    .collect(),
            ),
        }
    }

    fn list(entries: Value) -> AuthList {
        AuthList {
            entries: entries.as_array().unwrap().clone(),
            partial: None,
            who: "'u' (eauth 'file')".into(),
            options: AclOptions::default(),
        }
    }

    fn compound(list: &AuthList, funs: &[&str], args: Value, tgt: &str) -> Result<(), Refusal> {
        let fun = Mp::Array(funs.iter().map(|f| Mp::from(*f)).collect());
        let arg: Vec<Mp> = args.as_array().unwrap().iter().map(mp).collect();
        let tgt = Mp::from(tgt);
        list.check(&Publish {
            tgt: &tgt,
            tgt_type: "glob",
            fun: &fun,
            arg: &arg,
        })
    }

    #[test]
    fn every_function_of_a_compound_command_is_checked() {
        let limited = list(json!(["test.ping"]));
        // The master allows this one (one function matches); saltgate refuses it, naming cmd.run.
        let r = compound(
            &limited,
            &["cmd.run", "test.ping"],
            json!([["id"], []]),
            "m1",
        )
        .unwrap_err();
        assert_eq!((r.fun.as_str(), r.index, r.undecided), ("cmd.run", 0, None));
        assert!(r.to_string().contains("'cmd.run' (function 0"), "{r}");
        let r = compound(
            &limited,
            &["test.ping", "file.write"],
            json!([[], ["/x", "y"]]),
            "*",
        );
        assert_eq!(r.unwrap_err().index, 1);
        assert!(compound(&limited, &["test.ping", "test.ping"], json!([[], []]), "*").is_ok());
        // saltutil.find_job is allowed to everyone, as the master's whitelist does, but it does
        // not carry the other functions with it.
        assert!(
            compound(
                &limited,
                &["saltutil.find_job", "test.ping"],
                json!([[], []]),
                "*"
            )
            .is_ok()
        );
        assert!(
            compound(
                &limited,
                &["cmd.run", "saltutil.find_job"],
                json!([[], []]),
                "*"
            )
            .is_err()
        );
        let saltdev = list(json!([".*", "@runner", "@wheel", "@jobs"]));
        assert!(
            compound(
                &saltdev,
                &["cmd.run", "test.ping"],
                json!([["id"], []]),
                "*"
            )
            .is_ok()
        );
    }

    #[test]
    fn single_functions_are_left_to_the_master() {
        let limited = list(json!(["test.ping"]));
        let arg = vec![Mp::from("id")];
        let tgt = Mp::from("*");
        for fun in [Mp::from("cmd.run"), Mp::Array(vec![Mp::from("cmd.run")])] {
            let job = Publish {
                tgt: &tgt,
                tgt_type: "glob",
                fun: &fun,
                arg: &arg,
            };
            assert!(limited.check(&job).is_ok());
        }
    }

    #[test]
    fn salt_matching_rules() {
        // re.match: anchored at the start only, `.` is any character.
        let l = list(json!(["test.ping"]));
        for fun in ["test.pingX", "testXping"] {
            assert!(
                compound(&l, &[fun, fun], json!([[], []]), "*").is_ok(),
                "{fun}"
            );
        }
        // @runner/@wheel/@jobs entries are regexes to the publish check: they match no function
        // but one named like them.
        let l = list(json!(["@runner", "@wheel", "@jobs"]));
        assert!(compound(&l, &["jobs.list_jobs", "test.ping"], json!([[], []]), "*").is_err());
        assert!(compound(&l, &["@runner", "@jobs"], json!([[], []]), "*").is_ok());
        // Targeted entries: `*` with argument rules; `args` by position, `kwargs` by name, each a
        // regex over Python's str() of the value.
        let l = list(
            json!([{"*": ["test.*", {"cmd.run": {"args": ["^ls$"], "kwargs": {"cwd": "/tmp$"}}}]}]),
        );
        let ok = json!([["ls", {"cwd": "/tmp", "__kwarg__": true}], []]);
        assert!(compound(&l, &["cmd.run", "test.ping"], ok, "*").is_ok());
        let bad = json!([["ls -la", {"cwd": "/tmp", "__kwarg__": true}], []]);
        assert!(compound(&l, &["cmd.run", "test.ping"], bad, "*").is_err());
        let no_kw = json!([["ls"], []]);
        assert!(compound(&l, &["cmd.run", "test.ping"], no_kw, "*").is_err());
        // Another target: saltgate cannot resolve it, so it refuses and says why.
        let l = list(json!([{"web*": ["cmd.run"]}, "test.ping"]));
        let r = compound(&l, &["cmd.run", "test.ping"], json!([[], []]), "web1").unwrap_err();
        assert_eq!(r.undecided, Some(WHY_TARGET));
        assert!(r.to_string().contains("cannot tell"), "{r}");
        // Missing argument lists: the master fails on those (nothing runs); saltgate refuses.
        let l = list(json!([{"*": ["test.arg"]}]));
        assert!(compound(&l, &["test.arg", "test.arg"], json!([[]]), "*").is_err());
    }

    #[test]
    fn auth_lists_follow_fill_auth_list() {
        let ea = json!({"file": {
            "^filename": "/x", "saltdev": [".*"], "limited": ["test.ping"],
            "*": ["grains.items"], "ops%": ["@runner"], "lim*": ["x.y"],
        }, "pam": {"alice": ["test.ping"], "ops%": [".*"]}});
        let o = AclOptions::default();
        let eauth = |eauth, username| auth_list(&ea, &o, &Caller::Eauth { eauth, username });
        assert_eq!(
            eauth("file", "limited").entries,
            json!(["test.ping"]).as_array().unwrap().clone()
        );
        // No key matches: `*` applies.
        assert_eq!(eauth("file", "nobody").entries, vec![json!("grains.items")]);
        // The user name is the pattern (Salt's expr_match(key, name)).
        let mut got = eauth("file", "lim*").entries;
        got.sort_by_key(|v| v.to_string());
        assert_eq!(got, vec![json!("test.ping"), json!("x.y")]);
        // pam credentials: the groups are unknown, so the list may be partial.
        let pam = eauth("pam", "alice");
        assert_eq!(pam.partial, Some(WHY_GROUPS));
        let r = compound(&pam, &["cmd.run", "test.ping"], json!([[], []]), "*").unwrap_err();
        assert_eq!(r.undecided, Some(WHY_GROUPS));
        // A token carries them.
        let groups = ["ops".to_owned()];
        let tok = auth_list(
            &ea,
            &o,
            &Caller::Token {
                eauth: "pam",
                name: "alice",
                groups: &groups,
            },
        );
        assert!(compound(&tok, &["cmd.run", "test.ping"], json!([[], []]), "*").is_ok());
        // Backends with their own ACL, unknown backends, keep_acl_in_token: undecided.
        for e in ["django", "rest", "custom"] {
            assert!(eauth(e, "alice").partial.is_some(), "{e}");
        }
        let keep = AclOptions {
            keep_acl_in_token: true,
            ..o
        };
        let t = auth_list(
            &ea,
            &keep,
            &Caller::Token {
                eauth: "file",
                name: "saltdev",
                groups: &[],
            },
        );
        assert_eq!(t.partial, Some(WHY_TOKEN_ACL));
        // No such backend in external_auth: nothing is allowed, certainly.
        let none = eauth("sharedsecret", "x");
        assert!(none.entries.is_empty() && none.partial.is_none());
    }

    #[test]
    fn fnmatch_is_pythons() {
        // fnmatch.fnmatch(name, pattern) as Python 3.11 answers.
        let cases = [
            ("saltdev", "sal*", true),
            ("saltdev", "s?ltdev", true),
            ("saltdev", "[st]altdev", true),
            ("saltdev", "[!s]altdev", false),
            ("a[b", "a[b", true),
            ("a]", "[]]", false),
            ("x", "[!]]", true),
            ("abc", "*", true),
            ("", "*", true),
            ("abc", "a*c*", true),
            ("abcd", "a*c", false),
            ("a*", "a[*]", true),
            ("limited", "lim*", true),
            ("ab", "a?b", false),
            ("axb", "a.b", false),
            ("aXbXc", "a*b*c", true),
            ("abc", "???", true),
            ("ab", "???", false),
        ];
        for (name, pattern, want) in cases {
            assert_eq!(
                fnmatch(name, pattern),
                Verdict::from_bool(want),
                "{name} {pattern}"
            );
        }
        assert!(matches!(fnmatch("a", "[a-c]"), Verdict::Undecided(_)));
    }

    #[test]
    fn regexes_mean_what_python_means() {
        // Vectors from Python's re.match (tests/fixtures/acl/py_regex.json: null when Python
        // refuses the pattern). Where saltgate translates a pattern, it must agree exactly.
        let data: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/acl/py_regex.json")).unwrap();
        let (mut translated, mut matched) = (0, 0);
        let mut m = Matcher::default();
        for case in data["cases"].as_array().unwrap() {
            let (p, s, want) = (
                case[0].as_str().unwrap(),
                case[1].as_str().unwrap(),
                &case[2],
            );
            let got = py_match(&mut m, p, s);
            match got {
                Verdict::Undecided(_) => continue,
                v => {
                    translated += 1;
                    matched += usize::from(v == Verdict::Allow);
                    assert_eq!(
                        want.as_bool(),
                        Some(v == Verdict::Allow),
                        "pattern {p:?} subject {s:?} -> {:?}",
                        py_regex(p)
                    );
                }
            }
        }
        eprintln!("{translated} of the Python vectors translated, {matched} matching");
        assert!(translated > 1500 && matched > 200, "{translated} {matched}");
    }

    #[test]
    fn decided_answers_are_salts() {
        // Salt's own CkMinions.auth_check for one function (3006.30, 3007.17 and 3008.5 answer
        // alike)
        // (tests/fixtures/acl/salt_auth.json, minions alpha, beta, gamma): wherever saltgate
        // decides, it decides as Salt does.
        let data: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/acl/salt_auth.json")).unwrap();
        let mut decided = 0;
        let mut m = Matcher::default();
        for row in data["auth_check"].as_array().unwrap() {
            let at = |k: &str, i: usize| data[k][row[i].as_u64().unwrap() as usize].clone();
            let (entries, fun, args, target) = (
                at("auth_lists", 0),
                at("funs", 1),
                at("args", 2),
                at("targets", 3),
            );
            let l = list(entries.clone());
            let tgt = mp(&target[0]);
            let fun = fun.as_str().unwrap();
            let job = Publish {
                tgt: &tgt,
                tgt_type: target[1].as_str().unwrap(),
                fun: &Mp::Nil,
                arg: &[],
            };
            let args = mp(&args);
            let got = l.allows(&mut m, fun, Some(&args), &job);
            let want = row[4].as_bool();
            match got {
                Verdict::Undecided(_) => {}
                v => {
                    decided += 1;
                    assert_eq!(
                        Some(v == Verdict::Allow),
                        want,
                        "{entries} {fun} {args:?} {target}"
                    );
                }
            }
        }
        eprintln!(
            "{decided} decided of {}",
            data["auth_check"].as_array().unwrap().len()
        );
        assert!(decided > 3000, "{decided}");
        for row in data["fill_auth_list"].as_array().unwrap() {
            let groups: Vec<String> = serde_json::from_value(row["groups"].clone()).unwrap();
            let (mut got, partial) = fill_auth_list(
                &row["provider"],
                row["name"].as_str().unwrap(),
                Some(&groups),
                row["permissive"].as_bool().unwrap(),
            );
            if partial.is_some() {
                continue;
            }
            let mut want = row["salt"].as_array().unwrap().clone();
            got.sort_by_key(|v| v.to_string());
            want.sort_by_key(|v| v.to_string());
            assert_eq!(got, want, "{row}");
        }
    }

    #[test]
    fn yaml_truthiness() {
        for (v, want) in [
            (json!(null), false),
            (json!(true), true),
            (json!("no"), false),
            (json!("Off"), false),
            (json!("yes"), true),
            (json!(""), false),
            (json!("sched"), true),
            (json!(0), false),
        ] {
            assert_eq!(truthy(&v), want, "{v}");
        }
    }
}
