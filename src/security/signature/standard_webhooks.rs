//! Standard Webhooks (the Svix-originated spec): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64> [v1,<base64> ...]`, each the HMAC-SHA256 of
//! `id + "." + timestamp + "." + body` under the base64-decoded `whsec_` secret.
//!
//! Defends against forged and replayed deliveries: the id and timestamp are signed, so the id
//! is a trustworthy key for the replay guard and a timestamp outside the tolerance (default
//! 300 s, both directions) is refused. Entries of other versions (`v1a` asymmetric) are
//! skipped; a header with no `v1` entry is refused as the wrong algorithm.
//!
//! Svix, where the spec comes from, sends the same three headers named `svix-id`,
//! `svix-timestamp` and `svix-signature` (the `webhook-*` names are its paid white-label
//! option), so both families are read: the family of the id header present is used for all
//! three, never a mix. Secrets are `whsec_` and base64 with or without padding, as the
//! reference libraries accept them.

use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::{HashAlg, Verified, VerifyError, name, parse_unix, required_header};
use crate::security::replay::check_timestamp;
use crate::security::secret::{Secret, SecretSet};

/// `webhook-id`.
pub const ID: HeaderName = name("webhook-id");
/// `webhook-timestamp`.
pub const TIMESTAMP: HeaderName = name("webhook-timestamp");
/// `webhook-signature`.
pub const SIGNATURE: HeaderName = name("webhook-signature");
/// `svix-id` (Svix's name for `webhook-id`).
pub const SVIX_ID: HeaderName = name("svix-id");
/// `svix-timestamp`.
pub const SVIX_TIMESTAMP: HeaderName = name("svix-timestamp");
/// `svix-signature`.
pub const SVIX_SIGNATURE: HeaderName = name("svix-signature");
/// The spec's recommended tolerance.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// Most signature entries read.
pub const MAX_ENTRIES: usize = 16;
/// Longest `webhook-id` accepted.
pub const MAX_ID_LEN: usize = super::MAX_DELIVERY_ID_LEN;

/// A configured secret is not `whsec_<base64>` (or bare base64) of a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("secret is not a valid whsec_<base64> key")]
pub struct InvalidKey;

/// Standard Webhooks verifier config, holding the decoded keys.
#[derive(Debug, Clone)]
pub struct StandardWebhooks {
    keys: SecretSet,
    tolerance: Duration,
}

impl StandardWebhooks {
    /// Decodes each `whsec_<base64>` secret (the prefix is optional) into its key.
    pub fn new(secrets: &SecretSet, tolerance: Duration) -> Result<StandardWebhooks, InvalidKey> {
        let keys = secrets
            .iter()
            .map(decode_key)
            .collect::<Result<Vec<_>, _>>()?;
        let keys = SecretSet::new(keys).map_err(|_| InvalidKey)?;
        Ok(StandardWebhooks { keys, tolerance })
    }

    /// The decoded keys.
    pub fn keys(&self) -> &SecretSet {
        &self.keys
    }

    /// Checks the signatures over `id.timestamp.body`, then the timestamp against `now_unix`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyError> {
        let [id_name, ts_name, sig_name] = if headers.contains_key(&ID) {
            [&ID, &TIMESTAMP, &SIGNATURE]
        } else if headers.contains_key(&SVIX_ID) {
            [&SVIX_ID, &SVIX_TIMESTAMP, &SVIX_SIGNATURE]
        } else {
            return Err(VerifyError::MissingHeader(ID));
        };
        let id = required_header(headers, id_name)?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(VerifyError::MalformedHeader(id_name.clone()));
        }
        let ts_raw = required_header(headers, ts_name)?;
        let ts = parse_unix(ts_raw, ts_name)?;
        let value = required_header(headers, sig_name)?;
        let malformed = || VerifyError::MalformedHeader(sig_name.clone());
        let mut tags = Vec::new();
        for (i, entry) in value.split(' ').filter(|e| !e.is_empty()).enumerate() {
            if i >= MAX_ENTRIES {
                return Err(malformed());
            }
            let (version, sig) = entry.split_once(',').ok_or_else(malformed)?;
            if version != "v1" {
                continue;
            }
            match STANDARD.decode(sig) {
                Ok(tag) if tag.len() == HashAlg::Sha256.len() => tags.push(tag),
                _ => return Err(malformed()),
            }
        }
        if tags.is_empty() {
            return Err(VerifyError::WrongAlgorithm(sig_name.clone()));
        }
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_raw.as_bytes(), b".", body];
        let matched = self.keys.any(|k| {
            tags.iter().fold(false, |m, tag| {
                HashAlg::Sha256.verify(k.expose(), &parts, tag) | m
            })
        });
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        check_timestamp(ts, now_unix, self.tolerance)?;
        Ok(Verified {
            delivery_id: Some(id.to_owned()),
            timestamp: Some(ts),
        })
    }
}

/// Standard base64 that takes its padding or leaves it out (never anything outside the
/// alphabet), as the reference libraries read `whsec_` secrets.
const PADDING_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `whsec_<base64>` (or bare base64, padded or not) to the key bytes.
pub fn decode_key(secret: &Secret) -> Result<Secret, InvalidKey> {
    let raw = secret.expose();
    let b64 = raw.strip_prefix(b"whsec_").unwrap_or(raw);
    let key = PADDING_OPTIONAL.decode(b64).map_err(|_| InvalidKey)?;
    Secret::new(key).map_err(|_| InvalidKey)
}

/// A deterministic `webhook-id` for `saltgate sign`: `msg_` and 24 hex digits of
/// SHA-256(timestamp, body).
pub fn derived_id(body: &[u8], now_unix: i64) -> String {
    let mut h = Sha256::new();
    h.update(now_unix.to_be_bytes());
    h.update(body);
    let digest = h.finalize();
    format!("msg_{}", hex::encode(&digest[..12]))
}

/// The three headers for `body` with id `id` at `now_unix`; `key` is the decoded key.
pub fn sign(key: &Secret, id: &str, body: &[u8], now_unix: i64) -> Vec<(HeaderName, String)> {
    let ts = now_unix.to_string();
    let mac = HashAlg::Sha256.mac(
        key.expose(),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    vec![
        (ID, id.to_owned()),
        (TIMESTAMP, ts),
        (SIGNATURE, format!("v1,{}", STANDARD.encode(mac))),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::security::replay::Stale;

    // The Standard Webhooks spec's published example (also in the reference libraries' tests).
    const DOC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const DOC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const DOC_TS: i64 = 1_614_265_330;
    const DOC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const DOC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn v(list: &[&str]) -> StandardWebhooks {
        StandardWebhooks::new(&secrets(list), DEFAULT_TOLERANCE).unwrap()
    }

    fn h() -> HeaderMap {
        headers(&[
            (ID, DOC_ID.to_owned()),
            (TIMESTAMP, DOC_TS.to_string()),
            (SIGNATURE, DOC_SIG.to_owned()),
        ])
    }

    #[track_caller]
    fn check(v: &StandardWebhooks, map: HeaderMap, now: i64, expected: Result<(), VerifyError>) {
        assert_eq!(v.verify(&map, DOC_BODY, now).map(|_| ()), expected);
    }

    #[test]
    fn published_vector() {
        let got = v(&[DOC_SECRET]).verify(&h(), DOC_BODY, DOC_TS).unwrap();
        assert_eq!(got.delivery_id.as_deref(), Some(DOC_ID));
        assert_eq!(got.timestamp, Some(DOC_TS));
        let key = decode_key(&secret(DOC_SECRET)).unwrap();
        assert_eq!(sign(&key, DOC_ID, DOC_BODY, DOC_TS)[2].1, DOC_SIG);
        // the prefix is optional
        check(
            &v(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
            h(),
            DOC_TS,
            Ok(()),
        );
    }

    /// Svix's own header names carry the same signature; the families are never mixed.
    #[test]
    fn svix_header_family() {
        let svix = headers(&[
            (SVIX_ID, DOC_ID.to_owned()),
            (SVIX_TIMESTAMP, DOC_TS.to_string()),
            (SVIX_SIGNATURE, DOC_SIG.to_owned()),
        ]);
        let got = v(&[DOC_SECRET]).verify(&svix, DOC_BODY, DOC_TS).unwrap();
        assert_eq!(got.delivery_id.as_deref(), Some(DOC_ID));
        check(
            &v(&[DOC_SECRET]),
            without(svix.clone(), &SVIX_SIGNATURE),
            DOC_TS,
            Err(VerifyError::MissingHeader(SVIX_SIGNATURE)),
        );
        let mixed = headers(&[
            (ID, DOC_ID.to_owned()),
            (SVIX_TIMESTAMP, DOC_TS.to_string()),
            (SVIX_SIGNATURE, DOC_SIG.to_owned()),
        ]);
        check(
            &v(&[DOC_SECRET]),
            mixed,
            DOC_TS,
            Err(VerifyError::MissingHeader(TIMESTAMP)),
        );
        check(
            &v(&[DOC_SECRET]),
            HeaderMap::new(),
            DOC_TS,
            Err(VerifyError::MissingHeader(ID)),
        );
    }

    /// `whsec_` secrets without their base64 padding, as the reference libraries accept them.
    #[test]
    fn unpadded_secrets() {
        // 35 key bytes: base64 with one `=` of padding.
        let padded = "whsec_c2FsdGdhdGUtdW5wYWRkZWQta2V5LWJ5dGVzLTAxMjM0NTY=";
        let key = decode_key(&secret(padded)).unwrap();
        let bare = decode_key(&secret(padded.trim_end_matches('='))).unwrap();
        assert_eq!(key.expose(), bare.expose());
        assert_eq!(
            StandardWebhooks::new(&secrets(&["whsec_C2Fs dGdh"]), DEFAULT_TOLERANCE).err(),
            Some(InvalidKey)
        );
    }

    #[test]
    fn invalid_keys_refused() {
        assert_eq!(
            StandardWebhooks::new(&secrets(&["whsec_not base64!"]), DEFAULT_TOLERANCE).err(),
            Some(InvalidKey)
        );
    }

    #[test]
    fn failures() {
        let good = v(&[DOC_SECRET]);
        check(
            &v(&["whsec_AAAAAAAAAAAAAAAAAAAAAAAA"]),
            h(),
            DOC_TS,
            Err(VerifyError::Mismatch),
        );
        check(
            &good,
            with(h(), &SIGNATURE, &DOC_SIG[..30]),
            DOC_TS,
            Err(VerifyError::MalformedHeader(SIGNATURE)),
        );
        check(
            &good,
            with(h(), &SIGNATURE, &DOC_SIG.replace("v1,", "v1a,")),
            DOC_TS,
            Err(VerifyError::WrongAlgorithm(SIGNATURE)),
        );
        check(
            &good,
            without(h(), &SIGNATURE),
            DOC_TS,
            Err(VerifyError::MissingHeader(SIGNATURE)),
        );
        check(
            &good,
            without(h(), &ID),
            DOC_TS,
            Err(VerifyError::MissingHeader(ID)),
        );
        check(
            &good,
            without(h(), &TIMESTAMP),
            DOC_TS,
            Err(VerifyError::MissingHeader(TIMESTAMP)),
        );
        // the id and timestamp are signed
        check(
            &good,
            with(h(), &ID, "msg_other"),
            DOC_TS,
            Err(VerifyError::Mismatch),
        );
        check(
            &good,
            with(h(), &TIMESTAMP, &(DOC_TS + 1).to_string()),
            DOC_TS,
            Err(VerifyError::Mismatch),
        );
        check(
            &good,
            h(),
            DOC_TS + 301,
            Err(VerifyError::StaleTimestamp(Stale::TooOld { age_secs: 301 })),
        );
        check(
            &good,
            h(),
            DOC_TS - 301,
            Err(VerifyError::StaleTimestamp(Stale::InFuture {
                ahead_secs: 301,
            })),
        );
    }

    #[test]
    fn rotation_and_lists() {
        check(
            &v(&["whsec_AAAAAAAAAAAAAAAAAAAAAAAA", DOC_SECRET]),
            h(),
            DOC_TS,
            Ok(()),
        );
        let listed = format!("v1a,xyz v1,{} {DOC_SIG}", STANDARD.encode([0u8; 32]));
        check(
            &v(&[DOC_SECRET]),
            with(h(), &SIGNATURE, &listed),
            DOC_TS,
            Ok(()),
        );
    }
}
