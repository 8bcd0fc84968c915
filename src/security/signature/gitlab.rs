//! GitLab webhooks: the shared secret sent as is in `X-Gitlab-Token`.
//!
//! Defends against forged GitLab deliveries. GitLab does not sign the body, so this is a
//! bearer secret: it is compared in constant time (hashed first, so the length does not leak
//! either) and redacted from events.
//!
//! The delivery id for the replay guard is `Idempotency-Key`, which GitLab keeps the same on
//! every retry of one delivery, else `X-Gitlab-Webhook-UUID` (one per delivery). Never
//! `X-Gitlab-Event-UUID`: GitLab gives every hook triggered from one request, recursively, that
//! same value, so deduplicating on it would drop distinct events.

use http::{HeaderMap, HeaderName};

use super::{Verified, VerifyError, delivery_id, name, required_header, token_matches};
use crate::security::secret::{Secret, SecretSet};

/// `X-Gitlab-Token`.
pub const TOKEN: HeaderName = name("x-gitlab-token");
/// `Idempotency-Key`: the same on each retry of a delivery (GitLab 17.4 and later).
pub const DELIVERY: HeaderName = name("idempotency-key");
/// `X-Gitlab-Webhook-UUID`: one per delivery, for GitLab versions without `Idempotency-Key`.
pub const WEBHOOK_UUID: HeaderName = name("x-gitlab-webhook-uuid");

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
            delivery_id: match delivery_id(headers, &DELIVERY)? {
                Some(id) => Some(id),
                None => delivery_id(headers, &WEBHOOK_UUID)?,
            },
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

    /// Retries carry the same `Idempotency-Key`; without it the per-delivery webhook UUID is
    /// the id; the event UUID, shared by recursively triggered hooks, never is.
    #[test]
    fn delivery_id_is_the_retry_key() {
        let v = Gitlab::new(secrets(&["glsecret"]));
        let id = |extra: &[(HeaderName, &str)]| {
            let mut pairs = vec![(TOKEN, "glsecret".to_owned())];
            pairs.extend(extra.iter().map(|(n, v)| (n.clone(), (*v).to_owned())));
            v.verify(&headers(&pairs)).unwrap().delivery_id
        };
        let event_uuid = name("x-gitlab-event-uuid");
        assert_eq!(
            id(&[
                (DELIVERY, "idem-1"),
                (WEBHOOK_UUID, "wh-1"),
                (event_uuid.clone(), "ev-1")
            ]),
            Some("idem-1".into())
        );
        assert_eq!(
            id(&[(WEBHOOK_UUID, "wh-1"), (event_uuid.clone(), "ev-1")]),
            Some("wh-1".into())
        );
        assert_eq!(id(&[(event_uuid, "ev-1")]), None);
    }
}
