//! The config files we ship parse and validate.

use std::collections::HashMap;

#[test]
fn example_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/saltgate.example.yaml"),
    )
    .unwrap();
    // The example names secret and key files under /etc/saltgate; point them at test files.
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for name in ["github.secret", "gitlab.previous"] {
        std::fs::write(secrets.join(name), "a-test-secret\n").unwrap();
    }
    let key = rsa_public_key_pem();
    std::fs::write(secrets.join("travis.pub"), key).unwrap();
    let text = example.replace("/etc/saltgate/", &format!("{}/", secrets.display()));
    std::fs::write(dir.path().join("master"), text).unwrap();
    let env: HashMap<String, String> = [
        "GITLAB_TOKEN",
        "GITEA_SECRET",
        "BITBUCKET_SECRET",
        "SLACK_SIGNING_SECRET",
        "STRIPE_WEBHOOK_SECRET",
        "JENKINS_HOOK_SECRET",
        "ALERT_TOKEN",
    ]
    .iter()
    .map(|k| (k.to_string(), "a-test-secret".to_string()))
    .chain([(
        "WEBHOOK_SECRET".to_string(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
    )])
    .collect();
    let config = saltgate::config::Config::load(dir.path(), &env).unwrap();
    assert_eq!(config.hooks.len(), 13, "12 rules and the default");
    assert_eq!(config.hooks[0].verifier.as_ref().unwrap().name(), "github");
    let shown = saltgate::config::render_effective(&config);
    assert!(!shown.contains("a-test-secret"), "a secret was printed");
}

#[test]
fn demo_config_uses_the_builtin_bus() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.yaml");
    let config = saltgate::config::Config::load(&path, &HashMap::new()).unwrap();
    assert!(!config.use_master);
    assert!(config.api.webhook_disable_auth);
}

#[test]
fn bad_rules_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "- path: a\n  verify: {github: {}}\n",
            "saltgate.hooks[0].verify.github",
        ),
        (
            "- path: a\n  verify: {github: {secret_env: NOPE}}\n",
            "saltgate.hooks[0].verify.github.secret_env",
        ),
        (
            "- path: a\n  verify: {github: {secret_env: EMPTY}}\n",
            "saltgate.hooks[0].verify.github",
        ),
        (
            "- path: a\n  verify: {carrier_pigeon: {secret_env: X}}\n",
            "saltgate.hooks[0].verify.carrier_pigeon",
        ),
        (
            "- path: a\n  rate: {per_second: 0}\n",
            "saltgate.hooks[0].rate.per_second",
        ),
        ("- path: a\n- path: a/\n", "saltgate.hooks[1].path"),
        (
            "- path: a\n  verify: {hmac: {secret_env: X, header: X-Sig, algorithm: sha1}}\n",
            "saltgate.hooks[0].verify.hmac.algorithm",
        ),
    ];
    let env: HashMap<String, String> =
        [("EMPTY".into(), "  \n".into()), ("X".into(), "x".into())].into();
    for (hooks, key) in cases {
        let text = format!("saltgate:\n  hooks:\n{}", indent(hooks));
        std::fs::write(dir.path().join("master"), text).unwrap();
        let err = saltgate::config::Config::load(dir.path(), &env).unwrap_err();
        assert_eq!(err.key(), Some(key), "{err}");
        let master = dir.path().join("master");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: {key}: ", master.display())),
            "{key}: got {err}"
        );
    }
}

/// A key that does not apply to a rule's scheme is refused, by `Config::load` and by
/// `saltgate check-config` alike, with the file, the key path (rule and scheme) and the key.
#[test]
fn a_key_of_another_scheme_is_refused_naming_rule_scheme_and_key() {
    for (scheme, settings, foreign) in [
        ("github", "secret_env: S", "tolerance_secs"),
        ("gitlab", "secret_env: S", "tolerance_secs"),
        ("gitea", "secret_env: S", "legacy_sha1"),
        ("forgejo", "secret_env: S", "algorithm"),
        ("bitbucket", "secret_env: S", "header"),
        ("slack", "secret_env: S", "prefix"),
        ("stripe", "secret_env: S", "header"),
        ("standard_webhooks", "secret_env: S", "allow_sha1"),
        ("hmac", "secret_env: S, header: X-Sig", "tolerance_secs"),
        ("token", "secret_env: S", "encoding"),
        ("travis", "public_key_files: [/k.pem]", "secret_file"),
        (
            "sns",
            "topic_arns: ['arn:aws:sns:eu-west-1:1:a']",
            "secrets",
        ),
    ] {
        let text = format!(
            "saltgate:\n  hooks:\n    - path: in/{scheme}\n      \
             verify: {{{scheme}: {{{settings}, {foreign}: 1}}}}\n"
        );
        let refusal = refused(&text);
        let key = format!("saltgate.hooks[0].verify.{scheme}.{foreign}");
        assert!(
            refusal.contains(&format!(": {key}: ")),
            "{scheme}: {refusal}"
        );
        assert!(
            refusal.contains(&format!("unknown field `{foreign}`")),
            "{scheme}: {refusal}"
        );
        assert!(
            refusal.contains(&format!("in the rule for \"in/{scheme}\"")),
            "{scheme}: {refusal}"
        );
    }
}

#[test]
fn a_bad_host_or_ipc_mode_is_refused_by_load_and_check_config() {
    for (text, key, says) in [
        (
            "rest_cherrypy:\n  host: api.example.com\n",
            "rest_cherrypy.host",
            "\"api.example.com\" is not an IP address or localhost",
        ),
        (
            "rest_cherrypy:\n  host: 10.0.0.300\n",
            "rest_cherrypy.host",
            "\"10.0.0.300\" is not an IP address",
        ),
        (
            "ipc_mode: pipes\n",
            "ipc_mode",
            "unknown variant `pipes`, expected `ipc` or `tcp`",
        ),
        (
            "interface: eth0\n",
            "interface",
            "\"eth0\" is not an IP address",
        ),
    ] {
        let refusal = refused(text);
        assert!(refusal.contains(&format!(": {key}: ")), "{refusal}");
        assert!(refusal.contains(says), "{refusal}");
    }
}

#[test]
fn salt_api_keys_stay_accepted_and_check_config_says_what_it_ignores() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("master"),
        "rest_cherrypy:\n  port: 8000\n  host: 127.0.0.1\n  disable_ssl: true\n  \
         thread_pool: 100\n  socket_queue_size: 30\n  log_access_file: /var/log/a\n  \
         authorized_ips: [10.0.0.1]\n  webhook_disbale_auth: true\n",
    )
    .unwrap();
    let config = saltgate::config::Config::load(dir.path(), &HashMap::new()).unwrap();
    assert!(!config.api.webhook_disable_auth);
    let out = check_config(dir.path());
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "warning: rest_cherrypy.authorized_ips: not enforced",
        "warning: rest_cherrypy.log_access_file: not written",
        "warning: rest_cherrypy.webhook_disbale_auth: neither salt-api nor saltgate reads",
        "note: rest_cherrypy: thread_pool, socket_queue_size tune salt-api's CherryPy server",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
}

/// `saltgate check-config` on `dir`.
fn check_config(dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
        .args(["check-config", "--config"])
        .arg(dir)
        .env_clear()
        .output()
        .unwrap()
}

/// Writes `text` as a master config and returns why `Config::load` refuses it, after checking
/// that `saltgate check-config` refuses it with the same words.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master"), text).unwrap();
    let err = saltgate::config::Config::load(dir.path(), &HashMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: ", dir.path().join("master").display())),
        "{err}"
    );
    let out = check_config(dir.path());
    assert!(!out.status.success(), "check-config accepted {text:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&err),
        "check-config said {stderr:?}, load said {err:?}"
    );
    err
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn rsa_public_key_pem() -> &'static str {
    // A 1024-bit test key (public half only), generated for this test.
    "-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC7VJTUt9Us8cKjMzEfYyjiWA4R\n\
4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFv\n\
AG0zmIAsInlQlvMgfWhDcxIxHKA9UU2oFXwtLupyB3EkDCE0f1a2JygsA1rHvzFh\n\
bdJXoWMYThgYOLMwZwIDAQAB\n\
-----END PUBLIC KEY-----\n"
}
