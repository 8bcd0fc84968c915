//! Bounds on request bodies checked before a parser sees them.
//!
//! Defends against depth bombs: `[[[[...]]]]` a few kilobytes long makes recursive parsers
//! (and the msgpack encoder after them) recurse per level. [`json_depth_within`] scans the raw
//! bytes once, without allocating, and refuses a body before serde parses it. It does not
//! validate JSON; syntax errors are left to the parser.
//!
//! Also defends against oversized bodies: [`check_content_length`] refuses on the declared
//! length before a byte is read (and refuses conflicting `Content-Length` values, a request
//! smuggling vector), and [`CappedBuf`] counts bytes as frames arrive, so a chunked body
//! without a length is cut off at the limit instead of being buffered whole.

use http::HeaderMap;
use http::header::CONTENT_LENGTH;

/// Why a body was refused by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyLimit {
    /// Declared or received length exceeds the limit.
    #[error("body larger than {max} bytes")]
    TooLarge {
        /// The limit in force.
        max: u64,
    },
    /// `Content-Length` is not a decimal number, or given several times with different values.
    #[error("invalid Content-Length")]
    InvalidLength,
}

/// Checks the declared `Content-Length` against `max` before reading the body. No header
/// (chunked) passes; the streaming count in [`CappedBuf`] then applies.
pub fn check_content_length(headers: &HeaderMap, max: u64) -> Result<Option<u64>, BodyLimit> {
    let mut declared: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| BodyLimit::InvalidLength)?.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BodyLimit::InvalidLength);
        }
        let n: u64 = text.parse().map_err(|_| BodyLimit::InvalidLength)?;
        match declared {
            Some(d) if d != n => return Err(BodyLimit::InvalidLength),
            _ => declared = Some(n),
        }
    }
    match declared {
        Some(n) if n > max => Err(BodyLimit::TooLarge { max }),
        other => Ok(other),
    }
}

/// A body buffer that refuses to grow past `max` bytes. Feed it each frame as it arrives.
#[derive(Debug, Clone)]
pub struct CappedBuf {
    buf: Vec<u8>,
    max: usize,
}

impl CappedBuf {
    /// An empty buffer with limit `max`. Nothing is preallocated from untrusted lengths.
    pub fn new(max: usize) -> CappedBuf {
        CappedBuf {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends `chunk`, or refuses (keeping nothing of it) when the total would exceed `max`.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyLimit> {
        if chunk.len() > self.max.saturating_sub(self.buf.len()) {
            return Err(BodyLimit::TooLarge {
                max: u64::try_from(self.max).unwrap_or(u64::MAX),
            });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The collected body.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// The nesting depth allowed for hook and lowstate bodies unless a rule says otherwise.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;

/// True when no array or object in `bytes` nests deeper than `max_depth` (a top-level `{}` has
/// depth 1; a scalar has depth 0). Brackets inside strings, including after escaped quotes,
/// are not counted. Unbalanced closers are ignored (the parser rejects them).
pub fn json_depth_within(bytes: &[u8], max_depth: usize) -> bool {
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[track_caller]
    fn check(json: &str, max: usize, expected: bool) {
        assert_eq!(
            json_depth_within(json.as_bytes(), max),
            expected,
            "{json} max {max}"
        );
    }

    #[test]
    fn table() {
        check("1", 0, true);
        check("{}", 0, false);
        check("{}", 1, true);
        check(r#"{"a":[1,{"b":2}]}"#, 3, true);
        check(r#"{"a":[1,{"b":2}]}"#, 2, false);
        check("[[],[],[]]", 2, true);
        check(r#"{"a":"[[[[[[["}"#, 1, true);
        check(r#"{"a":"\"[[[["}"#, 1, true);
        check(r#"{"a":"\\"}"#, 1, true);
        check(r#"{"a":"\\",[[[1]]]}"#, 3, false);
        check(r#"["\\\"[["]"#, 1, true);
        check("]]]][[", 1, false);
        check("]]]][", 1, true);
    }

    #[test]
    fn content_length() {
        let h = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for v in values {
                map.append(CONTENT_LENGTH, v.parse().unwrap());
            }
            map
        };
        assert_eq!(check_content_length(&h(&[]), 10), Ok(None));
        assert_eq!(check_content_length(&h(&["10"]), 10), Ok(Some(10)));
        assert_eq!(
            check_content_length(&h(&["11"]), 10),
            Err(BodyLimit::TooLarge { max: 10 })
        );
        assert_eq!(check_content_length(&h(&["5", "5"]), 10), Ok(Some(5)));
        assert_eq!(
            check_content_length(&h(&["5", "6"]), 10),
            Err(BodyLimit::InvalidLength)
        );
        assert_eq!(
            check_content_length(&h(&["-1"]), 10),
            Err(BodyLimit::InvalidLength)
        );
        assert_eq!(
            check_content_length(&h(&["+5"]), 10),
            Err(BodyLimit::InvalidLength)
        );
        assert_eq!(
            check_content_length(&h(&["1e3"]), 10),
            Err(BodyLimit::InvalidLength)
        );
        assert_eq!(
            check_content_length(&h(&["99999999999999999999999"]), 10),
            Err(BodyLimit::InvalidLength)
        );
    }

    #[test]
    fn capped_buf() {
        let mut b = CappedBuf::new(5);
        assert!(b.is_empty());
        assert_eq!(b.push(b"abc"), Ok(()));
        assert_eq!(b.push(b"de"), Ok(()));
        assert_eq!(b.push(b"f"), Err(BodyLimit::TooLarge { max: 5 }));
        assert_eq!(b.len(), 5);
        assert_eq!(b.into_inner(), b"abcde");
        let mut b = CappedBuf::new(2);
        assert_eq!(b.push(b"abc"), Err(BodyLimit::TooLarge { max: 2 }));
        assert!(b.is_empty());
    }

    #[test]
    fn bomb_refused() {
        let bomb = "[".repeat(100_000);
        assert!(!json_depth_within(bomb.as_bytes(), DEFAULT_MAX_JSON_DEPTH));
    }

    proptest! {
        #[test]
        fn agrees_with_serde(depth in 0usize..40, max in 0usize..40) {
            let json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            prop_assert_eq!(json_depth_within(json.as_bytes(), max), depth <= max);
            prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..8) {
            let _ = json_depth_within(&bytes, max);
        }
    }
}
