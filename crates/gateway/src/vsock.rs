//! The relay listener over AF_VSOCK: how a Nitro enclave (or any virtual machine) reaches a
//! gateway on its parent, which has no network to it. Connections come with the CID they come
//! from, which the relay's per-peer cap counts as it counts IP addresses over TCP.

use std::time::Duration;

use teelog_relay::address::VsockAddress;

/// A vsock address could not be listened on; names it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (relay): {source}")]
pub struct VsockBindError {
    /// The address asked for.
    pub addr: VsockAddress,
    /// The operating system's error (no vsock transport in this kernel, port in use, …).
    pub source: std::io::Error,
}

/// A bound vsock listener, serving as an [`axum::serve::Listener`] for [`crate::relay::serve`].
pub struct VsockListener {
    inner: tokio_vsock::VsockListener,
    addr: VsockAddress,
}

impl VsockListener {
    /// Binds `addr` (`vsock://ANY:PORT` takes connections to every CID of this machine).
    pub fn bind(addr: VsockAddress) -> Result<Self, VsockBindError> {
        let inner = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(addr.cid, addr.port))
            .map_err(|source| VsockBindError { addr, source })?;
        tracing::info!(target: "teelog::serve", "relay listening on {addr}");
        Ok(Self { inner, addr })
    }
}

impl axum::serve::Listener for VsockListener {
    type Io = tokio_vsock::VsockStream;
    type Addr = VsockAddress;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((socket, peer)) => return (socket, VsockAddress { cid: peer.cid(), port: peer.port() }),
                // Out of descriptors, or a peer gone before it was taken: waiting lets
                // connections end and give theirs back, instead of spinning on the error.
                Err(e) => {
                    tracing::warn!(target: "teelog::gateway", "relay {}: cannot accept a connection: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
