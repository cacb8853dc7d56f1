//! Delivery: each sink follows the spool from its own durable cursor, retrying until the sink
//! confirms, so a sink that is down only falls behind and catches up later. The shipper's spool
//! holds bare lines ([`plain`]); the gateway's carry its verdict on each, which it decodes
//! itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use teelog_store::reader::{self, Chunk, Position};
use teelog_store::{Store, StoreError};
use tokio::sync::watch;

use crate::spool::SpoolState;

/// Bytes of spool lines handed to a sink at once.
const CHUNK_BYTES: usize = 4 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a delivery failed: retryable ones are tried again (with backoff) until they succeed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Whether trying again may succeed (a timeout, a 5xx) or not (the sink rejects the lines).
    pub retryable: bool,
    /// A short label for metrics: `connect`, `http_429`, `http_5xx`, `rejected`, `partial`, `io`.
    pub kind: String,
    /// What happened, naming the sink's address, for the log.
    pub message: String,
    /// How long the sink asked to be left alone (`Retry-After`), if it said.
    pub retry_after: Option<Duration>,
}

impl SinkError {
    /// An error worth trying again, of the metrics label `kind`.
    pub fn retry(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { retryable: true, kind: kind.into(), message: message.into(), retry_after: None }
    }

    /// An error that trying again will not cure, of the metrics label `kind`.
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { retryable: false, kind: kind.into(), message: message.into(), retry_after: None }
    }

    /// The same error, with the wait the sink asked for.
    pub fn after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

impl From<StoreError> for SinkError {
    fn from(e: StoreError) -> Self {
        SinkError::retry("io", e.to_string())
    }
}

/// A spool line as a sink sees it: a batch or attestation line, and what the spool's writer
/// knows about it that the line does not say.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The line, with its newline as it stands in the spool.
    pub line: &'a [u8],
    /// The teelog stream of an attestation line (which names none); None: the sink's own.
    pub stream: Option<&'a str>,
    /// The gateway's verdict on the batch, for its `signature_valid` label; None where nobody
    /// judged it (the shipper's own spool).
    pub signature_valid: Option<bool>,
}

/// How the lines of a spool read: [`plain`] for the shipper's, the gateway's carry its verdict.
pub type Decode = fn(&[u8]) -> Entry<'_>;

/// A spool of bare batch and attestation lines.
pub fn plain(line: &[u8]) -> Entry<'_> {
    Entry { line, stream: None, signature_valid: None }
}

/// The entries of one chunk of the spool, delivered together.
pub struct Delivery<'a> {
    /// The chunk's lines, in spool order.
    pub entries: Vec<Entry<'a>>,
    /// Where the chunk ends: it names the chunk, since positions never repeat.
    pub next: Position,
}

impl<'a> Delivery<'a> {
    /// The entries of `chunk`, each line read by `decode`.
    pub fn new(chunk: &'a Chunk, decode: Decode) -> Self {
        Self { entries: chunk.lines().map(decode).collect(), next: chunk.next }
    }
}

/// Where spooled lines go.
pub trait Sink: Send + 'static {
    /// Delivers the entries of `delivery`; Ok only once the sink has confirmed all of them.
    fn deliver<'a>(
        &'a mut self,
        delivery: &'a Delivery<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send + 'a>>;
}

/// Another embedded store: lines are appended as they are.
pub struct StoreSink {
    store: Option<Store>,
}

impl StoreSink {
    /// Opens (and locks) the store in `dir`, whose segments rotate at `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        Ok(Self { store: Some(Store::open(dir, teelog_store::StoreOptions { segment_bytes })?) })
    }
}

impl Sink for StoreSink {
    fn deliver<'a>(
        &'a mut self,
        delivery: &'a Delivery<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send + 'a>> {
        Box::pin(async move {
            let mut store = self.store.take().ok_or_else(|| SinkError::permanent("io", "store lost"))?;
            // Each entry is a whole spool line with its newline: the chunk goes in with one fsync,
            // all of it or none.
            let lines: Vec<u8> = delivery.entries.iter().flat_map(|e| e.line).copied().collect();
            let (store, result) = tokio::task::spawn_blocking(move || {
                let result = if lines.is_empty() { Ok(()) } else { store.append_lines(&lines) };
                (store, result)
            })
            .await
            .map_err(|e| SinkError::permanent("io", e.to_string()))?;
            self.store = Some(store);
            // Delivered but its cursor not saved (a crash), a chunk is appended again: duplicates
            // are counted by the verifier, never reported as tampering.
            Ok(result?)
        })
    }
}

/// Where a sink's delivery stands, kept in the spool directory.
fn cursor_path(spool: &Path, sink: &str) -> PathBuf {
    spool.join("cursors").join(format!("{sink}.json"))
}

fn load_cursor(path: &Path) -> Position {
    // A sink cursor is a few bytes of JSON; a FIFO or link in its place is not waited on.
    let Ok(bytes) = teelog_store::read_host_file(path, 1 << 16) else { return Position::default() };
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Position {
        segment: value["segment"].as_u64().unwrap_or(0),
        offset: value["offset"].as_u64().unwrap_or(0),
    }
}

fn save_cursor(path: &Path, at: Position) -> Result<(), SinkError> {
    let json = serde_json::json!({ "segment": at.segment, "offset": at.offset }).to_string();
    save_position(path, json.as_bytes())
        .map_err(|(path, e)| SinkError::retry("io", format!("{}: {e}", path.display())))
}

/// Writes a saved position (a sink's cursor, a followed file's offset) in the spool, making its
/// directory on first use.
pub fn save_position(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
    }
    teelog_store::write_atomic(path, bytes)
}

/// Registers sink `name` with the spool (so retention waits for it) and returns its cursor.
pub fn register(spool: &SpoolState, name: &str) -> Position {
    let mut at = load_cursor(&cursor_path(spool.dir(), name));
    let end = *spool.written().borrow();
    if at > end {
        // The spool was cut (or rolled back) behind the sink's back: what is written from now
        // on lands before the saved cursor and would never be delivered. The sink resumes at
        // the spool's end; what it delivered of the cut part is where it went.
        tracing::warn!(target: "teelog::deliver", sink = %name, "the saved cursor {at} is beyond the spool's end {end} (the spool was cut or rolled back): delivery resumes at its end");
        at = end;
    }
    spool.reader_at(name, at);
    at
}

/// The lines and bytes of the spool in `dir` from `from` up to `end` (what a sink whose cursor is
/// `from` has still to deliver), read a chunk at a time.
pub fn undelivered(spool: &SpoolState, from: Position, end: Position) -> Result<(u64, u64), StoreError> {
    let (mut lines, mut bytes, mut at) = (0u64, 0u64, from);
    while at < end {
        let chunk = reader::read_lines(spool.dir(), at, end, CHUNK_BYTES, spool.max_line())?;
        if chunk.next <= at {
            break;
        }
        lines += chunk.lines().count() as u64;
        bytes += chunk.bytes.len() as u64;
        at = chunk.next;
    }
    Ok((lines, bytes))
}

/// Follows the spool into `sink` from `cursor` (what [`register`] returned) until `stop` turns
/// true and everything written by then has been delivered; `decode` reads its lines.
pub async fn run(
    name: String,
    mut sink: Box<dyn Sink>,
    mut cursor: Position,
    shared: Arc<SpoolState>,
    decode: Decode,
    mut stop: watch::Receiver<bool>,
) {
    let cursor_file = cursor_path(shared.dir(), &name);
    let mut written = shared.written();
    let metrics = shared.metrics.clone();
    loop {
        let end = *written.borrow_and_update();
        if cursor >= end {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = written.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let (dir, max_line) = (shared.dir().to_path_buf(), shared.max_line());
        let from = cursor;
        let read = move || reader::read_lines(&dir, from, end, CHUNK_BYTES, max_line);
        let chunk = match tokio::task::spawn_blocking(read).await {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => {
                tracing::error!(target: "teelog::deliver", sink = %name, "cannot read the spool: {e}");
                metrics.sink_error(&name, "spool_read");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        };
        for (at, len) in &chunk.too_long {
            tracing::warn!(target: "teelog::deliver", sink = %name, "{at}: a line of {len} bytes, longer than the {max_line} bytes the spool's writer writes, was not delivered (planted in the spool)", max_line = shared.max_line());
        }
        let delivery = Delivery::new(&chunk, decode);
        let mut backoff = Duration::from_millis(100);
        loop {
            match sink.deliver(&delivery).await {
                Ok(()) => {
                    metrics.sink_delivered(&name, delivery.entries.len() as u64);
                    break;
                }
                Err(e) if e.retryable => {
                    // The sink's own Retry-After is honoured, up to the longest backoff.
                    let wait = e.retry_after.map_or(backoff, |asked| asked.max(backoff)).min(MAX_BACKOFF);
                    tracing::warn!(target: "teelog::deliver", sink = %name, "delivery failed, retrying in {wait:?}: {e}");
                    metrics.sink_error(&name, &e.kind);
                    // During an outage the lag grows with every batch written: measured here,
                    // not only once a delivery succeeds.
                    let dir = shared.dir().to_path_buf();
                    if let Ok(Ok(lag)) =
                        tokio::task::spawn_blocking(move || reader::bytes_from(&dir, from)).await
                    {
                        metrics.sink_lag(&name, lag);
                    }
                    if *stop.borrow() && backoff >= MAX_BACKOFF {
                        // Shutting down with the sink still unreachable: what is left stays in
                        // the spool for the next run.
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    // The sink refused these lines for good (e.g. Loki's 400): retrying would
                    // never succeed. They stay in the spool only if it is kept.
                    tracing::error!(target: "teelog::deliver", sink = %name, "sink refused lines at {from}: {e}");
                    metrics.sink_error(&name, &e.kind);
                    break;
                }
            }
        }
        cursor = chunk.next;
        let path = cursor_file.clone();
        let saved = tokio::task::spawn_blocking(move || save_cursor(&path, cursor)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(target: "teelog::deliver", sink = %name, "cannot save the cursor: {e}");
        }
        shared.reader_at(&name, cursor);
        let dir = shared.dir().to_path_buf();
        // The spool gauge follows the slowest sink, which may be this one or another.
        let slowest = shared.slowest_reader().unwrap_or(cursor);
        let lags = tokio::task::spawn_blocking(move || {
            let lag = reader::bytes_from(&dir, cursor)?;
            let behind = if slowest == cursor { lag } else { reader::bytes_from(&dir, slowest)? };
            Ok::<_, StoreError>((lag, behind))
        });
        if let Ok(Ok((lag, behind))) = lags.await {
            metrics.sink_lag(&name, lag);
            metrics.spool_bytes.store(behind, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
