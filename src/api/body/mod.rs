//! Request bodies of the lowstate routes (`/`, `/run`, `/login`, `/token`, `POST /minions`)
//! and of hooks: bytes + `Content-Type` → a JSON value, with rest_cherrypy's input formats.
//!
//! | Content-Type | parsed as |
//! | --- | --- |
//! | `application/json` (any `+json`) | JSON; serde_json refuses nesting deeper than 128 |
//! | `application/x-yaml`, `application/yaml`, `text/yaml` | YAML 1.2, one document; `yes`/`no` stay strings; tags other than the core ones (`!!str`, `!!int`, ...) are refused |
//! | `application/x-www-form-urlencoded` | one chunk; repeated keys → list, `arg` always a list, `arg` items and `kwarg` read as YAML flow scalars (rest_cherrypy's `yamlify_arg`) |
//! | `text/plain` | JSON when it parses, else the text (which is then "not a list": 400) |
//! | anything else, or none with a body | 415 |
//!
//! Security: every parse of one request body shares one node budget ([`MAX_NODES`]) and a depth
//! limit ([`MAX_DEPTH`]), enforced *while* it runs: JSON and YAML are built value by value from
//! a streaming parser, so a parse stops at the first value over the budget, and a YAML alias is
//! charged the full size of what it repeats before it is copied ("billion laughs" stops at the
//! budget). A form body charges each pair and every `arg`/`kwarg` value it reads as YAML to the
//! same budget. YAML is first refused by a linear pre-scan ([`yaml::prescan`]) when it is
//! plainly too deep, too large or more than one document, and is parsed by a pure-Rust parser
//! whose cost is linear in the input (libyaml's is quadratic in flow nesting). Bodies above
//! [`offload::INLINE_MAX`] bytes are parsed on a bounded blocking pool ([`parse_async`]), not
//! on the async workers.

use std::cell::Cell;
use std::fmt;

use bytes::Bytes;
use http::HeaderMap;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::ApiError;

pub mod offload;
pub mod read;
pub mod yaml;

pub use offload::offload;
pub use read::read_capped;

/// The most values (scalars, lists, maps) one body may produce.
pub const MAX_NODES: usize = 100_000;
/// The most bytes of scalar text one body may produce once YAML aliases are expanded (a
/// 64 KiB string repeated by 22,000 aliases is 130 KB of YAML and 1.4 GB of values). JSON and
/// form bodies cannot expand, so the bound only bites on aliases.
pub const MAX_EXPANDED_BYTES: usize = 4 << 20;
/// The deepest nesting of lists and maps.
pub const MAX_DEPTH: usize = 64;

/// The media type of the request, lower-cased and without parameters.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
}

/// Parses a request body. An empty body is `Value::Null` (whatever the type): callers decide
/// what that means (for a lowstate it is "not a list"). Synchronous and bounded (see the module
/// doc); request handlers call [`parse_async`], which runs this off the async workers when the
/// body is large.
pub fn parse(headers: &HeaderMap, raw: &[u8]) -> Result<Value, ApiError> {
    parse_media(media_type(headers).as_deref(), raw)
}

/// [`parse`], on the bounded blocking pool when the body is above [`offload::INLINE_MAX`].
pub async fn parse_async(headers: &HeaderMap, raw: &Bytes) -> Result<Value, ApiError> {
    let media = media_type(headers);
    let raw = raw.clone();
    offload(raw.len(), move || parse_media(media.as_deref(), &raw)).await?
}

fn parse_media(media: Option<&str>, raw: &[u8]) -> Result<Value, ApiError> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    match media {
        Some("application/json") => parse_json(raw),
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => parse_json(raw),
        Some(m) if is_yaml_media(m) => parse_yaml(raw),
        Some("application/x-www-form-urlencoded") => parse_form(raw),
        Some("text/plain") => Ok(parse_json(raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))),
        _ => Err(ApiError::UnsupportedMedia),
    }
}

/// The media types read as YAML.
pub fn is_yaml_media(media: &str) -> bool {
    matches!(
        media,
        "application/x-yaml" | "application/yaml" | "text/yaml" | "text/x-yaml"
    )
}

/// JSON, bounded.
pub fn parse_json(raw: &[u8]) -> Result<Value, ApiError> {
    let budget = Budget::new();
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value = Bounded::new(&budget)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            ApiError::BadBody(format!(
                "invalid JSON at line {} column {}{}",
                e.line(),
                e.column(),
                budget.why()
            ))
        })?;
    Ok(value)
}

/// YAML, bounded (see the module doc), one document. Unlike PyYAML (YAML 1.1), `yes`/`no` stay
/// strings.
pub fn parse_yaml(raw: &[u8]) -> Result<Value, ApiError> {
    yaml::parse(raw, &Budget::new())
}

/// One form-encoded chunk, as rest_cherrypy's `urlencoded_processor`: blank values dropped,
/// repeated keys become a list, `arg` is always a list, and each `arg` item and `kwarg` are
/// read as YAML flow scalars (`2` → 2, `[1, 2]` → a list, `k=v` stays text). Every pair and
/// every value read as YAML draw on one budget for the whole body.
pub fn parse_form(raw: &[u8]) -> Result<Value, ApiError> {
    let budget = Budget::new();
    let mut chunk = Map::new();
    for (k, v) in form_urlencoded::parse(raw) {
        budget
            .charge(1)
            .map_err(|_| ApiError::BadBody(format!("invalid form{}", budget.why())))?;
        if v.is_empty() {
            continue;
        }
        let v = Value::String(v.into_owned());
        match chunk.get_mut(k.as_ref()) {
            Some(Value::Array(items)) => items.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                chunk.insert(k.into_owned(), v);
            }
        }
    }
    if let Some(arg) = chunk.get_mut("arg") {
        let items = match arg.take() {
            Value::Array(items) => items,
            one => vec![one],
        };
        *arg = Value::Array(
            items
                .into_iter()
                .map(|v| yamlify(v, &budget))
                .collect::<Result<_, _>>()?,
        );
    }
    if let Some(kwarg) = chunk.get_mut("kwarg") {
        let v = yamlify(kwarg.take(), &budget)?;
        *kwarg = v;
    }
    Ok(Value::Object(chunk))
}

/// rest_cherrypy's `yamlify_arg`, reduced to what is safe: a string that reads as a YAML
/// scalar, flow list or flow map becomes that value; `k=v` and block YAML stay text. A value
/// that is not valid YAML stays text; one that exhausts the body's budget fails the body.
fn yamlify(v: Value, budget: &Budget) -> Result<Value, ApiError> {
    let Value::String(s) = &v else { return Ok(v) };
    if s.contains('=') && !s.trim_start().starts_with(['{', '[']) {
        return Ok(v);
    }
    if s.contains('\n') {
        return Ok(v);
    }
    match yaml::parse(s.as_bytes(), budget) {
        Ok(Value::String(_)) => Ok(v),
        Ok(parsed) => Ok(parsed),
        Err(e) if budget.exhausted() => Err(e),
        Err(_) => Ok(v),
    }
}

/// The node budget of one request body, shared by every parse of a value in it.
#[derive(Debug)]
pub struct Budget {
    nodes: Cell<usize>,
    bytes: Cell<usize>,
    exceeded: Cell<Option<&'static str>>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    /// A fresh budget of [`MAX_NODES`] values.
    pub fn new() -> Self {
        Self {
            nodes: Cell::new(0),
            bytes: Cell::new(0),
            exceeded: Cell::new(None),
        }
    }

    /// Scalar bytes used so far.
    pub fn bytes_used(&self) -> usize {
        self.bytes.get()
    }

    /// Charges `n` bytes of scalar text; `Err` once the total is over [`MAX_EXPANDED_BYTES`].
    pub fn charge_bytes(&self, n: usize) -> Result<(), &'static str> {
        let total = self.bytes.get().saturating_add(n);
        self.bytes.set(total);
        if total > MAX_EXPANDED_BYTES {
            return Err(self.exceed("too much text once aliases are expanded"));
        }
        Ok(())
    }

    /// Values used so far.
    pub fn used(&self) -> usize {
        self.nodes.get()
    }

    /// Charges `n` values; `Err` once the total is over [`MAX_NODES`].
    pub fn charge(&self, n: usize) -> Result<(), &'static str> {
        let total = self.nodes.get().saturating_add(n);
        self.nodes.set(total);
        if total > MAX_NODES {
            return Err(self.exceed("too many values"));
        }
        Ok(())
    }

    /// Records why the parse was cut off; returns the reason.
    pub fn exceed(&self, why: &'static str) -> &'static str {
        self.exceeded.set(Some(why));
        why
    }

    /// Whether a bound was hit (the body is refused, not read as text).
    pub fn exhausted(&self) -> bool {
        self.exceeded.get().is_some()
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        self.charge(1).map_err(E::custom)
    }

    /// `" (why; at most N values, M levels)"` when a bound was hit, else empty.
    pub fn why(&self) -> String {
        self.exceeded
            .get()
            .map(|w| {
                format!(
                    " ({w}; at most {MAX_NODES} values, {MAX_DEPTH} levels, {} MiB of text)",
                    MAX_EXPANDED_BYTES >> 20
                )
            })
            .unwrap_or_default()
    }
}

/// A `DeserializeSeed` building a JSON value while counting nodes and depth.
struct Bounded<'b> {
    budget: &'b Budget,
    depth: usize,
}

impl<'b> Bounded<'b> {
    fn new(budget: &'b Budget) -> Self {
        Self { budget, depth: 0 }
    }

    fn child(&self) -> Self {
        Self {
            budget: self.budget,
            depth: self.depth + 1,
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        self.budget.take()?;
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(self.budget.exceed("nested too deeply")));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(self.child())? {
            let key = match k {
                Value::String(s) => s,
                Value::Null => "None".to_owned(),
                other => other.to_string(),
            };
            let v = map.next_value_seed(self.child())?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom("YAML tags are not supported"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, v.parse().unwrap());
        h
    }

    #[test]
    fn formats_parse_to_the_same_chunk() {
        let want = json!([{"client": "local", "tgt": "*", "fun": "test.ping"}]);
        let j = parse(
            &ct("application/json; charset=utf-8"),
            br#"[{"client":"local","tgt":"*","fun":"test.ping"}]"#,
        );
        assert_eq!(j.unwrap(), want);
        let y = parse(
            &ct("application/x-yaml"),
            b"- client: local\n  tgt: '*'\n  fun: test.ping\n",
        );
        assert_eq!(y.unwrap(), want);
        let f = parse(
            &ct("application/x-www-form-urlencoded"),
            b"client=local&tgt=*&fun=test.ping",
        );
        assert_eq!(f.unwrap(), want[0]);
        assert_eq!(
            parse(&ct("text/plain"), b"not json").unwrap(),
            json!("not json")
        );
        assert_eq!(parse(&HeaderMap::new(), b"").unwrap(), Value::Null);
        assert_eq!(
            parse(&ct("application/xml"), b"<x/>").unwrap_err(),
            ApiError::UnsupportedMedia
        );
        assert_eq!(
            parse(&HeaderMap::new(), b"{}").unwrap_err(),
            ApiError::UnsupportedMedia
        );
    }

    #[test]
    fn form_args_are_lists_and_yamlified() {
        let v = parse_form(
            b"fun=test.arg&arg=2&arg=true&arg=k%3Dv&arg=%5B1%2C2%5D&arg=hi&arg=&kwarg=%7B%22a%22%3A+1%7D",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"fun": "test.arg", "arg": [2, true, "k=v", [1, 2], "hi"], "kwarg": {"a": 1}})
        );
        let v = parse_form(b"arg=one").unwrap();
        assert_eq!(v, json!({"arg": ["one"]}));
    }

    #[test]
    fn malformed_bodies_are_400() {
        for (t, b) in [
            ("application/json", &b"{nope"[..]),
            ("application/json", b"[1] [2]"),
            ("application/x-yaml", b"a: [1, 2"),
            ("application/x-yaml", b"--- 1\n--- 2\n"),
        ] {
            let e = parse(&ct(t), b).unwrap_err();
            assert!(matches!(e, ApiError::BadBody(_)), "{t} {e:?}");
        }
    }

    #[test]
    fn depth_and_alias_bombs_are_cut_off() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse_json(deep.as_bytes()),
            Err(ApiError::BadBody(m)) if m.contains("levels")
        ));
        // "Billion laughs": 9 levels of 9 aliases = 387 million leaves from ~600 bytes.
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let e = parse_yaml(doc.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, ApiError::BadBody(m) if m.contains("values") || m.contains("repetition")),
            "{e:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // One budget for the whole form: a bomb in each `arg` item cannot each take a fresh
        // budget (and a bomb is refused, not kept as text).
        let mut bomb = String::from("[&a0 [x, x, x, x, x, x, x, x, x]");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                ", &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
            ));
        }
        bomb.push(']');
        let item = format!(
            "&arg={}",
            bomb.replace('&', "%26")
                .replace(' ', "+")
                .replace(',', "%2C")
        );
        let e = parse_form(format!("fun=x{}", item.repeat(100)).as_bytes()).unwrap_err();
        assert!(
            matches!(&e, ApiError::BadBody(m) if m.contains("values")),
            "{e:?}"
        );
        let honest = "&arg=%5B1%2C2%5D".repeat(1000);
        assert_eq!(
            parse_form(format!("fun=x{honest}").as_bytes()).unwrap()["arg"][999],
            json!([1, 2])
        );
        // A few honest aliases are fine.
        let ok = parse_yaml(b"base: &b {tgt: '*'}\nchunk: *b\n").unwrap();
        assert_eq!(ok["chunk"], json!({"tgt": "*"}));
    }
}
