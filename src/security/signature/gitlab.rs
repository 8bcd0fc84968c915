//! GitLab webhooks: the shared secret sent as is in `X-Gitlab-Token`.
//!
//! Defends against forged GitLab deliveries. GitLab does not sign the body, so this is a
//! bearer secret: it is compared in constant time (hashed first, so the length does not leak
//! either) and redacted from events. The delivery id (`X-Gitlab-Event-UUID`) is returned for
//! the replay guard.

use http::{HeaderMap, HeaderName};

use super::{Verified, VerifyError, delivery_id, name, required_header, token_matches};
use crate::security::secret::{Secret, SecretSet};

/// `X-Gitlab-Token`.
pub const TOKEN: HeaderName = name("x-gitlab-token");
/// `X-Gitlab-Event-UUID`.
pub const DELIVERY: HeaderName = name("x-gitlab-event-uuid");

/// GitLab verifier config.
#[derive(Debug, Clone)]
pub struct Gitlab {
    secrets: SecretSet,
}

impl Gitlab {
    /// A verifier for `secrets`.
    pub fn new(secrets: SecretSet) -> Gitlab {
        Gitlab { secrets }
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// Checks the token header.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Verified, VerifyError> {
        let token = required_header(headers, &TOKEN)?;
        if !self.secrets.any(|s| token_matches(s, token.as_bytes())) {
            return Err(VerifyError::Mismatch);
        }
        Ok(Verified {
            delivery_id: delivery_id(headers, &DELIVERY)?,
            timestamp: None,
        })
    }
}

/// The `X-Gitlab-Token` header.
pub fn sign(secret: &Secret) -> Vec<(HeaderName, String)> {
    vec![(TOKEN, String::from_utf8_lossy(secret.expose()).into_owned())]
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[track_caller]
    fn check(v: &Gitlab, map: HeaderMap, expected: Result<(), VerifyError>) {
        assert_eq!(v.verify(&map).map(|_| ()), expected);
    }

    #[test]
    fn table() {
        let v = Gitlab::new(secrets(&["glsecret"]));
        let ok = headers(&[
            (TOKEN, "glsecret".to_owned()),
            (DELIVERY, "uuid".to_owned()),
        ]);
        assert_eq!(v.verify(&ok).unwrap().delivery_id.as_deref(), Some("uuid"));
        check(
            &v,
            with(ok.clone(), &TOKEN, "glsecreT"),
            Err(VerifyError::Mismatch),
        );
        check(
            &v,
            with(ok.clone(), &TOKEN, "glsecre"),
            Err(VerifyError::Mismatch),
        );
        check(
            &v,
            with(ok.clone(), &TOKEN, "glsecret2"),
            Err(VerifyError::Mismatch),
        );
        check(
            &v,
            without(ok.clone(), &TOKEN),
            Err(VerifyError::MissingHeader(TOKEN)),
        );
        check(
            &Gitlab::new(secrets(&["other", "glsecret"])),
            ok.clone(),
            Ok(()),
        );
        check(&v, headers(&sign(&secret("glsecret"))), Ok(()));
    }
}
