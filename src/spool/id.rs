//! Delivery ids: `_saltgate: {id: "<spool>-<seq>"}` in each event's data.
//!
//! The id names the spool (a random 64-bit number made when the spool file is created) and the
//! entry's sequence number in it, both as 16 hex digits: 33 characters, so that the handler can
//! pack the whole event with a placeholder (the last entry of the data map) and the writer, which hands out sequence numbers in
//! commit order, can fill it in place without packing again.

use rmpv::Value;

use crate::salt::Event;
use crate::salt::SaltError;
use crate::salt::event::{bytes_like, map_get};

/// The key of saltgate's own entry in the data of every hook event it spools.
pub const DELIVERY_KEY: &str = "_saltgate";

/// The field of [`DELIVERY_KEY`] that holds the delivery id.
pub const ID_FIELD: &str = "id";

/// Length of a delivery id.
pub const ID_LEN: usize = 33;

/// What the handler hands the writer: the packed event with room for its id.
#[derive(Debug)]
pub struct Slotted {
    /// `tag + "\n\n" + msgpack(data)`, the id still a placeholder.
    pub bytes: Vec<u8>,
    /// Where the id's 33 bytes start.
    pub id_at: usize,
}

/// The id of entry `seq` of spool `spool`.
pub fn format_id(spool: u64, seq: u64) -> String {
    format!("{spool:016x}-{seq:016x}")
}

/// Reads a delivery id back: `(spool, seq)`.
pub fn parse_id(id: &[u8]) -> Option<(u64, u64)> {
    if id.len() != ID_LEN || id[16] != b'-' {
        return None;
    }
    let hex = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .filter(|s| s.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
    };
    Some((hex(&id[..16])?, hex(&id[17..])?))
}

/// The delivery id an event carries, if any.
pub fn event_id(event: &Event) -> Option<(u64, u64)> {
    let entry = event.get(DELIVERY_KEY)?;
    parse_id(bytes_like(map_get(entry, ID_FIELD)?)?)
}

/// Packs `event` with `_saltgate: {id: <placeholder>}` as the last entry of its data map (the
/// entries salt-api fires keep their order), so the id is the packing's last 33 bytes.
pub fn pack_slotted(event: Event) -> Result<Slotted, SaltError> {
    let Event { tag, data } = event;
    let Value::Map(mut entries) = data else {
        return Err(SaltError::Protocol("hook event data is not a map".into()));
    };
    let placeholder = "0".repeat(ID_LEN);
    entries.push((
        Value::from(DELIVERY_KEY),
        Value::Map(vec![(
            Value::from(ID_FIELD),
            Value::from(placeholder.as_str()),
        )]),
    ));
    let bytes = Event::new(tag, Value::Map(entries)).pack()?;
    // The packing ends with str8 (0xd9, 33) and the placeholder.
    let id_at = bytes.len().saturating_sub(ID_LEN);
    let fits = id_at >= 2
        && bytes.get(id_at - 2..id_at) == Some(&[0xd9, ID_LEN as u8][..])
        && bytes.get(id_at..id_at + ID_LEN) == Some(placeholder.as_bytes());
    if !fits {
        return Err(SaltError::Protocol("cannot place the delivery id".into()));
    }
    Ok(Slotted { bytes, id_at })
}

/// Writes the id of entry `seq` of spool `spool` into its slot.
pub fn fill(bytes: &mut [u8], id_at: usize, spool: u64, seq: u64) {
    // In place, without the String `format_id` makes: the writer thread fills every hook.
    if let Some(slot) = bytes.get_mut(id_at..id_at + ID_LEN) {
        let (head, tail) = slot.split_at_mut(16);
        // 8 bytes into 16 hex digits, 1 + 16 into 17: the lengths match, nothing can fail.
        let _ = hex::encode_to_slice(spool.to_be_bytes(), head);
        tail[0] = b'-';
        let _ = hex::encode_to_slice(seq.to_be_bytes(), &mut tail[1..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(n: usize) -> Event {
        let mut entries = vec![(
            Value::from("_stamp"),
            Value::from("2026-12-02T10:00:00.000000"),
        )];
        for i in 0..n {
            entries.push((Value::from(format!("k{i}")), Value::from(i)));
        }
        Event::new("salt/netapi/hook/x", Value::Map(entries))
    }

    #[test]
    fn the_slot_is_found_and_filled_for_small_and_large_maps() {
        for n in [0, 3, 14, 15, 16, 40, 70_000] {
            let mut s = pack_slotted(hook(n)).unwrap();
            fill(&mut s.bytes, s.id_at, 0xabc, 42);
            let ev = Event::unpack(&s.bytes).unwrap();
            assert_eq!(event_id(&ev), Some((0xabc, 42)), "{n} entries");
            let entries = ev.data.as_map().unwrap();
            assert_eq!(entries[0].0.as_str(), Some("_stamp"));
            assert_eq!(entries.last().unwrap().0.as_str(), Some(DELIVERY_KEY));
            assert_eq!(ev.get("k0").is_some(), n > 0);
        }
    }

    #[test]
    fn an_id_filled_in_place_is_the_formatted_one() {
        for (spool, seq) in [(0, 0), (0xabc, 42), (u64::MAX, 7), (1 << 63, u64::MAX)] {
            let mut bytes = vec![b'x'; ID_LEN + 4];
            fill(&mut bytes, 2, spool, seq);
            assert_eq!(&bytes[2..2 + ID_LEN], format_id(spool, seq).as_bytes());
            assert_eq!(
                (&bytes[..2], &bytes[2 + ID_LEN..]),
                (&b"xx"[..], &b"xx"[..])
            );
        }
        // A slot that does not fit is left alone.
        let mut short = vec![b'x'; ID_LEN];
        fill(&mut short, 1, 1, 1);
        assert_eq!(short, vec![b'x'; ID_LEN]);
    }

    #[test]
    fn ids_round_trip_and_junk_is_refused() {
        let id = format_id(u64::MAX, 7);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(parse_id(id.as_bytes()), Some((u64::MAX, 7)));
        for bad in [
            "",
            "x",
            &"0".repeat(33),
            &format!("{}+{}", "0".repeat(16), "0".repeat(16)),
        ] {
            assert_eq!(parse_id(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            parse_id(format!("{}-{}", "g".repeat(16), "0".repeat(16)).as_bytes()),
            None
        );
        let no_map = Event::new("t", Value::from(1));
        assert!(pack_slotted(no_map).is_err());
        assert_eq!(event_id(&hook(1)), None);
    }
}
