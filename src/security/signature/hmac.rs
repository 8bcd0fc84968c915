//! Generic HMAC signatures for senders without a dedicated scheme: a configured header holding
//! `[prefix]<hex|base64 HMAC of the body>`.
//!
//! Defends against forged deliveries from such senders. SHA-256 and SHA-512 are available;
//! SHA-1 only when the config explicitly opts in (`allow_sha1`), so nobody gets it by typo.
//! Hex must be lower case and base64 is standard with padding, so each MAC has one spelling.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName};

use super::{HashAlg, Verified, VerifyError, decode_hex_tag, delivery_id, required_header};
use crate::security::secret::SecretSet;

/// How the MAC is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lower-case hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// SHA-1 was configured without `allow_sha1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HMAC-SHA1 needs allow_sha1: true")]
pub struct WeakAlgorithm;

/// Everything a generic HMAC rule configures.
#[derive(Debug, Clone)]
pub struct GenericHmacConfig {
    /// Secrets (rotation: any may match).
    pub secrets: SecretSet,
    /// The header carrying the MAC.
    pub header: HeaderName,
    /// The hash function.
    pub algorithm: HashAlg,
    /// How the MAC is encoded.
    pub encoding: Encoding,
    /// A literal prefix before the MAC, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// A header carrying a delivery id for the replay guard (unsigned).
    pub delivery_header: Option<HeaderName>,
    /// Permit [`HashAlg::Sha1`].
    pub allow_sha1: bool,
}

/// A validated generic HMAC verifier.
#[derive(Debug, Clone)]
pub struct GenericHmac {
    cfg: GenericHmacConfig,
}

impl GenericHmac {
    /// Validates `cfg`: SHA-1 needs `allow_sha1`.
    pub fn new(cfg: GenericHmacConfig) -> Result<GenericHmac, WeakAlgorithm> {
        if cfg.algorithm == HashAlg::Sha1 && !cfg.allow_sha1 {
            return Err(WeakAlgorithm);
        }
        Ok(GenericHmac { cfg })
    }

    /// The signature header.
    pub fn header(&self) -> &HeaderName {
        &self.cfg.header
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.cfg.secrets
    }

    /// Checks the MAC over the raw `body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let cfg = &self.cfg;
        let value = required_header(headers, &cfg.header)?;
        let encoded = value
            .strip_prefix(cfg.prefix.as_deref().unwrap_or(""))
            .ok_or_else(|| VerifyError::WrongAlgorithm(cfg.header.clone()))?;
        let tag = match cfg.encoding {
            Encoding::Hex => decode_hex_tag(encoded, cfg.algorithm, &cfg.header)?,
            Encoding::Base64 => match STANDARD.decode(encoded) {
                Ok(tag) if tag.len() == cfg.algorithm.len() => tag,
                _ => return Err(VerifyError::MalformedHeader(cfg.header.clone())),
            },
        };
        if !cfg
            .secrets
            .any(|s| cfg.algorithm.verify(s.expose(), &[body], &tag))
        {
            return Err(VerifyError::Mismatch);
        }
        let id = match &cfg.delivery_header {
            Some(h) => delivery_id(headers, h)?,
            None => None,
        };
        Ok(Verified {
            delivery_id: id,
            timestamp: None,
        })
    }

    /// The signature header for `body`, with the primary secret.
    pub fn sign(&self, body: &[u8]) -> Vec<(HeaderName, String)> {
        let cfg = &self.cfg;
        let mac = cfg.algorithm.mac(cfg.secrets.primary().expose(), &[body]);
        let encoded = match cfg.encoding {
            Encoding::Hex => hex::encode(mac),
            Encoding::Base64 => STANDARD.encode(mac),
        };
        let prefix = cfg.prefix.as_deref().unwrap_or("");
        vec![(cfg.header.clone(), format!("{prefix}{encoded}"))]
    }
}

#[cfg(test)]
mod tests {
    use super::super::name;
    use super::super::test_support::*;
    use super::*;

    const H: HeaderName = name("x-signature");

    fn cfg(
        list: &[&str],
        algorithm: HashAlg,
        encoding: Encoding,
        prefix: Option<&str>,
    ) -> GenericHmacConfig {
        GenericHmacConfig {
            secrets: secrets(list),
            header: H,
            algorithm,
            encoding,
            prefix: prefix.map(str::to_owned),
            delivery_header: Some(name("x-delivery")),
            allow_sha1: false,
        }
    }

    fn v(
        list: &[&str],
        algorithm: HashAlg,
        encoding: Encoding,
        prefix: Option<&str>,
    ) -> GenericHmac {
        GenericHmac::new(cfg(list, algorithm, encoding, prefix)).unwrap()
    }

    #[track_caller]
    fn check(v: &GenericHmac, value: &str, expected: Result<(), VerifyError>) {
        let map = headers(&[(H, value.to_owned())]);
        assert_eq!(v.verify(&map, b"Hello, World!").map(|_| ()), expected);
    }

    #[test]
    fn known_answers() {
        // GitHub's published HMAC-SHA256 vector through the generic verifier.
        let sha256 = v(
            &["It's a Secret to Everybody"],
            HashAlg::Sha256,
            Encoding::Hex,
            Some("sha256="),
        );
        check(
            &sha256,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            Ok(()),
        );
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let rfc = v(&["Jefe"], HashAlg::Sha512, Encoding::Hex, None);
        let map = headers(&[(H, "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737".to_owned())]);
        assert!(rfc.verify(&map, b"what do ya want for nothing?").is_ok());
    }

    #[test]
    fn sha1_needs_opt_in() {
        let mut c = cfg(&["k"], HashAlg::Sha1, Encoding::Hex, None);
        assert!(matches!(GenericHmac::new(c.clone()), Err(WeakAlgorithm)));
        c.allow_sha1 = true;
        let g = GenericHmac::new(c).unwrap();
        let map = headers(&g.sign(b"Hello, World!"));
        assert!(g.verify(&map, b"Hello, World!").is_ok());
    }

    #[test]
    fn failures() {
        let b64 = v(&["k1"], HashAlg::Sha256, Encoding::Base64, Some("sha256="));
        let good = b64.sign(b"Hello, World!").remove(0).1;
        check(&b64, &good, Ok(()));
        check(
            &v(&["k2"], HashAlg::Sha256, Encoding::Base64, Some("sha256=")),
            &good,
            Err(VerifyError::Mismatch),
        );
        check(
            &b64,
            &good[..good.len() - 4],
            Err(VerifyError::MalformedHeader(H)),
        );
        check(
            &b64,
            &good.replace("sha256=", "sha512="),
            Err(VerifyError::WrongAlgorithm(H)),
        );
        check(
            &v(
                &["k2", "k1"],
                HashAlg::Sha256,
                Encoding::Base64,
                Some("sha256="),
            ),
            &good,
            Ok(()),
        );
        let map = HeaderMap::new();
        assert_eq!(b64.verify(&map, b""), Err(VerifyError::MissingHeader(H)));
        // a sha256 MAC offered to a sha512 rule has the wrong length
        let hex512 = v(&["k1"], HashAlg::Sha512, Encoding::Hex, None);
        let mac256 = hex::encode(HashAlg::Sha256.mac(b"k1", &[b"Hello, World!"]));
        check(&hex512, &mac256, Err(VerifyError::MalformedHeader(H)));
    }

    #[test]
    fn delivery_header() {
        let g = v(&["k"], HashAlg::Sha256, Encoding::Hex, None);
        let mut map = headers(&g.sign(b"x"));
        map.insert(name("x-delivery"), "d-1".parse().unwrap());
        assert_eq!(
            g.verify(&map, b"x").unwrap().delivery_id.as_deref(),
            Some("d-1")
        );
    }
}
