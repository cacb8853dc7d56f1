//! Loopback servers shared by the shipper and the gateway: binding with a message that names
//! the listener, serving a router until told to stop, and the Prometheus endpoint.

use std::net::SocketAddr;

use tokio::sync::watch;

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

/// Serves `router` on `listener` until `stop` turns true, finishing the requests in hand.
pub async fn serve_http<L>(listener: L, router: axum::Router, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let addr = listener.local_addr().ok();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|&s| s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(target: "teelog::serve", "HTTP server on {addr:?} failed: {e}");
    }
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
