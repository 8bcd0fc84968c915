//! Request bodies of the lowstate routes (`/`, `/run`, `/login`, `/token`, `POST /minions`):
//! bytes + `Content-Type` → a JSON value, with rest_cherrypy's input formats.
//!
//! | Content-Type | parsed as |
//! | --- | --- |
//! | `application/json` (any `+json`) | JSON; serde_json refuses nesting deeper than 128 |
//! | `application/x-yaml`, `application/yaml`, `text/yaml` | YAML 1.2, one document; tags carry no meaning (nothing is ever constructed from them) |
//! | `application/x-www-form-urlencoded` | one chunk; repeated keys → list, `arg` always a list, `arg` items and `kwarg` read as YAML flow scalars (rest_cherrypy's `yamlify_arg`) |
//! | `text/plain` | JSON when it parses, else the text (which is then "not a list": 400) |
//! | anything else, or none with a body | 415 |
//!
//! Security: every parse is bounded by a node budget and a depth limit *while* it runs. That
//! matters for YAML: serde_yaml expands aliases lazily and only caps the number of alias jumps
//! (100 × the event count), which still lets a small "billion laughs" document expand to
//! millions of nodes. The budget stops the expansion as it happens, so the largest value built is
//! [`MAX_NODES`] nodes whatever the document.

use std::cell::Cell;
use std::fmt;

use http::HeaderMap;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::ApiError;

/// The most values (scalars, lists, maps) one body may produce.
pub const MAX_NODES: usize = 100_000;
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
/// what that means (for a lowstate it is "not a list").
pub fn parse(headers: &HeaderMap, raw: &[u8]) -> Result<Value, ApiError> {
    let media = media_type(headers);
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    match media.as_deref() {
        Some("application/json") => parse_json(raw),
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => parse_json(raw),
        Some("application/x-yaml" | "application/yaml" | "text/yaml" | "text/x-yaml") => {
            parse_yaml(raw)
        }
        Some("application/x-www-form-urlencoded") => parse_form(raw),
        Some("text/plain") => Ok(parse_json(raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))),
        _ => Err(ApiError::UnsupportedMedia),
    }
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
    let budget = Budget::new();
    let de = serde_yaml::Deserializer::from_slice(raw);
    Bounded::new(&budget).deserialize(de).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        ApiError::BadBody(format!("invalid YAML{at}{}", budget.why()))
    })
}

/// One form-encoded chunk, as rest_cherrypy's `urlencoded_processor`: blank values dropped,
/// repeated keys become a list, `arg` is always a list, and each `arg` item and `kwarg` are
/// read as YAML flow scalars (`2` → 2, `[1, 2]` → a list, `k=v` stays text).
pub fn parse_form(raw: &[u8]) -> Result<Value, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw)
        .map_err(|_| ApiError::BadBody("invalid form encoding".into()))?;
    let mut chunk = Map::new();
    for (k, v) in pairs {
        if v.is_empty() {
            continue;
        }
        match chunk.get_mut(&k) {
            Some(Value::Array(items)) => items.push(Value::String(v)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(v)]);
            }
            None => {
                chunk.insert(k, Value::String(v));
            }
        }
    }
    if let Some(arg) = chunk.get_mut("arg") {
        let items = match arg.take() {
            Value::Array(items) => items,
            one => vec![one],
        };
        *arg = Value::Array(items.into_iter().map(yamlify).collect());
    }
    if let Some(kwarg) = chunk.get_mut("kwarg") {
        let v = yamlify(kwarg.take());
        *kwarg = v;
    }
    Ok(Value::Object(chunk))
}

/// rest_cherrypy's `yamlify_arg`, reduced to what is safe: a string that reads as a YAML
/// scalar, flow list or flow map becomes that value; `k=v` and block YAML stay text.
fn yamlify(v: Value) -> Value {
    let Value::String(s) = &v else { return v };
    if s.contains('=') && !s.trim_start().starts_with(['{', '[']) {
        return v;
    }
    if s.contains('\n') {
        return v;
    }
    match parse_yaml(s.as_bytes()) {
        Ok(Value::String(_)) | Err(_) => v,
        Ok(parsed) => parsed,
    }
}

/// The shared node budget of one parse.
struct Budget {
    nodes: Cell<usize>,
    exceeded: Cell<Option<&'static str>>,
}

impl Budget {
    fn new() -> Self {
        Self {
            nodes: Cell::new(0),
            exceeded: Cell::new(None),
        }
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > MAX_NODES {
            self.exceeded.set(Some("too many values"));
            return Err(E::custom("too many values"));
        }
        Ok(())
    }

    fn why(&self) -> String {
        self.exceeded
            .get()
            .map(|w| format!(" ({w}; at most {MAX_NODES} values, {MAX_DEPTH} levels)"))
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
            self.budget.exceeded.set(Some("nested too deeply"));
            return Err(E::custom("nested too deeply"));
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
        // A few honest aliases are fine.
        let ok = parse_yaml(b"base: &b {tgt: '*'}\nchunk: *b\n").unwrap();
        assert_eq!(ok["chunk"], json!({"tgt": "*"}));
    }
}
