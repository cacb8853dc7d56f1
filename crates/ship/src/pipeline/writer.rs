//! The spool writer: sealed batch lines go into the spool on a thread of their own, in order,
//! so that the signer seals the next batch while this one is fsynced. Each batch is written and
//! its submissions acknowledged; the batches written are published to the sinks only once the
//! chain state that counts them is saved. No sink ever holds a batch the saved state does not
//! count, so a run that finds its spool lost or rolled back never signs one of those seqs again
//! with other records; a crash between a write and the save leaves a state the spool is ahead
//! of, which the next run resumes after (docs/SHIP.md).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use teelog_core::{ChainHead, Sealed};
use teelog_identity::StateStore;
use teelog_store::Store;
use tokio::sync::oneshot;

use super::{Shared, Submission};
use crate::signer::{ShipError, SignSummary};

/// Sealed batches the signer may be ahead of the spool by (queued, besides the one being
/// written): enough to keep both busy, few enough that a failing disk stops the signer soon.
const QUEUED_BATCHES: usize = 1;

enum Job {
    Batch {
        line: Vec<u8>,
        sealed: Sealed,
        /// Where the chain stands once this batch is written.
        head: ChainHead,
        submissions: Vec<Submission>,
    },
    /// Acknowledged once every batch handed over before it is durable.
    Ack(Submission),
    /// Told once every batch handed over before it is durable.
    Durable(oneshot::Sender<()>),
}

pub(super) struct SpoolWriter {
    jobs: Option<mpsc::SyncSender<Job>>,
    /// Line buffers of written batches, back for reuse; one per batch written.
    spent: mpsc::Receiver<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    thread: Option<JoinHandle<Result<SignSummary, ShipError>>>,
}

/// How errors name the spool writer's thread.
const SPOOL_THREAD: &str = "spool writer";

impl SpoolWriter {
    pub(super) fn start(store: Store, states: StateStore, shared: Arc<Shared>) -> Result<Self, ShipError> {
        let (jobs, queue) = mpsc::sync_channel(QUEUED_BATCHES);
        let (give_back, spent) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("teelog-spool".into())
            .spawn(move || write_all(store, &states, &shared, queue, give_back))
            .map_err(|source| ShipError::ThreadStart { thread: SPOOL_THREAD, source })?;
        Ok(Self { jobs: Some(jobs), spent, spare: Vec::new(), thread: Some(thread) })
    }

    /// An empty buffer to seal the next batch into, reusing a written batch's.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        while let Ok(line) = self.spent.try_recv() {
            self.returned(line);
        }
        let mut line = self.spare.pop().unwrap_or_default();
        line.clear();
        line
    }

    pub(super) fn write(
        &mut self,
        line: Vec<u8>,
        sealed: Sealed,
        head: ChainHead,
        submissions: Vec<Submission>,
    ) -> Result<(), ShipError> {
        self.send(Job::Batch { line, sealed, head, submissions })
    }

    pub(super) fn acknowledge(&mut self, submission: Submission) -> Result<(), ShipError> {
        self.send(Job::Ack(submission))
    }

    pub(super) fn tell_when_durable(&mut self, done: oneshot::Sender<()>) -> Result<(), ShipError> {
        self.send(Job::Durable(done))
    }

    /// Writes what is queued and stops; what was written.
    pub(super) fn finish(mut self) -> Result<SignSummary, ShipError> {
        self.jobs = None;
        let thread = self.thread.take().ok_or(ShipError::ThreadGone(SPOOL_THREAD))?;
        thread.join().map_err(|_| ShipError::ThreadPanicked(SPOOL_THREAD))?
    }

    fn returned(&mut self, line: Vec<u8>) {
        // Enough spares for the batch being written and those queued.
        if self.spare.len() <= QUEUED_BATCHES {
            self.spare.push(line);
        }
    }

    fn send(&self, job: Job) -> Result<(), ShipError> {
        let jobs = self.jobs.as_ref().ok_or(ShipError::ThreadGone(SPOOL_THREAD))?;
        jobs.send(job).map_err(|_| ShipError::ThreadGone(SPOOL_THREAD))
    }
}

/// The longest a written batch waits for the chain state to be saved and the batch published to
/// the sinks: one save then covers every batch written meanwhile.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The writer thread: each batch is appended with an fsync, retried until it succeeds (or the
/// daemon stops), since a batch given up on would be a gap in the chain; its submissions are
/// then acknowledged (their records are durable). The batches written are published to the
/// sinks only once the chain state that counts them is saved, at most [`PUBLISH_EVERY`] later.
fn write_all(
    mut store: Store,
    states: &StateStore,
    shared: &Shared,
    queue: mpsc::Receiver<Job>,
    give_back: mpsc::Sender<Vec<u8>>,
) -> Result<SignSummary, ShipError> {
    let metrics = &shared.metrics;
    let mut summary = SignSummary::default();
    // The chain's head after the last batch written and not yet published, and when the state
    // was last saved.
    let mut unpublished: Option<ChainHead> = None;
    let mut saved = Instant::now();
    let publish = |head: &ChainHead, store: &Store, saved: &mut Instant| {
        let errors = &metrics.state_save_errors;
        shared.health.retry("chain state", errors, || states.save(head))?;
        shared.spool.publish(store.position());
        *saved = Instant::now();
        Ok::<(), ShipError>(())
    };
    loop {
        let job = match &unpublished {
            None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(_) => queue.recv_timeout((saved + PUBLISH_EVERY).saturating_duration_since(Instant::now())),
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(head) = unpublished.take() {
                    publish(&head, &store, &mut saved)?;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match job {
            Job::Batch { line, sealed, head, submissions } => {
                let errors = &shared.spool.metrics.spool_errors;
                shared.health.retry("spool", errors, || store.append(&line))?;
                summary.add(sealed);
                metrics.batches_sealed.fetch_add(1, Ordering::Relaxed);
                if sealed.count == 0 {
                    metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                for submission in submissions {
                    shared.acknowledge(submission, store.position());
                }
                let _ = give_back.send(line);
                if saved.elapsed() >= PUBLISH_EVERY {
                    publish(&head, &store, &mut saved)?;
                    unpublished = None;
                } else {
                    unpublished = Some(head);
                }
            }
            Job::Ack(submission) => shared.acknowledge(submission, store.position()),
            Job::Durable(done) => {
                let _ = done.send(());
            }
        }
    }
    if let Some(head) = unpublished {
        publish(&head, &store, &mut saved)?;
    }
    Ok(summary)
}
