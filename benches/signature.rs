//! Per-scheme signature verification over 1 KiB and 64 KiB bodies (valid signatures: the full
//! cost of an accepted delivery). Verifiers are built through the config path, as `serve` does.
// criterion_main! defines the bench's `main` without a doc comment.
#![allow(missing_docs)]
#![expect(
    clippy::expect_used,
    reason = "bench setup: a failure there is a bug in the bench"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use saltgate::config::hooks::{RawVerify, verifier};
use saltgate::security::Verifier;

const NOW: i64 = 1_790_000_000;
const SIZES: [usize; 2] = [1024, 64 * 1024];

fn json_body(size: usize) -> Vec<u8> {
    let head = br#"{"ref":"refs/heads/main","pad":""#;
    let mut body = head.to_vec();
    body.resize(size.saturating_sub(2), b'x');
    body.extend_from_slice(br#""}"#);
    body
}

fn header_map(pairs: &[(HeaderName, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            k.clone(),
            HeaderValue::from_str(v).expect("signature headers are ASCII"),
        );
    }
    map
}

/// The verifier `yaml` configures, written as under a rule's `verify:`.
fn build(yaml: &str) -> Verifier {
    let env = HashMap::from([
        (
            "BENCH_SECRET".to_owned(),
            "bench-secret-0123456789".to_owned(),
        ),
        (
            "BENCH_WHSEC".to_owned(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ),
    ]);
    let raw: RawVerify =
        serde_yaml::with::singleton_map::deserialize(serde_yaml::Deserializer::from_str(yaml))
            .expect("bench verifier settings");
    verifier("bench", &raw, &env).expect("bench verifier config")
}

/// The HMAC and token schemes, each with headers from `Verifier::sign`.
fn hmac_schemes() -> Vec<(&'static str, Verifier)> {
    let secret = |scheme: &'static str| {
        (
            scheme,
            build(&format!("{scheme}: {{secret_env: BENCH_SECRET}}")),
        )
    };
    vec![
        secret("github"),
        secret("gitlab"),
        secret("gitea"),
        secret("bitbucket"),
        secret("slack"),
        secret("stripe"),
        (
            "standard_webhooks",
            build("standard_webhooks: {secret_env: BENCH_WHSEC}"),
        ),
        (
            "hmac_sha512_base64",
            build(
                "hmac: {secret_env: BENCH_SECRET, header: X-Bench-Signature, algorithm: sha512, \
                 encoding: base64}",
            ),
        ),
        (
            "token",
            build("token: {secret_env: BENCH_SECRET, header: X-Bench-Token}"),
        ),
    ]
}

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for size in SIZES {
        let body = json_body(size);
        group.throughput(Throughput::Bytes(size as u64));
        for (name, v) in hmac_schemes() {
            let headers = header_map(&v.sign(&body, NOW).expect("scheme can sign"));
            assert!(v.verify(&headers, &body, NOW).is_ok(), "{name}: bad setup");
            group.bench_with_input(BenchmarkId::new(name, size), &body, |b, body| {
                b.iter(|| v.verify(black_box(&headers), black_box(body), NOW))
            });
        }
        // Travis: RSA-SHA1 over the `payload` form field, with a 2048-bit key made here.
        let (travis, headers, form) = travis_case(&body);
        group.bench_with_input(BenchmarkId::new("travis", size), &form, |b, form| {
            b.iter(|| travis.verify(black_box(&headers), black_box(form), NOW))
        });
    }
    group.finish();
}

fn travis_case(payload: &[u8]) -> (Verifier, HeaderMap, Vec<u8>) {
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa keygen");
    let pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("travis.pub");
    std::fs::write(&file, pem).expect("write pem");
    let v = build(&format!(
        "travis: {{public_key_files: [{}]}}",
        file.display()
    ));
    let payload = String::from_utf8_lossy(payload).into_owned();
    let sig = SigningKey::<sha1::Sha1>::new(private).sign(payload.as_bytes());
    let headers = header_map(&[(
        HeaderName::from_static("signature"),
        STANDARD.encode(sig.to_vec()),
    )]);
    let form = serde_urlencoded::to_string([("payload", payload)])
        .expect("form")
        .into_bytes();
    assert!(v.verify(&headers, &form, NOW).is_ok(), "travis: bad setup");
    (v, headers, form)
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = bench_verify
}
criterion_main!(benches);
