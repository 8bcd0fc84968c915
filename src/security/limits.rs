//! Bounds on request bodies checked before a parser sees them.
//!
//! Defends against depth bombs: `[[[[...]]]]` a few kilobytes long makes recursive parsers
//! (and the msgpack encoder after them) recurse per level. [`json_depth_within`] scans the raw
//! bytes once, without allocating, and refuses a body before serde parses it. It does not
//! validate JSON; syntax errors are left to the parser.

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
