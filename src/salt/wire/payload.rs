//! Clear-channel payloads: the request envelope and the shapes of the master's replies.
//!
//! Requests are `{"enc": "clear", "load": {...}, "version": 3}`; the integer version is required
//! by current masters (`minimum_auth_version`). Replies are the bare return value of the master's
//! `ClearFuncs` method, packed with `use_bin_type=False`: every string may arrive as msgpack str
//! holding invalid UTF-8, so replies are decoded into [`rmpv::Value`] and read tolerantly.

use rmpv::Value;

use crate::salt::error::SaltError;
use crate::salt::value::{map_get, text_like};

/// Builds a msgpack map from string keys.
pub fn map<I, K>(items: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    Value::Map(
        items
            .into_iter()
            .map(|(k, v)| (Value::from(k.into()), v))
            .collect(),
    )
}

/// Packs a clear-channel request around `load`.
pub fn clear_request(load: Value) -> Result<Vec<u8>, SaltError> {
    let envelope = map([
        ("enc", Value::from("clear")),
        ("load", load),
        ("version", Value::from(3)),
    ]);
    let mut out = Vec::with_capacity(128);
    rmpv::encode::write_value(&mut out, &envelope)
        .map_err(|e| SaltError::Protocol(format!("cannot pack request: {e}")))?;
    Ok(out)
}

/// The deepest msgpack nesting saltgate decodes (the frame walker's bound too).
pub const MAX_DEPTH: usize = 512;

/// Decodes one msgpack value from the front of `bytes` and advances it: the one msgpack
/// decoder (`clippy.toml` bans the others). It takes a slice, never a stream, so its input is
/// a whole buffer whose size was bounded where it was read (a frame, a reply); nesting is
/// bounded by [`MAX_DEPTH`], and lengths in the data do not preallocate beyond what is there.
#[allow(clippy::disallowed_methods, reason = "the one bounded msgpack decoder")]
pub fn decode_value(bytes: &mut &[u8]) -> Result<Value, rmpv::decode::Error> {
    rmpv::decode::read_value_with_max_depth(bytes, MAX_DEPTH)
}

/// Decodes a reply without trusting its strings to be UTF-8.
pub fn decode_reply(bytes: &[u8]) -> Result<Value, SaltError> {
    let mut cursor = bytes;
    let value = decode_value(&mut cursor)
        .map_err(|e| SaltError::Protocol(format!("reply is not msgpack: {e}")))?;
    if !cursor.is_empty() {
        return Err(SaltError::Protocol("trailing bytes after the reply".into()));
    }
    Ok(value)
}

/// Turns the master's error shapes into a [`SaltError`]; returns the value when it is not one.
///
/// - a bare string reply (`"bad load"`, `"Some exception handling minion payload"`) is a master
///   error; the empty string is the reply to refused credentials and is handled by callers;
/// - `{"error": {"name": ..., "message": ...}}` is an authentication or authorization error, or
///   another master error;
/// - `{"ret": false, "cluster_retry": true}` (3008 clusters) asks to retry later.
pub fn check_reply(value: Value) -> Result<Value, SaltError> {
    if let Some(text) = text_like(&value) {
        return Err(SaltError::Master(if text.is_empty() {
            "empty reply".into()
        } else {
            text
        }));
    }
    if let Some(err) = map_get(&value, "error") {
        return Err(error_from(err));
    }
    let load = map_get(&value, "load").unwrap_or(&value);
    if map_get(load, "cluster_retry").and_then(Value::as_bool) == Some(true) {
        return Err(SaltError::Unavailable(
            "master cluster not ready, retry later".into(),
        ));
    }
    if map_get(&value, "msg").and_then(text_like).as_deref() == Some("bad load") {
        return Err(SaltError::Protocol(
            "master refused the payload: bad load".into(),
        ));
    }
    Ok(value)
}

/// Maps an `error` value (a string or `{name, message}`) to a [`SaltError`].
pub fn error_from(err: &Value) -> SaltError {
    if let Some(text) = text_like(err) {
        return SaltError::Master(text);
    }
    let name = map_get(err, "name").and_then(text_like).unwrap_or_default();
    let message = map_get(err, "message")
        .and_then(text_like)
        .unwrap_or_else(|| name.clone());
    match name.as_str() {
        "AuthenticationError" | "TokenAuthenticationError" | "EauthAuthenticationError" => {
            SaltError::AuthRefused(message)
        }
        "AuthorizationError" => SaltError::NotAuthorized(message),
        _ if name.is_empty() => SaltError::Master(message),
        _ => SaltError::Master(format!("{name}: {message}")),
    }
}

/// Converts a msgpack value to JSON for the HTTP layer. Bytes that are not UTF-8 become text
/// with replacement characters; ext types (Salt's datetime, ext 78) become their text. A map key
/// that is not text becomes its JSON text (Python could not even hold a list or map as a key).
///
/// Security: a key whose JSON text holds another such key is escaped once more per level, which
/// doubles its length, so keys nested in keys past [`MAX_KEY_NESTING`] are written as
/// `"<nested key>"`; the output then stays within a small multiple of the input.
pub fn to_json(value: &Value) -> serde_json::Value {
    to_json_at(value, 0)
}

/// How many keys-within-keys [`to_json`] writes out as JSON text.
pub const MAX_KEY_NESTING: usize = 4;

fn to_json_at(value: &Value, key_nesting: usize) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => {
            if let Some(n) = i.as_i64() {
                J::from(n)
            } else if let Some(n) = i.as_u64() {
                J::from(n)
            } else {
                J::Null
            }
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) => J::Array(items.iter().map(|v| to_json_at(v, key_nesting)).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match text_like(k) {
                        Some(s) => s,
                        None if key_nesting >= MAX_KEY_NESTING
                            && matches!(k, Value::Array(_) | Value::Map(_)) =>
                        {
                            "<nested key>".to_owned()
                        }
                        None => match to_json_at(k, key_nesting + 1) {
                            J::String(s) => s,
                            other => other.to_string(),
                        },
                    };
                    (key, to_json_at(v, key_nesting))
                })
                .collect(),
        ),
        Value::Ext(_, bytes) => J::String(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// Converts JSON to msgpack, strings as str (what Salt's own clients send).
pub fn from_json(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        J::Object(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mk_token_request_matches_capture_shape() {
        let load = map([
            ("cmd", Value::from("mk_token")),
            ("eauth", Value::from("file")),
            ("username", Value::from("wireuser")),
            ("password", Value::from("wirepass")),
        ]);
        let bytes = clear_request(load).unwrap();
        // WIRE.md §1.2: 86 bytes, map(3), version 3 as an integer at the end.
        assert_eq!(bytes.len(), 86);
        assert_eq!(bytes[0], 0x83);
        assert!(bytes.ends_with(b"\xa7version\x03"));
    }

    #[test]
    fn error_shapes_are_typed() {
        let bad = decode_reply(b"\xa8bad load").unwrap();
        assert!(matches!(check_reply(bad), Err(SaltError::Master(m)) if m == "bad load"));
        let auth = map([(
            "error",
            map([
                ("name", Value::from("AuthenticationError")),
                ("message", Value::from("nope")),
            ]),
        )]);
        assert!(matches!(check_reply(auth), Err(SaltError::AuthRefused(_))));
        let authz = map([("error", map([("name", Value::from("AuthorizationError"))]))]);
        assert!(matches!(
            check_reply(authz),
            Err(SaltError::NotAuthorized(_))
        ));
        let retry = map([
            ("ret", Value::from(false)),
            ("cluster_retry", Value::from(true)),
        ]);
        assert!(matches!(check_reply(retry), Err(SaltError::Unavailable(_))));
        let bad_msg = map([("msg", Value::from("bad load"))]);
        assert!(matches!(check_reply(bad_msg), Err(SaltError::Protocol(_))));
        let ok = map([("jid", Value::from("1"))]);
        assert!(check_reply(ok).is_ok());
    }

    #[test]
    fn invalid_utf8_reply_decodes_and_converts() {
        // {"k": <str ff fe>} as the master may send it.
        let v = decode_reply(b"\x81\xa1k\xa2\xff\xfe").unwrap();
        assert_eq!(to_json(&v), serde_json::json!({"k": "\u{fffd}\u{fffd}"}));
    }

    #[test]
    fn str16_token_decodes() {
        // Salt packs 64-char tokens as str16 (da 00 40).
        let mut raw = b"\x81\xa5token\xda\x00\x40".to_vec();
        raw.extend_from_slice(&[b'a'; 64]);
        let v = decode_reply(&raw).unwrap();
        assert_eq!(text_like(map_get(&v, "token").unwrap()).unwrap().len(), 64);
    }

    #[test]
    fn trailing_bytes_are_a_protocol_error() {
        assert!(matches!(
            decode_reply(b"\x80\x80"),
            Err(SaltError::Protocol(_))
        ));
    }

    #[test]
    fn keys_nested_in_keys_stay_small() {
        // Found by the `reply` fuzz target: each map used as a key inside a key was escaped
        // once more, doubling its text, so a 276-byte reply took over a minute. 24 levels of
        // `{<key>: 1}` (under 100 bytes packed) were 2^24 backslashes.
        let mut key = Value::from("\"x\"");
        for _ in 0..24 {
            key = Value::Map(vec![(key, Value::from(1))]);
        }
        let reply = Value::Map(vec![(key, Value::from("v"))]);
        let mut packed = Vec::new();
        rmpv::encode::write_value(&mut packed, &reply).unwrap();
        let text = to_json(&decode_reply(&packed).unwrap()).to_string();
        assert!(text.len() < 4096, "{} bytes of JSON", text.len());
        assert!(text.contains("<nested key>"), "{text}");
        // One level is still written out as JSON text.
        let one = Value::Map(vec![(
            Value::Array(vec![Value::from(1), Value::from("a")]),
            Value::from(2),
        )]);
        assert_eq!(to_json(&one), serde_json::json!({"[1,\"a\"]": 2}));
    }

    #[test]
    fn json_round_trip() {
        let j = serde_json::json!({"a": [1, -2, 2.5, null, true, "x"], "b": {"c": u64::MAX}});
        assert_eq!(to_json(&from_json(&j)), j);
    }
}
