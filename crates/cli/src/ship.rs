//! `teelog ship`: the shipper daemon, configured by a TOML file and/or flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use teelog_deliver::config::SinkConfig;
use teelog_ship::config::Config;

#[derive(clap::Args)]
pub struct ShipArgs {
    /// TOML configuration (see docs/SHIP.md); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Identity directory made by `teelog keygen`.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    #[arg(long)]
    pub stream: Option<String>,
    /// Spool directory: every batch is fsynced here before it is acknowledged.
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// Keep delivered spool segments (the spool is then also an embedded store).
    #[arg(long)]
    pub keep_spool: bool,
    /// Read NDJSON records from stdin (the daemon ends with it if nothing else is configured).
    #[arg(long)]
    pub stdin: bool,
    /// Receive OTLP logs over HTTP here (e.g. 127.0.0.1:4318).
    #[arg(long)]
    pub otlp_http: Option<SocketAddr>,
    /// Receive OTLP logs over gRPC here (e.g. 127.0.0.1:4317).
    #[arg(long)]
    pub otlp_grpc: Option<SocketAddr>,
    /// Follow this NDJSON file, across rotation (repeatable; added to `sources.files`).
    #[arg(long, value_name = "PATH")]
    pub file: Vec<PathBuf>,
    /// Deliver to this embedded store directory.
    #[arg(long)]
    pub sink_store: Vec<PathBuf>,
    /// Deliver to Grafana Loki at this root URL (e.g. http://127.0.0.1:3100), with the defaults
    /// of a `kind = "loki"` sink.
    #[arg(long, value_name = "URL")]
    pub sink_loki: Vec<String>,
    /// Deliver over OTLP/HTTP to this endpoint (e.g. http://127.0.0.1:4318/v1/logs), with the
    /// defaults of a `kind = "otlp"` sink.
    #[arg(long, value_name = "URL")]
    pub sink_otlp: Vec<String>,
    /// Relay to a `teelog gateway` at this address (host:port, or vsock://CID:PORT from an
    /// enclave or virtual machine), with the defaults of a `kind = "relay"` sink.
    #[arg(long, value_name = "ADDR")]
    pub sink_relay: Vec<String>,
    /// When a record counts as taken: `local` (in the spool) or `remote` (the relay gateway has
    /// it). Default: `remote` with a relay sink and a spool on tmpfs or a nitro identity.
    #[arg(long, value_name = "MODE")]
    pub ack: Option<String>,
    /// How long a stopping shipper goes on delivering (e.g. 10s); a run that ends with its
    /// input and leaves lines undelivered exits non-zero, saying how many and where.
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Serve Prometheus metrics here (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Heartbeat interval when idle (e.g. 10s), or `off`.
    #[arg(long)]
    pub heartbeat: Option<String>,
    /// Seal a batch at most this long after its first record (e.g. 200ms).
    #[arg(long)]
    pub max_delay: Option<String>,
    #[arg(long)]
    pub max_records: Option<u64>,
    /// The daemon's own log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: tracing::Level,
}

pub fn run(args: &ShipArgs) -> anyhow::Result<ExitCode> {
    let config = config(args)?;
    let summary = crate::daemon::run("teelog-ship", args.log_level, |shutdown| async move {
        anyhow::Ok(teelog_ship::daemon::run(config, shutdown).await?)
    })?;
    eprintln!("teelog: shipped {} records in {} batches", summary.records, summary.batches);
    Ok(ExitCode::SUCCESS)
}

fn config(args: &ShipArgs) -> anyhow::Result<Config> {
    let mut text = String::new();
    if let Some(path) = &args.config {
        text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    let mut table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{}", args.config.as_deref().unwrap_or("flags".as_ref()).display()))?;
    let path = |p: &PathBuf| toml::Value::String(p.display().to_string());
    let mut set = |section: Option<&str>, key: &str, value: toml::Value| -> anyhow::Result<()> {
        let table = match section {
            None => &mut table,
            // A config that made the section a value (`spool = "…"`) cannot take the flag's key.
            Some(name) => table
                .entry(name)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| {
                    format!(
                        "the config's {name:?} is not a table ([{name}]), so a flag cannot set {name}.{key}"
                    )
                })?,
        };
        table.insert(key.into(), value);
        Ok(())
    };
    if let Some(p) = &args.identity {
        set(None, "identity", path(p))?;
    }
    if let Some(s) = &args.stream {
        set(None, "stream", s.clone().into())?;
    }
    if let Some(p) = &args.spool {
        set(Some("spool"), "dir", path(p))?;
    }
    if args.keep_spool {
        set(Some("spool"), "keep", true.into())?;
    }
    if args.stdin {
        set(Some("sources"), "stdin", true.into())?;
    }
    if let Some(a) = args.otlp_http {
        set(Some("sources"), "otlp_http", a.to_string().into())?;
    }
    if let Some(a) = args.otlp_grpc {
        set(Some("sources"), "otlp_grpc", a.to_string().into())?;
    }
    if let Some(a) = args.metrics {
        set(Some("metrics"), "listen", a.to_string().into())?;
    }
    if let Some(d) = &args.heartbeat {
        set(Some("batch"), "heartbeat", d.clone().into())?;
    }
    if let Some(d) = &args.max_delay {
        set(Some("batch"), "max_delay", d.clone().into())?;
    }
    if let Some(mode) = &args.ack {
        set(None, "ack", mode.clone().into())?;
    }
    if let Some(d) = &args.drain_timeout {
        set(Some("spool"), "drain_timeout", d.clone().into())?;
    }
    if let Some(n) = args.max_records {
        set(Some("batch"), "max_records", toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)))?;
    }
    let origin = args.config.as_ref().map_or("the flags".to_string(), |p| p.display().to_string());
    let mut config: Config = table.try_into().with_context(|| format!("{origin}: invalid configuration"))?;
    config.sources.files.extend(args.file.iter().cloned());
    for dir in &args.sink_store {
        let name = format!("store-{}", config.sinks.len() + 1);
        config.sinks.push(SinkConfig::Store { name: Some(name), dir: dir.clone() });
    }
    let flagged = [
        ("loki", "url", &args.sink_loki),
        ("otlp", "url", &args.sink_otlp),
        ("relay", "address", &args.sink_relay),
    ];
    for (kind, key, value) in
        flagged.iter().flat_map(|(kind, key, values)| values.iter().map(move |v| (kind, key, v)))
    {
        // Through the configuration's own deserializer, so that the flags get its defaults.
        let mut sink = toml::Table::new();
        sink.insert("kind".into(), (*kind).into());
        sink.insert("name".into(), format!("{kind}-{}", config.sinks.len() + 1).into());
        sink.insert((*key).into(), value.clone().into());
        config.sinks.push(sink.try_into().with_context(|| format!("--sink-{kind} {value}"))?);
    }
    config.check().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(config)
}
