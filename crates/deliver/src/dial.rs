//! The byte streams a relay client runs over: TCP, or AF_VSOCK to a host or parent instance
//! (docs/FORMAT.md §14). The protocol, and TLS when asked for, go on top unchanged.

use teelog_relay::address::RelayAddress;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connection to a gateway, whatever it runs over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Connects to `address`; the caller bounds the time it takes.
pub async fn dial(address: &RelayAddress) -> std::io::Result<Box<dyn Io>> {
    match address {
        RelayAddress::Tcp(host_port) => {
            let socket = tokio::net::TcpStream::connect(host_port.as_str()).await?;
            // Acknowledgements are small and awaited: they must not wait for Nagle.
            let _ = socket.set_nodelay(true);
            Ok(Box::new(socket))
        }
        RelayAddress::Vsock(vsock) => {
            let socket =
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(vsock.cid, vsock.port)).await?;
            Ok(Box::new(socket))
        }
    }
}
