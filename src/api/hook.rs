//! `POST /hook/<path>`: a webhook becomes the Salt event `salt/netapi/hook/<path>` with
//! `{_stamp, headers, post, body}`, the shape salt-api fires, so existing Reactor SLS files work.
//!
//! Steps, cheapest rejection first: response format (406, before any side effect) → token auth
//! unless `webhook_disable_auth` (401) → body read with the size cap (413) → parse by
//! Content-Type (400) → fire (503 when the bus cannot take it).
//!
//! Better than salt-api: the body limit is enforced (salt-api ignores `max_request_body_size`),
//! `Remote-Addr` is the real peer and cannot be overridden by a header, credential headers are
//! never put on the bus, and a failed fire is a 503 instead of `{"success": false}` with 200.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use rmpv::Value;

use super::error::{ApiError, render_body};
use super::extract::{read_capped, session_token};
use super::negotiate::{Format, response_format};
use super::state::AppState;
use crate::salt::Event;
use crate::salt::event::{hook_tag, stamp_now};

/// Headers never copied into the event: anything on the bus is readable by every `/events`
/// subscriber and lands in the job cache of reactors that echo it.
const REDACTED: &[&str] = &[
    "x-auth-token",
    "cookie",
    "authorization",
    "proxy-authorization",
    "set-cookie",
];

/// `POST <webhook_url>` with no further path.
pub async fn hook_root(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, peer, String::new(), headers, body).await
}

/// `POST <webhook_url>/<path>`.
pub async fn hook_path(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, peer, path, headers, body).await
}

async fn handle(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(format) = response_format(&headers) else {
        tracing::info!(client_ip = %peer.ip(), hook = %path, status = 406, "Hook refused: no acceptable format");
        app.record_hook(
            &path,
            peer.ip(),
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
        );
        return ApiError::NotAcceptable.render(Format::Json);
    };
    match run(&app, peer, &path, &headers, body).await {
        Ok(()) => {
            app.record_hook(&path, peer.ip(), StatusCode::OK, "accepted");
            render_body(
                StatusCode::OK,
                format,
                &serde_json::json!({"success": true}),
            )
        }
        Err(e) => {
            let (status, code) = e.status_code();
            app.record_hook(&path, peer.ip(), status, code);
            tracing::info!(client_ip = %peer.ip(), hook = %path, status = status.as_u16(), code, "Hook refused");
            e.render(format)
        }
    }
}

async fn run(
    app: &AppState,
    peer: SocketAddr,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    if !app.config.api.webhook_disable_auth {
        authenticate(app, headers).await?;
    }
    let raw = read_capped(headers, body, app.config.api.max_request_body_size).await?;
    let post = parse_body(headers, &raw)?;
    let event = Event::new(hook_tag(path), event_data(peer, headers, post, &raw));
    app.bus.fire(event).await.map_err(|e| {
        tracing::warn!(hook = %path, error = %e, "Hook could not be fired");
        ApiError::Unavailable("The event bus cannot take the event")
    })?;
    tracing::debug!(client_ip = %peer.ip(), hook = %path, "Hook fired");
    Ok(())
}

/// Token auth as salt-api: `X-Auth-Token` or the `session_id` cookie, checked with the master.
async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = session_token(headers) else {
        return Err(ApiError::Unauthorized(
            "No permission -- see authorization schemes",
        ));
    };
    let Some(salt) = &app.salt else {
        return Err(ApiError::Unauthorized("Token auth needs a Salt master"));
    };
    match app.tokens.validate(salt, &token).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized(
            "No permission -- see authorization schemes",
        )),
    }
}

/// The event data: `{_stamp, headers, post, body}`.
fn event_data(peer: SocketAddr, headers: &HeaderMap, post: Value, raw: &Bytes) -> Value {
    let mut hdrs: Vec<(Value, Value)> = Vec::with_capacity(headers.len() + 1);
    hdrs.push((
        Value::from("Remote-Addr"),
        Value::from(peer.ip().to_string()),
    ));
    for (name, value) in headers {
        let name = name.as_str();
        if REDACTED.contains(&name) || name == "remote-addr" {
            continue;
        }
        let key = Value::from(title_case(name));
        let value = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        // Repeated headers: the last one wins, as in CherryPy's dict.
        if let Some(slot) = hdrs.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            hdrs.push((key, value));
        }
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

/// CherryPy's header names: `x-hub-signature-256` → `X-Hub-Signature-256`.
pub fn title_case(name: &str) -> String {
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
    if raw.is_empty() {
        return Ok(Value::Map(Vec::new()));
    }
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match media.as_str() {
        "application/json" => parse_json(raw),
        m if m.ends_with("+json") => parse_json(raw),
        "application/x-www-form-urlencoded" => Ok(parse_form(raw)),
        // salt-api reads text/plain as JSON when it is JSON, else keeps the text.
        "text/plain" => Ok(parse_json(raw).unwrap_or_else(|_| text_value(raw))),
        // YAML is not parsed on hooks: kept as text (alias bombs never reach a parser).
        _ => Ok(text_value(raw)),
    }
}

fn text_value(raw: &[u8]) -> Value {
    match std::str::from_utf8(raw) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Binary(raw.to_vec()),
    }
}

fn parse_json(raw: &[u8]) -> Result<Value, ApiError> {
    // serde_json refuses nesting deeper than 128 levels, so depth bombs fail here.
    let json: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        ApiError::BadBody(format!(
            "invalid JSON at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    Ok(crate::salt::wire::payload::from_json(&json))
}

/// Form fields; a repeated key becomes a list, as CherryPy does.
fn parse_form(raw: &[u8]) -> Value {
    let mut fields: Vec<(Value, Value)> = Vec::new();
    for (k, v) in form_urlencoded_pairs(raw) {
        let key = Value::from(k);
        match fields.iter_mut().find(|(fk, _)| *fk == key) {
            Some((_, Value::Array(items))) => items.push(Value::from(v)),
            Some((_, existing)) => {
                let first = std::mem::replace(existing, Value::Nil);
                *existing = Value::Array(vec![first, Value::from(v)]);
            }
            None => fields.push((key, Value::from(v))),
        }
    }
    Value::Map(fields)
}

fn form_urlencoded_pairs(raw: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn bodies_parse_by_type() {
        let v = parse_body(&ct("application/json"), br#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(
            crate::salt::wire::payload::to_json(&v),
            serde_json::json!({"a": [1, 2]})
        );
        let v = parse_body(&ct("application/x-www-form-urlencoded"), b"a=1&a=2&b=x").unwrap();
        assert_eq!(
            crate::salt::wire::payload::to_json(&v),
            serde_json::json!({"a": ["1", "2"], "b": "x"})
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
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let data = event_data(peer, &h, Value::Nil, &Bytes::from_static(b"{}"));
        let json = crate::salt::wire::payload::to_json(&data);
        let headers = &json["headers"];
        assert_eq!(headers["Remote-Addr"], "10.1.2.3");
        assert_eq!(headers["X-Github-Event"], "push");
        assert!(headers.get("X-Auth-Token").is_none());
        assert!(headers.get("Cookie").is_none());
        assert!(!json.to_string().contains("secret"));
        assert_eq!(json["body"], "{}");
        assert_eq!(json["_stamp"].as_str().unwrap().len(), 26);
    }
}
