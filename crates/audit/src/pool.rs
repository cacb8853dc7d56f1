//! The verifier on several cores: each line's own checks (parse, Merkle root, hints, signature)
//! run on a pool of threads, in any order, and the verifier admits the results in input order,
//! so that the report is the one a single thread gives. What is in flight is bounded in lines and
//! bytes, whatever the input.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use teelog_core::verify::{LineChecker, Prepared};
use teelog_core::{Origin, Report, Verifier};

use crate::files::{LineSink, SharedLine};

/// Bytes of lines in flight (sent to the pool and not yet admitted): beyond, the reader waits
/// for the oldest line to be admitted. A single longer line is still taken, alone.
const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;
/// Lines in flight per thread: enough to keep every thread busy while the oldest is admitted.
const LINES_PER_THREAD: usize = 32;

/// The threads to use by default: one per core this process may run on.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// What the reader hands on, in input order.
enum Input {
    /// Kept where the reader read it, when it could be.
    Line(SharedLine),
    Unterminated(Vec<u8>),
    Malformed(String),
}

struct Job {
    source: Arc<str>,
    line: u64,
    input: Input,
}

impl Job {
    fn origin(&self) -> Origin<'_> {
        Origin { source: &self.source, line: self.line }
    }
}

/// A whole line's checks, or the panic of the thread that made them, to be raised where a
/// single thread would have raised it.
type Checked = std::thread::Result<Prepared>;

/// A line in flight. The job is shared with the thread checking it, so that the reader can
/// always admit it, checked there or not.
struct Slot {
    job: Arc<Job>,
    bytes: usize,
    checked: Option<Checked>,
}

impl Slot {
    /// Whether it can be admitted: it is not a whole line, or its checks are made.
    fn ready(&self) -> bool {
        self.checked.is_some() || !matches!(self.job.input, Input::Line(_))
    }
}

struct Pool {
    jobs: Option<SyncSender<(u64, Arc<Job>)>>,
    results: Receiver<(u64, Checked)>,
    workers: Vec<JoinHandle<()>>,
    /// Lines sent and not yet admitted, oldest first; the first has seq `admitted`.
    slots: VecDeque<Slot>,
    admitted: u64,
    bytes: usize,
    max_lines: usize,
    source: Arc<str>,
}

/// A [`Verifier`] that checks lines on `threads` threads (with one, on the caller's thread, as
/// [`Verifier::push_line`] does) and admits them in the order they were pushed.
pub struct PooledVerifier {
    verifier: Verifier,
    pool: Option<Pool>,
}

impl PooledVerifier {
    /// `verifier`, checking lines on `threads` threads.
    pub fn new(verifier: Verifier, threads: NonZeroUsize) -> std::io::Result<Self> {
        let pool = match threads.get() {
            1 => None,
            n => Some(Pool::start(verifier.line_checker(), n)?),
        };
        Ok(Self { verifier, pool })
    }

    /// Admits every line still in flight and judges the chains.
    pub fn finish(mut self) -> Report {
        if let Some(mut pool) = self.pool.take() {
            while !pool.slots.is_empty() {
                pool.admit_next(&mut self.verifier);
            }
            pool.stop();
        }
        self.verifier.finish()
    }

    fn send(&mut self, origin: Origin<'_>, input: Input) {
        match &mut self.pool {
            Some(pool) => pool.send(&mut self.verifier, origin, input),
            None => admit(
                &mut self.verifier,
                &Job { source: origin.source.into(), line: origin.line, input },
                None,
            ),
        }
    }
}

impl LineSink for PooledVerifier {
    fn push_line(&mut self, origin: Origin<'_>, line: &[u8]) {
        match self.pool {
            Some(_) => self.send(origin, Input::Line(line.to_vec().into())),
            None => self.verifier.push_line(origin, line),
        }
    }
    fn push_shared(&mut self, origin: Origin<'_>, line: SharedLine) {
        match self.pool {
            Some(_) => self.send(origin, Input::Line(line)),
            None => self.verifier.push_line(origin, &line),
        }
    }
    fn push_unterminated(&mut self, origin: Origin<'_>, line: &[u8]) {
        match self.pool {
            Some(_) => self.send(origin, Input::Unterminated(line.to_vec())),
            None => self.verifier.push_unterminated(origin, line),
        }
    }
    fn push_malformed(&mut self, origin: Origin<'_>, detail: &str) {
        match self.pool {
            Some(_) => self.send(origin, Input::Malformed(detail.to_string())),
            None => self.verifier.push_malformed(origin, detail),
        }
    }
    fn wants_checkpoints(&self) -> bool {
        self.verifier.judges_checkpoints()
    }
}

/// Hands `job` to `verifier`, with the checks a thread of the pool made of its line, if it did.
fn admit(verifier: &mut Verifier, job: &Job, checked: Option<Checked>) {
    let origin = job.origin();
    match (&job.input, checked) {
        (Input::Line(line), Some(checked)) => {
            let prepared = checked.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            verifier.admit(origin, line, prepared)
        }
        (Input::Line(line), None) => verifier.push_line(origin, line),
        (Input::Unterminated(line), _) => verifier.push_unterminated(origin, line),
        (Input::Malformed(detail), _) => verifier.push_malformed(origin, detail),
    }
}

impl Pool {
    fn start(checker: LineChecker, threads: usize) -> std::io::Result<Self> {
        let max_lines = threads * LINES_PER_THREAD;
        let (jobs, queue) = mpsc::sync_channel(max_lines);
        let queue = Arc::new(Mutex::new(queue));
        let (done, results) = mpsc::channel();
        let workers = (0..threads)
            .map(|i| {
                let (queue, done, checker) = (queue.clone(), done.clone(), checker.clone());
                std::thread::Builder::new()
                    .name(format!("teelog-verify-{i}"))
                    .spawn(move || work(&queue, &done, &checker))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            jobs: Some(jobs),
            results,
            workers,
            slots: VecDeque::new(),
            admitted: 0,
            bytes: 0,
            max_lines,
            source: Arc::from(""),
        })
    }

    fn send(&mut self, verifier: &mut Verifier, origin: Origin<'_>, input: Input) {
        let bytes = match &input {
            Input::Line(line) => line.len(),
            Input::Unterminated(line) => line.len(),
            Input::Malformed(detail) => detail.len(),
        };
        while !self.slots.is_empty()
            && (self.slots.len() >= self.max_lines || self.bytes + bytes > MAX_IN_FLIGHT_BYTES)
        {
            self.admit_next(verifier);
        }
        if *self.source != *origin.source {
            self.source = Arc::from(origin.source);
        }
        let job = Arc::new(Job { source: self.source.clone(), line: origin.line, input });
        let seq = self.admitted + self.slots.len() as u64;
        // Only whole lines have checks to make; the rest waits here for its turn. Should every
        // thread be gone, a line is checked when admitted.
        if matches!(job.input, Input::Line(_)) {
            let _ = self.jobs.as_ref().map(|jobs| jobs.send((seq, job.clone())));
        }
        self.slots.push_back(Slot { job, bytes, checked: None });
        self.bytes += bytes;
        // Whatever is done is admitted at once, so that the front does not wait for the bound.
        while let Ok((seq, checked)) = self.results.try_recv() {
            self.received(seq, checked);
        }
        while self.slots.front().is_some_and(Slot::ready) {
            self.admit_next(verifier);
        }
    }

    fn received(&mut self, seq: u64, checked: Checked) {
        let at = seq.checked_sub(self.admitted).and_then(|i| usize::try_from(i).ok());
        if let Some(slot) = at.and_then(|i| self.slots.get_mut(i)) {
            slot.checked = Some(checked);
        }
    }

    /// Admits the oldest line in flight, once its checks are made (here, should no thread be
    /// left to make them).
    fn admit_next(&mut self, verifier: &mut Verifier) {
        while self.slots.front().is_some_and(|s| !s.ready()) {
            match self.results.recv() {
                Ok((seq, checked)) => self.received(seq, checked),
                Err(_) => break,
            }
        }
        let Some(slot) = self.slots.pop_front() else { return };
        self.admitted += 1;
        self.bytes -= slot.bytes;
        admit(verifier, &slot.job, slot.checked);
    }

    fn stop(mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            // A thread catches what its lines raise; it ends when the reader is done.
            let _ = worker.join();
        }
    }
}

/// A thread of the pool: checks whole lines until the reader is done.
fn work(queue: &Mutex<Receiver<(u64, Arc<Job>)>>, done: &Sender<(u64, Checked)>, checker: &LineChecker) {
    loop {
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((seq, job)) = next else { return };
        let Input::Line(line) = &job.input else { continue };
        let checked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checker.prepare(job.origin(), line)));
        drop(job);
        if done.send((seq, checked)).is_err() {
            return;
        }
    }
}
