//! Gitea and Forgejo webhooks: `X-Gitea-Signature` / `X-Forgejo-Signature`, the hex
//! HMAC-SHA256 of the body with no prefix.
//!
//! Defends against forged Gitea/Forgejo deliveries. Forgejo sends both headers with the same
//! value; the Forgejo one is checked when present, otherwise the Gitea one. The delivery id
//! (`X-Forgejo-Delivery` / `X-Gitea-Delivery`) is returned for the replay guard.

use http::{HeaderMap, HeaderName};

use super::{HashAlg, Verified, VerifyError, check_prefixed_hex, delivery_id, name, single_header};
use crate::security::secret::{Secret, SecretSet};

/// `X-Gitea-Signature`.
pub const GITEA_SIGNATURE: HeaderName = name("x-gitea-signature");
/// `X-Forgejo-Signature`.
pub const FORGEJO_SIGNATURE: HeaderName = name("x-forgejo-signature");
/// `X-Gitea-Delivery`.
pub const GITEA_DELIVERY: HeaderName = name("x-gitea-delivery");
/// `X-Forgejo-Delivery`.
pub const FORGEJO_DELIVERY: HeaderName = name("x-forgejo-delivery");

/// Gitea/Forgejo verifier config.
#[derive(Debug, Clone)]
pub struct Gitea {
    secrets: SecretSet,
}

impl Gitea {
    /// A verifier for `secrets`.
    pub fn new(secrets: SecretSet) -> Gitea {
        Gitea { secrets }
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// Checks the signature over the raw `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let (value, header) = match single_header(headers, &FORGEJO_SIGNATURE)? {
            Some(v) => (v, &FORGEJO_SIGNATURE),
            None => match single_header(headers, &GITEA_SIGNATURE)? {
                Some(v) => (v, &GITEA_SIGNATURE),
                None => return Err(VerifyError::MissingHeader(GITEA_SIGNATURE)),
            },
        };
        check_prefixed_hex(value, "", HashAlg::Sha256, header, &self.secrets, &[body])?;
        let id = match delivery_id(headers, &FORGEJO_DELIVERY)? {
            Some(id) => Some(id),
            None => delivery_id(headers, &GITEA_DELIVERY)?,
        };
        Ok(Verified {
            delivery_id: id,
            timestamp: None,
        })
    }
}

/// The `X-Gitea-Signature` header for `body`.
pub fn sign(secret: &Secret, body: &[u8]) -> Vec<(HeaderName, String)> {
    let mac = HashAlg::Sha256.mac(secret.expose(), &[body]);
    vec![(GITEA_SIGNATURE, hex::encode(mac))]
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // The HMAC-SHA256 construction of GitHub's published vector, without the prefix.
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[track_caller]
    fn check(v: &Gitea, map: HeaderMap, expected: Result<(), VerifyError>) {
        assert_eq!(v.verify(&map, BODY).map(|_| ()), expected);
    }

    #[test]
    fn vector_both_headers_and_failures() {
        let v = Gitea::new(secrets(&[SECRET]));
        let gitea = headers(&[
            (GITEA_SIGNATURE, SIG.to_owned()),
            (GITEA_DELIVERY, "d1".to_owned()),
        ]);
        let forgejo = headers(&[
            (FORGEJO_SIGNATURE, SIG.to_owned()),
            (FORGEJO_DELIVERY, "d2".to_owned()),
        ]);
        assert_eq!(
            v.verify(&gitea, BODY).unwrap().delivery_id.as_deref(),
            Some("d1")
        );
        assert_eq!(
            v.verify(&forgejo, BODY).unwrap().delivery_id.as_deref(),
            Some("d2")
        );
        check(
            &Gitea::new(secrets(&["nope"])),
            gitea.clone(),
            Err(VerifyError::Mismatch),
        );
        check(
            &v,
            with(gitea.clone(), &GITEA_SIGNATURE, &SIG[..63]),
            Err(VerifyError::MalformedHeader(GITEA_SIGNATURE)),
        );
        // a GitHub-style prefix is not this scheme's format
        check(
            &v,
            with(gitea.clone(), &GITEA_SIGNATURE, &format!("sha256={SIG}")),
            Err(VerifyError::MalformedHeader(GITEA_SIGNATURE)),
        );
        check(
            &v,
            HeaderMap::new(),
            Err(VerifyError::MissingHeader(GITEA_SIGNATURE)),
        );
        check(&Gitea::new(secrets(&["old", SECRET])), gitea, Ok(()));
    }
}
