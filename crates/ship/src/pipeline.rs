//! The signing pipeline: producers submit records; one signer thread batches them (by count,
//! bytes and delay) and seals each batch; the spool writer appends it with an fsync and only
//! then acknowledges the records in it. Idle, the signer seals heartbeats. Memory is bounded
//! by a byte budget on the records in flight; the spool is bounded by how far its slowest sink
//! lags.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use teelog_core::batch::{fits_alone, MAX_BATCH_LINE};
use teelog_core::canon::Canonicalizer;
use teelog_core::merkle::sha256;
use teelog_core::record::{canonicalize_record, RecordError};
use teelog_core::timestamp::{format_rfc3339, UnixNanos};
use teelog_core::{Input, Sealed, Taken};
use teelog_store::lines::Skipped;
use tokio::sync::{oneshot, watch, Notify};

use teelog_deliver::clock::now;
use teelog_deliver::spool::SpoolState;
use teelog_store::reader::Position;

use crate::health::Health;
use crate::metrics::ShipMetrics;
use crate::signer::{too_long_notice, BatchSealer, ShipError, SignSummary, StreamSigner};

mod writer;

use writer::SpoolWriter;

/// What a producer meets when the queue of records waiting to be sealed is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Producers wait (OTLP callers get a retryable error once they have waited too long).
    Block,
    /// Records that do not fit are counted and dropped, and a signed notice says how many.
    Drop,
}

/// How the pipeline batches, queues and spools.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Records per batch.
    pub max_records: u64,
    /// Bytes of a batch line.
    pub max_bytes: usize,
    /// Seal a batch at the latest this long after its first record arrived.
    pub max_delay: Duration,
    /// Seal an empty batch after this long without one.
    pub heartbeat: Option<Duration>,
    /// Bytes of submitted records held in memory, waiting to be sealed.
    pub queue_bytes: usize,
    /// What producers meet when the queue is full.
    pub when_full: WhenFull,
    /// How long a blocked OTLP caller waits for room before it is told to retry.
    pub max_wait: Duration,
    /// Spool bytes not yet delivered to every sink; 0 for no bound.
    pub spool_bytes: u64,
    /// Keep delivered spool segments (the spool is then also the store).
    pub keep_spool: bool,
    /// The longest record taken from any source (a longer one is refused, and a signed notice
    /// with its length and SHA-256 takes its place), so that every input path has one bound.
    pub max_record_bytes: usize,
    /// Acknowledge a submission only once its batches are delivered to the gateway
    /// ([`Shared::remote_delivered`] says how far), not once they are in the spool.
    pub remote_ack: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            max_records: 4096,
            max_bytes: 4 << 20,
            max_delay: Duration::from_millis(200),
            heartbeat: Some(Duration::from_secs(10)),
            queue_bytes: 64 << 20,
            when_full: WhenFull::Block,
            max_wait: Duration::from_secs(5),
            spool_bytes: 1 << 30,
            keep_spool: false,
            max_record_bytes: 1 << 20,
            remote_ack: false,
        }
    }
}

/// Records for one submission: JSON objects, each followed by a newline.
#[derive(Debug, Default)]
pub struct RecordBuf {
    bytes: Vec<u8>,
    count: u64,
    /// Per record, its `ts` if it is already in canonical form; empty while none is.
    canonical: Vec<Option<UnixNanos>>,
}

impl RecordBuf {
    /// Adds one record (a JSON object, without newline), to be canonicalised by the signer.
    pub fn push(&mut self, record: &[u8]) {
        if !self.canonical.is_empty() {
            self.canonical.push(None);
        }
        self.append(record);
    }

    /// Adds one record that its writer made in canonical form with `ts` (see [`Input::Canonical`]).
    pub fn push_canonical(&mut self, record: &[u8], ts: UnixNanos) {
        self.canonical.resize(self.count as usize, None);
        self.canonical.push(Some(ts));
        self.append(record);
    }

    /// Adds one input line, canonicalised here by the thread that read it, so that reading and
    /// canonicalising overlap with the signer's hashing, sealing and writing. A line the
    /// canonicaliser refuses, or whose canonical form is longer than `max_record_bytes` or than
    /// a batch line holds, is added as it came: the signer refuses it with a notice, as it
    /// would have, whose length and SHA-256 are those of the line as received.
    pub fn push_line(&mut self, canon: &mut Canonicalizer, line: &[u8], max_record_bytes: usize) {
        if line.len() <= max_record_bytes && !teelog_core::record::is_blank(line) {
            let mark = self.bytes.len();
            if let Ok(ts) = canonicalize_record(canon, line, &now, &mut self.bytes) {
                let len = self.bytes.len() - mark;
                if len <= max_record_bytes && fits_alone(len) {
                    self.canonical.resize(self.count as usize, None);
                    self.canonical.push(Some(ts));
                    self.bytes.push(b'\n');
                    self.count += 1;
                    return;
                }
                self.bytes.truncate(mark);
            }
        }
        self.push(line);
    }

    fn append(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.bytes.push(b'\n');
        self.count += 1;
    }

    /// The `index`th record as the signer takes it.
    fn input<'a>(&self, index: usize, record: &'a [u8]) -> Input<'a> {
        match self.canonical.get(index) {
            Some(Some(ts)) => Input::Canonical { record, ts: *ts },
            _ => Input::Json(record),
        }
    }

    /// Holds no record, and keeps its buffers for the next ones.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.canonical.clear();
        self.count = 0;
    }

    /// The records held, in order, as the signer takes them.
    pub fn inputs(&self) -> impl Iterator<Item = Input<'_>> {
        Self::lines(&self.bytes).enumerate().map(|(index, record)| self.input(index, record))
    }

    /// Records held.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held, newlines included: what the submission takes of the queue's budget.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The records of a buffer's bytes, in order.
    fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        memchr::memchr_iter(b'\n', bytes).map(move |end| {
            let line = &bytes[start..end];
            start = end + 1;
            line
        })
    }
}

/// What happened to the records of one submission, once they are in the spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Records sealed into batches.
    pub accepted: u64,
    /// Records refused (not valid records); `first_error` says why for the first.
    pub rejected: u64,
    /// Why the first refused record was refused, with where it came from.
    pub first_error: Option<String>,
}

/// Why records were not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full and the caller did not (or could no longer) wait: send again later.
    #[error("the signer's queue is full; retry later")]
    Full,
    /// The signer thread has stopped (closing, or failed); says what happened.
    #[error("the signer has stopped: {0}")]
    Stopped(String),
}

/// Where records come from, for error messages: `stdin:17`, `otlp-http`.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The source's name: `stdin`, `otlp-http`, a file's path.
    pub name: Arc<str>,
    /// The line number of the first record, for line-oriented sources.
    pub first_line: Option<u64>,
}

impl Origin {
    /// A source that is not line-oriented: records are named by their index.
    pub fn named(name: &str) -> Self {
        Self { name: name.into(), first_line: None }
    }

    fn locate(&self, index: u64) -> String {
        match self.first_line {
            Some(line) => format!("{}:{}", self.name, line + index),
            None => format!("{} record {}", self.name, index + 1),
        }
    }
}

/// Bytes of records in flight: producers take from it, the signer gives back once sealed.
struct Budget {
    limit: usize,
    used: Mutex<usize>,
    freed: Condvar,
    freed_async: Notify,
}

impl Budget {
    /// A submission larger than the whole budget still passes when nothing else is in flight.
    fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if *used == 0 || *used + n <= self.limit {
            *used += n;
            true
        } else {
            false
        }
    }

    fn take_blocking(&self, n: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used != 0 && *used + n > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
    }

    async fn take(&self, n: usize, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed_async.notified();
            if self.try_take(n) {
                return true;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_take(n);
            }
        }
    }

    fn give(&self, n: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.freed.notify_all();
        self.freed_async.notify_waiters();
    }
}

/// Records dropped (in drop mode) since the last notice.
#[derive(Debug, Clone, Copy)]
struct Dropped {
    count: u64,
    first: UnixNanos,
    last: UnixNanos,
}

struct Submission {
    records: RecordBuf,
    origin: Origin,
    ack: Option<oneshot::Sender<Result<Receipt, String>>>,
    receipt: Receipt,
}

enum Msg {
    Records(Submission),
    /// Seal what is pending now (used by `flush`).
    Flush(oneshot::Sender<()>),
    /// Seal what is pending and stop; later submissions fail.
    Close,
}

/// What the signer thread shares with producers and the spool's readers.
pub struct Shared {
    budget: Budget,
    dropped: Mutex<Option<Dropped>>,
    /// The shipper's own counters.
    pub metrics: Arc<ShipMetrics>,
    /// The spool's state, with the delivery's metrics.
    pub spool: Arc<SpoolState>,
    /// What is wrong now, for the health endpoint.
    pub health: Health,
    /// Turns true when the signer thread has ended, for whatever reason.
    signer_ended: watch::Sender<bool>,
    /// With remote acknowledgement: the acknowledgements waiting for the gateway, by the spool
    /// position their batches end at, oldest first.
    remote: Option<Mutex<VecDeque<(Position, Acknowledgement)>>>,
    /// The newest batch handed to the spool: its epoch, seq and header hash.
    newest: Mutex<Option<(String, u64, teelog_core::merkle::Digest)>>,
    /// False once the pipeline closes. Submissions hold it for reading while they send, and the
    /// close for writing while it sends its `Close`: no submission lands behind the `Close`,
    /// where the signer would never see it.
    open: RwLock<bool>,
}

/// What a producer waiting for its submission is told.
type Acknowledgement = (oneshot::Sender<Result<Receipt, String>>, Receipt);

impl Shared {
    /// Resolves once the signer thread has ended (closed, failed or panicked): a daemon whose
    /// signer is gone must not stay up taking records.
    pub async fn signer_ended(&self) {
        let _ = self.signer_ended.subscribe().wait_for(|&ended| ended).await;
    }

    /// A submission's records are in the spool up to `at`: their budget is freed, and the
    /// producer told, at once or (remote acknowledgement) once the gateway has them.
    fn acknowledge(&self, submission: Submission, at: Position) {
        self.budget.give(submission.records.byte_len());
        let Some(ack) = submission.ack else { return };
        match &self.remote {
            None => {
                let _ = ack.send(Ok(submission.receipt));
            }
            Some(waiting) => {
                waiting.lock().unwrap_or_else(|e| e.into_inner()).push_back((at, (ack, submission.receipt)))
            }
        }
    }

    /// With remote acknowledgement: the gateway holds the spool up to `delivered`, so the
    /// submissions whose batches end there or before are acknowledged now.
    pub fn remote_delivered(&self, delivered: Position) {
        let Some(waiting) = &self.remote else { return };
        let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
        while waiting.front().is_some_and(|(at, _)| *at <= delivered) {
            if let Some((_, (ack, receipt))) = waiting.pop_front() {
                let _ = ack.send(Ok(receipt));
            }
        }
    }

    /// Whether producers are acknowledged only once the gateway has their records.
    pub fn remote_ack(&self) -> bool {
        self.remote.is_some()
    }

    /// The newest batch this run sealed: its epoch, seq and header hash.
    pub fn newest_head(&self) -> Option<(String, u64, teelog_core::merkle::Digest)> {
        self.newest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The producers' side of a pipeline; cheap to clone.
#[derive(Clone)]
pub struct Submitter {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    when_full: WhenFull,
    max_wait: Duration,
}

impl Submitter {
    /// Submits records and waits until they are in the spool.
    pub async fn submit(&self, records: RecordBuf, origin: Origin) -> Result<Receipt, SubmitError> {
        let n = records.byte_len();
        let room = match self.when_full {
            WhenFull::Block => self.shared.budget.take(n, self.max_wait).await,
            WhenFull::Drop => self.shared.budget.try_take(n),
        };
        if !room {
            return match self.when_full {
                WhenFull::Block => Err(SubmitError::Full),
                WhenFull::Drop => Ok(self.drop_records(&records)),
            };
        }
        let (ack, receipt) = oneshot::channel();
        self.send(records, origin, Some(ack))?;
        sealed(receipt.await)
    }

    /// Submits records from a thread outside any runtime, without waiting for the seal; waits
    /// for room in block mode.
    pub fn submit_blocking(&self, records: RecordBuf, origin: Origin) -> Result<(), SubmitError> {
        if !self.room_blocking(&records) {
            self.drop_records(&records);
            return Ok(());
        }
        self.send(records, origin, None)
    }

    /// Submits records from a thread outside any runtime and waits until they are in the
    /// spool; in block mode it waits for room as long as it takes (for sources that can hold
    /// their records meanwhile, such as files).
    pub fn submit_sealed_blocking(&self, records: RecordBuf, origin: Origin) -> Result<Receipt, SubmitError> {
        if !self.room_blocking(&records) {
            return Ok(self.drop_records(&records));
        }
        let (ack, receipt) = oneshot::channel();
        self.send(records, origin, Some(ack))?;
        sealed(receipt.blocking_recv())
    }

    /// Takes budget for `records`, waiting in block mode; false if they are to be dropped.
    fn room_blocking(&self, records: &RecordBuf) -> bool {
        let n = records.byte_len();
        match self.when_full {
            WhenFull::Block => {
                self.shared.budget.take_blocking(n);
                true
            }
            WhenFull::Drop => self.shared.budget.try_take(n),
        }
    }

    /// Asks the signer to seal what it holds now, and waits until it has.
    pub async fn flush(&self) -> Result<(), SubmitError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).map_err(|_| SubmitError::Stopped("flush".into()))?;
        wait.await.map_err(|_| SubmitError::Stopped("flush".into()))
    }

    fn send(
        &self,
        records: RecordBuf,
        origin: Origin,
        ack: Option<oneshot::Sender<Result<Receipt, String>>>,
    ) -> Result<(), SubmitError> {
        let n = records.byte_len();
        let open = self.shared.open.read().unwrap_or_else(|e| e.into_inner());
        if !*open {
            self.shared.budget.give(n);
            return Err(SubmitError::Stopped("it is stopping".into()));
        }
        let submission = Submission { records, origin, ack, receipt: Receipt::default() };
        self.tx.send(Msg::Records(submission)).map_err(|_| {
            self.shared.budget.give(n);
            SubmitError::Stopped("its thread has ended".into())
        })
    }

    fn drop_records(&self, records: &RecordBuf) -> Receipt {
        let at = now();
        let mut dropped = self.shared.dropped.lock().unwrap_or_else(|e| e.into_inner());
        let d = dropped.get_or_insert(Dropped { count: 0, first: at, last: at });
        d.count += records.len();
        d.last = at;
        self.shared.metrics.records_dropped.fetch_add(records.len(), Ordering::Relaxed);
        Receipt::default()
    }

    /// What the signer thread shares with producers and the sinks.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// How long a blocked caller waits for room before it is told to retry.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

/// What the signer said about a submission it was to acknowledge.
fn sealed(
    receipt: Result<Result<Receipt, String>, oneshot::error::RecvError>,
) -> Result<Receipt, SubmitError> {
    match receipt {
        Ok(result) => result.map_err(SubmitError::Stopped),
        Err(_) => Err(SubmitError::Stopped("it ended before sealing these records".into())),
    }
}

/// How errors name the signer's thread.
const SIGNER_THREAD: &str = "signer";

/// The signer thread and the queue in front of it: producers submit records through
/// [`Submitter`]s, the thread seals them into batches and appends them to the spool.
pub struct Pipeline {
    submitter: Submitter,
    thread: JoinHandle<Result<SignSummary, ShipError>>,
    shared: Arc<Shared>,
}

impl Pipeline {
    /// Starts the signer thread on `signer`, whose output must be the spool store.
    pub fn start(
        signer: StreamSigner,
        options: PipelineOptions,
        metrics: Arc<ShipMetrics>,
    ) -> Result<Self, ShipError> {
        let (mut sealer, store) = signer.into_store_writer()?;
        sealer.set_batch_bytes(options.max_bytes);
        let (spool_dir, position) = (store.dir().to_path_buf(), store.position());
        let shared = Arc::new(Shared {
            budget: Budget {
                limit: options.queue_bytes,
                used: Mutex::new(0),
                freed: Condvar::new(),
                freed_async: Notify::new(),
            },
            dropped: Mutex::new(None),
            // Batch lines are the longest a shipper's spool holds.
            spool: Arc::new(SpoolState::new(spool_dir, position, Arc::default(), MAX_BATCH_LINE as u64)),
            metrics,
            health: Health::default(),
            signer_ended: watch::Sender::new(false),
            remote: options.remote_ack.then(Mutex::default),
            newest: Mutex::new(None),
            open: RwLock::new(true),
        });
        let (tx, rx) = mpsc::channel();
        let submitter = Submitter {
            tx,
            shared: shared.clone(),
            when_full: options.when_full,
            max_wait: options.max_wait,
        };
        let writer = SpoolWriter::start(store, sealer.state_store(), shared.clone())?;
        let signer = SignerLoop::new(sealer, writer, options, shared.clone());
        let ended = SignerEnded(shared.clone());
        let thread = std::thread::Builder::new()
            .name("teelog-signer".into())
            .spawn(move || {
                let result = signer.run(rx);
                if let Err(e) = &result {
                    tracing::error!(target: "teelog::ship", "the signer stopped: {e}");
                    ended.0.health.set(SIGNER_THREAD, format!("stopped: {e}"));
                }
                drop(ended);
                result
            })
            .map_err(|source| ShipError::ThreadStart { thread: SIGNER_THREAD, source })?;
        Ok(Self { submitter, thread, shared })
    }

    /// A handle for one more producer.
    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// What the signer thread shares with producers and the sinks.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops taking records, seals what is pending and saves the chain state. Records
    /// submitted earlier are all sealed; later submissions fail.
    pub fn close(self) -> Result<SignSummary, ShipError> {
        let Self { submitter, thread, shared } = self;
        shared.health.stop();
        {
            let mut open = shared.open.write().unwrap_or_else(|e| e.into_inner());
            *open = false;
            let _ = submitter.tx.send(Msg::Close);
        }
        drop(submitter);
        thread.join().unwrap_or(Err(ShipError::ThreadPanicked(SIGNER_THREAD)))
    }
}

/// Saves where the chain stands, retried until it succeeds (see [`Health::retry`]).
fn save_state(shared: &Shared, sealer: &BatchSealer) -> Result<(), ShipError> {
    shared.health.retry("chain state", &shared.metrics.state_save_errors, || sealer.save_state())
}

/// Tells [`Shared::signer_ended`] when dropped: at the end of the signer thread, a panic
/// included.
struct SignerEnded(Arc<Shared>);

impl Drop for SignerEnded {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.health.set(SIGNER_THREAD, "panicked (its message is in the log)".into());
        }
        self.0.signer_ended.send_replace(true);
    }
}

struct SignerLoop {
    sealer: BatchSealer,
    writer: SpoolWriter,
    options: PipelineOptions,
    shared: Arc<Shared>,
    /// Submissions with records in the open batch, acknowledged when it is in the spool.
    waiting: Vec<Submission>,
    opened_at: Option<Instant>,
    last_seal: Instant,
    oldest_segment: u64,
    /// Spool bytes the slowest sink has still to deliver, as of the last seal.
    spool_behind: u64,
    /// The `sealed_at` of the chain's last batch, and when on the monotonic clock this run
    /// sealed it (None for a batch of an earlier run).
    last_sealed_at: Option<UnixNanos>,
    sealed_mono: Option<Instant>,
}

/// How far the wall clock may move apart from the monotonic clock between two seals before it
/// is reported as set by someone (the host owns the wall clock).
const CLOCK_SLACK: Duration = Duration::from_secs(2);

impl SignerLoop {
    fn new(sealer: BatchSealer, writer: SpoolWriter, options: PipelineOptions, shared: Arc<Shared>) -> Self {
        let last_sealed_at = sealer.head().prev_sealed_at;
        let oldest_segment = teelog_store::indexed_segments(shared.spool.dir())
            .ok()
            .and_then(|s| s.first().map(|(i, _)| *i))
            .unwrap_or(0);
        Self {
            sealer,
            writer,
            options,
            shared,
            waiting: Vec::new(),
            opened_at: None,
            last_seal: Instant::now(),
            oldest_segment,
            spool_behind: 0,
            last_sealed_at,
            sealed_mono: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) -> Result<SignSummary, ShipError> {
        // A message taken to see whether the queue was empty, handled next.
        let mut queued = None;
        loop {
            self.wait_for_spool_room();
            let deadline = match self.opened_at {
                Some(opened) => Some(opened + self.options.max_delay),
                None => self.options.heartbeat.map(|h| self.last_seal + h),
            };
            let msg = match (queued.take(), deadline) {
                (Some(msg), _) => Ok(msg),
                (None, Some(deadline)) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now())),
                (None, None) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Records(submission)) => {
                    self.take(submission)?;
                    // Group commit: once nothing more is queued, a caller waiting for its
                    // acknowledgement (OTLP) gets it now; waiting for max_delay would only add
                    // latency, and under load the queue fills the next batch meanwhile.
                    match rx.try_recv() {
                        Ok(next) => queued = Some(next),
                        Err(_) if self.waiting.iter().any(|w| w.ack.is_some()) => self.seal()?,
                        Err(_) => {}
                    }
                }
                Ok(Msg::Flush(done)) => {
                    if self.sealer.pending_records() > 0 || self.has_dropped() {
                        self.seal()?;
                    }
                    self.writer.tell_when_durable(done)?;
                }
                Err(RecvTimeoutError::Timeout) => self.seal()?,
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if self.sealer.pending_records() > 0 || self.has_dropped() {
            self.seal()?;
        }
        let summary = self.writer.finish()?;
        save_state(&self.shared, &self.sealer)?;
        Ok(summary)
    }

    fn take(&mut self, mut submission: Submission) -> Result<(), ShipError> {
        let metrics = self.shared.metrics.clone();
        let bytes = std::mem::take(&mut submission.records.bytes);
        for (index, record) in RecordBuf::lines(&bytes).enumerate() {
            let input = submission.records.input(index, record);
            if teelog_core::record::is_blank(record) {
                continue;
            }
            let origin = &submission.origin;
            let limit = self.options.max_record_bytes;
            let taken = if record.len() > limit {
                // Refused here whatever the source, so that no path takes a longer record than
                // the line readers do.
                let skipped = Skipped { bytes: record.len() as u64, sha256: sha256(record) };
                let notice = too_long_notice(&origin.locate(index as u64), limit, skipped);
                self.push(Input::Json(&notice), &|| origin.locate(index as u64))?;
                let why = format!("{} bytes, longer than the {limit} bytes a record may have", record.len());
                Taken::Refused(RecordError::Record(why))
            } else {
                self.push(input, &|| origin.locate(index as u64))?
            };
            match taken {
                Taken::Accepted => {
                    submission.receipt.accepted += 1;
                    metrics.records_in.fetch_add(1, Ordering::Relaxed);
                }
                Taken::Refused(e) => {
                    let error = format!("{}: {e}", submission.origin.locate(index as u64));
                    tracing::warn!(target: "teelog::ship", "record refused, a signed notice stands in its place: {error}");
                    metrics.records_rejected.fetch_add(1, Ordering::Relaxed);
                    submission.receipt.rejected += 1;
                    submission.receipt.first_error.get_or_insert(error);
                }
            }
            self.opened_at.get_or_insert_with(Instant::now);
            if self.sealer.pending_records() >= self.options.max_records {
                self.seal()?;
            }
        }
        // Its budget is returned when its records are sealed, not before: that is what bounds
        // memory.
        submission.records.bytes = bytes;
        if self.sealer.pending_records() == 0 {
            // Its records are in batches already handed to the writer, if any.
            self.writer.acknowledge(submission)?;
        } else {
            self.waiting.push(submission);
        }
        Ok(())
    }

    fn has_dropped(&self) -> bool {
        self.shared.dropped.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Seals the open batch (a heartbeat if empty) with a drop notice first if records were
    /// dropped, and hands it to the writer with the submissions it acknowledges.
    fn seal(&mut self) -> Result<(), ShipError> {
        let dropped = self.shared.dropped.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(d) = dropped {
            let notice = serde_json::json!({
                "level": "WARN",
                "message": format!(
                    "teelog dropped {} records between {} and {}: the signer's queue was full",
                    d.count, format_rfc3339(d.first), format_rfc3339(d.last)
                ),
                "teelog_notice": "records_dropped",
                "dropped": d.count,
                "dropped_from": format_rfc3339(d.first),
                "dropped_to": format_rfc3339(d.last),
            });
            // Made here from known-good values, it is taken as a record, never refused.
            self.push(Input::Json(notice.to_string().as_bytes()), &|| "teelog".to_string())?;
        }
        let mut line = self.writer.buffer();
        let sealed = self.sealer.seal(now(), &mut line)?;
        self.write_sealed(line, sealed)
    }

    /// Takes one record into the open batch (see [`BatchSealer::take`]); a batch sealed first to
    /// make room is handed to the writer.
    fn push(&mut self, input: Input<'_>, source: &dyn Fn() -> String) -> Result<Taken, ShipError> {
        // Allocated only if a batch is sealed here (rarely: at a byte bound).
        let mut line = Vec::new();
        let (taken, sealed) = self.sealer.take(input, source, &mut line)?;
        if let Some(sealed) = sealed {
            self.write_sealed(line, sealed)?;
        }
        Ok(taken)
    }

    /// Hands a sealed batch to the writer with the submissions it acknowledges.
    fn write_sealed(&mut self, line: Vec<u8>, sealed: Sealed) -> Result<(), ShipError> {
        let head = self.sealer.head().clone();
        self.check_clock(head.prev_sealed_at, sealed.seq);
        *self.shared.newest.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((head.epoch.clone(), sealed.seq, sealed.header_hash));
        self.writer.write(line, sealed, head, std::mem::take(&mut self.waiting))?;
        self.opened_at = None;
        self.last_seal = Instant::now();
        self.retire_delivered()?;
        self.measure_spool();
        Ok(())
    }

    /// Reports a `sealed_at` before the previous batch's, or a wall clock that moved apart from
    /// the monotonic one since the last seal of this run (the host set it): the batch is sealed
    /// at the time the clock gives all the same, and a verifier reports it too.
    fn check_clock(&mut self, sealed_at: Option<UnixNanos>, seq: u64) {
        let mono = Instant::now();
        let previous = (self.last_sealed_at, self.sealed_mono);
        (self.last_sealed_at, self.sealed_mono) = (sealed_at.or(self.last_sealed_at), Some(mono));
        let (Some(at), (Some(last), since)) = (sealed_at, previous) else { return };
        let wall = Duration::from_nanos(u64::try_from(at.saturating_sub(last).max(0)).unwrap_or(u64::MAX));
        let anomaly = if at < last {
            Some(format!(
                "sealed_at {} is before the previous batch's {}: the clock went back",
                format_rfc3339(at),
                format_rfc3339(last)
            ))
        } else {
            since.map(|since| mono.duration_since(since)).filter(|mono| wall.abs_diff(*mono) > CLOCK_SLACK).map(
                |mono| {
                    format!(
                        "{wall:?} passed on the wall clock since the previous batch, {mono:?} on the monotonic clock: the clock was set"
                    )
                },
            )
        };
        if let Some(anomaly) = anomaly {
            tracing::warn!(target: "teelog::ship", seq, "clock: {anomaly}");
            self.shared.metrics.clock_anomalies.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn measure_spool(&mut self) {
        if let Some(behind) = self.shared.spool.measure() {
            self.spool_behind = behind;
        }
    }

    /// Deletes spool segments every sink has delivered (the chain state, saved before a batch
    /// is published, tells the next run where the chain stands without them).
    fn retire_delivered(&mut self) -> Result<(), ShipError> {
        if self.options.keep_spool {
            return Ok(());
        }
        if self.shared.spool.slowest_reader().is_none_or(|slowest| slowest.segment <= self.oldest_segment) {
            return Ok(());
        }
        self.oldest_segment = self.shared.spool.retire_delivered(self.oldest_segment)?;
        Ok(())
    }

    /// Waits while the spool holds more undelivered bytes than allowed: the sinks are behind,
    /// so producers must wait too.
    fn wait_for_spool_room(&mut self) {
        // A stopping daemon seals what it holds even past the bound: the sinks may never catch up.
        while self.options.spool_bytes != 0
            && self.spool_behind > self.options.spool_bytes
            && !self.shared.health.stopping()
        {
            self.shared.spool.wait_for_reader(Duration::from_millis(500));
            self.measure_spool();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the reading thread hands over is what the signer would have made of each line
    /// itself: its canonical form where there is one within the bounds, else the line as it
    /// came, which the signer then refuses with a notice naming its bytes as received.
    #[test]
    fn push_line_canonicalises_what_the_signer_would_and_keeps_the_rest_as_received() {
        let lines: [&[u8]; 10] = [
            br#"{"ts":"2026-12-02T09:00:00Z","message":"m","attributes":{"z":1,"a":[1.0,"\u00e9"]}}"#,
            br#"{"ts":"2026-12-02T09:00:00.000000001Z","n":12345678901234567890}"#,
            br#"{"ts":1}"#,
            br#"{"ts":1,"ts":2}"#,
            b"[1]",
            b"{\"ts\":1,\"m\":\"\xff\"}",
            b"   ",
            b"",
            br#"{"ts":1,"message":5}"#,
            br#"{"ts":"2026-12-02T10:00:00+01:00"}"#,
        ];
        for max_record_bytes in [usize::MAX, 30] {
            let mut buf = RecordBuf::default();
            let mut canon = Canonicalizer::new();
            for line in lines {
                buf.push_line(&mut canon, line, max_record_bytes);
            }
            assert_eq!(buf.len(), lines.len() as u64);
            let mut canonical = 0;
            for (line, input) in lines.iter().zip(buf.inputs()) {
                let mut expected = Vec::new();
                let result = canonicalize_record(&mut Canonicalizer::new(), line, &|| 7, &mut expected);
                match (input, result) {
                    (Input::Canonical { record, ts }, Ok(t)) => {
                        assert!(expected.len() <= max_record_bytes);
                        assert_eq!((record, ts), (&expected[..], t), "{}", String::from_utf8_lossy(line));
                        canonical += 1;
                    }
                    (Input::Json(raw), Ok(_)) => {
                        assert!(expected.len() > max_record_bytes, "{}", String::from_utf8_lossy(line));
                        assert_eq!(raw, *line);
                    }
                    (Input::Json(raw), Err(_)) => assert_eq!(raw, *line),
                    (Input::Canonical { .. }, Err(e)) => panic!("{}: {e}", String::from_utf8_lossy(line)),
                }
            }
            // Four lines are records, none shorter than 37 canonical bytes (`{"ts":1}` grows to 39).
            assert_eq!(canonical, if max_record_bytes == usize::MAX { 4 } else { 0 });
        }
    }
}
