//! Webhook signature and shared-secret verification, one file per scheme.
//!
//! Defends against forged deliveries: every scheme is checked over the exact raw body bytes,
//! before any parsing or normalising, with constant-time comparisons (`Mac::verify_slice` for
//! HMACs, `subtle` for tokens). Each failure is its own [`VerifyError`] variant so the HTTP
//! layer can log the cause while answering with one fixed message. Timestamps (Slack, Stripe,
//! Standard Webhooks) are checked against a `now_unix` passed in, never read from the clock.
//!
//! No axum types: the inputs are an [`http::HeaderMap`], the body bytes and the time.

pub mod bitbucket;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod hmac;
pub mod slack;
pub mod sns;
pub mod standard_webhooks;
pub mod stripe;
pub mod token;
pub mod travis;

use ::hmac::digest::KeyInit;
use ::hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::replay::Stale;
use super::secret::{Secret, SecretSet};

/// Longest delivery id accepted (GitHub, GitLab and Standard Webhooks ids are far shorter).
pub const MAX_DELIVERY_ID_LEN: usize = 256;

/// Why a delivery was refused. The HTTP layer answers every variant with 401 and one fixed
/// message; the variant goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("missing header {0}")]
    MissingHeader(HeaderName),
    /// A header is present but not in the scheme's format (bad encoding, wrong length).
    #[error("malformed header {0}")]
    MalformedHeader(HeaderName),
    /// A header that must appear once appears several times.
    #[error("header {0} given more than once")]
    DuplicateHeader(HeaderName),
    /// The header names another algorithm, version or auth scheme than the one configured.
    #[error("unexpected algorithm or scheme in header {0}")]
    WrongAlgorithm(HeaderName),
    /// Well-formed, but no configured secret or key produces it.
    #[error("signature or token does not match")]
    Mismatch,
    /// The signature is valid but its timestamp is outside the window.
    #[error("stale timestamp: {0}")]
    StaleTimestamp(#[from] Stale),
    /// The body lacks what the scheme signs (Travis: one `payload` form field).
    #[error("malformed body: {0}")]
    MalformedBody(&'static str),
    /// SNS: `SigningCertURL`, `SubscribeURL` or `UnsubscribeURL` (the named field) is not an
    /// `https://sns.<region>.amazonaws.com` URL of the accepted shape.
    #[error("untrusted {0}")]
    UntrustedUrl(&'static str),
    /// SNS: the `TopicArn` is not one of the rule's.
    #[error("topic not allowed for this hook")]
    TopicNotAllowed,
    /// SNS: `SignatureVersion` is neither 1 nor 2.
    #[error("unsupported signature version")]
    UnsupportedSignatureVersion,
    /// SNS: the signing certificate is unusable (unparseable, expired, not RSA, untrusted).
    #[error("bad signing certificate: {0}")]
    BadCertificate(&'static str),
    /// SNS: the signing certificate could not be fetched (network, status, size); the sender
    /// is not at fault, so the caller may answer 503 and let SNS retry.
    #[error("signing certificate unavailable")]
    CertUnavailable,
    /// SNS was verified through the synchronous entry; it needs its certificate, so use
    /// `api::hook::sns::verify_sns`.
    #[error("sns needs its signing certificate: use the async sns path")]
    NeedsCertificate,
}

/// What a successful verification learned, for the replay guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The sender's delivery id, when the scheme has one and it was sent.
    pub delivery_id: Option<String>,
    /// The signed timestamp (unix seconds), when the scheme has one.
    pub timestamp: Option<i64>,
}

/// A scheme cannot produce a signature from the configured material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Travis signs with its private key; we only hold the public key.
    #[error("scheme {0} is signed with a private key saltgate does not hold")]
    NeedsPrivateKey(&'static str),
    /// Timestamped schemes carry a non-negative Unix time of at most 18 digits, the only form
    /// their verifiers accept; a signature for any other time could never verify.
    #[error("time {0} cannot be carried by a signed timestamp (0 to 18 digits)")]
    Timestamp(i64),
}

/// Largest Unix time a signed timestamp header may carry (18 digits, as [`parse_unix`] reads).
const MAX_SIGNED_UNIX: i64 = 999_999_999_999_999_999;

/// A configured verifier for one hook rule.
#[derive(Debug, Clone)]
pub enum Verifier {
    /// GitHub `X-Hub-Signature-256`.
    Github(github::Github),
    /// GitLab `X-Gitlab-Token`.
    Gitlab(gitlab::Gitlab),
    /// Gitea / Forgejo `X-Gitea-Signature` / `X-Forgejo-Signature`.
    Gitea(gitea::Gitea),
    /// Bitbucket `X-Hub-Signature`.
    Bitbucket(bitbucket::Bitbucket),
    /// Slack `X-Slack-Signature` v0.
    Slack(slack::Slack),
    /// Stripe `Stripe-Signature`.
    Stripe(stripe::Stripe),
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks(standard_webhooks::StandardWebhooks),
    /// Generic HMAC in a named header.
    Hmac(hmac::GenericHmac),
    /// Plain shared token in a named header or `Authorization: Bearer`.
    Token(token::Token),
    /// Travis CI RSA-SHA1 `Signature`.
    Travis(travis::Travis),
    /// Amazon SNS: signature in the JSON body, by the certificate at `SigningCertURL`. Verify
    /// with `api::hook::sns::verify_sns`; [`Verifier::verify`] refuses it.
    Sns(sns::Sns),
}

impl Verifier {
    /// Checks one delivery: `body` is the exact raw request body, `now_unix` the current time.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyError> {
        match self {
            Verifier::Github(v) => v.verify(headers, body),
            Verifier::Gitlab(v) => v.verify(headers),
            Verifier::Gitea(v) => v.verify(headers, body),
            Verifier::Bitbucket(v) => v.verify(headers, body),
            Verifier::Slack(v) => v.verify(headers, body, now_unix),
            Verifier::Stripe(v) => v.verify(headers, body, now_unix),
            Verifier::StandardWebhooks(v) => v.verify(headers, body, now_unix),
            Verifier::Hmac(v) => v.verify(headers, body),
            Verifier::Token(v) => v.verify(headers),
            Verifier::Travis(v) => v.verify(headers, body),
            Verifier::Sns(_) => Err(VerifyError::NeedsCertificate),
        }
    }

    /// The headers carrying signatures or tokens for this scheme, to redact from events.
    pub fn credential_headers(&self) -> Vec<HeaderName> {
        match self {
            Verifier::Github(_) => vec![github::SIGNATURE_256, github::SIGNATURE_SHA1],
            Verifier::Gitlab(_) => vec![gitlab::TOKEN],
            Verifier::Gitea(_) => gitea::CREDENTIAL_HEADERS.to_vec(),
            Verifier::Bitbucket(_) => vec![bitbucket::SIGNATURE],
            Verifier::Slack(_) => vec![slack::SIGNATURE],
            Verifier::Stripe(_) => vec![stripe::SIGNATURE],
            Verifier::StandardWebhooks(_) => {
                vec![
                    standard_webhooks::SIGNATURE,
                    standard_webhooks::SVIX_SIGNATURE,
                ]
            }
            Verifier::Hmac(v) => vec![v.header().clone()],
            Verifier::Token(v) => vec![v.header()],
            Verifier::Travis(_) => vec![travis::SIGNATURE],
            // The signature is in the body; SNS sends no credential headers.
            Verifier::Sns(_) => vec![],
        }
    }

    /// The scheme's name, as in the config (`verify: {github: ...}`) and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Verifier::Github(_) => "github",
            Verifier::Gitlab(_) => "gitlab",
            Verifier::Gitea(_) => "gitea",
            Verifier::Bitbucket(_) => "bitbucket",
            Verifier::Slack(_) => "slack",
            Verifier::Stripe(_) => "stripe",
            Verifier::StandardWebhooks(_) => "standard_webhooks",
            Verifier::Hmac(_) => "hmac",
            Verifier::Token(_) => "token",
            Verifier::Travis(_) => "travis",
            Verifier::Sns(_) => "sns",
        }
    }

    /// Headers that make `body` pass [`Verifier::verify`] at `now_unix`, signed with the primary
    /// secret: for `saltgate sign` and tests. Standard Webhooks gets a `webhook-id` derived
    /// from the body and time.
    pub fn sign(&self, body: &[u8], now_unix: i64) -> Result<Vec<(HeaderName, String)>, SignError> {
        let timestamped = matches!(
            self,
            Verifier::Slack(_) | Verifier::Stripe(_) | Verifier::StandardWebhooks(_)
        );
        if timestamped && !(0..=MAX_SIGNED_UNIX).contains(&now_unix) {
            return Err(SignError::Timestamp(now_unix));
        }
        Ok(match self {
            Verifier::Github(v) => github::sign(v.secrets().primary(), body),
            Verifier::Gitlab(v) => gitlab::sign(v.secrets().primary()),
            Verifier::Gitea(v) => gitea::sign(v.secrets().primary(), body),
            Verifier::Bitbucket(v) => bitbucket::sign(v.secrets().primary(), body),
            Verifier::Slack(v) => slack::sign(v.secrets().primary(), body, now_unix),
            Verifier::Stripe(v) => stripe::sign(v.secrets().primary(), body, now_unix),
            Verifier::StandardWebhooks(v) => {
                let id = standard_webhooks::derived_id(body, now_unix);
                standard_webhooks::sign(v.keys().primary(), &id, body, now_unix)
            }
            Verifier::Hmac(v) => v.sign(body),
            Verifier::Token(v) => v.sign(),
            Verifier::Travis(_) => return Err(SignError::NeedsPrivateKey("travis")),
            Verifier::Sns(_) => return Err(SignError::NeedsPrivateKey("sns")),
        })
    }
}

/// Hash functions for HMAC schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// HMAC-SHA1: only where a provider still requires it and the config opts in.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl HashAlg {
    /// Length of the MAC in bytes.
    pub fn len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
        }
    }

    /// Always false; for clippy's `len_without_is_empty`.
    pub fn is_empty(self) -> bool {
        false
    }

    /// HMAC of the concatenation of `parts` under `key`.
    pub fn mac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            HashAlg::Sha1 => mac_of::<Hmac<sha1::Sha1>>(key, parts),
            HashAlg::Sha256 => mac_of::<Hmac<Sha256>>(key, parts),
            HashAlg::Sha512 => mac_of::<Hmac<Sha512>>(key, parts),
        }
    }

    /// Constant-time check of `tag` against the HMAC of `parts` under `key`.
    pub fn verify(self, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        match self {
            HashAlg::Sha1 => verify_of::<Hmac<sha1::Sha1>>(key, parts, tag),
            HashAlg::Sha256 => verify_of::<Hmac<Sha256>>(key, parts, tag),
            HashAlg::Sha512 => verify_of::<Hmac<Sha512>>(key, parts, tag),
        }
    }
}

/// HMAC accepts keys of any length, so `None` never happens in practice; were it to, signing
/// yields an empty MAC and verification fails, never passes.
fn keyed<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<M> {
    let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac)
}

fn mac_of<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    keyed::<M>(key, parts).map_or_else(Vec::new, |m| m.finalize().into_bytes().to_vec())
}

fn verify_of<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    keyed::<M>(key, parts).is_some_and(|m| m.verify_slice(tag).is_ok())
}

/// The single value of `name`: `None` when absent, an error when repeated or not visible ASCII.
pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(VerifyError::DuplicateHeader(name.clone()));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| VerifyError::MalformedHeader(name.clone()))
}

/// Like [`single_header`], absent is [`VerifyError::MissingHeader`].
pub(crate) fn required_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<&'a str, VerifyError> {
    single_header(headers, name)?.ok_or_else(|| VerifyError::MissingHeader(name.clone()))
}

/// An optional delivery id header, bounded in length and non-empty.
pub(crate) fn delivery_id(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<String>, VerifyError> {
    match single_header(headers, name)? {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > MAX_DELIVERY_ID_LEN => {
            Err(VerifyError::MalformedHeader(name.clone()))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// A unix timestamp header: ASCII digits only (no sign, no spaces), at most 18 of them.
pub(crate) fn parse_unix(value: &str, name: &HeaderName) -> Result<i64, VerifyError> {
    let ok = !value.is_empty() && value.len() <= 18 && value.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| value.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| VerifyError::MalformedHeader(name.clone()))
}

/// Lower-case hex MAC of exactly `alg.len()` bytes. Upper case is refused so that every
/// accepted signature has exactly one spelling (all providers here send lower case).
pub(crate) fn decode_hex_tag(
    value: &str,
    alg: HashAlg,
    name: &HeaderName,
) -> Result<Vec<u8>, VerifyError> {
    if value.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(VerifyError::MalformedHeader(name.clone()));
    }
    match hex::decode(value) {
        Ok(tag) if tag.len() == alg.len() => Ok(tag),
        _ => Err(VerifyError::MalformedHeader(name.clone())),
    }
}

/// The common `<prefix><hex mac>` header check (GitHub, Bitbucket, Gitea, Slack): a missing
/// prefix is [`VerifyError::WrongAlgorithm`], bad hex or a truncated MAC is
/// [`VerifyError::MalformedHeader`], no matching secret is [`VerifyError::Mismatch`].
pub(crate) fn check_prefixed_hex(
    value: &str,
    prefix: &str,
    alg: HashAlg,
    name: &HeaderName,
    secrets: &SecretSet,
    parts: &[&[u8]],
) -> Result<(), VerifyError> {
    let hex = value
        .strip_prefix(prefix)
        .ok_or_else(|| VerifyError::WrongAlgorithm(name.clone()))?;
    let tag = decode_hex_tag(hex, alg, name)?;
    if secrets.any(|s| alg.verify(s.expose(), parts, &tag)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Constant-time token comparison. Both sides are hashed first so neither the content nor the
/// length of the secret shows in the timing.
pub(crate) fn token_matches(secret: &Secret, presented: &[u8]) -> bool {
    let a = Sha256::digest(secret.expose());
    let b = Sha256::digest(presented);
    a.ct_eq(&b).into()
}

/// Builds a header name known to be valid at compile time.
pub(crate) const fn name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

#[cfg(test)]
pub(crate) mod test_support {
    use http::{HeaderMap, HeaderName, HeaderValue};

    use crate::security::secret::{Secret, SecretSet};

    pub(crate) fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).unwrap()
    }

    pub(crate) fn secrets(list: &[&str]) -> SecretSet {
        SecretSet::new(list.iter().map(|s| secret(s)).collect()).unwrap()
    }

    pub(crate) fn headers(pairs: &[(HeaderName, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    pub(crate) fn with(mut map: HeaderMap, name: &HeaderName, value: &str) -> HeaderMap {
        map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        map
    }

    pub(crate) fn without(mut map: HeaderMap, name: &HeaderName) -> HeaderMap {
        map.remove(name);
        map
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;
    use proptest::prelude::*;

    use super::test_support::*;
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn hmac_family() -> Vec<Verifier> {
        let s = || secrets(&["primary-secret", "old-secret"]);
        let whsec = || {
            standard_webhooks::StandardWebhooks::new(
                &secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
                standard_webhooks::DEFAULT_TOLERANCE,
            )
            .unwrap()
        };
        let generic = |algorithm, encoding, prefix: Option<&str>| {
            hmac::GenericHmac::new(hmac::GenericHmacConfig {
                secrets: s(),
                header: name("x-signature"),
                algorithm,
                encoding,
                prefix: prefix.map(str::to_owned),
                delivery_header: None,
                allow_sha1: false,
            })
            .unwrap()
        };
        vec![
            Verifier::Github(github::Github::new(s())),
            Verifier::Gitea(gitea::Gitea::new(s())),
            Verifier::Bitbucket(bitbucket::Bitbucket::new(s())),
            Verifier::Slack(slack::Slack::new(s(), Duration::from_secs(300))),
            Verifier::Stripe(stripe::Stripe::new(s(), Duration::from_secs(300))),
            Verifier::StandardWebhooks(whsec()),
            Verifier::Hmac(generic(
                HashAlg::Sha256,
                hmac::Encoding::Hex,
                Some("sha256="),
            )),
            Verifier::Hmac(generic(HashAlg::Sha512, hmac::Encoding::Base64, None)),
        ]
    }

    /// Every signature `sign` hands out verifies at the same time, including at the edges of
    /// what a timestamp header can carry; times no header can carry are refused up front.
    #[test]
    fn own_signatures_verify_at_every_representable_time() {
        for v in hmac_family() {
            for now in [0, 1, NOW, MAX_SIGNED_UNIX] {
                let map = headers(&v.sign(b"{}", now).unwrap());
                assert!(v.verify(&map, b"{}", now).is_ok(), "{} at {now}", v.name());
            }
            let timestamped = matches!(
                v,
                Verifier::Slack(_) | Verifier::Stripe(_) | Verifier::StandardWebhooks(_)
            );
            for now in [-1, i64::MIN, MAX_SIGNED_UNIX + 1, i64::MAX] {
                let got = v.sign(b"{}", now);
                if timestamped {
                    assert_eq!(got, Err(SignError::Timestamp(now)), "{}", v.name());
                } else {
                    assert!(got.is_ok(), "{}", v.name());
                }
            }
        }
    }

    #[test]
    fn names_and_credential_headers() {
        for v in hmac_family() {
            let signed = v.sign(b"{}", NOW).unwrap();
            let creds = v.credential_headers();
            assert!(
                signed.iter().any(|(n, _)| creds.contains(n)),
                "{}: signed headers {signed:?} not all redacted",
                v.name()
            );
        }
    }

    #[test]
    fn duplicate_signature_header_is_refused() {
        let v = Verifier::Github(github::Github::new(secrets(&["s"])));
        let signed = v.sign(b"x", NOW).unwrap();
        let mut map = headers(&signed);
        let value = map.get(&github::SIGNATURE_256).unwrap().clone();
        map.append(github::SIGNATURE_256, value);
        assert!(matches!(
            v.verify(&map, b"x", NOW),
            Err(VerifyError::DuplicateHeader(_))
        ));
    }

    #[test]
    fn travis_cannot_sign() {
        let v = Verifier::Token(token::Token::new(
            secrets(&["t"]),
            token::TokenSource::Bearer,
        ));
        assert!(v.sign(b"", NOW).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn sign_then_verify_and_single_byte_flips_fail(
            body in proptest::collection::vec(any::<u8>(), 1..128),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            for v in hmac_family() {
                let signed = v.sign(&body, NOW).unwrap();
                let map = headers(&signed);
                prop_assert!(v.verify(&map, &body, NOW).is_ok(), "{}", v.name());

                let mut tampered = body.clone();
                let i = index.index(tampered.len());
                tampered[i] ^= flip;
                prop_assert!(
                    matches!(v.verify(&map, &tampered, NOW), Err(VerifyError::Mismatch)),
                    "{}: body flip accepted", v.name()
                );

                for (name, value) in &signed {
                    if !v.credential_headers().contains(name) {
                        continue;
                    }
                    let mut bytes = value.clone().into_bytes();
                    let i = index.index(bytes.len());
                    bytes[i] ^= flip;
                    let Ok(hv) = HeaderValue::from_bytes(&bytes) else { continue };
                    let mut map = map.clone();
                    map.insert(name.clone(), hv);
                    prop_assert!(
                        v.verify(&map, &body, NOW).is_err(),
                        "{}: signature flip accepted", v.name()
                    );
                }
            }
        }
    }
}
