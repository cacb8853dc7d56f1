//! `teelog-bench --scaling`: how the cost of `teelog sign` and `teelog verify` grows with the
//! number of records (one stream) and with the number of streams (a fixed number of records),
//! each beside SHA-256 of the same records in the same run, with the children's peak RSS: time
//! should be linear in the records and memory flat.
//!
//! `teelog sign` signs one stream per run, so a store of several streams is signed by one run
//! per stream, each fed its share of the records, where there are at most
//! `--scaling-sign-streams` streams (their wall and CPU times are summed; the peak RSS is the
//! largest). With more, that many process starts (about 20 ms each, fsyncs included) would be
//! the measure, not the signing, so the bench seals the store itself with teelog-core's
//! `BatchBuilder` (the code `teelog sign` runs) and the identity's key, and reports no sign row.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};
use teelog_core::{BatchBuilder, ChainHead, SoftwareKey, SoftwareSigner};
use teelog_store::lines::{Line, LineReader};

use crate::{median, run_child, run_measured, s, sha256_baseline, BenchArgs, Run};

/// The scaling mode's options.
#[derive(clap::Args, Clone)]
pub(crate) struct ScalingArgs {
    /// Measure how cost grows (docs/PERFORMANCE.md, "How cost grows") instead of the phases.
    #[arg(long)]
    pub(crate) scaling: bool,
    /// Record counts of the one-stream cases.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    scaling_records: Vec<u64>,
    /// Stream counts of the many-stream cases, each over `--scaling-stream-records` records.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    scaling_streams: Vec<u64>,
    /// Records of each many-stream case, shared out evenly among its streams.
    #[arg(long, default_value_t = 1_000_000)]
    scaling_stream_records: u64,
    /// Up to this many streams, a many-stream store is signed by `teelog sign`, one run per
    /// stream; with more, the bench seals it and sign is not measured.
    #[arg(long, default_value_t = 1000)]
    scaling_sign_streams: u64,
}

/// One row of the table.
struct Row {
    records: u64,
    streams: u64,
    phase: String,
    run: Option<Run>,
    /// Seconds of SHA-256 over the case's records, same run.
    sha256: f64,
}

pub(crate) fn run(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<()> {
    let scaling = &args.scaling;
    let cases = scaling
        .scaling_records
        .iter()
        .map(|&n| (n, 1))
        .chain(scaling.scaling_streams.iter().map(|&streams| (scaling.scaling_stream_records, streams)));
    let mut rows = Vec::new();
    for (records, streams) in cases {
        if streams == 0 || streams > records.max(1) {
            bail!("{streams} streams for {records} records: each stream needs a record");
        }
        eprintln!("teelog-bench --scaling: {records} records in {streams} streams");
        let case = dir.join(format!("case-{records}-{streams}"));
        fs::create_dir_all(&case)?;
        rows.extend(measure_case(args, exe, &case, records, streams)?);
        fs::remove_dir_all(&case)?;
    }
    print_table(args, &rows);
    Ok(())
}

/// Signs and verifies `records` sample records in `streams` streams, `args.runs` times each.
fn measure_case(
    args: &BenchArgs,
    exe: &Path,
    case: &Path,
    records: u64,
    streams: u64,
) -> anyhow::Result<Vec<Row>> {
    let input = case.join("records.ndjson");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&input)?);
    teelog_sample::write_records(&mut out, records, args.record_bytes)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let batch_size = args.batch_size.to_string();
    let by_bench = streams > args.scaling.scaling_sign_streams;
    // Each sign run's share in a file of its own (where the bench seals, there are no runs).
    let shares =
        if streams > 1 && !by_bench { Some(split_by_stream(&input, case, records, streams)?) } else { None };

    let mut sha256 = Vec::new();
    let mut sign = Vec::new();
    let mut verify = Vec::new();
    for run in 0..args.runs {
        sha256.push(sha256_baseline(&input)?);
        let identity = case.join(format!("identity-{run}"));
        let store = case.join(format!("store-{run}"));
        run_child(exe, &["keygen", "--out", &s(&identity)], None)?;
        let public = s(&identity.join("public-key.pem"));
        if by_bench {
            seal_streams(&input, &identity, &store, records, streams, args.batch_size)?;
        } else {
            let mut total: Option<Run> = None;
            for stream in 0..streams {
                let name = format!("s{stream}");
                let share = shares.as_ref().map(|dir| dir.join(format!("{stream}.ndjson")));
                let sign_args = crate::sign_args(&identity, &store, &name, &batch_size);
                let sign_args: Vec<&str> = sign_args.iter().map(String::as_str).collect();
                let one = run_child(exe, &sign_args, Some(share.as_deref().unwrap_or(&input)))?;
                total = Some(total.map_or(one, |t| add(t, one)));
            }
            sign.extend(total);
        }
        // Its report goes to a file, read back as a stream: held here, it would count in every
        // later child's peak RSS (a child starts from its parent's high-water mark).
        let report = case.join("verify-report.txt");
        let verify_args = ["verify", "--store", &s(&store), "--pubkey", &public];
        let (run, _, _) =
            run_measured(exe, &verify_args, "teelog verify", None, Stdio::from(File::create(&report)?))?;
        check_verified(&report, records, streams)?;
        verify.push(run);
        fs::remove_dir_all(&store)?;
        fs::remove_dir_all(&identity)?;
    }
    let sha256 = {
        let mut sorted = sha256;
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let sign_phase =
        if streams == 1 || by_bench { "sign".to_string() } else { format!("sign ({streams} runs)") };
    let sign = if by_bench { None } else { Some(median(&sign)) };
    Ok(vec![
        Row { records, streams, phase: sign_phase, run: sign, sha256 },
        Row { records, streams, phase: "verify".into(), run: Some(median(&verify)), sha256 },
    ])
}

/// Two runs one after the other, as one: their times added, the larger peak.
fn add(a: Run, b: Run) -> Run {
    Run {
        wall: a.wall + b.wall,
        cpu: a.cpu.zip(b.cpu).map(|(a, b)| a + b),
        peak_rss_kib: a.peak_rss_kib.max(b.peak_rss_kib),
    }
}

/// Stream `k`'s share of the records: records `k·n/S .. (k+1)·n/S`, in order.
fn share(stream: u64, records: u64, streams: u64) -> std::ops::Range<u64> {
    let bound = |k: u64| (u128::from(k) * u128::from(records) / u128::from(streams)) as u64;
    bound(stream)..bound(stream + 1)
}

/// Calls `take(stream, line)` with each record of `input` and the stream whose share it is in.
fn each_record(
    input: &Path,
    records: u64,
    streams: u64,
    mut take: impl FnMut(u64, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut reader = LineReader::new(BufReader::with_capacity(1 << 20, File::open(input)?), 1 << 20);
    let (mut stream, mut index) = (0, 0);
    while let Some((number, line)) = reader.next_line()? {
        let Line::Complete(bytes) = line else { bail!("line {number} of {} is too long", input.display()) };
        while !share(stream, records, streams).contains(&index) {
            stream += 1;
        }
        take(stream, bytes)?;
        index += 1;
    }
    Ok(())
}

/// Each stream's share of `input` in a file of its own (`<stream>.ndjson`), for its sign run.
fn split_by_stream(
    input: &Path,
    case: &Path,
    records: u64,
    streams: u64,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = case.join("shares");
    fs::create_dir_all(&dir)?;
    let mut current: Option<(u64, BufWriter<File>)> = None;
    each_record(input, records, streams, |stream, line| {
        if current.as_ref().is_none_or(|(k, _)| *k != stream) {
            if let Some((_, out)) = current.take() {
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
            current = Some((stream, BufWriter::new(File::create(dir.join(format!("{stream}.ndjson")))?)));
        }
        if let Some((_, out)) = current.as_mut() {
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })?;
    if let Some((_, out)) = current {
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    Ok(dir)
}

/// A store of `streams` streams, each its share of `input` in batches of `batch_size`, sealed
/// by this process with `identity`'s key: what `teelog sign` would write with one run per
/// stream, without the process starts.
fn seal_streams(
    input: &Path,
    identity: &Path,
    store: &Path,
    records: u64,
    streams: u64,
    batch_size: u64,
) -> anyhow::Result<()> {
    let pem = identity.join("private-key.pem");
    let key = SoftwareKey::from_pkcs8_pem(&fs::read(&pem)?)
        .with_context(|| format!("cannot read {}", pem.display()))?;
    let signer = SoftwareSigner::new(key, None);
    // A real store (segments rotated as `teelog sign` rotates them), written a MiB at a time:
    // one fsync each, where `teelog sign` makes one per batch.
    let mut store = teelog_store::Store::open(store, teelog_store::StoreOptions::default())?;
    let mut pending = Vec::with_capacity(2 << 20);
    let mut builder = BatchBuilder::new();
    let mut head: Option<ChainHead> = None;
    let mut line = Vec::new();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    };
    let mut seal =
        |builder: &mut BatchBuilder, head: &mut ChainHead, pending: &mut Vec<u8>| -> anyhow::Result<()> {
            line.clear();
            builder.seal(head, &signer, now(), &mut line)?;
            pending.extend_from_slice(&line);
            if pending.len() >= 1 << 20 {
                store.append_lines(pending)?;
                pending.clear();
            }
            Ok(())
        };
    each_record(input, records, streams, |stream, record| {
        let name = format!("s{stream}");
        if head.as_ref().is_none_or(|h| h.stream != name) {
            if let Some(mut done) = head.take().filter(|_| !builder.is_empty()) {
                seal(&mut builder, &mut done, &mut pending)?;
            }
            // Epoch ids are 32 hex digits; the stream's number makes each one its own.
            head = Some(ChainHead {
                stream: name,
                epoch: format!("{:032x}", stream + 1),
                next_seq: 1,
                prev: None,
                prev_sealed_at: None,
            });
        }
        builder.push_input(record, &now)?;
        if builder.len() >= batch_size {
            if let Some(head) = head.as_mut() {
                seal(&mut builder, head, &mut pending)?;
            }
        }
        Ok(())
    })?;
    if let Some(mut done) = head.take().filter(|_| !builder.is_empty()) {
        seal(&mut builder, &mut done, &mut pending)?;
    }
    if !pending.is_empty() {
        store.append_lines(&pending)?;
    }
    Ok(())
}

/// `teelog verify`'s report must say every record verified, in `streams` streams of one
/// instance each, or the row is not about the case.
fn check_verified(report: &Path, records: u64, streams: u64) -> anyhow::Result<()> {
    let mut reader = LineReader::new(BufReader::with_capacity(1 << 16, File::open(report)?), 1 << 20);
    let (mut instances, mut verdict) = (0u64, None);
    while let Some((_, line)) = reader.next_line()? {
        let Line::Complete(line) = line else { continue };
        let line = String::from_utf8_lossy(line);
        if line.starts_with("INST ") {
            instances += 1;
        } else if let Some(rest) = line.strip_prefix("OK ") {
            verdict = Some(rest.trim().to_string());
        }
    }
    let said = format!(" {records} records,");
    if instances != streams || !verdict.as_ref().is_some_and(|v| v.contains(&said)) {
        bail!("teelog verify reports {instances} stream instances and {verdict:?}, not {records} records in {streams} streams");
    }
    Ok(())
}

fn print_table(args: &BenchArgs, rows: &[Row]) {
    println!(
        "teelog-bench --scaling: {} bytes/record, batch size {}, median of {} runs, each child on one core",
        args.record_bytes, args.batch_size, args.runs
    );
    println!(
        "{:>10} {:>8} {:<16} {:>9} {:>12} {:>14} {:>11} {:>10} {:>12}",
        "records",
        "streams",
        "phase",
        "time s",
        "records/s",
        "records/cpu-s",
        "vs SHA-256",
        "peak RSS",
        "SHA-256 r/s"
    );
    for row in rows {
        let n = row.records as f64;
        let Some(run) = row.run else {
            println!(
                "{:>10} {:>8} {:<16} {:>9} {:>12} {:>14} {:>11} {:>10} {:>12.0}",
                row.records,
                row.streams,
                row.phase,
                "-",
                "-",
                "-",
                "-",
                "-",
                n / row.sha256
            );
            continue;
        };
        println!(
            "{:>10} {:>8} {:<16} {:>9.2} {:>12.0} {:>14} {:>11.2} {:>10} {:>12.0}",
            row.records,
            row.streams,
            row.phase,
            run.wall,
            n / run.wall,
            run.cpu.map_or("?".into(), |cpu| format!("{:.0}", n / cpu)),
            row.sha256 / run.wall,
            run.peak_rss_kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            n / row.sha256
        );
    }
    if rows.iter().any(|r| r.run.is_none()) {
        println!(
            "sign not measured with more than {} streams: one `teelog sign` run per stream; the bench sealed those stores itself",
            args.scaling.scaling_sign_streams
        );
    }
}
