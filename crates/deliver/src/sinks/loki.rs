//! `kind = "loki"`: spool lines pushed to Grafana Loki in the teelog layout (docs/LOKI.md), so
//! that every batch line can be rebuilt from Loki byte for byte.

use std::future::Future;
use std::pin::Pin;

use teelog_core::batch::ParsedBatch;
use teelog_core::checkpoint::is_checkpoint_line;
use teelog_loki::{
    encode_push, AttestationInput, ClientOptions, LabelError, Layout, LayoutOptions, LokiClient, Placement,
    PushBuilder, PushOutcome,
};

use super::{http_kind, is_attestation_line, retry_delay, OpenError, Progress};
use crate::clock::now;
use crate::config::LokiSinkConfig;
use crate::delivery::{Delivery, Entry, Sink, SinkError};

/// Bytes of spool lines per push: well under Loki's default ingestion burst (6 MB) and gRPC
/// message limits, whatever the chunk size.
const PUSH_BYTES: usize = 1 << 20;

/// The layout a Loki sink configuration gives (it also validates the labels).
pub(crate) fn layout(config: &LokiSinkConfig) -> Result<Layout, LabelError> {
    Layout::new(LayoutOptions {
        job: config.job.clone(),
        extra_labels: config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        max_line_bytes: config.max_line_bytes,
    })
}

/// Pushes spooled batches to Loki in the teelog layout (docs/LOKI.md).
pub struct LokiSink {
    client: LokiClient,
    layout: Layout,
    /// The stream attestation lines belong to unless their entry names one: the shipper's.
    stream: Option<String>,
    progress: Progress,
}

impl LokiSink {
    /// A sink for the spool of `stream` (None for the gateway's, whose entries name theirs).
    pub fn open(config: &LokiSinkConfig, stream: Option<&str>) -> Result<Self, OpenError> {
        let bearer_token = crate::config::bearer_token(&config.bearer_token, &config.bearer_token_file)?;
        let options = ClientOptions {
            tenant: config.tenant.clone(),
            bearer_token,
            timeout: config.timeout,
            ..ClientOptions::default()
        };
        Ok(Self {
            client: LokiClient::new(&config.url, options)?,
            layout: layout(config).map_err(OpenError::Labels)?,
            stream: stream.map(str::to_string),
            progress: Progress::default(),
        })
    }

    /// Adds one spool entry to `push`; `following` are the entries after it in the chunk.
    fn add(
        &self,
        push: &mut PushBuilder<'_>,
        entry: &Entry<'_>,
        following: &[Entry<'_>],
    ) -> Result<(), SinkError> {
        let verdict =
            entry.signature_valid.map(|valid| [("signature_valid", if valid { "true" } else { "false" })]);
        let extra: &[(&str, &str)] = verdict.as_ref().map_or(&[], |v| v.as_slice());
        // Only the gateway's own checkpoints, which it spools without a verdict: a line a client
        // sent is flagged, and goes where batches go (refused there if it is no batch).
        let added = if is_checkpoint_line(entry.line) && entry.signature_valid.is_none() {
            push.add_checkpoint(entry.line, &[])
        } else if is_attestation_line(entry.line) {
            let Some(stream) = entry.stream.or(self.stream.as_deref()) else {
                return Err(SinkError::permanent("invalid_line", "an attestation line of no known stream"));
            };
            // Stored at the sealed_at of the batch after it (the signer writes the document just
            // before the batches it signs), so that it sorts with them; with none yet, now.
            let timestamp = following
                .iter()
                .find_map(|e| ParsedBatch::parse(e.line).ok()?.header.sealed_at_nanos())
                .unwrap_or_else(now);
            push.add_attestation(AttestationInput { stream, line: entry.line, timestamp }, &[])
        } else {
            // A batch the gateway found invalid is kept apart, where the audit does not read it:
            // a tampered copy of a genuine batch must not change what the genuine one audits as.
            let placement =
                if entry.signature_valid == Some(false) { Placement::Rejected } else { Placement::Audited };
            push.add_placed_batch(entry.line, placement, extra)
        };
        added.map_err(|e| SinkError::permanent("invalid_line", format!("a line cannot go to Loki: {e}")))
    }

    async fn deliver_chunk(&mut self, chunk: &Delivery<'_>) -> Result<(), SinkError> {
        let entries = &chunk.entries;
        let mut at = self.progress.resume(chunk);
        while at < entries.len() {
            let mut push = PushBuilder::new(&self.layout);
            let mut bytes = 0;
            let first = at;
            while at < entries.len() && (at == first || bytes + entries[at].line.len() <= PUSH_BYTES) {
                bytes += entries[at].line.len();
                if let Err(e) = self.add(&mut push, &entries[at], &entries[at + 1..]) {
                    self.progress.refuse(e);
                }
                at += 1;
            }
            if !push.is_empty() {
                if let Err(e) = self.push(push).await {
                    if e.retryable {
                        return Err(e);
                    }
                    self.progress.refuse(e);
                }
            }
            self.progress.settled(at);
        }
        self.progress.finish()
    }

    async fn push(&self, push: PushBuilder<'_>) -> Result<(), SinkError> {
        let request = push.finish();
        let entries = request.streams.iter().map(|s| s.entries.len() as u64).sum();
        let body = encode_push(&request).map_err(|e| SinkError::permanent("invalid_line", e.to_string()))?;
        match self.client.push(body).await {
            Ok(PushOutcome::Accepted) => Ok(()),
            Ok(PushOutcome::Rejected { message }) => Err(rejected(&message, entries)),
            Ok(PushOutcome::Retry { status, retry_after, reason }) => {
                let what = status.map_or(String::new(), |s| format!("Loki answered HTTP {s}: "));
                Err(SinkError::retry(http_kind(status), format!("{what}{reason}"))
                    .after(retry_delay(retry_after)))
            }
            // Other 4xx, and answers a push never gets: repeating will not help.
            Err(e) => Err(SinkError::permanent("rejected", e.to_string())),
        }
    }
}

/// Loki's 400 to a push of `entries` entries: some or all refused. Loki 3 words it in one of two
/// ways, and says how many it refused in each:
///
/// - the distributor's checks (timestamp too old or too new, line too long) list every refused
///   entry, grouped: `N errors like: <message>; M errors like: <message>` (a lone refusal has no
///   count). It stored the entries they do not list.
/// - the ingester's (out of order: "entry too far behind") end in `total ignored: N out of M for
///   stream: {…}`, about one stream of the push only.
fn rejected(message: &str, entries: u64) -> SinkError {
    let partial = match (ignored(message), grouped_refusals(message)) {
        (Some((ignored, total)), _) if ignored < total => Some((ignored, total)),
        (None, Some(refused)) if refused < entries => Some((refused, entries)),
        _ => None,
    };
    match partial {
        Some((ignored, total)) => SinkError::permanent(
            "partial",
            format!("Loki refused {ignored} of {total} entries and stored the rest: {message}"),
        ),
        None => SinkError::permanent("rejected", format!("Loki refused the push (HTTP 400): {message}")),
    }
}

fn ignored(message: &str) -> Option<(u64, u64)> {
    const MARK: &str = "total ignored: ";
    let rest = &message[message.rfind(MARK)? + MARK.len()..];
    let (ignored, rest) = rest.split_once(" out of ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    Some((ignored.trim().parse().ok()?, rest[..digits].parse().ok()?))
}

/// The number of entries a distributor refusal lists, if every part of it is about single entries
/// (a refused label set, say, refuses a whole stream under one message, and is not counted).
fn grouped_refusals(message: &str) -> Option<u64> {
    const GROUPED: &str = " errors like: ";
    let mut refused = 0u64;
    for part in message.trim().split("; ") {
        let (count, text) = match part.split_once(GROUPED) {
            Some((count, text)) if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) => {
                (count.parse::<u64>().ok()?, text)
            }
            _ => (1, part),
        };
        let per_entry = text.starts_with("entry for stream '") || text.starts_with("Max entry size '");
        if !per_entry {
            return None;
        }
        refused = refused.checked_add(count)?;
    }
    Some(refused)
}

impl Sink for LokiSink {
    fn deliver<'a>(
        &'a mut self,
        chunk: &'a Delivery<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>> {
        Box::pin(self.deliver_chunk(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loki 3.4.6's answers to pushes with entries older than reject_old_samples_max_age, as
    /// received (stream labels shortened), and to an out-of-order entry.
    const TOO_OLD_ONE: &str =
        "entry for stream '{job=\"teelog\", teelog_kind=\"batch\"}' has timestamp too old: \
        2026-11-23T18:11:01Z, oldest acceptable timestamp is: 2026-11-26T18:11:04Z";
    const TOO_OLD_GROUPED: &str =
        "1 errors like: entry for stream '{job=\"teelog\", teelog_kind=\"attestation\"}' \
        has timestamp too old: 2026-11-23T18:11:13Z, oldest acceptable timestamp is: 2026-11-26T18:11:14Z; \
        3 errors like: entry for stream '{job=\"teelog\", teelog_kind=\"batch\"}' has timestamp too old: \
        2026-11-23T18:11:13Z, oldest acceptable timestamp is: 2026-11-26T18:11:14Z; 300 errors like: entry \
        for stream '{job=\"teelog\", teelog_kind=\"record\"}' has timestamp too old: 2026-11-23T18:11:13Z, \
        oldest acceptable timestamp is: 2026-11-26T18:11:14Z";
    const TOO_FAR_BEHIND: &str =
        "entry with timestamp 2026-12-03 16:41:37.226721113 +0000 UTC ignored, reason: \
        'entry too far behind, entry timestamp is: 2026-12-03T16:41:37Z, oldest acceptable timestamp is: \
        2026-12-03T17:11:14Z',\nuser 'fake', total ignored: 1 out of 3 for stream: {job=\"teelog\"}";

    #[test]
    fn a_partial_400_says_how_much_was_refused() {
        // The distributor's refusals: partial when fewer entries are listed than were pushed.
        let partial = rejected(TOO_OLD_GROUPED, 611);
        assert_eq!(partial.kind, "partial");
        assert!(!partial.retryable);
        assert!(partial.message.starts_with("Loki refused 304 of 611 entries"), "{}", partial.message);
        assert!(partial.message.contains("timestamp too old"));
        assert_eq!(rejected(TOO_OLD_GROUPED, 304).kind, "rejected");
        assert_eq!(rejected(TOO_OLD_ONE, 2).kind, "partial");
        assert_eq!(rejected(TOO_OLD_ONE, 1).kind, "rejected");
        assert_eq!(grouped_refusals(TOO_OLD_GROUPED), Some(304));
        assert_eq!(grouped_refusals(TOO_OLD_ONE), Some(1));
        // A refused label set refuses a whole stream: the count says nothing then.
        let labels = "2 errors like: entry for stream '{a=\"b\"}' has timestamp too new: x; 1 errors like: \
            stream '{a=\"b\"}' has label value too long: 'v'";
        assert_eq!(grouped_refusals(labels), None);
        assert_eq!(rejected(labels, 100).kind, "rejected");
        assert_eq!(rejected("Error parsing labels '{' with error: x", 100).kind, "rejected");
        // The ingester's: about one stream, partial when that stream kept entries.
        assert_eq!(rejected(TOO_FAR_BEHIND, 100).kind, "partial");
        assert!(rejected(TOO_FAR_BEHIND, 100).message.starts_with("Loki refused 1 of 3 entries"));
        assert_eq!(rejected("total ignored: 3 out of 3", 100).kind, "rejected");
        assert_eq!(rejected("bad request", 100).kind, "rejected");
        assert_eq!(ignored("x, total ignored: 12 out of 40\n"), Some((12, 40)));
        assert_eq!(ignored("total ignored: many out of 40"), None);
    }
}
