//! The event a hook fires, in salt-api's shape: `{_stamp, headers, post, body}`, header names
//! title-cased as CherryPy delivers them, `post` parsed by Content-Type.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use rmpv::Value;

use crate::api::body;
use crate::api::error::ApiError;
use crate::salt::event::stamp_now;

/// What a dialect changes in the hook pipeline: the token rule, how `post` is parsed, and the
/// event data fired. One value per dialect ([`CHERRYPY`], and rest_tornado's in
/// [`crate::api::dialect::tornado`]).
#[derive(Debug, Clone, Copy)]
pub struct HookDialect {
    /// The listener block's `webhook_disable_auth`, for rules without `auth:`; `None`: as the
    /// rules were built (from rest_cherrypy's).
    pub disable_auth: Option<bool>,
    /// Parses the body (media type, raw bytes, query string) into the event's `post`.
    pub parse: ParsePost,
    /// The event data from the delivery's parts.
    pub data: fn(EventParts<'_>) -> Value,
}

/// A dialect's body parser: media type, raw bytes and query string to the event's `post`.
pub type ParsePost = fn(&str, &[u8], Option<&str>) -> Result<Value, ApiError>;

/// What the event data is built from.
#[derive(Debug)]
pub struct EventParts<'a> {
    /// The resolved client address.
    pub client: std::net::IpAddr,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// Headers never put on the bus (credentials, signatures).
    pub hidden: &'a [HeaderName],
    /// The parsed body.
    pub post: Value,
    /// The raw body.
    pub raw: &'a Bytes,
    /// The query string.
    pub query: Option<&'a str>,
}

/// rest_cherrypy's hooks: `{_stamp, headers, post, body}`, `post` parsed as CherryPy does.
pub const CHERRYPY: HookDialect = HookDialect {
    disable_auth: None,
    parse: |media, raw, _| parse_media(media, raw),
    data: |p| event_data(p.client, p.headers, p.hidden, p.post, p.raw),
};

/// The event data: `{_stamp, headers, post, body}`.
pub fn event_data(
    client: std::net::IpAddr,
    headers: &HeaderMap,
    hidden: &[HeaderName],
    post: Value,
    raw: &Bytes,
) -> Value {
    let mut hdrs: Vec<(Value, Value)> = Vec::with_capacity(headers.len() + 1);
    hdrs.push((Value::from("Remote-Addr"), Value::from(client.to_string())));
    // A HeaderMap yields every value of one name together, and distinct names title-case to
    // distinct keys, so a repeat can only be of the entry just written.
    let mut last: Option<&HeaderName> = None;
    for (name, value) in headers {
        if hidden.contains(name) || name.as_str() == "remote-addr" {
            continue;
        }
        let value = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        // Repeated headers: the last one wins, as in CherryPy's dict.
        if last == Some(name) {
            if let Some(slot) = hdrs.last_mut() {
                slot.1 = value;
            }
            continue;
        }
        last = Some(name);
        hdrs.push((Value::from(title_case(name.as_str())), value));
    }
    let body = match std::str::from_utf8(raw) {
        Ok(text) => Value::from(text),
        Err(_) => Value::Binary(raw.to_vec()),
    };
    Value::Map(vec![
        (Value::from("_stamp"), Value::from(stamp_now())),
        (Value::from("headers"), Value::Map(hdrs)),
        (Value::from("post"), post),
        (Value::from("body"), body),
    ])
}

/// CherryPy's header names: `x-hub-signature-256` → `X-Hub-Signature-256` (a letter after a
/// letter lower case, any other letter upper case, as Python's `str.title`).
pub fn title_case(name: &str) -> String {
    if !name.is_ascii() {
        return title_case_unicode(name);
    }
    // Header names are ASCII: change the bytes in place, one allocation in all.
    let mut out = name.to_owned().into_bytes();
    let mut prev_letter = false;
    for b in &mut out {
        if b.is_ascii_alphabetic() {
            if prev_letter {
                b.make_ascii_lowercase();
            } else {
                b.make_ascii_uppercase();
            }
            prev_letter = true;
        } else {
            prev_letter = false;
        }
    }
    // Changing the case of ASCII letters keeps the bytes ASCII.
    String::from_utf8(out).unwrap_or_else(|_| title_case_unicode(name))
}

fn title_case_unicode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut prev_letter = false;
    for c in name.chars() {
        if c.is_alphabetic() {
            if prev_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_letter = true;
        } else {
            out.push(c);
            prev_letter = false;
        }
    }
    out
}

/// Parses the body by its media type into the event's `post`.
pub fn parse_body(headers: &HeaderMap, raw: &[u8]) -> Result<Value, ApiError> {
    parse_media(&body::media_type(headers).unwrap_or_default(), raw)
}

/// Parses a body of media type `media` (as [`body::media_type`] gives it) into the event's
/// `post`.
pub fn parse_media(media: &str, raw: &[u8]) -> Result<Value, ApiError> {
    if raw.is_empty() {
        return Ok(Value::Map(Vec::new()));
    }
    let json = |r: Result<serde_json::Value, ApiError>| r.map(|v| crate::salt::from_json(&v));
    match media {
        "application/json" => json(body::parse_json(raw)),
        m if m.ends_with("+json") => json(body::parse_json(raw)),
        // CherryPy's form processing, as on the lowstate routes: repeated keys become a list,
        // `arg` is a list and `arg` items and `kwarg` are read as YAML scalars.
        "application/x-www-form-urlencoded" => json(body::parse_form(raw)),
        // salt-api reads text/plain as JSON when it is JSON, else keeps the text.
        "text/plain" => Ok(json(body::parse_json(raw)).unwrap_or_else(|_| text_value(raw))),
        // YAML is parsed only when the rule asks for it (see `run`); otherwise it is text.
        _ => Ok(text_value(raw)),
    }
}

/// Whether the request's Content-Type is one of the YAML media types.
pub fn is_yaml(headers: &HeaderMap) -> bool {
    matches!(
        body::media_type(headers).as_deref(),
        Some("application/x-yaml" | "application/yaml" | "text/yaml" | "text/x-yaml")
    )
}

fn text_value(raw: &[u8]) -> Value {
    match std::str::from_utf8(raw) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Binary(raw.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salt::to_json;
    use crate::security::redact;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, v.parse().unwrap());
        h
    }

    #[test]
    fn title_cases_like_cherrypy() {
        assert_eq!(title_case("x-hub-signature-256"), "X-Hub-Signature-256");
        assert_eq!(title_case("x-github-event"), "X-Github-Event");
        assert_eq!(title_case("content-md5"), "Content-Md5");
        assert_eq!(title_case("x-2fa--CODE"), "X-2Fa--Code");
        assert_eq!(title_case("été-x"), "Été-X");
    }

    #[test]
    fn bodies_parse_by_type() {
        let v = parse_body(&ct("application/json"), br#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(to_json(&v), serde_json::json!({"a": [1, 2]}));
        let v = parse_body(&ct("application/x-www-form-urlencoded"), b"a=1&a=2&b=x").unwrap();
        assert_eq!(to_json(&v), serde_json::json!({"a": ["1", "2"], "b": "x"}));
        // CherryPy's form processing (API.md §7): `arg` a list, `kwarg` read as YAML.
        let v = parse_body(
            &ct("application/x-www-form-urlencoded"),
            b"a=1&a=2&b=x&arg=hello&kwarg=%7B%22k%22%3A1%7D",
        )
        .unwrap();
        assert_eq!(
            to_json(&v),
            serde_json::json!({"a": ["1", "2"], "b": "x", "arg": ["hello"], "kwarg": {"k": 1}})
        );
        let v = parse_body(&ct("text/plain"), b"hello").unwrap();
        assert_eq!(v, Value::from("hello"));
        let v = parse_body(&HeaderMap::new(), b"").unwrap();
        assert_eq!(v, Value::Map(vec![]));
        assert!(matches!(
            parse_body(&ct("application/json"), b"{nope"),
            Err(ApiError::BadBody(_))
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse_body(&ct("application/json"), deep.as_bytes()),
            Err(ApiError::BadBody(_))
        ));
    }

    #[test]
    fn credentials_and_spoofed_remote_addr_stay_off_the_bus() {
        let mut h = ct("application/json");
        h.insert("x-auth-token", "secret-token".parse().unwrap());
        h.insert("cookie", "session_id=secret".parse().unwrap());
        h.insert("remote-addr", "6.6.6.6".parse().unwrap());
        h.insert("x-github-event", "push".parse().unwrap());
        let hidden: Vec<HeaderName> = redact::ALWAYS_REDACTED.to_vec();
        let data = event_data(
            "10.1.2.3".parse().unwrap(),
            &h,
            &hidden,
            Value::Nil,
            &Bytes::from_static(b"{}"),
        );
        let json = to_json(&data);
        let headers = &json["headers"];
        assert_eq!(headers["Remote-Addr"], "10.1.2.3");
        assert_eq!(headers["X-Github-Event"], "push");
        assert!(headers.get("X-Auth-Token").is_none());
        assert!(headers.get("Cookie").is_none());
        assert!(!json.to_string().contains("secret"));
        assert_eq!(json["body"], "{}");
        assert_eq!(json["_stamp"].as_str().unwrap().len(), 26);
    }

    /// Repeated headers keep their last value, once, in first-seen order among the others.
    #[test]
    fn repeated_headers_keep_the_last_value() {
        let mut h = ct("application/json");
        h.append("x-tag", "one".parse().unwrap());
        h.append("x-other", "o".parse().unwrap());
        h.append("x-tag", "two".parse().unwrap());
        h.append("x-tag", "three".parse().unwrap());
        let data = event_data(
            "10.1.2.3".parse().unwrap(),
            &h,
            &[],
            Value::Nil,
            &Bytes::from_static(b"{}"),
        );
        let Value::Map(fields) = &data else {
            panic!("not a map")
        };
        let headers = fields
            .iter()
            .find(|(k, _)| k.as_str() == Some("headers"))
            .map(|(_, v)| v.clone())
            .unwrap();
        let Value::Map(headers) = headers else {
            panic!("headers not a map")
        };
        let names: Vec<&str> = headers.iter().filter_map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["Remote-Addr", "Content-Type", "X-Tag", "X-Other"]);
        assert_eq!(to_json(&data)["headers"]["X-Tag"], "three");
    }
}
