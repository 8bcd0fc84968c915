//! Clear-channel replies from the master's request server (src/salt/wire/payload.rs,
//! src/salt/channel.rs): msgpack decoding, the master's error shapes, and the reads each
//! command makes of its reply (`mk_token`/`get_token` tokens, `publish`, `runner`, `wheel`).
//!
//! Input: the reply bytes. Oracles: msgpack → JSON → msgpack → JSON is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmpv::Value;
use saltgate::salt::channel::Token;
use saltgate::salt::event::{bytes_like, map_get, text_like};
use saltgate::salt::wire::payload::{check_reply, decode_reply, error_from, from_json, to_json};

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = decode_reply(data) else {
        return;
    };
    let json = to_json(&reply);
    assert_eq!(to_json(&from_json(&json)), json, "JSON round trip");
    let _ = text_like(&reply);
    let _ = bytes_like(&reply);
    // mk_token / get_token
    let _ = Token::from_value(&reply);
    match check_reply(reply) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(reply) => {
            // publish
            let load = map_get(&reply, "load").unwrap_or(&reply);
            for k in ["minions", "missing"] {
                let _: Vec<String> = map_get(load, k)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(text_like).collect())
                    .unwrap_or_default();
            }
            let _ = map_get(load, "jid").and_then(text_like);
            if let Some(e) = map_get(load, "error") {
                let _ = error_from(e).to_string();
            }
            // runner, wheel, ping
            let _ = map_get(&reply, "tag").and_then(text_like);
            let _ = map_get(&reply, "data").map(to_json);
            let _ = map_get(&reply, "cmd").and_then(text_like);
            if let Value::Map(_) = &reply {
                let _ = Token::from_value(&reply);
            }
        }
    }
});
