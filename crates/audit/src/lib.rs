//! Reads teelog batches back from where they are kept and verifies them with the chain verifier
//! of `teelog-core`: batch files and the embedded store ([`files`]), and Grafana Loki
//! ([`loki`]). Both judge batches the same way: one [`Verifier`] built by [`verifier`] from what
//! the auditor trusts and expects, and one rule ([`require_keys`]) for when the auditor, not the
//! input, is at fault. The caller prints the report.
#![forbid(unsafe_code)]

pub mod files;
pub mod html;
pub mod loki;
pub mod pool;
pub mod tsa;

use teelog_core::batch::HeaderError;
use teelog_core::timestamp::UnixNanos;
use teelog_core::verify::InstanceRules;
use teelog_core::{Freshness, Report, Verifier, VerifyOptions};
use teelog_trust::{Trust, TrustError};

pub use files::Source;
pub use loki::{LokiAudit, LokiRead, Progress, Summary};

/// Why an audit could not be carried out: the auditor's usage errors and unreadable input. What
/// the batches themselves get wrong is never an error here but a finding in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file of what the auditor trusts could not be loaded.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// `--expect-measurement` was given empty.
    #[error("--expect-measurement: give the measurement, in hex")]
    EmptyMeasurement,
    /// An `--expect-stream` name is not a valid stream name, or the instance it pins not an
    /// epoch id.
    #[error("--expect-stream {given}")]
    StreamName {
        /// The argument as given.
        given: String,
        /// What is wrong with it.
        #[source]
        source: HeaderError,
    },
    /// `--instances` was given 0.
    #[error("--instances: a stream has at least one instance")]
    NoInstances,
    /// No input was named.
    #[error("nothing to verify: give batch files, `-` for stdin, or --store DIR")]
    NothingToVerify,
    /// A batch file (or stdin) could not be read.
    #[error("cannot read {name}")]
    Read {
        /// The file's path, or `-` for stdin.
        name: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A store directory could not be listed.
    #[error(transparent)]
    StoreDir(teelog_store::StoreError),
    /// The threads that check lines could not be started.
    #[error("cannot start the verifier's threads")]
    Threads(#[source] std::io::Error),
    /// A store directory holds no segment file: most likely the wrong directory.
    #[error("{dir}: no store segments here")]
    NoSegments {
        /// The directory, as given.
        dir: String,
    },
    /// A store segment could not be opened or read (or is not a regular file).
    #[error("cannot read {name}")]
    Store {
        /// The segment's path.
        name: String,
        /// What the store said.
        #[source]
        source: teelog_store::StoreError,
    },
    /// The batches need keys that the auditor did not give: a usage error, not evidence of
    /// forgery.
    #[error("batches are signed by keys that no attestation document binds ({keys}): pass --pubkey FILE with each signer's public key (e.g. public-key.pem of its identity), or --trust-root for attested batches")]
    KeysNeeded {
        /// The ids of the keys needed, comma-separated (the first ones, then "…").
        keys: String,
    },
    /// Reading from Loki failed.
    #[error(transparent)]
    Loki(#[from] loki::LokiAuditError),
}

/// What the auditor expects of the batches, besides what they trust.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The code measurement every batch must carry (hex; for seed-format batches, their
    /// tee_measurement text).
    pub measurement: Option<String>,
    /// The verification time: freshness is judged at it, and a batch sealed later than it by
    /// more than `max_skew` is a finding.
    pub now: UnixNanos,
    /// How far (nanoseconds) a batch's seal time may lie after `now` before it is a finding.
    pub max_skew: UnixNanos,
    /// A stream whose newest batch is older than this (at `now`) is `stale_stream`.
    pub max_silence: Option<UnixNanos>,
    /// Streams that must be present: `NAME`, or `NAME=EPOCH` for the instance of NAME that
    /// starts with epoch EPOCH (docs/FORMAT.md §5.5), which pins NAME's instances.
    pub streams: Vec<String>,
    /// How many instances a stream neither pinned nor named by the policy may have (default 1).
    pub max_instances: Option<u64>,
    /// Input with no batch at all is OK.
    pub allow_empty: bool,
    /// The report carries a timeline of which code produced which batches, policy or not.
    pub timeline: bool,
}

/// The verifier for `trust` and `expect`, as `teelog verify` and `teelog audit` use it.
pub fn verifier(trust: Trust, expect: &Expectations) -> Result<Verifier, AuditError> {
    let Trust { keys, policy, attestation } = trust;
    Ok(Verifier::new(options(keys, policy, expect)?).with_attestation(Box::new(attestation)))
}

/// The verify options for the trusted `keys`, the measurement `policy` and `expect`.
pub fn options(
    keys: Vec<teelog_core::PublicKey>,
    policy: Option<teelog_core::policy::Policy>,
    expect: &Expectations,
) -> Result<VerifyOptions, AuditError> {
    // Hex for teelog headers (compared in lower case); any text for the seed's tee_measurement.
    let measurement = match expect.measurement.as_deref().map(str::trim) {
        Some("") => return Err(AuditError::EmptyMeasurement),
        other => other.map(str::to_ascii_lowercase),
    };
    let mut streams = Vec::new();
    let mut instances = InstanceRules {
        max_instances: match expect.max_instances {
            Some(0) => return Err(AuditError::NoInstances),
            n => n,
        },
        ..InstanceRules::of_policy(policy.as_ref())
    };
    for given in &expect.streams {
        let refused = |source| AuditError::StreamName { given: given.clone(), source };
        let (name, instance) = match given.split_once('=') {
            Some((name, epoch)) => (name, Some(teelog_core::batch::normalize_epoch(epoch).map_err(refused)?)),
            None => (given.as_str(), None),
        };
        teelog_core::batch::check_stream_name(name).map_err(refused)?;
        match instance {
            Some(epoch) => {
                instances.pinned.entry(name.to_string()).or_default().insert(epoch);
            }
            None => streams.push(name.to_string()),
        }
    }
    let options = VerifyOptions {
        trusted_keys: keys,
        expect_measurement: measurement,
        policy,
        freshness: expect.max_silence.map(|max_silence| Freshness { now: expect.now, max_silence }),
        now: Some(expect.now),
        max_skew: Some(expect.max_skew),
        allow_empty: expect.allow_empty,
        expect_streams: streams,
        timeline: expect.timeline,
        instances,
    };
    Ok(options)
}

/// A report in which no batch verified, whose batches need trusted keys the auditor did not
/// give, is the auditor's usage error, not evidence of forgery: an error that says which keys to
/// pass, instead of a verdict. Where some batches verified, a line signed by an unknown key stays
/// a finding: forged lines must not pass for the auditor's mistake.
pub fn require_keys(report: &Report, pubkeys_given: bool) -> Result<(), AuditError> {
    if pubkeys_given || report.keys_needed.is_empty() || !report.trust.is_empty() {
        return Ok(());
    }
    let mut keys = report.keys_needed.join(", ");
    if report.keys_needed.len() >= teelog_core::verify::MAX_LISTED {
        keys.push_str(", …");
    }
    Err(AuditError::KeysNeeded { keys })
}
