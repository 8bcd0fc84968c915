//! The answers senders expect from a hook endpoint itself, not from the Reactor.

use http::HeaderMap;

use crate::config::HookRule;

/// Answers senders expect without the Reactor: GitHub `ping` (unless the rule fires pings) and
/// Slack's `url_verification` challenge. Only called after the signature passed.
pub fn built_in_answer(
    rule: &HookRule,
    headers: &HeaderMap,
    raw: &[u8],
) -> Option<serde_json::Value> {
    let verifier = rule.verifier.as_ref()?;
    match verifier.name() {
        "github" if !rule.fire_ping => {
            let event = headers.get("x-github-event")?.to_str().ok()?;
            (event == "ping").then(|| serde_json::json!({"success": true, "ping": true}))
        }
        "slack" => {
            let body: serde_json::Value = serde_json::from_slice(raw).ok()?;
            if body.get("type")?.as_str()? != "url_verification" {
                return None;
            }
            let challenge = body.get("challenge")?.as_str()?;
            Some(serde_json::json!({"challenge": challenge}))
        }
        _ => None,
    }
}
