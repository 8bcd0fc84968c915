//! The `Accept` parser (src/api/negotiate.rs) that picks the response format of every route,
//! and the error rendering in the picked format (src/api/error.rs).
//!
//! Input: each line is one `Accept` header (several lines: repeated headers).
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use saltgate::api::ApiError;
use saltgate::api::negotiate::{Format, response_format};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(http::header::ACCEPT, v);
        }
    }
    let format = response_format(&headers);
    if headers.is_empty() {
        assert_eq!(format, Some(Format::Json), "no Accept means JSON");
    }
    let shown = format.unwrap_or(Format::Json);
    let _ = shown.content_type();
    let _ = ApiError::NotAcceptable.render(shown);
});
