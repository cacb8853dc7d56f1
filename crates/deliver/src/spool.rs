//! What a spool's writer shares with the sinks that read it: where its durable end is, where
//! each sink's delivery stands (for retention and the spool's bound), and the delivery's
//! metrics. The shipper's signer and the gateway both write spools that [`crate::delivery`]
//! follows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use teelog_store::reader::Position;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Shared between a spool's writer and its sinks' delivery tasks.
pub struct SpoolState {
    /// The delivery's counters.
    pub metrics: Arc<Metrics>,
    dir: PathBuf,
    /// The spool's durable end, published after every fsynced append.
    written: watch::Sender<Position>,
    /// Where each sink's delivery stands.
    readers: Mutex<HashMap<String, Position>>,
    reader_moved: Condvar,
    reader_moved_lock: Mutex<()>,
    /// Marked changed whenever a sink's delivery moves, for async followers.
    moved: watch::Sender<()>,
    /// The longest line its writer writes (newline not counted): a longer one is planted, and
    /// passed over rather than read whole.
    max_line: u64,
}

impl SpoolState {
    /// The state of the spool in `dir`, durable up to `end`, whose writer writes lines of at
    /// most `max_line` bytes.
    pub fn new(dir: PathBuf, end: Position, metrics: Arc<Metrics>, max_line: u64) -> Self {
        Self {
            max_line,
            metrics,
            dir,
            written: watch::Sender::new(end),
            readers: Mutex::new(HashMap::new()),
            reader_moved: Condvar::new(),
            reader_moved_lock: Mutex::new(()),
            moved: watch::Sender::new(()),
        }
    }

    /// The longest line its writer writes.
    pub fn max_line(&self) -> u64 {
        self.max_line
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Follows the spool's durable end, as [`SpoolState::publish`] moves it.
    pub fn written(&self) -> watch::Receiver<Position> {
        self.written.subscribe()
    }

    /// Everything up to `end` is durable: sinks may read it.
    pub fn publish(&self, end: Position) {
        self.written.send_replace(end);
    }

    /// A sink's delivery has reached `at`.
    pub fn reader_at(&self, name: &str, at: Position) {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), at);
        let _guard = self.reader_moved_lock.lock();
        self.reader_moved.notify_all();
        self.moved.send_replace(());
    }

    /// Where sink `name`'s delivery stands, if it registered.
    pub fn reader(&self, name: &str) -> Option<Position> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied()
    }

    /// Changes whenever a sink's delivery moves on.
    pub fn readers_moved(&self) -> watch::Receiver<()> {
        self.moved.subscribe()
    }

    /// Where the sink furthest behind stands; `None` before any sink reported.
    pub fn slowest_reader(&self) -> Option<Position> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).values().min().copied()
    }

    /// Blocks until a sink moves on or `timeout` passes.
    pub fn wait_for_reader(&self, timeout: Duration) {
        let guard = self.reader_moved_lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.reader_moved.wait_timeout(guard, timeout);
    }

    /// Bytes the slowest sink has still to deliver, published as the spool gauge.
    pub fn measure(&self) -> Option<u64> {
        let slowest = self.slowest_reader()?;
        let behind = teelog_store::reader::bytes_from(&self.dir, slowest).unwrap_or(0);
        self.metrics.spool_bytes.store(behind, std::sync::atomic::Ordering::Relaxed);
        Some(behind)
    }

    /// Deletes the segments before `oldest` that every sink has delivered; returns the new
    /// oldest segment.
    pub fn retire_delivered(&self, oldest: u64) -> Result<u64, teelog_store::StoreError> {
        match self.slowest_reader() {
            Some(slowest) if slowest.segment > oldest => {
                teelog_store::reader::remove_segments_before(&self.dir, slowest.segment)?;
                Ok(slowest.segment)
            }
            _ => Ok(oldest),
        }
    }
}
