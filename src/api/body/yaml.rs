//! YAML bodies: a linear pre-scan of the raw bytes, then a value built event by event from
//! saphyr-parser (pure Rust, cost linear in the input), charged to the body's [`Budget`].
//!
//! The pre-scan ([`prescan`]) refuses a body before any parser sees it when it is plainly too
//! deep (flow `{`/`[` nesting or block indentation levels over [`MAX_DEPTH`]), has more than
//! [`MAX_NODES`] nodes, or holds more than one document. It reads quoted scalars and comments
//! as such, so `"[[["` is one scalar, not three levels. It is an estimate, and it is not the
//! guarantee: the builder enforces the same bounds exactly while the parser runs, and an alias
//! is charged the full size of the value it repeats before that value is copied.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};

use super::{Budget, MAX_DEPTH, MAX_NODES};
use crate::api::error::ApiError;

/// What the pre-scan saw in a YAML text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Deepest nesting of flow collections (`{`, `[`).
    pub flow_depth: usize,
    /// Deepest block nesting: indentation levels plus compact `- - ` / `? ` entries on a line.
    pub block_depth: usize,
    /// Estimated nodes: scalars, aliases and collections seen.
    pub nodes: usize,
    /// Documents.
    pub documents: usize,
    /// Anchors (`&a`).
    pub anchors: usize,
    /// Aliases (`*a`).
    pub aliases: usize,
}

impl Shape {
    /// Why the shape is refused, if it is.
    pub fn refusal(&self) -> Option<String> {
        if self.documents > 1 {
            return Some(format!(
                "a YAML body is one document, this one has {}",
                self.documents
            ));
        }
        if self.flow_depth > MAX_DEPTH || self.block_depth > MAX_DEPTH {
            return Some(format!(
                "YAML nested too deeply (more than {MAX_DEPTH} levels)"
            ));
        }
        if self.nodes > MAX_NODES {
            return Some(format!("YAML has too many values (more than {MAX_NODES})"));
        }
        None
    }
}

fn blank(b: Option<&u8>) -> bool {
    matches!(b, None | Some(b' ' | b'\t' | b'\r' | b'\n'))
}

fn flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

/// One linear pass over `raw` (see the module doc). Never fails: malformed YAML is the
/// parser's to refuse.
pub fn prescan(raw: &[u8]) -> Shape {
    let mut shape = Shape::default();
    // Block indentation levels open on the current line (strictly increasing columns).
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut in_doc = false;
    // While skipping a block scalar's content: the indentation of the line that opened it.
    let mut block_scalar: Option<usize> = None;
    let mut i = 0;
    let n = raw.len();
    while i < n {
        // At the start of a line.
        let line = i;
        while i < n && raw[i] == b' ' {
            i += 1;
        }
        let indent = i - line;
        let rest = &raw[i..];
        if rest.is_empty() || matches!(rest[0], b'\n' | b'\r' | b'#') {
            i = skip_line(raw, i);
            continue;
        }
        if let Some(opened) = block_scalar {
            if indent > opened {
                i = skip_line(raw, i);
                continue;
            }
            block_scalar = None;
        }
        let mut compact = 0usize;
        if flow == 0 {
            if indent == 0
                && (rest.starts_with(b"---") || rest.starts_with(b"..."))
                && blank(rest.get(3))
            {
                if rest[0] == b'-' {
                    shape.documents += 1;
                    in_doc = true;
                } else {
                    in_doc = false;
                }
                indents.clear();
                i += 3;
            } else if indent == 0 && rest[0] == b'%' && !in_doc {
                i = skip_line(raw, i);
                continue;
            } else {
                while indents.last().is_some_and(|&top| top > indent) {
                    indents.pop();
                }
                if indents.last().is_none_or(|&top| top < indent) && indents.len() <= MAX_DEPTH {
                    indents.push(indent);
                }
            }
        }
        // The tokens of the line.
        let mut token_start = true;
        while i < n && raw[i] != b'\n' {
            let c = raw[i];
            if c == b' ' || c == b'\t' || c == b'\r' {
                token_start = true;
                i += 1;
                continue;
            }
            // In flow context an indicator ends whatever came before it (`["a"]`, `{"a":1}`).
            if flow > 0 && (flow_indicator(c) || c == b':') {
                token_start = true;
            }
            if !token_start {
                i += 1;
                continue;
            }
            if !in_doc && !matches!(c, b'#') {
                shape.documents += 1;
                in_doc = true;
            }
            match c {
                b'#' => {
                    i = skip_line(raw, i);
                    break;
                }
                b'\'' | b'"' => {
                    shape.nodes += 1;
                    i = skip_quoted(raw, i);
                    token_start = false;
                    continue;
                }
                b'[' | b'{' => {
                    shape.nodes += 1;
                    flow += 1;
                    shape.flow_depth = shape.flow_depth.max(flow);
                    i += 1;
                    continue;
                }
                b']' | b'}' => {
                    flow = flow.saturating_sub(1);
                    i += 1;
                    continue;
                }
                b',' => {
                    i += 1;
                    continue;
                }
                b':' if flow > 0 => {
                    i += 1;
                    continue;
                }
                b'-' | b'?' | b':' if blank(raw.get(i + 1)) => {
                    if c != b':' && flow == 0 {
                        compact += 1;
                        shape.nodes += 1;
                    }
                    i += 1;
                    continue;
                }
                b'|' | b'>' if flow == 0 => {
                    shape.nodes += 1;
                    block_scalar = Some(indent);
                    i = skip_line(raw, i);
                    break;
                }
                b'&' | b'*' | b'!' => {
                    match c {
                        b'&' => shape.anchors += 1,
                        b'*' => {
                            shape.aliases += 1;
                            shape.nodes += 1;
                        }
                        _ => {}
                    }
                    i += 1;
                    while i < n && !blank(raw.get(i)) && !(flow > 0 && flow_indicator(raw[i])) {
                        i += 1;
                    }
                    continue;
                }
                _ => {
                    // A plain scalar, to the end of its line or (in flow) the next indicator.
                    shape.nodes += 1;
                    i = skip_plain(raw, i, flow > 0);
                    token_start = false;
                    continue;
                }
            }
        }
        let depth = indents.len() + compact.saturating_sub(1);
        shape.block_depth = shape.block_depth.max(depth);
        if i < n && raw[i] == b'\n' {
            i += 1;
        }
    }
    shape
}

/// The index just past the end of the line at `i` (past its `\n`).
fn skip_line(raw: &[u8], i: usize) -> usize {
    raw[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(raw.len(), |p| i + p + 1)
}

/// Past a single- (`''` escapes a quote) or double-quoted (`\` escapes) scalar starting at `i`.
fn skip_quoted(raw: &[u8], i: usize) -> usize {
    let quote = raw[i];
    let mut j = i + 1;
    while j < raw.len() {
        match raw[j] {
            b'\\' if quote == b'"' => j += 2,
            b'\'' if quote == b'\'' && raw.get(j + 1) == Some(&b'\'') => j += 2,
            b if b == quote => return j + 1,
            _ => j += 1,
        }
    }
    raw.len()
}

/// Past a plain scalar starting at `i`: it ends at `: `, ` #`, the line's end, and in flow
/// context at a flow indicator.
fn skip_plain(raw: &[u8], i: usize, in_flow: bool) -> usize {
    let mut j = i;
    while j < raw.len() {
        let b = raw[j];
        if b == b'\n' || (in_flow && flow_indicator(b)) {
            return j;
        }
        if b == b':'
            && (blank(raw.get(j + 1))
                || (in_flow && raw.get(j + 1).is_some_and(|&c| flow_indicator(c))))
        {
            return j;
        }
        if b == b'#' && j > i && matches!(raw[j - 1], b' ' | b'\t') {
            return j;
        }
        j += 1;
    }
    j
}

/// A YAML body (or form value) to a JSON value: pre-scanned, then built under `budget`.
pub fn parse(raw: &[u8], budget: &Budget) -> Result<Value, ApiError> {
    if let Some(why) = prescan(raw).refusal() {
        budget.exceed("refused before parsing");
        return Err(ApiError::BadBody(why));
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| ApiError::BadBody("a YAML body must be UTF-8".into()))?;
    build(text, budget).map_err(|e| {
        let at =
            e.at.map(|(line, col)| format!(" at line {line} column {col}"))
                .unwrap_or_default();
        ApiError::BadBody(format!("invalid YAML{at}: {}{}", e.what, budget.why()))
    })
}

#[derive(Debug)]
struct BuildError {
    at: Option<(usize, usize)>,
    what: String,
}

impl From<&'static str> for BuildError {
    fn from(what: &'static str) -> Self {
        Self {
            at: None,
            what: what.to_owned(),
        }
    }
}

/// An open collection: its value so far, its anchor, the budget used when it opened, and the
/// height of its tallest child collection.
#[derive(Debug)]
struct Open {
    value: Collection,
    anchor: usize,
    used_at_start: usize,
    bytes_at_start: usize,
    child_height: usize,
}

#[derive(Debug)]
enum Collection {
    Seq(Vec<Value>),
    Map(Map<String, Value>, Option<String>),
}

/// An anchored value, its size in nodes and its height in collection levels.
#[derive(Debug)]
struct Anchored {
    value: Value,
    nodes: usize,
    bytes: usize,
    height: usize,
}

fn build(text: &str, budget: &Budget) -> Result<Value, BuildError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Anchored> = HashMap::new();
    let mut root: Option<Value> = None;
    let mut documents = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| BuildError {
            at: Some((e.marker().line(), e.marker().col() + 1)),
            what: e.info().to_owned(),
        })?;
        let at = Some((span.start.line(), span.start.col() + 1));
        let located = |what: &'static str| BuildError {
            at,
            what: what.to_owned(),
        };
        // A finished node: its value, its height and, if anchored, its anchor id.
        let done: (Value, usize, usize) = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(located("a YAML body is one document"));
                }
                continue;
            }
            Event::Alias(id) => {
                let a = anchors.get(&id).ok_or_else(|| located("unknown alias"))?;
                budget.charge(a.nodes).map_err(located)?;
                budget.charge_bytes(a.bytes).map_err(located)?;
                if stack.len() + a.height > MAX_DEPTH {
                    return Err(located(budget.exceed("nested too deeply")));
                }
                (a.value.clone(), a.height, 0)
            }
            Event::Scalar(v, style, anchor, tag) => {
                budget.charge(1).map_err(located)?;
                budget.charge_bytes(v.len()).map_err(located)?;
                let value = scalar(&v, style, tag.as_deref()).map_err(located)?;
                (value, 0, anchor)
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                check_collection_tag(tag.as_deref()).map_err(located)?;
                let used_at_start = budget.used();
                let bytes_at_start = budget.bytes_used();
                budget.charge(1).map_err(located)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(located(budget.exceed("nested too deeply")));
                }
                let value = if matches!(event, Event::SequenceStart(..)) {
                    Collection::Seq(Vec::new())
                } else {
                    Collection::Map(Map::new(), None)
                };
                stack.push(Open {
                    value,
                    anchor,
                    used_at_start,
                    bytes_at_start,
                    child_height: 0,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let open = stack
                    .pop()
                    .ok_or_else(|| located("unbalanced collection"))?;
                let value = match open.value {
                    Collection::Seq(items) => Value::Array(items),
                    Collection::Map(map, _) => Value::Object(map),
                };
                let height = open.child_height + 1;
                if open.anchor != 0 {
                    let nodes = budget.used() - open.used_at_start;
                    let bytes = budget.bytes_used() - open.bytes_at_start;
                    anchors.insert(
                        open.anchor,
                        Anchored {
                            value: value.clone(),
                            nodes,
                            bytes,
                            height,
                        },
                    );
                    budget.charge(nodes).map_err(located)?;
                    budget.charge_bytes(bytes).map_err(located)?;
                }
                (value, height, 0)
            }
        };
        let (value, height, anchor) = done;
        if anchor != 0 {
            let bytes = match &value {
                Value::String(s) => s.len(),
                _ => 0,
            };
            anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    nodes: 1,
                    bytes,
                    height,
                },
            );
        }
        match stack.last_mut() {
            None => root = Some(value),
            Some(parent) => {
                parent.child_height = parent.child_height.max(height);
                match &mut parent.value {
                    Collection::Seq(items) => items.push(value),
                    Collection::Map(map, pending) => match pending.take() {
                        None => *pending = Some(key_text(value)),
                        Some(key) => {
                            map.insert(key, value);
                        }
                    },
                }
            }
        }
    }
    Ok(root.unwrap_or(Value::Null))
}

/// A map key as text: strings as they are, null as Python's `None`, anything else as JSON.
fn key_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => "None".to_owned(),
        other => other.to_string(),
    }
}

fn is_core(tag: &Tag) -> bool {
    tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!"
}

fn check_collection_tag(tag: Option<&Tag>) -> Result<(), &'static str> {
    match tag {
        None => Ok(()),
        Some(t) if is_core(t) && matches!(t.suffix.as_str(), "seq" | "map") => Ok(()),
        Some(_) => Err("YAML tags are not supported"),
    }
}

/// A scalar under YAML 1.2's core schema: plain scalars resolve to null, booleans (`true`,
/// `false`, not `yes`/`no`), integers and floats; quoted and block scalars are strings.
fn scalar(v: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, &'static str> {
    let text = || Value::String(v.to_owned());
    match tag {
        None if style == ScalarStyle::Plain => Ok(resolve_plain(v)),
        None => Ok(text()),
        // The non-specific tag `!`: a string.
        Some(t) if t.handle == "!" && t.suffix.is_empty() => Ok(text()),
        Some(t) if is_core(t) => match t.suffix.as_str() {
            "str" => Ok(text()),
            "null" | "bool" | "int" | "float" => Ok(resolve_plain(v)),
            _ => Err("YAML tags are not supported"),
        },
        Some(_) => Err("YAML tags are not supported"),
    }
}

fn resolve_plain(v: &str) -> Value {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = integer(v) {
        return n;
    }
    if let Some(f) = float(v) {
        return Number::from_f64(f).map_or(Value::Null, Value::Number);
    }
    Value::String(v.to_owned())
}

/// `0123` is text in YAML 1.2, not a number.
fn leading_zero(digits: &str) -> bool {
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

fn integer(v: &str) -> Option<Value> {
    let (negative, unsigned) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    if unsigned.starts_with(['+', '-']) || unsigned.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(d) = unsigned.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = unsigned.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = unsigned.strip_prefix("0b") {
        (2, d)
    } else {
        if leading_zero(unsigned) {
            return None;
        }
        (10, unsigned)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if !negative {
        return Some(Value::from(magnitude));
    }
    if magnitude <= i64::MAX as u64 + 1 {
        return Some(Value::from((magnitude as i128).wrapping_neg() as i64));
    }
    None
}

fn float(v: &str) -> Option<f64> {
    let unsigned = v.strip_prefix(['+', '-']).unwrap_or(v);
    let negative = v.starts_with('-');
    match unsigned {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        ".nan" | ".NaN" | ".NAN" if unsigned.len() == v.len() => return Some(f64::NAN),
        _ => {}
    }
    if unsigned.starts_with(['+', '-']) || leading_zero(unsigned) {
        return None;
    }
    // Rust also reads `inf`, `nan` and `infinity`; YAML does not.
    let f: f64 = unsigned.parse().ok()?;
    f.is_finite().then_some(if negative { -f } else { f })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn y(s: &str) -> Result<Value, ApiError> {
        parse(s.as_bytes(), &Budget::new())
    }

    #[test]
    fn core_schema() {
        assert_eq!(
            y("[1, -2, 0x1f, 0o17, +3, 1.5, .inf, yes, no, ~, null, True, '1', 0123, 1e3, hi there]").unwrap(),
            json!([1, -2, 31, 15, 3, 1.5, null, "yes", "no", null, null, true, "1", "0123", 1000.0, "hi there"])
        );
        assert_eq!(
            y("a: !!str 1\nb: !!int 2\n").unwrap(),
            json!({"a": "1", "b": 2})
        );
        assert!(y("a: !custom x\n").is_err());
        assert_eq!(
            y("{1: a, ~: b, [1]: c}").unwrap(),
            json!({"1": "a", "None": "b", "[1]": "c"})
        );
        assert_eq!(y("# only a comment\n").unwrap(), Value::Null);
        assert_eq!(
            y("x: |\n  a: [\n  'b\n").unwrap(),
            json!({"x": "a: [\n'b\n"})
        );
    }

    #[test]
    fn prescan_reads_quotes_comments_and_block_scalars() {
        let s =
            prescan(b"a: \"[[[[\"\nb: '{{{{'  # [[[[\nc: |\n  {{{{\n  [[[[\nd: [1, [2, {e: 3}]]\n");
        assert_eq!(s.flow_depth, 3, "{s:?}");
        assert_eq!(s.documents, 1);
        let json = "[[\"a\"],[\"b\"],{\"c\":\"d\"}],".repeat(1000);
        assert_eq!(prescan(format!("[{json}1]").as_bytes()).flow_depth, 3);
        let s = prescan("{a: ".repeat(1000).as_bytes());
        assert_eq!(s.flow_depth, 1000);
        assert!(s.refusal().is_some());
        let s = prescan("- ".repeat(100).as_bytes());
        assert!(s.block_depth >= 99, "{s:?}");
        assert_eq!(prescan(b"--- 1\n--- 2\n").documents, 2);
        assert_eq!(prescan(b"1\n---\n2\n").documents, 2);
        assert_eq!(prescan(b"%YAML 1.2\n---\na: 1\n...\n").documents, 1);
        let s = prescan(b"a: &x [1, 2]\nb: *x\n");
        assert_eq!((s.anchors, s.aliases), (1, 1));
    }

    #[test]
    fn aliases_are_charged_their_size_and_height() {
        let budget = Budget::new();
        let v = parse(b"a: &a [1, 2, 3]\nb: *a\nc: *a\n", &budget).unwrap();
        assert_eq!(v["c"], json!([1, 2, 3]));
        // 1 map + 3 keys + anchored seq (4, charged again once stored) + 2 aliases of 4.
        assert!(budget.used() >= 1 + 3 + 4 + 8, "{}", budget.used());
        let deep = format!(
            "a: &a {}1{}\nb: [[[[*a]]]]\n",
            "[".repeat(62),
            "]".repeat(62)
        );
        assert!(y(&deep).is_err());
        assert!(y("a: &a [*a]\n").is_err());
    }

    #[test]
    fn aliases_of_long_text_are_charged_their_bytes() {
        // Found by the `body` fuzz target: one 64 KiB scalar repeated by 22,000 aliases is 130 KB
        // of YAML, within the node budget, and over 1 GiB of values.
        let doc = format!(
            "a: &x {}\nb: [{}]\n",
            "y".repeat(64 << 10),
            "*x, ".repeat(22_000)
        );
        let budget = Budget::new();
        let e = parse(doc.as_bytes(), &budget).unwrap_err();
        assert!(
            budget.bytes_used() <= crate::api::body::MAX_EXPANDED_BYTES + (64 << 10),
            "{e:?}"
        );
        assert!(budget.why().contains("too much text"), "{}", budget.why());
        // The same text through a collection anchor.
        let doc = format!(
            "a: &x [{}]\nb: [{}]\n",
            "y".repeat(64 << 10),
            "*x, ".repeat(100)
        );
        assert!(y(&doc).is_err());
        // Honest repetition stays fine.
        let doc = format!("a: &x {}\nb: [*x, *x, *x]\n", "y".repeat(64 << 10));
        assert_eq!(
            y(&doc).unwrap()["b"][2].as_str().map(str::len),
            Some(64 << 10)
        );
    }
}
