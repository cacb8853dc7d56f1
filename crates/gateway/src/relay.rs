//! The relay listener (docs/FORMAT.md §14): each connection is one shipper sending its spool
//! lines, one per frame; they are acknowledged once the writer has them durable.

use std::sync::Arc;

use teelog_relay::{check_line, FrameReader, Hello, RelayError, ServerMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::ingest::Ingest;
use crate::Access;

/// Line frames taken from the socket before they are handed to the writer together.
const FRAMES_PER_SUBMISSION: usize = 4096;
const READ_BUFFER: usize = 256 << 10;
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Relay connections served at once; more are turned away until one ends.
const MAX_CONNECTIONS: usize = 1024;
/// Shippers send heartbeats every 10 s by default; a connection silent this long is closed, and
/// a shipper that is still there connects again.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Accepts relay connections on `listener` (plain TCP or TLS) until `stop` turns true.
pub async fn serve<L: axum::serve::Listener<Addr = std::net::SocketAddr>>(
    mut listener: L,
    ingest: Ingest,
    access: Arc<Access>,
    mut stop: watch::Receiver<bool>,
) {
    let connections_stop = stop.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            (socket, peer) = listener.accept() => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(target: "teelog::gateway", "relay {peer}: turned away, {MAX_CONNECTIONS} connections are open");
                    access.metrics.refused("relay", "too_many");
                    continue;
                };
                let (ingest, access, stop) = (ingest.clone(), access.clone(), connections_stop.clone());
                tokio::spawn(async move {
                    connection(socket, format!("relay {peer}"), ingest, access, stop).await;
                    drop(slot);
                });
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
    #[error("no hello within {0:?}")]
    NoHello(std::time::Duration),
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
            Ended::Silent(_) | Ended::NoHello(_) => "timeout",
            Ended::Io(_) => "io",
        }
    }
}

/// Serves one shipper until it closes the connection or breaks the protocol.
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    source: String,
    ingest: Ingest,
    access: Arc<Access>,
    stop: watch::Receiver<bool>,
) {
    match relay(&mut socket, &source, &ingest, &access, stop).await {
        Ok(()) => tracing::debug!(target: "teelog::gateway", "{source}: closed"),
        Err(e) => {
            if !matches!(e, Ended::Io(_)) {
                access.metrics.refused("relay", e.reason());
                let _ = send(&mut socket, &ServerMessage::Error(e.to_string())).await;
                let _ = socket.shutdown().await;
            }
            tracing::warn!(target: "teelog::gateway", "{source}: {e}");
        }
    }
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    source: &str,
    ingest: &Ingest,
    access: &Access,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Ended> {
    let mut reader = FrameReader::server();
    let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let mut buf = vec![0u8; READ_BUFFER];
    let mut stream: Option<Arc<str>> = None;
    let mut acked: u64 = 0;
    let source: Arc<str> = source.into();
    loop {
        // A client has a while to say who it is; after that, a shipper may be idle for long.
        let deadline = match stream {
            None => hello_deadline,
            Some(_) => tokio::time::Instant::now() + IDLE_TIMEOUT,
        };
        let n = tokio::select! {
            read = tokio::time::timeout_at(deadline, socket.read(&mut buf)) => match read {
                Ok(read) => read?,
                Err(_) if stream.is_none() => return Err(Ended::NoHello(HELLO_TIMEOUT)),
                Err(_) => return Err(Ended::Silent(IDLE_TIMEOUT)),
            },
            // Stopping: what was acknowledged is durable; the shipper sends the rest again.
            () = crate::stopped(&mut stop) => return Ok(()),
        };
        if n == 0 {
            return if reader.pending() == 0 { Ok(()) } else { Err(RelayError::Truncated.into()) };
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
            stream = Some(hello.stream.as_str().into());
            reader.set_max(access.max_frame_bytes);
            send(socket, &ServerMessage::Welcome(access.name.clone())).await?;
        }
        loop {
            let lines = take_lines(&mut reader)?;
            if lines.is_empty() {
                break;
            }
            let count = lines.len() as u64;
            ingest.submit(lines, source.clone(), acked + 1, stream.clone()).await?;
            acked += count;
            send(socket, &ServerMessage::Ack(acked)).await?;
        }
    }
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
