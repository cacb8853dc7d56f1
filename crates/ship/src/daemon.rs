//! `teelog ship`: sources → pipeline → spool → sinks, until a signal (or, with only finite
//! sources such as stdin, until they end and the spool is delivered).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use teelog_attest::TrustRoot;
use teelog_core::PublicKey;
use teelog_identity::{Identity, IdentityError};
use teelog_store::{Store, StoreError, StoreOptions};
use tokio::sync::watch;

use teelog_deliver::config::SinkConfig;
use teelog_deliver::sinks::relay::RelaySink;
use teelog_deliver::spool::SpoolState;
use teelog_deliver::{delivery, sinks};
use teelog_relay::{Head, StreamHeads};

use crate::config::{AckMode, Config, GatewayHeadMode, Instance};
use crate::metrics::ShipMetrics;
use crate::output::HeadTrust;
use crate::pipeline::{Pipeline, PipelineOptions, Shared};
use crate::signer::{GatewayHead, ShipError, SignSummary, StreamSigner};
use crate::sources;

/// How long a stopping daemon waits for its sources to finish what they hold (a request being
/// received, a file being read) before it drops them; the records they had not submitted are
/// sent again by their clients or read again by the next run.
const SOURCES_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the signer has to seal what it holds and save the chain state.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon could not start or ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The identity could not be loaded (missing, locked by another signer, corrupt).
    #[error("identity {0}")]
    Identity(#[from] IdentityError),
    /// The spool could not be opened.
    #[error("spool: {0}")]
    Spool(#[from] StoreError),
    /// The signer failed.
    #[error(transparent)]
    Ship(#[from] ShipError),
    /// A sink could not be set up; names it.
    #[error("sink {name:?}: {error}")]
    Sink {
        /// The sink's name.
        name: String,
        /// Why.
        error: teelog_deliver::sinks::OpenError,
    },
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] teelog_deliver::serve::BindError),
    /// A source failed (a file that cannot be followed, a server that stopped).
    #[error("{0}")]
    Source(String),
    /// A file of `trust_keys` or `trust_roots` could not be read or used; names it.
    #[error("trust_keys / trust_roots: {0}")]
    Trust(String),
    /// A new epoch needs the gateway's head (`start.gateway_head = "require"`) and did not get
    /// exactly one; says why.
    #[error("{0}")]
    GatewayHead(String),
    /// The input ended and the sinks had not taken everything within `spool.drain_timeout`;
    /// says how much waits where.
    #[error("{0}")]
    Undelivered(String),
    /// The signer thread did not end within the time allowed at stop.
    #[error("the signer did not stop within {0:?}; what it held is not sealed")]
    CloseTimeout(Duration),
    /// `[timestamp]` names a TSA that cannot be asked; says why.
    #[error("timestamp.tsa: {0}")]
    Timestamp(String),
}

/// The keys and roots of `trust_keys` and `trust_roots`, read from their files.
fn head_trust(config: &Config) -> Result<HeadTrust, DaemonError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| DaemonError::Trust(format!("{}: {e}", path.display())))
    };
    let mut trust = HeadTrust::default();
    for path in &config.trust_keys {
        let key = PublicKey::from_pem(&read(path)?)
            .map_err(|e| DaemonError::Trust(format!("{}: {e}", path.display())))?;
        trust.keys.push(key);
    }
    for path in &config.trust_roots {
        let root = TrustRoot::from_pem_or_der(&read(path)?)
            .map_err(|e| DaemonError::Trust(format!("{}: {e}", path.display())))?;
        trust.roots.push(root);
    }
    Ok(trust)
}

/// The gateway's word (its acknowledgements under `ack = "remote"`, and the head a start without
/// chain state links to) is only as good as the connection it comes over: without TLS, whoever
/// sits on it (the host of an enclave, for vsock to its parent) can answer for the gateway. Said
/// loudly at start when the shipper relies on it (`relies`).
fn warn_of_plaintext_gateways(config: &Config, relies: bool) {
    let plaintext: Vec<String> = config
        .sinks
        .iter()
        .filter(|sink| matches!(sink, SinkConfig::Relay(relay) if relay.tls.is_none()))
        .map(SinkConfig::name)
        .collect();
    if relies && !plaintext.is_empty() {
        tracing::warn!(target: "teelog::ship", "relay sink {} speaks to its gateway without TLS: the acknowledgements of ack = \"remote\" and the head a start without chain state links to are then the word of whoever answers on that connection, which the host can be; give the sink tls with its ca pinned (docs/SHIP.md, \"Acknowledgement\")", plaintext.join(", "));
    }
}

/// Runs the daemon until `shutdown` resolves (a signal) or every finite source has ended.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<SignSummary, DaemonError> {
    let trust = head_trust(&config)?;
    let identity = Identity::load_exclusive(&config.identity)?;
    let spool = Store::open(&config.spool.dir, StoreOptions { segment_bytes: config.spool.segment_bytes })?;
    // Without chain state of its own, a new epoch would link to whatever head local storage
    // shows, and that storage is the host's: it asks the gateway first (docs/FORMAT.md §5.3).
    let state = identity.load_state(&config.stream)?;
    let asks_for_head =
        (identity.has_fresh_key() || state.is_none()) && config.start.instance() != Instance::New;
    let gateway = match state {
        Some(state) if !identity.has_fresh_key() => own_epoch_at_gateway(&config, &state.epoch).await,
        // A replica's first start: no head the gateway holds is its own.
        _ if config.start.instance() == Instance::New => None,
        _ => gateway_head(&config).await?,
    };
    let ack = ack_mode(&config, &identity);
    let signer = StreamSigner::open_spool(identity, &config.stream, spool, &trust, gateway.as_ref())?;
    if config.start.instance() == Instance::New {
        let head = signer.sealer().head();
        let genesis = head.prev.is_none() && head.next_seq == 1;
        tracing::info!(target: "teelog::ship", stream = %config.stream, "start.instance = \"new\": {}; set start.instance = \"{}\" for this replica's later starts", if genesis { "a new instance begins" } else { "local storage held a head of this replica's, which the epoch continues" }, head.epoch);
    }
    let options = PipelineOptions { remote_ack: ack == AckMode::Remote, ..config.pipeline_options() };
    let pipeline = Pipeline::start(signer, options, Arc::new(ShipMetrics::default()))?;
    let spool = pipeline.shared().spool.clone();

    // Sources stop first; the sinks once the pipeline has sealed everything.
    let (stop_sources, sources_stop) = watch::channel(false);
    let (stop_sinks, sinks_stop) = watch::channel(false);
    let mut deliveries = Vec::new();
    for sink_config in &config.sinks {
        let name = sink_config.name();
        let sink = sinks::open(sink_config, Some(&config.stream))
            .map_err(|error| DaemonError::Sink { name: name.clone(), error })?;
        // Registered before anything runs, so that retention waits for every sink.
        let cursor = delivery::register(&spool, &name);
        let run = delivery::run(name, sink, cursor, spool.clone(), delivery::plain, sinks_stop.clone());
        deliveries.push(tokio::spawn(run));
    }

    if ack == AckMode::Remote {
        tokio::spawn(acknowledge_remote(pipeline.shared().clone(), relay_sinks(&config)));
    }

    let stamping = match &config.timestamp {
        Some(timestamp) => Some(Stamper::start(timestamp, pipeline.shared().clone(), pipeline.submitter())?),
        None => None,
    };
    let submitter = pipeline.submitter();
    let mut running = sources::start(&config, &submitter, sources_stop).await?;
    drop(submitter);
    let described: Vec<String> = config.sinks.iter().map(SinkConfig::describe).collect();
    let sinks = if described.is_empty() { "none (the spool is kept)".into() } else { described.join(", ") };
    tracing::info!(target: "teelog::ship", stream = %config.stream, sinks = %sinks, ack = ?ack, "shipping");
    warn_of_plaintext_gateways(&config, ack == AckMode::Remote || asks_for_head);

    let ends_by_itself = running.only_finite();
    let shared = pipeline.shared().clone();
    let mut input_ended = false;
    tokio::select! {
        () = shutdown => tracing::info!(target: "teelog::ship", "stopping on signal"),
        () = running.finite_sources_ended(), if ends_by_itself => {
            tracing::info!(target: "teelog::ship", "input ended");
            input_ended = true;
        }
        // Its error is what `close` returns below, and what the daemon exits with.
        () = shared.signer_ended() => tracing::error!(target: "teelog::ship", "the signer has stopped, so the daemon stops"),
    }
    // Every step of the stop has a bound, whatever clients, files and sinks do.
    let _ = stop_sources.send(true);
    let failures = running.failures();
    running.stop(SOURCES_TIMEOUT).await;
    if let Some(stamping) = stamping {
        stamping.stop().await;
    }
    let summary = close(pipeline).await?;
    let _ = stop_sinks.send(true);
    let drained = tokio::time::Instant::now() + config.spool.drain_timeout;
    for delivery in deliveries {
        let abort = delivery.abort_handle();
        if tokio::time::timeout_at(drained, delivery).await.is_err() {
            abort.abort();
        }
    }
    if !config.spool.keep {
        // What the sinks delivered while draining goes now, not at the next run's first batch.
        if let Err(e) = spool.retire_delivered(0) {
            tracing::warn!(target: "teelog::ship", "cannot remove delivered spool segments: {e}");
        }
    }
    if let Some(behind) = undelivered(&config, &spool) {
        let wait = format!(
            "{behind}; they wait in the spool {} for the next run (spool.drain_timeout {:?})",
            config.spool.dir.display(),
            config.spool.drain_timeout
        );
        if input_ended {
            // A one-shot run is done only when its lines are delivered: its caller must know.
            return Err(DaemonError::Undelivered(format!("the input ended, but {wait}")));
        }
        tracing::warn!(target: "teelog::ship", "{wait}");
    }
    if let Some(failure) = failures.lock().unwrap_or_else(|e| e.into_inner()).first() {
        // A finite source's exit status is its acknowledgement: what it read and did not get
        // signed makes the run fail, whatever else was signed.
        return Err(DaemonError::Source(format!("{failure} ({} records were signed)", summary.records)));
    }
    tracing::info!(target: "teelog::ship", records = summary.records, batches = summary.batches, "stopped");
    Ok(summary)
}

/// What each sink has not delivered of the spool, or None if every sink has it all.
fn undelivered(config: &Config, spool: &SpoolState) -> Option<String> {
    let end = *spool.written().borrow();
    let behind: Vec<String> = config
        .sinks
        .iter()
        .filter_map(|sink| {
            let from = spool.reader(&sink.name())?;
            let (lines, bytes) = match delivery::undelivered(spool, from, end) {
                Ok((0, _)) => return None,
                Ok(counted) => counted,
                Err(e) => return Some(format!("sink {}: cannot count what it lacks: {e}", sink.describe())),
            };
            Some(format!(
                "sink {} has not taken {lines} spool lines ({bytes} bytes) from {from} on",
                sink.describe()
            ))
        })
        .collect();
    (!behind.is_empty()).then(|| behind.join("; "))
}

/// The names of the relay sinks: the gateways that acknowledge (`ack = "remote"`).
fn relay_sinks(config: &Config) -> Vec<String> {
    config.sinks.iter().filter(|s| matches!(s, SinkConfig::Relay(_))).map(SinkConfig::name).collect()
}

/// `ack` as configured, or by default `remote` when there is a relay sink and the spool would not
/// outlive the process's machine (tmpfs, or an enclave: a nitro identity), else `local`.
fn ack_mode(config: &Config, identity: &Identity) -> AckMode {
    if let Some(ack) = config.ack {
        return ack;
    }
    if relay_sinks(config).is_empty() {
        return AckMode::Local;
    }
    let why = if identity.has_fresh_key() {
        "the identity is a nitro enclave's"
    } else if on_tmpfs(&config.spool.dir) {
        "the spool is on tmpfs"
    } else {
        return AckMode::Local;
    };
    tracing::info!(target: "teelog::ship", "ack = \"remote\": {why}, so a record counts as taken only once the gateway has it");
    AckMode::Remote
}

/// Whether `dir` is on a file system in memory (tmpfs, ramfs), by the longest mount point in
/// /proc/mounts that holds it; false when that cannot be told.
fn on_tmpfs(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else { return false };
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return false };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            // Mount points escape white space and backslashes in octal (\040).
            let point = unescape_mount(point);
            dir.starts_with(&point).then_some((point.len(), kind))
        })
        .max_by_key(|(len, _)| *len)
        .is_some_and(|(_, kind)| kind == "tmpfs" || kind == "ramfs")
}

fn unescape_mount(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|c| u8::from_str_radix(c, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Acknowledges the submissions waiting for the gateway as the relay sinks deliver: a record
/// counts as taken once every relay sink's gateway has it durably.
async fn acknowledge_remote(shared: Arc<Shared>, relays: Vec<String>) {
    let mut moved = shared.spool.readers_moved();
    loop {
        let delivered: Option<Vec<_>> = relays.iter().map(|name| shared.spool.reader(name)).collect();
        if let Some(at) = delivered.and_then(|all| all.into_iter().min()) {
            shared.remote_delivered(at);
        }
        if moved.changed().await.is_err() {
            return;
        }
    }
}

/// Where the relay sinks' gateways hold the stream: the newest single head any of them reports,
/// None when there is no relay sink or no gateway holds a batch of the stream. A gateway that
/// cannot be reached within `start.wait`, or reports several heads, stops the start unless
/// `start.gateway_head = "prefer"`, which falls back to local storage and says so.
async fn gateway_head(config: &Config) -> Result<Option<GatewayHead>, DaemonError> {
    let mut newest: Option<GatewayHead> = None;
    for sink in &config.sinks {
        let SinkConfig::Relay(relay) = sink else { continue };
        let opened = RelaySink::open(relay, &config.stream)
            .map_err(|error| DaemonError::Sink { name: sink.name(), error })?;
        // Why there is no head to link to, and what would give one.
        let answer = match ask_heads(&opened, config.start.wait, instance_of(config)).await {
            Ok(heads) => one_head(&config.stream, &opened.address().to_string(), heads)
                .map_err(|why| (why, "restore this signer's chain state")),
            Err(unanswered) => Err(unanswered),
        };
        let head = match (answer, config.start.gateway_head) {
            (Ok(head), _) => head,
            (Err((why, remedy)), GatewayHeadMode::Require) => {
                return Err(DaemonError::GatewayHead(format!(
                    "{why}: {remedy}, or set start.gateway_head = \"prefer\" to link to the newest head local storage vouches for (a new epoch without chain state links only to a head the gateway confirms: start.gateway_head = \"require\")"
                )))
            }
            (Err((why, _)), GatewayHeadMode::Prefer) => {
                tracing::warn!(target: "teelog::ship", "{why}; linking to the newest head local storage vouches for (start.gateway_head = \"prefer\")");
                None
            }
        };
        if let Some(head) = head.filter(|h| newest.as_ref().is_none_or(|n| h.sealed_at > n.sealed_at)) {
            newest = Some(head);
        }
    }
    if let Some(head) = &newest {
        tracing::info!(target: "teelog::ship", stream = %config.stream, "the gateway {} holds the stream up to seq {} of epoch {} ({})", head.gateway, head.seq, head.epoch, hex::encode(head.hash));
    }
    Ok(newest)
}

/// Where the gateway holds the epoch `epoch` that the chain state continues, asked once of each
/// relay sink: a head there at or past the state's next seq shows the state (and the spool)
/// rolled back, which the signer answers with a new epoch (docs/FORMAT.md §5.3). The state is
/// this signer's own, so a gateway that does not answer delays nothing: the check is skipped,
/// and said.
async fn own_epoch_at_gateway(config: &Config, epoch: &str) -> Option<GatewayHead> {
    let mut newest: Option<GatewayHead> = None;
    for sink in &config.sinks {
        let SinkConfig::Relay(relay) = sink else { continue };
        let Ok(opened) = RelaySink::open(relay, &config.stream) else { continue };
        let heads = match ask_heads(&opened, Duration::ZERO, instance_of(config)).await {
            Ok(heads) => heads,
            Err((why, _)) => {
                tracing::warn!(target: "teelog::ship", "{why}; the chain state is continued without checking it against the gateway");
                continue;
            }
        };
        let gateway = format!("{} at {}", heads.gateway, opened.address());
        for head in heads.heads.iter().filter(|h| h.epoch == epoch) {
            match parse_head(&config.stream, &gateway, head) {
                Ok(head) if newest.as_ref().is_none_or(|n| head.seq > n.seq) => newest = Some(head),
                Ok(_) => {}
                Err(why) => tracing::warn!(target: "teelog::ship", "{why}"),
            }
        }
    }
    newest
}

/// Asks `sink`'s gateway for the stream's heads until it answers or `wait` passes; a gateway
/// that answers without heads is not asked again. An error says why, and what would cure it.
async fn ask_heads(
    sink: &RelaySink,
    wait: Duration,
    instance: Option<&str>,
) -> Result<StreamHeads, (String, &'static str)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = Duration::from_millis(200);
    loop {
        match sink.heads(instance).await {
            Ok(heads) => return Ok(heads),
            Err(e) if !e.retryable || tokio::time::Instant::now() + backoff > deadline => {
                let why = format!(
                    "cannot learn where the stream stands from the gateway at {}: {e}",
                    sink.address()
                );
                // A gateway that answered without heads will not give them by being asked again.
                let remedy = if e.retryable { "bring the gateway up" } else { "upgrade the gateway" };
                return Err((why, remedy));
            }
            Err(e) => {
                tracing::warn!(target: "teelog::ship", "asking the gateway at {} for the stream's head, retrying in {backoff:?}: {e}", sink.address());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The one head of a welcome (docs/FORMAT.md §14.1), checked: several tips are refused, not
/// picked from.
fn one_head(stream: &str, address: &str, heads: StreamHeads) -> Result<Option<GatewayHead>, String> {
    let gateway = format!("{} at {address}", heads.gateway);
    match heads.heads.as_slice() {
        [] if heads.tips == 0 => Ok(None),
        [head] if heads.tips == 1 => parse_head(stream, &gateway, head).map(Some),
        listed => {
            let named: Vec<String> =
                listed.iter().map(|h| format!("seq {} of epoch {} ({})", h.seq, h.epoch, h.hash)).collect();
            Err(format!(
                "the gateway {gateway} holds {} heads of stream {stream:?} (forked, or several signers): {}; a new epoch cannot tell which to follow",
                heads.tips,
                named.join(", ")
            ))
        }
    }
}

/// The instance whose heads to ask for (`start.instance`), if one is named.
fn instance_of(config: &Config) -> Option<&str> {
    match config.start.instance() {
        Instance::Of(epoch) => Some(epoch),
        Instance::Only | Instance::New => None,
    }
}

/// A head of a welcome, checked.
fn parse_head(stream: &str, gateway: &str, head: &Head) -> Result<GatewayHead, String> {
    let bad = |what: &str| format!("the gateway {gateway} answered a head of stream {stream:?} with {what}");
    let hash = hex::decode(&head.hash)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| bad(&format!("a hash that is not a SHA-256: {:?}", head.hash)))?;
    let sealed_at = teelog_core::timestamp::parse_rfc3339(&head.sealed_at)
        .map_err(|e| bad(&format!("sealed_at {:?}: {e}", head.sealed_at)))?;
    Ok(GatewayHead {
        gateway: gateway.to_string(),
        epoch: head.epoch.clone(),
        seq: head.seq,
        hash,
        sealed_at,
    })
}

/// Closes the pipeline on a thread of its own, within [`CLOSE_TIMEOUT`] (a thread of the
/// runtime's blocking pool would hold the runtime's own stop).
/// How long one TSA request may take: the stamper waits for it, and a stopping daemon for the
/// stamper.
const TSA_TIMEOUT: Duration = Duration::from_secs(10);

/// `[timestamp]`: a thread that, every `every`, asks the TSA for a token over the newest head's
/// header hash (when it moved since the last token) and submits a timestamp notice holding it
/// (docs/FORMAT.md §16.2), which the signer seals into its next batch like any record.
struct Stamper {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Stamper {
    fn start(
        config: &crate::config::TimestampConfig,
        shared: Arc<Shared>,
        submitter: crate::pipeline::Submitter,
    ) -> Result<Self, DaemonError> {
        let client = teelog_audit::tsa::TsaClient::new(&config.tsa, TSA_TIMEOUT)
            .map_err(|e| DaemonError::Timestamp(e.to_string()))?;
        let every = config.every;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("teelog-timestamp".into())
            .spawn(move || {
                let mut last = None;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some((epoch, seq, head)) = shared.newest_head() else { continue };
                    // The batch right after the last stamped one may hold nothing but its
                    // notice: stamping it would make a batch per interval out of nothing.
                    if last.as_ref().is_some_and(|(e, s)| *e == epoch && seq <= s + 1) {
                        continue;
                    }
                    match client.stamp(&head) {
                        Ok(token) => {
                            let notice = teelog_core::anchor::TimestampNotice::new(&epoch, seq, &head, &token);
                            let mut records = crate::pipeline::RecordBuf::default();
                            match serde_json::to_vec(&notice) {
                                Ok(bytes) => records.push(&bytes),
                                Err(e) => {
                                    tracing::warn!(target: "teelog::ship", "timestamp notice: {e}");
                                    continue;
                                }
                            }
                            let origin = crate::pipeline::Origin::named("teelog timestamp");
                            if let Err(e) = submitter.submit_blocking(records, origin) {
                                tracing::warn!(target: "teelog::ship", "timestamp notice not submitted: {e}");
                                return;
                            }
                            tracing::info!(target: "teelog::ship", seq, epoch = %epoch, "timestamp.tsa {}: head stamped", client.url());
                            last = Some((epoch, seq));
                        }
                        Err(e) => tracing::warn!(target: "teelog::ship", seq, "timestamp.tsa {}: no token this time: {}", client.url(), teelog_core::display::escape_controls(&e)),
                    }
                }
            })
            .map_err(|source| ShipError::ThreadStart { thread: "timestamp", source })?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread, after the request it may be waiting on (at most [`TSA_TIMEOUT`]).
    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

async fn close(pipeline: Pipeline) -> Result<SignSummary, DaemonError> {
    let (done, closed) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("teelog-close".into())
        .spawn(move || {
            let _ = done.send(pipeline.close());
        })
        .map_err(|source| ShipError::ThreadStart { thread: "closing", source })?;
    match tokio::time::timeout(CLOSE_TIMEOUT, closed).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(_)) => Err(ShipError::ThreadPanicked("closing").into()),
        Err(_) => Err(DaemonError::CloseTimeout(CLOSE_TIMEOUT)),
    }
}
