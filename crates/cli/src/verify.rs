//! `teelog verify`: check batch files and stores offline.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use teelog_audit::{Expectations, Source};
use teelog_core::display::escape_controls;
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{Report, Verifier};
use teelog_trust::{Trust, TrustFiles};

use crate::sign::DEFAULT_MAX_BATCH_LINE;

#[derive(clap::Args, Clone)]
pub struct VerifyArgs {
    /// Files of batch lines (`-` for stdin).
    pub files: Vec<PathBuf>,
    /// An embedded store directory.
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub expect: StreamArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Longer lines are reported as malformed.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_LINE)]
    pub max_line_bytes: usize,
    /// Also write the report as one self-contained HTML file for people (verdict, timeline of
    /// code versions per stream, findings, trust anchors).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

/// How many threads check batch lines (`teelog verify` and `teelog audit`).
#[derive(clap::Args, Clone, Default)]
pub struct ThreadsArg {
    /// Threads that check batch lines (parse, Merkle root, signature), each line on its own;
    /// the chains are then judged in input order, so the report does not depend on it. Default:
    /// one per core.
    #[arg(long = "threads", value_name = "N")]
    pub threads: Option<NonZeroUsize>,
}

impl ThreadsArg {
    /// The threads to use.
    pub fn get(&self) -> NonZeroUsize {
        self.threads.unwrap_or_else(teelog_audit::pool::default_threads)
    }
}

/// What the auditor trusts and expects of each batch, shared by `teelog verify`, `teelog audit`
/// and `teelog evidence verify` so that all judge batches the same way.
#[derive(clap::Args, Clone, Default)]
pub struct TrustArgs {
    /// Trusted signing key (SubjectPublicKeyInfo PEM) for batches without an attestation
    /// document; repeat for several.
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
    /// Trust attestation documents that chain to this root (PEM or DER), e.g. a dev root; the
    /// AWS Nitro root G1 is always trusted, pinned by its SHA-256. Attested batches take their
    /// key from their verified document.
    #[arg(long)]
    pub trust_root: Vec<PathBuf>,
    /// Accept documents of debug-mode enclaves (PCR0, PCR1 and PCR2 all zero).
    #[arg(long)]
    pub allow_debug: bool,
    /// Measurement policy (TOML): the measurements allowed per platform, with version labels and
    /// validity windows. Adds a timeline of which version produced which batches.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The verification time (RFC 3339; default: now): freshness is judged at it, and a batch
    /// sealed later than it by more than --max-skew is a finding.
    #[arg(long)]
    pub now: Option<String>,
    /// How far a batch's sealed_at may lie after the verification time (signers' clocks drift),
    /// e.g. 30s, 5m.
    #[arg(long, default_value = "5m", value_parser = teelog_core::timestamp::parse_duration)]
    pub max_skew: i64,
    /// The code measurement every batch must carry (hex; for seed-format batches, their
    /// tee_measurement text).
    #[arg(long)]
    pub expect_measurement: Option<String>,
}

/// What the auditor expects of whole streams, shared by `teelog verify` and `teelog audit`.
#[derive(clap::Args, Clone, Default)]
pub struct StreamArgs {
    /// A stream that must be present; repeat for several. One with no batch that verifies is a
    /// finding (`missing_stream`). NAME=EPOCH pins an instance of NAME, the one that starts with
    /// epoch EPOCH: repeat it for each instance NAME has, which it must have and no other.
    #[arg(long = "expect-stream", value_name = "NAME[=EPOCH]")]
    pub expect_streams: Vec<String>,
    /// How many instances (signers, each its own chain) a stream may have when no
    /// --expect-stream NAME=EPOCH or policy names them; more is `unexpected_instance`.
    #[arg(long, value_name = "N")]
    pub instances: Option<u64>,
    /// Input with no batch at all is OK (by default it is `nothing_verified`, exit 1).
    #[arg(long)]
    pub allow_empty: bool,
    /// A stream whose newest batch (heartbeats count) is older than this is `stale_stream`,
    /// e.g. 30s, 10m, 2h, 1d.
    #[arg(long, value_parser = teelog_core::timestamp::parse_duration)]
    pub max_silence: Option<i64>,
    /// A gateway's checkpoint public key (PEM; `teelog gateway --print-checkpoint-key`); repeat
    /// for several. Every batch a checkpoint signed by it names must be in the input, and a
    /// stream without such a checkpoint is a finding (docs/FORMAT.md §17).
    #[arg(long = "checkpoint-key", value_name = "PEM")]
    pub checkpoint_keys: Vec<PathBuf>,
    /// A file of checkpoint lines kept apart from the storage (e.g. a copy of the gateway's
    /// checkpoints.ndjson), judged with those in the input; needs --checkpoint-key.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// The root (PEM or DER) of a TSA that stamped the gateway's checkpoints (`checkpoint.tsa`);
    /// repeat for several. Their tokens are then checked, and the report says by when each
    /// checkpointed batch existed (trusted time). Needs --checkpoint-key.
    #[arg(long = "tsa-root", value_name = "PEM")]
    pub tsa_roots: Vec<PathBuf>,
}

/// The largest `--checkpoint` file read: far more than the newest checkpoints of many streams.
const MAX_CHECKPOINT_FILE: u64 = 64 << 20;

impl StreamArgs {
    /// `verifier` judging checkpoints under `--checkpoint-key`, with the lines of every
    /// `--checkpoint` file in.
    fn with_checkpoints(&self, verifier: Verifier) -> anyhow::Result<Verifier> {
        if self.checkpoint_keys.is_empty() {
            if let Some(file) = self.checkpoints.first() {
                anyhow::bail!("--checkpoint {}: give the gateway's --checkpoint-key too", file.display());
            }
            if let Some(file) = self.tsa_roots.first() {
                anyhow::bail!("--tsa-root {}: give the gateway's --checkpoint-key too", file.display());
            }
            return Ok(verifier);
        }
        let keys = self
            .checkpoint_keys
            .iter()
            .map(|path| {
                let pem =
                    std::fs::read(path).with_context(|| format!("--checkpoint-key {}", path.display()))?;
                teelog_core::PublicKey::from_pem(&pem)
                    .with_context(|| format!("--checkpoint-key {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let roots = self
            .tsa_roots
            .iter()
            .map(|path| teelog_trust::certificate(path))
            .collect::<Result<Vec<_>, _>>()?;
        let timestamps = (!roots.is_empty()).then(|| {
            Box::new(teelog_audit::tsa::TsaRoots(roots)) as Box<dyn teelog_core::evidence::TimestampVerifier>
        });
        let mut verifier = verifier.with_checkpoint_keys(keys, timestamps);
        for path in &self.checkpoints {
            let what = || format!("--checkpoint {}", path.display());
            let file = std::fs::File::open(path).with_context(what)?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CHECKPOINT_FILE + 1), &mut bytes)
                .with_context(what)?;
            if bytes.len() as u64 > MAX_CHECKPOINT_FILE {
                anyhow::bail!("{}: longer than {MAX_CHECKPOINT_FILE} bytes", what());
            }
            let source = path.display().to_string();
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                if !teelog_core::record::is_blank(line) {
                    verifier
                        .push_checkpoint(teelog_core::Origin { source: &source, line: i as u64 + 1 }, line);
                }
            }
        }
        Ok(verifier)
    }
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = verify(args)?;
    if let Some(path) = &args.report {
        write_html(path, &report, &args.trust)?;
    }
    finish(&report, &args.trust, || {
        if args.json {
            // Written as it is made: with many streams, the report's text is as large as the
            // report itself.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer(&mut out, &report)?;
            std::io::Write::write_all(&mut out, b"\n")?;
            std::io::Write::flush(&mut out)?;
        } else {
            print_human(&report);
        }
        Ok(())
    })
}

/// Prints `report` with `print` and gives the exit code: 0 OK, 1 findings, 2 when no batch
/// verified and they need a trusted key the caller did not give (a usage error, not evidence of
/// forgery), which is said instead.
pub fn finish(
    report: &Report,
    trust: &TrustArgs,
    print: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    teelog_audit::require_keys(report, !trust.pubkey.is_empty())?;
    print()?;
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<Report> {
    let files = args.files.iter().map(|path| {
        if path.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(path.clone())
        }
    });
    let sources: Vec<Source> = files.chain(args.store.clone().map(Source::Store)).collect();
    let verifier = verifier(&args.trust, &args.expect, args.report.is_some())?;
    Ok(teelog_audit::files::verify(verifier, &sources, args.max_line_bytes, args.threads.get())?)
}

/// The verifier for `args` and `streams`: trusted keys, attestation roots, measurement policy,
/// freshness; with `timeline`, its report says which code produced which batches.
pub fn verifier(args: &TrustArgs, streams: &StreamArgs, timeline: bool) -> anyhow::Result<Verifier> {
    let (trust, mut expect) = expectations(args, streams)?;
    expect.timeline = timeline;
    streams.with_checkpoints(teelog_audit::verifier(trust, &expect)?)
}

/// Writes `report` as HTML to `path`, saying what was verified and what it rests on.
pub fn write_html(path: &std::path::Path, report: &Report, trust: &TrustArgs) -> anyhow::Result<()> {
    let mut anchors: Vec<String> =
        trust.pubkey.iter().map(|p| format!("public key {} (--pubkey)", p.display())).collect();
    anchors
        .extend(trust.trust_root.iter().map(|p| format!("root certificate {} (--trust-root)", p.display())));
    anchors.push(
        "the vendor roots pinned in teelog by the SHA-256 of their certificates (AWS Nitro, AMD, Intel)"
            .into(),
    );
    if trust.allow_debug {
        anchors.push("debug-mode enclaves accepted (--allow-debug)".into());
    }
    if let Some(m) = &trust.expect_measurement {
        anchors.push(format!("every batch must carry measurement {m} (--expect-measurement)"));
    }
    let policy = match &trust.policy {
        Some(path) => teelog_trust::policy(path)?
            .entries
            .iter()
            .map(|e| {
                let window = match (&e.from, &e.until) {
                    (None, None) => String::new(),
                    (from, until) => format!(
                        " from {} until {}",
                        from.as_deref().unwrap_or("the start"),
                        until.as_deref().unwrap_or("the end")
                    ),
                };
                format!("{} {} = {}{window}", e.platform, e.version, e.value)
            })
            .collect(),
        None => Vec::new(),
    };
    let context = teelog_audit::html::ReportContext {
        // The command as typed, with the program named as people call it.
        subject: std::iter::once("teelog".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        anchors,
        policy,
        verified_at: teelog_core::timestamp::format_rfc3339(crate::sign::now()),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let html = teelog_audit::html::render(report, &context);
    teelog_store::write_atomic(path, html.as_bytes())
        .map_err(|(path, e)| anyhow::anyhow!("{}: {e}", path.display()))
}

/// What `args` and `streams` say is trusted and expected.
pub fn expectations(args: &TrustArgs, streams: &StreamArgs) -> anyhow::Result<(Trust, Expectations)> {
    let now = match &args.now {
        Some(text) => parse_rfc3339(text).context("--now")?,
        None => crate::sign::now(),
    };
    let expect = Expectations {
        measurement: args.expect_measurement.clone(),
        now,
        max_skew: args.max_skew,
        max_silence: streams.max_silence,
        streams: streams.expect_streams.clone(),
        max_instances: streams.instances,
        allow_empty: streams.allow_empty,
        timeline: false,
    };
    Ok((Trust::load(&args.files(), crate::attest::now_seconds())?, expect))
}

impl TrustArgs {
    /// The files naming what is trusted.
    pub fn files(&self) -> TrustFiles {
        TrustFiles {
            pubkeys: self.pubkey.clone(),
            trust_roots: self.trust_root.clone(),
            policy: self.policy.clone(),
            allow_debug: self.allow_debug,
        }
    }
}

/// The report as text. Every field that can carry text from the input is escaped, so that no
/// input can start a line of its own or make one read like another.
pub fn print_human(report: &Report) {
    let safe = |text: &str| escape_controls(text).into_owned();
    for f in &report.findings {
        let mut place = String::new();
        if let Some(stream) = &f.stream {
            place.push_str(&format!(" stream={}", safe(stream)));
        }
        if let Some(epoch) = &f.epoch {
            place.push_str(&format!(" epoch={}", safe(epoch)));
        }
        if let Some(seq) = f.seq {
            place.push_str(&format!(" seq={seq}"));
        }
        if let Some(index) = f.record_index {
            place.push_str(&format!(" record={index}"));
        }
        println!("FAIL {}{place}\n     {}", f.kind.name(), safe(&f.detail));
    }
    for (kind, count) in &report.omitted_findings {
        println!("FAIL {} … and {count} more not listed", kind.name());
    }
    let counts = format!(
        "{} batches, {} records, {} duplicate lines",
        report.batches, report.records, report.duplicates
    );
    for run in report.timeline.iter().flatten() {
        let verdict = if run.allowed { "allowed" } else { "NOT ALLOWED" };
        println!(
            "TIME {} {} .. {}  {} {} {}  {} batches ({} .. {})  {verdict}",
            run.stream,
            run.from,
            run.to,
            safe(run.version.as_deref().unwrap_or("(unlisted)")),
            run.platform,
            run.measurement,
            run.batches,
            run.first,
            run.last
        );
    }
    for epoch in &report.trust {
        let basis = teelog_audit::html::basis_text(epoch.basis);
        let unsigned = if epoch.epoch_unsigned { " (an AttestationCertThumbprint: not signed)" } else { "" };
        println!(
            "KEY  stream={} epoch={}{unsigned}  {} batches  {}  key {}  rests on {basis}",
            epoch.stream,
            safe(&epoch.epoch),
            epoch.batches,
            epoch.platform,
            epoch.key_id
        );
    }
    for instance in &report.instances {
        let starts = if instance.genesis { "" } else { " (starts after a header not in the input)" };
        let pinned = if instance.pinned { "  pinned" } else { "" };
        println!(
            "INST stream={} instance={}{starts}{pinned}  epochs {}",
            instance.stream,
            instance.instance,
            instance.epochs.join(", ")
        );
    }
    let mut unpinned: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for instance in report.instances.iter().filter(|i| !i.pinned) {
        *unpinned.entry(&instance.stream).or_default() += 1;
    }
    for (stream, count) in unpinned.into_iter().filter(|(_, count)| *count > 1) {
        println!(
            "NOTE stream={stream} has {count} instances not pinned: one withheld, or another instance shown in its place, goes unnoticed; pin each with --expect-stream {stream}=EPOCH"
        );
    }
    if report.torn_writes > 0 {
        println!(
            "NOTE {} torn last lines (a crash mid-write) are the start of batches written again in full: nothing lost",
            report.torn_writes
        );
    }
    if !report.unreferenced_documents.is_empty() {
        println!(
            "NOTE {} attestation documents are named by no batch and prove nothing: {}",
            report.unreferenced_documents.len(),
            report.unreferenced_documents.join(", ")
        );
    }
    for stamped in &report.checkpoint_times {
        println!(
            "TIME stream={} epoch={}  up to seq {} existed no later than {} (RFC 3161, --tsa-root: trusted time)",
            stamped.stream, stamped.epoch, stamped.seq, stamped.no_later_than
        );
    }
    if report.checkpoints > 0 {
        println!(
            "NOTE {} gateway checkpoint lines read (checked only under --checkpoint-key)",
            report.checkpoints
        );
    }
    if report.measurements_unjudged {
        println!(
            "NOTE measurements not judged (no --policy, no --expect-measurement): batches of any code the trust roots attest are accepted"
        );
    }
    if report.dev_attested > 0 {
        println!(
            "NOTE {} batches are attested by a dev root given with --trust-root: not hardware-backed",
            report.dev_attested
        );
    }
    if report.ok {
        println!("OK   {counts}: every batch verified, no gaps, chain intact");
    } else {
        let listed = report.findings.len() as u64 + report.omitted_findings.values().sum::<u64>();
        println!("FAIL {counts}: {listed} findings");
    }
}
