//! Helpers shared by the fuzz targets.
//!
//! Most targets read their input as a small HTTP-like message, so that seed files are readable
//! (and copy real deliveries) while libFuzzer still mutates raw bytes:
//!
//! ```text
//! <first line: what the target selects (a scheme, a path, a content type)>
//! Header-Name: value
//! Other-Header: value
//!
//! <body: every byte after the blank line, verbatim>
//! ```
//!
//! Header lines that are not a valid name and value are skipped, as a server would never pass
//! them on. Values are trimmed of spaces and tabs, as hyper does.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A parsed fuzz input.
#[derive(Debug)]
pub struct Message<'a> {
    /// The first line, without its line ending.
    pub first: &'a [u8],
    /// The headers in order (repeated names kept).
    pub headers: HeaderMap,
    /// Whether any header line was present.
    pub had_headers: bool,
    /// Everything after the blank line.
    pub body: &'a [u8],
}

/// Splits `data` into first line, headers and body (see the module doc).
pub fn message(data: &[u8]) -> Message<'_> {
    let (first, mut rest) = split_line(data);
    let mut headers = HeaderMap::new();
    let mut had_headers = false;
    loop {
        if rest.is_empty() {
            break;
        }
        let (line, after) = split_line(rest);
        rest = after;
        if line.is_empty() {
            break;
        }
        had_headers = true;
        if let Some((name, value)) = header(line) {
            headers.append(name, value);
        }
    }
    Message {
        first,
        headers,
        had_headers,
        body: rest,
    }
}

/// The first line as text (lossy), trimmed.
pub fn first_text(m: &Message<'_>) -> String {
    String::from_utf8_lossy(m.first).trim().to_owned()
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &data[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (line, &data[i + 1..])
        }
        None => (data, &[]),
    }
}

fn header(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = trim(&line[colon + 1..]);
    let value = HeaderValue::from_bytes(value).ok()?;
    Some((name, value))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The repository's test fixtures (keys and certificates generated for tests only).
pub mod fixtures {
    /// SNS signing certificate (leaf) and its CA, from `tests/fixtures/sns`.
    pub const SNS_LEAF_PEM: &[u8] = include_bytes!("../../tests/fixtures/sns/leaf.pem");
    /// The leaf as DER.
    pub const SNS_LEAF_DER: &[u8] = include_bytes!("../../tests/fixtures/sns/leaf.der");
    /// The test CA.
    pub const SNS_CA_PEM: &[u8] = include_bytes!("../../tests/fixtures/sns/ca.pem");
    /// A certificate from another CA.
    pub const SNS_ROGUE_PEM: &[u8] = include_bytes!("../../tests/fixtures/sns/rogue.pem");
    /// The topic the SNS seeds are signed for.
    pub const SNS_TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:alerts";
    /// 2027-01-01T00:00:00Z: inside the fixture leaf's validity; the SNS seeds' `Timestamp`.
    pub const SNS_NOW: i64 = 1_798_761_600;
    /// Travis CI test public key (`tests/fixtures/travis-test.pub`).
    pub const TRAVIS_PUB: &str = include_str!("../../tests/fixtures/travis-test.pub");
}

/// The DER bytes of the first PEM block in `pem` (base64 between the BEGIN/END lines).
pub fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_default()
}
