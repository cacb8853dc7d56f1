//! `teelog ship --config FILE`: the daemon's TOML configuration. Unknown keys are errors, and
//! every error names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use teelog_deliver::config::{
    check_sinks, duration, load_checked, optional_duration, ConfigError, MetricsConfig, SinkConfig,
};

use teelog_deliver::tls::TlsConfig;

use crate::pipeline::{PipelineOptions, WhenFull};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity directory made by `teelog keygen`.
    pub identity: PathBuf,
    /// The stream the batches are signed for (default `default`).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Public keys (PEM files) whose batches a new epoch may link to: an earlier signer's of
    /// the stream (docs/FORMAT.md §5.3). The identity's own key is always trusted.
    #[serde(default)]
    pub trust_keys: Vec<PathBuf>,
    /// Roots (PEM or DER files) under which an attestation document in the spool vouches for the
    /// key it binds, beyond the pinned AWS root: an earlier dev identity's dev root, a TPM
    /// enrollment CA.
    #[serde(default)]
    pub trust_roots: Vec<PathBuf>,
    /// `[batch]`: when a batch is sealed.
    #[serde(default)]
    pub batch: BatchConfig,
    /// `[queue]`: records waiting to be sealed, and what happens when it is full.
    #[serde(default)]
    pub queue: QueueConfig,
    /// `[spool]`: where signed batches wait for the sinks.
    pub spool: SpoolConfig,
    /// `[sources]`: where records come from.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// `[metrics]`: the Prometheus endpoint, if any.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// `[[sinks]]`: where the spool is delivered.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// `[start]`: where a new epoch without chain state learns the head it links to.
    #[serde(default)]
    pub start: StartConfig,
    /// When a record counts as taken (an OTLP export answered, a file position saved): `local`
    /// once its batch is in the spool, `remote` once every relay sink's gateway has it
    /// durably. Default: `remote` when there is a relay sink and the spool is on tmpfs or the
    /// identity is a nitro one (an enclave's "disk" is gone at restart), else `local`.
    #[serde(default)]
    pub ack: Option<AckMode>,
    /// `[timestamp]`: RFC 3161 tokens over the newest head, obtained at an interval and sealed
    /// into the chain (docs/FORMAT.md §16.2, docs/SHIP.md).
    #[serde(default)]
    pub timestamp: Option<TimestampConfig>,
}

/// `[timestamp]`: every `every`, when batches were sealed since the last token, the shipper
/// asks the TSA at `tsa` for a token over its newest head's header hash and signs it into its
/// next batch as a timestamp notice: later batches then prove they were sealed after the
/// token's time, and the head before it that it existed by then.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// The TSA's URL (HTTP POST of a `TimeStampReq`).
    pub tsa: String,
    /// How often (default 10 min).
    #[serde(default = "default_timestamp_every", deserialize_with = "duration")]
    pub every: Duration,
}

fn default_timestamp_every() -> Duration {
    Duration::from_secs(600)
}

/// When a record counts as taken (docs/SHIP.md, "Acknowledgement").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// Once its batch is fsynced in the spool.
    Local,
    /// Once every relay sink's gateway has acknowledged its batch (durable in its spool).
    Remote,
}

/// `[start]`: a shipper that starts a new epoch without chain state of its own (none saved, or
/// a nitro identity, whose key is new at every start) asks its relay sinks' gateways where the
/// stream stands, and links to the head they hold (docs/FORMAT.md §5.3, §14.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StartConfig {
    /// What to do when no gateway answers within `wait`, or a gateway holds several heads.
    pub gateway_head: GatewayHeadMode,
    /// How long to keep asking an unreachable gateway (default 30 s).
    #[serde(deserialize_with = "duration")]
    pub wait: Duration,
    /// For one of several signers on the stream (replicas, docs/FORMAT.md §5.5): the instance
    /// this one continues, by its genesis epoch, so that a start without chain state links to
    /// that instance's head, not to another replica's; `"new"` for a replica's first start,
    /// which begins an instance of its own and links to nothing the gateway holds.
    pub instance: Option<String>,
}

impl Default for StartConfig {
    fn default() -> Self {
        Self { gateway_head: GatewayHeadMode::Require, wait: Duration::from_secs(30), instance: None }
    }
}

/// What `start.instance` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instance<'a> {
    /// The stream's only chain.
    Only,
    /// A new instance: a genesis epoch.
    New,
    /// The instance from this genesis epoch.
    Of(&'a str),
}

impl StartConfig {
    /// `instance`, read.
    pub fn instance(&self) -> Instance<'_> {
        match self.instance.as_deref() {
            None => Instance::Only,
            Some("new") => Instance::New,
            Some(epoch) => Instance::Of(epoch),
        }
    }
}

/// See [`StartConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayHeadMode {
    /// Refuse to start: a head found only in local storage may be a tail someone cut.
    Require,
    /// Link to the newest head local storage vouches for, and say so in the log.
    Prefer,
}

fn default_stream() -> String {
    "default".into()
}

/// `[batch]`: a batch is sealed at whichever limit comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Records per batch (default 4096).
    pub max_records: u64,
    /// Bytes of a batch line (default 4 MiB).
    pub max_bytes: usize,
    /// How long a record may wait to be sealed (default 200 ms).
    #[serde(deserialize_with = "duration")]
    pub max_delay: Duration,
    /// An empty signed batch after this long idle; `"off"` for none.
    #[serde(deserialize_with = "optional_duration")]
    pub heartbeat: Option<Duration>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        let d = PipelineOptions::default();
        Self {
            max_records: d.max_records,
            max_bytes: d.max_bytes,
            max_delay: d.max_delay,
            heartbeat: d.heartbeat,
        }
    }
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Bytes of records held in memory waiting to be sealed (default 64 MiB).
    pub max_bytes: usize,
    /// What producers meet when the queue is full (default `block`).
    pub when_full: WhenFull,
    /// How long a blocked OTLP caller waits for room before it is told to retry (default 5 s).
    #[serde(deserialize_with = "duration")]
    pub max_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = PipelineOptions::default();
        Self { max_bytes: d.queue_bytes, when_full: d.when_full, max_wait: d.max_wait }
    }
}

/// `[spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// The spool's directory (an embedded store, with each sink's cursor beside it).
    pub dir: PathBuf,
    /// Undelivered bytes allowed before producers wait; 0 for no bound.
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
    /// Keep delivered segments: the spool is then also an embedded store.
    #[serde(default)]
    pub keep: bool,
    /// Segments rotate at this size (default 64 MiB).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// How long a stopping daemon goes on delivering what is spooled (default 10 s). A daemon
    /// that ends with its input (`--stdin`) and has lines undelivered then exits non-zero.
    #[serde(default = "default_drain_timeout", deserialize_with = "duration")]
    pub drain_timeout: Duration,
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_spool_bytes() -> u64 {
    PipelineOptions::default().spool_bytes
}

fn default_segment_bytes() -> u64 {
    teelog_store::DEFAULT_SEGMENT_BYTES
}

/// `[sources]`: at least one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Read NDJSON records from standard input; the daemon ends when it closes and no other
    /// source is configured.
    pub stdin: bool,
    /// OTLP logs over HTTP (`/v1/logs`, protobuf or JSON).
    pub otlp_http: Option<SocketAddr>,
    /// OTLP logs over gRPC.
    pub otlp_grpc: Option<SocketAddr>,
    /// Largest OTLP request body accepted (after decompression).
    pub max_request_bytes: usize,
    /// Bytes all OTLP requests being taken may hold at once: bodies, inflated bodies, and the
    /// records they map to. A request that needs more than this alone is refused for good.
    pub max_inflight_bytes: usize,
    /// A file holding the bearer token the OTLP receivers ask for (`Authorization: Bearer …`,
    /// over HTTP and in gRPC metadata), read at start-up with surrounding white space trimmed.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS on both OTLP receivers (`[sources.tls]`: `cert`, `key`, and `client_ca` to ask
    /// clients for certificates, mTLS).
    pub tls: Option<TlsConfig>,
    /// Bind the OTLP receivers without a client credential (a token or a client certificate),
    /// or the metrics listener, to an address beyond loopback: anyone who reaches the port can
    /// then sign records into the stream, or read the metrics.
    pub allow_remote_plaintext: bool,
    /// NDJSON files to follow (across rotation); each one's position is kept in the spool.
    pub files: Vec<PathBuf>,
    /// How often followed files are looked at for new lines and rotation.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Refuse input lines longer than this.
    pub max_line_bytes: usize,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            stdin: false,
            otlp_http: None,
            otlp_grpc: None,
            max_request_bytes: 16 << 20,
            max_inflight_bytes: 64 << 20,
            bearer_token_file: None,
            tls: None,
            allow_remote_plaintext: false,
            files: Vec::new(),
            poll_interval: Duration::from_millis(200),
            max_line_bytes: 1 << 20,
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_checked(path, Self::check)
    }

    /// What the types cannot say.
    pub fn check(&self) -> Result<(), String> {
        teelog_core::batch::check_stream_name(&self.stream).map_err(|e| format!("stream: {e}"))?;
        if let Instance::Of(epoch) = self.start.instance() {
            // Sent as it is written: it must already be the epoch's one spelling.
            if teelog_core::batch::normalize_epoch(epoch).ok().as_deref() != Some(epoch) {
                return Err(format!(
                    "start.instance {epoch:?}: the genesis epoch of this replica's instance (32 lower-case hex digits, as its first start logged it), or \"new\" for its first start"
                ));
            }
        }
        // A zero here would not mean "no limit": it would refuse every line, every request or
        // every segment, or spin, so the shipper would run and sign nothing.
        let s = &self.sources;
        for (key, zero) in [
            ("batch.max_records", self.batch.max_records == 0),
            ("batch.max_bytes", self.batch.max_bytes == 0),
            ("queue.max_bytes", self.queue.max_bytes == 0),
            ("spool.segment_bytes", self.spool.segment_bytes == 0),
            ("sources.max_line_bytes", s.max_line_bytes == 0),
            ("sources.max_request_bytes", s.max_request_bytes == 0),
            ("sources.max_inflight_bytes", s.max_inflight_bytes == 0),
        ] {
            if zero {
                return Err(format!("{key}: must be more than 0"));
            }
        }
        let max_line = teelog_core::batch::MAX_BATCH_LINE;
        if self.batch.max_bytes > max_line {
            return Err(format!(
                "batch.max_bytes: at most {max_line}, the longest batch line `teelog verify` reads by default"
            ));
        }
        if s.max_inflight_bytes < s.max_request_bytes {
            return Err("sources.max_inflight_bytes: must be at least sources.max_request_bytes".into());
        }
        // Beyond loopback, whoever reaches a receiver that asks for no credential could sign
        // records into the stream; the metrics listener asks for none at all.
        let credential =
            s.bearer_token_file.is_some() || s.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let remote = [
            ("sources.otlp_http", s.otlp_http.filter(|_| !credential)),
            ("sources.otlp_grpc", s.otlp_grpc.filter(|_| !credential)),
            ("metrics.listen", self.metrics.as_ref().map(|m| m.listen)),
        ];
        if let Some((key, Some(addr))) =
            remote.iter().find(|(_, addr)| addr.is_some_and(|a| !a.ip().is_loopback()))
        {
            if !s.allow_remote_plaintext {
                return Err(format!(
                    "{key}: {addr} is beyond loopback, and this listener asks for no credential; bind it to 127.0.0.1, give sources.bearer_token_file or sources.tls with client_ca (the receivers), or set sources.allow_remote_plaintext = true"
                ));
            }
        }
        if self.ack == Some(AckMode::Remote) && !self.sinks.iter().any(|k| matches!(k, SinkConfig::Relay(_)))
        {
            return Err(
                "ack: \"remote\" needs a sink of kind \"relay\" (the gateway that acknowledges)".into()
            );
        }
        if !s.stdin && s.otlp_http.is_none() && s.otlp_grpc.is_none() && s.files.is_empty() {
            return Err("sources: nothing to read; set stdin, otlp_http, otlp_grpc or files".into());
        }
        let mut files: Vec<&PathBuf> = s.files.iter().collect();
        files.sort();
        if let Some(pair) = files.windows(2).find(|w| w[0] == w[1]) {
            // Two followers of one path would share one saved position and sign its lines twice.
            return Err(format!("sources.files: {} is listed twice", pair[0].display()));
        }
        check_sinks(&self.sinks, self.spool.keep)
    }

    /// The `[batch]`, `[queue]` and `[spool]` settings, as the pipeline takes them.
    pub fn pipeline_options(&self) -> PipelineOptions {
        PipelineOptions {
            max_records: self.batch.max_records,
            max_bytes: self.batch.max_bytes,
            max_delay: self.batch.max_delay,
            heartbeat: self.batch.heartbeat,
            queue_bytes: self.queue.max_bytes,
            when_full: self.queue.when_full,
            max_wait: self.queue.max_wait,
            spool_bytes: self.spool.max_bytes,
            keep_spool: self.spool.keep,
            max_record_bytes: self.sources.max_line_bytes,
            // Resolved by the daemon when not configured (see `Config::ack`).
            remote_ack: self.ack == Some(AckMode::Remote),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teelog_deliver::config::parse_checked;

    fn load(text: &str) -> Result<Config, String> {
        parse_checked(text, Config::check)
    }

    #[test]
    fn start_instance_is_new_or_an_epoch_as_written() {
        let with = |instance: &str| {
            load(&format!("identity = 'i'\n[start]\ninstance = '{instance}'\n[spool]\ndir = 's'\nkeep = true\n[sources]\nstdin = true\n"))
        };
        let epoch = "0123456789abcdef0123456789abcdef";
        assert_eq!(with("new").unwrap().start.instance(), Instance::New);
        assert_eq!(with(epoch).unwrap().start.instance(), Instance::Of(epoch));
        for bad in ["0123", "0123456789ABCDEF0123456789ABCDEF", " 0123456789abcdef0123456789abcdef"] {
            let err = with(bad).unwrap_err();
            assert!(err.contains("start.instance"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn timestamp_takes_a_tsa_and_an_interval_above_zero() {
        let with = |section: &str| {
            load(&format!(
                "identity = 'i'\n[spool]\ndir = 's'\nkeep = true\n[sources]\nstdin = true\n{section}"
            ))
        };
        assert!(with("").unwrap().timestamp.is_none());
        let stamped = with("[timestamp]\ntsa = 'http://tsa.example/tsr'\n").unwrap().timestamp.unwrap();
        assert_eq!(
            (stamped.tsa.as_str(), stamped.every),
            ("http://tsa.example/tsr", Duration::from_secs(600))
        );
        let every = with("[timestamp]\ntsa = 'http://t'\nevery = '30s'\n").unwrap().timestamp.unwrap().every;
        assert_eq!(every, Duration::from_secs(30));
        // The duration reader refuses zero itself, pointing at the key.
        let zero =
            with("[timestamp]\ntsa = 'http://t'\nevery = '0s'\n").map(|c| c.timestamp.map(|t| t.every));
        assert!(zero.as_ref().is_err_and(|e| e.contains("every = '0s'")), "{zero:?}");
        assert!(with("[timestamp]\nevery = '1m'\n").is_err(), "a TSA is required");
        assert!(with("[timestamp]\ntsa = 'http://t'\nurl = 'x'\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn a_full_config_and_its_defaults() {
        let config = load(
            r#"
            identity = "id"
            [batch]
            max_delay = "50ms"
            heartbeat = "off"
            [spool]
            dir = "spool"
            [sources]
            stdin = true
            otlp_http = "127.0.0.1:4318"
            [[sinks]]
            kind = "store"
            dir = "archive"
            "#,
        )
        .unwrap();
        assert_eq!(config.batch.max_delay, Duration::from_millis(50));
        assert_eq!(config.batch.heartbeat, None);
        assert_eq!(config.batch.max_records, 4096);
        assert_eq!(config.queue.when_full, WhenFull::Block);
        assert_eq!(config.sinks[0].name(), "store");
    }

    #[test]
    fn errors_name_the_key() {
        for (text, expect) in [
            ("identity='i'\n[spool]\ndir='s'\nkeep=true\n[sources]\nstdin=true\nbogus=1", "bogus"),
            ("identity='i'\n[spool]\ndir='s'\nkeep=true\n[sources]\nstdin=true\n[batch]\nmax_delay='soon'", "max_delay"),
            ("identity='i'\n[spool]\ndir='s'\nkeep=true\n[sources]\notlp_http='localhost'", "otlp_http"),
            ("identity='i'\n[spool]\ndir='s'\nkeep=true", "sources: nothing to read"),
            ("identity='i'\n[spool]\ndir='s'\n[sources]\nstdin=true", "spool.keep"),
            ("identity='i'\n[spool]\ndir='s'\n[sources]\nstdin=true\n[queue]\nwhen_full='panic'", "when_full"),
            ("[spool]\ndir='s'", "identity"),
            (
                "identity='i'\n[spool]\ndir='s'\n[sources]\nstdin=true\n[[sinks]]\nkind='store'\ndir='a'\n[[sinks]]\nkind='store'\ndir='b'",
                "two sinks are named",
            ),
            (
                "identity='i'\n[spool]\ndir='s'\nkeep=true\n[sources]\nfiles=['a.log','b.log','a.log']",
                "sources.files: a.log is listed twice",
            ),
            ("ack='remote'\nidentity='i'\n[spool]\ndir='s'\nkeep=true\n[sources]\nstdin=true", "ack: \"remote\" needs"),
            ("ack='later'\nidentity='i'\n[spool]\ndir='s'\nkeep=true\n[sources]\nstdin=true", "ack"),
            ("identity='i'\n[spool]\ndir='s'\nkeep=true\n[sources]\nstdin=true\n[start]\ngateway_head='maybe'", "gateway_head"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
