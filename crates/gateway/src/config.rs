//! `teelog gateway --config FILE`: the gateway's TOML configuration. Unknown keys are errors, and
//! every error names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use teelog_core::timestamp::DurationError;
use teelog_deliver::config::{check_sinks, load_checked, ConfigError, MetricsConfig, SinkConfig};
use teelog_deliver::tls::TlsConfig;
use teelog_relay::address::VsockAddress;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `[spool]`: where received lines are kept until every sink has them.
    pub spool: SpoolConfig,
    /// `[listen]`: where shippers send.
    #[serde(default)]
    pub listen: ListenConfig,
    /// `[verify]`: what batches are judged against.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// `[metrics]`: the Prometheus endpoint, if any.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// `[[sinks]]`: where spooled lines are delivered.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// `[checkpoint]`: signed checkpoints of the chain tips spooled (docs/FORMAT.md §17); none:
    /// the gateway signs none.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// How often a checkpoint is signed (of the streams whose tips moved), e.g. "60s"; one is
    /// signed on shutdown too.
    #[serde(default = "default_checkpoint_every")]
    pub every: String,
    /// The gateway's checkpoint key (PKCS#8 PEM); by default `<spool>/checkpoint-key.pem`,
    /// made on first start.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// An RFC 3161 TSA (`http(s)://…`) that stamps each checkpoint; the token goes into the
    /// checkpoint line. A TSA that does not answer costs the checkpoint its token, not the
    /// checkpoint.
    #[serde(default)]
    pub tsa: Option<String>,
}

fn default_checkpoint_every() -> String {
    "60s".into()
}

/// The CID by which a machine reaches its own vsock listeners.
const VMADDR_CID_LOCAL: u32 = 1;

/// `[spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// The spool's directory (an embedded store, with the gateway's state beside it).
    pub dir: PathBuf,
    /// Keep delivered segments: the spool is then also an embedded store of everything received.
    #[serde(default)]
    pub keep: bool,
    /// Segments rotate at this size (default 64 MiB).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

fn vsock_address<'de, D: Deserializer<'de>>(de: D) -> Result<Option<VsockAddress>, D::Error> {
    let text = String::deserialize(de)?;
    VsockAddress::parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn default_segment_bytes() -> u64 {
    teelog_store::DEFAULT_SEGMENT_BYTES
}

/// `[listen]`: at least one of `relay`, `relay_vsock` and `http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// The relay protocol over TCP (docs/FORMAT.md §14).
    pub relay: Option<SocketAddr>,
    /// The relay protocol over AF_VSOCK, `vsock://ANY:PORT` or `vsock://CID:PORT`: where Nitro
    /// enclaves (or other virtual machines) on this host send, beside or instead of `relay`.
    #[serde(deserialize_with = "vsock_address")]
    pub relay_vsock: Option<VsockAddress>,
    /// `POST /v1/batches` with NDJSON batch lines.
    pub http: Option<SocketAddr>,
    /// Largest HTTP request body, and largest relay frame (one line).
    pub max_request_bytes: usize,
    /// Bytes of requests (HTTP bodies, relay frames and the lines taken from them) held in
    /// memory at once across all connections; beyond it, clients wait, then are turned away.
    pub max_buffered_bytes: usize,
    /// How long an HTTP body, or a relay frame once begun, may take to arrive (what it holds of
    /// `max_buffered_bytes` meanwhile is held from everyone else).
    pub request_timeout: String,
    /// A file holding the bearer token clients must present (HTTP `Authorization: Bearer`,
    /// relay hello `token`); none: no token is asked for.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS on both listeners; with `client_ca`, clients must present a certificate (mTLS).
    pub tls: Option<TlsConfig>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            relay: None,
            relay_vsock: None,
            http: None,
            max_request_bytes: 64 << 20,
            max_buffered_bytes: 256 << 20,
            request_timeout: "60s".into(),
            bearer_token_file: None,
            tls: None,
        }
    }
}

/// What a batch is verified against: the same inputs as `teelog verify`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Trusted signing keys (SubjectPublicKeyInfo PEM) for batches without an attestation document.
    pub pubkeys: Vec<PathBuf>,
    /// Roots attestation documents may chain to besides the pinned AWS Nitro root (e.g. a dev root).
    pub trust_roots: Vec<PathBuf>,
    /// Measurement policy (TOML), as for `teelog verify --policy`.
    pub policy: Option<PathBuf>,
    /// Accept attestation documents of debug-mode enclaves, whose memory the host can read.
    pub allow_debug: bool,
    /// A stream silent for longer than this is reported `stale_stream` (e.g. "30s"); none: never.
    pub max_silence: Option<String>,
}

impl GatewayConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_checked(path, Self::check)
    }

    /// What the types cannot say.
    pub fn check(&self) -> Result<(), String> {
        if self.listen.relay.is_none() && self.listen.relay_vsock.is_none() && self.listen.http.is_none() {
            return Err("listen: give relay = \"ADDR:PORT\", relay_vsock = \"vsock://ANY:PORT\" or http = \
                        \"ADDR:PORT\" (or several)"
                .into());
        }
        let (request, buffered) = (self.listen.max_request_bytes, self.listen.max_buffered_bytes);
        if buffered / 2 < request {
            return Err(format!(
                "listen.max_buffered_bytes ({buffered}) must be at least twice listen.max_request_bytes \
                 ({request}): a request is held twice, as it came and as lines"
            ));
        }
        if let Some(text) = &self.verify.max_silence {
            self.max_silence().map_err(|e| format!("verify.max_silence {text:?}: {e}"))?;
        }
        positive_duration("listen.request_timeout", &self.listen.request_timeout)?;
        if let Some(checkpoint) = &self.checkpoint {
            positive_duration("checkpoint.every", &checkpoint.every)?;
        }
        check_sinks(&self.sinks, self.spool.keep)
    }

    /// Refuses listeners anyone beyond this host can reach unless clients must authenticate (a
    /// bearer token, or TLS with client certificates), or `insecure_no_auth` says to go without.
    pub fn check_auth(&self, insecure_no_auth: bool) -> Result<(), String> {
        let listen = &self.listen;
        let authenticated = listen.bearer_token_file.is_some()
            || listen.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some());
        if authenticated || insecure_no_auth {
            return Ok(());
        }
        let mut exposed: Vec<String> = [("relay", listen.relay), ("http", listen.http)]
            .into_iter()
            .filter_map(|(key, addr)| Some((key, addr?)))
            .filter(|(_, addr)| !addr.ip().is_loopback())
            .map(|(key, addr)| format!("listen.{key} = \"{addr}\""))
            .collect();
        // Every enclave or virtual machine on this host can dial a vsock listener; only one on
        // CID 1 (VMADDR_CID_LOCAL) is this machine's alone.
        if let Some(addr) = listen.relay_vsock.filter(|addr| addr.cid != VMADDR_CID_LOCAL) {
            exposed.push(format!("listen.relay_vsock = \"{addr}\""));
        }
        if exposed.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} can be reached from beyond this host, and no client has to authenticate: anyone \
             who can reach it could fill the gateway's spool and Loki. Set \
             listen.bearer_token_file, or listen.tls with client_ca (mTLS), or listen on \
             loopback; --insecure-no-auth starts it anyway",
            exposed.join(" and ")
        ))
    }

    /// The checkpoint key's file: `checkpoint.key`, or the spool's default. None without
    /// `[checkpoint]`.
    pub fn checkpoint_key_path(&self) -> Option<PathBuf> {
        let checkpoint = self.checkpoint.as_ref()?;
        Some(checkpoint.key.clone().unwrap_or_else(|| self.spool.dir.join(crate::checkpoint::KEY_FILE)))
    }

    /// `checkpoint.every` (checked by [`check`](Self::check)); None without `[checkpoint]`.
    pub fn checkpoint_every(&self) -> Option<std::time::Duration> {
        positive_duration("checkpoint.every", &self.checkpoint.as_ref()?.every).ok()
    }

    /// `listen.request_timeout` (checked by [`check`](Self::check)).
    pub fn request_timeout(&self) -> std::time::Duration {
        positive_duration("listen.request_timeout", &self.listen.request_timeout).unwrap_or_default()
    }

    /// `verify.max_silence` in nanoseconds.
    pub fn max_silence(&self) -> Result<Option<i64>, DurationError> {
        self.verify.max_silence.as_deref().map(teelog_core::timestamp::parse_duration).transpose()
    }
}

/// A duration setting that must be longer than 0; the error names `key`.
fn positive_duration(key: &str, text: &str) -> Result<std::time::Duration, String> {
    match teelog_core::timestamp::parse_duration(text) {
        Ok(nanos) if nanos > 0 => Ok(std::time::Duration::from_nanos(nanos.unsigned_abs())),
        Ok(_) => Err(format!("{key} {text:?}: must be longer than 0")),
        Err(e) => Err(format!("{key} {text:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teelog_deliver::config::parse_checked;

    fn load(text: &str) -> Result<GatewayConfig, String> {
        parse_checked(text, GatewayConfig::check)
    }

    #[test]
    fn a_full_config_and_its_defaults() {
        let config = load(
            r#"
            [spool]
            dir = "/var/lib/teelog/gateway"
            [listen]
            relay = "127.0.0.1:7400"
            http = "127.0.0.1:7401"
            [verify]
            trust_roots = ["dev-root.pem"]
            max_silence = "30s"
            [metrics]
            listen = "127.0.0.1:9465"
            [[sinks]]
            kind = "loki"
            url = "http://127.0.0.1:3100"
            [[sinks]]
            kind = "store"
            dir = "/var/lib/teelog/store"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.max_request_bytes, 64 << 20);
        assert_eq!(config.max_silence().unwrap(), Some(30_000_000_000));
        assert_eq!(config.sinks.len(), 2);
        assert!(!config.spool.keep);
        let vsock =
            load("[spool]\ndir = 's'\nkeep = true\n[listen]\nrelay_vsock = 'vsock://ANY:7400'\n").unwrap();
        assert_eq!(vsock.listen.relay_vsock, Some(VsockAddress { cid: u32::MAX, port: 7400 }));
    }

    #[test]
    fn listeners_beyond_loopback_need_authentication() {
        let spool = "[spool]\ndir = 's'\nkeep = true\n";
        let open =
            load(&format!("{spool}[listen]\nrelay = '0.0.0.0:7400'\nhttp = '127.0.0.1:7401'\n")).unwrap();
        let err = open.check_auth(false).unwrap_err();
        assert!(err.contains("listen.relay = \"0.0.0.0:7400\"") && !err.contains("listen.http"), "{err}");
        assert!(err.contains("--insecure-no-auth") && err.contains("bearer_token_file"), "{err}");
        assert!(open.check_auth(true).is_ok());
        let v6 = load(&format!("{spool}[listen]\nhttp = '[::]:7401'\n")).unwrap();
        assert!(v6.check_auth(false).unwrap_err().contains("listen.http"));
        for auth in ["bearer_token_file = 't'\n", "[listen.tls]\ncert = 'c'\nkey = 'k'\nclient_ca = 'ca'\n"] {
            let config = load(&format!("{spool}[listen]\nrelay = '0.0.0.0:7400'\n{auth}")).unwrap();
            assert!(config.check_auth(false).is_ok(), "{auth}");
        }
        // TLS alone says who the gateway is, not who the client is.
        let tls =
            load(&format!("{spool}[listen]\nrelay = '10.0.0.1:7400'\n[listen.tls]\ncert = 'c'\nkey = 'k'\n"))
                .unwrap();
        assert!(tls.check_auth(false).is_err());
        let local = load(&format!("{spool}[listen]\nrelay = '127.0.0.1:7400'\nhttp = '[::1]:1'\n")).unwrap();
        assert!(local.check_auth(false).is_ok());
        // Any enclave or virtual machine on the host can dial a vsock listener, but for CID 1.
        let vsock = load(&format!("{spool}[listen]\nrelay_vsock = 'vsock://ANY:7400'\n")).unwrap();
        let err = vsock.check_auth(false).unwrap_err();
        assert!(err.contains("listen.relay_vsock = \"vsock://ANY:7400\""), "{err}");
        let vsock = load(&format!("{spool}[listen]\nrelay_vsock = 'vsock://1:7400'\n")).unwrap();
        assert!(vsock.check_auth(false).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let spool = "[spool]\ndir = 's'\n";
        let err = load(&format!("{spool}[[sinks]]\nkind = 'store'\ndir = 'x'\n")).unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let err = load(&format!("{spool}[listen]\nhttp = '127.0.0.1:1'\n")).unwrap_err();
        assert!(err.contains("sinks"), "{err}");
        let err = load(&format!("{spool}[listen]\nrelay = 'nowhere'\n")).unwrap_err();
        assert!(err.contains("relay"), "{err}");
        let err = load(&format!("{spool}[listen]\nrelay_vsock = 'vsock://3'\n")).unwrap_err();
        assert!(err.contains("relay_vsock") && err.contains("address \"vsock://3\""), "{err}");
        let err = load(&format!("{spool}[listen]\nrelay_vsock = '127.0.0.1:7400'\n")).unwrap_err();
        assert!(err.contains("give vsock://CID:PORT"), "{err}");
        let err = load(&format!(
            "{spool}[listen]\nhttp = '127.0.0.1:1'\n[verify]\nmax_silence = 'soon'\n[spool2]\n"
        ))
        .unwrap_err();
        assert!(err.contains("spool2"), "{err}");
        let err = load(&format!(
            "{spool}keep = true\n[listen]\nhttp = '127.0.0.1:1'\n[verify]\nmax_silence = 'soon'\n"
        ))
        .unwrap_err();
        assert!(err.contains("max_silence"), "{err}");
        for every in ["'often'", "'0s'"] {
            let err = load(&format!(
                "{spool}keep = true\n[listen]\nhttp = '127.0.0.1:1'\n[checkpoint]\nevery = {every}\n"
            ))
            .unwrap_err();
            assert!(err.contains("checkpoint.every"), "{err}");
        }
        let config =
            load(&format!("{spool}keep = true\n[listen]\nhttp = '127.0.0.1:1'\n[checkpoint]\n")).unwrap();
        assert_eq!(config.checkpoint_every(), Some(std::time::Duration::from_secs(60)));
        assert_eq!(config.checkpoint_key_path(), Some(PathBuf::from("s").join("checkpoint-key.pem")));
    }
}
