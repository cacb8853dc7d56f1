//! The counters a spool's delivery and a daemon's listeners keep, shared by the shipper and the
//! gateway, and the Prometheus text exposition format they are rendered in. Each daemon renders
//! its own counters with [`write_metric`] and appends [`Metrics::render`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A daemon's delivery counters, updated from any thread and rendered for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Spool bytes the slowest sink has not delivered yet.
    pub spool_bytes: AtomicU64,
    /// Spool writes that failed (each is retried).
    pub spool_errors: AtomicU64,
    /// Per sink: bytes of spool still to deliver, and errors by kind.
    sinks: Mutex<Vec<SinkMetrics>>,
    /// Per source: requests refused, by reason.
    refused: Mutex<Vec<(String, String, u64)>>,
}

#[derive(Default, Clone)]
struct SinkMetrics {
    name: String,
    lag_bytes: u64,
    delivered_lines: u64,
    errors: Vec<(String, u64)>,
}

impl Metrics {
    fn with_sink(&self, name: &str, f: impl FnOnce(&mut SinkMetrics)) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let index = match sinks.iter().position(|s| s.name == name) {
            Some(index) => index,
            None => {
                sinks.push(SinkMetrics { name: name.to_string(), ..SinkMetrics::default() });
                sinks.len() - 1
            }
        };
        f(&mut sinks[index]);
    }

    /// Sets the bytes of spool `sink` has still to deliver.
    pub fn sink_lag(&self, sink: &str, bytes: u64) {
        self.with_sink(sink, |s| s.lag_bytes = bytes);
    }

    /// Counts `lines` more lines delivered by `sink`.
    pub fn sink_delivered(&self, sink: &str, lines: u64) {
        self.with_sink(sink, |s| s.delivered_lines += lines);
    }

    /// Counts one failed delivery of `sink`, by its [`crate::delivery::SinkError::kind`].
    pub fn sink_error(&self, sink: &str, kind: &str) {
        self.with_sink(sink, |s| match s.errors.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => s.errors.push((kind.to_string(), 1)),
        });
    }

    /// A source refused a request (bad input, full queue, …).
    pub fn refused(&self, source: &str, reason: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        match refused.iter_mut().find(|(s, r, _)| s == source && r == reason) {
            Some((_, _, n)) => *n += 1,
            None => refused.push((source.to_string(), reason.to_string(), 1)),
        }
    }

    /// The spool's, the sinks' and the listeners' metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        write_metric(
            &mut out,
            "teelog_spool_bytes",
            "Spool bytes the slowest sink has not delivered yet.",
            &self.spool_bytes,
            "gauge",
        );
        write_metric(
            &mut out,
            "teelog_spool_write_errors_total",
            "Failed spool writes (each retried).",
            &self.spool_errors,
            "counter",
        );
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        out.push_str("# HELP teelog_sink_lag_bytes Spool bytes a sink has still to receive.\n# TYPE teelog_sink_lag_bytes gauge\n");
        for s in &sinks {
            let _ = writeln!(out, "teelog_sink_lag_bytes{{sink=\"{}\"}} {}", escape(&s.name), s.lag_bytes);
        }
        out.push_str("# HELP teelog_sink_delivered_lines_total Spool lines a sink confirmed.\n# TYPE teelog_sink_delivered_lines_total counter\n");
        for s in &sinks {
            let _ = writeln!(
                out,
                "teelog_sink_delivered_lines_total{{sink=\"{}\"}} {}",
                escape(&s.name),
                s.delivered_lines
            );
        }
        out.push_str("# HELP teelog_sink_errors_total Delivery errors by sink and kind.\n# TYPE teelog_sink_errors_total counter\n");
        for s in &sinks {
            for (kind, n) in &s.errors {
                let _ = writeln!(
                    out,
                    "teelog_sink_errors_total{{sink=\"{}\",kind=\"{}\"}} {n}",
                    escape(&s.name),
                    escape(kind)
                );
            }
        }
        out.push_str("# HELP teelog_requests_refused_total Requests a source refused, by reason.\n# TYPE teelog_requests_refused_total counter\n");
        for (source, reason, n) in self.refused.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "teelog_requests_refused_total{{source=\"{}\",reason=\"{}\"}} {n}",
                escape(source),
                escape(reason)
            );
        }
        out
    }
}

/// One unlabelled metric with its help and type lines.
pub fn write_metric(out: &mut String, name: &str, help: &str, value: &AtomicU64, kind: &str) {
    let _ =
        writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", value.load(Ordering::Relaxed));
}

/// A label value as the text format quotes it.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
