//! Reading Salt's msgpack values, whose strings may come as str or bin (Salt packs with
//! `use_bin_type=False`). Used by the wire layer and the events alike, so it depends on neither.

use rmpv::Value;

/// Looks up `key` in a msgpack map whose keys are str or bin.
pub fn map_get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value
        .as_map()?
        .iter()
        .find_map(|(k, v)| (bytes_like(k) == Some(key.as_bytes())).then_some(v))
}

/// The bytes of a str (valid UTF-8 or not) or bin value. Salt packs replies with
/// `use_bin_type=False`, so a "string" may be either and may hold invalid UTF-8.
pub fn bytes_like(value: &Value) -> Option<&[u8]> {
    match value {
        Value::String(s) => Some(s.as_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// A str or bin value as text, replacing invalid UTF-8.
pub fn text_like(value: &Value) -> Option<String> {
    bytes_like(value).map(|b| String::from_utf8_lossy(b).into_owned())
}
