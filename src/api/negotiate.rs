//! Content negotiation: which format a response is written in, from `Accept`.

use http::HeaderMap;

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
    let mut ranges: Vec<(f32, usize, String)> = Vec::new();
    for value in headers.get_all(http::header::ACCEPT) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(accept: &str) -> Option<Format> {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, accept.parse().unwrap());
        response_format(&h)
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
