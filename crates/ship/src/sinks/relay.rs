//! `kind = "relay"`: spool lines sent to a `teelog gateway` in the relay protocol (docs/FORMAT.md
//! §14), one frame per line, attestation lines included. A line counts as delivered once the
//! gateway has acknowledged it, which it does only once the line is durable in its own spool; a
//! broken connection resumes after the last acknowledged line.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use teelog_relay::{push_frame, FrameReader, Hello, ServerMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Progress;
use crate::config::RelaySinkConfig;
use crate::delivery::{Delivery, Sink, SinkError};

/// Bytes of frames written before the acknowledgements are read.
const WRITE_BYTES: usize = 1 << 20;

pub struct RelaySink {
    address: String,
    hello: Hello,
    timeout: Duration,
    connection: Option<Connection>,
    progress: Progress,
}

struct Connection {
    socket: TcpStream,
    replies: FrameReader,
    /// Line frames sent on this connection, and how many of them the gateway has acknowledged.
    sent: u64,
    acked: u64,
}

impl RelaySink {
    /// A sink for the spool of `stream`.
    pub fn open(config: &RelaySinkConfig, stream: &str) -> Result<Self, String> {
        let token = crate::config::bearer_token(&config.bearer_token, &config.bearer_token_file)?;
        Ok(Self {
            address: config.address.clone(),
            hello: Hello { relay: teelog_relay::VERSION, stream: stream.to_string(), token },
            timeout: config.timeout,
            connection: None,
            progress: Progress::default(),
        })
    }

    async fn connect(&self) -> Result<Connection, SinkError> {
        let unreachable = |e: String| {
            SinkError::retry("connect", format!("could not reach the gateway at {}: {e}", self.address))
        };
        let socket = tokio::time::timeout(self.timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| unreachable(format!("no connection within {:?}", self.timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = socket.set_nodelay(true);
        let mut connection = Connection { socket, replies: FrameReader::client(), sent: 0, acked: 0 };
        connection.socket.write_all(&self.hello.opening()).await.map_err(|e| unreachable(e.to_string()))?;
        match connection.reply(self.timeout, &self.address).await? {
            ServerMessage::Welcome(gateway) => {
                tracing::info!(target: "teelog::ship", "relay: connected to {gateway} at {}", self.address);
                Ok(connection)
            }
            other => Err(unexpected(&self.address, &other)),
        }
    }

    async fn deliver_chunk(&mut self, chunk: &Delivery<'_>) -> Result<(), SinkError> {
        let mut at = self.progress.resume(chunk);
        while at < chunk.entries.len() {
            let mut connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.connect().await?,
            };
            let (first, start) = (at, connection.sent);
            let mut frames = Vec::new();
            while at < chunk.entries.len() && (at == first || frames.len() < WRITE_BYTES) {
                let line = chunk.entries[at].line;
                push_frame(&mut frames, line.strip_suffix(b"\n").unwrap_or(line));
                at += 1;
            }
            let lost = |e: std::io::Error| {
                SinkError::retry("connect", format!("relay connection to the gateway lost: {e}"))
            };
            connection.socket.write_all(&frames).await.map_err(lost)?;
            connection.sent += (at - first) as u64;
            while connection.acked < connection.sent {
                match connection.reply(self.timeout, &self.address).await? {
                    ServerMessage::Ack(n) if n <= connection.sent && n >= connection.acked => {
                        connection.acked = n;
                        self.progress.settled(first + (n - start) as usize);
                    }
                    other => return Err(unexpected(&self.address, &other)),
                }
            }
            self.connection = Some(connection);
        }
        self.progress.finish()
    }
}

/// A gateway's answer that is not the one expected: its error, or a protocol violation. Both
/// are retried on a new connection; the lines stay in the spool meanwhile.
fn unexpected(address: &str, message: &ServerMessage) -> SinkError {
    match message {
        ServerMessage::Error(why) => {
            SinkError::retry("rejected", format!("the gateway at {address} refused: {why}"))
        }
        other => {
            SinkError::retry("protocol", format!("the gateway at {address} answered {other:?} out of turn"))
        }
    }
}

impl Connection {
    /// The gateway's next message.
    async fn reply(&mut self, timeout: Duration, address: &str) -> Result<ServerMessage, SinkError> {
        read_message(&mut self.socket, &mut self.replies, timeout)
            .await
            .map_err(|e| SinkError::retry("connect", format!("relay to {address}: {e}")))
    }
}

async fn read_message<S: AsyncRead + Unpin>(
    socket: &mut S,
    replies: &mut FrameReader,
    timeout: Duration,
) -> Result<ServerMessage, String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = replies.next_frame().map_err(|e| e.to_string())? {
            return ServerMessage::parse(frame).map_err(|e| e.to_string());
        }
        let n = tokio::time::timeout(timeout, socket.read(&mut buf))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|e| format!("connection lost: {e}"))?;
        if n == 0 {
            return Err("the gateway closed the connection".into());
        }
        replies.push(&buf[..n]);
    }
}

impl Sink for RelaySink {
    fn deliver<'a>(
        &'a mut self,
        chunk: &'a Delivery<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>> {
        Box::pin(self.deliver_chunk(chunk))
    }
}
