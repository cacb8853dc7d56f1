//! Servers shared by the shipper and the gateway: binding with a message that names the
//! listener, serving a router with bounded resources until told to stop, and the Prometheus
//! endpoint. Whoever can reach a listener is assumed hostile: a connection that has not finished
//! its request headers in time is closed, connections are capped, and at the cap the oldest one
//! that is not in the middle of a request makes room, so a crowd of idle connections cannot
//! keep a real client out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// A listener could not be bound; names it and its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    /// The listener's name in messages (e.g. `relay`).
    pub what: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// The operating system's error (address in use, permission denied, …).
    pub source: std::io::Error,
}

/// Binds `addr` for the listener called `what` (in messages and the log).
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<tokio::net::TcpListener, BindError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| BindError { what, addr, source })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(target: "teelog::serve", "{what} listening on {local}");
    }
    Ok(listener)
}

/// What one HTTP listener allows.
#[derive(Clone)]
pub struct HttpLimits {
    /// The listener's name in metrics (`teelog_requests_refused_total{source}`) and the log.
    pub what: &'static str,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, from connecting or from the end
    /// of its previous request.
    pub header_read_timeout: Duration,
    /// Where refused connections are counted, if anywhere.
    pub metrics: Option<Arc<Metrics>>,
}

impl HttpLimits {
    /// The defaults for the listener called `what`.
    pub fn new(what: &'static str) -> Self {
        Self { what, max_connections: 256, header_read_timeout: Duration::from_secs(10), metrics: None }
    }
}

/// The most a connection buffers of what a client sent: request headers must fit in it.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Serves `router` on `listener` until `stop` turns true, finishing the requests in hand, with
/// the default [`HttpLimits`].
pub async fn serve_http<L>(listener: L, router: axum::Router, stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    serve_http_with(listener, router, stop, HttpLimits::new("http")).await
}

/// Serves `router` on `listener` within `limits` until `stop` turns true, finishing the
/// requests in hand.
pub async fn serve_http_with<L>(
    mut listener: L,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    limits: HttpLimits,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let slots = ConnectionSlots::new(limits.max_connections);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // A connection's read buffer, request headers included, stays small: hyper's default allows
    // about 400 KiB each, which a crowd of connections would multiply.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(READ_BUFFER_BYTES);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = stopped(&mut stop) => break,
        };
        let Some(mut slot) = slots.admit() else {
            // Every connection is in the middle of a request: this one waits for none of them.
            tracing::warn!(target: "teelog::serve", "{} {peer:?}: turned away, {} connections are busy", limits.what, limits.max_connections);
            if let Some(metrics) = &limits.metrics {
                metrics.refused(limits.what, "too_many");
            }
            continue;
        };
        let marker = slot.marker();
        let router = router.clone();
        let service = hyper::service::service_fn(move |request| {
            // A connection inside a request is not the one to close for room.
            let busy = marker.busy();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(busy);
                response
            }
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let mut stop = stop.clone();
        let (what, metrics) = (limits.what, limits.metrics.clone());
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Closed to make room: it was between requests (or before its first).
                () = slot.evicted() => {
                    if let Some(metrics) = metrics {
                        metrics.refused(what, "evicted");
                    }
                }
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// `GET /metrics`: what `render` says, in the Prometheus text format.
pub fn metrics_router(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = render();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}

/// Connections admitted up to a cap. At the cap, the oldest connection that is not busy (not in
/// the middle of a request) is told to close, and the new one takes its place: an idle crowd
/// is replaced as fast as it arrives, while a client that goes straight to its request is busy
/// before anyone can push it out.
pub struct ConnectionSlots {
    max: usize,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    next: u64,
    /// By admission order: the first idle one is the oldest.
    open: BTreeMap<u64, SlotEntry>,
}

struct SlotEntry {
    busy: usize,
    evict: oneshot::Sender<()>,
}

impl ConnectionSlots {
    /// Room for `max` connections (at least one).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), state: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection, or None when every open one is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.lock();
        if state.open.len() >= self.max {
            let oldest_idle = state.open.iter().find(|(_, e)| e.busy == 0).map(|(id, _)| *id)?;
            if let Some(entry) = state.open.remove(&oldest_idle) {
                let _ = entry.evict.send(());
            }
        }
        let id = state.next;
        state.next += 1;
        let (evict, evicted) = oneshot::channel();
        state.open.insert(id, SlotEntry { busy: 0, evict });
        Some(Slot { marker: SlotMarker { slots: self.clone(), id }, evicted })
    }

    /// Connections open now.
    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One admitted connection's place; dropping it frees the place.
pub struct Slot {
    marker: SlotMarker,
    evicted: oneshot::Receiver<()>,
}

impl Slot {
    /// Resolves once this connection has been chosen to make room for a newer one.
    pub async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }

    /// A handle that marks the connection busy.
    pub fn marker(&self) -> SlotMarker {
        self.marker.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.marker.slots.lock().open.remove(&self.marker.id);
    }
}

/// A connection's place among the slots, to mark it busy while it serves a request.
#[derive(Clone)]
pub struct SlotMarker {
    slots: Arc<ConnectionSlots>,
    id: u64,
}

impl SlotMarker {
    /// Marks the connection busy until the guard is dropped.
    pub fn busy(&self) -> Busy {
        if let Some(entry) = self.slots.lock().open.get_mut(&self.id) {
            entry.busy += 1;
        }
        Busy(self.clone())
    }
}

/// The connection is inside a request (not to be closed for room) while this lives.
pub struct Busy(SlotMarker);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(entry) = self.0.slots.lock().open.get_mut(&self.0.id) {
            entry.busy = entry.busy.saturating_sub(1);
        }
    }
}

/// A bound on the bytes of requests held in memory at once, across every connection of a
/// listener (or several): each connection reserves what it is about to hold, and waits, up to a
/// limit, while others hold the rest.
#[derive(Clone)]
pub struct ByteBudget {
    kib: Arc<Semaphore>,
    total_bytes: usize,
}

/// Bytes of a [`ByteBudget`] one holder has reserved; given back when dropped.
#[derive(Default)]
pub struct Reserved {
    permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{wanted} bytes could not be set aside within {waited:?}: requests already hold most of the \
     {total} bytes the listener keeps in memory at once; try again later"
)]
/// No room in the byte budget within the wait allowed.
pub struct BudgetExhausted {
    /// Bytes asked for.
    pub wanted: usize,
    /// The budget's size.
    pub total: usize,
    /// How long the request waited.
    pub waited: Duration,
}

impl ByteBudget {
    /// A budget of `total_bytes` (rounded up to whole KiB).
    pub fn new(total_bytes: usize) -> Self {
        let kib = u32::try_from(total_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Self { kib: Arc::new(Semaphore::new(kib as usize)), total_bytes }
    }

    /// Makes `reserved` hold at least `bytes`, waiting at most `wait` for others to give some
    /// back; a request larger than the whole budget is refused at once.
    pub async fn reserve(
        &self,
        reserved: &mut Reserved,
        bytes: usize,
        wait: Duration,
    ) -> Result<(), BudgetExhausted> {
        let held = reserved.permit.as_ref().map_or(0, |p| p.num_permits());
        let wanted_kib = bytes.div_ceil(1024);
        if wanted_kib <= held {
            return Ok(());
        }
        let exhausted = || BudgetExhausted { wanted: bytes, total: self.total_bytes, waited: wait };
        let more = u32::try_from(wanted_kib - held).map_err(|_| exhausted())?;
        if wanted_kib * 1024 > self.total_bytes.next_multiple_of(1024) {
            return Err(exhausted());
        }
        let permit = tokio::time::timeout(wait, self.kib.clone().acquire_many_owned(more))
            .await
            .map_err(|_| exhausted())?
            .map_err(|_| exhausted())?;
        match &mut reserved.permit {
            Some(held) => held.merge(permit),
            None => reserved.permit = Some(permit),
        }
        Ok(())
    }
}

impl Reserved {
    /// Gives back all but `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(1024);
        if let Some(permit) = &mut self.permit {
            let held = permit.num_permits();
            if held > keep {
                drop(permit.split(held - keep));
            }
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let slots = ConnectionSlots::new(2);
        let mut first = slots.admit().unwrap();
        let second = slots.admit().unwrap();
        let busy = second.marker().busy();
        let _third = slots.admit().unwrap();
        // The first was idle, and the oldest: it is told to go, and its place is taken.
        tokio::time::timeout(Duration::from_secs(1), first.evicted()).await.unwrap();
        assert_eq!(slots.len(), 2);
        // Both left are busy or newer; with the second busy, the third goes next.
        drop(busy);
        let _fourth = slots.admit().unwrap();
        assert_eq!(slots.len(), 2);
        let all_busy = ConnectionSlots::new(1);
        let only = all_busy.admit().unwrap();
        let _busy = only.marker().busy();
        assert!(all_busy.admit().is_none(), "a connection inside a request is never pushed out");
        drop(first);
        drop(second);
    }

    #[tokio::test]
    async fn a_budget_bounds_what_is_held_at_once() {
        let budget = ByteBudget::new(10 * 1024);
        let wait = Duration::from_millis(50);
        let mut a = Reserved::default();
        budget.reserve(&mut a, 6 * 1024, wait).await.unwrap();
        let mut b = Reserved::default();
        let err = budget.reserve(&mut b, 6 * 1024, wait).await.unwrap_err();
        assert_eq!(err.wanted, 6 * 1024);
        assert!(budget.reserve(&mut b, 11 * 1024, Duration::from_secs(60)).await.is_err());
        a.shrink_to(1024);
        assert_eq!(a.bytes(), 1024);
        budget.reserve(&mut b, 6 * 1024, wait).await.unwrap();
        budget.reserve(&mut a, 4 * 1024, wait).await.unwrap();
        assert_eq!(a.bytes() + b.bytes(), 10 * 1024);
    }
}
