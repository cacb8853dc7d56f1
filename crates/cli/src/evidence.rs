//! `teelog evidence`: export the proof for chosen records as one bundle file, and check a bundle
//! offline (docs/FORMAT.md §16).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use teelog_audit::files::{LineSink, Source};
use teelog_audit::LokiAudit;
use teelog_core::anchor::Linker;
use teelog_core::display::escape_controls;
use teelog_core::evidence::{check_bundle, Bundle, BundleReport, Exporter, Selection, TimestampVerifier};

use crate::audit::LokiArgs;
use crate::sign::DEFAULT_MAX_BATCH_LINE;
use crate::verify::{expectations, StreamArgs, TrustArgs};

/// Bundles larger than this are refused before they are parsed.
const MAX_BUNDLE_BYTES: u64 = 256 << 20;

#[derive(clap::Subcommand)]
pub enum EvidenceCommand {
    /// Write one bundle with the chosen records, their inclusion proofs, the signed headers and
    /// attestation documents; other records of a batch appear only as hashes.
    Export(Box<ExportArgs>),
    /// Check a bundle offline; exit 0 if every record in it is proven, 1 on any finding, 2 on
    /// errors.
    Verify(Box<BundleVerifyArgs>),
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Files of batch lines.
    pub files: Vec<PathBuf>,
    /// An embedded store directory.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Read the batches from Grafana Loki instead (as `teelog audit` does): --loki URL --from
    /// TIME, and the audit's other Loki options.
    #[command(flatten)]
    pub loki: Option<LokiArgs>,
    /// The stream of the records (from Loki: the only stream read).
    #[arg(long)]
    pub stream: Option<String>,
    /// The epoch of the batch (needed only when several epochs have the seq).
    #[arg(long, requires = "seq")]
    pub epoch: Option<String>,
    /// The seq of the batch: with --stream, selects its records.
    #[arg(long, requires = "stream", conflicts_with = "matching")]
    pub seq: Option<u64>,
    /// One record of the batch, by its index from 0 (default: every record of it).
    #[arg(long, requires = "seq")]
    pub index: Option<u64>,
    /// Every record with a member KEY (at any depth) whose value is VALUE, e.g.
    /// executionId=abc-123.
    #[arg(long = "match", value_name = "KEY=VALUE")]
    pub matching: Option<String>,
    /// Where to write the bundle.
    #[arg(long)]
    pub out: PathBuf,
    /// An RFC 3161 time-stamping authority (its HTTP URL): each batch's header is stamped at
    /// export, so the bundle proves by trusted time that the batch existed by then.
    #[arg(long, value_name = "URL")]
    pub tsa: Option<String>,
    /// A file of gateway checkpoint lines kept apart from the storage (e.g. a copy of the
    /// gateway's checkpoints.ndjson); stamped checkpoints in the input are used as well. Each
    /// selected batch is linked to the first stamped checkpoint at or after it.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// Use only checkpoints and timestamp notices whose token verifies under this TSA root (PEM
    /// or DER); repeat for several. Without one, tokens are taken as they are (the auditor checks
    /// them).
    #[arg(long, value_name = "PEM")]
    pub tsa_root: Vec<PathBuf>,
    /// Longer lines are passed over.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_LINE)]
    pub max_line_bytes: usize,
}

#[derive(clap::Args)]
pub struct BundleVerifyArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Trust timestamp tokens of TSAs whose certificate chains to this root (PEM or DER);
    /// repeat for several. Without one, tokens in the bundle are not checked.
    #[arg(long)]
    pub tsa_root: Vec<PathBuf>,
    /// Also check the gateway's signature of the bundle's checkpoints under this key (PEM;
    /// `teelog gateway --print-checkpoint-key`). The time they give rests on their TSA tokens
    /// alone; the signature says the gateway made them.
    #[arg(long = "checkpoint-key", value_name = "PEM")]
    pub checkpoint_keys: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: &EvidenceCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvidenceCommand::Export(args) => export(args),
        EvidenceCommand::Verify(args) => verify(args),
    }
}

fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let selection = match (&args.matching, args.seq, &args.stream) {
        (Some(matching), _, stream) => {
            let Some((key, value)) = matching.split_once('=') else {
                bail!("--match {matching:?}: write it as KEY=VALUE, e.g. executionId=abc-123");
            };
            Selection::Match { stream: stream.clone(), key: key.to_string(), value: value.to_string() }
        }
        (None, Some(seq), Some(stream)) => {
            Selection::Place { stream: stream.clone(), epoch: args.epoch.clone(), seq, index: args.index }
        }
        _ => bail!("say which records: --stream S --seq N [--index I], or --match KEY=VALUE"),
    };
    let mut sources: Vec<Source> = args.files.iter().cloned().map(Source::File).collect();
    sources.extend(args.store.clone().map(Source::Store));
    let loki = match &args.loki {
        Some(_) if !sources.is_empty() => bail!("read the batches from Loki or from files, not both"),
        Some(loki) => Some(loki.options(args.stream.iter().cloned().collect(), false)?),
        None => None,
    };
    // Two passes: the records selected first, then the checkpoints and headers linked to them
    // (which batches they are for is known only once every line was read).
    let mut exporter = Exporter::new(selection);
    read_input(&mut exporter, &sources, loki.as_ref(), args.max_line_bytes)?;
    let mut bundle = exporter.finish()?;
    let mut linker = Linker::new(&bundle, tsa_roots(&args.tsa_root)?);
    read_input(&mut linker, &sources, loki.as_ref(), args.max_line_bytes)?;
    for path in &args.checkpoints {
        let what = || format!("--checkpoint {}", path.display());
        let file = std::fs::File::open(path).with_context(what)?;
        teelog_audit::files::feed(
            &mut linker,
            std::io::BufReader::new(file),
            &path.display().to_string(),
            args.max_line_bytes,
        )
        .with_context(what)?;
    }
    linker.finish(&mut bundle)?;
    if let Some(url) = &args.tsa {
        teelog_audit::tsa::stamp(&mut bundle, url)?;
    }
    let mut text = serde_json::to_vec(&bundle)?;
    text.push(b'\n');
    teelog_store::write_atomic(&args.out, &text)
        .map_err(|(path, e)| anyhow::anyhow!("{}: {e}", path.display()))?;
    eprintln!(
        "wrote {}: {} records from {} batches ({} bytes)",
        args.out.display(),
        bundle.records.len(),
        bundle.batches.len(),
        text.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &BundleVerifyArgs) -> anyhow::Result<ExitCode> {
    let name = args.bundle.display();
    let file = std::fs::File::open(&args.bundle).with_context(|| format!("{name}"))?;
    let mut text = Vec::new();
    file.take(MAX_BUNDLE_BYTES + 1).read_to_end(&mut text).with_context(|| format!("{name}"))?;
    if text.len() as u64 > MAX_BUNDLE_BYTES {
        bail!("{name}: larger than {} MiB: not an evidence bundle", MAX_BUNDLE_BYTES >> 20);
    }
    let bundle: Bundle =
        serde_json::from_slice(&text).with_context(|| format!("{name}: not an evidence bundle"))?;
    let (trust, expect) = expectations(&args.trust, &StreamArgs::default())?;
    let now = expect.now;
    let teelog_trust::Trust { keys, policy, attestation } = trust;
    let options = teelog_audit::options(keys, policy, &expect)?;
    let tsa = tsa_roots(&args.tsa_root)?;
    let checkpoint_keys = args
        .checkpoint_keys
        .iter()
        .map(|path| {
            teelog_trust::public_key(path).with_context(|| format!("--checkpoint-key {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report =
        check_bundle(&bundle, &options, Some(&attestation), tsa.as_deref(), &checkpoint_keys, Some(now));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_statement(&report);
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Feeds the batch lines of `sources`, or of Loki, to `sink`.
fn read_input(
    sink: &mut impl LineSink,
    sources: &[Source],
    loki: Option<&LokiAudit>,
    max_line_bytes: usize,
) -> anyhow::Result<()> {
    match loki {
        Some(options) => {
            crate::audit::read_loki(sink, options, teelog_audit::pool::default_threads()).map(|_| ())
        }
        None => Ok(teelog_audit::files::read(sink, sources, max_line_bytes)?),
    }
}

/// The TSA roots given, as a token verifier; None when none is.
fn tsa_roots(paths: &[PathBuf]) -> anyhow::Result<Option<Box<dyn TimestampVerifier>>> {
    let roots = paths.iter().map(|path| teelog_trust::certificate(path)).collect::<Result<Vec<_>, _>>()?;
    Ok((!roots.is_empty())
        .then(|| Box::new(teelog_audit::tsa::TsaRoots(roots)) as Box<dyn TimestampVerifier>))
}

/// The report as a plain statement, one paragraph per record; every field from the bundle is
/// escaped.
fn print_statement(report: &BundleReport) {
    let safe = |text: &str| escape_controls(text).into_owned();
    for f in &report.findings {
        println!("FAIL {}  {}", f.kind.name(), safe(&f.detail));
    }
    for r in &report.proven {
        let basis = teelog_audit::html::basis_text(r.basis);
        println!(
            "RECORD {} of {} in stream {} epoch {} seq {}",
            r.index,
            r.batch_records,
            safe(&r.stream),
            r.epoch,
            r.seq
        );
        println!("  {}", safe(&r.record));
        println!("  is in the batch's signed Merkle root (RFC 9162 inclusion proof checked)");
        println!("  signed by key {} at {} (the signer's clock)", r.key_id, r.sealed_at);
        match &r.document {
            Some(document) => println!(
                "  key bound by a {} attestation document ({document}){}, whose chain rests on {basis}",
                r.platform,
                r.attested_at.as_deref().map(|at| format!(" made at {at}")).unwrap_or_default()
            ),
            None => println!("  key given by the auditor: trust rests on {basis}"),
        }
        match (&r.no_earlier_than, &r.no_later_than) {
            (Some(lo), Some(hi)) => {
                println!("  sealed between {} and {} (trusted time)", lo.at, hi.at);
                println!("    not before: {}", safe(&lo.by));
                println!("    not after:  {}", safe(&hi.by));
            }
            (None, Some(hi)) => {
                println!("  sealed no later than {} (trusted time), by {}", hi.at, safe(&hi.by))
            }
            (Some(lo), None) => {
                println!("  sealed no earlier than {} (trusted time), by {}", lo.at, safe(&lo.by))
            }
            (None, None) => println!("  no trusted time: sealed_at is the signer's word"),
        }
        for why in &r.unbounded {
            println!("  {}", safe(why));
        }
        println!(
            "  code measurement {}{}",
            r.measurement,
            r.version.as_deref().map(|v| format!(", version {} in the policy", safe(v))).unwrap_or_default()
        );
    }
    if report.ok {
        println!("OK   {} records proven", report.proven.len());
    } else {
        println!("FAIL {} findings; {} records proven", report.findings.len(), report.proven.len());
    }
}
