//! Whether the shipper is signing: the faults that stop it, reported at once (log, metric, and
//! `GET /health` on the metrics listener) and cleared when they pass.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What is wrong now, by the part it stops (`spool`, `chain state`, `signer`).
#[derive(Default)]
pub struct Health {
    problems: Mutex<Vec<(&'static str, String)>>,
    /// Set when the daemon stops: retries give up rather than hold the stop for ever.
    stopping: AtomicBool,
}

impl Health {
    /// Records `problem` for `part` (e.g. "chain state"), replacing what it said before.
    pub fn set(&self, part: &'static str, problem: String) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problems.iter_mut().find(|(p, _)| *p == part) {
            Some((_, old)) => *old = problem,
            None => problems.push((part, problem)),
        }
    }

    /// `part` is well again.
    pub fn clear(&self, part: &'static str) {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).retain(|(p, _)| *p != part);
    }

    /// None when all is well; else one line per problem, `part: what`.
    pub fn problems(&self) -> Option<String> {
        let problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        (!problems.is_empty())
            .then(|| problems.iter().map(|(part, what)| format!("{part}: {what}\n")).collect())
    }

    /// The daemon is stopping: retries give up.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the daemon is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Runs `io` until it succeeds, backing off from 50 ms to 5 s: a batch or a chain state given
    /// up on would be a gap, or a seq signed again. Each failure is logged, counted in `errors`
    /// and shown as a problem of `part` until `io` succeeds. Once the daemon is stopping, the
    /// failure is returned instead, so that a dead disk cannot hold the stop for ever.
    pub fn retry<T, E: std::fmt::Display>(
        &self,
        part: &'static str,
        errors: &AtomicU64,
        mut io: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match io() {
                Ok(done) => {
                    self.clear(part);
                    return Ok(done);
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    self.set(part, e.to_string());
                    if self.stopping() {
                        tracing::error!(target: "teelog::ship", "{part}: {e}; stopping, so not retried");
                        return Err(e);
                    }
                    tracing::error!(target: "teelog::ship", "{part}: {e}; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_a_retry_succeeds() {
        let health = Health::default();
        let errors = AtomicU64::new(0);
        let mut tries = 0;
        let done = health.retry("chain state", &errors, || {
            tries += 1;
            if tries < 3 {
                Err(format!("disk full ({tries})"))
            } else {
                assert_eq!(health.problems().as_deref(), Some("chain state: disk full (2)\n"));
                Ok(tries)
            }
        });
        assert_eq!(done, Ok(3));
        assert_eq!(errors.load(Ordering::Relaxed), 2);
        assert_eq!(health.problems(), None);
    }

    #[test]
    fn a_stopping_daemon_gives_up_and_keeps_the_problem() {
        let health = Health::default();
        health.stop();
        let errors = AtomicU64::new(0);
        let done: Result<(), String> = health.retry("spool", &errors, || Err("read-only".into()));
        assert_eq!(done, Err("read-only".into()));
        assert_eq!(health.problems().as_deref(), Some("spool: read-only\n"));
    }
}
