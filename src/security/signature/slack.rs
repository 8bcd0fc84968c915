//! Slack request signing, version `v0`:
//! `X-Slack-Signature: v0=hex(HMAC-SHA256("v0:" + X-Slack-Request-Timestamp + ":" + body))`.
//!
//! Defends against forged and replayed Slack requests. The timestamp is part of the signed
//! content, so after the signature passes a timestamp outside the tolerance (default 300 s, in
//! both directions) is refused as stale. Slack has no delivery id.

use std::time::Duration;

use http::{HeaderMap, HeaderName};

use super::{
    HashAlg, Verified, VerifyError, check_prefixed_hex, name, parse_unix, required_header,
};
use crate::security::replay::check_timestamp;
use crate::security::secret::{Secret, SecretSet};

/// `X-Slack-Signature`.
pub const SIGNATURE: HeaderName = name("x-slack-signature");
/// `X-Slack-Request-Timestamp`.
pub const TIMESTAMP: HeaderName = name("x-slack-request-timestamp");
/// Slack's recommended window.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Slack verifier config.
#[derive(Debug, Clone)]
pub struct Slack {
    secrets: SecretSet,
    tolerance: Duration,
}

impl Slack {
    /// A verifier for `secrets` (signing secrets) accepting timestamps within `tolerance`.
    pub fn new(secrets: SecretSet, tolerance: Duration) -> Slack {
        Slack { secrets, tolerance }
    }

    /// The configured secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }

    /// Checks the signature over the raw `body`, then the timestamp against `now_unix`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyError> {
        let ts_raw = required_header(headers, &TIMESTAMP)?;
        let ts = parse_unix(ts_raw, &TIMESTAMP)?;
        let value = required_header(headers, &SIGNATURE)?;
        let parts: [&[u8]; 4] = [b"v0:", ts_raw.as_bytes(), b":", body];
        check_prefixed_hex(
            value,
            "v0=",
            HashAlg::Sha256,
            &SIGNATURE,
            &self.secrets,
            &parts,
        )?;
        check_timestamp(ts, now_unix, self.tolerance)?;
        Ok(Verified {
            delivery_id: None,
            timestamp: Some(ts),
        })
    }
}

/// The signature and timestamp headers for `body` at `now_unix`.
pub fn sign(secret: &Secret, body: &[u8], now_unix: i64) -> Vec<(HeaderName, String)> {
    let ts = now_unix.to_string();
    let mac = HashAlg::Sha256.mac(secret.expose(), &[b"v0:", ts.as_bytes(), b":", body]);
    vec![
        (SIGNATURE, format!("v0={}", hex::encode(mac))),
        (TIMESTAMP, ts),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::security::replay::Stale;

    // Slack docs, "Verifying requests from Slack": the worked example.
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TS: i64 = 1_531_420_618;
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn h() -> HeaderMap {
        headers(&[
            (SIGNATURE, DOC_SIG.to_owned()),
            (TIMESTAMP, DOC_TS.to_string()),
        ])
    }

    fn v(list: &[&str]) -> Slack {
        Slack::new(secrets(list), DEFAULT_TOLERANCE)
    }

    #[track_caller]
    fn check(v: &Slack, map: HeaderMap, now: i64, expected: Result<(), VerifyError>) {
        assert_eq!(
            v.verify(&map, DOC_BODY.as_bytes(), now).map(|_| ()),
            expected
        );
    }

    #[test]
    fn published_vector() {
        let got = v(&[DOC_SECRET])
            .verify(&h(), DOC_BODY.as_bytes(), DOC_TS + 10)
            .unwrap();
        assert_eq!(got.timestamp, Some(DOC_TS));
        assert_eq!(
            sign(&secret(DOC_SECRET), DOC_BODY.as_bytes(), DOC_TS)[0].1,
            DOC_SIG
        );
    }

    #[test]
    fn failures() {
        let good = v(&[DOC_SECRET]);
        check(&v(&["nope"]), h(), DOC_TS, Err(VerifyError::Mismatch));
        check(
            &good,
            with(h(), &SIGNATURE, &DOC_SIG[..40]),
            DOC_TS,
            Err(VerifyError::MalformedHeader(SIGNATURE)),
        );
        check(
            &good,
            with(h(), &SIGNATURE, &DOC_SIG.replace("v0=", "v1=")),
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
            without(h(), &TIMESTAMP),
            DOC_TS,
            Err(VerifyError::MissingHeader(TIMESTAMP)),
        );
        check(
            &good,
            with(h(), &TIMESTAMP, "-1531420618"),
            DOC_TS,
            Err(VerifyError::MalformedHeader(TIMESTAMP)),
        );
        // a changed timestamp breaks the signature
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
        check(&v(&["rotated", DOC_SECRET]), h(), DOC_TS, Ok(()));
    }
}
