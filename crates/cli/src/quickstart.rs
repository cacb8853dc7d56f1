//! `teelog quickstart`: the whole job on the embedded store, explained as it runs.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use teelog_core::{FindingKind, SigAlg};
use teelog_identity::{Identity, Provider};

use crate::sign::{sign_from, SignArgs, DEFAULT_MAX_BATCH_LINE};
use crate::verify::{print_human, verify, StreamArgs, ThreadsArg, TrustArgs, VerifyArgs};

const MARKER: &str = ".teelog-quickstart";
const MEASUREMENT: &str =
    "d8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a";
const RECORDS: u64 = 10_000;
const BATCH_SIZE: u64 = 500;

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    prepare(dir)?;
    let identity = dir.join("identity");
    let store = dir.join("store");
    let input = dir.join("sample-logs.ndjson");
    let d = dir.display();

    step(&format!("teelog keygen --out {d}/identity --measurement {}…", &MEASUREMENT[..16]));
    let public =
        Identity::create(&identity, SigAlg::Es256, Provider::Software { measurement: Some(MEASUREMENT) })?
            .context("a software identity has a key")?;
    println!("  a P-256 signing key, id {}", public.id_hex());

    let mut file = fs::File::create(&input).with_context(|| format!("cannot write {}", input.display()))?;
    teelog_sample::write_records(&mut file, RECORDS, 200)?;
    drop(file);
    step(&format!("teelog sign --identity {d}/identity --store {d}/store --batch-size {BATCH_SIZE} < {d}/sample-logs.ndjson"));
    let sign_args = SignArgs {
        identity: identity.clone(),
        stream: "quickstart".into(),
        batch_size: BATCH_SIZE,
        batch_bytes: teelog_core::batch::DEFAULT_BATCH_BYTES,
        max_line_bytes: 1 << 20,
        out: None,
        store: Some(store.clone()),
        heartbeat: false,
        heartbeat_every: None,
        pubkey: Vec::new(),
        trust_root: Vec::new(),
        segment_bytes: teelog_store::DEFAULT_SEGMENT_BYTES,
    };
    let reader = BufReader::new(fs::File::open(&input)?);
    let summary = sign_from(&sign_args, reader, &input.display().to_string())?;
    println!("  {} records signed into {} chained batches", summary.records, summary.batches);

    let verify_args = |store: PathBuf| VerifyArgs {
        files: Vec::new(),
        store: Some(store),
        trust: TrustArgs {
            pubkey: vec![identity.join("public-key.pem")],
            expect_measurement: Some(MEASUREMENT.into()),
            ..TrustArgs::default()
        },
        expect: StreamArgs::default(),
        json: false,
        max_line_bytes: DEFAULT_MAX_BATCH_LINE,
        report: None,
        threads: ThreadsArg::default(),
    };
    step(&format!(
        "teelog verify --store {d}/store --pubkey {d}/identity/public-key.pem --expect-measurement …"
    ));
    let report = verify(&verify_args(store.clone()))?;
    print_human(&report);
    if !report.ok {
        bail!("the untouched store did not verify");
    }

    let tampered = dir.join("tampered-store");
    tamper(&store, &tampered)?;
    println!("\nNow an attacker with write access to the storage edits one record in batch 5\n(\"retried\" becomes \"completed\") and deletes batch 8 entirely.");
    step(&format!("teelog verify --store {d}/tampered-store --pubkey {d}/identity/public-key.pem --expect-measurement …"));
    let report = verify(&verify_args(tampered))?;
    print_human(&report);
    let kinds: Vec<FindingKind> = report.findings.iter().map(|f| f.kind).collect();
    if kinds != [FindingKind::RecordTampered, FindingKind::SequenceGap] {
        bail!("expected record_tampered and sequence_gap, got {kinds:?}");
    }
    println!("\nBoth were caught. Everything is in {d}; the same commands work on your own logs.");
    Ok(ExitCode::SUCCESS)
}

fn step(command: &str) {
    println!("\n$ {command}");
}

fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!("{} exists and is not an earlier quickstart; pass another --dir", dir.display());
        }
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join(MARKER), b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    Ok(())
}

/// Copies the store, changing one record of batch 5 and leaving out batch 8.
fn tamper(store: &Path, tampered: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(tampered)?;
    for segment in teelog_store::segments(store)? {
        let text = fs::read_to_string(&segment)?;
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            if line.contains("\"seq\":8,") {
                continue;
            }
            if line.contains("\"seq\":5,") {
                out.push_str(&line.replacen("\"outcome\":\"retried\"", "\"outcome\":\"completed\"", 1));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        let name = segment.file_name().context("segment without a name")?;
        fs::write(tampered.join(name), out)?;
    }
    Ok(())
}
