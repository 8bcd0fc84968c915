//! Event-bus frames as the master's publisher sends them (src/salt/wire/framing.rs), read the
//! way the bus reader does (src/salt/bus/ipc.rs): per-frame framing detection, a maximum frame
//! size, then `body` extraction, event unpacking and credential redaction.
//!
//! Input: one control byte (the maximum frame size and the read size), then the byte stream.
//! Oracles: decoding the whole stream at once and in reads of `step` bytes yields the same
//! frames and the same end; every frame re-encodes to the same body; a decoded event re-packs
//! to stable bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use saltgate::salt::event::Event;
use saltgate::salt::wire::framing::{Decoded, Framing, decode_frame, encode_frame, frame_body};

#[derive(Debug, PartialEq)]
enum End {
    Incomplete,
    Error,
}

/// Decodes every complete frame in `buf[*start..]`, as `Reader::read_frames` does.
fn drain(buf: &[u8], start: &mut usize, max_frame: usize, frames: &mut Vec<Vec<u8>>) -> End {
    loop {
        let rest = &buf[*start..];
        match decode_frame(rest, max_frame) {
            Ok(Decoded::Incomplete) => return End::Incomplete,
            Ok(Decoded::Frame {
                framing,
                consumed,
                start: body,
            }) => {
                assert!(consumed > 0, "a frame must consume bytes");
                assert!(body <= consumed && consumed <= rest.len(), "frame bounds");
                assert!(consumed - body <= max_frame, "frame over the limit");
                assert_eq!(body, if framing == Framing::Prefixed { 4 } else { 0 });
                let frame = &buf[*start + body..*start + consumed];
                frames.push(frame.to_vec());
                publish(frame, framing, max_frame);
                *start += consumed;
            }
            Err(_) => return End::Error,
        }
    }
}

/// What `Reader::publish` does with one frame, plus round-trip checks.
fn publish(frame: &[u8], framing: Framing, max_frame: usize) {
    let Ok(body) = frame_body(frame) else { return };
    let mut again = Vec::new();
    encode_frame(&body, framing, &mut again);
    if again.len() <= max_frame {
        if let Ok(Decoded::Frame {
            consumed, start, ..
        }) = decode_frame(&again, max_frame.max(again.len()))
        {
            assert_eq!(consumed, again.len());
            assert_eq!(frame_body(&again[start..consumed]).ok(), Some(body.clone()));
        }
    }
    if let Ok(mut event) = Event::unpack(&body) {
        let _ = event.redact_credentials();
        let _ = event.get("data");
        // What /events and /ws send for it (keys nested in keys are bounded).
        let _ = saltgate::api::stream::record::sse_event(&event);
        if let Ok(packed) = event.pack() {
            let back = Event::unpack(&packed).expect("a packed event unpacks");
            assert_eq!(back.tag, event.tag);
            assert_eq!(back.pack().ok(), Some(packed), "packing is stable");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let max_frame = [64usize, 1 << 10, 1 << 16, 16 << 20][usize::from(ctl & 3)];
    // Reads of 1..=64 bytes, but at most ~64 of them: the reader re-walks a bare frame from its
    // start on every read, so tiny reads of a long stream would only cost time.
    let step = (1 + usize::from(ctl >> 2)).max(stream.len() / 64);

    let mut whole = Vec::new();
    let mut start = 0;
    let end_whole = drain(stream, &mut start, max_frame, &mut whole);

    // The reader's loop: append what one read returned, decode, drop what was used.
    let mut inc = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut end_inc = End::Incomplete;
    for chunk in stream.chunks(step) {
        buf.extend_from_slice(chunk);
        let mut s = 0;
        end_inc = drain(&buf, &mut s, max_frame, &mut inc);
        buf.drain(..s);
        if end_inc == End::Error {
            break;
        }
    }
    assert_eq!(
        whole, inc,
        "frames differ between one read and reads of {step}"
    );
    assert_eq!(end_whole, end_inc);
});
