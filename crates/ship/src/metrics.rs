//! The shipper's own counters: records in, refused and dropped, batches sealed. The spool's and
//! the sinks' are [`teelog_deliver::metrics::Metrics`], kept by the spool's state.

use std::sync::atomic::AtomicU64;

use teelog_deliver::metrics::write_metric;

/// Updated by the sources and the signer thread; rendered for `/metrics`.
#[derive(Default)]
pub struct ShipMetrics {
    /// Records submitted by the sources.
    pub records_in: AtomicU64,
    /// Records refused as not valid records (each signed as a notice).
    pub records_rejected: AtomicU64,
    /// Records dropped because the queue was full (`when_full = "drop"`).
    pub records_dropped: AtomicU64,
    /// Batches sealed, heartbeats included.
    pub batches_sealed: AtomicU64,
    /// Heartbeats (empty batches) sealed.
    pub heartbeats: AtomicU64,
    /// Failed saves of the chain state (each retried).
    pub state_save_errors: AtomicU64,
    /// Seals at which the host's clock went backwards or jumped (`sealed_at` is still written).
    pub clock_anomalies: AtomicU64,
}

impl ShipMetrics {
    /// These counters in the Prometheus text format (the delivery's follow them on `/metrics`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            ("teelog_records_in_total", "Records accepted into a batch.", &self.records_in),
            ("teelog_records_rejected_total", "Records refused as invalid.", &self.records_rejected),
            (
                "teelog_records_dropped_total",
                "Records dropped in drop mode (each drop is noticed in the signed stream).",
                &self.records_dropped,
            ),
            (
                "teelog_batches_sealed_total",
                "Batches signed and spooled, heartbeats included.",
                &self.batches_sealed,
            ),
            ("teelog_heartbeats_total", "Empty batches sealed while idle.", &self.heartbeats),
            (
                "teelog_state_save_errors_total",
                "Failed saves of the chain state (each retried; nothing is signed meanwhile).",
                &self.state_save_errors,
            ),
            (
                "teelog_clock_anomalies_total",
                "Batches sealed at a time before the previous one's, or after the wall clock was set.",
                &self.clock_anomalies,
            ),
        ] {
            write_metric(&mut out, name, help, value, "counter");
        }
        out
    }
}
