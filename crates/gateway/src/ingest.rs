//! The gateway's one writer: it takes received lines from every listener, judges each with the
//! core [`Gate`], and appends them, flagged, to the spool with one fsync per group of
//! submissions before any of them is acknowledged. Invalid batches are spooled like valid ones:
//! they are evidence.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use teelog_core::gate::{Checked, Continuity, Gate, GateChecker, GatePrepared, Tip};
use teelog_core::merkle::Digest;
use teelog_core::{Finding, Origin};
use teelog_deliver::spool::SpoolState;
use teelog_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::Checkpointer;
use crate::envelope;

/// Submissions waiting for the writer; beyond this, senders wait (backpressure).
const QUEUE: usize = 64;
/// Bytes of lines taken into one group commit.
const GROUP_BYTES: usize = 8 << 20;
/// The metrics' stream label for batches of a stream no valid batch has named.
pub const UNVERIFIED: &str = "(unverified)";
/// Findings returned to a client in one answer; the rest are counted.
pub const FINDINGS_RETURNED: usize = 100;

/// Lines received together from one client.
pub struct Submission {
    /// The lines, without newlines.
    pub lines: Vec<Vec<u8>>,
    /// Who sent them, for findings and the log: `relay 10.0.0.5:41234`, `http …`.
    pub source: Arc<str>,
    /// The number of the first line within its source (relay frame or request line).
    pub first_line: u64,
    /// The stream the client said it ships: lines that are not batches are filed under it.
    pub stream: Option<Arc<str>>,
    /// Each line's own checks, made before the writer takes them.
    checks: Vec<GatePrepared>,
    reply: oneshot::Sender<Result<Outcome, IngestError>>,
}

/// The checks of lines under way ([`Ingest::check`]).
pub struct Checking(tokio::task::JoinHandle<CheckedLines>);

impl std::future::Future for Checking {
    type Output = Result<CheckedLines, IngestError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|done| match done {
            Ok(checked) => Ok(checked),
            // A line's panic is raised where the lines were submitted, as without the pool.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(IngestError::Stopped),
        })
    }
}

/// The writer's answer on lines handed to it ([`Ingest::hand_checked`]), once they are durable.
pub struct Durable(oneshot::Receiver<Result<Outcome, IngestError>>);

impl std::future::Future for Durable {
    type Output = Result<Outcome, IngestError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| answer.unwrap_or(Err(IngestError::Stopped)))
    }
}

/// Lines received together from one client, with the checks that need no other line made
/// ([`Ingest::check`]): what the writer is handed, in the order the client sent them.
pub struct CheckedLines {
    lines: Vec<Vec<u8>>,
    source: Arc<str>,
    first_line: u64,
    checks: Vec<GatePrepared>,
}

/// What became of a submission, once it is durable.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    /// Lines received.
    pub lines: u64,
    /// Of those, batch lines.
    pub batches: u64,
    /// Batches judged valid: signed by a trusted or attested key, records intact.
    pub valid: u64,
    /// The other batches; spooled all the same, flagged invalid.
    pub invalid: u64,
    /// Batches already received before (counted in `valid` or `invalid` too).
    pub duplicates: u64,
    /// Attestation document lines.
    pub documents: u64,
    /// Lines that are neither batches nor documents; spooled, flagged invalid.
    pub malformed: u64,
    /// The findings, up to [`FINDINGS_RETURNED`].
    pub findings: Vec<Finding>,
}

/// Why a submission was not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// The writer stopped before answering: the client must send the lines again (copies of a
    /// batch already spooled are recognised as duplicates).
    #[error("the gateway is stopping")]
    Stopped,
}

/// The gateway's own counters.
#[derive(Default)]
pub struct GatewayMetrics {
    /// Lines received.
    pub lines_in: AtomicU64,
    /// Attestation document lines received.
    pub documents: AtomicU64,
    /// Lines that are not batches.
    pub malformed: AtomicU64,
    /// Batches received more than once.
    pub duplicates: AtomicU64,
    /// Batches by (stream, signature_valid).
    batches: Mutex<BTreeMap<(String, bool), u64>>,
    /// Findings by kind.
    findings: Mutex<BTreeMap<&'static str, u64>>,
}

impl GatewayMetrics {
    fn batch(&self, stream: &str, valid: bool) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        *batches.entry((stream.to_string(), valid)).or_default() += 1;
    }

    fn finding(&self, kind: &'static str) {
        *self.findings.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (name, help, value) in [
            ("teelog_gateway_lines_total", "Lines received from shippers.", &self.lines_in),
            ("teelog_gateway_documents_total", "Attestation document lines received.", &self.documents),
            (
                "teelog_gateway_malformed_total",
                "Lines that are not batches (spooled, flagged invalid).",
                &self.malformed,
            ),
            ("teelog_gateway_duplicates_total", "Batches received again (resends).", &self.duplicates),
        ] {
            teelog_deliver::metrics::write_metric(&mut out, name, help, value, "counter");
        }
        out.push_str("# HELP teelog_gateway_batches_total Batches received, by stream and verdict.\n# TYPE teelog_gateway_batches_total counter\n");
        for ((stream, valid), n) in self.batches.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let stream = teelog_deliver::metrics::escape(stream);
            let _ = writeln!(
                out,
                "teelog_gateway_batches_total{{stream=\"{stream}\",signature_valid=\"{valid}\"}} {n}"
            );
        }
        out.push_str("# HELP teelog_gateway_findings_total Verification findings, by kind.\n# TYPE teelog_gateway_findings_total counter\n");
        for (kind, n) in self.findings.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "teelog_gateway_findings_total{{kind=\"{kind}\"}} {n}");
        }
        out
    }

    /// Reports a finding: a log line for alerting and a count.
    pub fn report(&self, finding: &Finding) {
        self.finding(finding.kind.name());
        tracing::warn!(
            target: "teelog::gateway",
            finding = finding.kind.name(),
            stream = finding.stream.as_deref().unwrap_or(""),
            epoch = finding.epoch.as_deref().unwrap_or(""),
            seq = finding.seq.unwrap_or(0),
            "{}",
            finding.detail
        );
    }
}

enum Msg {
    Lines(Submission),
    /// Look for streams silent for longer than `max_silence` (ns) at `now`.
    Tick {
        now: i64,
        max_silence: i64,
    },
    /// Where a stream stands among the groups already durable (see [`Gate::tips`]).
    Tips {
        stream: String,
        instance: Option<String>,
        reply: oneshot::Sender<Vec<Tip>>,
    },
    /// Sign a checkpoint of what is spooled (docs/FORMAT.md §17).
    Checkpoint,
}

/// The listeners' handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Msg>,
    checker: GateChecker,
}

impl Ingest {
    /// Hands `lines` to the writer and waits until they are durable.
    pub async fn submit(
        &self,
        lines: Vec<Vec<u8>>,
        source: Arc<str>,
        first_line: u64,
        stream: Option<Arc<str>>,
    ) -> Result<Outcome, IngestError> {
        let checked = self.check(lines, source, first_line).await?;
        self.hand_checked(checked, stream).await?.await
    }

    /// Starts the checks of `lines` that need no other line (parse, Merkle root, signature) on
    /// a thread of the blocking pool, so that lines are checked on every core while the writer
    /// only admits them, in the order it is handed them ([`hand_checked`](Self::hand_checked)).
    pub fn check(&self, lines: Vec<Vec<u8>>, source: Arc<str>, first_line: u64) -> Checking {
        let checker = self.checker.clone();
        Checking(tokio::task::spawn_blocking(move || {
            let checks = (first_line..)
                .zip(&lines)
                .map(|(line, bytes)| checker.prepare(Origin { source: &source, line }, bytes))
                .collect();
            CheckedLines { lines, source, first_line, checks }
        }))
    }

    /// Hands lines checked by [`check`](Self::check) to the writer, which takes them in the
    /// order handed; what it gives is answered once they are durable.
    pub async fn hand_checked(
        &self,
        checked: CheckedLines,
        stream: Option<Arc<str>>,
    ) -> Result<Durable, IngestError> {
        let CheckedLines { lines, source, first_line, checks } = checked;
        let (reply, answer) = oneshot::channel();
        let submission = Submission { lines, source, first_line, stream, checks, reply };
        self.tx.send(Msg::Lines(submission)).await.map_err(|_| IngestError::Stopped)?;
        Ok(Durable(answer))
    }

    /// The chain tips of `stream` in the spool: asked of the writer between two groups, so
    /// every head it names is durable (appended and in the saved continuity state).
    pub async fn tips(&self, stream: &str, instance: Option<&str>) -> Result<Vec<Tip>, IngestError> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Tips { stream: stream.to_string(), instance: instance.map(str::to_string), reply };
        self.tx.send(msg).await.map_err(|_| IngestError::Stopped)?;
        answer.await.map_err(|_| IngestError::Stopped)
    }

    /// Asks the writer to sign a checkpoint of the chain tips spooled so far.
    pub async fn checkpoint(&self) {
        let _ = self.tx.send(Msg::Checkpoint).await;
    }

    /// Asks the writer to report the streams silent for longer than `max_silence` at `now`.
    pub async fn check_silence(&self, now: i64, max_silence: i64) {
        let _ = self.tx.send(Msg::Tick { now, max_silence }).await;
    }
}

/// The spool's files besides its segments.
fn continuity_path(spool: &Path) -> PathBuf {
    spool.join("continuity.json")
}

fn documents_dir(spool: &Path) -> PathBuf {
    spool.join("documents")
}

/// Why the continuity state saved by the last run cannot be used; names its file.
#[derive(Debug, thiserror::Error)]
pub enum ContinuityError {
    /// The file exists but cannot be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The file is not a continuity state (corrupt, or of another version). The gateway does not
    /// start on it: starting afresh would forget the gaps and forks it was tracking.
    #[error("{}: {error}", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What the JSON parser said.
        error: serde_json::Error,
    },
}

/// The most a saved continuity state is read to (it grows with the streams a gateway has seen).
const MAX_CONTINUITY_BYTES: u64 = 1 << 30;
/// The most a saved attestation document line is read to.
const MAX_DOCUMENT_FILE_BYTES: u64 = 16 << 20;

/// The continuity state saved by the last run, or a fresh one if there is none.
pub fn load_continuity(spool: &Path) -> Result<Continuity, ContinuityError> {
    let path = continuity_path(spool);
    match teelog_store::read_host_file(&path, MAX_CONTINUITY_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| ContinuityError::Corrupt { path, error }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Continuity::default()),
        Err(error) => Err(ContinuityError::Read { path, error }),
    }
}

/// The attestation document lines received by earlier runs.
pub fn saved_documents(spool: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(documents_dir(spool)) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| teelog_store::read_host_file(&e.path(), MAX_DOCUMENT_FILE_BYTES).ok())
        .collect()
}

/// The one thread that judges submissions with the [`Gate`], appends them to the spool and
/// answers each once it is durable.
pub struct Writer {
    gate: Gate,
    store: Store,
    spool: Arc<SpoolState>,
    metrics: Arc<GatewayMetrics>,
    keep: bool,
    oldest_segment: u64,
    /// Documents saved in the spool directory, by SHA-256.
    saved: HashSet<Digest>,
    /// (document, stream) pairs already in the spool this run.
    emitted: HashSet<(Digest, String)>,
    checkpoints: Option<Checkpointer>,
}

impl Writer {
    /// A writer on `store` (the spool), whose earlier documents are fed to `gate` first.
    pub fn new(
        mut gate: Gate,
        store: Store,
        spool: Arc<SpoolState>,
        metrics: Arc<GatewayMetrics>,
        keep: bool,
    ) -> Self {
        let mut saved = HashSet::new();
        for line in saved_documents(store.dir()) {
            if let Some(sha256) = gate.restore_document(&line) {
                saved.insert(sha256);
            }
        }
        let oldest_segment = teelog_store::indexed_segments(store.dir())
            .ok()
            .and_then(|s| s.first().map(|(i, _)| *i))
            .unwrap_or(0);
        Self {
            gate,
            store,
            spool,
            metrics,
            keep,
            oldest_segment,
            saved,
            emitted: HashSet::new(),
            checkpoints: None,
        }
    }

    /// The same writer, signing checkpoints with `checkpoints` when asked and when it stops.
    pub fn with_checkpoints(mut self, checkpoints: Checkpointer) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Starts the writer thread; it ends when every [`Ingest`] handle is gone.
    pub fn start(self) -> std::io::Result<(Ingest, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let checker = self.gate.line_checker();
        let thread =
            std::thread::Builder::new().name("teelog-gateway-writer".into()).spawn(move || self.run(rx))?;
        Ok((Ingest { tx, checker }, thread))
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            let Some(first) = self.take(msg) else { continue };
            let mut group = vec![first];
            let mut bytes: usize = group[0].lines.iter().map(Vec::len).sum();
            // Heads asked for while a group is gathered are answered once it is durable: a
            // connection hands its lines on without waiting for the ones before to be durable,
            // and a new run of its shipper asks only once that connection is gone, so the heads
            // must include every line handed on before the question.
            let mut later = Vec::new();
            while bytes < GROUP_BYTES {
                let Ok(msg) = rx.try_recv() else { break };
                if matches!(msg, Msg::Tips { .. }) {
                    later.push(msg);
                } else if let Some(next) = self.take(msg) {
                    bytes += next.lines.iter().map(Vec::len).sum::<usize>();
                    group.push(next);
                }
            }
            let mut spooled = Vec::with_capacity(bytes + bytes / 8);
            let outcomes: Vec<Outcome> = group.iter_mut().map(|s| self.judge(s, &mut spooled)).collect();
            self.write(&spooled);
            for (submission, outcome) in group.into_iter().zip(outcomes) {
                let _ = submission.reply.send(Ok(outcome));
            }
            for msg in later {
                self.take(msg);
            }
        }
        // Every listener is gone: the last checkpoint covers everything this run spooled.
        self.checkpoint();
    }

    /// Spools a checkpoint of the streams whose tips moved since the last one. The gate's tips
    /// are those of groups already written (a group is judged and written before the next
    /// message is taken), so a checkpoint never names a batch that is not durable.
    fn checkpoint(&mut self) {
        let Some(checkpoints) = &mut self.checkpoints else { return };
        let lines = checkpoints.due(self.gate.epoch_heads(), teelog_deliver::clock::now());
        if lines.is_empty() {
            return;
        }
        let (path, kept) = checkpoints.kept();
        let path = path.to_path_buf();
        self.write(&lines);
        retry(&self.spool, "keep the newest checkpoints", || {
            teelog_store::write_atomic(&path, &kept).map_err(|(path, e)| format!("{}: {e}", path.display()))
        });
    }

    /// A submission to judge, or None for a message handled at once.
    fn take(&mut self, msg: Msg) -> Option<Submission> {
        match msg {
            Msg::Lines(submission) => Some(submission),
            Msg::Tick { now, max_silence } => {
                for finding in self.gate.stale_streams(now, max_silence) {
                    self.metrics.report(&finding);
                }
                None
            }
            // Answered between groups (one asked while a group is gathered waits for it to be
            // written): the gate holds only what is durable.
            Msg::Tips { stream, instance, reply } => {
                let _ = reply.send(self.gate.tips(&stream, instance.as_deref()));
                None
            }
            Msg::Checkpoint => {
                self.checkpoint();
                None
            }
        }
    }

    /// Judges the lines of `submission`, appending their spool lines to `out`.
    fn judge(&mut self, submission: &mut Submission, out: &mut Vec<u8>) -> Outcome {
        let mut outcome = Outcome::default();
        let hint = submission.stream.as_deref();
        let now = teelog_deliver::clock::now();
        let checks = std::mem::take(&mut submission.checks);
        for ((i, line), checked) in submission.lines.iter().enumerate().zip(checks) {
            if teelog_core::record::is_blank(line) {
                continue;
            }
            outcome.lines += 1;
            self.metrics.lines_in.fetch_add(1, Ordering::Relaxed);
            let origin = Origin { source: &submission.source, line: submission.first_line + i as u64 };
            let findings = match self.gate.admit(origin, checked, now) {
                Checked::Document { .. } => {
                    outcome.documents += 1;
                    self.metrics.documents.fetch_add(1, Ordering::Relaxed);
                    // Kept beside the spool and placed in a stream only once a batch verifies
                    // under it (below): the stream a client claims is anyone's word, and a
                    // document placed there would change what that stream audits as.
                    Vec::new()
                }
                Checked::Batch(verdict) => {
                    // Only a batch its document vouches for places the document in a stream: an
                    // unsigned one could name any stream and have the document copied there.
                    if let Some(document) = verdict.attestation.filter(|_| verdict.document_now_in_use) {
                        self.save_document(document);
                    }
                    if let Some(document) = verdict.attestation.filter(|_| verdict.signature_valid) {
                        self.emit_document(document, &verdict.stream, out);
                    }
                    envelope::encode(out, Some(&verdict.stream), Some(verdict.signature_valid), line);
                    outcome.batches += 1;
                    if verdict.signature_valid {
                        outcome.valid += 1;
                    } else {
                        outcome.invalid += 1;
                    }
                    if verdict.duplicate {
                        outcome.duplicates += 1;
                        self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    // A name no valid batch has carried could be anyone's: one series for all of
                    // them keeps the metrics bounded.
                    let label = if self.gate.knows_stream(&verdict.stream) {
                        verdict.stream.as_str()
                    } else {
                        UNVERIFIED
                    };
                    self.metrics.batch(label, verdict.signature_valid);
                    verdict.findings
                }
                Checked::Malformed(finding) => {
                    envelope::encode(out, hint, Some(false), line);
                    outcome.malformed += 1;
                    self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                    vec![finding]
                }
            };
            for finding in findings {
                self.metrics.report(&finding);
                if outcome.findings.len() < FINDINGS_RETURNED {
                    outcome.findings.push(finding);
                }
            }
        }
        outcome
    }

    /// Keeps a document that a valid batch uses beside the spool, so that batches naming it can
    /// be verified after a restart; retried until it is saved, since acknowledging it unsaved
    /// could lose it. Documents no valid batch uses are not saved: anyone can send those.
    fn save_document(&mut self, sha256: Digest) {
        if self.saved.contains(&sha256) {
            return;
        }
        let Some(document) = self.gate.document(&sha256) else { return };
        let mut line = teelog_core::batch::attestation_line(document);
        line.pop();
        let dir = documents_dir(self.store.dir());
        let path = dir.join(format!("{}.line", hex::encode(sha256)));
        retry(&self.spool, "save an attestation document", || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| (dir.clone(), e))
                .and_then(|()| teelog_store::write_atomic(&path, &line))
                .map_err(|(path, e)| format!("{}: {e}", path.display()))
        });
        self.saved.insert(sha256);
    }

    /// Puts document `sha256` in the spool for `stream`, once per run.
    fn emit_document(&mut self, sha256: Digest, stream: &str, out: &mut Vec<u8>) {
        let Some(document) = self.gate.document(&sha256) else { return };
        if self.emitted.insert((sha256, stream.to_string())) {
            let mut line = teelog_core::batch::attestation_line(document);
            line.pop();
            envelope::encode(out, Some(stream), None, line.strip_suffix(b"\n").unwrap_or(&line));
        }
    }

    /// Appends the group's spool lines, then saves the continuity state; each is retried until
    /// it is durable, since nothing may be acknowledged before.
    fn write(&mut self, spooled: &[u8]) {
        if !spooled.is_empty() {
            let store = &mut self.store;
            retry(&self.spool, "write to the spool", || {
                store.append_lines(spooled).map_err(|e| e.to_string())
            });
        }
        let state = serde_json::to_vec(self.gate.continuity()).unwrap_or_default();
        let path = continuity_path(self.store.dir());
        retry(&self.spool, "save the continuity state", || {
            teelog_store::write_atomic(&path, &state).map_err(|(path, e)| format!("{}: {e}", path.display()))
        });
        self.spool.publish(self.store.position());
        if !self.keep {
            match self.spool.retire_delivered(self.oldest_segment) {
                Ok(oldest) => self.oldest_segment = oldest,
                Err(e) => tracing::warn!(target: "teelog::gateway", "cannot remove delivered segments: {e}"),
            }
        }
        self.spool.measure();
    }
}

/// Runs `f` until it succeeds, backing off and counting each failure as a spool error.
fn retry(spool: &SpoolState, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let mut backoff = Duration::from_millis(50);
    while let Err(e) = f() {
        tracing::error!(target: "teelog::gateway", "cannot {what}, retrying: {e}");
        spool.metrics.spool_errors.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuity_state_that_cannot_be_used_stops_the_start_and_names_its_file() {
        let spool = tempfile::tempdir().unwrap();
        assert_eq!(load_continuity(spool.path()).unwrap(), Continuity::default(), "none saved yet");
        std::fs::write(continuity_path(spool.path()), b"{\"streams\":").unwrap();
        let err = load_continuity(spool.path()).unwrap_err();
        assert!(matches!(err, ContinuityError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("continuity.json"), "{err}");
        std::fs::remove_file(continuity_path(spool.path())).unwrap();
        std::fs::create_dir(continuity_path(spool.path())).unwrap();
        let err = load_continuity(spool.path()).unwrap_err();
        assert!(matches!(err, ContinuityError::Read { .. }), "{err:?}");
    }
}
