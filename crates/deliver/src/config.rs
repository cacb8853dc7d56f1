//! The parts of a daemon's TOML configuration that the shipper and the gateway share: the
//! sinks, the metrics listener, and loading a file checked for what its types cannot say.
//! Unknown keys are errors, and every error names the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use teelog_relay::address::RelayAddress;

use crate::sinks::OpenError;

/// `[metrics]`: where the Prometheus text exposition is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The address to listen on, e.g. `127.0.0.1:9464`; `/metrics` answers there.
    pub listen: SocketAddr,
}

/// One `[[sinks]]` entry: where spooled batch lines are delivered, chosen by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Another embedded store directory.
    Store {
        /// The sink's name (default `store`): its cursor file and metrics label.
        #[serde(default)]
        name: Option<String>,
        /// The store's directory.
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
/// `kind = "relay"`: a gateway's relay listener.
pub struct RelaySinkConfig {
    /// The sink's name (default `relay`).
    #[serde(default)]
    pub name: Option<String>,
    /// The gateway's relay listener: `host:port` (TCP), or `vsock://CID:PORT` (AF_VSOCK; a Nitro
    /// enclave reaches its parent at CID 3).
    pub address: String,
    /// The token the gateway asks for in the hello; at most one of this and the file.
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

/// A relay sink's `tls` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTlsConfig {
    /// Trust gateway certificates that chain to these roots (PEM); default: the system's roots.
    pub ca: Option<PathBuf>,
    /// This shipper's certificate chain and key (PEM), for a gateway that asks for one (mTLS).
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert` (PEM); the two are given together or not at all.
    pub client_key: Option<PathBuf>,
    /// The name the gateway's certificate must carry; default: the host of `address` (a vsock
    /// address has none: give it).
    pub server_name: Option<String>,
}

/// The name a relay sink checks the gateway's certificate against: `server_name`, else the host
/// of the address (vsock addresses have none).
pub(crate) fn tls_server_name<'a>(
    tls: &'a RelayTlsConfig,
    address: &'a RelayAddress,
) -> Result<&'a str, OpenError> {
    tls.server_name.as_deref().or(address.host()).ok_or_else(|| {
        OpenError::Tls(format!(
            "give server_name: {address} has no host name to check the gateway's certificate against"
        ))
    })
}

fn default_relay_timeout() -> Duration {
    Duration::from_secs(30)
}

fn one_token(inline: &Option<Secret>, file: &Option<PathBuf>) -> Result<(), OpenError> {
    if inline.is_some() && file.is_some() {
        return Err(OpenError::TwoTokens);
    }
    Ok(())
}

/// The bearer token a sink is configured with, given inline or in a file.
pub fn bearer_token(inline: &Option<Secret>, file: &Option<PathBuf>) -> Result<Option<String>, OpenError> {
    one_token(inline, file)?;
    match (inline, file) {
        (Some(token), _) => Ok(Some(token.0.clone())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|error| OpenError::TokenFile { path: path.clone(), error }),
        (None, None) => Ok(None),
    }
}

/// `kind = "loki"`: Grafana Loki's push API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiSinkConfig {
    /// The sink's name (default `loki`).
    #[serde(default)]
    pub name: Option<String>,
    /// Loki's (or its gateway's) root, e.g. `http://127.0.0.1:3100`.
    pub url: String,
    /// The `job` label of every stream (default `teelog`); an auditor reading back gives it too.
    #[serde(default = "default_job")]
    pub job: String,
    /// Sent as `X-Scope-OrgID`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Static index labels added to every stream; keep them few and bounded.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer`; at most one of this and the file.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token (read at start-up, surrounding white space trimmed).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// How long one push may take before it is tried again.
    #[serde(default = "default_loki_timeout", deserialize_with = "timeout")]
    pub timeout: Duration,
    /// The longest entry pushed: at most Loki's `max_line_size`.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

/// `kind = "otlp"`: an OTLP/HTTP logs endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// The sink's name (default `otlp`).
    #[serde(default)]
    pub name: Option<String>,
    /// The full endpoint, e.g. `http://127.0.0.1:4318/v1/logs` or Loki's `…/otlp/v1/logs`.
    pub url: String,
    /// Added to every request (e.g. a tenant or an API key header).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Sent as `Authorization: Bearer`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// How long one export may take before it is tried again (default 10 s, as OTLP exporters).
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

/// The smallest `max_line_bytes` taken: a batch entry's header alone can be about 1,100 bytes.
const MIN_LOKI_LINE_BYTES: usize = 4096;

fn default_max_line_bytes() -> usize {
    teelog_loki::layout::DEFAULT_MAX_LINE_BYTES
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

    /// The sink as a person recognises it in the log: its name, kind and where it delivers.
    pub fn describe(&self) -> String {
        let (kind, to) = match self {
            SinkConfig::Store { dir, .. } => ("store", dir.display().to_string()),
            SinkConfig::Loki(c) => ("loki", without_userinfo(&c.url)),
            SinkConfig::Otlp(c) => ("otlp", without_userinfo(&c.url)),
            SinkConfig::Relay(c) => ("relay", c.address.clone()),
        };
        format!("{} ({kind} {to})", self.name())
    }

    /// What the types cannot say about one sink.
    fn check(&self) -> Result<(), String> {
        match self {
            SinkConfig::Store { .. } => Ok(()),
            SinkConfig::Loki(c) => {
                check_url(&c.url)?;
                one_token(&c.bearer_token, &c.bearer_token_file).map_err(|e| e.to_string())?;
                if c.max_line_bytes < MIN_LOKI_LINE_BYTES {
                    return Err(format!(
                        "max_line_bytes {}: below {MIN_LOKI_LINE_BYTES}, not even a batch entry's \
                         signed header fits",
                        c.max_line_bytes
                    ));
                }
                crate::sinks::loki::layout(c).map(drop).map_err(|e| format!("labels: {e}"))
            }
            SinkConfig::Otlp(c) => check_url(&c.url),
            SinkConfig::Relay(c) => {
                one_token(&c.bearer_token, &c.bearer_token_file).map_err(|e| e.to_string())?;
                if let Some(tls) = &c.tls {
                    if tls.client_cert.is_some() != tls.client_key.is_some() {
                        return Err("tls: give client_cert and client_key together".into());
                    }
                }
                let address = RelayAddress::parse(&c.address).map_err(|e| e.to_string())?;
                match &c.tls {
                    Some(tls) => tls_server_name(tls, &address).map(drop).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
        }
    }
}

/// `url` without a user name or password, which do not belong in a log.
fn without_userinfo(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => url.to_string(),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("url {url:?}: scheme {other:?}; use http or https")),
    }
}

/// Why a configuration file was refused; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not TOML of the configuration's shape, or a value its checks refuse; names the key.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
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
    teelog_core::timestamp::parse_duration(text)
        .map(|ns| Duration::from_nanos(ns.unsigned_abs()))
        .map_err(|e| e.to_string())
}

/// For `#[serde(deserialize_with)]`: a duration given as text (`"200ms"`, `"10s"`).
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// A sink's `timeout`. Errors inside an internally tagged sink table lose the key's name in
/// serde's report, so the message carries it.
fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(&String::deserialize(d)?).map_err(|e| serde::de::Error::custom(format!("timeout: {e}")))
}

/// For `#[serde(deserialize_with)]`: [`duration`], or `"off"` for none.
pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon configuration that is only its sinks.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sinks {
        #[serde(default)]
        keep: bool,
        #[serde(default)]
        sinks: Vec<SinkConfig>,
    }

    fn load(text: &str) -> Result<Sinks, String> {
        parse_checked(text, |c: &Sinks| check_sinks(&c.sinks, c.keep))
    }

    #[test]
    fn loki_and_otlp_sinks_and_their_defaults() {
        let config = load(
            r#"
            [[sinks]]
            kind = "loki"
            url = "http://127.0.0.1:3100"
            tenant = "acme"
            bearer_token = "s3cret"
            timeout = "5s"
            labels = { env = "prod" }
            [[sinks]]
            kind = "otlp"
            url = "https://collector:4318/v1/logs"
            headers = { x-api-key = "k" }
            "#,
        )
        .unwrap();
        let SinkConfig::Loki(loki) = &config.sinks[0] else { panic!("{:?}", config.sinks[0]) };
        assert_eq!((loki.job.as_str(), loki.timeout), ("teelog", Duration::from_secs(5)));
        assert_eq!(loki.labels["env"], "prod");
        assert_eq!(loki.max_line_bytes, 262_144);
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
            (format!("{loki}url='http://x'\nmax_line_bytes=100"), "max_line_bytes 100"),
            ("[[sinks]]\nkind='otlp'\nname='o'\nurl='grpc://x'".into(), r#"sinks: "o": url"#),
            ("[[sinks]]\nkind='otlp'".into(), "url"),
            ("[[sinks]]\nkind='relay'\naddress='gateway'".into(), r#"sinks: "relay": address "gateway""#),
            ("[[sinks]]\nkind='relay'\naddress='vsock://ANY:7400'".into(), "ANY is for a listener"),
            ("[[sinks]]\nkind='relay'\naddress='vsock:3:7400'".into(), r#"address "vsock:3:7400""#),
            (
                "[[sinks]]\nkind='relay'\naddress='vsock://3:7400'\n[sinks.tls]\nca='ca.pem'".into(),
                "tls: give server_name: vsock://3:7400 has no host name",
            ),
            (
                "[[sinks]]\nkind='relay'\naddress='g:1'\n[sinks.tls]\nclient_cert='c.pem'".into(),
                "client_cert and client_key together",
            ),
            (
                "[[sinks]]\nkind='store'\ndir='a'\n[[sinks]]\nkind='store'\ndir='b'".into(),
                "two sinks are named",
            ),
            ("[[sinks]]\nkind='store'\nname='a b'\ndir='a'".into(), "must be letters, digits"),
            ("".into(), "spool.keep"),
        ] {
            let err = load(&sink).unwrap_err();
            assert!(err.contains(expect), "{sink}: {err}");
        }
        assert!(load("keep = true").is_ok(), "a kept spool needs no sink");
    }

    #[test]
    fn load_checked_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        let err = load_checked(&path, |_: &Sinks| Ok(())).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }) && err.to_string().contains("daemon.toml"), "{err}");
        std::fs::write(&path, "[[sinks]]\nkind='loki'\nurl='ftp://x'").unwrap();
        let err = load_checked(&path, |c: &Sinks| check_sinks(&c.sinks, c.keep)).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{}: sinks: ", path.display())), "{err}");
    }
}
