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
    assert_eq!(config.hooks.len(), 12, "11 rules and the default");
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
        let err = saltgate::config::Config::load(dir.path(), &env)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{key}:")), "{key}: got {err}");
    }
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
