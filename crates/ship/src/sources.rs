//! Where the daemon's records come from: NDJSON on stdin, OTLP over HTTP and gRPC, followed files.

pub mod files;
pub mod otlp;

use std::io::BufReader;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use teelog_core::canon::Canonicalizer;
use teelog_deliver::serve::{bind, metrics_router, serve_http, HttpLimits};
use teelog_deliver::tls::{server_config, TlsListener};
use teelog_store::lines::{Line, LineReader, Skipped};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::daemon::DaemonError;
use crate::metrics::ShipMetrics;
use crate::pipeline::{Origin, RecordBuf, Shared, Submitter};
use crate::signer::too_long_notice;

/// Lines per submission from a line-oriented source.
const LINES_PER_SUBMISSION: u64 = 1024;
const BYTES_PER_SUBMISSION: usize = 1 << 20;

/// The sources of a running daemon.
pub struct Running {
    /// Sources that end by themselves (stdin): each reports once it has.
    finite: Vec<oneshot::Receiver<()>>,
    /// Where each finite source is (see [`Reading`]), for a stop.
    finite_states: Vec<Arc<AtomicU8>>,
    /// Why finite sources failed: lines read and not signed, or the input unreadable.
    failures: Arc<Mutex<Vec<String>>>,
    /// Servers, which run until stopped.
    servers: Vec<JoinHandle<()>>,
    /// Followed files, each on a thread of its own (not the runtime's blocking pool, whose
    /// threads the runtime waits for when it stops): each reports once it has stopped.
    followers: Vec<oneshot::Receiver<()>>,
}

impl Running {
    /// Whether every source is finite, so that the daemon ends when they do.
    pub fn only_finite(&self) -> bool {
        self.servers.is_empty() && self.followers.is_empty() && !self.finite.is_empty()
    }

    /// Waits until every finite source (stdin, …) has ended.
    pub async fn finite_sources_ended(&mut self) {
        for ended in &mut self.finite {
            let _ = ended.await;
        }
    }

    /// Why finite sources failed, so far and later (shared).
    pub fn failures(&self) -> Arc<Mutex<Vec<String>>> {
        self.failures.clone()
    }

    /// Waits for the servers, followers and finite sources to stop (they watch the daemon's stop
    /// signal and finish the requests, chunks and lines they hold), for at most `timeout` in all:
    /// a server still busy then (a client sending its body slowly, or never) is aborted, and a
    /// follower left. stdin stops once it has handed over every line it read (or is waiting for
    /// one, holding nothing).
    pub async fn stop(self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut late = 0;
        for task in self.servers {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                late += 1;
            }
        }
        for follower in self.followers {
            if tokio::time::timeout_at(deadline, follower).await.is_err() {
                late += 1;
            }
        }
        for state in &self.finite_states {
            // Waiting for two looks in a row: a reader of a file waits for nanoseconds between
            // reads, one of an idle pipe for as long as it is idle.
            let mut waiting = 0;
            loop {
                let now = state.load(Ordering::Acquire);
                waiting = if now == Reading::Waiting as u8 { waiting + 1 } else { 0 };
                if waiting == 2
                    && state
                        .compare_exchange(now, Reading::Abandoned as u8, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    || now == Reading::Ended as u8
                {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    let failure = format!(
                        "stdin: lines read were still not handed over after {timeout:?}: they are not signed"
                    );
                    self.failures.lock().unwrap_or_else(|e| e.into_inner()).push(failure);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        if late > 0 {
            tracing::warn!(target: "teelog::ship", "{late} source(s) still busy after {timeout:?} were dropped; their clients send again, and files are read on from their saved positions (a rotated file too, while it stays in its directory)");
        }
    }
}

/// Starts the sources `config` names, each submitting through `submitter`, until `stop`
/// turns true; fails when a listener cannot be bound or a followed file cannot be set up.
pub async fn start(
    config: &Config,
    submitter: &Submitter,
    stop: watch::Receiver<bool>,
) -> Result<Running, DaemonError> {
    let mut running = Running {
        finite: Vec::new(),
        finite_states: Vec::new(),
        failures: Arc::default(),
        servers: Vec::new(),
        followers: Vec::new(),
    };
    let sources = &config.sources;
    if sources.stdin {
        // Before its first read it holds nothing.
        let state = Arc::new(AtomicU8::new(Reading::Waiting as u8));
        let failures = running.failures.clone();
        let reader = StdinReader { state: state.clone(), stop: stop.clone(), failures };
        running.finite.push(reader.start(submitter.clone(), sources.max_line_bytes));
        running.finite_states.push(state);
    }
    let followed = files::Followed::default();
    for path in &sources.files {
        let spool = submitter.shared().spool.dir();
        let follower =
            files::Follower::new(path, spool, sources.max_line_bytes, submitter.clone(), followed.clone());
        let (stop, interval) = (stop.clone(), sources.poll_interval);
        let (stopped, on_stop) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("teelog-follow".into())
            .spawn(move || {
                follower.run(stop, interval);
                drop(stopped);
            })
            .map_err(|e| {
                DaemonError::Source(format!("{}: cannot start its follower: {e}", path.display()))
            })?;
        running.followers.push(on_stop);
    }
    let token = teelog_deliver::config::bearer_token(&None, &sources.bearer_token_file)
        .map_err(|e| DaemonError::Source(format!("sources.{e}")))?;
    if token.is_some() && sources.tls.is_none() {
        let remote =
            [sources.otlp_http, sources.otlp_grpc].into_iter().flatten().find(|a| !a.ip().is_loopback());
        if let Some(addr) = remote {
            tracing::warn!(target: "teelog::ship", "OTLP on {addr}: the bearer token crosses the network in the clear; give sources.tls");
        }
    }
    let ingest = otlp::Ingest::new(submitter.clone(), sources, token);
    let tls = match &sources.tls {
        Some(tls) => Some(server_config(tls).map_err(|e| DaemonError::Source(format!("sources.tls: {e}")))?),
        None => None,
    };
    // TLS handshakes in progress are held to the same number as connections.
    let handshakes = HttpLimits::new("otlp").max_connections;
    let tls_listener = |listener, tls: &rustls::ServerConfig, alpn: &[u8], what| {
        let metrics = submitter.shared().spool.metrics.clone();
        TlsListener::new(listener, tls, &[alpn], what, handshakes, metrics)
            .map_err(|e| DaemonError::Source(format!("sources.tls: {what}: {e}")))
    };
    if let Some(addr) = sources.otlp_http {
        let listener = bind(addr, "OTLP/HTTP").await?;
        let router = otlp::http_router(ingest.clone());
        running.servers.push(match &tls {
            Some(tls) => {
                let listener = tls_listener(listener, tls, b"http/1.1", "otlp_http")?;
                tokio::spawn(serve_http(listener, router, stop.clone()))
            }
            None => tokio::spawn(serve_http(listener, router, stop.clone())),
        });
    }
    if let Some(addr) = sources.otlp_grpc {
        let listener = bind(addr, "OTLP/gRPC").await?;
        let (ingest, stop) = (ingest.clone(), stop.clone());
        running.servers.push(match &tls {
            Some(tls) => {
                let connections = tls_listener(listener, tls, b"h2", "otlp_grpc")?.into_stream();
                tokio::spawn(otlp::serve_grpc(connections, addr, ingest, stop))
            }
            None => {
                let connections = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tokio::spawn(otlp::serve_grpc(connections, addr, ingest, stop))
            }
        });
    }
    if let Some(metrics_config) = &config.metrics {
        let listener = bind(metrics_config.listen, "metrics").await?;
        let shared = submitter.shared().clone();
        let health = submitter.shared().clone();
        let router = metrics_router(move || shared.metrics.render() + &shared.spool.metrics.render())
            .route("/health", axum::routing::get(move || async move { health_report(&health) }));
        // Metrics are served to the end, not counted as a source that keeps the daemon alive.
        tokio::spawn(serve_http(listener, router, stop.clone()));
    }
    Ok(running)
}

/// `GET /health`: 200 `ok` while the shipper signs, else 503 and what stops it (the spool or
/// the chain state failing to save, the signer gone).
fn health_report(shared: &Shared) -> (axum::http::StatusCode, String) {
    match shared.health.problems() {
        None => (axum::http::StatusCode::OK, "ok\n".into()),
        Some(problems) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, problems),
    }
}

/// Where a line reader stands, as a stopping daemon sees it.
#[repr(u8)]
enum Reading {
    /// Reading, or holding lines it read.
    Busy,
    /// About to wait for input, having handed over every line it read: a stop then loses
    /// nothing, unless input comes before the daemon has ended.
    Waiting,
    /// The daemon stopped without it while it was waiting.
    Abandoned,
    /// Ended.
    Ended,
}

/// Reads stdin on a thread of its own (a blocked read must not hold up the runtime).
struct StdinReader {
    state: Arc<AtomicU8>,
    stop: watch::Receiver<bool>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl StdinReader {
    fn start(self, submitter: Submitter, max_line_bytes: usize) -> oneshot::Receiver<()> {
        let (ended, on_end) = oneshot::channel();
        std::thread::spawn(move || {
            let stopping = || *self.stop.borrow();
            // Read without std's own buffer of stdin, so that a stop takes nothing past the line
            // it ends on (see `LineReader::finish_line`).
            let read = std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| format!("cannot read: {e}"));
            let read = read.and_then(|fd| {
                let stdin = BufReader::with_capacity(1 << 20, std::fs::File::from(fd));
                read_lines(stdin, "stdin", max_line_bytes, &submitter, &stopping, &self.state)
            });
            if let Err(e) = read {
                // The exit status is stdin's acknowledgement (SHIP.md): this makes it a failure.
                tracing::error!(target: "teelog::ship", "stdin: {e}");
                self.failures.lock().unwrap_or_else(|e| e.into_inner()).push(format!("stdin: {e}"));
            }
            self.state.store(Reading::Ended as u8, Ordering::Release);
            let _ = ended.send(());
        });
        on_end
    }
}

/// Submits NDJSON lines in chunks, numbered for error messages; an over-long line is
/// reported and skipped. Once `stopping`, it reads no further than the end of the line it is
/// in, and hands over every line it read. `state` says when it waits for input holding nothing;
/// lines that arrive after the daemon gave up waiting for it are an error.
pub(crate) fn read_lines(
    input: BufReader<impl std::io::Read>,
    name: &str,
    max_line_bytes: usize,
    submitter: &Submitter,
    stopping: &dyn Fn() -> bool,
    state: &AtomicU8,
) -> Result<(), String> {
    let mut reader = LineReader::new(input, max_line_bytes);
    let mut chunker = Chunker::new(name, max_line_bytes);
    let metrics = &submitter.shared().metrics;
    // Whether it told `state` it waits: only then does a line read need to take that back (not
    // an atomic exchange for every line).
    let mut told_waiting = state.load(Ordering::Acquire) == Reading::Waiting as u8;
    while let Some((n, line)) = reader.next_line().map_err(|e| format!("cannot read: {e}"))? {
        if std::mem::take(&mut told_waiting) {
            let was = Reading::Waiting as u8;
            if let Err(now) =
                state.compare_exchange(was, Reading::Busy as u8, Ordering::AcqRel, Ordering::Acquire)
            {
                if now == Reading::Abandoned as u8 {
                    return Err(format!(
                        "line {n} and what came with it arrived as the daemon stopped: not signed"
                    ));
                }
            }
        }
        let full = match line {
            Line::Complete(bytes) | Line::Unterminated(bytes) => chunker.push(n, bytes),
            Line::TooLong => chunker.push_too_long(n, reader.skipped(), metrics),
        };
        // The lines held are handed over before the read that may wait for more, so that a
        // producer that writes a few lines and keeps its pipe open has them sealed within
        // max_delay, not when the pipe closes (or never, on a signal).
        let waits = full.is_none() && !reader.next_line_buffered();
        let chunk = if waits { chunker.take() } else { full };
        if let Some(chunk) = chunk {
            submit_lines(submitter, chunk)?;
        }
        if waits {
            if stopping() {
                // What was read is handed over, the line begun included, and no more is read.
                return finish_line(&mut reader, &mut chunker, submitter);
            }
            state.store(Reading::Waiting as u8, Ordering::Release);
            told_waiting = true;
        }
    }
    if let Some(chunk) = chunker.take() {
        submit_lines(submitter, chunk)?;
    }
    Ok(())
}

fn submit_lines(submitter: &Submitter, (records, origin): (RecordBuf, Origin)) -> Result<(), String> {
    let lines = records.len();
    submitter.submit_blocking(records, origin).map_err(|e| format!("{lines} lines read were not signed: {e}"))
}

/// Hands over the line begun in `reader`'s buffer, once it is read to its end (see
/// [`LineReader::finish_line`]); nothing else is held.
fn finish_line(
    reader: &mut LineReader<BufReader<impl std::io::Read>>,
    chunker: &mut Chunker,
    submitter: &Submitter,
) -> Result<(), String> {
    let begun =
        reader.finish_line().map_err(|e| format!("stopping, the line begun could not be read: {e}"))?;
    if let Some((n, Line::Complete(bytes) | Line::Unterminated(bytes))) = begun {
        chunker.push(n, bytes);
    }
    chunker.take().map_or(Ok(()), |chunk| submit_lines(submitter, chunk))
}

/// Gathers the lines of a line-oriented source into submissions of bounded size, each knowing
/// the number of its first line.
pub(crate) struct Chunker {
    name: Arc<str>,
    max_line_bytes: usize,
    chunk: RecordBuf,
    first_line: u64,
    /// Lines are canonicalised as they are read (see [`RecordBuf::push_line`]).
    canon: Canonicalizer,
}

impl Chunker {
    /// `max_line_bytes` is also the pipeline's bound on a record (`sources.max_line_bytes`).
    pub(crate) fn new(name: &str, max_line_bytes: usize) -> Self {
        Self {
            name: name.into(),
            max_line_bytes,
            chunk: RecordBuf::default(),
            first_line: 1,
            canon: Canonicalizer::new(),
        }
    }

    /// Adds line `n`, and returns the submission once it is full.
    pub(crate) fn push(&mut self, n: u64, line: &[u8]) -> Option<(RecordBuf, Origin)> {
        if self.chunk.is_empty() {
            self.first_line = n;
        }
        self.chunk.push_line(&mut self.canon, line, self.max_line_bytes);
        let full = self.chunk.len() >= LINES_PER_SUBMISSION || self.chunk.byte_len() >= BYTES_PER_SUBMISSION;
        full.then(|| self.take()).flatten()
    }

    /// Adds, as line `n`, the signed notice that stands for an over-long line, which was
    /// skipped; see [`push`](Self::push).
    pub(crate) fn push_too_long(
        &mut self,
        n: u64,
        skipped: Skipped,
        metrics: &ShipMetrics,
    ) -> Option<(RecordBuf, Origin)> {
        let (name, max) = (&self.name, self.max_line_bytes);
        tracing::warn!(target: "teelog::ship", "{name}:{n}: line longer than {max} bytes; a signed notice stands in its place");
        metrics.records_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let notice = too_long_notice(&format!("{name}:{n}"), max, skipped);
        self.push(n, &notice)
    }

    /// The lines gathered so far, if there are any.
    pub(crate) fn take(&mut self) -> Option<(RecordBuf, Origin)> {
        if self.chunk.is_empty() {
            return None;
        }
        let origin = Origin { name: self.name.clone(), first_line: Some(self.first_line) };
        Some((std::mem::take(&mut self.chunk), origin))
    }
}
