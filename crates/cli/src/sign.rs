//! `teelog sign`: NDJSON records in, signed batch lines out (stdout, a file, or the store).

use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;

use anyhow::{bail, Context};
use teelog_identity::Identity;
pub use teelog_ship::signer::now;
use teelog_ship::{Output, SignSummary, StreamSigner};
use teelog_store::lines::{Line, LineReader};
use teelog_store::{Store, StoreOptions, DEFAULT_SEGMENT_BYTES};

/// Largest batch line `teelog verify` reads by default: `--batch-bytes` plus one record and a
/// header fit comfortably.
pub const DEFAULT_MAX_BATCH_LINE: usize = 8 << 20;

#[derive(clap::Args, Clone)]
pub struct SignArgs {
    /// Identity directory made by `teelog keygen`.
    #[arg(long)]
    pub identity: PathBuf,
    #[arg(long, default_value = "default")]
    pub stream: String,
    /// Seal a batch after this many records.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Seal a batch once its records reach this many bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub batch_bytes: usize,
    /// Refuse input lines longer than this.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
    /// Append batches to this file (fsynced per batch) instead of stdout.
    #[arg(long, conflicts_with = "store")]
    pub out: Option<PathBuf>,
    /// Append batches to this embedded store directory.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Read nothing: seal one empty batch, a heartbeat that proves the signer was alive with
    /// nothing to log (run it from a timer so that `verify --max-silence` can spot a cut tail).
    #[arg(long)]
    pub heartbeat: bool,
    /// Rotate store segments at this size.
    #[arg(long, default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
}

pub fn run(args: &SignArgs) -> anyhow::Result<SignSummary> {
    let stdin = io::stdin().lock();
    let summary = sign_from(args, BufReader::with_capacity(1 << 20, stdin), "stdin")?;
    eprintln!("teelog: signed {} records in {} batches", summary.records, summary.batches);
    Ok(summary)
}

fn open_output(args: &SignArgs) -> anyhow::Result<Output> {
    Ok(match (&args.out, &args.store) {
        (Some(path), _) => Output::file(path)?,
        (None, Some(dir)) => {
            Output::Store(Store::open(dir, StoreOptions { segment_bytes: args.segment_bytes })?)
        }
        (None, None) => Output::Stdout(io::stdout()),
    })
}

/// Signs records from `input` according to `args`; `input_name` names it in errors.
pub fn sign_from(args: &SignArgs, input: impl BufRead, input_name: &str) -> anyhow::Result<SignSummary> {
    let identity = Identity::load_exclusive(&args.identity)?;
    let mut signer = StreamSigner::open(identity, &args.stream, open_output(args)?)?;
    let result = if args.heartbeat {
        signer.seal(now()).map(drop).map_err(anyhow::Error::from)
    } else {
        consume(&mut signer, args, input, input_name)
    };
    // Whatever happened, what was accepted is sealed and the state saved.
    let finished = signer.finish(now());
    result.and(finished.map_err(anyhow::Error::from))?;
    Ok(signer.summary())
}

fn consume(
    signer: &mut StreamSigner,
    args: &SignArgs,
    input: impl BufRead,
    input_name: &str,
) -> anyhow::Result<()> {
    let mut reader = LineReader::new(input, args.max_line_bytes);
    while let Some((n, line)) = reader.next_line().with_context(|| format!("cannot read {input_name}"))? {
        let bytes = match line {
            Line::Complete(bytes) | Line::Unterminated(bytes) => bytes,
            Line::TooLong => bail!(
                "{input_name}:{n}: line is longer than {} bytes (--max-line-bytes)",
                args.max_line_bytes
            ),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        signer.push(bytes, &now).map_err(|e| anyhow::anyhow!("{input_name}:{n}: {e}"))?;
        if signer.sealer().pending_records() >= args.batch_size
            || signer.sealer().pending_bytes() >= args.batch_bytes
        {
            signer.seal(now())?;
        }
    }
    Ok(())
}
