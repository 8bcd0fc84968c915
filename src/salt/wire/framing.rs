//! Event-bus frames.
//!
//! One frame is the msgpack map `{"head": {}, "body": <bin: tag "\n\n" msgpack(data)>}`.
//! Depending on the Salt version and the side of the bus, each frame is either sent bare or
//! preceded by a 4-byte big-endian length (see WIRE.md §2.3). The reader detects the framing
//! per frame from its first byte: a msgpack map starts with `0x80..=0x8f`, `0xde` or `0xdf`;
//! anything else is a length prefix (whose first byte is `0x00` for any frame under 16 MiB).
//!
//! Every frame read has a maximum size, so a corrupt stream or a hostile local peer cannot make
//! saltgate buffer without bound.

use rmpv::Value;

use crate::salt::error::SaltError;
use crate::salt::wire::payload::MAX_DEPTH;

/// How frames are delimited on one side of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A 4-byte big-endian length, then the msgpack frame (3006.26+, 3007.15+, 3008.2+ pull).
    Prefixed,
    /// The msgpack frame alone.
    Bare,
}

impl Framing {
    /// Its name in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefixed => "prefixed",
            Self::Bare => "bare",
        }
    }
}

/// Wraps a packed event into a transport frame with the given framing.
pub fn encode_frame(packed_event: &[u8], framing: Framing, out: &mut Vec<u8>) {
    // {"head": {}, "body": bin}: written by hand so that `body` is bin and keys are str.
    let start = out.len();
    if framing == Framing::Prefixed {
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
    let body_start = out.len();
    out.push(0x82);
    out.extend_from_slice(b"\xa4head\x80\xa4body");
    let n = packed_event.len();
    if n <= 0xff {
        out.push(0xc4);
        out.push(n as u8);
    } else if n <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(packed_event);
    if framing == Framing::Prefixed {
        let len = (out.len() - body_start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// What the decoder found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed.
    Incomplete,
    /// A whole frame: its framing, how many bytes it used, and the frame's msgpack bytes.
    Frame {
        /// The framing the frame was written in.
        framing: Framing,
        /// Bytes of the input the frame took, header included.
        consumed: usize,
        /// Where the frame's msgpack bytes start in the input.
        start: usize,
    },
}

/// Finds the first complete frame at the start of `buf`.
pub fn decode_frame(buf: &[u8], max_frame: usize) -> Result<Decoded, SaltError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::Incomplete);
    };
    if matches!(first, 0x80..=0x8f | 0xde | 0xdf) {
        return match value_len(buf, 0)? {
            None if buf.len() > max_frame => Err(too_big(buf.len(), max_frame)),
            None => Ok(Decoded::Incomplete),
            Some(n) if n > max_frame => Err(too_big(n, max_frame)),
            Some(n) => Ok(Decoded::Frame {
                framing: Framing::Bare,
                consumed: n,
                start: 0,
            }),
        };
    }
    if buf.len() < 4 {
        return Ok(Decoded::Incomplete);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame {
        return Err(too_big(len, max_frame));
    }
    if buf.len() < 4 + len {
        return Ok(Decoded::Incomplete);
    }
    Ok(Decoded::Frame {
        framing: Framing::Prefixed,
        consumed: 4 + len,
        start: 4,
    })
}

fn too_big(n: usize, max: usize) -> SaltError {
    SaltError::Protocol(format!(
        "event frame of {n} bytes exceeds the {max}-byte limit"
    ))
}

/// Extracts the packed event (`body`) from a frame's msgpack bytes.
pub fn frame_body(frame: &[u8]) -> Result<Vec<u8>, SaltError> {
    let mut cursor = frame;
    let value = crate::salt::wire::payload::decode_value(&mut cursor)
        .map_err(|e| SaltError::Protocol(format!("frame is not msgpack: {e}")))?;
    match crate::salt::value::map_get(&value, "body") {
        Some(Value::Binary(b)) => Ok(b.clone()),
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        _ => Err(SaltError::Protocol("frame without a bytes `body`".into())),
    }
}

/// The encoded length of the msgpack value at the start of `buf`, or `None` if incomplete.
/// Walks the structure without allocating; nesting is bounded.
pub fn value_len(buf: &[u8], depth: usize) -> Result<Option<usize>, SaltError> {
    if depth > MAX_DEPTH {
        return Err(SaltError::Protocol("msgpack nesting too deep".into()));
    }
    let mut pos = 0usize;
    // A stack of remaining item counts, so that deep arrays do not recurse.
    let mut pending: Vec<u64> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let Some(&b) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        let be = |pos: usize, n: usize| -> Option<u64> {
            buf.get(pos..pos + n)
                .map(|s| s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        };
        let (skip, children): (u64, u64) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(b & 0x0f)),
            0x90..=0x9f => (0, u64::from(b & 0x0f)),
            0xa0..=0xbf => (u64::from(b & 0x1f), 0),
            0xc4 | 0xd9 => match be(pos, 1) {
                Some(n) => {
                    pos += 1;
                    (n, 0)
                }
                None => return Ok(None),
            },
            0xc5 | 0xda => match be(pos, 2) {
                Some(n) => {
                    pos += 2;
                    (n, 0)
                }
                None => return Ok(None),
            },
            0xc6 | 0xdb => match be(pos, 4) {
                Some(n) => {
                    pos += 4;
                    (n, 0)
                }
                None => return Ok(None),
            },
            0xc7 => match be(pos, 1) {
                Some(n) => {
                    pos += 1;
                    (n + 1, 0)
                }
                None => return Ok(None),
            },
            0xc8 => match be(pos, 2) {
                Some(n) => {
                    pos += 2;
                    (n + 1, 0)
                }
                None => return Ok(None),
            },
            0xc9 => match be(pos, 4) {
                Some(n) => {
                    pos += 4;
                    (n + 1, 0)
                }
                None => return Ok(None),
            },
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => match be(pos, 2) {
                Some(n) => {
                    pos += 2;
                    (0, n)
                }
                None => return Ok(None),
            },
            0xdd => match be(pos, 4) {
                Some(n) => {
                    pos += 4;
                    (0, n)
                }
                None => return Ok(None),
            },
            0xde => match be(pos, 2) {
                Some(n) => {
                    pos += 2;
                    (0, 2 * n)
                }
                None => return Ok(None),
            },
            0xdf => match be(pos, 4) {
                Some(n) => {
                    pos += 4;
                    (0, 2 * n)
                }
                None => return Ok(None),
            },
            0xc1 => {
                return Err(SaltError::Protocol(
                    "msgpack byte 0xc1 is never used".into(),
                ));
            }
        };
        let end = (pos as u64).saturating_add(skip);
        if end > buf.len() as u64 {
            return Ok(None);
        }
        pos = end as usize;
        if children > 0 {
            if pending.len() > MAX_DEPTH {
                return Err(SaltError::Protocol("msgpack nesting too deep".into()));
            }
            pending.push(children);
        }
    }
    Ok(Some(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(framing: Framing, ev: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(ev, framing, &mut v);
        v
    }

    #[test]
    fn prefixed_frame_matches_capture() {
        // WIRE.md §2.3: 00 00 00 84 82 a4 head 80 a4 body c4 76 ...
        let ev = vec![b'x'; 0x76];
        let f = frame(Framing::Prefixed, &ev);
        assert_eq!(&f[..4], &[0, 0, 0, 0x84]);
        assert_eq!(&f[4..18], b"\x82\xa4head\x80\xa4body\xc4\x76");
        assert_eq!(f.len(), 4 + 0x84);
    }

    #[test]
    fn detects_both_framings_and_round_trips() {
        for framing in [Framing::Prefixed, Framing::Bare] {
            for n in [0usize, 10, 300, 70_000] {
                let ev = vec![7u8; n];
                let mut f = frame(framing, &ev);
                f.extend_from_slice(b"\x82trailing");
                let Decoded::Frame {
                    framing: got,
                    consumed,
                    start,
                } = decode_frame(&f, 1 << 20).unwrap()
                else {
                    panic!("incomplete")
                };
                assert_eq!(got, framing);
                assert_eq!(frame_body(&f[start..consumed]).unwrap(), ev);
                for cut in [1, consumed / 2, consumed - 1] {
                    assert_eq!(
                        decode_frame(&f[..cut], 1 << 20).unwrap(),
                        Decoded::Incomplete
                    );
                }
            }
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        let f = frame(Framing::Prefixed, &[0u8; 2000]);
        assert!(matches!(
            decode_frame(&f, 1000),
            Err(SaltError::Protocol(_))
        ));
        let f = frame(Framing::Bare, &[0u8; 2000]);
        assert!(matches!(
            decode_frame(&f, 1000),
            Err(SaltError::Protocol(_))
        ));
        // A bare reader waiting on an endless incomplete map stops at the limit too.
        let mut partial = b"\x82\xa4head\x80\xa4body\xc6\xff\xff\xff\xff".to_vec();
        partial.resize(1001, 0);
        assert!(matches!(
            decode_frame(&partial, 1000),
            Err(SaltError::Protocol(_))
        ));
    }

    #[test]
    fn value_len_matches_rmpv_for_many_shapes() {
        let values = vec![
            Value::Nil,
            Value::from(-3),
            Value::from(u64::MAX),
            Value::from(1.5f64),
            Value::from("x".repeat(40)),
            Value::Binary(vec![1; 300]),
            Value::Array(vec![Value::from(1); 20]),
            Value::Map(vec![(
                Value::from("a"),
                Value::Array(vec![Value::Map(vec![])]),
            )]),
            Value::Ext(78, b"20261122T19:30:30.245676".to_vec()),
            Value::Ext(5, vec![1, 2, 3, 4]),
        ];
        for v in values {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, &v).unwrap();
            assert_eq!(value_len(&buf, 0).unwrap(), Some(buf.len()), "{v:?}");
            assert_eq!(value_len(&buf[..buf.len() - 1], 0).unwrap(), None, "{v:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing() {
        let buf = vec![0x91u8; 100_000];
        assert!(value_len(&buf, 0).is_err());
    }
}
