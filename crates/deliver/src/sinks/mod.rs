//! The sinks a spool is delivered to: another embedded store ([`StoreSink`]), and over the
//! network Grafana Loki's push API ([`loki`]), OTLP/HTTP ([`otlp`]) and a gateway's relay
//! listener ([`relay`]). [`open`] makes the one a configuration names.
//!
//! The network sinks send a chunk in several requests. Each remembers which were confirmed
//! (`Progress`), so that a retry of the chunk resumes after them rather than sending them again,
//! and collects what the far end refused for good, so that the rest of the chunk is still sent
//! before the refusals are reported.

use std::path::PathBuf;
use std::time::Duration;

use teelog_loki::{LabelError, LokiError, RetryAfter};
use teelog_store::reader::Position;
use teelog_store::StoreError;

use crate::clock::now;
use crate::config::SinkConfig;
use crate::delivery::{Delivery, Sink, SinkError, StoreSink};

pub mod loki;
pub mod otlp;
pub mod relay;

/// Why a sink could not be set up. Nothing was sent yet: these are the configuration's (or
/// the machine's) faults, not the far end's.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store directory could not be opened, or another process writes to it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Both `bearer_token` and `bearer_token_file` are given.
    #[error("give bearer_token or bearer_token_file, not both")]
    TwoTokens,
    /// The bearer token file could not be read.
    #[error("bearer_token_file {}: {error}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The URL does not parse.
    #[error("url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The HTTP client could not be built (a bad URL scheme or header, TLS set-up).
    #[error(transparent)]
    Client(#[from] LokiError),
    /// The Loki sink's labels do not make a valid layout.
    #[error("labels: {0}")]
    Labels(LabelError),
    /// A relay sink's `tls` could not be set up: a certificate, key or root file that cannot be
    /// read or used, the system's roots, or a server name that is not one.
    #[error("tls: {0}")]
    Tls(String),
    /// A relay sink's address is neither `host:port` nor `vsock://CID:PORT`.
    #[error(transparent)]
    Address(#[from] teelog_relay::address::AddressError),
    /// A relay sink on a spool of many streams (the gateway's): the relay protocol carries one
    /// shipper's stream.
    #[error("a relay sink forwards one shipper's stream; a gateway cannot relay")]
    RelayWithoutStream,
}

/// Opens the sink `config` describes, for the spool of `stream` (None for a spool of many
/// streams, whose entries name theirs, as the gateway's does).
pub fn open(config: &SinkConfig, stream: Option<&str>) -> Result<Box<dyn Sink>, OpenError> {
    match config {
        SinkConfig::Store { dir, .. } => {
            Ok(Box::new(StoreSink::open(dir, teelog_store::DEFAULT_SEGMENT_BYTES)?))
        }
        SinkConfig::Loki(loki) => Ok(Box::new(loki::LokiSink::open(loki, stream)?)),
        SinkConfig::Otlp(otlp) => Ok(Box::new(otlp::OtlpSink::open(otlp)?)),
        SinkConfig::Relay(relay) => {
            let stream = stream.ok_or(OpenError::RelayWithoutStream)?;
            Ok(Box::new(relay::RelaySink::open(relay, stream)?))
        }
    }
}

/// At most this many refusals are spelled out in one error; the rest are counted.
const REFUSALS_SHOWN: usize = 3;

/// Attestation document lines (docs/FORMAT.md §7a) start so; batch lines start with `"header"`.
fn is_attestation_line(line: &[u8]) -> bool {
    line.starts_with(b"{\"v\":1,\"attestation\":")
}

/// The metrics kind of a failed HTTP request; no status means no answer at all (connection
/// refused, reset, timed out).
fn http_kind(status: Option<u16>) -> &'static str {
    match status {
        None => "connect",
        Some(429) => "http_429",
        Some(500..=599) => "http_5xx",
        // Loki answers blocked ingestion with a 2xx other than 200/204.
        Some(200..=299) => "http_2xx",
        Some(_) => "rejected",
    }
}

/// How long from now the far end asked to be left alone.
fn retry_delay(retry_after: Option<RetryAfter>) -> Option<Duration> {
    retry_after.map(|r| r.delay(now()))
}

/// Where a sink stands in the chunk it is delivering.
#[derive(Default)]
struct Progress {
    /// The chunk, by the position after it (positions never repeat).
    chunk: Option<Position>,
    /// Lines confirmed (or refused for good) from the chunk's start.
    done: usize,
    refused: Vec<SinkError>,
}

impl Progress {
    /// The first line of `chunk` still to send: 0 for a new chunk, else where the last attempt
    /// at it stopped.
    fn resume(&mut self, chunk: &Delivery<'_>) -> usize {
        if self.chunk != Some(chunk.next) {
            *self = Progress { chunk: Some(chunk.next), ..Progress::default() };
        }
        self.done
    }

    /// Lines up to `end` (exclusive) need not be sent again.
    fn settled(&mut self, end: usize) {
        self.done = end;
    }

    fn refuse(&mut self, error: SinkError) {
        self.refused.push(error);
    }

    /// The chunk has been sent through: Ok, or its refusals as one permanent error of the
    /// first refusal's kind.
    fn finish(&mut self) -> Result<(), SinkError> {
        let refused = std::mem::take(&mut self.refused);
        let Some(first) = refused.first() else { return Ok(()) };
        let mut message =
            refused.iter().take(REFUSALS_SHOWN).map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ");
        if refused.len() > REFUSALS_SHOWN {
            message.push_str(&format!("; and {} more refusals", refused.len() - REFUSALS_SHOWN));
        }
        Err(SinkError::permanent(first.kind.clone(), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(toml_text: &str) -> SinkConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_sink_that_cannot_be_set_up_says_why_as_a_cause_to_match() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent-token");
        let relay = "kind='relay'\naddress='127.0.0.1:1'\n";
        // The configuration, the spool's stream, the cause, what the message says.
        type Case = (String, Option<&'static str>, fn(&OpenError) -> bool, &'static str);
        let cases: [Case; 6] = [
            (relay.into(), None, |e| matches!(e, OpenError::RelayWithoutStream), "a gateway cannot relay"),
            (
                format!("{relay}bearer_token='a'\nbearer_token_file='f'"),
                Some("app"),
                |e| matches!(e, OpenError::TwoTokens),
                "not both",
            ),
            (
                format!("{relay}bearer_token_file='{}'", missing.display()),
                Some("app"),
                |e| matches!(e, OpenError::TokenFile { .. }),
                "absent-token",
            ),
            (
                format!("{relay}[tls]\nca='{}'", missing.display()),
                Some("app"),
                |e| matches!(e, OpenError::Tls(_)),
                "tls: ",
            ),
            (
                "kind='otlp'\nurl='not a url'".into(),
                None,
                |e| matches!(e, OpenError::Url { .. }),
                "url \"not a url\"",
            ),
            (
                "kind='loki'\nurl='http://x'\nlabels={teelog_kind='v'}".into(),
                None,
                |e| matches!(e, OpenError::Labels(_)),
                "labels: ",
            ),
        ];
        for (config, stream, cause, text) in cases {
            let Err(err) = open(&sink(&config), stream) else { panic!("{config}: opened") };
            assert!(cause(&err), "{config}: {err:?}");
            assert!(err.to_string().contains(text), "{config}: {err}");
        }
        let store = dir.path().join("store");
        let _held = teelog_store::Store::open(&store, teelog_store::StoreOptions::default()).unwrap();
        let locked = format!("kind='store'\ndir='{}'", store.display());
        let Err(err) = open(&sink(&locked), None) else { panic!("a locked store opened") };
        assert!(matches!(err, OpenError::Store(StoreError::Locked(_))), "{err:?}");
    }
}
