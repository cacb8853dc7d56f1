//! `teelog verify`: check batch files and stores offline.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use teelog_attest::BindingVerifier;
use teelog_core::display::escape_controls;
use teelog_core::policy::Policy;
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{Freshness, Origin, PublicKey, Report, TrustBasis, Verifier, VerifyOptions};
use teelog_store::lines::{Line, LineReader};

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
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Longer lines are reported as malformed.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_LINE)]
    pub max_line_bytes: usize,
}

/// What the auditor trusts and expects, shared by `teelog verify` and `teelog audit` so that
/// both judge batches the same way.
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
    /// A stream that must be present; repeat for several. One with no batch that verifies is a
    /// finding (`missing_stream`).
    #[arg(long = "expect-stream")]
    pub expect_streams: Vec<String>,
    /// Input with no batch at all is OK (by default it is `nothing_verified`, exit 1).
    #[arg(long)]
    pub allow_empty: bool,
    /// A stream whose newest batch (heartbeats count) is older than this is `stale_stream`,
    /// e.g. 30s, 10m, 2h, 1d.
    #[arg(long, value_parser = teelog_core::timestamp::parse_duration)]
    pub max_silence: Option<i64>,
    /// The code measurement every batch must carry (hex; for seed-format batches, their
    /// tee_measurement text).
    #[arg(long)]
    pub expect_measurement: Option<String>,
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = verify(args)?;
    finish(&report, &args.trust, || {
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
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
    // Only when nothing verified: a forged line among batches that do must stay a finding, not
    // pass for the auditor's mistake.
    if trust.pubkey.is_empty() && !report.keys_needed.is_empty() && report.trust.is_empty() {
        let mut keys = report.keys_needed.join(", ");
        if report.keys_needed.len() >= teelog_core::verify::MAX_LISTED {
            keys.push_str(", …");
        }
        bail!(
            "batches are signed by keys that no attestation document binds ({keys}): pass --pubkey FILE with each signer's public key (e.g. public-key.pem of its identity), or --trust-root for attested batches"
        );
    }
    print()?;
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<Report> {
    if args.files.is_empty() && args.store.is_none() {
        bail!("nothing to verify: give batch files, `-` for stdin, or --store DIR");
    }
    let mut verifier = verifier(&args.trust)?;
    for path in &args.files {
        let name = path.display().to_string();
        if name == "-" {
            feed(&mut verifier, io::stdin().lock(), "stdin", args.max_line_bytes)?;
        } else {
            let file = File::open(path).with_context(|| format!("cannot read {name}"))?;
            feed(&mut verifier, BufReader::with_capacity(1 << 20, file), &name, args.max_line_bytes)?;
        }
    }
    if let Some(dir) = &args.store {
        let segments = teelog_store::segments(dir)?;
        if segments.is_empty() {
            bail!("{}: no store segments here", dir.display());
        }
        for path in &segments {
            let name = path.display().to_string();
            match teelog_store::open_segment_to_read(path) {
                Ok(file) => {
                    feed(&mut verifier, BufReader::with_capacity(1 << 20, file), &name, args.max_line_bytes)?
                }
                // Whoever controls the store can plant one; it is a finding, and the rest is read.
                Err(e @ teelog_store::StoreError::NotRegular { .. }) => {
                    verifier.push_malformed(Origin { source: &name, line: 0 }, &e.to_string())
                }
                Err(e) => return Err(e).with_context(|| format!("cannot read {name}")),
            }
        }
    }
    Ok(verifier.finish())
}

/// The verifier for `args`: trusted keys, attestation roots, measurement policy, freshness.
pub fn verifier(args: &TrustArgs) -> anyhow::Result<Verifier> {
    // Hex for teelog headers (compared in lower case); any text for the seed's tee_measurement.
    let expect_measurement = match args.expect_measurement.as_deref().map(str::trim) {
        Some("") => bail!("--expect-measurement: give the measurement, in hex"),
        other => other.map(str::to_ascii_lowercase),
    };
    let trust = Trust::load(&args.pubkey, &args.trust_root, args.policy.as_deref(), args.allow_debug)?;
    let now = match &args.now {
        Some(text) => parse_rfc3339(text).context("--now")?,
        None => crate::sign::now(),
    };
    let freshness = args.max_silence.map(|max_silence| Freshness { now, max_silence });
    for stream in &args.expect_streams {
        teelog_core::batch::check_stream_name(stream).context("--expect-stream")?;
    }
    let options = VerifyOptions {
        trusted_keys: trust.keys,
        expect_measurement,
        policy: trust.policy,
        freshness,
        now: Some(now),
        max_skew: Some(args.max_skew),
        allow_empty: args.allow_empty,
        expect_streams: args.expect_streams.clone(),
    };
    Ok(Verifier::new(options).with_attestation(Box::new(trust.attestation)))
}

/// What batches are verified against: trusted keys, attestation roots, a measurement policy;
/// `teelog verify`, `teelog audit` and `teelog gateway` all read them so.
pub struct Trust {
    pub keys: Vec<PublicKey>,
    pub policy: Option<Policy>,
    pub attestation: BindingVerifier,
}

impl Trust {
    /// Reads the keys (PEM), roots (PEM or DER) and policy (TOML) from their files.
    pub fn load(
        pubkeys: &[PathBuf],
        trust_roots: &[PathBuf],
        policy: Option<&Path>,
        allow_debug: bool,
    ) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for path in pubkeys {
            let pem = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            keys.push(PublicKey::from_pem(&pem).with_context(|| format!("{}", path.display()))?);
        }
        let roots = crate::attest::trust_roots(trust_roots)?;
        let policy = match policy {
            None => None,
            Some(path) => {
                let text =
                    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                let policy: Policy = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
                Some(policy.validated().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
            }
        };
        Ok(Self {
            keys,
            policy,
            attestation: BindingVerifier { roots, allow_debug, now: crate::attest::now_seconds() },
        })
    }
}

fn feed(
    verifier: &mut Verifier,
    input: impl BufRead,
    name: &str,
    max_line_bytes: usize,
) -> anyhow::Result<()> {
    let mut reader = LineReader::new(input, max_line_bytes);
    while let Some((n, line)) = reader.next_line().with_context(|| format!("cannot read {name}"))? {
        let origin = Origin { source: name, line: n };
        match line {
            Line::Complete(bytes) => verifier.push_line(origin, bytes),
            Line::Unterminated(bytes) => verifier.push_unterminated(origin, bytes),
            Line::TooLong => verifier.push_malformed(
                origin,
                &format!("line is longer than {max_line_bytes} bytes (--max-line-bytes)"),
            ),
        }
    }
    Ok(())
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
        let basis = match epoch.basis {
            TrustBasis::PinnedVendorRoot => "a vendor root pinned in teelog",
            TrustBasis::DevRoot => "a dev root given with --trust-root (not hardware-backed)",
            TrustBasis::TpmEnrollmentCa => "a TPM enrollment CA given with --trust-root",
            TrustBasis::BarePublicKey => "a public key given with --pubkey (no attestation)",
        };
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
