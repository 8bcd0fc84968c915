//! The hook path's CPU steps after verification: body parsing (`api::hook::event::parse_body`), event
//! packing (`Event::pack`) and bus framing (`encode_frame` / `decode_frame`), at 1 KiB and 64 KiB;
//! and the per-request rate check (`RateLimiter::check`, `AuthThrottle::check`).
// criterion_main! defines the bench's `main` without a doc comment.
#![allow(missing_docs)]
#![expect(
    clippy::expect_used,
    reason = "bench setup: a failure there is a bug in the bench"
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use rmpv::Value;
use saltgate::api::hook::event::parse_body;
use saltgate::salt::Event;
use saltgate::salt::event::{hook_tag, stamp_now};
use saltgate::salt::wire::framing::{Decoded, Framing, decode_frame, encode_frame};
use saltgate::security::rate::{ClientKeys, RateLimiter, RateQuota};
use saltgate::security::throttle::{AuthThrottle, ThrottleSettings};

const SIZES: [usize; 2] = [1024, 64 * 1024];

/// A GitHub-like push payload of about `size` bytes: nested objects, an array, a long string.
fn json_body(size: usize) -> Vec<u8> {
    let head = r#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5","repository":{"id":1296269,"full_name":"octo/hello","private":false,"owner":{"login":"octo","id":1}},"pusher":{"name":"octo","email":"octo@example.com"},"commits":[{"id":"59b20b8","message":"Fix all the bugs","added":[],"removed":[],"modified":["README.md"]}],"pad":""#;
    let mut body = head.as_bytes().to_vec();
    body.resize(size.saturating_sub(2).max(head.len()), b'x');
    body.extend_from_slice(br#""}"#);
    body
}

fn form_body(size: usize) -> Vec<u8> {
    let mut body = b"ref=refs%2Fheads%2Fmain&who=octo&pad=".to_vec();
    body.resize(size, b'x');
    body
}

fn with_type(ct: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h
}

/// The event saltgate fires for `body`: `{_stamp, headers, post, body}`.
fn hook_event(raw: &[u8]) -> Event {
    let post = parse_body(&with_type("application/json"), raw).expect("valid JSON");
    let headers = Value::Map(
        [
            ("Content-Type", "application/json"),
            ("Host", "saltgate.example.com"),
            ("User-Agent", "GitHub-Hookshot/abc123"),
            ("X-Github-Event", "push"),
            ("X-Github-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("Remote-Addr", "140.82.115.1"),
        ]
        .into_iter()
        .map(|(k, v)| (Value::from(k), Value::from(v)))
        .collect(),
    );
    let data = Value::Map(vec![
        (Value::from("_stamp"), Value::from(stamp_now())),
        (Value::from("headers"), headers),
        (Value::from("post"), post),
        (
            Value::from("body"),
            Value::from(String::from_utf8_lossy(raw).into_owned()),
        ),
    ]);
    Event::new(hook_tag("github/deploy"), data)
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_body");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let json = json_body(size);
        let h = with_type("application/json");
        group.bench_with_input(BenchmarkId::new("json", size), &json, |b, raw| {
            b.iter(|| parse_body(black_box(&h), black_box(raw)))
        });
        let form = form_body(size);
        let h = with_type("application/x-www-form-urlencoded");
        group.bench_with_input(BenchmarkId::new("form", size), &form, |b, raw| {
            b.iter(|| parse_body(black_box(&h), black_box(raw)))
        });
    }
    group.finish();
}

fn bench_pack_and_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let event = hook_event(&json_body(size));
        group.bench_with_input(BenchmarkId::new("pack", size), &event, |b, ev| {
            b.iter(|| black_box(ev).pack())
        });
        let packed = event.pack().expect("packs");
        group.bench_with_input(BenchmarkId::new("encode_frame", size), &packed, |b, p| {
            let mut out = Vec::with_capacity(p.len() + 64);
            b.iter(|| {
                out.clear();
                encode_frame(black_box(p), Framing::Prefixed, &mut out);
                out.len()
            })
        });
        let mut frame = Vec::new();
        encode_frame(&packed, Framing::Prefixed, &mut frame);
        assert!(matches!(
            decode_frame(&frame, 16 << 20),
            Ok(Decoded::Frame { .. })
        ));
        group.bench_with_input(BenchmarkId::new("decode_frame", size), &frame, |b, f| {
            b.iter(|| decode_frame(black_box(f), 16 << 20))
        });
        group.bench_with_input(BenchmarkId::new("unpack", size), &packed, |b, p| {
            b.iter(|| Event::unpack(black_box(p)))
        });
    }
    group.finish();
}

/// One rate check per request: a known key allowed, a known key refused (with its
/// `Retry-After`), a stream of new keys through a full table (insert and evict), and the
/// authentication throttle's check before an attempt.
fn bench_rate(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate");
    let quota = |per_second, burst| RateQuota {
        per_second: NonZeroU32::new(per_second).expect("nonzero"),
        burst: NonZeroU32::new(burst).expect("nonzero"),
    };
    let client = IpAddr::from(Ipv4Addr::new(192, 0, 2, 1));
    let open = RateLimiter::new(&[quota(u32::MAX, u32::MAX)], ClientKeys::default());
    group.bench_function("check_allowed", |b| {
        b.iter(|| open.check(0, black_box(client)))
    });
    let shut = RateLimiter::new(&[quota(1, 1)], ClientKeys::default());
    let _ = shut.check(0, client);
    group.bench_function("check_refused", |b| {
        b.iter(|| {
            shut.check(0, black_box(client))
                .map_err(|e| e.as_header_secs())
        })
    });
    let small = RateLimiter::new(&[quota(1, 1)], ClientKeys::default().with_max_keys(1024));
    let mut next = 0u32;
    group.bench_function("check_new_key_evicting", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            small.check(0, black_box(IpAddr::from(Ipv4Addr::from(next))))
        })
    });
    let throttle = AuthThrottle::new(ThrottleSettings::default());
    throttle.failed(client);
    group.bench_function("throttle_check", |b| {
        b.iter(|| throttle.check(black_box(client)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = bench_parse, bench_pack_and_frame, bench_rate
}
criterion_main!(benches);
