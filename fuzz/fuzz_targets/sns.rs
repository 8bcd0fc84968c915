//! The Amazon SNS message parser and verifier (src/security/signature/sns.rs) through the hook
//! pipeline's async entry (src/api/sns.rs `verify_sns`, with its certificate cache): JSON
//! message, header agreement, topic, the strict URL checks, the certificate (PEM chain or DER,
//! validity, key size, optional chain to a root), the canonical string and the RSA signature.
//!
//! Input: first line `[anchored] [cert=pem|der|rogue|input] [now=<unix seconds>]`, then
//! header lines, a blank line, and the message body. The certificate served for the message's
//! `SigningCertURL` is the test leaf (`pem`, default), its DER form, a certificate of another CA
//! (`rogue`), or, with `cert=input`, the body itself while the message is a fixed valid one.
//! `anchored` requires a chain to the test CA. Seeds are deliveries signed with the test key.
#![no_main]

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use saltgate::api::hook::sns::{CertCache, SnsFetchError, SnsHttp, verify_sns};
use saltgate::security::signature::sns::{Sns, SnsUrl};
use saltgate_fuzz::{first_text, fixtures, message, pem_to_der};

/// A valid signed notification (the `notification-v2` seed's body).
const VALID: &[u8] = include_bytes!("../corpus/sns/notification-v2");

#[derive(Debug)]
struct Serve(Vec<u8>);

impl SnsHttp for Serve {
    fn get<'a>(
        &'a self,
        url: &'a SnsUrl,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, SnsFetchError>> {
        let _ = url.as_str();
        let body = self.0.clone();
        Box::pin(async move {
            if body.len() > max {
                Err(SnsFetchError::TooLarge(max))
            } else {
                Ok(body)
            }
        })
    }
}

fn rules() -> &'static (Sns, Sns) {
    static RULES: OnceLock<(Sns, Sns)> = OnceLock::new();
    RULES.get_or_init(|| {
        let plain = Sns::new(vec![fixtures::SNS_TOPIC.to_owned()]).expect("topic");
        let ca = pem_to_der(fixtures::SNS_CA_PEM);
        let anchored = plain.clone().with_trust_anchors(&[&ca]).expect("anchor");
        (plain, anchored)
    })
}

fuzz_target!(|data: &[u8]| {
    let m = message(data);
    let first = first_text(&m);
    let (mut anchored, mut cert, mut now) = (false, "pem", fixtures::SNS_NOW);
    for w in first.split_ascii_whitespace() {
        match w {
            "anchored" => anchored = true,
            w if w.starts_with("cert=") => cert = &w[5..],
            w => {
                if let Some(t) = w.strip_prefix("now=").and_then(|t| t.parse().ok()) {
                    now = t;
                }
            }
        }
    }
    let (headers, body, served) = match cert {
        "input" => {
            let valid = message(VALID);
            (valid.headers, valid.body.to_vec(), m.body.to_vec())
        }
        "der" => (m.headers, m.body.to_vec(), fixtures::SNS_LEAF_DER.to_vec()),
        "rogue" => (m.headers, m.body.to_vec(), fixtures::SNS_ROGUE_PEM.to_vec()),
        _ => (m.headers, m.body.to_vec(), fixtures::SNS_LEAF_PEM.to_vec()),
    };
    let (plain, with_ca) = rules();
    let rule = if anchored { with_ca } else { plain };
    let _ = rule.signing_cert_url(&body);
    let cache = CertCache::new(Arc::new(Serve(served)));
    let result = futures::executor::block_on(verify_sns(rule, &cache, &headers, &body, now));
    if let Ok(v) = &result {
        assert!(!v.delivery_id.is_empty() && v.delivery_id.len() <= 256);
        assert_eq!(v.topic_arn, fixtures::SNS_TOPIC);
        let _ = v.verified();
        let _ = format!("{:?}", v.subscribe_url);
    }
});
