//! Content negotiation: which format a response is written in, from `Accept`, and the
//! extractors that hand every route its format.
//!
//! - [`Negotiated`]: the routes rest_cherrypy negotiates (`hypermedia_out`): 406 before
//!   anything runs when `Accept` names no format saltgate writes (rest_cherrypy runs the
//!   command first, then answers 406).
//! - [`Preferred`]: the routes rest_cherrypy serves without negotiation (`/events`, `/ws`,
//!   `POST /keys`; saltgate's events page data): never 406, JSON when `Accept` names nothing
//!   saltgate writes.
//!
//! Error bodies follow [`Preferred`] on every route (see [`super::error::respond`]), so a 406
//! itself is JSON.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The formats saltgate writes, as salt-api does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    Json,
    /// `application/x-yaml`.
    Yaml,
}

impl Format {
    /// The media type written in `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Yaml => "application/x-yaml",
        }
    }
}

/// Picks the response format from `Accept`; `None` when nothing acceptable is offered (406).
/// Media ranges are taken in order of their `q` value, ties in written order.
pub fn response_format(headers: &HeaderMap) -> Option<Format> {
    accept_format(headers.get_all(header::ACCEPT))
}

/// [`response_format`] over the values of the `Accept` headers.
pub fn accept_format<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Format> {
    let mut ranges: Vec<(f32, usize, String)> = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else { continue };
        for (i, part) in text.split(',').enumerate() {
            let mut pieces = part.split(';');
            let media = pieces
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if media.is_empty() {
                continue;
            }
            let q = pieces
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            ranges.push((q, ranges.len() + i, media));
        }
    }
    if ranges.is_empty() {
        return Some(Format::Json);
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges
        .into_iter()
        .filter(|r| r.0 > 0.0)
        .find_map(|(_, _, media)| match media.as_str() {
            "application/json" | "application/*" | "*/*" | "text/json" => Some(Format::Json),
            "application/x-yaml" | "application/yaml" | "text/yaml" | "text/x-yaml" => {
                Some(Format::Yaml)
            }
            _ => None,
        })
}

/// The format `Accept` asks for; refused with [`NotAcceptable`] (406) when it names none
/// saltgate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated(pub Format);

/// The rejection of [`Negotiated`]: 406 `not_acceptable` (rendered by `ApiError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAcceptable;

impl<S: Send + Sync> FromRequestParts<S> for Negotiated {
    type Rejection = NotAcceptable;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NotAcceptable> {
        response_format(&parts.headers)
            .map(Self)
            .ok_or(NotAcceptable)
    }
}

/// The format `Accept` prefers, JSON when it names none saltgate writes: for the routes that are
/// served whatever `Accept` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preferred(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for Preferred {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(
            response_format(&parts.headers).unwrap_or(Format::Json),
        ))
    }
}

/// serde_json's compact output with Python's separators (`", "` between items, `": "` after a
/// key): the bytes `json.dumps` writes, which salt-api sends and byte-exact clients compare.
struct PythonSeparators;

impl serde_json::ser::Formatter for PythonSeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `", "` before every item of an array or object but the first.
fn item_separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

/// `body` as JSON with Python's separators (see [`PythonSeparators`]).
pub fn python_json(body: &serde_json::Value) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonSeparators);
    serde::Serialize::serialize(body, &mut ser)?;
    Ok(out)
}

/// Serialises `body` as JSON (as Python's `json.dumps` writes it) or YAML with the right content
/// type.
pub fn render_body(status: StatusCode, format: Format, body: &serde_json::Value) -> Response {
    let bytes = match format {
        Format::Json => python_json(body).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::to_string(body)
            .map(String::into_bytes)
            .map_err(|e| e.to_string()),
    };
    match bytes {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, format.content_type())],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Could not serialise a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"status": 500, "code": "internal", "message": "Could not serialise the response"}"#,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(accept: &str) -> Option<Format> {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, accept.parse().unwrap());
        response_format(&h)
    }

    /// The bytes Python 3's `json.dumps` writes for the same value (checked with Python).
    #[test]
    fn json_is_written_with_python_separators() {
        let v = serde_json::json!({"return": [{}, {"a": [1, 2.5, "é\n"], "b": null}], "x": true});
        assert_eq!(
            String::from_utf8(python_json(&v).unwrap()).unwrap(),
            r#"{"return": [{}, {"a": [1, 2.5, "é\n"], "b": null}], "x": true}"#
        );
        assert_eq!(python_json(&serde_json::json!({})).unwrap(), b"{}");
        assert_eq!(python_json(&serde_json::json!([])).unwrap(), b"[]");
    }

    #[test]
    fn picks_by_accept() {
        assert_eq!(response_format(&HeaderMap::new()), Some(Format::Json));
        assert_eq!(fmt("application/json"), Some(Format::Json));
        assert_eq!(fmt("*/*"), Some(Format::Json));
        assert_eq!(fmt("application/x-yaml"), Some(Format::Yaml));
        assert_eq!(
            fmt("text/html, application/x-yaml;q=0.5"),
            Some(Format::Yaml)
        );
        assert_eq!(
            fmt("application/json;q=0.1, application/x-yaml"),
            Some(Format::Yaml)
        );
        assert_eq!(fmt("text/html"), None);
        assert_eq!(fmt("application/json;q=0"), None);
    }
}
