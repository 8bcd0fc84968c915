//! An event in salt-api's SSE framing, rendered once per event and kept with it on the bus; the
//! WebSocket framings are slices of the same record. Hand-written, as the bytes must be
//! salt-api's (`tag: `/`data: ` lines, Python's JSON).

use bytes::Bytes;

use super::pyjson::salt_json;
use crate::salt::Event;
use crate::salt::bus::Chunked;

/// [`sse_event`] in shared chunks: the rendering kept with each bus event.
pub fn sse_record(event: &Event) -> Chunked {
    Chunked::new(&sse_event(event))
}

/// One event in salt-api's SSE framing.
pub fn sse_event(event: &Event) -> Bytes {
    let json = salt_json(event);
    let mut out = String::with_capacity(json.len() + event.tag.len() + 16);
    out.push_str("tag: ");
    for c in event.tag.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push_str("\ndata: ");
    out.push_str(&json);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// Where the `data:` line of an [`sse_record`] starts.
fn data_start(record: &Chunked) -> usize {
    // The tag line is the first line: a tag's own CR and LF are escaped on it.
    record.position(b'\n').map_or(record.len(), |i| i + 1)
}

/// The part of an [`sse_record`] from its `data:` line on, `data: <json>\n\n`: the frame of
/// rest_cherrypy's `/ws`, as slices of the record's chunks.
pub fn data_part(record: &Chunked) -> Vec<Bytes> {
    record.slices(data_start(record)..record.len())
}

/// The JSON of an [`sse_record`], `{"data": …, "tag": …}`: the frame of rest_tornado's
/// `/all_events`, as slices of the record's chunks.
pub fn json_part(record: &Chunked) -> Vec<Bytes> {
    let start = data_start(record) + "data: ".len();
    record.slices(start..record.len().saturating_sub(2).max(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    #[test]
    fn sse_framing_matches_salt_api_and_tags_cannot_forge_fields() {
        let ev = Event::new("a/b", Value::Map(vec![]));
        assert_eq!(
            &sse_event(&ev)[..],
            b"tag: a/b\ndata: {\"data\": {}, \"tag\": \"a/b\"}\n\n"
        );
        let ev = Event::new("x\ndata: forged", Value::Map(vec![]));
        let text = String::from_utf8(sse_event(&ev).to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("data: {\"data\""), "{text}");
        assert!(text.starts_with("tag: x\\ndata: forged\n"));
    }

    #[test]
    fn websocket_framings_are_parts_of_the_sse_record() {
        for tag in ["a/b", "x\ndata: forged", "é/\r"] {
            let ev = Event::new(tag, Value::Map(vec![("k".into(), "v\n\n".into())]));
            let record = sse_record(&ev);
            let json = salt_json(&ev);
            assert_eq!(
                data_part(&record).concat(),
                format!("data: {json}\n\n").as_bytes()
            );
            assert_eq!(json_part(&record).concat(), json.as_bytes());
        }
        // A long event: parts of the shared chunks, never more than one chunk each.
        let ev = Event::new("big", Value::from("x".repeat(100_000)));
        let record = sse_record(&ev);
        let parts = json_part(&record);
        assert_eq!(parts.concat(), salt_json(&ev).as_bytes());
        assert!(
            parts.len() > 1
                && parts
                    .iter()
                    .all(|p| p.len() <= crate::salt::bus::ring::CHUNK)
        );
        assert_eq!(
            parts[1].as_ptr(),
            record.slices(0..record.len())[1].as_ptr()
        );
    }
}
