//! `teelog-bench --memory`: the verifier's peak RSS on inputs long in one stream and wide in
//! streams (issue 20: memory flat in the length of a stream and near-flat in the number of
//! streams), and its throughput on the records of the main bench next to SHA-256 of the same
//! bytes, so that a change to what the verifier keeps shows what it costs.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use teelog_core::{BatchBuilder, ChainHead, SigAlg, SoftwareKey, SoftwareSigner};

use crate::{run_child, s, sha256_baseline, BenchArgs};

/// Heartbeat batches of the one stream of the long input.
const LONG_BATCHES: u64 = 1_000_000;
/// Streams of the wide input, and batches of each.
const WIDE_STREAMS: u64 = 300_000;
const WIDE_BATCHES: u64 = 2;
/// 2026-12-01T00:00:00Z: the batches are sealed from then on, a millisecond apart.
const T0: i64 = 1_796_083_200_000_000_000;

/// Writes the two inputs, verifies each, and prints peak RSS and time per batch; then signs
/// `args.records` records and prints verify's records/s against SHA-256 of the same records.
pub(crate) fn run(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<()> {
    let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).context("cannot make a key")?;
    let key = SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).context("cannot read the key made")?;
    let pem = dir.join("key.pem");
    fs::write(&pem, key.public().to_pem())?;
    let signer = SoftwareSigner::new(key, None);

    let long = dir.join("long.ndjson");
    write_streams(&long, &signer, 1, LONG_BATCHES)?;
    let wide = dir.join("wide.ndjson");
    write_streams(&wide, &signer, WIDE_STREAMS, WIDE_BATCHES)?;

    println!("teelog-bench --memory: verify's peak RSS (one core)");
    println!("{:<44} {:>10} {:>12} {:>10}", "input", "batches", "batches/s", "peak RSS");
    for (name, path, batches) in [
        (format!("{LONG_BATCHES} heartbeats of one stream"), &long, LONG_BATCHES),
        (format!("{WIDE_STREAMS} streams of {WIDE_BATCHES} heartbeats"), &wide, WIDE_STREAMS * WIDE_BATCHES),
    ] {
        let run = run_child(exe, &["verify", &s(path), "--pubkey", &s(&pem), "--json"], None)?;
        println!(
            "{:<44} {:>10} {:>12.0} {:>7} MB",
            name,
            batches,
            batches as f64 / run.wall,
            run.peak_rss_kib.map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
        );
    }

    // Throughput on records, as the main bench measures it, in this same run.
    let crate::Signed { records, identity, store } = crate::sign_sample(args, exe, dir)?;
    let n = args.records as f64;
    let public = identity.join("public-key.pem");
    for _ in 0..args.runs {
        let sha = sha256_baseline(&records)?;
        let run =
            run_child(exe, &["verify", "--store", &s(&store), "--pubkey", &s(&public), "--json"], None)?;
        println!(
            "verify {} records: {:.0} records/s, {:.0} records/cpu-s, {:.2}x SHA-256 ({:.0} records/s), peak RSS {} MB",
            args.records,
            n / run.wall,
            run.cpu.map_or(0.0, |c| n / c),
            sha / run.wall,
            n / sha,
            run.peak_rss_kib.map_or(0, |k| k / 1024),
        );
    }
    Ok(())
}

/// `streams` streams of `batches` heartbeats each, stream after stream, signed by `signer`.
fn write_streams(path: &Path, signer: &SoftwareSigner, streams: u64, batches: u64) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut builder = BatchBuilder::new();
    let mut line = Vec::new();
    for stream in 0..streams {
        // Epoch ids are 32 hex digits; the stream's number makes each one its own.
        let mut head = ChainHead {
            stream: format!("mem-{stream}"),
            epoch: format!("{:032x}", stream + 1),
            next_seq: 1,
            prev: None,
            prev_sealed_at: None,
        };
        for i in 0..batches {
            line.clear();
            let sealed_at = T0 + i64::try_from(i)? * 1_000_000;
            builder.seal(&mut head, signer, sealed_at, &mut line)?;
            out.write_all(&line)?;
        }
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))
}
