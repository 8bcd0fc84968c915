//! `saltgate.hooks[]`: per-hook rules (who may send, how it is verified, how much, how fast).
//!
//! ```yaml
//! saltgate:
//!   unmatched_hooks: allow          # allow (salt-api behaviour) | refuse (404)
//!   hooks:
//!     - path: github/deploy         # /hook/github/deploy and below
//!       auth: none                  # token | none (default: token unless webhook_disable_auth)
//!       verify: {github: {secret_file: /etc/saltgate/github.secret}}
//!       allow_from: [140.82.112.0/20]
//!       rate: {per_second: 5, burst: 20}
//!       max_body: 262144
//!       dedupe: body                # id (default) | body: also refuse a resent body
//! ```
//! Secrets come from files (`secret_file`) or environment variables (`secret_env`), several
//! (`secrets: [{file: ..}, {env: ..}]`) for rotation; inline secrets are not accepted, so they
//! never end up in a config dump or a log. Empty secrets are refused.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use super::error::ConfigError;
use crate::security::rate::RateQuota;
use crate::security::secret::{Secret, SecretSet};
use crate::security::signature::hmac::{Encoding, GenericHmac, GenericHmacConfig};
use crate::security::signature::token::TokenSource;
use crate::security::signature::{
    HashAlg, Verifier, bitbucket, gitea, github, gitlab, slack, sns, standard_webhooks, stripe,
    token, travis,
};
use ipnet::IpNet;

use crate::security::AllowList;

/// One rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    /// The path under the webhook URL this rule covers (and everything below it).
    pub path: String,
    /// `token` or `none`.
    #[serde(default)]
    pub auth: Option<AuthMode>,
    /// One verifier: `{github: {...}}`, `{hmac: {...}}`, ...
    #[serde(default)]
    pub verify: Option<HashMap<String, RawVerifier>>,
    /// Client networks allowed (empty: all).
    #[serde(default)]
    pub allow_from: Vec<IpNet>,
    /// Requests per second per client address.
    #[serde(default)]
    pub rate: Option<RawRate>,
    /// Largest body for this rule, bytes.
    #[serde(default)]
    pub max_body: Option<u64>,
    /// Fire GitHub `ping` deliveries instead of answering them directly.
    #[serde(default)]
    pub fire_ping: bool,
    /// Parse YAML bodies into `post` (bounded in nodes and depth); off: YAML stays text.
    #[serde(default)]
    pub yaml: bool,
    /// What identifies a delivery already fired: `id` (the scheme's delivery id; default) or
    /// `body` (the SHA-256 of the raw body).
    #[serde(default)]
    pub dedupe: Dedupe,
}

/// How a rule recognises a delivery it already fired (within the replay guard's 24 h window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedupe {
    /// The delivery id the scheme reports (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`, ...,
    /// SNS `MessageId`). Only SNS signs its id; the others' ids are plain headers, so this stops
    /// sender retries and concurrent double deliveries, not an attacker who resends a captured
    /// body with a new or no id.
    #[default]
    Id,
    /// The SHA-256 of the raw body, for any scheme (and rules without one): a captured body
    /// fires once whatever its headers say. For senders whose bodies are unique per delivery
    /// (GitHub and GitLab push payloads carry commit ids and timestamps); a sender that
    /// legitimately repeats a byte-identical body within the window is answered `duplicate`.
    Body,
}

/// How a hook proves it may fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A Salt token (`X-Auth-Token` or the session cookie), as salt-api.
    Token,
    /// No token; rely on the verifier and the allowlist.
    None,
}

/// A rate as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Burst size (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A verifier's settings as written; which keys apply depends on the scheme.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerifier {
    /// A file holding the secret (surrounding whitespace ignored).
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    pub secret_env: Option<String>,
    /// Several secrets, for rotation.
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    /// GitHub: also accept the legacy `X-Hub-Signature` (SHA-1).
    #[serde(default)]
    pub legacy_sha1: bool,
    /// Slack, Stripe, Standard Webhooks: accepted clock skew in seconds (default 300);
    /// sns: accepted `Timestamp` age either way (default 3600).
    pub tolerance_secs: Option<u64>,
    /// hmac / token: the header carrying the signature or token.
    pub header: Option<String>,
    /// hmac: `sha256` (default), `sha512`, `sha1` (needs `allow_sha1`).
    pub algorithm: Option<String>,
    /// hmac: `hex` (default) or `base64`.
    pub encoding: Option<String>,
    /// hmac: a literal prefix before the MAC, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// hmac: a header with a delivery id for duplicate detection.
    pub delivery_header: Option<String>,
    /// hmac: permit SHA-1.
    #[serde(default)]
    pub allow_sha1: bool,
    /// travis: PEM files of Travis CI's public keys.
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    /// sns: the topic ARNs accepted (exact match; at least one).
    #[serde(default)]
    pub topic_arns: Vec<String>,
    /// sns: GET the `SubscribeURL` of a `SubscriptionConfirmation` instead of only firing it.
    #[serde(default)]
    pub confirm_subscriptions: bool,
    /// sns: accept certificate and subscribe URLs on `sns.<region>.<suffix>` instead of
    /// `amazonaws.com` / `amazonaws.com.cn`.
    pub cert_host_suffix: Option<String>,
}

/// One secret source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// A file holding it.
    pub file: Option<PathBuf>,
    /// An environment variable holding it.
    pub env: Option<String>,
}

/// A validated hook rule.
#[derive(Debug, Clone)]
pub struct HookRule {
    /// Index for the rate limiter; the default rule comes last.
    pub index: usize,
    /// The path prefix (no leading or trailing slash; empty for the default rule).
    pub path: String,
    /// Whether a Salt token is required.
    pub auth: AuthMode,
    /// The signature or shared-secret check.
    pub verifier: Option<Verifier>,
    /// Allowed client networks.
    pub allow: AllowList,
    /// Per-client rate.
    pub rate: Option<RateQuota>,
    /// Largest body, bytes.
    pub max_body: u64,
    /// Fire GitHub pings.
    pub fire_ping: bool,
    /// Parse YAML bodies (bounded).
    pub yaml: bool,
    /// What identifies a delivery already fired.
    pub dedupe: Dedupe,
}

impl HookRule {
    /// Whether this rule covers `path` (segment-wise prefix).
    pub fn covers(&self, path: &str) -> bool {
        self.path.is_empty()
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Builds validated rules plus the default rule for unmatched paths (last).
pub fn build(
    raw: &[RawHook],
    webhook_disable_auth: bool,
    max_request_body_size: u64,
    env: &HashMap<String, String>,
) -> Result<Vec<HookRule>, ConfigError> {
    let default_auth = if webhook_disable_auth {
        AuthMode::None
    } else {
        AuthMode::Token
    };
    let mut rules = Vec::with_capacity(raw.len() + 1);
    for (i, r) in raw.iter().enumerate() {
        let key = format!("saltgate.hooks[{i}]");
        let path = r.path.trim_matches('/').to_owned();
        if path.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.path"),
                "must not be empty",
            ));
        }
        if rules.iter().any(|x: &HookRule| x.path == path) {
            return Err(ConfigError::invalid(
                format!("{key}.path"),
                "duplicate hook path",
            ));
        }
        let verifier = match &r.verify {
            None => None,
            Some(map) if map.len() == 1 => {
                let (scheme, settings) = map.iter().next().ok_or_else(|| {
                    ConfigError::invalid(format!("{key}.verify"), "names no scheme")
                })?;
                Some(verifier(
                    &format!("{key}.verify.{scheme}"),
                    scheme,
                    settings,
                    env,
                )?)
            }
            Some(_) => {
                return Err(ConfigError::invalid(
                    format!("{key}.verify"),
                    "name exactly one scheme",
                ));
            }
        };
        let auth = r.auth.unwrap_or(default_auth);
        let rate = r
            .rate
            .as_ref()
            .map(|rate| quota(&format!("{key}.rate"), rate))
            .transpose()?;
        let max_body = r.max_body.unwrap_or(max_request_body_size);
        if max_body == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.max_body"),
                "must be > 0",
            ));
        }
        rules.push(HookRule {
            index: i,
            path,
            auth,
            verifier,
            allow: AllowList::new(r.allow_from.clone()),
            rate,
            max_body,
            fire_ping: r.fire_ping,
            yaml: r.yaml,
            dedupe: r.dedupe,
        });
    }
    rules.push(HookRule {
        index: raw.len(),
        path: String::new(),
        auth: default_auth,
        verifier: None,
        allow: AllowList::allow_all(),
        rate: None,
        max_body: max_request_body_size,
        fire_ping: true,
        yaml: false,
        dedupe: Dedupe::Id,
    });
    Ok(rules)
}

fn quota(key: &str, raw: &RawRate) -> Result<RateQuota, ConfigError> {
    let per_second = NonZeroU32::new(raw.per_second)
        .ok_or_else(|| ConfigError::invalid(format!("{key}.per_second"), "must be > 0"))?;
    let burst = NonZeroU32::new(raw.burst.unwrap_or(raw.per_second))
        .ok_or_else(|| ConfigError::invalid(format!("{key}.burst"), "must be > 0"))?;
    Ok(RateQuota { per_second, burst })
}

fn secrets(
    key: &str,
    raw: &RawVerifier,
    env: &HashMap<String, String>,
) -> Result<SecretSet, ConfigError> {
    let mut sources: Vec<(String, Option<&PathBuf>, Option<&String>)> = Vec::new();
    if raw.secret_file.is_some() || raw.secret_env.is_some() {
        sources.push((
            key.to_owned(),
            raw.secret_file.as_ref(),
            raw.secret_env.as_ref(),
        ));
    }
    for (i, s) in raw.secrets.iter().enumerate() {
        sources.push((
            format!("{key}.secrets[{i}]"),
            s.file.as_ref(),
            s.env.as_ref(),
        ));
    }
    if sources.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "needs secret_file, secret_env or secrets",
        ));
    }
    let mut out = Vec::new();
    for (k, file, var) in sources {
        let bytes = match (file, var) {
            (Some(path), None) => std::fs::read(path).map_err(|e| {
                ConfigError::invalid(
                    format!("{k}.secret_file"),
                    format!("{}: {e}", path.display()),
                )
            })?,
            (None, Some(name)) => env
                .get(name)
                .ok_or_else(|| {
                    ConfigError::invalid(format!("{k}.secret_env"), format!("{name} is not set"))
                })?
                .clone()
                .into_bytes(),
            _ => {
                return Err(ConfigError::invalid(
                    k,
                    "give exactly one of a file or an env var",
                ));
            }
        };
        out.push(
            Secret::trimmed(&bytes)
                .map_err(|_| ConfigError::invalid(k, "the secret is empty; refusing it"))?,
        );
    }
    SecretSet::new(out).map_err(|_| ConfigError::invalid(key, "no secret"))
}

fn header(key: &str, value: Option<&String>) -> Result<Option<HeaderName>, ConfigError> {
    value
        .map(|h| {
            HeaderName::try_from(h.as_str())
                .map_err(|_| ConfigError::invalid(key, format!("{h:?} is not a header name")))
        })
        .transpose()
}

fn tolerance(raw: &RawVerifier) -> Duration {
    Duration::from_secs(raw.tolerance_secs.unwrap_or(300))
}

/// Builds one scheme's verifier from its settings; `key` names it in errors.
pub fn verifier(
    key: &str,
    scheme: &str,
    raw: &RawVerifier,
    env: &HashMap<String, String>,
) -> Result<Verifier, ConfigError> {
    Ok(match scheme {
        "github" => Verifier::Github(
            github::Github::new(secrets(key, raw, env)?).with_legacy_sha1(raw.legacy_sha1),
        ),
        "gitlab" => Verifier::Gitlab(gitlab::Gitlab::new(secrets(key, raw, env)?)),
        "gitea" | "forgejo" => Verifier::Gitea(gitea::Gitea::new(secrets(key, raw, env)?)),
        "bitbucket" => Verifier::Bitbucket(bitbucket::Bitbucket::new(secrets(key, raw, env)?)),
        "slack" => Verifier::Slack(slack::Slack::new(secrets(key, raw, env)?, tolerance(raw))),
        "stripe" => Verifier::Stripe(stripe::Stripe::new(secrets(key, raw, env)?, tolerance(raw))),
        "standard_webhooks" => Verifier::StandardWebhooks(
            standard_webhooks::StandardWebhooks::new(&secrets(key, raw, env)?, tolerance(raw))
                .map_err(|_| ConfigError::invalid(key, "the secret is not whsec_<base64>"))?,
        ),
        "hmac" => {
            let header = header(&format!("{key}.header"), raw.header.as_ref())?
                .ok_or_else(|| ConfigError::invalid(format!("{key}.header"), "is required"))?;
            let algorithm = match raw.algorithm.as_deref().unwrap_or("sha256") {
                "sha256" => HashAlg::Sha256,
                "sha512" => HashAlg::Sha512,
                "sha1" => HashAlg::Sha1,
                other => {
                    return Err(ConfigError::invalid(
                        format!("{key}.algorithm"),
                        format!("{other:?}: use sha256, sha512 or sha1"),
                    ));
                }
            };
            let encoding = match raw.encoding.as_deref().unwrap_or("hex") {
                "hex" => Encoding::Hex,
                "base64" => Encoding::Base64,
                other => {
                    return Err(ConfigError::invalid(
                        format!("{key}.encoding"),
                        format!("{other:?}: use hex or base64"),
                    ));
                }
            };
            Verifier::Hmac(
                GenericHmac::new(GenericHmacConfig {
                    secrets: secrets(key, raw, env)?,
                    header,
                    algorithm,
                    encoding,
                    prefix: raw.prefix.clone(),
                    delivery_header: header_opt(key, raw.delivery_header.as_ref())?,
                    allow_sha1: raw.allow_sha1,
                })
                .map_err(|_| {
                    ConfigError::invalid(format!("{key}.algorithm"), "sha1 needs allow_sha1: true")
                })?,
            )
        }
        "token" => {
            let source = match header(&format!("{key}.header"), raw.header.as_ref())? {
                Some(h) => TokenSource::Header(h),
                None => TokenSource::Bearer,
            };
            Verifier::Token(token::Token::new(secrets(key, raw, env)?, source))
        }
        "travis" => {
            if raw.public_key_files.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.public_key_files"),
                    "needs Travis CI's public key (PEM)",
                ));
            }
            let mut pems = Vec::new();
            for (i, path) in raw.public_key_files.iter().enumerate() {
                pems.push(std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        format!("{key}.public_key_files[{i}]"),
                        format!("{}: {e}", path.display()),
                    )
                })?);
            }
            let refs: Vec<&str> = pems.iter().map(String::as_str).collect();
            Verifier::Travis(travis::Travis::from_pem(&refs).map_err(|e| {
                ConfigError::invalid(format!("{key}.public_key_files"), e.to_string())
            })?)
        }
        "sns" => {
            let topics_key = format!("{key}.topic_arns");
            let mut v = sns::Sns::new(raw.topic_arns.clone())
                .map_err(|e| ConfigError::invalid(&topics_key, e.to_string()))?
                .with_confirm_subscriptions(raw.confirm_subscriptions)
                .with_tolerance(Duration::from_secs(
                    raw.tolerance_secs
                        .unwrap_or(sns::DEFAULT_TOLERANCE.as_secs()),
                ));
            if let Some(suffix) = &raw.cert_host_suffix {
                v = v.with_cert_host_suffix(suffix).map_err(|e| {
                    ConfigError::invalid(format!("{key}.cert_host_suffix"), e.to_string())
                })?;
            }
            Verifier::Sns(v)
        }
        other => {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "unknown scheme {other:?}: use github, gitlab, gitea, bitbucket, slack, \
                     stripe, standard_webhooks, hmac, token, travis or sns"
                ),
            ));
        }
    })
}

fn header_opt(key: &str, value: Option<&String>) -> Result<Option<HeaderName>, ConfigError> {
    header(&format!("{key}.delivery_header"), value)
}

/// What `saltgate check-config` (and `serve`, at start) warns about in the hook rules:
/// signed rules next to `unmatched_hooks: allow`, and Reactor globs that match hook tags the
/// signed rules do not cover.
///
/// A rule covers its path and the paths below it, on segment boundaries: `github/deploy`
/// covers `github/deploy` and `github/deploy/x`, never `github/deployX` nor `GitHub/deploy`
/// (Salt tags and Reactor globs are case-sensitive). A Reactor key such as
/// `salt/netapi/hook/github/deploy*` also matches `salt/netapi/hook/github/deployX`, which only
/// the default rule covers; while unmatched paths are allowed, that tag fires with the default
/// rule's checks (a Salt token, or nothing under `webhook_disable_auth`).
pub fn warnings(
    rules: &[HookRule],
    unmatched_allowed: bool,
    reactor_globs: &[String],
) -> Vec<String> {
    let signed: Vec<&HookRule> = rules
        .iter()
        .filter(|r| !r.path.is_empty() && r.verifier.is_some())
        .collect();
    if signed.is_empty() || !unmatched_allowed {
        return Vec::new();
    }
    let default_checks = match rules.last().map(|r| r.auth) {
        Some(AuthMode::Token) => "a Salt token only",
        _ => "nothing (webhook_disable_auth: true)",
    };
    let names: Vec<&str> = signed.iter().map(|r| r.path.as_str()).collect();
    let mut out = vec![format!(
        "saltgate.unmatched_hooks is allow while hook rules are signed ({}): a path no rule          covers (a sibling such as {}X, another case, a typo) fires through the default rule,          which checks {default_checks}; set unmatched_hooks: refuse unless unsigned hooks are          wanted, and keep Reactor globs on segment boundaries",
        names.join(", "),
        names.first().copied().unwrap_or_default(),
    )];
    for glob in reactor_globs {
        // No wildcard: one tag, routed like its path.
        let Some(at) = glob.find(['*', '?', '[']) else {
            continue;
        };
        let literal = &glob[..at];
        for rule in &signed {
            if crate::salt::event::hook_tag(&rule.path).starts_with(literal) {
                out.push(format!(
                    "reactor glob {glob:?} matches hook tags next to the signed rule {:?}                      (such as salt/netapi/hook/{}X), which that rule does not cover; match                      salt/netapi/hook/{} and salt/netapi/hook/{}/* instead",
                    rule.path, rule.path, rule.path, rule.path
                ));
            }
        }
    }
    out
}

/// Picks the rule for `path`: the longest configured prefix, else the default (last) rule.
pub fn route<'a>(rules: &'a [HookRule], path: &str) -> Option<&'a HookRule> {
    rules
        .iter()
        .filter(|r| !r.path.is_empty() && r.covers(path))
        .max_by_key(|r| r.path.len())
        .or_else(|| rules.last())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sns(yaml: &str) -> Result<Verifier, ConfigError> {
        let raw: RawVerifier = serde_yaml::from_str(yaml).unwrap();
        verifier("saltgate.hooks[0].verify.sns", "sns", &raw, &HashMap::new())
    }

    #[test]
    fn sns_scheme_settings() {
        let v = sns(
            "{topic_arns: ['arn:aws:sns:eu-west-1:123456789012:alerts'], \
             confirm_subscriptions: true, cert_host_suffix: amazonaws.com}",
        )
        .unwrap();
        let Verifier::Sns(v) = v else {
            panic!("not sns: {v:?}")
        };
        assert!(v.confirm_subscriptions());
        assert_eq!(
            v.topic_arns(),
            ["arn:aws:sns:eu-west-1:123456789012:alerts"]
        );

        let err = |yaml| sns(yaml).unwrap_err().to_string();
        assert!(err("{}").contains("saltgate.hooks[0].verify.sns.topic_arns"));
        assert!(err("{topic_arns: [nope]}").contains("topic_arns"));
        assert!(
            err("{topic_arns: ['arn:aws:sns:eu-west-1:123456789012:a'], cert_host_suffix: 'evil.com/'}")
                .contains("cert_host_suffix")
        );
        assert!(serde_yaml::from_str::<RawVerifier>("{topic_arn: x}").is_err());
    }
}
