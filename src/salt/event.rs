//! Salt events: a tag and a msgpack map, packed as `tag + "\n\n" + msgpack(data)`.

use rmpv::Value;

use super::error::SaltError;
pub use super::value::{bytes_like, map_get, text_like};

/// The separator between an event's tag and its packed data.
pub const TAG_END: &[u8] = b"\n\n";

/// One event on a Salt event bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The tag, e.g. `salt/netapi/hook/github/deploy`.
    pub tag: String,
    /// The data; a map for every event Salt itself fires.
    pub data: Value,
}

impl Event {
    /// Builds an event.
    pub fn new(tag: impl Into<String>, data: Value) -> Self {
        Self {
            tag: tag.into(),
            data,
        }
    }

    /// Packs the event the way Salt's `SaltEvent.pack` does: UTF-8 tag, `\n\n`, then the data as
    /// msgpack with bin types.
    pub fn pack(&self) -> Result<Vec<u8>, SaltError> {
        if self.tag.as_bytes().windows(2).any(|w| w == TAG_END) {
            return Err(SaltError::Protocol("event tag contains \\n\\n".into()));
        }
        let mut out = Vec::with_capacity(self.tag.len() + 2 + 64);
        out.extend_from_slice(self.tag.as_bytes());
        out.extend_from_slice(TAG_END);
        rmpv::encode::write_value(&mut out, &self.data)
            .map_err(|e| SaltError::Protocol(format!("cannot pack event data: {e}")))?;
        Ok(out)
    }

    /// Unpacks `tag + "\n\n" + msgpack`. The tag must be UTF-8 (lossy decoding would let two
    /// different tags compare equal); the data is read into a tolerant [`Value`].
    pub fn unpack(raw: &[u8]) -> Result<Self, SaltError> {
        let split = raw
            .windows(2)
            .position(|w| w == TAG_END)
            .ok_or_else(|| SaltError::Protocol("event without a tag separator".into()))?;
        let tag = std::str::from_utf8(&raw[..split])
            .map_err(|_| SaltError::Protocol("event tag is not UTF-8".into()))?
            .to_owned();
        let mut rest = &raw[split + 2..];
        let data = crate::salt::wire::payload::decode_value(&mut rest)
            .map_err(|e| SaltError::Protocol(format!("event data is not msgpack: {e}")))?;
        Ok(Self { tag, data })
    }

    /// Removes credentials the master echoes in error events. When a publish fails
    /// authentication or authorization the master fires `salt/job/<jid>/error` (or
    /// `salt/job/error`) with the whole request load, which holds the caller's password or
    /// token, or the master's root key. Those values are replaced before any in-process
    /// subscriber (and so any `/events` client) sees the event. The Reactor's management
    /// events (`salt/reactors/manage/*`, sent by Salt's `reactor.*` runners and by saltgate's
    /// Reactor readiness probe) carry the master's key in `key` and are cleaned the same way.
    /// Returns whether it changed.
    pub fn redact_credentials(&mut self) -> bool {
        let error = self.tag.ends_with("/error") || self.tag.contains("/error/");
        if !error && !self.tag.starts_with(REACTOR_MANAGE) {
            return false;
        }
        redact_value(&mut self.data, 0)
    }

    /// An estimate of the bytes this event holds once fanned out to the streams: its decoded
    /// data (each node's size plus its heap bytes) and its JSON rendering (strings counted with
    /// their escapes, invalid UTF-8 at its replacement size). Linear in the data, no recursion;
    /// the broadcast queue bounds its bytes with it.
    pub fn footprint(&self) -> usize {
        const NODE: usize = std::mem::size_of::<Value>();
        let mut total = std::mem::size_of::<Self>() + 2 * self.tag.len() + 32;
        let mut stack: Vec<&Value> = vec![&self.data];
        while let Some(value) = stack.pop() {
            total += NODE;
            match value {
                Value::String(s) => {
                    total += s.as_bytes().len() + json_text_len(s.as_bytes(), s.as_str().is_some());
                }
                Value::Binary(b) | Value::Ext(_, b) => {
                    total += b.len() + json_text_len(b, std::str::from_utf8(b).is_ok());
                }
                Value::Array(items) => {
                    total += 2;
                    stack.extend(items.iter());
                }
                Value::Map(entries) => {
                    total += 2 + entries.len() * 4;
                    for (k, v) in entries {
                        stack.push(k);
                        stack.push(v);
                    }
                }
                // Numbers and literals: at most a few dozen characters of JSON.
                _ => total += 24,
            }
        }
        total
    }

    /// Looks up a string-keyed field of the data map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        map_get(&self.data, key)
    }
}

/// The length of `bytes` as a JSON string, quotes included: escapes are counted, and bytes of
/// invalid UTF-8 at the size of their replacement character.
fn json_text_len(bytes: &[u8], utf8: bool) -> usize {
    let escaped = bytes
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' => 1,
            0..0x20 => 5,
            _ => 0,
        })
        .sum::<usize>();
    let text = if utf8 { bytes.len() } else { 3 * bytes.len() };
    2 + text + escaped
}

/// The tag prefix of the Reactor's management events, which carry the master's key.
pub const REACTOR_MANAGE: &str = "salt/reactors/manage/";

/// Keys whose values are credentials in a Salt request load.
const CREDENTIAL_KEYS: &[&str] = &["password", "passwd", "token", "key", "eauth_password"];

fn redact_value(value: &mut Value, depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    let mut changed = false;
    match value {
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let is_credential = bytes_like(k)
                    .is_some_and(|k| CREDENTIAL_KEYS.iter().any(|c| c.as_bytes() == k));
                if is_credential && !matches!(v, Value::Nil) {
                    *v = Value::from("[redacted by saltgate]");
                    changed = true;
                } else {
                    changed |= redact_value(v, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                changed |= redact_value(v, depth + 1);
            }
        }
        _ => {}
    }
    changed
}

/// Salt's `_stamp`: UTC ISO 8601 with microseconds and no offset, `2026-11-22T19:30:30.245676`.
pub fn stamp_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
    );
    now.format(&fmt).unwrap_or_default()
}

/// The tag a webhook fires: `salt/netapi/hook/<path>`, with the path's slashes trimmed.
pub fn hook_tag(path: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        "salt/netapi/hook".to_owned()
    } else {
        format!("salt/netapi/hook/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip() {
        let ev = Event::new(
            "salt/netapi/hook/x",
            Value::Map(vec![
                ("body".into(), Value::Binary(vec![0xff, 0x00])),
                ("n".into(), Value::from(3)),
            ]),
        );
        let raw = ev.pack().unwrap();
        assert!(raw.starts_with(b"salt/netapi/hook/x\n\n"));
        assert_eq!(Event::unpack(&raw).unwrap(), ev);
    }

    #[test]
    fn tags_with_separator_are_refused() {
        assert!(matches!(
            Event::new("a\n\nb", Value::Nil).pack(),
            Err(SaltError::Protocol(_))
        ));
    }

    #[test]
    fn unpack_refuses_missing_separator_and_bad_data() {
        assert!(matches!(
            Event::unpack(b"just-a-tag"),
            Err(SaltError::Protocol(_))
        ));
        assert!(matches!(
            Event::unpack(b"tag\n\n"),
            Err(SaltError::Protocol(_))
        ));
    }

    #[test]
    fn invalid_utf8_strings_are_kept() {
        // fixmap(1) "k" -> fixstr(2) ff fe : invalid UTF-8, as Salt may send.
        let raw = b"t\n\n\x81\xa1k\xa2\xff\xfe";
        let ev = Event::unpack(raw).unwrap();
        assert_eq!(bytes_like(ev.get("k").unwrap()), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn error_events_lose_their_credentials() {
        let load = |tag: &str| {
            Event::new(
                tag,
                Value::Map(vec![
                    ("fun".into(), "test.arg".into()),
                    ("key".into(), "ROOTKEY".into()),
                    (
                        "kwargs".into(),
                        Value::Map(vec![
                            ("username".into(), "alice".into()),
                            ("password".into(), "hunter2".into()),
                            ("token".into(), "abc".into()),
                        ]),
                    ),
                ]),
            )
        };
        for tag in ["salt/job/20261122193030150800/error", "salt/job/error"] {
            let mut ev = load(tag);
            assert!(ev.redact_credentials());
            let text = format!("{:?}", ev.data);
            assert!(
                !text.contains("hunter2") && !text.contains("ROOTKEY") && !text.contains("abc")
            );
            assert!(text.contains("alice"));
        }
        let mut ev = load("salt/reactors/manage/is_leader");
        assert!(ev.redact_credentials());
        assert!(!format!("{:?}", ev.data).contains("ROOTKEY"));
        let mut ev = load("salt/job/1/ret/m");
        assert!(!ev.redact_credentials());
    }

    #[test]
    fn footprint_counts_data_and_its_escaped_rendering() {
        let small = Event::new("t", Value::Map(vec![])).footprint();
        assert!(small < 256, "{small}");
        let plain = Event::new("t", Value::from("a".repeat(100_000))).footprint();
        assert!((200_000..210_000).contains(&plain), "{plain}");
        // Each control byte is six bytes of JSON.
        let controls = Event::new("t", Value::from("\u{1}".repeat(100_000))).footprint();
        assert!(controls >= 700_000, "{controls}");
        // Many small nodes cost their node size, not their packed size.
        let nodes = Event::new("t", Value::Array(vec![Value::from(1); 100_000])).footprint();
        assert!(nodes >= 100_000 * std::mem::size_of::<Value>(), "{nodes}");
        // Deep nesting does not recurse.
        let mut deep = Value::Nil;
        for _ in 0..5_000 {
            deep = Value::Array(vec![deep]);
        }
        assert!(Event::new("t", deep).footprint() > 5_000 * std::mem::size_of::<Value>());
    }

    #[test]
    fn stamp_has_salt_shape() {
        let s = stamp_now();
        assert_eq!(s.len(), 26, "{s}");
        assert_eq!(&s[10..11], "T");
    }

    #[test]
    fn hook_tags() {
        assert_eq!(hook_tag("github/deploy"), "salt/netapi/hook/github/deploy");
        assert_eq!(hook_tag("/a/"), "salt/netapi/hook/a");
        assert_eq!(hook_tag(""), "salt/netapi/hook");
    }
}
