//! The relay listener (docs/FORMAT.md §14): each connection is one shipper sending its spool
//! lines, one per frame; they are acknowledged once the writer has them durable.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use teelog_core::gate::Tip;
use teelog_deliver::serve::{BudgetExhausted, ConnectionSlots, Reserved, Slot};
use teelog_relay::address::VsockAddress;
use teelog_relay::{check_line, FrameReader, Head, Hello, RelayError, ServerMessage, StreamHeads, Welcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::ingest::{CheckedLines, Checking, Durable, Ingest, IngestError, Outcome};
use crate::Access;

/// Line frames taken from the socket before they are handed to the writer together.
const FRAMES_PER_SUBMISSION: usize = 4096;
/// Submissions of one connection in flight (being checked on the blocking pool, or handed to the
/// writer and not yet durable): enough to keep the cores busy, and the writer writing several
/// in one group, with a single shipper.
const SUBMISSIONS_IN_FLIGHT: usize = 8;
/// Reads once a client is known; before, a small one, so that a crowd of strangers holds little.
const READ_BUFFER: usize = 64 << 10;
const HELLO_READ_BUFFER: usize = 4 << 10;
/// A client has this long from connecting to send its hello: a shipper sends it at once.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Shippers send heartbeats every 10 s by default; a connection silent this long is closed, and
/// a shipper that is still there connects again.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long a connection waits for memory held by others before it is ended.
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many relay connections may be open, before and after their hello.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Connections that have not said a valid hello yet; at the cap, the oldest makes room.
    pub pending: usize,
    /// Connections past their hello (and token); more are turned away until one ends.
    pub established: usize,
    /// Connections past their hello from one IP address (or one vsock CID).
    pub per_peer: usize,
}

/// Where a connection comes from, as the per-peer cap counts it: an IP address over TCP, a
/// context ID (one enclave or virtual machine) over vsock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP client's address, without its port.
    Ip(IpAddr),
    /// A vsock client's CID, without its port.
    Cid(u32),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(ip) => ip.fmt(f),
            Peer::Cid(cid) => write!(f, "vsock CID {cid}"),
        }
    }
}

/// The address a listener gives with each connection: what it names in the log, and the
/// [`Peer`] it counts under.
pub trait PeerAddr: std::fmt::Display + Send + 'static {
    /// The peer, without its port.
    fn peer(&self) -> Peer;
}

impl PeerAddr for SocketAddr {
    fn peer(&self) -> Peer {
        Peer::Ip(self.ip())
    }
}

impl PeerAddr for VsockAddress {
    fn peer(&self) -> Peer {
        Peer::Cid(self.cid)
    }
}

/// Who holds the relay's places: one set for all the relay's listeners (TCP and vsock), so
/// that together they stay within [`RelayLimits`].
pub struct Places {
    limits: RelayLimits,
    pending: Arc<ConnectionSlots>,
    established: Arc<tokio::sync::Semaphore>,
    per_peer: std::sync::Mutex<HashMap<Peer, usize>>,
    /// The connections of each stream, so that one asking for the stream's heads can end the
    /// others first (see [`Places::hand_over`]).
    streams: std::sync::Mutex<HashMap<Arc<str>, Arc<StreamConnections>>>,
}

/// The connections past their hello that ship one stream.
#[derive(Default)]
struct StreamConnections {
    /// Bumped by a connection that asks for the heads: the connections before it end.
    generation: watch::Sender<u64>,
    /// Held (read) by each connection while it may submit lines; taken (write) by one asking
    /// for the heads, which so waits until the others' last submissions are in.
    submitting: Arc<tokio::sync::RwLock<()>>,
}

/// A connection's membership of its stream: it ends when `generation` moves on.
struct Member {
    places: Arc<Places>,
    stream: Arc<str>,
    connections: Arc<StreamConnections>,
    generation: watch::Receiver<u64>,
    _submitting: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// How long a connection asking for the heads waits for the stream's other connections to end.
const HAND_OVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection's place past its hello; dropping it gives the place back.
struct Established {
    places: Arc<Places>,
    peer: Peer,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Places {
    /// Places for `limits`, none taken.
    pub fn new(limits: RelayLimits) -> Arc<Self> {
        Arc::new(Places {
            limits,
            pending: ConnectionSlots::new(limits.pending),
            established: Arc::new(tokio::sync::Semaphore::new(limits.established)),
            per_peer: std::sync::Mutex::default(),
            streams: std::sync::Mutex::default(),
        })
    }

    fn establish(self: &Arc<Self>, peer: Peer) -> Result<Established, Ended> {
        let Ok(permit) = self.established.clone().try_acquire_owned() else {
            return Err(Ended::TooMany(format!(
                "{} relay connections are open; try again later",
                self.limits.established
            )));
        };
        let mut per_peer = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_peer.entry(peer).or_default();
        if *count >= self.limits.per_peer {
            return Err(Ended::TooMany(format!(
                "{} relay connections from {peer} are open; try again later",
                self.limits.per_peer
            )));
        }
        *count += 1;
        Ok(Established { places: self.clone(), peer, _permit: permit })
    }

    /// Joins `stream`'s connections. With `hand_over` (the client asks for the stream's heads:
    /// it starts a new epoch), the stream's other connections are ended first and their last
    /// submissions waited for: lines a previous run of the shipper left in flight (it died with
    /// frames in the socket) must not land after the heads were told, or they would fork the
    /// stream behind the new epoch. What those connections had not submitted was never
    /// acknowledged.
    async fn join(self: &Arc<Self>, stream: &str, hand_over: bool) -> Result<Member, Ended> {
        let connections = {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            streams.entry(stream.into()).or_default().clone()
        };
        if hand_over {
            connections.generation.send_modify(|g| *g += 1);
            let others_done = connections.submitting.clone().write_owned();
            if tokio::time::timeout(HAND_OVER_TIMEOUT, others_done).await.is_err() {
                return Err(Ended::HandOver(HAND_OVER_TIMEOUT));
            }
        }
        let submitting = connections.submitting.clone().read_owned().await;
        let generation = connections.generation.subscribe();
        Ok(Member {
            places: self.clone(),
            stream: stream.into(),
            connections,
            generation,
            _submitting: submitting,
        })
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut streams = self.places.streams.lock().unwrap_or_else(|e| e.into_inner());
        // The map's and this one: no other connection of the stream is left.
        if Arc::strong_count(&self.connections) <= 2 {
            streams.remove(&self.stream);
        }
    }
}

impl Drop for Established {
    fn drop(&mut self) {
        let mut per_peer = self.places.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

/// Accepts relay connections on `listener` (TCP or vsock, plain or TLS) until `stop` turns true.
pub async fn serve<L: axum::serve::Listener<Addr: PeerAddr>>(
    mut listener: L,
    ingest: Ingest,
    access: Arc<Access>,
    places: Arc<Places>,
    mut stop: watch::Receiver<bool>,
) {
    let connections_stop = stop.clone();
    loop {
        tokio::select! {
            (socket, peer) = listener.accept() => {
                // Before its hello a connection is anyone's: at the cap the oldest such one
                // makes room, so strangers cannot keep a shipper out by connecting and waiting.
                let Some(slot) = places.pending.admit() else { continue };
                let (ingest, access, stop, places) =
                    (ingest.clone(), access.clone(), connections_stop.clone(), places.clone());
                let admission = Admission { slot, places, peer: peer.peer() };
                tokio::spawn(connection(socket, format!("relay {peer}"), ingest, access, admission, stop));
            }
            () = crate::stopped(&mut stop) => return,
        }
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error(transparent)]
    Protocol(#[from] RelayError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Stopping(#[from] crate::ingest::IngestError),
    #[error("nothing received for {0:?}")]
    Silent(std::time::Duration),
    #[error("a frame begun was not whole within {0:?}")]
    SlowFrame(std::time::Duration),
    #[error("no hello within {0:?}")]
    NoHello(std::time::Duration),
    #[error("{0}")]
    TooMany(String),
    #[error("the stream's other connections did not end within {0:?}; try again")]
    HandOver(std::time::Duration),
    #[error("closed to make room for a newer connection: no hello yet")]
    Evicted,
    #[error(transparent)]
    Memory(#[from] BudgetExhausted),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
}

impl Ended {
    /// The metrics reason.
    fn reason(&self) -> &'static str {
        match self {
            Ended::Protocol(RelayError::TooLarge { .. }) => "too_large",
            Ended::Protocol(_) => "bad_request",
            Ended::Refused(_) => "unauthorized",
            Ended::Stopping(_) => "stopping",
            Ended::Silent(_) | Ended::NoHello(_) | Ended::SlowFrame(_) => "timeout",
            Ended::TooMany(_) => "too_many",
            Ended::HandOver(_) => "busy",
            Ended::Evicted => "evicted",
            Ended::Memory(_) => "memory",
            Ended::Io(_) => "io",
        }
    }
}

/// A new connection's place before its hello, and where it goes after.
struct Admission {
    slot: Slot,
    places: Arc<Places>,
    peer: Peer,
}

/// Serves one shipper until it closes the connection or breaks the protocol.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    source: String,
    ingest: Ingest,
    access: Arc<Access>,
    admission: Admission,
    stop: watch::Receiver<bool>,
) {
    match relay(&mut socket, &source, &ingest, &access, admission, stop).await {
        Ok(()) => tracing::debug!(target: "teelog::gateway", "{source}: closed"),
        Err(e) => {
            access.metrics.refused("relay", e.reason());
            // An evicted stranger is not told why: it would only wait less next time.
            if !matches!(e, Ended::Io(_) | Ended::Evicted) {
                let _ = send(&mut socket, &ServerMessage::Error(e.to_string())).await;
                let _ = socket.shutdown().await;
            }
            if matches!(e, Ended::Evicted | Ended::NoHello(_)) {
                // A crowd of these is a flood: one line each would be the flood in the log.
                tracing::debug!(target: "teelog::gateway", "{source}: {e}");
            } else {
                tracing::warn!(target: "teelog::gateway", "{source}: {e}");
            }
        }
    }
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    source: &str,
    ingest: &Ingest,
    access: &Access,
    admission: Admission,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Ended> {
    let mut reader = FrameReader::server();
    let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let mut buf = vec![0u8; HELLO_READ_BUFFER];
    let Admission { slot, places, peer } = admission;
    let mut pending = Some(slot);
    let mut established = None;
    let mut member: Option<Member> = None;
    let mut stream: Option<Arc<str>> = None;
    let mut acked: u64 = 0;
    let mut reserved = Reserved::default();
    let source: Arc<str> = source.into();
    // When the frame the reader holds part of was begun (or the last one before it completed).
    let mut frame_begun: Option<tokio::time::Instant> = None;
    // Lines taken from the reader and not yet acknowledged; `taken` counts every line taken.
    let mut pipeline = Pipeline::default();
    let mut taken: u64 = 0;
    loop {
        // A client has a while to say who it is; after that, a shipper may be idle for long, but
        // not in the middle of a frame.
        let idle = tokio::time::Instant::now() + IDLE_TIMEOUT;
        let deadline = match (&stream, frame_begun) {
            (None, _) => hello_deadline,
            // As an HTTP body must: the part held counts against the memory every connection
            // shares, and a client trickling it would hold that for ever.
            (Some(_), Some(begun)) => idle.min(begun + access.request_timeout),
            (Some(_), None) => idle,
        };
        let evicted = async {
            match pending.as_mut() {
                Some(slot) => slot.evicted().await,
                None => std::future::pending().await,
            }
        };
        let superseded = async {
            match member.as_mut() {
                Some(member) => {
                    let _ = member.generation.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        let full = pipeline.len() >= SUBMISSIONS_IN_FLIGHT;
        let Pipeline { checking, handed, .. } = &mut pipeline;
        let checked = async {
            match checking.front_mut() {
                Some(oldest) => (&mut oldest.next).await,
                None => std::future::pending().await,
            }
        };
        let durable = async {
            match handed.front_mut() {
                Some(oldest) => (&mut oldest.next).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            read = tokio::time::timeout_at(deadline, socket.read(&mut buf)), if !full => match read {
                Ok(read) => Event::Read(read?),
                Err(_) if stream.is_none() => return Err(Ended::NoHello(HELLO_TIMEOUT)),
                Err(_) if frame_begun.is_some() => return Err(Ended::SlowFrame(access.request_timeout)),
                Err(_) => return Err(Ended::Silent(IDLE_TIMEOUT)),
            },
            checked = checked => Event::Checked(checked),
            outcome = durable => Event::Durable(outcome),
            () = evicted => return Err(Ended::Evicted),
            // A new run of the stream's shipper asked for its heads: this connection is from an
            // earlier one; what it submitted is in, the rest was never acknowledged.
            () = superseded => return Ok(()),
            // Stopping: what was acknowledged is durable; the shipper sends the rest again.
            () = crate::stopped(&mut stop) => return Ok(()),
        };
        let n = match event {
            Event::Read(n) => n,
            Event::Checked(checked) => {
                pipeline.hand_on(ingest, &stream, checked).await?;
                continue;
            }
            Event::Durable(outcome) => {
                pipeline.acknowledge(socket, outcome, &mut acked).await?;
                reserved.shrink_to(2 * reader.pending() + pipeline.bytes);
                continue;
            }
        };
        if n == 0 {
            // The client sent all it will: what it sent whole is handed on and acknowledged.
            pipeline.drain(socket, ingest, &stream, &mut acked).await?;
            return if reader.pending() == 0 { Ok(()) } else { Err(RelayError::Truncated.into()) };
        }
        // What the reader holds of frames not yet whole, and the lines copied out of it, come
        // out of the listener's memory budget (a stranger's hello is small and bounded on its
        // own); waiting for it leaves the client's bytes in the socket, so the client waits.
        if established.is_some() {
            let wanted = 2 * (reader.pending() + n) + pipeline.bytes;
            access.memory.reserve(&mut reserved, wanted, MEMORY_WAIT).await?;
        }
        reader.push(&buf[..n]);
        if stream.is_none() {
            let Some(frame) = reader.next_frame()? else { continue };
            let hello = Hello::parse(frame)?;
            teelog_core::batch::check_stream_name(&hello.stream)
                .map_err(|e| RelayError::BadHello(e.to_string()))?;
            if !access.token_ok(hello.token.as_deref()) {
                return Err(Ended::Refused("the hello carries no valid bearer token".into()));
            }
            // Known now: it takes a place of its own and leaves the strangers' pool.
            established = Some(places.establish(peer)?);
            member = Some(places.join(&hello.stream, hello.heads).await?);
            pending = None;
            stream = Some(hello.stream.as_str().into());
            reader.set_max(access.max_frame_bytes);
            buf = vec![0u8; READ_BUFFER];
            let welcome = if hello.heads {
                Welcome::Heads(stream_heads(
                    &access.name,
                    ingest.tips(&hello.stream, hello.instance.as_deref()).await?,
                ))
            } else {
                Welcome::Name(access.name.clone())
            };
            send(socket, &ServerMessage::Welcome(welcome)).await?;
        }
        let mut completed = false;
        loop {
            let lines = take_lines(&mut reader)?;
            if lines.is_empty() {
                break;
            }
            completed = true;
            let (count, bytes) = (lines.len() as u64, lines.iter().map(Vec::len).sum::<usize>());
            let next = ingest.check(lines, source.clone(), taken + 1);
            pipeline.checking.push_back(InFlight { count, bytes, next });
            pipeline.bytes += bytes;
            taken += count;
            while pipeline.len() > SUBMISSIONS_IN_FLIGHT {
                pipeline.advance(socket, ingest, &stream, &mut acked).await?;
            }
        }
        frame_begun = match (reader.pending(), frame_begun) {
            (0, _) => None,
            (_, Some(begun)) if !completed => Some(begun),
            _ => Some(tokio::time::Instant::now()),
        };
        reserved.shrink_to(2 * reader.pending() + pipeline.bytes);
    }
}

/// The welcome's heads (docs/FORMAT.md §14): every tip counted, the newest listed.
fn stream_heads(gateway: &str, tips: Vec<Tip>) -> StreamHeads {
    let count = tips.len() as u64;
    let heads = tips
        .into_iter()
        .take(teelog_relay::MAX_HEADS)
        .map(|tip| Head {
            epoch: tip.epoch,
            seq: tip.seq,
            hash: tip.hash,
            sealed_at: teelog_core::timestamp::format_rfc3339(tip.sealed_at),
        })
        .collect();
    StreamHeads { gateway: gateway.to_string(), tips: count, heads }
}

/// Writes one message; a client that does not read is given up on rather than waited for.
async fn send<S: AsyncWrite + Unpin>(socket: &mut S, message: &ServerMessage) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(&message.to_frame())).await {
        Ok(written) => written,
        Err(_) => {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client does not read its answers"))
        }
    }
}

/// What a connection waits for.
enum Event {
    /// Bytes read from the client.
    Read(usize),
    /// The oldest lines being checked are checked.
    Checked(Result<CheckedLines, IngestError>),
    /// The oldest lines handed to the writer are durable (or not).
    Durable(Result<Outcome, IngestError>),
}

/// Lines of a connection: how many, their bytes, and what they wait for next.
struct InFlight<T> {
    count: u64,
    bytes: usize,
    next: T,
}

/// A connection's lines taken and not yet acknowledged, oldest first: checked on the blocking
/// pool, several submissions at once; handed to the writer in the order taken, so that it can
/// write several in one group; acknowledged in that order once durable.
#[derive(Default)]
struct Pipeline {
    checking: VecDeque<InFlight<Checking>>,
    handed: VecDeque<InFlight<Durable>>,
    bytes: usize,
}

impl Pipeline {
    fn len(&self) -> usize {
        self.checking.len() + self.handed.len()
    }

    /// Hands the oldest lines being checked, `checked` now, to the writer.
    async fn hand_on(
        &mut self,
        ingest: &Ingest,
        stream: &Option<Arc<str>>,
        checked: Result<CheckedLines, IngestError>,
    ) -> Result<(), Ended> {
        let Some(InFlight { count, bytes, .. }) = self.checking.pop_front() else { return Ok(()) };
        let next = ingest.hand_checked(checked?, stream.clone()).await?;
        self.handed.push_back(InFlight { count, bytes, next });
        Ok(())
    }

    /// Acknowledges the oldest lines handed on, now that `outcome` says they are durable.
    async fn acknowledge<S: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        outcome: Result<Outcome, IngestError>,
        acked: &mut u64,
    ) -> Result<(), Ended> {
        let Some(InFlight { count, bytes, .. }) = self.handed.pop_front() else { return Ok(()) };
        outcome?;
        self.bytes -= bytes;
        *acked += count;
        send(socket, &ServerMessage::Ack(*acked)).await?;
        Ok(())
    }

    /// Waits for one step: the oldest lines handed on acknowledged, or else the oldest checked
    /// handed on.
    async fn advance<S: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        ingest: &Ingest,
        stream: &Option<Arc<str>>,
        acked: &mut u64,
    ) -> Result<(), Ended> {
        if self.handed.is_empty() {
            self.hand_on_oldest(ingest, stream).await
        } else {
            self.acknowledge_oldest(socket, acked).await
        }
    }

    /// Waits until the oldest lines being checked are, and hands them on.
    async fn hand_on_oldest(&mut self, ingest: &Ingest, stream: &Option<Arc<str>>) -> Result<(), Ended> {
        let Some(oldest) = self.checking.front_mut() else { return Ok(()) };
        let checked = (&mut oldest.next).await;
        self.hand_on(ingest, stream, checked).await
    }

    /// Waits until the oldest lines handed on are durable, and acknowledges them.
    async fn acknowledge_oldest<S: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        acked: &mut u64,
    ) -> Result<(), Ended> {
        let Some(oldest) = self.handed.front_mut() else { return Ok(()) };
        let outcome = (&mut oldest.next).await;
        self.acknowledge(socket, outcome, acked).await
    }

    /// Hands every line on, then acknowledges them all.
    async fn drain<S: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        ingest: &Ingest,
        stream: &Option<Arc<str>>,
        acked: &mut u64,
    ) -> Result<(), Ended> {
        while !self.checking.is_empty() {
            self.hand_on_oldest(ingest, stream).await?;
        }
        while !self.handed.is_empty() {
            self.acknowledge_oldest(socket, acked).await?;
        }
        Ok(())
    }
}

/// The whole line frames received so far, up to a submission's worth.
fn take_lines(reader: &mut FrameReader) -> Result<Vec<Vec<u8>>, RelayError> {
    let mut lines = Vec::new();
    while lines.len() < FRAMES_PER_SUBMISSION {
        let Some(frame) = reader.next_frame()? else { break };
        check_line(frame)?;
        lines.push(frame.to_vec());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_peer_cap_counts_a_vsock_client_by_its_cid_as_tcp_by_its_ip() {
        let places = Places::new(RelayLimits { pending: 4, established: 4, per_peer: 2 });
        // Two connections from one enclave, each from a port of its own: one peer.
        let enclave = VsockAddress { cid: 16, port: 1024 }.peer();
        assert_eq!(enclave, VsockAddress { cid: 16, port: 50_000 }.peer());
        let first = places.establish(enclave).unwrap();
        let _second = places.establish(enclave).unwrap();
        let err = places.establish(enclave).err().unwrap();
        assert_eq!(err.to_string(), "2 relay connections from vsock CID 16 are open; try again later");
        // Another CID, and a TCP client, are other peers; all share the relay's places.
        let other = places.establish(VsockAddress { cid: 17, port: 1024 }.peer()).unwrap();
        let tcp: SocketAddr = "10.0.0.16:7400".parse().unwrap();
        let _tcp = places.establish(tcp.peer()).unwrap();
        assert!(matches!(places.establish(Peer::Cid(18)), Err(Ended::TooMany(_))), "4 places in all");
        drop((first, other));
        assert!(places.establish(enclave).is_ok(), "a place given back is taken again");
    }
}
