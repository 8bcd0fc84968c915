//! Request bodies of the lowstate routes: `saltgate::api::body::parse(headers, raw)` with
//! every content type it reads (JSON, `+json`, YAML, form with YAML-read `arg`/`kwarg`,
//! `text/plain`) and the ones it refuses.
//!
//! Input: first line = the `Content-Type` value (a known short name picks a type: `json`,
//! `yaml`, `form`, `text`, ...; anything else is sent as written, an empty line sends none),
//! then optional header lines, a blank line, and the body. Timeouts and out-of-memory are the
//! findings here: every parse must stay bounded whatever the shape (deep flow nesting, alias
//! bombs, many keys).
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use saltgate::api::body::parse;
use saltgate_fuzz::{first_text, message};

fn content_type(first: &str) -> Option<String> {
    let known = match first {
        "" => return None,
        "json" => "application/json",
        "vnd+json" => "application/vnd.api+json",
        "yaml" => "application/x-yaml",
        "app-yaml" => "application/yaml",
        "text-yaml" => "text/yaml",
        "x-yaml" => "text/x-yaml",
        "form" => "application/x-www-form-urlencoded",
        "text" => "text/plain",
        "octet" => "application/octet-stream",
        other => other,
    };
    Some(known.to_owned())
}

fuzz_target!(|data: &[u8]| {
    let mut m = message(data);
    if let Some(ct) = content_type(&first_text(&m)) {
        if let Ok(v) = HeaderValue::from_str(&ct) {
            m.headers.insert(http::header::CONTENT_TYPE, v);
        }
    }
    match parse(&m.headers, m.body) {
        Ok(value) => {
            let _ = serde_json::to_vec(&value);
        }
        Err(e) => {
            let _ = e.status_code();
            let _ = e.message();
        }
    }
});
