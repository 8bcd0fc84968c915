//! Travis CI webhooks: `Signature` = base64 RSA-SHA1 PKCS#1 v1.5 signature, by Travis's
//! private key, over the value of the urlencoded form field `payload`.
//!
//! Defends against forged Travis notifications. Travis signs the *decoded* `payload` field,
//! not the raw body, so this is the one scheme that must parse before verifying; the parse is
//! bounded by the body limit, and a body with zero or several `payload` fields is refused (no
//! ambiguity about which value was signed). SHA-1 is Travis's choice, not ours. Public keys
//! come from the config (PEM, SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`); several keys are
//! accepted for rotation. Travis has no delivery id.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName};
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts;

use super::{Verified, VerifyError, name, required_header};

/// `Signature`.
pub const SIGNATURE: HeaderName = name("signature");
/// Smallest RSA modulus accepted, in bits.
pub const MIN_KEY_BITS: usize = 1024;

/// A configured public key could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    /// Not a PEM RSA public key.
    #[error("not a PEM RSA public key")]
    Pem,
    /// Modulus shorter than [`MIN_KEY_BITS`].
    #[error("RSA key shorter than {MIN_KEY_BITS} bits")]
    TooShort,
    /// No key configured.
    #[error("no public key configured")]
    None,
}

/// Travis verifier config.
#[derive(Debug, Clone)]
pub struct Travis {
    /// Each key with its modulus length in bytes (the exact signature length).
    keys: Vec<(VerifyingKey<sha1::Sha1>, usize)>,
}

impl Travis {
    /// Parses each PEM public key.
    pub fn from_pem(pems: &[&str]) -> Result<Travis, InvalidKey> {
        if pems.is_empty() {
            return Err(InvalidKey::None);
        }
        let keys = pems
            .iter()
            .map(|pem| {
                let key = RsaPublicKey::from_public_key_pem(pem.trim())
                    .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
                    .map_err(|_| InvalidKey::Pem)?;
                if key.size() * 8 < MIN_KEY_BITS {
                    return Err(InvalidKey::TooShort);
                }
                let size = key.size();
                Ok((VerifyingKey::<sha1::Sha1>::new(key), size))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Travis { keys })
    }

    /// Checks the signature over the `payload` field of the urlencoded `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let value = required_header(headers, &SIGNATURE)?;
        // A signature is exactly as long as the modulus; anything else (truncated) is malformed.
        let sig = STANDARD
            .decode(value.trim())
            .ok()
            .filter(|bytes| self.keys.iter().any(|(_, size)| *size == bytes.len()))
            .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
            .ok_or(VerifyError::MalformedHeader(SIGNATURE))?;
        let payload = payload_field(body)?;
        let matched = self.keys.iter().fold(false, |m, (key, _)| {
            key.verify(payload.as_bytes(), &sig).is_ok() | m
        });
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        Ok(Verified::default())
    }
}

/// The single `payload` field of a urlencoded body.
fn payload_field(body: &[u8]) -> Result<String, VerifyError> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| VerifyError::MalformedBody("not application/x-www-form-urlencoded"))?;
    let mut payloads = fields
        .into_iter()
        .filter(|(k, _)| k == "payload")
        .map(|(_, v)| v);
    match (payloads.next(), payloads.next()) {
        (Some(p), None) => Ok(p),
        (None, _) => Err(VerifyError::MalformedBody("no payload field")),
        (Some(_), Some(_)) => Err(VerifyError::MalformedBody("several payload fields")),
    }
}

#[cfg(test)]
mod tests {
    use rsa::RsaPrivateKey;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::rand_core::{CryptoRng, RngCore};
    use rsa::signature::{SignatureEncoding, Signer};
    use sha2::{Digest, Sha256};

    use super::super::test_support::*;
    use super::*;

    /// Deterministic test RNG (SHA-256 in counter mode): key generation only, never for secrets.
    struct TestRng(u64);

    impl RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(32) {
                self.0 += 1;
                let block = Sha256::digest(self.0.to_le_bytes());
                chunk.copy_from_slice(&block[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl CryptoRng for TestRng {}

    fn keypair(seed: u64) -> (SigningKey<sha1::Sha1>, String) {
        let private = RsaPrivateKey::new(&mut TestRng(seed), 1024).unwrap();
        let pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (SigningKey::<sha1::Sha1>::new(private), pem)
    }

    const PAYLOAD: &str = r#"{"id":1,"status_message":"Passed","branch":"main"}"#;

    fn body(payload: &str) -> Vec<u8> {
        serde_urlencoded::to_string([("payload", payload)])
            .unwrap()
            .into_bytes()
    }

    fn signature(key: &SigningKey<sha1::Sha1>, payload: &str) -> String {
        STANDARD.encode(key.sign(payload.as_bytes()).to_vec())
    }

    #[track_caller]
    fn check(v: &Travis, sig: Option<&str>, body: &[u8], expected: Result<(), VerifyError>) {
        let pairs: Vec<_> = sig.iter().map(|s| (SIGNATURE, (*s).to_owned())).collect();
        assert_eq!(v.verify(&headers(&pairs), body).map(|_| ()), expected);
    }

    #[test]
    fn sign_verify_and_failures() {
        let (key, pem) = keypair(1);
        let (other_key, other_pem) = keypair(2);
        let v = Travis::from_pem(&[&pem]).unwrap();
        let sig = signature(&key, PAYLOAD);
        check(&v, Some(&sig), &body(PAYLOAD), Ok(()));
        // wrong key
        check(
            &v,
            Some(&signature(&other_key, PAYLOAD)),
            &body(PAYLOAD),
            Err(VerifyError::Mismatch),
        );
        // tampered payload
        check(
            &v,
            Some(&sig),
            &body(&PAYLOAD.replace("Passed", "Failed")),
            Err(VerifyError::Mismatch),
        );
        // truncated signature
        check(
            &v,
            Some(&sig[..sig.len() - 8]),
            &body(PAYLOAD),
            Err(VerifyError::MalformedHeader(SIGNATURE)),
        );
        check(
            &v,
            Some("not base64!"),
            &body(PAYLOAD),
            Err(VerifyError::MalformedHeader(SIGNATURE)),
        );
        check(
            &v,
            None,
            &body(PAYLOAD),
            Err(VerifyError::MissingHeader(SIGNATURE)),
        );
        check(
            &v,
            Some(&sig),
            b"other=1",
            Err(VerifyError::MalformedBody("no payload field")),
        );
        let twice = format!(
            "{}&{}",
            String::from_utf8(body(PAYLOAD)).unwrap(),
            String::from_utf8(body("{}")).unwrap()
        );
        check(
            &v,
            Some(&sig),
            twice.as_bytes(),
            Err(VerifyError::MalformedBody("several payload fields")),
        );
        // rotation: either key
        let both = Travis::from_pem(&[&other_pem, &pem]).unwrap();
        check(&both, Some(&sig), &body(PAYLOAD), Ok(()));
    }

    #[test]
    fn verifier_cannot_sign_travis() {
        let (_, pem) = keypair(4);
        let v = super::super::Verifier::Travis(Travis::from_pem(&[&pem]).unwrap());
        assert_eq!(
            v.sign(b"", 0),
            Err(super::super::SignError::NeedsPrivateKey("travis"))
        );
        assert_eq!(v.credential_headers(), vec![SIGNATURE]);
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(Travis::from_pem(&[]).err(), Some(InvalidKey::None));
        assert_eq!(
            Travis::from_pem(&["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]).err(),
            Some(InvalidKey::Pem)
        );
        let private = RsaPrivateKey::new(&mut TestRng(3), 512).unwrap();
        let pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(Travis::from_pem(&[&pem]).err(), Some(InvalidKey::TooShort));
    }
}
