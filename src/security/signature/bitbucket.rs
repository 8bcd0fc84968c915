//! Bitbucket Cloud webhooks: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! Defends against forged Bitbucket deliveries; only SHA-256 is accepted. The delivery id
//! (`X-Request-UUID`) is returned for the replay guard; it is not signed.

use http::{HeaderMap, HeaderName};

use super::{
    HashAlg, Verified, VerifyError, check_prefixed_hex, delivery_id, name, required_header,
};
use crate::security::secret::{Secret, SecretSet};

/// `X-Hub-Signature`.
pub const SIGNATURE: HeaderName = name("x-hub-signature");
/// `X-Request-UUID`.
pub const DELIVERY: HeaderName = name("x-request-uuid");

/// Bitbucket verifier config.
#[derive(Debug, Clone)]
pub struct Bitbucket {
    secrets: SecretSet,
}

impl Bitbucket {
    /// A verifier for `secrets`.
    pub fn new(secrets: SecretSet) -> Bitbucket {
        Bitbucket { secrets }
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// Checks the signature over the raw `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let value = required_header(headers, &SIGNATURE)?;
        check_prefixed_hex(
            value,
            "sha256=",
            HashAlg::Sha256,
            &SIGNATURE,
            &self.secrets,
            &[body],
        )?;
        Ok(Verified {
            delivery_id: delivery_id(headers, &DELIVERY)?,
            timestamp: None,
        })
    }
}

/// The `X-Hub-Signature` header for `body`.
pub fn sign(secret: &Secret, body: &[u8]) -> Vec<(HeaderName, String)> {
    let mac = HashAlg::Sha256.mac(secret.expose(), &[body]);
    vec![(SIGNATURE, format!("sha256={}", hex::encode(mac)))]
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // Same construction as GitHub's; GitHub's published vector applies unchanged.
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn h() -> HeaderMap {
        headers(&[(SIGNATURE, SIG.to_owned()), (DELIVERY, "uuid-1".to_owned())])
    }

    #[track_caller]
    fn check(v: &Bitbucket, map: HeaderMap, expected: Result<(), VerifyError>) {
        assert_eq!(v.verify(&map, BODY).map(|_| ()), expected);
    }

    #[test]
    fn vector_and_failures() {
        let v = Bitbucket::new(secrets(&[SECRET]));
        assert_eq!(
            v.verify(&h(), BODY).unwrap().delivery_id.as_deref(),
            Some("uuid-1")
        );
        check(
            &Bitbucket::new(secrets(&["nope"])),
            h(),
            Err(VerifyError::Mismatch),
        );
        check(
            &v,
            with(h(), &SIGNATURE, &SIG[..20]),
            Err(VerifyError::MalformedHeader(SIGNATURE)),
        );
        check(
            &v,
            with(h(), &SIGNATURE, &SIG.replace("sha256=", "sha1=")),
            Err(VerifyError::WrongAlgorithm(SIGNATURE)),
        );
        check(
            &v,
            without(h(), &SIGNATURE),
            Err(VerifyError::MissingHeader(SIGNATURE)),
        );
        check(&Bitbucket::new(secrets(&["old", SECRET])), h(), Ok(()));
    }
}
