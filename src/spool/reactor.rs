//! Is the master's Reactor listening? Asked before the spool empties into a master that has
//! just (re)connected.
//!
//! An echo on the publisher proves only that the subscribers connected at that moment got the
//! event; right after a master restart the Reactor may not be one of them yet (it is an engine
//! process, started after the publisher), and whatever is flushed then goes to a bus nobody
//! reacts to. Salt has no "Reactor ready" event, but the Reactor answers one request itself, in
//! the same loop that reacts to events: `salt/reactors/manage/is_leader`, which Salt's own
//! `reactor.is_leader` runner sends, carrying the master's key (`<cachedir>/.<user>_key`,
//! rewritten at each master start; the Reactor ignores a request without it). The answer,
//! `salt/reactors/manage/leader/value`, proves that the Reactor process is up, subscribed and
//! has read every event published before the request. Same code in Salt 3006, 3007 and 3008.
//!
//! The key travels on the local bus, as with Salt's runner; saltgate strips it from these
//! events before any `/events` subscriber sees them ([`crate::salt::Event::redact_credentials`]).

use std::io::Read;
use std::path::PathBuf;

use rmpv::Value;

use crate::salt::Event;

/// The request's tag.
pub const ASK_TAG: &str = "salt/reactors/manage/is_leader";

/// The Reactor's answer's tag.
pub const ANSWER_TAG: &str = "salt/reactors/manage/leader/value";

/// How to ask the Reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorCheck {
    /// The master's key file, `<cachedir>/.<user>_key`.
    pub key_file: PathBuf,
}

impl ReactorCheck {
    /// The request, with the key read now (a master restart writes a new one).
    pub fn ask(&self) -> std::io::Result<Event> {
        let mut key = String::new();
        std::fs::File::open(&self.key_file)?
            .take(4096)
            .read_to_string(&mut key)?;
        Ok(Event::new(
            ASK_TAG,
            Value::Map(vec![(Value::from("key"), Value::from(key))]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_key_as_the_file_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join(".root_key");
        std::fs::write(&key_file, "k3y\n").unwrap();
        let ask = ReactorCheck { key_file }.ask().unwrap();
        assert_eq!(ask.tag, ASK_TAG);
        assert_eq!(ask.get("key"), Some(&Value::from("k3y\n")));
        let missing = ReactorCheck {
            key_file: dir.path().join("nope"),
        };
        assert!(missing.ask().is_err());
    }
}
