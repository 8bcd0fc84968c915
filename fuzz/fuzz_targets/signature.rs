//! Every signature scheme's header parsing and verification (src/security/signature/*):
//! github (and its legacy SHA-1 mode), gitlab, gitea, bitbucket, slack, stripe,
//! standard_webhooks, generic hmac (hex with prefix, base64, SHA-1 opt-in), token (named
//! header, bearer) and travis.
//!
//! Input: first line `<scheme> [sign] [now=<unix seconds>]`, then header lines, a blank line,
//! and the body (see `saltgate_fuzz::message`). An unknown scheme name picks one by its
//! length, so random inputs still reach every verifier. The secrets are the ones of the unit
//! tests' published vectors plus `fuzz-secret`, so real signed deliveries verify.
//!
//! `sign`: the target signs the body itself (primary secret) and adds those headers before
//! the input's own; with no header lines in the input, verification must then succeed, and
//! must fail for any other body.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use saltgate::security::signature::hmac::{Encoding, GenericHmac, GenericHmacConfig};
use saltgate::security::signature::token::{Token, TokenSource};
use saltgate::security::signature::{
    HashAlg, Verifier, bitbucket, gitea, github, gitlab, slack, standard_webhooks, stripe, travis,
};
use saltgate::security::{Secret, SecretSet};
use saltgate_fuzz::{first_text, fixtures, message};

const NOW: i64 = 1_700_000_000;

fn secrets(primary: &str) -> SecretSet {
    let list = [primary, "fuzz-secret"]
        .iter()
        .filter_map(|s| Secret::new(s.as_bytes().to_vec()).ok())
        .collect();
    SecretSet::new(list).expect("secrets")
}

fn hmac(alg: HashAlg, encoding: Encoding, prefix: Option<&str>) -> Verifier {
    Verifier::Hmac(
        GenericHmac::new(GenericHmacConfig {
            secrets: secrets("hmac-secret"),
            header: HeaderName::from_static("x-signature"),
            algorithm: alg,
            encoding,
            prefix: prefix.map(str::to_owned),
            delivery_header: Some(HeaderName::from_static("x-delivery")),
            allow_sha1: alg == HashAlg::Sha1,
        })
        .expect("hmac"),
    )
}

fn verifiers() -> &'static [(&'static str, Verifier)] {
    static ALL: OnceLock<Vec<(&'static str, Verifier)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let doc = "It's a Secret to Everybody";
        let tol = Duration::from_secs(300);
        vec![
            (
                "github",
                Verifier::Github(github::Github::new(secrets(doc))),
            ),
            (
                "github-sha1",
                Verifier::Github(github::Github::new(secrets(doc)).with_legacy_sha1(true)),
            ),
            (
                "gitlab",
                Verifier::Gitlab(gitlab::Gitlab::new(secrets("gitlab-token"))),
            ),
            ("gitea", Verifier::Gitea(gitea::Gitea::new(secrets(doc)))),
            (
                "bitbucket",
                Verifier::Bitbucket(bitbucket::Bitbucket::new(secrets(doc))),
            ),
            (
                "slack",
                Verifier::Slack(slack::Slack::new(
                    secrets("8f742231b10e8888abcd99yyyzzz85a5"),
                    tol,
                )),
            ),
            (
                "stripe",
                Verifier::Stripe(stripe::Stripe::new(secrets("whsec_test_secret"), tol)),
            ),
            (
                "standard_webhooks",
                Verifier::StandardWebhooks(
                    standard_webhooks::StandardWebhooks::new(
                        // Keys are base64 (`whsec_` + base64), so no `fuzz-secret` here.
                        &SecretSet::single(
                            Secret::new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec())
                                .expect("key"),
                        ),
                        tol,
                    )
                    .expect("whsec key"),
                ),
            ),
            (
                "hmac",
                hmac(HashAlg::Sha256, Encoding::Hex, Some("sha256=")),
            ),
            ("hmac-b64", hmac(HashAlg::Sha512, Encoding::Base64, None)),
            ("hmac-sha1", hmac(HashAlg::Sha1, Encoding::Hex, None)),
            (
                "token",
                Verifier::Token(Token::new(
                    secrets("shared-token"),
                    TokenSource::Header(HeaderName::from_static("x-token")),
                )),
            ),
            (
                "bearer",
                Verifier::Token(Token::new(secrets("shared-token"), TokenSource::Bearer)),
            ),
            (
                "travis",
                Verifier::Travis(travis::Travis::from_pem(&[fixtures::TRAVIS_PUB]).expect("key")),
            ),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let m = message(data);
    let first = first_text(&m);
    let mut words = first.split_ascii_whitespace();
    let scheme = words.next().unwrap_or_default();
    let mut sign = false;
    let mut now = NOW;
    for w in words {
        if w == "sign" {
            sign = true;
        } else if let Some(t) = w.strip_prefix("now=").and_then(|t| t.parse().ok()) {
            now = t;
        }
    }
    let all = verifiers();
    let verifier = match all.iter().find(|(name, _)| *name == scheme) {
        Some((_, v)) => v,
        None => &all[scheme.len() % all.len()].1,
    };

    let mut headers = m.headers;
    let signed = sign.then(|| verifier.sign(m.body, now).ok()).flatten();
    if let Some(signed) = &signed {
        let own = std::mem::take(&mut headers);
        for (name, value) in signed {
            headers.append(
                name.clone(),
                HeaderValue::from_str(value).expect("signed header"),
            );
        }
        for (name, value) in &own {
            headers.append(name.clone(), value.clone());
        }
    }

    let result = verifier.verify(&headers, m.body, now);
    if let Ok(v) = &result {
        if let Some(id) = &v.delivery_id {
            assert!(!id.is_empty() && id.len() <= 256, "delivery id bounds");
        }
    }
    let _ = verifier.credential_headers();
    if signed.is_some() && !m.had_headers {
        assert!(
            result.is_ok(),
            "{scheme}: own signature refused: {result:?}"
        );
        // Any other body must fail (gitlab and token do not sign the body).
        if !matches!(verifier, Verifier::Gitlab(_) | Verifier::Token(_)) {
            let mut other = m.body.to_vec();
            other.push(b'x');
            assert!(
                verifier.verify(&headers, &other, now).is_err(),
                "{scheme}: signature accepted for another body"
            );
        }
    }
});
