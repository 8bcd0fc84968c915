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
//!
//! [`RawHook`] and [`RawVerify`] are the rules as written; every scheme has its own settings
//! type that refuses keys it does not take. [`build`] turns them into [`HookRule`]s.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
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
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub verify: Option<RawVerify>,
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
    /// The delivery id the scheme reports (`X-GitHub-Delivery`, GitLab's `Idempotency-Key`, ...,
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

/// A rule's verifier as written: exactly one scheme, `{<scheme>: {settings}}`. Each scheme has
/// its own settings type that refuses keys it does not take, so a key meant for another scheme
/// (`tolerance_secs` on a GitLab rule) is an error naming it rather than silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawVerify {
    /// GitHub `X-Hub-Signature-256`.
    Github(GithubSettings),
    /// GitLab `X-Gitlab-Token`.
    Gitlab(GitlabSettings),
    /// Gitea / Forgejo `X-Gitea-Signature` / `X-Forgejo-Signature`.
    #[serde(alias = "forgejo")]
    Gitea(GiteaSettings),
    /// Bitbucket `X-Hub-Signature`.
    Bitbucket(BitbucketSettings),
    /// Slack `X-Slack-Signature` v0.
    Slack(SlackSettings),
    /// Stripe `Stripe-Signature`.
    Stripe(StripeSettings),
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks(StandardWebhooksSettings),
    /// A generic HMAC in a named header.
    Hmac(HmacSettings),
    /// A plain shared token in a named header or `Authorization: Bearer`.
    Token(TokenSettings),
    /// Travis CI's RSA-SHA1 `Signature`.
    Travis(TravisSettings),
    /// Amazon SNS (signed by the certificate at `SigningCertURL`).
    Sns(SnsSettings),
}

impl RawVerify {
    /// The scheme's name as written under `verify:` (`forgejo` is read as `gitea`).
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Github(_) => "github",
            Self::Gitlab(_) => "gitlab",
            Self::Gitea(_) => "gitea",
            Self::Bitbucket(_) => "bitbucket",
            Self::Slack(_) => "slack",
            Self::Stripe(_) => "stripe",
            Self::StandardWebhooks(_) => "standard_webhooks",
            Self::Hmac(_) => "hmac",
            Self::Token(_) => "token",
            Self::Travis(_) => "travis",
            Self::Sns(_) => "sns",
        }
    }

    /// The files this scheme reads its shared secrets from, each with its key path below
    /// `verify.<scheme>` (`secret_file`, `secrets[1].file`). Public keys are not secrets.
    pub fn secret_files(&self) -> Vec<(String, &Path)> {
        let sources = match self {
            Self::Github(s) => s.sources(),
            Self::Gitlab(s) => s.sources(),
            Self::Gitea(s) => s.sources(),
            Self::Bitbucket(s) => s.sources(),
            Self::Slack(s) => s.sources(),
            Self::Stripe(s) => s.sources(),
            Self::StandardWebhooks(s) => s.sources(),
            Self::Hmac(s) => s.sources(),
            Self::Token(s) => s.sources(),
            Self::Travis(_) | Self::Sns(_) => return Vec::new(),
        };
        let one = sources
            .file
            .map(|f| ("secret_file".to_owned(), f.as_path()));
        let listed = sources
            .list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.file.as_deref().map(|f| (format!("secrets[{i}].file"), f)));
        one.into_iter().chain(listed).collect()
    }

    /// What `saltgate sign` was given on its command line, read as if written under `verify:`
    /// (so a flag the scheme does not take is refused the same way).
    pub fn from_flags(
        scheme: &str,
        secret_file: &Path,
        flags: &[(&str, Option<&str>)],
    ) -> Result<Self, ConfigError> {
        let mut settings = serde_yaml::Mapping::new();
        settings.insert(
            "secret_file".into(),
            secret_file.to_string_lossy().into_owned().into(),
        );
        for (name, value) in flags {
            if let Some(value) = value {
                settings.insert((*name).into(), (*value).into());
            }
        }
        let mut doc = serde_yaml::Mapping::new();
        doc.insert(scheme.into(), settings.into());
        #[derive(Deserialize)]
        struct Flags {
            #[serde(with = "serde_yaml::with::singleton_map")]
            verify: RawVerify,
        }
        let mut root = serde_yaml::Mapping::new();
        root.insert("verify".into(), doc.into());
        super::parse_at::<Flags>(serde_yaml::Value::Mapping(root), None).map(|f| f.verify)
    }
}

/// Declares a scheme's settings: the secret sources every shared-secret scheme takes, then the
/// scheme's own keys. Unknown keys are refused.
macro_rules! secret_scheme {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// A file holding the secret (surrounding whitespace ignored).
            pub secret_file: Option<PathBuf>,
            /// An environment variable holding the secret.
            pub secret_env: Option<String>,
            /// Several secrets, for rotation: `[{file: ..}, {env: ..}]`.
            pub secrets: Vec<RawSecret>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            fn sources(&self) -> SecretSources<'_> {
                SecretSources {
                    file: self.secret_file.as_ref(),
                    env: self.secret_env.as_ref(),
                    list: &self.secrets,
                }
            }
        }
    };
}

secret_scheme! {
    /// `verify: {github: ...}`.
    GithubSettings {
        /// Also accept the legacy `X-Hub-Signature` (SHA-1).
        legacy_sha1: bool,
    }
}

secret_scheme! {
    /// `verify: {gitlab: ...}`: the secret is the `X-Gitlab-Token`.
    GitlabSettings {}
}

secret_scheme! {
    /// `verify: {gitea: ...}` (or `forgejo`).
    GiteaSettings {}
}

secret_scheme! {
    /// `verify: {bitbucket: ...}`.
    BitbucketSettings {}
}

secret_scheme! {
    /// `verify: {slack: ...}`.
    SlackSettings {
        /// Accepted clock skew of `X-Slack-Request-Timestamp`, seconds (default 300).
        tolerance_secs: Option<u64>,
    }
}

secret_scheme! {
    /// `verify: {stripe: ...}`.
    StripeSettings {
        /// Accepted clock skew of the signed timestamp, seconds (default 300).
        tolerance_secs: Option<u64>,
    }
}

secret_scheme! {
    /// `verify: {standard_webhooks: ...}`: secrets are `whsec_<base64>`.
    StandardWebhooksSettings {
        /// Accepted clock skew of `webhook-timestamp`, seconds (default 300).
        tolerance_secs: Option<u64>,
    }
}

secret_scheme! {
    /// `verify: {hmac: ...}`: a MAC of the raw body in a header of your choosing.
    HmacSettings {
        /// The header carrying the MAC (required).
        header: Option<String>,
        /// The hash (default `sha256`).
        algorithm: HmacAlgorithm,
        /// How the MAC is written (default `hex`).
        encoding: HmacEncoding,
        /// A literal prefix before the MAC, e.g. `sha256=`.
        prefix: Option<String>,
        /// A header with a delivery id for duplicate detection.
        delivery_header: Option<String>,
        /// Permit `algorithm: sha1`.
        allow_sha1: bool,
    }
}

secret_scheme! {
    /// `verify: {token: ...}`: a shared token compared in constant time.
    TokenSettings {
        /// The header carrying the token (default: `Authorization: Bearer`).
        header: Option<String>,
    }
}

/// The hash of `verify: {hmac: ...}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// SHA-256.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1, only with `allow_sha1: true`.
    Sha1,
}

/// How `verify: {hmac: ...}` MACs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacEncoding {
    /// Lowercase or uppercase hex.
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// `verify: {travis: ...}`: Travis CI signs with its private key; no shared secret.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TravisSettings {
    /// PEM files of Travis CI's public keys (SPKI or PKCS#1).
    pub public_key_files: Vec<PathBuf>,
}

/// `verify: {sns: ...}`: Amazon signs with the certificate at `SigningCertURL`; no shared secret.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnsSettings {
    /// The topic ARNs accepted (exact match; at least one).
    pub topic_arns: Vec<String>,
    /// GET the `SubscribeURL` of a `SubscriptionConfirmation` instead of only firing it.
    pub confirm_subscriptions: bool,
    /// Accepted `Timestamp` age either way, seconds (default 3600).
    pub tolerance_secs: Option<u64>,
    /// Accept certificate and subscribe URLs on `sns.<region>.<suffix>` instead of
    /// `amazonaws.com` / `amazonaws.com.cn`.
    pub cert_host_suffix: Option<String>,
}

/// Where a shared-secret scheme's secrets come from.
struct SecretSources<'a> {
    file: Option<&'a PathBuf>,
    env: Option<&'a String>,
    list: &'a [RawSecret],
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
    /// Whether a Salt token is required on the rest_cherrypy listener (see [`HookRule::auth_on`]).
    pub auth: AuthMode,
    /// Whether the rule says `auth:` itself (otherwise each listener's `webhook_disable_auth`
    /// decides).
    pub auth_set: bool,
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
    /// Whether a Salt token is required on a listener whose block sets `webhook_disable_auth`
    /// to `disable_auth`: the rule's own `auth:` when it has one.
    pub fn auth_on(&self, disable_auth: bool) -> AuthMode {
        match (self.auth_set, disable_auth) {
            (true, _) => self.auth,
            (false, true) => AuthMode::None,
            (false, false) => AuthMode::Token,
        }
    }

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
        let verifier = r
            .verify
            .as_ref()
            .map(|raw| verifier(&format!("{key}.verify"), raw, env))
            .transpose()?;
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
            auth_set: r.auth.is_some(),
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
        auth_set: false,
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
    raw: SecretSources<'_>,
    env: &HashMap<String, String>,
) -> Result<SecretSet, ConfigError> {
    let mut sources: Vec<(String, Option<&PathBuf>, Option<&String>)> = Vec::new();
    if raw.file.is_some() || raw.env.is_some() {
        sources.push((key.to_owned(), raw.file, raw.env));
    }
    for (i, s) in raw.list.iter().enumerate() {
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

/// A timestamp scheme's tolerance.
fn tolerance(secs: Option<u64>) -> Duration {
    Duration::from_secs(secs.unwrap_or(300))
}

/// Builds the verifier `raw` describes. `key` is where it was written
/// (`saltgate.hooks[0].verify`); errors name the key below it (`...verify.hmac.header`).
pub fn verifier(
    key: &str,
    raw: &RawVerify,
    env: &HashMap<String, String>,
) -> Result<Verifier, ConfigError> {
    let key = &format!("{key}.{}", raw.scheme());
    Ok(match raw {
        RawVerify::Github(s) => Verifier::Github(
            github::Github::new(secrets(key, s.sources(), env)?).with_legacy_sha1(s.legacy_sha1),
        ),
        RawVerify::Gitlab(s) => {
            Verifier::Gitlab(gitlab::Gitlab::new(secrets(key, s.sources(), env)?))
        }
        RawVerify::Gitea(s) => Verifier::Gitea(gitea::Gitea::new(secrets(key, s.sources(), env)?)),
        RawVerify::Bitbucket(s) => {
            Verifier::Bitbucket(bitbucket::Bitbucket::new(secrets(key, s.sources(), env)?))
        }
        RawVerify::Slack(s) => Verifier::Slack(slack::Slack::new(
            secrets(key, s.sources(), env)?,
            tolerance(s.tolerance_secs),
        )),
        RawVerify::Stripe(s) => Verifier::Stripe(stripe::Stripe::new(
            secrets(key, s.sources(), env)?,
            tolerance(s.tolerance_secs),
        )),
        RawVerify::StandardWebhooks(s) => Verifier::StandardWebhooks(
            standard_webhooks::StandardWebhooks::new(
                &secrets(key, s.sources(), env)?,
                tolerance(s.tolerance_secs),
            )
            .map_err(|_| ConfigError::invalid(key, "the secret is not whsec_<base64>"))?,
        ),
        RawVerify::Hmac(s) => {
            let mac_header = header(&format!("{key}.header"), s.header.as_ref())?
                .ok_or_else(|| ConfigError::invalid(format!("{key}.header"), "is required"))?;
            let algorithm = match s.algorithm {
                HmacAlgorithm::Sha256 => HashAlg::Sha256,
                HmacAlgorithm::Sha512 => HashAlg::Sha512,
                HmacAlgorithm::Sha1 => HashAlg::Sha1,
            };
            let encoding = match s.encoding {
                HmacEncoding::Hex => Encoding::Hex,
                HmacEncoding::Base64 => Encoding::Base64,
            };
            Verifier::Hmac(
                GenericHmac::new(GenericHmacConfig {
                    secrets: secrets(key, s.sources(), env)?,
                    header: mac_header,
                    algorithm,
                    encoding,
                    prefix: s.prefix.clone(),
                    delivery_header: header(
                        &format!("{key}.delivery_header"),
                        s.delivery_header.as_ref(),
                    )?,
                    allow_sha1: s.allow_sha1,
                })
                .map_err(|_| {
                    ConfigError::invalid(format!("{key}.algorithm"), "sha1 needs allow_sha1: true")
                })?,
            )
        }
        RawVerify::Token(s) => {
            let source = match header(&format!("{key}.header"), s.header.as_ref())? {
                Some(h) => TokenSource::Header(h),
                None => TokenSource::Bearer,
            };
            Verifier::Token(token::Token::new(secrets(key, s.sources(), env)?, source))
        }
        RawVerify::Travis(s) => {
            if s.public_key_files.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.public_key_files"),
                    "needs Travis CI's public key (PEM)",
                ));
            }
            let mut pems = Vec::new();
            for (i, path) in s.public_key_files.iter().enumerate() {
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
        RawVerify::Sns(s) => {
            let topics_key = format!("{key}.topic_arns");
            let mut v = sns::Sns::new(s.topic_arns.clone())
                .map_err(|e| ConfigError::invalid(&topics_key, e.to_string()))?
                .with_confirm_subscriptions(s.confirm_subscriptions)
                .with_tolerance(Duration::from_secs(
                    s.tolerance_secs.unwrap_or(sns::DEFAULT_TOLERANCE.as_secs()),
                ));
            if let Some(suffix) = &s.cert_host_suffix {
                v = v.with_cert_host_suffix(suffix).map_err(|e| {
                    ConfigError::invalid(format!("{key}.cert_host_suffix"), e.to_string())
                })?;
            }
            Verifier::Sns(v)
        }
    })
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

    /// Reads `yaml` as the `saltgate.hooks` list, naming keys as the loader does.
    fn rules(yaml: &str) -> Result<Vec<RawHook>, ConfigError> {
        super::super::parse_at(serde_yaml::from_str(yaml).unwrap(), Some("saltgate.hooks"))
    }

    fn sns(yaml: &str) -> Result<Verifier, ConfigError> {
        let raw: Vec<RawHook> = rules(&format!("[{{path: a, verify: {{sns: {yaml}}}}}]"))?;
        verifier(
            "saltgate.hooks[0].verify",
            raw[0].verify.as_ref().unwrap(),
            &HashMap::new(),
        )
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
        assert!(err("{topic_arn: x}").contains("unknown field `topic_arn`"));
    }

    /// Every scheme refuses a key that belongs to another one, naming the key, the scheme and
    /// the rule.
    #[test]
    fn each_scheme_refuses_keys_it_does_not_take() {
        for (scheme, settings, foreign) in [
            ("github", "secret_env: S", "tolerance_secs: 300"),
            ("gitlab", "secret_env: S", "tolerance_secs: 300"),
            ("gitea", "secret_env: S", "legacy_sha1: true"),
            ("forgejo", "secret_env: S", "header: X-Sig"),
            ("bitbucket", "secret_env: S", "algorithm: sha512"),
            ("slack", "secret_env: S", "header: X-Sig"),
            ("stripe", "secret_env: S", "legacy_sha1: true"),
            ("standard_webhooks", "secret_env: S", "prefix: v1,"),
            (
                "hmac",
                "{secret_env: S, header: X-Sig}",
                "tolerance_secs: 300",
            ),
            ("token", "secret_env: S", "algorithm: sha256"),
            ("travis", "public_key_files: [/k.pem]", "secret_env: S"),
            (
                "sns",
                "topic_arns: ['arn:aws:sns:eu-west-1:1:a']",
                "secret_file: /s",
            ),
        ] {
            let settings = settings.trim_matches(['{', '}']);
            let yaml =
                format!("- path: p/{scheme}\n  verify: {{{scheme}: {{{settings}, {foreign}}}}}\n");
            let err = rules(&yaml).unwrap_err();
            let field = foreign.split(':').next().unwrap();
            assert_eq!(
                err.key(),
                Some(format!("saltgate.hooks[0].verify.{scheme}.{field}").as_str()),
                "{scheme}: {err}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("unknown field `{field}`")),
                "{scheme}: {err}"
            );
            // The same settings without the foreign key are accepted.
            let yaml = format!("- path: p\n  verify: {{{scheme}: {{{settings}}}}}\n");
            let raw = rules(&yaml).unwrap_or_else(|e| panic!("{scheme}: {e}"));
            let expected = if scheme == "forgejo" { "gitea" } else { scheme };
            assert_eq!(raw[0].verify.as_ref().unwrap().scheme(), expected);
        }
    }

    #[test]
    fn verify_names_exactly_one_known_scheme() {
        let err = rules("- {path: a, verify: {carrier_pigeon: {secret_env: S}}}\n").unwrap_err();
        assert_eq!(
            err.key(),
            Some("saltgate.hooks[0].verify.carrier_pigeon"),
            "{err}"
        );
        assert!(
            err.to_string().contains("unknown variant `carrier_pigeon`"),
            "{err}"
        );
        let err =
            rules("- {path: a, verify: {github: {secret_env: S}, gitlab: {secret_env: S}}}\n")
                .unwrap_err();
        assert_eq!(err.key(), Some("saltgate.hooks[0].verify"), "{err}");
        let err =
            rules("- {path: a, verify: {hmac: {secret_env: S, header: X, algorithm: md5}}}\n")
                .unwrap_err();
        assert_eq!(
            err.key(),
            Some("saltgate.hooks[0].verify.hmac.algorithm"),
            "{err}"
        );
        assert!(
            err.to_string().contains("`sha256`, `sha512`, `sha1`"),
            "{err}"
        );
    }

    #[test]
    fn sign_flags_are_read_like_settings() {
        let file = Path::new("/s");
        let raw =
            RawVerify::from_flags("hmac", file, &[("header", Some("X-Sig")), ("prefix", None)])
                .unwrap();
        assert_eq!(raw.scheme(), "hmac");
        let err = RawVerify::from_flags("github", file, &[("header", Some("X-Sig"))]).unwrap_err();
        assert!(err.to_string().contains("unknown field `header`"), "{err}");
        let err = RawVerify::from_flags("pigeon", file, &[]).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `pigeon`"),
            "{err}"
        );
    }
}
