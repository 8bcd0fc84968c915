//! GitHub webhooks: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! Defends against forged GitHub deliveries. The legacy `X-Hub-Signature: sha1=` header is
//! accepted only when the rule opts in (`allow_sha1`) and only when the SHA-256 header is
//! absent, so an attacker cannot downgrade a delivery that carries both. The delivery id
//! (`X-GitHub-Delivery`) is returned for the replay guard; GitHub does not sign it.

use http::{HeaderMap, HeaderName};

use super::{HashAlg, Verified, VerifyError, check_prefixed_hex, delivery_id, name, single_header};
use crate::security::secret::{Secret, SecretSet};

/// `X-Hub-Signature-256`.
pub const SIGNATURE_256: HeaderName = name("x-hub-signature-256");
/// `X-Hub-Signature` (legacy SHA-1).
pub const SIGNATURE_SHA1: HeaderName = name("x-hub-signature");
/// `X-GitHub-Delivery`.
pub const DELIVERY: HeaderName = name("x-github-delivery");

/// GitHub verifier config.
#[derive(Debug, Clone)]
pub struct Github {
    secrets: SecretSet,
    allow_sha1: bool,
}

impl Github {
    /// SHA-256 only.
    pub fn new(secrets: SecretSet) -> Github {
        Github {
            secrets,
            allow_sha1: false,
        }
    }

    /// Also accept the legacy SHA-1 header when the SHA-256 one is absent.
    pub fn with_legacy_sha1(mut self, allow: bool) -> Github {
        self.allow_sha1 = allow;
        self
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// Checks the signature over the raw `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        match single_header(headers, &SIGNATURE_256)? {
            Some(v) => check_prefixed_hex(
                v,
                "sha256=",
                HashAlg::Sha256,
                &SIGNATURE_256,
                &self.secrets,
                &[body],
            )?,
            None if self.allow_sha1 => match single_header(headers, &SIGNATURE_SHA1)? {
                Some(v) => check_prefixed_hex(
                    v,
                    "sha1=",
                    HashAlg::Sha1,
                    &SIGNATURE_SHA1,
                    &self.secrets,
                    &[body],
                )?,
                None => return Err(VerifyError::MissingHeader(SIGNATURE_256)),
            },
            None => return Err(VerifyError::MissingHeader(SIGNATURE_256)),
        }
        Ok(Verified {
            delivery_id: delivery_id(headers, &DELIVERY)?,
            timestamp: None,
        })
    }
}

/// The `X-Hub-Signature-256` header for `body`.
pub fn sign(secret: &Secret, body: &[u8]) -> Vec<(HeaderName, String)> {
    let mac = HashAlg::Sha256.mac(secret.expose(), &[body]);
    vec![(SIGNATURE_256, format!("sha256={}", hex::encode(mac)))]
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // GitHub docs, "Validating webhook deliveries": secret, payload and expected signature.
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &[u8] = b"Hello, World!";
    const DOC_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn doc_headers() -> HeaderMap {
        headers(&[
            (SIGNATURE_256, DOC_SIG.to_owned()),
            (DELIVERY, "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned()),
        ])
    }

    #[track_caller]
    fn check(v: &Github, map: HeaderMap, body: &[u8], expected: Result<(), VerifyError>) {
        assert_eq!(v.verify(&map, body).map(|_| ()), expected);
    }

    #[test]
    fn published_vector() {
        let v = Github::new(secrets(&[DOC_SECRET]));
        let got = v.verify(&doc_headers(), DOC_BODY).unwrap();
        assert_eq!(
            got.delivery_id.as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        assert_eq!(sign(&secret(DOC_SECRET), DOC_BODY)[0].1, DOC_SIG);
    }

    #[test]
    fn failures() {
        let v = Github::new(secrets(&[DOC_SECRET]));
        let h = doc_headers;
        check(
            &Github::new(secrets(&["wrong"])),
            h(),
            DOC_BODY,
            Err(VerifyError::Mismatch),
        );
        check(&v, h(), b"Hello, World?", Err(VerifyError::Mismatch));
        check(
            &v,
            with(h(), &SIGNATURE_256, &DOC_SIG[..DOC_SIG.len() - 2]),
            DOC_BODY,
            Err(VerifyError::MalformedHeader(SIGNATURE_256)),
        );
        check(
            &v,
            with(h(), &SIGNATURE_256, &DOC_SIG.replace("sha256=", "sha1=")),
            DOC_BODY,
            Err(VerifyError::WrongAlgorithm(SIGNATURE_256)),
        );
        check(
            &v,
            with(
                h(),
                &SIGNATURE_256,
                &DOC_SIG.to_uppercase().replace("SHA256=", "sha256="),
            ),
            DOC_BODY,
            Err(VerifyError::MalformedHeader(SIGNATURE_256)),
        );
        check(
            &v,
            without(h(), &SIGNATURE_256),
            DOC_BODY,
            Err(VerifyError::MissingHeader(SIGNATURE_256)),
        );
        check(
            &v,
            with(h(), &DELIVERY, &"x".repeat(300)),
            DOC_BODY,
            Err(VerifyError::MalformedHeader(DELIVERY)),
        );
    }

    #[test]
    fn rotation() {
        let v = Github::new(secrets(&["new-secret", DOC_SECRET]));
        check(&v, doc_headers(), DOC_BODY, Ok(()));
    }

    #[test]
    fn legacy_sha1_only_when_enabled_and_never_as_downgrade() {
        let sha1 = format!(
            "sha1={}",
            hex::encode(HashAlg::Sha1.mac(DOC_SECRET.as_bytes(), &[DOC_BODY]))
        );
        let only_sha1 = headers(&[(SIGNATURE_SHA1, sha1.clone())]);
        let strict = Github::new(secrets(&[DOC_SECRET]));
        let legacy = strict.clone().with_legacy_sha1(true);
        check(
            &strict,
            only_sha1.clone(),
            DOC_BODY,
            Err(VerifyError::MissingHeader(SIGNATURE_256)),
        );
        check(&legacy, only_sha1, DOC_BODY, Ok(()));
        // a valid sha1 does not rescue a bad sha256 header
        let both = headers(&[
            (SIGNATURE_SHA1, sha1),
            (SIGNATURE_256, format!("sha256={}", "0".repeat(64))),
        ]);
        check(&legacy, both, DOC_BODY, Err(VerifyError::Mismatch));
    }
}
