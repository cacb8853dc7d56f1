//! A [`tracing`] layer that signs an application's own events in-process, without the daemon:
//! each event becomes one record, batched, signed and fsynced into a spool by the same
//! [`Pipeline`] the daemon runs.
//!
//! A record holds `ts` (RFC 3339, nanoseconds), `level`, `target`, `message`, the event's other
//! fields under `attributes`, and the spans it happened in, outermost first, under `spans`
//! (`name` and `fields` of each).
//!
//! Nothing is lost silently. The layer waits for no seal: a record is sealed with its batch
//! (after `max_delay` at the latest), and the [`TeelogGuard`] seals what is pending when it is
//! dropped. When the queue is full, [`PipelineOptions::when_full`] decides. With `Block`, the
//! thread emitting the event waits for room. With `Drop`, the event is dropped and counted, and a
//! signed notice in the log says how many were. An event emitted after the pipeline has stopped
//! can't be signed, so it goes to stderr.
//!
//! The pipeline's own events (target `teelog::ship`), and the delivery's from the spool (target
//! `teelog::deliver`), are not signed: signing them would feed the signer its own reports, and
//! with a full queue it would wait on itself.
//!
//! [`PipelineOptions::when_full`]: crate::pipeline::PipelineOptions::when_full
//!
//! ```no_run
//! use std::sync::Arc;
//! use teelog_ship::layer::TeelogLayer;
//! use teelog_ship::metrics::ShipMetrics;
//! use teelog_ship::pipeline::{Pipeline, PipelineOptions};
//! use teelog_ship::{Output, StreamSigner};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = teelog_identity::Identity::load_exclusive("./id".as_ref())?;
//! let spool = teelog_store::Store::open("./spool".as_ref(), Default::default())?;
//! let signer = StreamSigner::open(identity, "payments", Output::Store(spool))?;
//! let options = PipelineOptions { keep_spool: true, ..PipelineOptions::default() };
//! let pipeline = Pipeline::start(signer, options, Arc::new(ShipMetrics::default()))?;
//!
//! let (layer, guard) = TeelogLayer::new(pipeline);
//! tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;
//! tracing::info!(user = "alice", amount = 12.5, "payment approved");
//! // Seals the pending batch; `guard.close()` does the same and reports errors.
//! drop(guard);
//! # Ok(())
//! # }
//! ```

use serde_json::{Map, Value};
use teelog_core::timestamp::format_rfc3339;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::pipeline::{Origin, Pipeline, RecordBuf, Submitter};
use crate::signer::{ShipError, SignSummary};
use teelog_deliver::clock::now;

/// The pipeline's and the delivery's targets: events under them (and their submodules) are not
/// signed.
const OWN_TARGETS: [&str; 2] = ["teelog::ship", "teelog::deliver"];

/// Signs every event it sees; see the module documentation.
pub struct TeelogLayer {
    submitter: Submitter,
    origin: Origin,
}

/// Keeps the pipeline running; dropping it seals what is pending and saves the chain state.
#[must_use = "dropping the guard stops signing"]
pub struct TeelogGuard {
    pipeline: Option<Pipeline>,
}

impl TeelogLayer {
    /// A layer feeding `pipeline`, and the guard that closes it.
    pub fn new(pipeline: Pipeline) -> (Self, TeelogGuard) {
        let layer = Self { submitter: pipeline.submitter(), origin: Origin::named("tracing") };
        (layer, TeelogGuard { pipeline: Some(pipeline) })
    }
}

impl TeelogGuard {
    /// Seals what is pending, saves the chain state and stops; events after this go to stderr.
    pub fn close(mut self) -> Result<SignSummary, ShipError> {
        self.pipeline.take().map_or(Ok(SignSummary::default()), Pipeline::close)
    }
}

impl Drop for TeelogGuard {
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            // stderr, since this layer may be the only one, and it is closing.
            if let Err(e) = pipeline.close() {
                eprintln!("teelog: closing the signer failed: {e}");
            }
        }
    }
}

/// An event's or a span's fields as JSON; `message` is kept apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::String(message)) => self.message = Some(message),
            (name, value) => {
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities: those are kept as text.
        let value =
            serde_json::Number::from_f64(value).map_or_else(|| value.to_string().into(), Value::Number);
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// A span's fields, kept in its extensions from creation on.
struct SpanFields(Map<String, Value>);

impl<S> tracing_subscriber::Layer<S> for TeelogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(message) = fields.message {
            fields.fields.insert("message".into(), message.into());
        }
        span.extensions_mut().insert(SpanFields(fields.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(SpanFields(known)) = extensions.get_mut::<SpanFields>() else { return };
        let mut fields = Fields { message: None, fields: std::mem::take(known) };
        values.record(&mut fields);
        if let Some(message) = fields.message {
            fields.fields.insert("message".into(), message.into());
        }
        *known = fields.fields;
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let own = OWN_TARGETS.iter().filter_map(|own| meta.target().strip_prefix(own));
        if own.into_iter().any(|rest| rest.is_empty() || rest.starts_with("::")) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut record = Map::new();
        record.insert("ts".into(), format_rfc3339(now()).into());
        record.insert("level".into(), meta.level().as_str().into());
        record.insert("target".into(), meta.target().into());
        if let Some(message) = fields.message {
            record.insert("message".into(), message.into());
        }
        if !fields.fields.is_empty() {
            record.insert("attributes".into(), Value::Object(fields.fields));
        }
        if let Some(scope) = ctx.event_scope(event) {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let extensions = span.extensions();
                    let fields = extensions.get::<SpanFields>().map(|f| f.0.clone()).unwrap_or_default();
                    serde_json::json!({ "name": span.name(), "fields": fields })
                })
                .collect();
            if !spans.is_empty() {
                record.insert("spans".into(), spans.into());
            }
        }
        let line = Value::Object(record).to_string();
        let mut records = RecordBuf::default();
        records.push(line.as_bytes());
        if let Err(e) = self.submitter.submit_blocking(records, self.origin.clone()) {
            eprintln!("teelog: not signed ({e}): {line}");
        }
    }
}
