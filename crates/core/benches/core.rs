//! Criterion benchmarks of the core's per-record work, each next to SHA-256 over the same bytes.
//! `cargo bench -p teelog-core`; end-to-end figures come from `teelog bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic
#![allow(missing_docs)] // criterion_group! makes a public fn of a crate nobody links to

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use teelog_core::canon::Canonicalizer;
use teelog_core::merkle::{sha256, MerkleBuilder};
use teelog_core::record::canonicalize_record;
use teelog_core::{
    BatchBuilder, ChainHead, Origin, SigAlg, SoftwareKey, SoftwareSigner, Verifier, VerifyOptions,
};

const BATCH: usize = 4096;

fn record(i: usize) -> String {
    format!(
        r#"{{"ts":"2026-12-02T09:00:00.{:09}Z","level":"Information","message":"step calculation completed","attributes":{{"executionId":"exec-{i}","nodeType":"calculation","outcome":"completed","durationMs":{}}},"pad":"xxxxxxxx"}}"#,
        i,
        i % 1000
    )
}

fn signer() -> SoftwareSigner {
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    SoftwareSigner::new(key, Some("abcd".into()))
}

fn per_record(c: &mut Criterion) {
    let records: Vec<String> = (0..BATCH).map(record).collect();
    let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("sha256_baseline", |b| {
        b.iter(|| records.iter().fold(0u8, |acc, r| acc ^ sha256(r.as_bytes())[0]))
    });
    let mut canon = Canonicalizer::new();
    let mut out = Vec::with_capacity(bytes as usize * 2);
    group.bench_function("canonicalize", |b| {
        b.iter(|| {
            out.clear();
            for r in &records {
                canonicalize_record(&mut canon, r.as_bytes(), &|| 0, &mut out).unwrap();
            }
            out.len()
        })
    });
    group.bench_function("merkle_root", |b| {
        b.iter(|| {
            let mut m = MerkleBuilder::new();
            for r in &records {
                m.push_record(r.as_bytes());
            }
            m.root()
        })
    });
    let signer = signer();
    let mut builder = BatchBuilder::new();
    let mut line = Vec::new();
    group.bench_function("seal_batch", |b| {
        b.iter(|| {
            let mut head = ChainHead::new_epoch("bench", None, &teelog_core::random::SystemRandom).unwrap();
            for r in &records {
                builder.push_input(r.as_bytes(), &|| 0).unwrap();
            }
            line.clear();
            builder.seal(&mut head, &signer, 0, &mut line).unwrap()
        })
    });
    let key = teelog_core::HeaderSigner::public_key(&signer).clone();
    group.bench_function("verify_batch", |b| {
        b.iter_batched(
            || {
                Verifier::new(VerifyOptions {
                    trusted_keys: vec![key.clone()],
                    expect_measurement: None,
                    policy: None,
                    freshness: None,
                    ..VerifyOptions::default()
                })
            },
            |mut verifier| {
                verifier.push_line(Origin { source: "bench", line: 1 }, &line[..line.len() - 1]);
                let report = verifier.finish();
                assert!(report.ok);
                report.records
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, per_record);
criterion_main!(benches);
