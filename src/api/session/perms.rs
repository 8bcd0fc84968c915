//! rest_cherrypy's `perms` in a login's answer, from saltgate's copy of `external_auth`.

use serde_json::{Value, json};

use crate::config::Config;

/// rest_cherrypy's `perms`: the eauth's entries for the user, for `*` and for each of the
/// user's groups (`<group>%`), de-duplicated, strings sorted first, then the others (maps) in
/// their written order.
pub fn perms(config: &Config, eauth: &str, user: &str, groups: &[String]) -> Value {
    let Some(backend) = config.master.external_auth.get(eauth) else {
        return json!({});
    };
    let mut strings: Vec<String> = Vec::new();
    let mut others: Vec<Value> = Vec::new();
    let group_keys: Vec<String> = groups.iter().map(|g| format!("{g}%")).collect();
    let whos = [user, "*"]
        .into_iter()
        .chain(group_keys.iter().map(String::as_str));
    for who in whos {
        for entry in backend
            .get(who)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match entry {
                Value::String(s) if !strings.contains(s) => strings.push(s.clone()),
                Value::String(_) => {}
                other if !others.contains(other) => others.push(other.clone()),
                _ => {}
            }
        }
    }
    strings.sort();
    let mut out: Vec<Value> = strings.into_iter().map(Value::String).collect();
    out.extend(others);
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_merge_user_and_star() {
        let mut c = Config::builtin();
        c.master.external_auth = json!({"file": {
            "^filename": "/x", "saltdev": [".*", "@wheel", "@runner", "@jobs"],
            "*": ["test.ping", {"web*": ["grains.items"]}, ".*"],
        }});
        assert_eq!(
            perms(&c, "file", "saltdev", &[]),
            json!([".*", "@jobs", "@runner", "@wheel", "test.ping", {"web*": ["grains.items"]}])
        );
        assert_eq!(perms(&c, "pam", "saltdev", &[]), json!({}));
    }

    #[test]
    fn perms_add_the_tokens_groups() {
        let mut c = Config::builtin();
        c.master.external_auth = json!({"pam": {
            "alice": ["test.ping"],
            "ops%": ["@runner", "test.ping"],
            "web%": [{"web*": ["state.apply"]}],
            "admins%": [".*"],
        }});
        let groups = ["ops".to_owned(), "web".to_owned(), "nobody".to_owned()];
        assert_eq!(
            perms(&c, "pam", "alice", &groups),
            json!(["@runner", "test.ping", {"web*": ["state.apply"]}])
        );
        // A group the token does not carry grants nothing here.
        assert_eq!(perms(&c, "pam", "alice", &[]), json!(["test.ping"]));
    }
}
