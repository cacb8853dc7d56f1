//! `teelog gateway`: the collector between shippers and storage. It receives signed batches
//! (the relay protocol over TCP or vsock, and NDJSON over HTTP), verifies each one as it arrives
//! ([`teelog_core::gate::Gate`]: signature, records, attestation and policy, continuity per
//! stream and epoch), and spools it flagged `signature_valid` true or false; invalid batches are
//! kept, since they are evidence. Each sink (Loki, the embedded store, OTLP) follows the spool
//! from its own durable cursor, so a sink that is down only falls behind.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod envelope;
pub mod http;
pub mod ingest;
pub mod relay;
pub mod vsock;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use teelog_core::gate::Gate;
use teelog_core::merkle::sha256;
use teelog_deliver::metrics::Metrics;
use teelog_deliver::serve::{
    bind, metrics_router, serve_http, serve_http_with, BindError, ByteBudget, HttpLimits,
};
use teelog_deliver::spool::SpoolState;
use teelog_deliver::{delivery, sinks};
use teelog_store::{Store, StoreError, StoreOptions};
use tokio::sync::watch;

use crate::config::GatewayConfig;
use crate::ingest::{GatewayMetrics, Writer};
use crate::relay::{PeerAddr, Places, RelayLimits};
use axum::serve::ListenerExt;
use teelog_deliver::tls::{self, TlsListener};

/// How long sinks may take, once the gateway stops, to deliver what is spooled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer waits for the TSA to stamp one checkpoint.
const CHECKPOINT_TSA_TIMEOUT: Duration = Duration::from_secs(5);
/// How often streams are checked for silence.
const SILENCE_CHECK: Duration = Duration::from_secs(1);

/// Who may send, and how much at once.
pub struct Access {
    /// The gateway's name, sent in the relay welcome.
    pub name: String,
    /// The token clients must present; `None`: none is asked for.
    pub bearer_token: Option<String>,
    /// The largest relay frame (one line) and HTTP body taken, in bytes.
    pub max_frame_bytes: usize,
    /// Request bytes held in memory at once, across every connection of both listeners.
    pub memory: ByteBudget,
    /// How long an HTTP body, or a relay frame once begun, may take to arrive.
    pub request_timeout: std::time::Duration,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

/// File descriptors kept for the spool, sinks, documents and the like, beside connections.
const RESERVED_FILES: usize = 128;

/// How many connections each listener may hold, so that together they stay within the
/// process's open-file limit (`ulimit -n`), with room for everything else: a listener that runs
/// out of descriptors cannot accept anyone, the shipper it is there for included.
fn connection_limits(open_files: usize) -> (RelayLimits, usize) {
    let budget = open_files.saturating_sub(RESERVED_FILES).max(64);
    let relay = RelayLimits {
        pending: (budget / 8).clamp(8, 256),
        established: (budget / 2).clamp(8, 1024),
        per_peer: (budget / 16).clamp(4, 64),
    };
    // TLS handshakes in progress count under each listener's own cap (tls.rs).
    (relay, (budget / 4).clamp(8, 256))
}

/// The soft limit on open files (`ulimit -n`); 1024, the usual default, where it cannot be read.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(1024)
}

impl Access {
    /// Whether `token` is the one asked for; true when none is. Their hashes are compared, so
    /// that the time taken says nothing about how much of a guess was right.
    pub fn token_ok(&self, token: Option<&str>) -> bool {
        match (&self.bearer_token, token) {
            (None, _) => true,
            (Some(expected), Some(given)) => sha256(expected.as_bytes()) == sha256(given.as_bytes()),
            (Some(_), None) => false,
        }
    }
}

/// What the relay's listeners share.
struct RelayServer<'a> {
    ingest: ingest::Ingest,
    access: Arc<Access>,
    places: Arc<Places>,
    stop: watch::Receiver<bool>,
    /// With TLS: its configuration, how many handshakes may be in progress, and where failed
    /// ones are counted.
    tls: Option<(&'a rustls::ServerConfig, usize, Arc<Metrics>)>,
}

impl RelayServer<'_> {
    /// Serves the relay on `listener` (TCP or vsock: the same protocol), in TLS if asked.
    fn spawn<L>(&self, listener: L) -> Result<tokio::task::JoinHandle<()>, GatewayError>
    where
        L: axum::serve::Listener<Addr: PeerAddr + Clone>,
    {
        let (ingest, access, places, stop) =
            (self.ingest.clone(), self.access.clone(), self.places.clone(), self.stop.clone());
        Ok(match &self.tls {
            Some((tls, handshakes, metrics)) => {
                let listener = TlsListener::new(listener, tls, &[], "relay", *handshakes, metrics.clone())?;
                tokio::spawn(relay::serve(listener, ingest, access, places, stop))
            }
            None => tokio::spawn(relay::serve(listener, ingest, access, places, stop)),
        })
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// Why the gateway could not start (once it runs, failures are retried and logged instead).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The spool directory could not be opened (or is locked by another gateway).
    #[error("spool: {0}")]
    Spool(#[from] StoreError),
    /// The continuity state saved in the spool could not be read.
    #[error("spool: {0}")]
    Continuity(#[from] ingest::ContinuityError),
    /// `verify.max_silence` is not a duration.
    #[error("verify.max_silence: {0}")]
    MaxSilence(#[from] teelog_core::timestamp::DurationError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A sink could not be set up; names it.
    #[error("sink {name:?}: {error}")]
    Sink {
        /// The sink's name.
        name: String,
        /// Why.
        error: teelog_deliver::sinks::OpenError,
    },
    /// The bearer token file could not be read.
    #[error("listen.bearer_token_file {path}: {source}")]
    Token {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The thread that writes the spool could not be started.
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    /// The TLS certificate, key or client CA could not be loaded or used.
    #[error("listen.tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// `checkpoint.tsa` is not a URL teelog can post to.
    #[error("checkpoint.tsa: {0}")]
    CheckpointTsa(#[from] teelog_audit::tsa::StampError),
    /// The checkpoint key could not be read, made or written out.
    #[error("checkpoint.key: {0}")]
    CheckpointKey(#[from] checkpoint::CheckpointKeyError),
    /// The vsock relay listener could not be bound.
    #[error(transparent)]
    VsockBind(#[from] vsock::VsockBindError),
}

/// The gateway's checkpoint key (`checkpoint.key`, or the spool's, made on first start), with
/// its public key written beside the spool's default key file for auditors; None without
/// `[checkpoint]`.
pub fn checkpoint_key(config: &GatewayConfig) -> Result<Option<teelog_core::SoftwareKey>, GatewayError> {
    let Some(path) = config.checkpoint_key_path() else { return Ok(None) };
    let key = checkpoint::load_key(&path, config.checkpoint.as_ref().is_some_and(|c| c.key.is_none()))?;
    let public = config.spool.dir.join(checkpoint::PUBLIC_KEY_FILE);
    std::fs::create_dir_all(&config.spool.dir)
        .map_err(|error| checkpoint::CheckpointKeyError::Io { path: config.spool.dir.clone(), error })?;
    teelog_store::write_atomic(&public, key.public().to_pem().as_bytes())
        .map_err(|(path, error)| checkpoint::CheckpointKeyError::Io { path, error })?;
    Ok(Some(key))
}

/// Runs the gateway until `shutdown` resolves, judging batches with `gate` (which the caller
/// built from `config.verify`; its continuity state is loaded here from the spool).
pub async fn run(
    config: GatewayConfig,
    gate: impl FnOnce(teelog_core::gate::Continuity) -> Gate,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let store = Store::open(&config.spool.dir, StoreOptions { segment_bytes: config.spool.segment_bytes })?;
    let continuity = ingest::load_continuity(store.dir())?;
    let metrics = Arc::new(Metrics::default());
    let gateway_metrics = Arc::new(GatewayMetrics::default());
    // A line stored is at most a request's body.
    let max_line = config.listen.max_request_bytes.max(teelog_core::batch::MAX_BATCH_LINE) as u64;
    let spool =
        Arc::new(SpoolState::new(store.dir().to_path_buf(), store.position(), metrics.clone(), max_line));

    let (stop_sinks, sinks_stop) = watch::channel(false);
    let mut deliveries = Vec::new();
    for sink_config in &config.sinks {
        let name = sink_config.name();
        let sink = sinks::open(sink_config, None)
            .map_err(|error| GatewayError::Sink { name: name.clone(), error })?;
        let cursor = delivery::register(&spool, &name);
        let run = delivery::run(name, sink, cursor, spool.clone(), envelope::decode, sinks_stop.clone());
        deliveries.push(tokio::spawn(run));
    }

    let bearer_token = match &config.listen.bearer_token_file {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| GatewayError::Token { path: path.clone(), source })?
                .trim()
                .to_string(),
        ),
    };
    let access = Arc::new(Access {
        name: format!("teelog-gateway {}", env!("CARGO_PKG_VERSION")),
        bearer_token,
        max_frame_bytes: config.listen.max_request_bytes,
        memory: ByteBudget::new(config.listen.max_buffered_bytes),
        request_timeout: config.request_timeout(),
        metrics: metrics.clone(),
    });
    let mut writer =
        Writer::new(gate(continuity), store, spool.clone(), gateway_metrics.clone(), config.spool.keep);
    if let Some(key) = checkpoint_key(&config)? {
        let mut checkpoints = checkpoint::Checkpointer::new(key, &config.spool.dir);
        if let Some(url) = config.checkpoint.as_ref().and_then(|c| c.tsa.as_deref()) {
            checkpoints =
                checkpoints.with_tsa(teelog_audit::tsa::TsaClient::new(url, CHECKPOINT_TSA_TIMEOUT)?);
        }
        writer = writer.with_checkpoints(checkpoints);
    }
    let (ingest, writer_thread) = writer.start().map_err(GatewayError::Thread)?;

    let (stop_listeners, listeners_stop) = watch::channel(false);
    let mut listeners = Vec::new();
    let (relay_limits, http_connections) = connection_limits(open_files_limit());
    // Read once, before anything listens; each listener offers its own protocol.
    let tls = config.listen.tls.as_ref().map(tls::server_config).transpose()?;
    let relay = RelayServer {
        ingest: ingest.clone(),
        access: access.clone(),
        // The TCP and vsock listeners share one set of places.
        places: Places::new(relay_limits),
        stop: listeners_stop.clone(),
        tls: tls.as_ref().map(|tls| (tls, relay_limits.pending, metrics.clone())),
    };
    if let Some(addr) = config.listen.relay {
        let listener = bind(addr, "relay").await?.tap_io(|socket| {
            let _ = socket.set_nodelay(true);
        });
        listeners.push(relay.spawn(listener)?);
    }
    if let Some(addr) = config.listen.relay_vsock {
        listeners.push(relay.spawn(vsock::VsockListener::bind(addr)?)?);
    }
    // Its handles on the writer go with it: the writer ends once the connections are gone.
    drop(relay);
    if let Some(addr) = config.listen.http {
        let listener = bind(addr, "HTTP").await?;
        let router = http::router(ingest.clone(), access.clone());
        let stop = listeners_stop.clone();
        let limits = HttpLimits {
            max_connections: http_connections,
            metrics: Some(metrics.clone()),
            ..HttpLimits::new("http")
        };
        listeners.push(match &tls {
            Some(tls) => {
                let listener = TlsListener::new(
                    listener,
                    tls,
                    &[b"http/1.1"],
                    "http",
                    http_connections,
                    metrics.clone(),
                )?;
                tokio::spawn(serve_http_with(listener, router, stop, limits))
            }
            None => tokio::spawn(serve_http_with(listener, router, stop, limits)),
        });
    }
    if let Some(metrics_config) = &config.metrics {
        let listener = bind(metrics_config.listen, "metrics").await?;
        let (metrics, gateway_metrics) = (metrics.clone(), gateway_metrics.clone());
        let router = metrics_router(move || gateway_metrics.render() + &metrics.render());
        tokio::spawn(serve_http(listener, router, sinks_stop.clone()));
    }
    if let Some(max_silence) = config.max_silence()? {
        let (ingest, mut stop) = (ingest.clone(), listeners_stop.clone());
        listeners.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(SILENCE_CHECK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = crate::stopped(&mut stop) => return,
                }
                tokio::select! {
                    () = ingest.check_silence(teelog_deliver::clock::now(), max_silence) => {}
                    () = crate::stopped(&mut stop) => return,
                }
            }
        }));
    }
    if let Some(every) = config.checkpoint_every() {
        let (ingest, mut stop) = (ingest.clone(), listeners_stop.clone());
        listeners.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => ingest.checkpoint().await,
                    () = crate::stopped(&mut stop) => return,
                }
            }
        }));
    }
    tracing::info!(target: "teelog::gateway", "gateway running");

    shutdown.await;
    tracing::info!(target: "teelog::gateway", "stopping");
    let _ = stop_listeners.send(true);
    for listener in listeners {
        let _ = listener.await;
    }
    drop(ingest);
    // The writer ends once the connections still finishing have dropped their handles.
    let joined =
        tokio::time::timeout(DRAIN_TIMEOUT, tokio::task::spawn_blocking(move || writer_thread.join()));
    if joined.await.is_err() {
        // A connection still in the writer's hands (a disk that will not take writes): what it
        // sent is not acknowledged, so its shipper sends it again.
        tracing::warn!(target: "teelog::gateway", "the writer did not finish in {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    let _ = stop_sinks.send(true);
    for delivery in deliveries {
        if tokio::time::timeout(DRAIN_TIMEOUT, delivery).await.is_err() {
            tracing::warn!(target: "teelog::gateway", "a sink is still behind; the rest stays spooled for the next run");
        }
    }
    Ok(())
}
