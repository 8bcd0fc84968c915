//! Salt's data as Python's `json.dumps(value, ensure_ascii=False)` writes it (`", "` and `": "`
//! separators, non-ASCII unescaped, keys in bus order, non-string keys as Python turns them into
//! strings). Hand-written: salt-api clients compare these bytes, which no JSON crate writes.

use rmpv::Value;

use crate::salt::{Event, MAX_KEY_NESTING};

/// `{"data": <data>, "tag": <tag>}` as salt-api writes it.
pub fn salt_json(event: &Event) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"data\": ");
    write_py_json(&mut out, &event.data);
    out.push_str(", \"tag\": ");
    push_str_json(&mut out, &event.tag);
    out.push('}');
    out
}

/// Writes `value` as Python's `json.dumps(value, ensure_ascii=False)` does.
pub fn write_py_json(out: &mut String, value: &Value) {
    write_py_json_at(out, value, 0);
}

fn write_py_json_at(out: &mut String, value: &Value, key_nesting: usize) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(true) => out.push_str("true"),
        Value::Boolean(false) => out.push_str("false"),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::F32(f) => push_float(out, f64::from(*f)),
        Value::F64(f) => push_float(out, *f),
        Value::String(s) => push_str_json(out, &String::from_utf8_lossy(s.as_bytes())),
        Value::Binary(b) => push_str_json(out, &String::from_utf8_lossy(b)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_json_at(out, item, key_nesting);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_str_json(out, &key_text(k, key_nesting));
                out.push_str(": ");
                write_py_json_at(out, v, key_nesting);
            }
            out.push('}');
        }
        Value::Ext(..) => out.push_str("null"),
    }
}

/// A map key as text, as Python turns int, float, bool and None keys into strings. A list or map key becomes its JSON text, which is escaped again as a
/// string, doubling its length per level: past [`MAX_KEY_NESTING`] levels of keys within keys
/// it is written as `<nested key>` (the same bound as the clear-channel replies), so an 81-byte
/// frame cannot cost seconds and megabytes.
fn key_text(key: &Value, key_nesting: usize) -> String {
    match key {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Nil => "null".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Array(_) | Value::Map(_) if key_nesting >= MAX_KEY_NESTING => {
            "<nested key>".to_owned()
        }
        other => {
            let mut s = String::new();
            write_py_json_at(&mut s, other, key_nesting + 1);
            s
        }
    }
}

fn push_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // serde_json writes the shortest round-trip form with a `.0` on whole numbers, as
        // Python's repr does (exponents differ in form: 1e+20 vs 1e20).
        out.push_str(
            &serde_json::Number::from_f64(f).map_or_else(|| "null".into(), |n| n.to_string()),
        );
    }
}

/// Writes `s` as a JSON string, as Python's `json.dumps(s, ensure_ascii=False)` does.
pub fn push_str_json(out: &mut String, s: &str) {
    // serde_json escapes exactly what Python's ensure_ascii=False does.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_as_python_writes_it() {
        let data = Value::Map(vec![
            (Value::from("jid"), Value::from("2026")),
            (
                Value::from("minions"),
                Value::Array(vec![Value::from("m1"), Value::from("é\n\"")]),
            ),
            (Value::from(1), Value::from(1.5)),
            (Value::from("ok"), Value::Boolean(true)),
            (Value::from("none"), Value::Nil),
            (Value::from("empty"), Value::Map(vec![])),
        ]);
        let ev = Event::new("salt/job/2026/new", data);
        assert_eq!(
            salt_json(&ev),
            r#"{"data": {"jid": "2026", "minions": ["m1", "é\n\""], "1": 1.5, "ok": true, "none": null, "empty": {}}, "tag": "salt/job/2026/new"}"#
        );
        let mut s = String::new();
        write_py_json(&mut s, &Value::from(2.0));
        assert_eq!(s, "2.0");
    }

    #[test]
    fn keys_nested_in_keys_stay_small() {
        // Found by the `frame` fuzz target: a map key holding a map key holding ..., each
        // escaped once more per level, doubled the text per level (81 bytes took seconds).
        let mut key = Value::from("\"");
        for _ in 0..24 {
            key = Value::Map(vec![(key, Value::Nil)]);
        }
        let ev = Event::new("t", Value::Map(vec![(key, Value::Nil)]));
        let text = salt_json(&ev);
        assert!(text.len() < 4096, "{} bytes", text.len());
        assert!(text.contains("<nested key>"), "{text}");
        // Shallow list keys are still written as their JSON text.
        let ev = Event::new(
            "t",
            Value::Map(vec![(Value::Array(vec![1.into()]), 2.into())]),
        );
        assert_eq!(salt_json(&ev), r#"{"data": {"[1]": 2}, "tag": "t"}"#);
    }
}
