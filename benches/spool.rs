//! The spool store's grouped commit (`spool::store::Store::commit`) on disk: one durable
//! transaction taking 1, 8 or 32 signed 1 KiB hooks with their replay keys, then the
//! non-durable transaction confirming them, as the writer thread does under load. The figure
//! per iteration is one group; divide by the group size for the cost per hook.
// criterion_main! defines the bench's `main` without a doc comment.
#![allow(missing_docs)]
#![expect(
    clippy::expect_used,
    reason = "bench setup: a failure there is a bug in the bench"
)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use saltgate::spool::Storage;
use saltgate::spool::store::{Row, Store, Work};

const GROUPS: [u64; 3] = [1, 8, 32];

fn bench_commit(c: &mut Criterion) {
    // Under the target directory (a real disk), not /tmp (often tmpfs, where fsync is free).
    let base = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::PathBuf::from("target"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&base).expect("target dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let (store, recovered) =
        Store::open(&Storage::Dir(dir.path().to_path_buf()), 1 << 20).expect("open");
    let mut seq = recovered.next_seq;
    let event = Bytes::from(vec![0x5a; 1100]);
    let mut group = c.benchmark_group("spool_commit");
    for n in GROUPS {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("durable_then_confirm", n), &n, |b, &n| {
            b.iter(|| {
                let rows: Vec<Row> = (0..n)
                    .map(|_| {
                        seq += 1;
                        Row {
                            seq,
                            received_ms: 1_700_000_000_000 + seq,
                            path: "github/deploy".into(),
                            client: "140.82.115.1".into(),
                            event: event.clone(),
                            dedup: Some(u128::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                        }
                    })
                    .collect();
                let confirms = rows.iter().map(|r| (r.seq, 1)).collect();
                let now_ms = 1_700_000_000_000 + seq;
                let ingest = Work {
                    rows,
                    next_seq: seq + 1,
                    now_ms,
                    ..Work::default()
                };
                store.commit(&ingest, true).expect("durable commit");
                let confirm = Work {
                    confirms,
                    next_seq: seq + 1,
                    now_ms,
                    ..Work::default()
                };
                store.commit(&confirm, false).expect("confirm commit");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_commit);
criterion_main!(benches);
