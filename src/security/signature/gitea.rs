//! Gitea and Forgejo webhooks: `X-Gitea-Signature` / `X-Forgejo-Signature`, the hex
//! HMAC-SHA256 of the body with no prefix.
//!
//! Defends against forged Gitea/Forgejo deliveries. Forgejo sends both headers with the same
//! value; the Forgejo one is checked when present, otherwise the Gitea one. The delivery id
//! (`X-Forgejo-Delivery` / `X-Gitea-Delivery`) is returned for the replay guard.
//!
//! A hook set to the `application/x-www-form-urlencoded` content type is delivered as
//! `payload=<urlencoded JSON>` but signed over the JSON itself. So a form body that is exactly
//! one `payload` field is checked against that field's decoded value when the raw body does not
//! match; nothing outside the signed bytes reaches the event, because there is no other field.

use http::{HeaderMap, HeaderName, header::CONTENT_TYPE};

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

/// `X-Gogs-Signature`: Gitea also sends the same MAC under Gogs' name.
pub const GOGS_SIGNATURE: HeaderName = name("x-gogs-signature");

/// Every header a Gitea or Forgejo delivery carries a MAC of the payload in: its own, Gogs',
/// and GitHub's two (`X-Hub-Signature` SHA-1, `X-Hub-Signature-256`), all kept out of events.
pub const CREDENTIAL_HEADERS: [HeaderName; 5] = [
    GITEA_SIGNATURE,
    FORGEJO_SIGNATURE,
    GOGS_SIGNATURE,
    super::github::SIGNATURE_256,
    super::github::SIGNATURE_SHA1,
];

/// The decoded `payload` of a form body made of that one field, else `None`.
fn form_payload(headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let media = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media = media.split(';').next()?.trim();
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return None;
    }
    let mut fields = form_urlencoded::parse(body);
    match (fields.next(), fields.next()) {
        (Some((key, value)), None) if key == "payload" => Some(value.into_owned().into_bytes()),
        _ => None,
    }
}

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

    /// Checks the signature over the raw `body`, or over the JSON of a form delivery.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let (value, header) = match single_header(headers, &FORGEJO_SIGNATURE)? {
            Some(v) => (v, &FORGEJO_SIGNATURE),
            None => match single_header(headers, &GITEA_SIGNATURE)? {
                Some(v) => (v, &GITEA_SIGNATURE),
                None => return Err(VerifyError::MissingHeader(GITEA_SIGNATURE)),
            },
        };
        let check = |signed: &[u8]| {
            check_prefixed_hex(value, "", HashAlg::Sha256, header, &self.secrets, &[signed])
        };
        match check(body) {
            Err(VerifyError::Mismatch) => match form_payload(headers, body) {
                Some(payload) => check(&payload)?,
                None => return Err(VerifyError::Mismatch),
            },
            other => other?,
        }
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

    /// A form delivery as Gitea sends it: `payload=<urlencoded JSON>`, signed over the JSON.
    #[test]
    fn form_deliveries_are_checked_against_their_payload() {
        let v = Gitea::new(secrets(&[SECRET]));
        let json = br#"{"ref":"refs/heads/main","note":"a b&c=d"}"#;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(json).unwrap())
            .finish();
        let sig = sign(&secret(SECRET), json).remove(0).1;
        let form = |ct: &str, body: &str| {
            let map = headers(&[
                (GITEA_SIGNATURE, sig.clone()),
                (CONTENT_TYPE, ct.to_owned()),
            ]);
            v.verify(&map, body.as_bytes()).map(|_| ())
        };
        assert_eq!(form("application/x-www-form-urlencoded", &body), Ok(()));
        assert_eq!(
            form("Application/X-WWW-Form-Urlencoded; charset=utf-8", &body),
            Ok(())
        );
        // Only a body that is that one field: anything else would be unsigned content.
        assert_eq!(
            form(
                "application/x-www-form-urlencoded",
                &format!("{body}&extra=1")
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            form(
                "application/x-www-form-urlencoded",
                &body.replace("payload=", "data=")
            ),
            Err(VerifyError::Mismatch)
        );
        // The JSON content type means the raw body is what was signed.
        assert_eq!(form("application/json", &body), Err(VerifyError::Mismatch));
        assert_eq!(
            form(
                "application/x-www-form-urlencoded",
                &body.replace("main", "evil")
            ),
            Err(VerifyError::Mismatch)
        );
    }
}
