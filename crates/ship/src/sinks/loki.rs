//! `kind = "loki"`: spool lines pushed to Grafana Loki in the teelog layout (docs/LOKI.md), so
//! that every batch line can be rebuilt from Loki byte for byte.

use std::future::Future;
use std::pin::Pin;

use teelog_core::batch::ParsedBatch;
use teelog_loki::{
    encode_push, AttestationInput, ClientOptions, LabelError, Layout, LayoutOptions, LokiClient, PushBuilder,
    PushOutcome,
};

use super::{http_kind, is_attestation_line, retry_delay, Progress};
use crate::config::LokiSinkConfig;
use crate::delivery::{Delivery, Entry, Sink, SinkError};
use crate::signer::now;

/// Bytes of spool lines per push: well under Loki's default ingestion burst (6 MB) and gRPC
/// message limits, whatever the chunk size.
const PUSH_BYTES: usize = 1 << 20;

/// The layout a Loki sink configuration gives (it also validates the labels).
pub(crate) fn layout(config: &LokiSinkConfig) -> Result<Layout, LabelError> {
    Layout::new(LayoutOptions {
        job: config.job.clone(),
        extra_labels: config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ..LayoutOptions::default()
    })
}

pub struct LokiSink {
    client: LokiClient,
    layout: Layout,
    /// The stream attestation lines belong to unless their entry names one: the shipper's.
    stream: Option<String>,
    progress: Progress,
}

impl LokiSink {
    /// A sink for the spool of `stream` (None for the gateway's, whose entries name theirs).
    pub fn open(config: &LokiSinkConfig, stream: Option<&str>) -> Result<Self, String> {
        let bearer_token = crate::config::bearer_token(&config.bearer_token, &config.bearer_token_file)?;
        let options = ClientOptions {
            tenant: config.tenant.clone(),
            bearer_token,
            timeout: config.timeout,
            ..ClientOptions::default()
        };
        Ok(Self {
            client: LokiClient::new(&config.url, options).map_err(|e| e.to_string())?,
            layout: layout(config).map_err(|e| format!("labels: {e}"))?,
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
        let added = if is_attestation_line(entry.line) {
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
            push.add_batch(entry.line, extra)
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
        let body =
            encode_push(&push.finish()).map_err(|e| SinkError::permanent("invalid_line", e.to_string()))?;
        match self.client.push(body).await {
            Ok(PushOutcome::Accepted) => Ok(()),
            Ok(PushOutcome::Rejected { message }) => Err(rejected(&message)),
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

/// Loki's 400: some or all entries refused, and its message says which and why. It ends in
/// `total ignored: N out of M` when it stored the others.
fn rejected(message: &str) -> SinkError {
    match ignored(message) {
        Some((ignored, total)) if ignored < total => SinkError::permanent(
            "partial",
            format!("Loki refused {ignored} of {total} entries and stored the rest: {message}"),
        ),
        _ => SinkError::permanent("rejected", format!("Loki refused the push (HTTP 400): {message}")),
    }
}

fn ignored(message: &str) -> Option<(u64, u64)> {
    const MARK: &str = "total ignored: ";
    let rest = &message[message.rfind(MARK)? + MARK.len()..];
    let (ignored, rest) = rest.split_once(" out of ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    Some((ignored.trim().parse().ok()?, rest[..digits].parse().ok()?))
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

    #[test]
    fn a_partial_400_says_how_much_was_refused() {
        let partial =
            rejected("entry for stream '{job=\"teelog\"}' has timestamp too old, total ignored: 1 out of 3");
        assert_eq!(partial.kind, "partial");
        assert!(!partial.retryable);
        assert!(partial.message.starts_with("Loki refused 1 of 3 entries"), "{}", partial.message);
        assert!(partial.message.contains("timestamp too old"));
        assert_eq!(rejected("total ignored: 3 out of 3").kind, "rejected");
        assert_eq!(rejected("bad request").kind, "rejected");
        assert_eq!(ignored("x, total ignored: 12 out of 40\n"), Some((12, 40)));
        assert_eq!(ignored("total ignored: many out of 40"), None);
    }
}
