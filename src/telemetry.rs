//! Logging setup, and ([`exposition`]) writing metric families. Log field names used across
//! the code: `client_ip`, `hook`, `tag`, `status`, `code`, `error`. Secrets never appear in any
//! field.
//!
//! Log injection: many fields hold client-supplied text (a refused hook path, a login name, an
//! `Origin`). In the text format every field value and the message go through [`Escaped`], so a
//! `\n`, `\r`, an ANSI escape (`ESC [ ...`) or any other control character (and the Unicode line
//! and bidi-override characters) is written as `\n`, `\r`, `\u{1b}`..., and one event is always
//! one line that cannot repaint or forge the lines around it. This is done once, in the field
//! formatter, so no logging site can forget it. JSON lines escape control characters by
//! themselves.

pub mod exposition;

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// Installs the global subscriber: text by default, JSON lines with `json`. `RUST_LOG` filters
/// (default `info`).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .fmt_fields(debug_fn(write_field).delimited(" "))
            .try_init()
    };
}

/// One field of the text format: `name=value`, the message bare, both escaped.
fn write_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    if field.name() != "message" {
        write!(writer, "{}=", field.name())?;
    }
    write!(Escaped(writer), "{value:?}")
}

/// A [`fmt::Write`] that writes control characters as escapes.
#[derive(Debug)]
pub struct Escaped<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Control characters (C0, DEL, C1: newlines, ANSI escapes), Unicode line and paragraph
/// separators, and the bidi controls that can make a line read differently than it is.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with control characters escaped, as the text log writes it.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = Escaped(&mut out).write_str(s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain/path"), "plain/path");
        assert_eq!(
            escape("a\nINFO forged\r\x1b[2K\x07\u{7f}\u{85}"),
            "a\\nINFO forged\\r\\u{1b}[2K\\u{7}\\u{7f}\\u{85}"
        );
        assert_eq!(escape("é\u{2028}\u{202e}x"), "é\\u{2028}\\u{202e}x");
    }
}
