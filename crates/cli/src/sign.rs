//! `teelog sign`: NDJSON records in, signed batch lines out (stdout, a file, or the store).

use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use teelog_attest::TrustRoot;
use teelog_core::batch::{DEFAULT_BATCH_BYTES, MAX_BATCH_LINE};
use teelog_core::canon::Canonicalizer;
use teelog_core::{Input, PublicKey, Taken};
pub use teelog_deliver::clock::now;
use teelog_identity::Identity;
use teelog_ship::pipeline::RecordBuf;
use teelog_ship::{HeadTrust, Output, SignSummary, StreamSigner};
use teelog_store::lines::{Line, LineReader, Skipped};
use teelog_store::{Store, StoreOptions, DEFAULT_SEGMENT_BYTES};

/// Largest batch line `teelog verify` reads by default; no signer writes a longer one.
pub const DEFAULT_MAX_BATCH_LINE: usize = MAX_BATCH_LINE;

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
    /// Seal a batch before its line (header, hints and records) would grow past this many
    /// bytes; at most 8 MiB, the longest line `teelog verify` reads by default.
    #[arg(long, default_value_t = DEFAULT_BATCH_BYTES, value_parser = batch_bytes)]
    pub batch_bytes: usize,
    /// Input lines longer than this are not read: a signed notice with their length and
    /// SHA-256 takes their place.
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
    /// While reading: seal what is pending, or a heartbeat if nothing is, whenever this long
    /// (e.g. 30s, 10m) has passed since the last batch. For a signer reading a pipe that stays
    /// open, where `--heartbeat` from a timer cannot run: this identity is in use.
    #[arg(long, value_parser = heartbeat_every, conflicts_with = "heartbeat")]
    pub heartbeat_every: Option<Duration>,
    /// Trust this public key (PEM) for where the stream stands: a new epoch may link to the
    /// batches it signed (the key of the signer that wrote the stream before). Repeatable. The
    /// identity's own key, its saved state and documents under the AWS root are always trusted.
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
    /// Trust attestation documents in the output that chain to this root (PEM or DER): a new
    /// epoch may link to batches signed by the keys they bind. Repeatable.
    #[arg(long)]
    pub trust_root: Vec<PathBuf>,
    /// Rotate store segments at this size.
    #[arg(long, default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
}

/// Signs stdin; exits 1 if any record was refused (each is a signed notice in the stream).
pub fn run(args: &SignArgs) -> anyhow::Result<ExitCode> {
    // Not locked: the reader may run on a thread of its own (--heartbeat-every).
    let stdin = BufReader::with_capacity(1 << 20, io::stdin());
    let summary = sign_from(args, stdin, "stdin")?;
    eprintln!("teelog: signed {} records in {} batches", summary.records, summary.batches);
    if summary.refused > 0 {
        eprintln!(
            "teelog: {} input records were refused; a signed notice stands in the stream for each (teelog_notice \"record_refused\")",
            summary.refused
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn batch_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if bytes > MAX_BATCH_LINE {
        return Err(format!(
            "{bytes} is more than {MAX_BATCH_LINE}, the longest batch line `teelog verify` reads by default"
        ));
    }
    Ok(bytes)
}

fn heartbeat_every(text: &str) -> Result<Duration, String> {
    let nanos = teelog_core::timestamp::parse_duration(text).map_err(|e| e.to_string())?;
    Ok(Duration::from_nanos(nanos.unsigned_abs()))
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
pub fn sign_from(
    args: &SignArgs,
    input: BufReader<impl Read + Send + 'static>,
    input_name: &str,
) -> anyhow::Result<SignSummary> {
    let trust = head_trust(&args.pubkey, &args.trust_root)?;
    let identity = Identity::load_exclusive(&args.identity)?;
    let mut signer = StreamSigner::open_trusting(identity, &args.stream, open_output(args)?, &trust)?;
    if let Some(note) = signer.note() {
        eprintln!("teelog: {note}");
    }
    signer.set_batch_bytes(args.batch_bytes);
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

/// The keys (PEM files) and roots (PEM or DER files) a signer trusts, beyond its own, for where
/// a stream stands when it starts a new epoch.
pub fn head_trust(pubkeys: &[PathBuf], roots: &[PathBuf]) -> anyhow::Result<HeadTrust> {
    let mut keys = Vec::new();
    for path in pubkeys {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        keys.push(PublicKey::from_pem(&pem).with_context(|| path.display().to_string())?);
    }
    let mut trusted_roots = Vec::new();
    for path in roots {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        trusted_roots.push(TrustRoot::from_pem_or_der(&bytes).with_context(|| path.display().to_string())?);
    }
    // The AWS root is added where documents are checked, if ever.
    Ok(HeadTrust { keys, roots: trusted_roots, saved_head: None })
}

/// What the reading thread hands the signer: lines read and canonicalised, a block at a time.
enum Block {
    /// Input lines from number `.0` on, in order, blank ones included (see
    /// [`RecordBuf::push_line`]).
    Lines(u64, RecordBuf),
    /// Input line `.0`, which was too long to read.
    TooLong(u64, Skipped),
}

/// A block is handed over at this many lines or bytes, or sooner when the input has no more
/// for now (a pipe that stays open), so that `--heartbeat-every` and the seals see it.
const BLOCK_LINES: u64 = 256;
const BLOCK_BYTES: usize = 64 << 10;
/// Blocks read ahead of the signer: a default batch's worth (4096 sample records), so that the
/// next batch is canonicalised while this one is fsynced. With the one being filled and the one
/// being signed (their buffers go round), what bounds the memory between the two threads: about
/// 1.1 MiB, or 18 of the longest lines.
const BLOCKS_AHEAD: usize = 16;

/// Reads and signs `input`: one thread reads the lines and canonicalises them while this one
/// hashes, seals and writes, so on two cores the two halves overlap. The order of the records
/// is kept, and a read error is reported after every line read before it is signed.
fn consume(
    signer: &mut StreamSigner,
    args: &SignArgs,
    input: BufReader<impl Read + Send + 'static>,
    input_name: &str,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::sync_channel(BLOCKS_AHEAD);
    // Signed blocks go back to be filled again: no block's buffers are allocated twice.
    let (done, emptied) = mpsc::channel();
    let max_line_bytes = args.max_line_bytes;
    let thread = std::thread::Builder::new()
        .name("teelog-read".into())
        .spawn(move || read_blocks(input, max_line_bytes, &tx, &emptied))
        .context("cannot start the thread that reads the input")?;
    let mut last_seal = Instant::now();
    let mut batches = signer.summary().batches;
    let result = loop {
        let block = match args.heartbeat_every {
            // A blocked read must not hold up the heartbeats.
            Some(every) => rx.recv_timeout((last_seal + every).saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let step = match block {
            Ok(Block::Lines(first, mut records)) => {
                let taken = take_block(signer, args, input_name, first, &records);
                records.clear();
                // The reader may have ended; then the block is dropped here.
                let _ = done.send(records);
                taken
            }
            Ok(Block::TooLong(n, skipped)) => too_long(signer, args, input_name, n, skipped),
            Err(RecvTimeoutError::Timeout) => signer.seal(now()).map(drop).map_err(anyhow::Error::from),
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        };
        if let Err(e) = step {
            break Err(e);
        }
        // Any batch written, full or heartbeat, restarts the interval.
        if signer.summary().batches != batches {
            batches = signer.summary().batches;
            last_seal = Instant::now();
        }
    };
    // An error here leaves the reader blocked on its input; it ends with the process.
    drop(rx);
    result?;
    match thread.join() {
        Ok(read) => read.with_context(|| format!("cannot read {input_name}")),
        Err(_) => anyhow::bail!("the thread reading {input_name} failed"),
    }
}

/// The reading thread: lines of `input`, canonicalised where they can be, in blocks to `tx`
/// until the input ends, fails (the lines read before are sent first) or the signer stops.
fn read_blocks(
    input: BufReader<impl Read>,
    max_line_bytes: usize,
    tx: &mpsc::SyncSender<Block>,
    emptied: &mpsc::Receiver<RecordBuf>,
) -> io::Result<()> {
    let mut reader = LineReader::new(input, max_line_bytes);
    let mut canon = Canonicalizer::new();
    let mut block = RecordBuf::default();
    let mut first = 1;
    // False once the signer has stopped taking blocks.
    let send = |first: u64, block: &mut RecordBuf| {
        if block.is_empty() {
            return true;
        }
        let next = emptied.try_recv().unwrap_or_default();
        tx.send(Block::Lines(first, std::mem::replace(block, next))).is_ok()
    };
    loop {
        let (n, line) = match reader.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                send(first, &mut block);
                return Err(e);
            }
        };
        match line {
            Line::Complete(bytes) | Line::Unterminated(bytes) => {
                if block.is_empty() {
                    first = n;
                }
                // A sign run has no bound on a record but the batch line's.
                block.push_line(&mut canon, bytes, usize::MAX);
            }
            Line::TooLong => {
                if !send(first, &mut block) || tx.send(Block::TooLong(n, reader.skipped())).is_err() {
                    return Ok(());
                }
            }
        }
        let full = block.len() >= BLOCK_LINES || block.byte_len() >= BLOCK_BYTES;
        if (full || !reader.next_line_buffered()) && !send(first, &mut block) {
            return Ok(());
        }
    }
    send(first, &mut block);
    Ok(())
}

/// Signs the input lines of a block, from line `first` on (or a notice in the place of each
/// that is refused), sealing each batch once it is full.
fn take_block(
    signer: &mut StreamSigner,
    args: &SignArgs,
    input_name: &str,
    first: u64,
    records: &RecordBuf,
) -> anyhow::Result<()> {
    for (n, input) in (first..).zip(records.inputs()) {
        if matches!(input, Input::Json(bytes) if teelog_core::record::is_blank(bytes)) {
            continue;
        }
        if let Taken::Refused(e) = signer.push_input(input, &|| format!("{input_name}:{n}"))? {
            eprintln!("teelog: {input_name}:{n}: {e}; a signed notice stands in its place");
        }
        seal_if_full(signer, args)?;
    }
    Ok(())
}

fn seal_if_full(signer: &mut StreamSigner, args: &SignArgs) -> anyhow::Result<()> {
    if signer.sealer().pending_records() >= args.batch_size {
        signer.seal(now())?;
    }
    Ok(())
}

/// Signs the notice that stands for input line `n`, which was too long to read.
fn too_long(
    signer: &mut StreamSigner,
    args: &SignArgs,
    input_name: &str,
    n: u64,
    skipped: Skipped,
) -> anyhow::Result<()> {
    let max = args.max_line_bytes;
    eprintln!("teelog: {input_name}:{n}: line longer than {max} bytes (--max-line-bytes); a signed notice stands in its place");
    signer.push_too_long(&format!("{input_name}:{n}"), max, skipped)?;
    seal_if_full(signer, args)
}
