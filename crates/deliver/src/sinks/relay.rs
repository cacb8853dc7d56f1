//! `kind = "relay"`: spool lines sent to a `teelog gateway` in the relay protocol (docs/FORMAT.md
//! §14), one frame per line, attestation lines included. A line counts as delivered once the
//! gateway has acknowledged it, which it does only once the line is durable in its own spool; a
//! broken connection resumes after the last acknowledged line.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_platform_verifier::BuilderVerifierExt;
use teelog_relay::address::RelayAddress;
use teelog_relay::{push_frame, FrameReader, Hello, RelayError, ServerMessage, StreamHeads, Welcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use teelog_store::reader::Position;

use super::{OpenError, Progress};
use crate::config::{RelaySinkConfig, RelayTlsConfig};
use crate::delivery::{Delivery, Sink, SinkError};
use crate::dial::{dial, Io};

/// Bytes of frames written before the acknowledgements are read.
const WRITE_BYTES: usize = 1 << 20;

/// Sends spooled lines to a gateway over the relay protocol (docs/FORMAT.md §14); a delivery is
/// done once the gateway acknowledged every line of it, and a broken connection sends again what
/// was not acknowledged.
pub struct RelaySink {
    address: RelayAddress,
    hello: Hello,
    timeout: Duration,
    /// With TLS: the connector and the name the gateway's certificate must carry.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connection: Option<Connection>,
    progress: Progress,
    /// The chunk (by the position after it) and the indexes in it of the lines the gateway
    /// refused as too large.
    too_large: Option<(Position, BTreeSet<usize>)>,
}

struct Connection {
    socket: Box<dyn Io>,
    replies: FrameReader,
    /// Line frames sent on this connection, and how many of them the gateway has acknowledged.
    sent: u64,
    acked: u64,
}

impl RelaySink {
    /// A sink for the spool of `stream`.
    pub fn open(config: &RelaySinkConfig, stream: &str) -> Result<Self, OpenError> {
        let token = crate::config::bearer_token(&config.bearer_token, &config.bearer_token_file)?;
        let address = RelayAddress::parse(&config.address)?;
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let name = crate::config::tls_server_name(tls, &address)?;
                let name = ServerName::try_from(name.to_string())
                    .map_err(|e| OpenError::Tls(format!("server name {name:?}: {e}")))?;
                Some((tokio_rustls::TlsConnector::from(client_config(tls)?), name))
            }
        };
        Ok(Self {
            address,
            hello: Hello::new(stream, token, false),
            timeout: config.timeout,
            tls,
            connection: None,
            progress: Progress::default(),
            too_large: None,
        })
    }

    async fn connect(&self) -> Result<Connection, SinkError> {
        Ok(self.open_connection(&self.hello).await?.0)
    }

    /// Where the sink's stream stands in the gateway's durable spool (docs/FORMAT.md §14), asked
    /// on a connection of its own that sends no line. A gateway that does not answer with heads
    /// (older than the `heads` member) is an error, never "no head".
    /// With `instance` (a genesis epoch), only that instance's heads.
    pub async fn heads(&self, instance: Option<&str>) -> Result<StreamHeads, SinkError> {
        let hello = Hello { heads: true, instance: instance.map(str::to_string), ..self.hello.clone() };
        match self.open_connection(&hello).await?.1 {
            Welcome::Heads(heads) => Ok(heads),
            Welcome::Name(gateway) => Err(SinkError::permanent(
                "protocol",
                format!("the gateway {gateway} at {} did not report the stream's heads", self.address),
            )),
        }
    }

    /// The address the sink relays to.
    pub fn address(&self) -> &RelayAddress {
        &self.address
    }

    /// A connection that has said `hello` and been welcomed.
    async fn open_connection(&self, hello: &Hello) -> Result<(Connection, Welcome), SinkError> {
        let unreachable = |e: String| {
            SinkError::retry("connect", format!("could not reach the gateway at {}: {e}", self.address))
        };
        let socket = tokio::time::timeout(self.timeout, dial(&self.address))
            .await
            .map_err(|_| unreachable(format!("no connection within {:?}", self.timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let socket: Box<dyn Io> = match &self.tls {
            None => socket,
            Some((connector, name)) => {
                let handshake = connector.connect(name.clone(), socket);
                let stream = tokio::time::timeout(self.timeout, handshake)
                    .await
                    .map_err(|_| unreachable(format!("no TLS handshake within {:?}", self.timeout)))?
                    .map_err(|e| unreachable(format!("TLS: {e}")))?;
                Box::new(stream)
            }
        };
        let mut connection = Connection { socket, replies: FrameReader::client(), sent: 0, acked: 0 };
        connection.socket.write_all(&hello.opening()).await.map_err(|e| unreachable(e.to_string()))?;
        match connection.reply(self.timeout, &self.address).await? {
            ServerMessage::Welcome(welcome) => {
                let gateway = match &welcome {
                    Welcome::Name(name) | Welcome::Heads(StreamHeads { gateway: name, .. }) => name,
                };
                tracing::info!(target: "teelog::deliver", "relay: connected to {gateway} at {}", self.address);
                Ok((connection, welcome))
            }
            other => Err(unexpected(&self.address, &other)),
        }
    }

    async fn deliver_chunk(&mut self, chunk: &Delivery<'_>) -> Result<(), SinkError> {
        let mut at = self.progress.resume(chunk);
        if self.too_large.as_ref().is_some_and(|(of, _)| *of != chunk.next) {
            self.too_large = None;
        }
        while at < chunk.entries.len() {
            // Lines of this chunk the gateway refused as too large are not sent again.
            let refused = self.too_large.as_ref().map(|(_, lines)| lines);
            if refused.is_some_and(|lines| lines.contains(&at)) {
                // Everything before it is acknowledged: it is passed over.
                self.progress.settled(at + 1);
                at += 1;
                continue;
            }
            let end =
                refused.and_then(|lines| lines.range(at..).next().copied()).unwrap_or(chunk.entries.len());
            let mut connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.connect().await?,
            };
            let (first, start) = (at, connection.sent);
            let mut frames = Vec::new();
            while at < end && (at == first || frames.len() < WRITE_BYTES) {
                let line = chunk.entries[at].line;
                push_frame(&mut frames, &line[..frame_len(line)]);
                at += 1;
            }
            let write = tokio::time::timeout(self.timeout, connection.socket.write_all(&frames)).await;
            let write_failed = match write {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("relay connection to the gateway lost: {e}")),
                Err(_) => {
                    Some(format!("the gateway at {} took no data for {:?}", self.address, self.timeout))
                }
            };
            connection.sent += (at - first) as u64;
            // Read even after a failed write: a gateway that refuses a frame says why before it
            // closes, and the lines before it may be acknowledged.
            let mut refusal = None;
            while connection.acked < connection.sent {
                match connection.reply(self.timeout, &self.address).await {
                    Ok(ServerMessage::Ack(n)) if n <= connection.sent && n >= connection.acked => {
                        connection.acked = n;
                        self.progress.settled(first + (n - start) as usize);
                    }
                    Ok(ServerMessage::Error(why)) => {
                        refusal = Some(why);
                        break;
                    }
                    Ok(other) => return Err(unexpected(&self.address, &other)),
                    Err(e) => return Err(write_failed.map_or(e, |lost| SinkError::retry("connect", lost))),
                }
            }
            let unacked = first + (connection.acked - start) as usize;
            match (refusal, write_failed) {
                (None, None) => self.connection = Some(connection),
                (None, Some(lost)) => return Err(SinkError::retry("connect", lost)),
                (Some(why), _) => {
                    // A line larger than the gateway takes would be refused on every retry,
                    // and every later line would wait behind it: it is refused for good, and
                    // the rest sent on a new connection.
                    let too_large = RelayError::too_large_limit(&why).and_then(|max| {
                        (unacked..at).find(|&i| frame_len(chunk.entries[i].line) > max).map(|i| (i, max))
                    });
                    let Some((index, max)) = too_large else {
                        return Err(unexpected(&self.address, &ServerMessage::Error(why)));
                    };
                    let len = frame_len(chunk.entries[index].line);
                    tracing::error!(target: "teelog::deliver", "relay: a spool line of {len} bytes is larger than the {max} the gateway at {} takes; it is not relayed", self.address);
                    self.progress.refuse(SinkError::permanent(
                        "too_large",
                        format!(
                            "a line of {len} bytes is larger than the {max} bytes the gateway at {} takes",
                            self.address
                        ),
                    ));
                    // The gateway may have dropped the lines before it that it had not
                    // acknowledged: they are sent again, on a new connection, without it.
                    self.too_large.get_or_insert_with(|| (chunk.next, BTreeSet::new())).1.insert(index);
                    at = unacked;
                }
            }
        }
        self.progress.finish()
    }
}

/// The length of the frame a spool line is sent as (without its newline).
fn frame_len(line: &[u8]) -> usize {
    line.strip_suffix(b"\n").unwrap_or(line).len()
}

/// The TLS client configuration of a relay sink; errors name the file.
fn client_config(tls: &RelayTlsConfig) -> Result<Arc<rustls::ClientConfig>, OpenError> {
    let named = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        OpenError::Tls(format!("{}: {e}", path.display()))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OpenError::Tls(e.to_string()))?;
    let builder = match &tls.ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| named(path, &e))? {
                roots.add(cert.map_err(|e| named(path, &e))?).map_err(|e| named(path, &e))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| OpenError::Tls(format!("the system's roots: {e}")))?,
    };
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(cert).and_then(|c| c.collect()).map_err(|e| named(cert, &e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| named(cert, &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A gateway's answer that is not the one expected: its error, or a protocol violation. Both
/// are retried on a new connection; the lines stay in the spool meanwhile.
fn unexpected(address: &RelayAddress, message: &ServerMessage) -> SinkError {
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
    async fn reply(&mut self, timeout: Duration, address: &RelayAddress) -> Result<ServerMessage, SinkError> {
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
