//! `teelog sign`: NDJSON records in, signed batch lines out (stdout, a file, or the store).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use teelog_core::batch::{attestation_line, check_stream_name, ParsedBatch, SignatureStatus};
use teelog_core::merkle::Digest;
use teelog_core::timestamp::UnixNanos;
use teelog_core::{BatchBuilder, ChainHead, Header, HeaderSigner, PublicKey};
use teelog_identity::SoftwareIdentity;
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

#[derive(Debug, Default)]
pub struct SignSummary {
    pub records: u64,
    pub batches: u64,
}

pub fn run(args: &SignArgs) -> anyhow::Result<SignSummary> {
    let stdin = io::stdin().lock();
    let summary = sign_from(args, BufReader::with_capacity(1 << 20, stdin), "stdin")?;
    eprintln!("teelog: signed {} records in {} batches", summary.records, summary.batches);
    Ok(summary)
}

pub fn now() -> UnixNanos {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixNanos::try_from(since.as_nanos()).unwrap_or(UnixNanos::MAX)
}

enum Sink {
    Stdout(io::Stdout),
    /// `durable`: a regular file, which is fsynced per batch (pipes and devices cannot be).
    File {
        file: File,
        path: PathBuf,
        durable: bool,
    },
    Store(Store),
}

impl Sink {
    fn open(args: &SignArgs) -> anyhow::Result<Self> {
        Ok(match (&args.out, &args.store) {
            (Some(path), _) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let durable = file.metadata().is_ok_and(|m| m.is_file());
                Sink::File { file, path: path.clone(), durable }
            }
            (None, Some(dir)) => {
                Sink::Store(Store::open(dir, StoreOptions { segment_bytes: args.segment_bytes })?)
            }
            (None, None) => Sink::Stdout(io::stdout()),
        })
    }

    /// Whether batches survive in this sink for the next run to find.
    fn is_readable(&self) -> bool {
        match self {
            Sink::Stdout(_) => false,
            Sink::File { durable, .. } => *durable,
            Sink::Store(_) => true,
        }
    }

    fn write(&mut self, line: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(out) => {
                out.write_all(line).and_then(|()| out.flush()).context("cannot write to stdout")
            }
            Sink::File { file, path, durable } => file
                .write_all(line)
                .and_then(|()| if *durable { file.sync_data() } else { Ok(()) })
                .with_context(|| format!("cannot write {}", path.display())),
            Sink::Store(store) => Ok(store.append(line)?),
        }
    }

    /// Headers of `stream` from the newest part of the output that holds any (the whole file;
    /// store segments newest first until one has a match): of `epoch` and validly signed by
    /// `key` when continuing that epoch, of any signer when starting a new one.
    fn signed_headers(
        &self,
        stream: &str,
        key: &PublicKey,
        epoch: Option<&str>,
    ) -> anyhow::Result<Vec<(Header, Digest)>> {
        let paths = match self {
            Sink::Stdout(_) => return Ok(Vec::new()),
            Sink::File { path, durable: true, .. } => vec![path.clone()],
            Sink::File { .. } => return Ok(Vec::new()),
            Sink::Store(store) => teelog_store::segments(store.dir())?,
        };
        // Continuing an epoch, only this key's own batches count. A new epoch links to the
        // newest header of the stream whoever signed it (a previous run's key, gone with its
        // TEE); a forged one there would only earn the new epoch a reported chain_break.
        newest_headers(&paths, stream, epoch.map(|_| key), epoch)
    }
}

/// Headers of `stream` from the newest of `paths` (oldest first) that holds any of `epoch`
/// (any epoch if `None`), signed by `key` when one is given.
fn newest_headers(
    paths: &[PathBuf],
    stream: &str,
    key: Option<&PublicKey>,
    epoch: Option<&str>,
) -> anyhow::Result<Vec<(Header, Digest)>> {
    for path in paths.iter().rev() {
        let found = scan_signed_headers(path, stream, key)?;
        if found.iter().any(|(h, _)| epoch.is_none_or(|e| h.epoch == e)) {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

/// The header a new epoch of `stream` in `store` links to: its newest, by `sealed_at`.
pub fn stream_head(store: &Path, stream: &str) -> anyhow::Result<Option<String>> {
    let found = newest_headers(&teelog_store::segments(store)?, stream, None, None)?;
    Ok(ChainHead::resume(stream, None, found).prev)
}

/// Headers of `stream` in one file, signed by `key` when one is given.
fn scan_signed_headers(
    path: &Path,
    stream: &str,
    key: Option<&PublicKey>,
) -> anyhow::Result<Vec<(Header, Digest)>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = LineReader::new(BufReader::new(file), usize::MAX >> 1);
    let mut found = Vec::new();
    while let Some((_, line)) =
        reader.next_line().with_context(|| format!("cannot read {}", path.display()))?
    {
        let (Line::Complete(bytes) | Line::Unterminated(bytes)) = line else {
            continue;
        };
        let Ok(batch) = ParsedBatch::parse(bytes) else {
            continue;
        };
        let signed = key.is_none_or(|k| batch.verify_with(k) == SignatureStatus::Valid);
        if batch.header.stream == stream && signed {
            found.push((batch.header.clone(), batch.header_hash));
        }
    }
    Ok(found)
}

/// Signs records from `input` according to `args`; `input_name` names it in errors.
pub fn sign_from(args: &SignArgs, input: impl BufRead, input_name: &str) -> anyhow::Result<SignSummary> {
    check_stream_name(&args.stream)?;
    let identity = SoftwareIdentity::load_exclusive(&args.identity)?;
    let mut sink = Sink::open(args)?;
    if let Some(document) = identity.attestation_document() {
        // Stored with every run: duplicates are harmless, a batch without its document is not.
        sink.write(&attestation_line(document))?;
    }
    let saved = identity.load_state(&args.stream)?;
    let found = sink.signed_headers(
        &args.stream,
        identity.signer().public_key(),
        saved.as_ref().map(|s| s.epoch.as_str()),
    )?;
    let head = ChainHead::resume(&args.stream, saved, found);
    let mut signer = StreamSigner {
        identity,
        sink,
        head,
        builder: BatchBuilder::new(),
        line: Vec::new(),
        summary: SignSummary::default(),
    };
    let result = if args.heartbeat { signer.seal() } else { signer.consume(args, input, input_name) };
    // Whatever happened, what was accepted is sealed and the state saved.
    let finished = signer.finish();
    result.and(finished)?;
    Ok(signer.summary)
}

struct StreamSigner {
    identity: SoftwareIdentity,
    sink: Sink,
    head: ChainHead,
    builder: BatchBuilder,
    line: Vec<u8>,
    summary: SignSummary,
}

impl StreamSigner {
    fn consume(&mut self, args: &SignArgs, input: impl BufRead, input_name: &str) -> anyhow::Result<()> {
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
            self.builder.push_input(bytes, &now).map_err(|e| anyhow::anyhow!("{input_name}:{n}: {e}"))?;
            if self.builder.len() >= args.batch_size || self.builder.byte_len() >= args.batch_bytes {
                self.seal()?;
            }
        }
        Ok(())
    }

    fn seal(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        let sealed = self.builder.seal(&mut self.head, self.identity.signer(), now(), &mut self.line)?;
        if !self.sink.is_readable() {
            // The next run cannot look at this output, so the state goes first: a crash in
            // between costs a reported gap, never a seq signed twice.
            self.identity.save_state(&self.head)?;
        }
        self.sink.write(&self.line)?;
        self.summary.records += sealed.count;
        self.summary.batches += 1;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if !self.builder.is_empty() {
            self.seal()?;
        }
        self.identity.save_state(&self.head)?;
        Ok(())
    }
}
