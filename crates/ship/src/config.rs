//! `teelog ship --config FILE`: the daemon's TOML configuration. Unknown keys are errors, and
//! every error names the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::pipeline::{PipelineOptions, WhenFull};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity directory made by `teelog keygen`.
    pub identity: PathBuf,
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
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    pub spool: SpoolConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

fn default_stream() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub max_records: u64,
    pub max_bytes: usize,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub max_bytes: usize,
    pub when_full: WhenFull,
    #[serde(deserialize_with = "duration")]
    pub max_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = PipelineOptions::default();
        Self { max_bytes: d.queue_bytes, when_full: d.when_full, max_wait: d.max_wait }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Undelivered bytes allowed before producers wait; 0 for no bound.
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
    /// Keep delivered segments: the spool is then also an embedded store.
    #[serde(default)]
    pub keep: bool,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

fn default_spool_bytes() -> u64 {
    PipelineOptions::default().spool_bytes
}

fn default_segment_bytes() -> u64 {
    teelog_store::DEFAULT_SEGMENT_BYTES
}

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
            files: Vec::new(),
            poll_interval: Duration::from_millis(200),
            max_line_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Another embedded store directory.
    Store {
        #[serde(default)]
        name: Option<String>,
        dir: PathBuf,
    },
    /// Grafana Loki's push API, in the teelog layout (docs/LOKI.md).
    Loki(LokiSinkConfig),
    /// An OTLP/HTTP logs endpoint (docs/FORMAT.md §13.3).
    Otlp(OtlpSinkConfig),
    /// A `teelog gateway`'s relay listener (docs/FORMAT.md §14).
    Relay(RelaySinkConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySinkConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// The gateway's relay listener, `host:port`.
    pub address: String,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token (read at start-up, surrounding white space trimmed).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// How long to wait for the connection, the welcome, or an acknowledgement.
    #[serde(default = "default_relay_timeout", deserialize_with = "timeout")]
    pub timeout: Duration,
    /// Speak TLS to the gateway (its `listen.tls`).
    #[serde(default)]
    pub tls: Option<RelayTlsConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTlsConfig {
    /// Trust gateway certificates that chain to these roots (PEM); default: the system's roots.
    pub ca: Option<PathBuf>,
    /// This shipper's certificate chain and key (PEM), for a gateway that asks for one (mTLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name the gateway's certificate must carry; default: the host of `address`.
    pub server_name: Option<String>,
}

fn default_relay_timeout() -> Duration {
    Duration::from_secs(30)
}

fn one_token(inline: &Option<Secret>, file: &Option<PathBuf>) -> Result<(), String> {
    if inline.is_some() && file.is_some() {
        return Err("give bearer_token or bearer_token_file, not both".into());
    }
    Ok(())
}

/// The bearer token a sink is configured with, given inline or in a file.
pub fn bearer_token(inline: &Option<Secret>, file: &Option<PathBuf>) -> Result<Option<String>, String> {
    one_token(inline, file)?;
    match (inline, file) {
        (Some(token), _) => Ok(Some(token.0.clone())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| format!("bearer_token_file {}: {e}", path.display())),
        (None, None) => Ok(None),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiSinkConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Loki's (or its gateway's) root, e.g. `http://127.0.0.1:3100`.
    pub url: String,
    #[serde(default = "default_job")]
    pub job: String,
    /// Sent as `X-Scope-OrgID`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Static index labels added to every stream; keep them few and bounded.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token (read at start-up, surrounding white space trimmed).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default = "default_loki_timeout", deserialize_with = "timeout")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// The full endpoint, e.g. `http://127.0.0.1:4318/v1/logs` or Loki's `…/otlp/v1/logs`.
    pub url: String,
    /// Added to every request (e.g. a tenant or an API key header).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default = "default_otlp_timeout", deserialize_with = "timeout")]
    pub timeout: Duration,
    /// Resource attributes of every request; `service.name` is `teelog` unless set here
    /// (Loki's OTLP endpoint makes it the `service_name` label).
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
}

/// A credential from the configuration: shown as `***` wherever the configuration is printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn default_job() -> String {
    teelog_loki::layout::DEFAULT_JOB.into()
}

fn default_loki_timeout() -> Duration {
    teelog_loki::ClientOptions::default().timeout
}

/// The OTLP exporter default (OTEL_EXPORTER_OTLP_TIMEOUT).
fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkConfig {
    /// The sink's name: its cursor file and its metrics label.
    pub fn name(&self) -> String {
        let (name, default) = match self {
            SinkConfig::Store { name, .. } => (name, "store"),
            SinkConfig::Loki(c) => (&c.name, "loki"),
            SinkConfig::Otlp(c) => (&c.name, "otlp"),
            SinkConfig::Relay(c) => (&c.name, "relay"),
        };
        name.clone().unwrap_or_else(|| default.into())
    }

    /// What the types cannot say about one sink.
    fn check(&self) -> Result<(), String> {
        match self {
            SinkConfig::Store { .. } => Ok(()),
            SinkConfig::Loki(c) => {
                check_url(&c.url)?;
                one_token(&c.bearer_token, &c.bearer_token_file)?;
                crate::sinks::loki::layout(c).map(drop).map_err(|e| format!("labels: {e}"))
            }
            SinkConfig::Otlp(c) => check_url(&c.url),
            SinkConfig::Relay(c) => {
                one_token(&c.bearer_token, &c.bearer_token_file)?;
                if let Some(tls) = &c.tls {
                    if tls.client_cert.is_some() != tls.client_key.is_some() {
                        return Err("tls: give client_cert and client_key together".into());
                    }
                }
                match c.address.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
                    _ => Err(format!("address {:?}: give host:port", c.address)),
                }
            }
        }
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("url {url:?}: scheme {other:?}; use http or https")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_checked(path, Self::check)
    }

    /// What the types cannot say.
    pub fn check(&self) -> Result<(), String> {
        teelog_core::batch::check_stream_name(&self.stream).map_err(|e| format!("stream: {e}"))?;
        if self.batch.max_records == 0 {
            return Err("batch.max_records: must be at least 1".into());
        }
        let max_line = teelog_core::batch::MAX_BATCH_LINE;
        if self.batch.max_bytes > max_line {
            return Err(format!(
                "batch.max_bytes: at most {max_line}, the longest batch line `teelog verify` reads by default"
            ));
        }
        let s = &self.sources;
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
        }
    }
}

/// A TOML configuration from `text`, checked by `check` for what its types cannot say.
pub fn parse_checked<T: DeserializeOwned>(
    text: &str,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, String> {
    let config: T = toml::from_str(text).map_err(|e| e.to_string())?;
    check(&config)?;
    Ok(config)
}

/// [`parse_checked`] on the file at `path`; errors name the file.
pub fn load_checked<T: DeserializeOwned>(
    path: &Path,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse_checked(&text, check).map_err(|message| ConfigError::Invalid { path: path.into(), message })
}

/// The sinks of a spool (the shipper's or the gateway's): names distinct and usable as file
/// names, each sink's own settings valid, and somewhere for delivered lines to go.
pub fn check_sinks(sinks: &[SinkConfig], keep_spool: bool) -> Result<(), String> {
    if sinks.is_empty() && !keep_spool {
        return Err("sinks: none configured, and spool.keep is false: delivered batches \
                    would be deleted with nowhere to go (add a sink or set spool.keep = true)"
            .into());
    }
    let mut names: Vec<String> = sinks.iter().map(SinkConfig::name).collect();
    names.sort();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("sinks: two sinks are named {:?}; give each a distinct `name`", pair[0]));
    }
    for name in &names {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("sinks: name {name:?} must be letters, digits, - and _"));
        }
    }
    for sink in sinks {
        sink.check().map_err(|e| format!("sinks: {:?}: {e}", sink.name()))?;
    }
    Ok(())
}

fn parse(text: &str) -> Result<Duration, String> {
    teelog_core::timestamp::parse_duration(text).map(|ns| Duration::from_nanos(ns.unsigned_abs()))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// A sink's `timeout`. Errors inside an internally tagged sink table lose the key's name in
/// serde's report, so the message carries it.
fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(&String::deserialize(d)?).map_err(|e| serde::de::Error::custom(format!("timeout: {e}")))
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, String> {
        parse_checked(text, Config::check)
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

    const HEAD: &str = "identity='i'\n[spool]\ndir='s'\n[sources]\nstdin=true\n";

    #[test]
    fn loki_and_otlp_sinks_and_their_defaults() {
        let config = load(&format!(
            r#"{HEAD}
            [[sinks]]
            kind = "loki"
            url = "http://127.0.0.1:3100"
            tenant = "acme"
            bearer_token = "s3cret"
            timeout = "5s"
            labels = {{ env = "prod" }}
            [[sinks]]
            kind = "otlp"
            url = "https://collector:4318/v1/logs"
            headers = {{ x-api-key = "k" }}
            "#
        ))
        .unwrap();
        let SinkConfig::Loki(loki) = &config.sinks[0] else { panic!("{:?}", config.sinks[0]) };
        assert_eq!((loki.job.as_str(), loki.timeout), ("teelog", Duration::from_secs(5)));
        assert_eq!(loki.labels["env"], "prod");
        let SinkConfig::Otlp(otlp) = &config.sinks[1] else { panic!("{:?}", config.sinks[1]) };
        assert_eq!(otlp.timeout, Duration::from_secs(10));
        assert_eq!(otlp.headers["x-api-key"].0, "k");
        assert_eq!(config.sinks.iter().map(SinkConfig::name).collect::<Vec<_>>(), ["loki", "otlp"]);
        // Credentials never show in a printed configuration.
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret") && printed.contains("***"), "{printed}");
    }

    #[test]
    fn sink_errors_name_the_sink_and_key() {
        let loki = "[[sinks]]\nkind='loki'\n";
        for (sink, expect) in [
            (format!("{loki}url='ftp://x'"), r#"sinks: "loki": url "ftp://x": scheme "ftp""#),
            (format!("{loki}url='not a url'"), "url \"not a url\""),
            (format!("{loki}url='http://x'\nlabels={{'a-b'='v'}}"), "labels: label name \"a-b\""),
            (format!("{loki}url='http://x'\nlabels={{teelog_kind='v'}}"), "reserved"),
            (format!("{loki}url='http://x'\nbearer_token='a'\nbearer_token_file='f'"), "not both"),
            (format!("{loki}url='http://x'\nbogus=1"), "bogus"),
            (format!("{loki}url='http://x'\ntimeout='soon'"), "timeout"),
            ("[[sinks]]\nkind='otlp'\nname='o'\nurl='grpc://x'".into(), r#"sinks: "o": url"#),
            ("[[sinks]]\nkind='otlp'".into(), "url"),
        ] {
            let err = load(&format!("{HEAD}{sink}")).unwrap_err();
            assert!(err.contains(expect), "{sink}: {err}");
        }
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
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
