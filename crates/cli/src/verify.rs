//! `teelog verify`: check batch files and stores offline.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use teelog_attest::BindingVerifier;
use teelog_core::policy::Policy;
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{Freshness, Origin, PublicKey, Report, Verifier, VerifyOptions};
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
    /// With --max-silence: the time to judge freshness at (RFC 3339; default: now).
    #[arg(long, requires = "max_silence")]
    pub now: Option<String>,
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
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report);
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<Report> {
    if args.files.is_empty() && args.store.is_none() {
        bail!("nothing to verify: give batch files, `-` for stdin, or --store DIR");
    }
    let mut verifier = verifier(&args.trust)?;
    let mut sources: Vec<PathBuf> = args.files.clone();
    if let Some(dir) = &args.store {
        let segments = teelog_store::segments(dir)?;
        if segments.is_empty() {
            bail!("{}: no store segments here", dir.display());
        }
        sources.extend(segments);
    }
    for path in &sources {
        let name = path.display().to_string();
        if name == "-" {
            feed(&mut verifier, io::stdin().lock(), "stdin", args.max_line_bytes)?;
        } else {
            let file = File::open(path).with_context(|| format!("cannot read {name}"))?;
            feed(&mut verifier, BufReader::with_capacity(1 << 20, file), &name, args.max_line_bytes)?;
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
    let freshness = match args.max_silence {
        None => None,
        Some(max_silence) => {
            let now = match &args.now {
                Some(text) => parse_rfc3339(text).context("--now")?,
                None => crate::sign::now(),
            };
            Some(Freshness { now, max_silence })
        }
    };
    let options =
        VerifyOptions { trusted_keys: trust.keys, expect_measurement, policy: trust.policy, freshness };
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
            Line::Complete(bytes) | Line::Unterminated(bytes) => verifier.push_line(origin, bytes),
            Line::TooLong => verifier.push_malformed(
                origin,
                &format!("line is longer than {max_line_bytes} bytes (--max-line-bytes)"),
            ),
        }
    }
    Ok(())
}

pub fn print_human(report: &Report) {
    for f in &report.findings {
        let mut place = String::new();
        if let Some(stream) = &f.stream {
            place.push_str(&format!(" stream={stream}"));
        }
        if let Some(epoch) = &f.epoch {
            place.push_str(&format!(" epoch={epoch}"));
        }
        if let Some(seq) = f.seq {
            place.push_str(&format!(" seq={seq}"));
        }
        if let Some(index) = f.record_index {
            place.push_str(&format!(" record={index}"));
        }
        println!("FAIL {}{place}\n     {}", f.kind.name(), f.detail);
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
            run.version.as_deref().unwrap_or("(unlisted)"),
            run.platform,
            run.measurement,
            run.batches,
            run.first,
            run.last
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
        println!("FAIL {counts}: {} findings", report.findings.len());
    }
}
