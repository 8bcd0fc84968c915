//! `saltgate check-config --compare-salt-api`: what switching a master from salt-api's
//! `rest_cherrypy` to saltgate means for one config. Three parts: what saltgate does exactly as
//! salt-api did with these settings, every documented difference that applies to them (the
//! README's "Behaviour that differs from rest_cherrypy" list, word for word: a unit test keeps
//! the two equal), and what a reviewer would flag before the switch (no authentication on hooks,
//! salt-api keys saltgate does not enforce, TLS off, secret files others can read).
//!
//! The report is plain text for a person; it names files and key paths, never a secret's value.

use std::fmt::Write as _;
use std::path::Path;

use super::Config;

/// One documented difference from rest_cherrypy and the configs it concerns.
struct Difference {
    /// The README's bullet, on one line.
    text: &'static str,
    /// Whether it concerns `config`.
    applies: fn(&Config) -> bool,
}

fn always(_: &Config) -> bool {
    true
}

fn has_eauth(config: &Config) -> bool {
    config
        .master
        .external_auth
        .as_object()
        .is_some_and(|backends| !backends.is_empty())
}

fn serves_ssh(config: &Config) -> bool {
    config
        .master
        .netapi_enable_clients
        .iter()
        .any(|c| c == "ssh")
}

/// The README's list, in its order.
const DIFFERENCES: &[Difference] = &[
    Difference {
        text: "406 for an unacceptable `Accept` is answered before anything runs (rest_cherrypy \
               fires the hook, then answers 406).",
        applies: always,
    },
    Difference {
        text: "`max_request_body_size` is enforced (rest_cherrypy ignores it and accepts up to \
               100 MiB).",
        applies: always,
    },
    Difference {
        text: "A hook that arrives while the master is down is spooled and answered 202 \
               `queued`, then delivered (rest_cherrypy answers 200 `{\"success\": false}` and \
               the hook is gone); with the spool off it is a 503 with an error body.",
        applies: always,
    },
    Difference {
        text: "Credential headers are not copied into hook events, and `Remote-Addr` cannot be \
               overridden by a request header.",
        applies: always,
    },
    Difference {
        text: "Error bodies are JSON or YAML, never an HTML page.",
        applies: always,
    },
    Difference {
        text: "A request that is not allowed is 403 (rest_cherrypy: 401); a chunk missing `tgt` \
               or `fun`, or malformed YAML, is 400 (rest_cherrypy: 500).",
        applies: always,
    },
    Difference {
        text: "A request body of a type saltgate does not read is 415 (rest_cherrypy: 406, \
               which is about `Accept`).",
        applies: always,
    },
    Difference {
        text: "No CORS headers unless `cors_origin` is set, and never with credentials for any \
               origin.",
        applies: always,
    },
    Difference {
        text: "The `ssh` client is not served.",
        applies: serves_ssh,
    },
    Difference {
        text: "Hook paths with control characters, or with empty, `.` or `..` segments, are \
               refused (400).",
        applies: always,
    },
    Difference {
        text: "Compound commands are checked function by function against `external_auth` (the \
               master, and so rest_cherrypy, runs the whole list when one function is allowed): \
               403; chunks carrying `cmd`, `user` or `key` are 400.",
        applies: has_eauth,
    },
    Difference {
        text: "Cross-origin cookie-authenticated `POST`s and logins are 403 `cross_origin`.",
        applies: always,
    },
    Difference {
        text: "Failed logins and token checks are throttled per client (429); h2c is not \
               served; idle, trickling and stalled connections are closed at their deadlines.",
        applies: always,
    },
    Difference {
        text: "A `POST` with neither `Content-Length` nor chunked encoding is read as an empty \
               body, as HTTP/1.1 defines it (rest_cherrypy: 411).",
        applies: always,
    },
];

/// What saltgate does as salt-api did with these settings.
fn same(config: &Config) -> Vec<String> {
    let api = &config.api;
    let master = &config.master;
    let mut out = vec![format!(
        "listens on {}:{} with {} (rest_cherrypy.host, port, {})",
        api.host,
        api.port,
        if api.disable_ssl { "plain HTTP" } else { "TLS" },
        if api.disable_ssl {
            "disable_ssl: true"
        } else {
            "ssl_crt, ssl_key"
        },
    )];
    let hooks = api.webhook_url.trim_end_matches('/');
    out.push(format!(
        "POST {hooks}/<path> fires salt/netapi/hook/<path> on the master's event bus with \
         _stamp, headers, post and body, for the Reactor (rest_cherrypy.webhook_url)"
    ));
    out.push(if api.webhook_disable_auth {
        "hooks need no Salt token (webhook_disable_auth: true)".to_owned()
    } else {
        "hooks need a Salt token, X-Auth-Token or the session cookie (webhook_disable_auth: \
         false)"
            .to_owned()
    });
    out.push(
        "the lowstate API (/, /run, /login, /logout, /token, /minions, /jobs, /keys, /events, \
         /ws) takes the same JSON, YAML and form bodies and answers in JSON or YAML as \
         negotiated"
            .to_owned(),
    );
    let backends: Vec<&str> = master
        .external_auth
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    out.push(if backends.is_empty() {
        "logins go to the master's eauth; this config has no external_auth, so the master \
         refuses them"
            .to_owned()
    } else {
        format!(
            "logins go to the master's eauth (external_auth: {}); tokens live {} s \
             (token_expire) and are checked by the master",
            backends.join(", "),
            master.token_expire
        )
    });
    out.push(format!(
        "clients the master allows: {} (netapi_enable_clients)",
        if master.netapi_enable_clients.is_empty() {
            "none".to_owned()
        } else {
            master.netapi_enable_clients.join(", ")
        }
    ));
    if api.collect_stats {
        out.push(format!(
            "/stats is served{} (collect_stats: true)",
            if api.stats_disable_auth {
                " without a token"
            } else {
                " to token holders"
            }
        ));
    }
    if !api.root_prefix.trim_matches('/').is_empty() {
        out.push(format!(
            "every route sits under {} (root_prefix)",
            api.root_prefix
        ));
    }
    if let Some(dir) = &api.static_dir {
        out.push(format!(
            "files of {} are served under {} (static, static_path)",
            dir.display(),
            api.static_path
        ));
    }
    if let Some(app) = &api.app {
        out.push(format!(
            "{} is served at {} and below (app, app_path)",
            app.display(),
            api.app_path
        ));
    }
    out
}

/// Whether others than the owner and group may read `path` (unix mode `o+r`). `None` when the
/// file cannot be inspected (loading already read it, so that is a race or a permission quirk).
fn world_readable(path: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o004 != 0)
}

/// What a reviewer would flag before the switch, then the warnings `check-config` always gives.
fn review(config: &Config) -> Vec<String> {
    let api = &config.api;
    let mut out = Vec::new();
    let signed = config
        .hooks
        .iter()
        .any(|r| !r.path.is_empty() && r.verifier.is_some());
    if api.webhook_disable_auth && !signed {
        out.push(
            "webhook_disable_auth: true and no signed hook rule (saltgate.hooks): anyone who \
             reaches the port can fire any hook tag the Reactor acts on; add a rule with \
             verify: for each sender and set saltgate.unmatched_hooks: refuse"
                .to_owned(),
        );
    }
    if api.disable_ssl {
        let ip = api.host.ip();
        out.push(if ip.is_loopback() {
            format!(
                "TLS is off (disable_ssl: true) on {ip}: fine behind a TLS-terminating proxy on \
                 this machine, nowhere else"
            )
        } else {
            format!(
                "TLS is off (disable_ssl: true) on {ip}, which is not loopback: passwords, \
                 tokens and hook secrets cross the network in clear; set ssl_crt and ssl_key"
            )
        });
    }
    if let Some(key) = &api.ssl_key {
        if world_readable(key) == Some(true) {
            out.push(format!(
                "rest_cherrypy.ssl_key {} is readable by every user; chmod o-r it",
                key.display()
            ));
        }
    }
    if let Some(wsgi) = &config.wsgi {
        out.push(format!(
            "rest_wsgi: served on its own listener, {}:{} ({}); what differs from salt-api's \
             rest_wsgi (which answers every request 500 on Python 3) is in the README, \
             \"Switching from salt-api: rest_wsgi\"",
            wsgi.host,
            wsgi.port,
            if wsgi.ssl_crt.is_some() && !wsgi.disable_ssl {
                "TLS"
            } else {
                "plain HTTP"
            }
        ));
        if !config.serve_cherrypy && config.tornado.is_none() {
            out.push(
                "no rest_cherrypy: block: only rest_wsgi is served (no hooks, sessions, \
                 resources or event streams); the rest_cherrypy items above do not apply"
                    .to_owned(),
            );
        }
        if let Some(key) = &wsgi.ssl_key {
            if world_readable(key) == Some(true) {
                out.push(format!(
                    "rest_wsgi.ssl_key {} is readable by every user; chmod o-r it",
                    key.display()
                ));
            }
        }
    }
    if let Some(tornado) = &config.tornado {
        out.push(format!(
            "rest_tornado: served on its own listener, {}:{} ({}{}); what differs from \
             salt-api's rest_tornado is in the README, \"Switching from salt-api: rest_tornado\"",
            tornado.address,
            tornado.port,
            if tornado.ssl_crt.is_some() && !tornado.disable_ssl {
                "TLS"
            } else {
                "plain HTTP"
            },
            if tornado.websockets {
                ", WebSockets on"
            } else {
                ""
            }
        ));
        if !config.serve_cherrypy {
            out.push(
                "no rest_cherrypy: block: rest_cherrypy's listener is not served; the \
                 rest_cherrypy items above do not apply"
                    .to_owned(),
            );
        }
        if tornado.webhook_disable_auth {
            out.push(
                "rest_tornado.webhook_disable_auth is true: hooks on the rest_tornado listener \
                 need no Salt token; give each hook path a rule with a signature check"
                    .to_owned(),
            );
        }
        if let Some(key) = &tornado.ssl_key {
            if world_readable(key) == Some(true) {
                out.push(format!(
                    "rest_tornado.ssl_key {} is readable by every user; chmod o-r it",
                    key.display()
                ));
            }
        }
    }
    for (key, path) in &config.secret_files {
        if world_readable(path) == Some(true) {
            out.push(format!(
                "{key} {} is readable by every user; chmod o-r it",
                path.display()
            ));
        }
    }
    out.extend(super::warnings(config));
    out
}

/// The `--compare-salt-api` report for `config`.
pub fn report(config: &Config) -> String {
    let mut out = String::new();
    let source = config.source.as_ref().map_or_else(
        || "(no file: built-in defaults)".to_owned(),
        |p| p.display().to_string(),
    );
    let _ = writeln!(
        out,
        "saltgate in place of salt-api (rest_cherrypy), for {source}"
    );
    let section = |out: &mut String, title: &str, items: &[String]| {
        let _ = writeln!(out, "\n{title}:");
        if items.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for item in items {
            let _ = writeln!(out, "  - {item}");
        }
    };
    section(&mut out, "As salt-api did", &same(config));
    let differs: Vec<String> = DIFFERENCES
        .iter()
        .filter(|d| (d.applies)(config))
        .map(|d| d.text.to_owned())
        .collect();
    section(&mut out, "Differs from salt-api", &differs);
    section(&mut out, "Review before switching", &review(config));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's "Behaviour that differs from rest_cherrypy, on purpose" bullets, each on
    /// one line.
    fn readme_bullets() -> Vec<String> {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("## Behaviour that differs from rest_cherrypy")
            .expect("the README section");
        let section = &readme[start..];
        let body = section[3..]
            .find("\n## ")
            .map_or(section, |end| &section[..end + 3]);
        let mut bullets: Vec<String> = Vec::new();
        for line in body.lines().skip(1) {
            if let Some(item) = line.strip_prefix("- ") {
                bullets.push(item.trim().to_owned());
            } else if line.starts_with("  ") {
                if let Some(last) = bullets.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim());
                }
            }
        }
        bullets
    }

    #[test]
    fn differences_are_the_readme_list_word_for_word() {
        let ours: Vec<&str> = DIFFERENCES.iter().map(|d| d.text).collect();
        assert_eq!(readme_bullets(), ours);
    }

    fn config(yaml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        std::fs::write(&path, yaml).unwrap();
        Config::load(&path, &std::collections::HashMap::new()).unwrap()
    }

    #[test]
    fn differences_follow_the_config() {
        let plain = report(&config(
            "rest_cherrypy:\n  port: 8000\n  disable_ssl: true\n",
        ));
        assert!(
            !plain.contains("The `ssh` client is not served."),
            "{plain}"
        );
        assert!(!plain.contains("Compound commands"), "{plain}");
        let full = report(&config(
            "netapi_enable_clients: [local, ssh]\nexternal_auth: {pam: {ops: ['.*']}}\n\
             rest_cherrypy:\n  port: 8000\n  disable_ssl: true\n",
        ));
        assert!(full.contains("The `ssh` client is not served."), "{full}");
        assert!(full.contains("Compound commands"), "{full}");
        assert!(full.contains("external_auth: pam"), "{full}");
    }

    #[test]
    fn review_flags_what_a_reviewer_would() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("gh.secret");
        std::fs::write(&secret, "s3cret-value").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let open = report(&config(
            "rest_cherrypy:\n  host: 0.0.0.0\n  port: 8000\n  disable_ssl: true\n  \
             webhook_disable_auth: true\n  authorized_ips: [10.0.0.1]\n",
        ));
        assert!(open.contains("no signed hook rule"), "{open}");
        assert!(open.contains("which is not loopback"), "{open}");
        assert!(
            open.contains("rest_cherrypy.authorized_ips: not enforced"),
            "{open}"
        );
        let signed = report(&config(&format!(
            "rest_cherrypy:\n  host: 127.0.0.1\n  port: 8000\n  disable_ssl: true\n  \
             webhook_disable_auth: true\nsaltgate:\n  hooks:\n    - path: github\n      \
             verify: {{github: {{secret_file: {}}}}}\n",
            secret.display()
        )));
        assert!(!signed.contains("no signed hook rule"), "{signed}");
        assert!(signed.contains("unmatched_hooks: refuse"), "{signed}");
        assert!(
            signed.contains("fine behind a TLS-terminating proxy"),
            "{signed}"
        );
        assert!(
            signed.contains(&format!(
                "saltgate.hooks[0].verify.github.secret_file {} is readable by every user",
                secret.display()
            )),
            "{signed}"
        );
        assert!(
            !signed.contains("s3cret-value"),
            "a secret's value in the report"
        );
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let closed = report(&config(&format!(
            "rest_cherrypy:\n  port: 8000\n  disable_ssl: true\nsaltgate:\n  hooks:\n    - path: \
             github\n      verify: {{github: {{secret_file: {}}}}}\n",
            secret.display()
        )));
        assert!(!closed.contains("readable by every user"), "{closed}");
        let wsgi = report(&config("rest_wsgi:\n  port: 8001\n"));
        assert!(
            wsgi.contains("rest_wsgi: served on its own listener, localhost:8001 (plain HTTP)"),
            "{wsgi}"
        );
        assert!(wsgi.contains("only rest_wsgi is served"), "{wsgi}");
        let both = report(&config(
            "rest_cherrypy:\n  port: 8000\n  host: 127.0.0.1\nrest_wsgi:\n  port: 8001\n",
        ));
        assert!(both.contains("rest_wsgi: served"), "{both}");
        let tornado = report(&config(
            "rest_tornado:\n  port: 8002\n  address: 127.0.0.1\n  disable_ssl: true\n  \
             websockets: true\n  webhook_disable_auth: true\n",
        ));
        assert!(
            tornado.contains(
                "rest_tornado: served on its own listener, 127.0.0.1:8002 (plain HTTP, \
                 WebSockets on)"
            ),
            "{tornado}"
        );
        assert!(
            tornado.contains("rest_tornado.webhook_disable_auth is true"),
            "{tornado}"
        );
        assert!(
            tornado.contains("rest_cherrypy's listener is not served"),
            "{tornado}"
        );
        assert!(!tornado.contains("only rest_wsgi"), "{tornado}");
        assert!(!both.contains("only rest_wsgi is served"), "{both}");
    }
}
