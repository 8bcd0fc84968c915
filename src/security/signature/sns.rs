//! Amazon SNS HTTP(S) subscriptions: the JSON body carries its own RSA signature
//! (`SignatureVersion` 1: PKCS#1 v1.5 SHA-1, 2: SHA-256) over a canonical string of named
//! fields, made with the key of the certificate at `SigningCertURL`.
//!
//! Defends against forged notifications and forged subscription confirmations. The signature is
//! inside the body, so this scheme parses (bounded, serde, duplicate keys refused) before
//! verifying; the canonical string is rebuilt from the decoded fields exactly as AWS documents
//! ("Verifying the signatures of Amazon SNS messages"). The certificate URL is the trust
//! decision: only `https://sns.<region>.amazonaws.com[.cn]/….pem` (or `sns.<region>.<suffix>`
//! when configured) is accepted, with no userinfo, no port but 443, no query or fragment, so an
//! attacker cannot point us at a certificate of their own. The same host check applies to
//! `SubscribeURL` / `UnsubscribeURL`, which a caller may GET. The `TopicArn` must be one of the
//! rule's; `Timestamp` must be within the tolerance of `now_unix` (replays of captured messages);
//! `MessageId` is the delivery id for the duplicate guard.
//!
//! The certificate must be inside its validity period at `now_unix`, carry an RSA key of at
//! least [`MIN_KEY_BITS`], and, when trust anchors are configured ([`Sns::with_trust_anchors`]),
//! chain to one of them (rustls-webpki; intermediates taken from the fetched PEM). Without
//! anchors the certificate is trusted because it was fetched over verified TLS from the strictly
//! checked AWS host; that is AWS's own guidance, and SNS serves the leaf alone, so a chain to a
//! public root cannot be built offline.
//!
//! Pure: no network, no clock. Fetching the certificate is `api::hook::sns`'s job.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;

use super::{MAX_DELIVERY_ID_LEN, Verified, VerifyError, name, single_header};
use crate::security::replay::check_timestamp;

/// `x-amz-sns-message-type`: when sent, must equal the body's `Type`.
pub const MESSAGE_TYPE: HeaderName = name("x-amz-sns-message-type");
/// `x-amz-sns-message-id`: when sent, must equal the body's `MessageId`.
pub const MESSAGE_ID: HeaderName = name("x-amz-sns-message-id");
/// `x-amz-sns-topic-arn`: when sent, must equal the body's `TopicArn`.
pub const TOPIC_ARN: HeaderName = name("x-amz-sns-topic-arn");

/// Largest SNS body accepted: 256 KiB of message, JSON-escaped, plus the envelope.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest certificate (PEM or DER) accepted, bytes.
pub const MAX_CERT: usize = 64 * 1024;
/// Most certificates read from one PEM (leaf plus intermediates).
pub const MAX_CHAIN: usize = 4;
/// Smallest RSA modulus accepted, in bits (SNS uses 2048).
pub const MIN_KEY_BITS: usize = 2048;
/// Default `Timestamp` tolerance either side of now.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(3600);
/// Host suffixes accepted after `sns.<region>.` when none is configured.
pub const DEFAULT_HOST_SUFFIXES: [&str; 2] = ["amazonaws.com", "amazonaws.com.cn"];
/// Longest URL accepted in `SigningCertURL`, `SubscribeURL`, `UnsubscribeURL`.
pub const MAX_URL_LEN: usize = 2048;

/// An SNS rule could not be built from its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSns {
    /// `topic_arns` is empty.
    #[error("topic_arns must name at least one topic")]
    NoTopics,
    /// A topic is not an `arn:<partition>:sns:<region>:<account>:<name>` ARN.
    #[error("{0:?} is not an SNS topic ARN")]
    TopicArn(String),
    /// `cert_host_suffix` is not a lower-case DNS suffix with at least two labels.
    #[error("{0:?} is not a DNS suffix like amazonaws.com")]
    HostSuffix(String),
    /// A trust anchor is not a DER certificate usable as a root.
    #[error("trust anchor {0} is not a usable certificate")]
    TrustAnchor(usize),
}

/// The three message types SNS posts to an HTTP(S) endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A published message.
    Notification,
    /// The endpoint was subscribed; GET `SubscribeURL` to confirm.
    SubscriptionConfirmation,
    /// The endpoint was unsubscribed.
    UnsubscribeConfirmation,
}

impl MessageType {
    /// The `Type` value as SNS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    fn parse(s: &str) -> Option<MessageType> {
        [
            MessageType::Notification,
            MessageType::SubscriptionConfirmation,
            MessageType::UnsubscribeConfirmation,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// A URL that passed the strict SNS host check; only [`Sns`] makes one.
#[derive(Clone, PartialEq, Eq)]
pub struct SnsUrl(String);

impl SnsUrl {
    /// The URL, exactly as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SnsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A SubscribeURL carries the confirmation token; logs get the host and path only.
        let shown = self.0.split_once('?').map_or(self.0.as_str(), |(p, _)| p);
        write!(f, "SnsUrl({shown:?})")
    }
}

/// What a verified SNS message told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsVerified {
    /// `MessageId`, for the duplicate-delivery guard.
    pub delivery_id: String,
    /// `Type`.
    pub message_type: MessageType,
    /// `TopicArn` (one of the rule's).
    pub topic_arn: String,
    /// `Timestamp`, unix seconds.
    pub timestamp: i64,
    /// `SubscribeURL` of a `SubscriptionConfirmation` (host-checked), to confirm it by GET.
    pub subscribe_url: Option<SnsUrl>,
}

impl SnsVerified {
    /// The scheme-independent summary the hook pipeline's replay guard uses.
    pub fn verified(&self) -> Verified {
        Verified {
            delivery_id: Some(self.delivery_id.clone()),
            timestamp: Some(self.timestamp),
        }
    }
}

/// Which certificates are trusted beyond the URL check.
#[derive(Debug, Clone)]
enum CertTrust {
    /// The certificate is trusted because it came over TLS from a checked SNS host.
    FetchOrigin,
    /// It must also chain to one of these roots.
    Anchors(Arc<[TrustAnchor<'static>]>),
}

/// SNS verifier config for one hook rule.
#[derive(Debug, Clone)]
pub struct Sns {
    topic_arns: Vec<String>,
    confirm_subscriptions: bool,
    host_suffixes: Vec<String>,
    tolerance: Duration,
    trust: CertTrust,
}

impl Sns {
    /// A rule accepting messages of these topics (exact ARNs), with the default host
    /// suffixes, tolerance and trust, not confirming subscriptions itself.
    pub fn new(topic_arns: Vec<String>) -> Result<Sns, InvalidSns> {
        if topic_arns.is_empty() {
            return Err(InvalidSns::NoTopics);
        }
        if let Some(bad) = topic_arns.iter().find(|a| !is_topic_arn(a)) {
            return Err(InvalidSns::TopicArn(bad.clone()));
        }
        Ok(Sns {
            topic_arns,
            confirm_subscriptions: false,
            host_suffixes: DEFAULT_HOST_SUFFIXES.map(str::to_owned).to_vec(),
            tolerance: DEFAULT_TOLERANCE,
            trust: CertTrust::FetchOrigin,
        })
    }

    /// Whether the hook pipeline should GET `SubscribeURL` itself.
    pub fn with_confirm_subscriptions(mut self, confirm: bool) -> Sns {
        self.confirm_subscriptions = confirm;
        self
    }

    /// Accept `sns.<region>.<suffix>` instead of the AWS defaults (other partitions, test
    /// endpoints).
    pub fn with_cert_host_suffix(mut self, suffix: &str) -> Result<Sns, InvalidSns> {
        let labels: Vec<&str> = suffix.split('.').collect();
        let ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !ok {
            return Err(InvalidSns::HostSuffix(suffix.to_owned()));
        }
        self.host_suffixes = vec![suffix.to_owned()];
        Ok(self)
    }

    /// `Timestamp` tolerance either side of now (default [`DEFAULT_TOLERANCE`]).
    pub fn with_tolerance(mut self, tolerance: Duration) -> Sns {
        self.tolerance = tolerance;
        self
    }

    /// Require the signing certificate to chain to one of these DER roots.
    pub fn with_trust_anchors(mut self, roots: &[&[u8]]) -> Result<Sns, InvalidSns> {
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(i, der)| {
                let der = CertificateDer::from(*der);
                webpki::anchor_from_trusted_cert(&der)
                    .map(|a| a.to_owned())
                    .map_err(|_| InvalidSns::TrustAnchor(i))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.trust = CertTrust::Anchors(anchors.into());
        Ok(self)
    }

    /// Whether the rule confirms subscriptions itself (`confirm_subscriptions: true`).
    pub fn confirm_subscriptions(&self) -> bool {
        self.confirm_subscriptions
    }

    /// The allowed topics.
    pub fn topic_arns(&self) -> &[String] {
        &self.topic_arns
    }

    /// The checked `SigningCertURL` of `body`, for the caller to fetch before
    /// [`Sns::verify`]. Also refuses topics outside the rule, so a stranger's message costs
    /// no fetch.
    pub fn signing_cert_url(&self, body: &[u8]) -> Result<SnsUrl, VerifyError> {
        let msg = parse(body)?;
        self.check_topic(&msg)?;
        self.cert_url(&msg)
    }

    /// Checks one delivery: `body` the raw request body, `cert` the certificate (PEM, possibly
    /// followed by intermediates, or DER) fetched from [`Sns::signing_cert_url`].
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
        cert: &[u8],
    ) -> Result<SnsVerified, VerifyError> {
        let msg = parse(body)?;
        let message_type = MessageType::parse(&msg.kind)
            .ok_or(VerifyError::MalformedBody("unknown SNS message Type"))?;
        header_matches(headers, &MESSAGE_TYPE, &msg.kind)?;
        header_matches(
            headers,
            &TOPIC_ARN,
            msg.topic_arn.as_deref().unwrap_or_default(),
        )?;
        header_matches(
            headers,
            &MESSAGE_ID,
            msg.message_id.as_deref().unwrap_or_default(),
        )?;
        self.check_topic(&msg)?;
        self.cert_url(&msg)?;
        let subscribe_url = match message_type {
            MessageType::Notification => {
                if let Some(url) = msg.unsubscribe_url.as_deref() {
                    self.checked_url(url, UrlKind::Action, "UnsubscribeURL")?;
                }
                None
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                let url = required(
                    msg.subscribe_url.as_deref(),
                    "SNS message lacks SubscribeURL",
                )?;
                let url = self.checked_url(url, UrlKind::Action, "SubscribeURL")?;
                (message_type == MessageType::SubscriptionConfirmation).then_some(url)
            }
        };
        let hash = match msg.signature_version.as_deref() {
            Some("1") => Hash::Sha1,
            Some("2") => Hash::Sha256,
            Some(_) => return Err(VerifyError::UnsupportedSignatureVersion),
            None => {
                return Err(VerifyError::MalformedBody(
                    "SNS message lacks SignatureVersion",
                ));
            }
        };
        let key = self.signing_key(cert, now_unix)?;
        let sig = required(msg.signature.as_deref(), "SNS message lacks Signature")?;
        let sig = STANDARD
            .decode(sig)
            .ok()
            .filter(|s| s.len() == key.size())
            .and_then(|s| Signature::try_from(s.as_slice()).ok())
            .ok_or(VerifyError::MalformedBody(
                "Signature is not base64 of the key size",
            ))?;
        let canonical = canonical(&msg, message_type)?;
        let ok = match hash {
            Hash::Sha1 => VerifyingKey::<sha1::Sha1>::new(key).verify(&canonical, &sig),
            Hash::Sha256 => VerifyingKey::<sha2::Sha256>::new(key).verify(&canonical, &sig),
        };
        ok.map_err(|_| VerifyError::Mismatch)?;

        let timestamp = required(msg.timestamp.as_deref(), "SNS message lacks Timestamp")?;
        let timestamp =
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
                .map_err(|_| VerifyError::MalformedBody("Timestamp is not ISO 8601"))?
                .unix_timestamp();
        check_timestamp(timestamp, now_unix, self.tolerance)?;
        let delivery_id = required(msg.message_id.as_deref(), "SNS message lacks MessageId")?;
        if delivery_id.is_empty() || delivery_id.len() > MAX_DELIVERY_ID_LEN {
            return Err(VerifyError::MalformedBody("MessageId empty or too long"));
        }
        Ok(SnsVerified {
            delivery_id: delivery_id.to_owned(),
            message_type,
            topic_arn: msg.topic_arn.as_deref().unwrap_or_default().to_owned(),
            timestamp,
            subscribe_url,
        })
    }

    fn check_topic(&self, msg: &Message<'_>) -> Result<(), VerifyError> {
        let arn = required(msg.topic_arn.as_deref(), "SNS message lacks TopicArn")?;
        if self.topic_arns.iter().any(|a| a == arn) {
            Ok(())
        } else {
            Err(VerifyError::TopicNotAllowed)
        }
    }

    fn cert_url(&self, msg: &Message<'_>) -> Result<SnsUrl, VerifyError> {
        let url = required(
            msg.signing_cert_url.as_deref(),
            "SNS message lacks SigningCertURL",
        )?;
        self.checked_url(url, UrlKind::Certificate, "SigningCertURL")
    }

    fn checked_url(
        &self,
        url: &str,
        kind: UrlKind,
        field: &'static str,
    ) -> Result<SnsUrl, VerifyError> {
        check_url(url, &self.host_suffixes, kind).ok_or(VerifyError::UntrustedUrl(field))
    }

    /// The leaf's RSA key, after the validity, size and (when configured) chain checks.
    fn signing_key(&self, cert: &[u8], now_unix: i64) -> Result<RsaPublicKey, VerifyError> {
        if cert.len() > MAX_CERT {
            return Err(VerifyError::BadCertificate("larger than 64 KiB"));
        }
        let chain = certificates(cert)?;
        let leaf = chain
            .first()
            .ok_or(VerifyError::BadCertificate("no certificate"))?;
        let parsed = match x509_parser::parse_x509_certificate(leaf) {
            Ok(([], parsed)) => parsed,
            _ => return Err(VerifyError::BadCertificate("not an X.509 certificate")),
        };
        let validity = parsed.validity();
        if now_unix < validity.not_before.timestamp() || now_unix > validity.not_after.timestamp() {
            return Err(VerifyError::BadCertificate("outside its validity period"));
        }
        let key = RsaPublicKey::from_public_key_der(parsed.public_key().raw)
            .map_err(|_| VerifyError::BadCertificate("not an RSA key"))?;
        if key.size() * 8 < MIN_KEY_BITS {
            return Err(VerifyError::BadCertificate("RSA key too short"));
        }
        if let CertTrust::Anchors(anchors) = &self.trust {
            let now = u64::try_from(now_unix)
                .map_err(|_| VerifyError::BadCertificate("time before 1970"))?;
            let ee = webpki::EndEntityCert::try_from(leaf)
                .map_err(|_| VerifyError::BadCertificate("not an X.509 certificate"))?;
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                anchors,
                chain.get(1..).unwrap_or_default(),
                UnixTime::since_unix_epoch(Duration::from_secs(now)),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(|_| VerifyError::BadCertificate("does not chain to a trusted root"))?;
        }
        Ok(key)
    }
}

#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha1,
    Sha256,
}

/// The fields SNS signs, borrowed from the body. Unknown fields (`MessageAttributes`, ...) are
/// ignored; a repeated known field is a parse error, so there is one reading of what was signed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Message<'a> {
    #[serde(rename = "Type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    topic_arn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    signature_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(rename = "SigningCertURL", borrow)]
    signing_cert_url: Option<Cow<'a, str>>,
    #[serde(rename = "SubscribeURL", borrow)]
    subscribe_url: Option<Cow<'a, str>>,
    #[serde(rename = "UnsubscribeURL", borrow)]
    unsubscribe_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
}

/// Field values are JSON-decoded (borrowed when unescaped); SNS signs the decoded text.
fn parse(body: &[u8]) -> Result<Message<'_>, VerifyError> {
    if body.len() > MAX_BODY {
        return Err(VerifyError::MalformedBody("SNS message larger than 1 MiB"));
    }
    serde_json::from_slice(body).map_err(|_| VerifyError::MalformedBody("not an SNS JSON message"))
}

fn required<T>(value: Option<T>, what: &'static str) -> Result<T, VerifyError> {
    value.ok_or(VerifyError::MalformedBody(what))
}

/// The string SNS signs: `Name\nValue\n` for each field, in the documented order.
fn canonical(msg: &Message<'_>, kind: MessageType) -> Result<Vec<u8>, VerifyError> {
    let message = msg.message.as_deref();
    let fields: Vec<(&str, Option<&str>)> = match kind {
        MessageType::Notification => vec![
            ("Message", message),
            ("MessageId", msg.message_id.as_deref()),
            ("Subject", msg.subject.as_deref()),
            ("Timestamp", msg.timestamp.as_deref()),
            ("TopicArn", msg.topic_arn.as_deref()),
            ("Type", Some(&*msg.kind)),
        ],
        MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => vec![
            ("Message", message),
            ("MessageId", msg.message_id.as_deref()),
            ("SubscribeURL", msg.subscribe_url.as_deref()),
            ("Timestamp", msg.timestamp.as_deref()),
            ("Token", msg.token.as_deref()),
            ("TopicArn", msg.topic_arn.as_deref()),
            ("Type", Some(&*msg.kind)),
        ],
    };
    let mut out = Vec::with_capacity(message.map_or(0, str::len) + 512);
    for (field, value) in fields {
        match value {
            // Only Message may span lines; a newline elsewhere could shift field boundaries, so
            // one signed string would read as two messages (e.g. another MessageId).
            Some(v) if field != "Message" && v.contains('\n') => {
                return Err(VerifyError::MalformedBody("newline in a signed field"));
            }
            Some(v) => {
                out.extend_from_slice(field.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(v.as_bytes());
                out.push(b'\n');
            }
            // Subject is signed only when present; everything else is required.
            None if field == "Subject" => {}
            None => {
                return Err(VerifyError::MalformedBody(
                    "SNS message lacks a signed field",
                ));
            }
        }
    }
    Ok(out)
}

/// A header SNS sends alongside the body must agree with it when present.
fn header_matches(headers: &HeaderMap, name: &HeaderName, body: &str) -> Result<(), VerifyError> {
    match single_header(headers, name)? {
        Some(v) if v != body => Err(VerifyError::MalformedHeader(name.clone())),
        _ => Ok(()),
    }
}

/// The PEM certificates in `cert`, or `cert` itself as one DER certificate.
fn certificates(cert: &[u8]) -> Result<Vec<CertificateDer<'static>>, VerifyError> {
    if !cert.starts_with(b"-----") && !cert.windows(11).any(|w| w == b"-----BEGIN ") {
        return Ok(vec![CertificateDer::from(cert.to_vec())]);
    }
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(cert) {
        let item = item.map_err(|_| VerifyError::BadCertificate("malformed PEM"))?;
        if out.len() == MAX_CHAIN {
            return Err(VerifyError::BadCertificate("too many certificates"));
        }
        out.push(item);
    }
    Ok(out)
}

/// What a checked URL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlKind {
    /// `SigningCertURL`: a `.pem` path, no query.
    Certificate,
    /// `SubscribeURL` / `UnsubscribeURL`: an SNS API call, query allowed.
    Action,
}

/// The strict check: `https://sns.<region>.<suffix>[:443]/<path>`, visible ASCII only, no
/// userinfo, fragment, backslash or dot segments; `.pem` path and no query for certificates.
/// Checked on the raw string so no URL normaliser can reinterpret it differently afterwards.
pub(crate) fn check_url(url: &str, suffixes: &[String], kind: UrlKind) -> Option<SnsUrl> {
    if url.len() > MAX_URL_LEN || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let rest = url.strip_prefix("https://")?;
    let split = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(split);
    let host = authority.strip_suffix(":443").unwrap_or(authority);
    if !is_sns_host(host, suffixes) || !path_query.starts_with('/') {
        return None;
    }
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
        && !path.split('/').any(|seg| seg == "." || seg == "..");
    if !path_ok {
        return None;
    }
    let ok = match kind {
        UrlKind::Certificate => {
            query.is_none() && path.len() > "/.pem".len() && path.ends_with(".pem")
        }
        UrlKind::Action => query.is_none_or(|q| {
            q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%=&:+/".contains(&b))
        }),
    };
    ok.then(|| SnsUrl(url.to_owned()))
}

/// `sns.<region>.<suffix>`, region like `us-east-1`, `us-gov-west-1`, `cn-north-1`.
fn is_sns_host(host: &str, suffixes: &[String]) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    suffixes.iter().any(|suffix| {
        rest.strip_suffix(suffix.as_str())
            .and_then(|r| r.strip_suffix('.'))
            .is_some_and(is_region)
    })
}

fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return false;
    };
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 16 && p.bytes().all(|b| b.is_ascii_lowercase()))
        && (1..=2).contains(&last.len())
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// `arn:<partition>:sns:<region>:<12-digit account>:<name>`.
fn is_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(parts.as_slice(), ["arn", partition, "sns", region, account, topic]
        if partition.starts_with("aws")
            && is_region(region)
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !topic.is_empty()
            && topic.len() <= 256
            && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Signs SNS messages with the fixture key, for this module's and `api::hook::sns`'s tests.

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use rsa::RsaPrivateKey;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use serde_json::{Map, Value, json};

    pub(crate) const LEAF_PEM: &[u8] = include_bytes!("../../../tests/fixtures/sns/leaf.pem");
    pub(crate) const LEAF_DER: &[u8] = include_bytes!("../../../tests/fixtures/sns/leaf.der");
    pub(crate) const CA_PEM: &[u8] = include_bytes!("../../../tests/fixtures/sns/ca.pem");
    pub(crate) const ROGUE_PEM: &[u8] = include_bytes!("../../../tests/fixtures/sns/rogue.pem");
    const LEAF_KEY: &str = include_str!("../../../tests/fixtures/sns/leaf.key");

    pub(crate) const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:alerts";
    pub(crate) const CERT_URL: &str =
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem";
    pub(crate) const SUBSCRIBE_URL: &str = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:eu-west-1:123456789012:alerts&Token=2336412f37fb687f5d51e6e2425c464d";
    /// 2027-01-01T00:00:00Z: inside the fixture leaf's validity.
    pub(crate) const NOW: i64 = 1_798_761_600;
    pub(crate) const NOW_ISO: &str = "2027-01-01T00:00:00.000Z";

    /// A message of type `kind` with every field SNS sends, unsigned.
    pub(crate) fn message(kind: &str, version: &str) -> Map<String, Value> {
        let mut m = json!({
            "Type": kind,
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": TOPIC,
            "Message": "{\"alarm\": \"cpu\",\n \"state\": \"ALARM\"}",
            "Timestamp": NOW_ISO,
            "SignatureVersion": version,
            "SigningCertURL": CERT_URL,
        });
        let Value::Object(map) = &mut m else {
            unreachable!()
        };
        if kind == "Notification" {
            map.insert("Subject".into(), json!("CPU alarm"));
            map.insert(
                "UnsubscribeURL".into(),
                json!("https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:eu-west-1:123456789012:alerts:c9135db0"),
            );
            map.insert(
                "MessageAttributes".into(),
                json!({"a": {"Type": "String", "Value": "b"}}),
            );
        } else {
            map.insert("Token".into(), json!("2336412f37fb687f5d51e6e2425c464d"));
            map.insert("SubscribeURL".into(), json!(SUBSCRIBE_URL));
        }
        map.clone()
    }

    /// The canonical string as AWS documents it, built independently of the code under test.
    fn canonical(m: &Map<String, Value>) -> String {
        let keys: &[&str] = if m["Type"] == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        keys.iter()
            .filter_map(|k| {
                m.get(*k)
                    .and_then(Value::as_str)
                    .map(|v| format!("{k}\n{v}\n"))
            })
            .collect()
    }

    /// Signs `m` with the fixture key per its `SignatureVersion` (1: SHA-1, else SHA-256).
    pub(crate) fn sign(mut m: Map<String, Value>) -> Map<String, Value> {
        let key = RsaPrivateKey::from_pkcs8_pem(LEAF_KEY).unwrap();
        let text = canonical(&m);
        let sig = if m["SignatureVersion"] == "1" {
            SigningKey::<sha1::Sha1>::new(key)
                .sign(text.as_bytes())
                .to_vec()
        } else {
            SigningKey::<sha2::Sha256>::new(key)
                .sign(text.as_bytes())
                .to_vec()
        };
        m.insert("Signature".into(), Value::String(STANDARD.encode(sig)));
        m
    }

    pub(crate) fn body(m: &Map<String, Value>) -> Vec<u8> {
        serde_json::to_vec(m).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::super::test_support::headers;
    use super::test_support::*;
    use super::*;
    use crate::security::replay::Stale;

    fn sns() -> Sns {
        Sns::new(vec![TOPIC.to_owned()]).unwrap()
    }

    fn set(mut m: Map<String, Value>, key: &str, value: Value) -> Map<String, Value> {
        m.insert(key.to_owned(), value);
        m
    }

    #[track_caller]
    fn check(
        body: &[u8],
        hdrs: &[(HeaderName, String)],
        now: i64,
        cert: &[u8],
        expected: Result<MessageType, VerifyError>,
    ) {
        let got = sns()
            .verify(&headers(hdrs), body, now, cert)
            .map(|v| v.message_type);
        assert_eq!(got, expected);
    }

    #[test]
    fn each_type_and_version_verifies() {
        for kind in [
            "Notification",
            "SubscriptionConfirmation",
            "UnsubscribeConfirmation",
        ] {
            for version in ["1", "2"] {
                let m = sign(message(kind, version));
                let hdrs = [
                    (MESSAGE_TYPE, kind.to_owned()),
                    (TOPIC_ARN, TOPIC.to_owned()),
                ];
                for cert in [LEAF_PEM, LEAF_DER] {
                    let v = sns().verify(&headers(&hdrs), &body(&m), NOW, cert).unwrap();
                    assert_eq!(v.message_type.as_str(), kind);
                    assert_eq!(v.delivery_id, "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324");
                    assert_eq!(v.topic_arn, TOPIC);
                    assert_eq!(v.timestamp, NOW);
                    assert_eq!(
                        v.verified().delivery_id.as_deref(),
                        Some(v.delivery_id.as_str())
                    );
                    assert_eq!(
                        v.subscribe_url.as_ref().map(SnsUrl::as_str),
                        (kind == "SubscriptionConfirmation").then_some(SUBSCRIBE_URL),
                    );
                }
            }
        }
    }

    #[test]
    fn notification_without_subject_verifies() {
        let mut m = message("Notification", "2");
        m.remove("Subject");
        check(
            &body(&sign(m.clone())),
            &[],
            NOW,
            LEAF_PEM,
            Ok(MessageType::Notification),
        );
        // null is absent too, as the AWS SDK validators treat it
        let m = set(m, "Subject", Value::Null);
        check(
            &body(&sign(m)),
            &[],
            NOW,
            LEAF_PEM,
            Ok(MessageType::Notification),
        );
    }

    #[test]
    fn signature_failures() {
        let m = sign(message("Notification", "2"));
        // tampered Message, Subject, and a signature made over another message
        for (key, value) in [
            ("Message", json!("{}")),
            ("Subject", json!("other")),
            ("MessageId", json!("x")),
        ] {
            check(
                &body(&set(m.clone(), key, value)),
                &[],
                NOW,
                LEAF_PEM,
                Err(VerifyError::Mismatch),
            );
        }
        let other = sign(set(message("Notification", "2"), "Message", json!("other")));
        check(
            &body(&set(m.clone(), "Signature", other["Signature"].clone())),
            &[],
            NOW,
            LEAF_PEM,
            Err(VerifyError::Mismatch),
        );
        // v1 signature presented as v2
        let v1 = sign(message("Notification", "1"));
        check(
            &body(&set(v1, "SignatureVersion", json!("2"))),
            &[],
            NOW,
            LEAF_PEM,
            Err(VerifyError::Mismatch),
        );
        // truncated / not base64
        let sig = m["Signature"].as_str().unwrap().to_owned();
        for bad in [&sig[..sig.len() - 8], "not base64!"] {
            check(
                &body(&set(m.clone(), "Signature", json!(bad))),
                &[],
                NOW,
                LEAF_PEM,
                Err(VerifyError::MalformedBody(
                    "Signature is not base64 of the key size",
                )),
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_input_never_panics_and_accepted_urls_stay_on_sns(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            tail in "[a-z0-9./@:?#%\\\\-]{0,40}",
        ) {
            let _ = sns().verify(&HeaderMap::new(), &bytes, NOW, &bytes);
            let suffixes = [String::from("amazonaws.com")];
            for url in [format!("https://sns.us-east-1.amazonaws.com{tail}"), format!("https://sns.{tail}")] {
                for kind in [UrlKind::Certificate, UrlKind::Action] {
                    if let Some(ok) = check_url(&url, &suffixes, kind) {
                        let rest = &ok.as_str()["https://".len()..];
                        let host = rest.split(['/', '?']).next().unwrap_or_default();
                        proptest::prop_assert!(
                            host == "sns.us-east-1.amazonaws.com" || host == "sns.us-east-1.amazonaws.com:443",
                            "{url}"
                        );
                        proptest::prop_assert!(!ok.as_str().contains(['@', '#', '\\']));
                    }
                }
            }
        }
    }

    #[test]
    fn only_message_may_hold_newlines() {
        // "Message\nx\nMessageId\nA\nSubject\n..." must not re-split into another MessageId
        for (key, value) in [
            ("MessageId", "a\nSubject\nb"),
            ("Subject", "s\nt"),
            ("Token", "t\n"),
        ] {
            let kind = if key == "Token" {
                "SubscriptionConfirmation"
            } else {
                "Notification"
            };
            let m = sign(set(message(kind, "2"), key, json!(value)));
            check(
                &body(&m),
                &[],
                NOW,
                LEAF_PEM,
                Err(VerifyError::MalformedBody("newline in a signed field")),
            );
        }
    }

    #[test]
    fn signature_version_must_be_1_or_2() {
        for version in [json!("3"), json!("0"), json!(""), json!("2 ")] {
            let m = set(
                sign(message("Notification", "2")),
                "SignatureVersion",
                version,
            );
            check(
                &body(&m),
                &[],
                NOW,
                LEAF_PEM,
                Err(VerifyError::UnsupportedSignatureVersion),
            );
        }
        let mut m = sign(message("Notification", "2"));
        m.remove("SignatureVersion");
        check(
            &body(&m),
            &[],
            NOW,
            LEAF_PEM,
            Err(VerifyError::MalformedBody(
                "SNS message lacks SignatureVersion",
            )),
        );
    }

    #[test]
    fn topic_must_be_allowed() {
        let m = sign(set(
            message("Notification", "2"),
            "TopicArn",
            json!("arn:aws:sns:eu-west-1:123456789012:other"),
        ));
        check(
            &body(&m),
            &[],
            NOW,
            LEAF_PEM,
            Err(VerifyError::TopicNotAllowed),
        );
        assert_eq!(
            sns().signing_cert_url(&body(&m)),
            Err(VerifyError::TopicNotAllowed)
        );
    }

    #[test]
    fn timestamp_window() {
        let m = body(&sign(message("Notification", "2")));
        check(&m, &[], NOW + 3600, LEAF_PEM, Ok(MessageType::Notification));
        check(
            &m,
            &[],
            NOW + 3601,
            LEAF_PEM,
            Err(VerifyError::StaleTimestamp(Stale::TooOld {
                age_secs: 3601,
            })),
        );
        check(
            &m,
            &[],
            NOW - 3601,
            LEAF_PEM,
            Err(VerifyError::StaleTimestamp(Stale::InFuture {
                ahead_secs: 3601,
            })),
        );
        let m = sign(set(
            message("Notification", "2"),
            "Timestamp",
            json!("yesterday"),
        ));
        check(
            &body(&m),
            &[],
            NOW,
            LEAF_PEM,
            Err(VerifyError::MalformedBody("Timestamp is not ISO 8601")),
        );
    }

    #[test]
    fn headers_must_agree_with_the_body() {
        let m = body(&sign(message("Notification", "2")));
        for (name, value) in [
            (MESSAGE_TYPE, "SubscriptionConfirmation"),
            (TOPIC_ARN, "arn:aws:sns:eu-west-1:123456789012:other"),
            (MESSAGE_ID, "another-id"),
        ] {
            check(
                &m,
                &[(name.clone(), value.to_owned())],
                NOW,
                LEAF_PEM,
                Err(VerifyError::MalformedHeader(name)),
            );
        }
        check(
            &m,
            &[
                (MESSAGE_TYPE, "Notification".into()),
                (MESSAGE_TYPE, "Notification".into()),
            ],
            NOW,
            LEAF_PEM,
            Err(VerifyError::DuplicateHeader(MESSAGE_TYPE)),
        );
    }

    #[test]
    fn body_shape() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not an SNS JSON message"),
            (b"{}", "not an SNS JSON message"),
            (
                br#"{"Type":"Notification","Type":"Notification"}"#,
                "not an SNS JSON message",
            ),
            (br#"{"Type":"Other"}"#, "unknown SNS message Type"),
        ];
        for (b, msg) in cases {
            check(b, &[], NOW, LEAF_PEM, Err(VerifyError::MalformedBody(msg)));
        }
        let big = vec![b' '; MAX_BODY + 1];
        check(
            &big,
            &[],
            NOW,
            LEAF_PEM,
            Err(VerifyError::MalformedBody("SNS message larger than 1 MiB")),
        );
        let mut m = sign(message("SubscriptionConfirmation", "2"));
        m.remove("Token");
        check(
            &body(&m),
            &[],
            NOW,
            LEAF_PEM,
            Err(VerifyError::MalformedBody(
                "SNS message lacks a signed field",
            )),
        );
    }

    #[test]
    fn cert_url_hosts() {
        let bad = [
            "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/",
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com/.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?a=.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem#.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://sns.us-east-1.amazonaws.com:/x.pem",
            "https://sns.us-east-1.amazonaws.com\\@evil.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/../x.pem",
            "https://sns.us-east-1.amazonaws.com/%2e%2e/x.pem",
            "https://sns.us-east-1.amazonaws.com /x.pem",
            "HTTPS://sns.us-east-1.amazonaws.com/x.pem",
            "https://SNS.us-east-1.amazonaws.com/x.pem",
            "https://sns.amazonaws.com/x.pem",
            "https://sns.evil.amazonaws.com/x.pem",
            "https://sqs.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.cn.evil/x.pem",
            "https://sns.us-east-1.amazonaws.com",
            "https://sns.us-east-1.amazonaws.com.",
            "//sns.us-east-1.amazonaws.com/x.pem",
        ];
        for url in bad {
            let m = sign(set(
                message("Notification", "2"),
                "SigningCertURL",
                json!(url),
            ));
            assert_eq!(
                sns().signing_cert_url(&body(&m)),
                Err(VerifyError::UntrustedUrl("SigningCertURL")),
                "{url}"
            );
            check(
                &body(&m),
                &[],
                NOW,
                LEAF_PEM,
                Err(VerifyError::UntrustedUrl("SigningCertURL")),
            );
        }
        let good = [
            CERT_URL,
            "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-a.pem",
            "https://sns.us-gov-west-1.amazonaws.com/a/b.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-a.pem",
        ];
        for url in good {
            let m = sign(set(
                message("Notification", "2"),
                "SigningCertURL",
                json!(url),
            ));
            assert_eq!(sns().signing_cert_url(&body(&m)).unwrap().as_str(), url);
            check(&body(&m), &[], NOW, LEAF_PEM, Ok(MessageType::Notification));
        }
    }

    #[test]
    fn custom_host_suffix_replaces_the_defaults() {
        let v = sns().with_cert_host_suffix("example.test").unwrap();
        let m = sign(set(
            message("Notification", "2"),
            "SigningCertURL",
            json!("https://sns.eu-west-1.example.test/c.pem"),
        ));
        assert!(v.signing_cert_url(&body(&m)).is_ok());
        let m = sign(message("Notification", "2"));
        assert_eq!(
            v.signing_cert_url(&body(&m)),
            Err(VerifyError::UntrustedUrl("SigningCertURL"))
        );
        for bad in [
            "",
            "com",
            ".example.test",
            "Example.test",
            "a..b",
            "evil.com/x",
        ] {
            assert_eq!(
                sns().with_cert_host_suffix(bad).err(),
                Some(InvalidSns::HostSuffix(bad.to_owned()))
            );
        }
    }

    #[test]
    fn subscribe_and_unsubscribe_urls_are_checked() {
        for url in [
            "https://evil.com/?Action=ConfirmSubscription",
            "http://sns.eu-west-1.amazonaws.com/?x",
            "https://sns.eu-west-1.amazonaws.com/?a=b#frag",
        ] {
            let m = sign(set(
                message("SubscriptionConfirmation", "2"),
                "SubscribeURL",
                json!(url),
            ));
            check(
                &body(&m),
                &[],
                NOW,
                LEAF_PEM,
                Err(VerifyError::UntrustedUrl("SubscribeURL")),
            );
            let m = sign(set(
                message("Notification", "2"),
                "UnsubscribeURL",
                json!(url),
            ));
            check(
                &body(&m),
                &[],
                NOW,
                LEAF_PEM,
                Err(VerifyError::UntrustedUrl("UnsubscribeURL")),
            );
        }
    }

    #[test]
    fn certificate_checks() {
        let m = body(&sign(message("Notification", "2")));
        // fixture leaf: valid 2026-11-23 .. 2046-11-18
        check(
            &m,
            &[],
            1_700_000_000,
            LEAF_PEM,
            Err(VerifyError::BadCertificate("outside its validity period")),
        );
        check(
            &m,
            &[],
            2_500_000_000,
            LEAF_PEM,
            Err(VerifyError::BadCertificate("outside its validity period")),
        );
        check(
            &m,
            &[],
            NOW,
            b"garbage",
            Err(VerifyError::BadCertificate("not an X.509 certificate")),
        );
        check(
            &m,
            &[],
            NOW,
            b"-----BEGIN NOTHING-----\n-----END NOTHING-----\n",
            Err(VerifyError::BadCertificate("no certificate")),
        );
        // another key's certificate
        check(&m, &[], NOW, CA_PEM, Err(VerifyError::Mismatch));
    }

    #[test]
    fn chain_validation_with_trust_anchors() {
        let ca = certificates(CA_PEM).unwrap();
        let v = sns().with_trust_anchors(&[ca[0].as_ref()]).unwrap();
        let m = body(&sign(message("Notification", "1")));
        assert!(v.verify(&HeaderMap::new(), &m, NOW, LEAF_PEM).is_ok());
        assert!(v.verify(&HeaderMap::new(), &m, NOW, LEAF_DER).is_ok());
        // same key, but self-signed: passes without anchors, refused with them
        assert!(sns().verify(&HeaderMap::new(), &m, NOW, ROGUE_PEM).is_ok());
        assert_eq!(
            v.verify(&HeaderMap::new(), &m, NOW, ROGUE_PEM),
            Err(VerifyError::BadCertificate(
                "does not chain to a trusted root"
            ))
        );
        assert_eq!(
            sns().with_trust_anchors(&[b"junk"]).err(),
            Some(InvalidSns::TrustAnchor(0))
        );
    }

    #[test]
    fn config_validation() {
        assert_eq!(Sns::new(vec![]).err(), Some(InvalidSns::NoTopics));
        for bad in [
            "alerts",
            "arn:aws:sqs:eu-west-1:123456789012:q",
            "arn:aws:sns:eu-west-1:1234:t",
            "arn:aws:sns:eu-west-1:123456789012:",
        ] {
            assert_eq!(
                Sns::new(vec![bad.to_owned()]).err(),
                Some(InvalidSns::TopicArn(bad.to_owned()))
            );
        }
        assert!(Sns::new(vec!["arn:aws-cn:sns:cn-north-1:123456789012:t.fifo".into()]).is_ok());
        assert!(!sns().confirm_subscriptions());
        assert!(
            sns()
                .with_confirm_subscriptions(true)
                .confirm_subscriptions()
        );
    }

    #[test]
    fn subscribe_url_debug_hides_the_token() {
        let url = check_url(
            SUBSCRIBE_URL,
            &[String::from("amazonaws.com")],
            UrlKind::Action,
        )
        .unwrap();
        assert!(!format!("{url:?}").contains("Token"));
    }

    #[test]
    fn verifier_sns_has_no_sync_path() {
        let v = super::super::Verifier::Sns(sns());
        assert_eq!(v.name(), "sns");
        assert!(v.credential_headers().is_empty());
        assert_eq!(
            v.sign(b"", NOW),
            Err(super::super::SignError::NeedsPrivateKey("sns"))
        );
        assert_eq!(
            v.verify(
                &HeaderMap::new(),
                &body(&sign(message("Notification", "2"))),
                NOW
            ),
            Err(VerifyError::NeedsCertificate)
        );
    }
}
