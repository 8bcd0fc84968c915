//! Plain shared tokens: a secret sent as is, in a named header or as `Authorization: Bearer`.
//!
//! Defends against unauthenticated deliveries from senders that cannot sign. The token does
//! not cover the body, so it only proves the sender knows the secret (use TLS). It is compared
//! in constant time (hashed first, so the length does not leak) and its header is redacted.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};

use super::{Verified, VerifyError, required_header, token_matches};
use crate::security::secret::SecretSet;

/// Where the token is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The whole value of this header.
    Header(HeaderName),
    /// `Authorization: Bearer <token>` (scheme name case-insensitive).
    Bearer,
}

/// Token verifier config.
#[derive(Debug, Clone)]
pub struct Token {
    secrets: SecretSet,
    source: TokenSource,
}

impl Token {
    /// A verifier for `secrets` read from `source`.
    pub fn new(secrets: SecretSet, source: TokenSource) -> Token {
        Token { secrets, source }
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// The header carrying the token.
    pub fn header(&self) -> HeaderName {
        match &self.source {
            TokenSource::Header(h) => h.clone(),
            TokenSource::Bearer => AUTHORIZATION,
        }
    }

    /// Checks the token.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Verified, VerifyError> {
        let header = self.header();
        let value = required_header(headers, &header)?;
        let token = match self.source {
            TokenSource::Header(_) => value,
            TokenSource::Bearer => {
                let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(VerifyError::WrongAlgorithm(header));
                }
                rest.trim()
            }
        };
        if token.is_empty() {
            return Err(VerifyError::MalformedHeader(header));
        }
        if !self.secrets.any(|s| token_matches(s, token.as_bytes())) {
            return Err(VerifyError::Mismatch);
        }
        Ok(Verified::default())
    }

    /// The header carrying the primary token.
    pub fn sign(&self) -> Vec<(HeaderName, String)> {
        let token = String::from_utf8_lossy(self.secrets.primary().expose()).into_owned();
        match &self.source {
            TokenSource::Header(h) => vec![(h.clone(), token)],
            TokenSource::Bearer => vec![(AUTHORIZATION, format!("Bearer {token}"))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::name;
    use super::super::test_support::*;
    use super::*;

    const H: HeaderName = name("x-hook-token");

    #[track_caller]
    fn check(v: &Token, pairs: &[(HeaderName, &str)], expected: Result<(), VerifyError>) {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(n, v)| (n.clone(), (*v).to_owned()))
            .collect();
        assert_eq!(v.verify(&headers(&pairs)).map(|_| ()), expected);
    }

    #[test]
    fn named_header() {
        let v = Token::new(secrets(&["t0ken"]), TokenSource::Header(H));
        check(&v, &[(H, "t0ken")], Ok(()));
        check(&v, &[(H, "t0ke")], Err(VerifyError::Mismatch));
        check(&v, &[(H, "T0KEN")], Err(VerifyError::Mismatch));
        check(
            &v,
            &[(AUTHORIZATION, "Bearer t0ken")],
            Err(VerifyError::MissingHeader(H)),
        );
        check(
            &Token::new(secrets(&["new", "t0ken"]), TokenSource::Header(H)),
            &[(H, "t0ken")],
            Ok(()),
        );
        assert_eq!(v.sign(), vec![(H, "t0ken".to_owned())]);
    }

    #[test]
    fn bearer() {
        let v = Token::new(secrets(&["t0ken"]), TokenSource::Bearer);
        check(&v, &[(AUTHORIZATION, "Bearer t0ken")], Ok(()));
        check(&v, &[(AUTHORIZATION, "bearer t0ken")], Ok(()));
        check(
            &v,
            &[(AUTHORIZATION, "Bearer wrong")],
            Err(VerifyError::Mismatch),
        );
        check(
            &v,
            &[(AUTHORIZATION, "Basic dDA6a2Vu")],
            Err(VerifyError::WrongAlgorithm(AUTHORIZATION)),
        );
        check(
            &v,
            &[(AUTHORIZATION, "t0ken")],
            Err(VerifyError::WrongAlgorithm(AUTHORIZATION)),
        );
        check(
            &v,
            &[(AUTHORIZATION, "Bearer ")],
            Err(VerifyError::MalformedHeader(AUTHORIZATION)),
        );
        check(&v, &[], Err(VerifyError::MissingHeader(AUTHORIZATION)));
    }
}
