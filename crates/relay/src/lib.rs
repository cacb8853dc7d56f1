//! The relay protocol (docs/FORMAT.md §14), sans-IO: a shipper sends its spool lines to a
//! `teelog gateway` over a byte stream (TCP, TLS or vsock), one line per frame, and the gateway
//! acknowledges them once they are durable in its own spool.
//!
//! ```text
//! client: MAGIC, frame(hello JSON), frame(line), frame(line), …
//! server: frame({"welcome":…}), frame({"ack":N}), …   or frame({"error":…}) and close
//! ```
//!
//! A hello with `"heads":true` gets a welcome naming where the stream stands in the gateway's
//! durable spool ([`StreamHeads`]): what a restarting shipper links its new epoch to.
//!
//! A frame is a 4-byte big-endian length and that many bytes. `ack` counts the line frames of
//! the connection that are durable, so a client knows exactly which lines to send again on a
//! new connection: those after the last ack.
#![forbid(unsafe_code)]

pub mod address;

use serde::{Deserialize, Serialize};

/// The first bytes a client sends: they tell a relay client from anything else on the port.
pub const MAGIC: &[u8; 8] = b"TEELOGR1";
/// The protocol version this crate speaks, sent in [`Hello::relay`]; a server refuses others.
pub const VERSION: u32 = 1;
/// The largest frame either side accepts unless configured otherwise.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// The largest hello a server accepts: it is read before the client is known.
pub const MAX_HELLO: usize = 64 << 10;
/// The largest server message (welcome, ack, error) a client accepts.
pub const MAX_SERVER_MESSAGE: usize = 64 << 10;

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The protocol version the client speaks: [`VERSION`].
    pub relay: u32,
    /// The shipper's stream: where its attestation lines (which name no stream) belong.
    pub stream: String,
    /// A bearer token, when the gateway asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Ask for the stream's durable heads: the welcome is then a [`Welcome::Heads`]. A gateway
    /// older than this member refuses the hello (unknown member), which a client that needs the
    /// heads reports as such rather than linking to a head of its own choosing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heads: bool,
    /// With [`Hello::heads`], the instance of the stream (docs/FORMAT.md §5.5) whose heads are
    /// asked for, named by its genesis epoch (32 lower-case hex digits): a replica that starts
    /// without chain state links to its own instance's head, not to another replica's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Hello {
    /// A hello for `stream`, with the gateway's `token` if it asks for one; `heads` asks for
    /// the stream's durable heads in the welcome.
    pub fn new(stream: &str, token: Option<String>, heads: bool) -> Self {
        Self { relay: VERSION, stream: stream.to_string(), token, heads, instance: None }
    }
}

/// The server's first answer. Without [`Hello::heads`] it is the gateway's name alone (the
/// shape every version-1 client reads); with it, the name and the stream's heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Welcome {
    /// The gateway's name.
    Name(String),
    /// The gateway's name and where the hello's stream stands in its durable spool.
    Heads(StreamHeads),
}

/// The most heads a welcome lists; [`StreamHeads::tips`] counts them all.
pub const MAX_HEADS: usize = 16;

/// Where a stream stands in the gateway's durable spool (docs/FORMAT.md §14): the heads of its
/// epochs that no other epoch continues from (its chain tips), newest `sealed_at` first. None:
/// the gateway holds no validly signed batch of the stream. One: the stream's head. Several:
/// the stream is forked (two epochs continue from one head, or an epoch goes on after its
/// hand-over) or has several signers, and the client must not pick one by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHeads {
    /// The gateway's name.
    pub gateway: String,
    /// How many tips the stream has; only the newest [`MAX_HEADS`] are in `heads`.
    pub tips: u64,
    /// The tips, newest first.
    pub heads: Vec<Head>,
}

/// The newest validly signed batch of one epoch that the gateway holds durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The epoch.
    pub epoch: String,
    /// Its newest seq the gateway holds.
    pub seq: u64,
    /// The SHA-256 (lower-case hex) of that batch's header, what a new epoch's `prev` names.
    pub hash: String,
    /// That header's `sealed_at` (RFC 3339, UTC).
    pub sealed_at: String,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// The hello was accepted; names the gateway (and, if asked, the stream's heads).
    Welcome(Welcome),
    /// The first N line frames of this connection are durable.
    Ack(u64),
    /// The connection is refused or ended; the text says why.
    Error(String),
}

impl ServerMessage {
    /// The message as one frame, ready to write.
    pub fn to_frame(&self) -> Vec<u8> {
        // A enum of strings and numbers always serialises.
        frame(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// A server message from a frame's payload; anything else is [`RelayError::BadMessage`].
    pub fn parse(payload: &[u8]) -> Result<Self, RelayError> {
        serde_json::from_slice(payload).map_err(|e| RelayError::BadMessage(e.to_string()))
    }
}

impl Hello {
    /// The bytes a client opens a connection with: the magic and the hello frame.
    pub fn opening(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(frame(serde_json::to_string(self).unwrap_or_default().as_bytes()));
        out
    }

    /// The hello from the first frame's payload. Unknown members and another protocol version
    /// are refused; the token is not checked here (that is the server's configuration).
    pub fn parse(payload: &[u8]) -> Result<Self, RelayError> {
        let hello: Hello =
            serde_json::from_slice(payload).map_err(|e| RelayError::BadHello(e.to_string()))?;
        if hello.relay != VERSION {
            return Err(RelayError::Version(hello.relay));
        }
        if let Some(instance) = &hello.instance {
            let epoch =
                instance.len() == 32 && instance.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !hello.heads || !epoch {
                return Err(RelayError::BadHello(format!(
                    "instance {instance:?}: an epoch (32 lower-case hex digits), given only with \"heads\":true"
                )));
            }
        }
        Ok(hello)
    }
}

/// A violation of the protocol by the other side; the connection cannot go on after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The server's side did not start with [`MAGIC`]: something else dialled the port.
    #[error("not a teelog relay client: a connection must start with {:?}", std::str::from_utf8(MAGIC).unwrap_or_default())]
    Magic,
    /// A frame's length prefix is over the reader's limit; the frame is not read.
    #[error("a frame of {len} bytes is larger than the {max} allowed")]
    TooLarge {
        /// The length the prefix announced, in bytes.
        len: u64,
        /// The reader's limit, in bytes.
        max: usize,
    },
    /// The first frame is not a hello; serde's message says why.
    #[error("the hello frame is not valid: {0}")]
    BadHello(String),
    /// The hello names a protocol version other than [`VERSION`].
    #[error("relay protocol version {0} is not supported (this side speaks {VERSION})")]
    Version(u32),
    /// A frame from the server is not a [`ServerMessage`]; serde's message says why.
    #[error("a server message is not valid: {0}")]
    BadMessage(String),
    /// A line frame holds a newline, which would let one frame smuggle in several lines.
    #[error("a line frame holds a newline: a frame carries exactly one line")]
    Newline,
    /// The stream ended with a partial frame pending (for the caller to report at end of
    /// stream, when [`FrameReader::pending`] is not zero).
    #[error("the connection ended in the middle of a frame")]
    Truncated,
}

impl RelayError {
    /// The limit a [`RelayError::TooLarge`] names, read back from its message as a server sends
    /// it in an `error`: so that a client can tell a line the far end will never take from a
    /// fault that passes.
    pub fn too_large_limit(message: &str) -> Option<usize> {
        let rest = message.strip_prefix("a frame of ")?;
        let (_, rest) = rest.split_once(" bytes is larger than the ")?;
        rest.strip_suffix(" allowed")?.parse().ok()
    }
}

/// `payload` as a frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    push_frame(&mut out, payload);
    out
}

/// Appends `payload` as a frame to `out`. Payloads are at most `u32::MAX` bytes (far above any
/// frame limit); a longer one is a caller's bug.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Buffer room a reader keeps between frames.
const KEPT_CAPACITY: usize = 256 << 10;

/// Splits a byte stream into frames as its bytes arrive.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames.
    start: usize,
    max: usize,
    /// Expect the magic before the first frame (the server's side).
    expect_magic: bool,
}

impl FrameReader {
    /// A reader for the server's side of a connection, which starts with the magic and a hello
    /// of at most [`MAX_HELLO`] bytes; [`FrameReader::set_max`] raises the limit once it is in.
    pub fn server() -> Self {
        Self { buf: Vec::new(), start: 0, max: MAX_HELLO, expect_magic: true }
    }

    /// Frames longer than `max` are refused from now on.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// A reader for the client's side, which reads server messages.
    pub fn client() -> Self {
        Self { buf: Vec::new(), start: 0, max: MAX_SERVER_MESSAGE, expect_magic: false }
    }

    /// Adds bytes as they arrive; [`FrameReader::next_frame`] then hands out the whole frames.
    pub fn push(&mut self, bytes: &[u8]) {
        // Frames handed out are dropped first, so that the buffer holds at most one partial
        // frame and what just arrived, however long the stream.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
            // Nor is the room a large frame once took kept for good.
            let keep = self.buf.len().max(KEPT_CAPACITY);
            if self.buf.capacity() > 2 * keep {
                self.buf.shrink_to(keep);
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received that no frame has used yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, if its bytes are all here.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, RelayError> {
        let rest = &self.buf[self.start..];
        if self.expect_magic {
            let n = rest.len().min(MAGIC.len());
            if rest[..n] != MAGIC[..n] {
                return Err(RelayError::Magic);
            }
            if n < MAGIC.len() {
                return Ok(None);
            }
            self.expect_magic = false;
            self.start += MAGIC.len();
            return self.next_frame();
        }
        let Some(len) = rest.get(..4) else { return Ok(None) };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len as u64 > self.max as u64 {
            return Err(RelayError::TooLarge { len: len.into(), max: self.max });
        }
        let end = 4 + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let at = self.start;
        self.start += end;
        Ok(Some(&self.buf[at + 4..at + end]))
    }
}

/// Checks a line frame's payload: one line, without its newline.
pub fn check_line(payload: &[u8]) -> Result<(), RelayError> {
    if payload.contains(&b'\n') {
        return Err(RelayError::Newline);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_too_large_refusal_names_its_limit_to_the_client() {
        let message = RelayError::TooLarge { len: 9_000_000, max: 8_388_608 }.to_string();
        assert_eq!(RelayError::too_large_limit(&message), Some(8_388_608));
        assert_eq!(RelayError::too_large_limit(&RelayError::Newline.to_string()), None);
        assert_eq!(RelayError::too_large_limit("a frame of 5 bytes is larger than the many allowed"), None);
    }

    #[test]
    fn frames_are_found_whatever_the_byte_boundaries() {
        let hello = Hello::new("app", None, false);
        let mut stream = hello.opening();
        stream.extend(frame(b"{\"line\":1}"));
        stream.extend(frame(b""));
        stream.extend(frame(b"{\"line\":2}"));
        for step in [1, 3, 7, stream.len()] {
            let mut reader = FrameReader::server();
            let mut frames: Vec<Vec<u8>> = Vec::new();
            for piece in stream.chunks(step) {
                reader.push(piece);
                while let Some(f) = reader.next_frame().unwrap() {
                    frames.push(f.to_vec());
                }
            }
            assert_eq!(Hello::parse(&frames[0]).unwrap(), hello);
            assert_eq!(frames[1..], [b"{\"line\":1}".to_vec(), Vec::new(), b"{\"line\":2}".to_vec()]);
            assert_eq!(reader.pending(), 0);
        }
    }

    #[test]
    fn bad_openings_and_frames_are_refused() {
        let mut http = FrameReader::server();
        http.push(b"GET / HTTP/1.1\r\n");
        assert_eq!(http.next_frame(), Err(RelayError::Magic));
        let mut partial = FrameReader::server();
        partial.push(b"TEEL");
        assert_eq!(partial.next_frame(), Ok(None));

        let mut big_hello = FrameReader::server();
        big_hello.push(MAGIC);
        big_hello.push(&(MAX_HELLO as u32 + 1).to_be_bytes());
        assert_eq!(
            big_hello.next_frame(),
            Err(RelayError::TooLarge { len: MAX_HELLO as u64 + 1, max: MAX_HELLO })
        );
        let mut big = FrameReader::server();
        big.push(MAGIC);
        big.push(&frame(b"{}"));
        assert!(big.next_frame().unwrap().is_some());
        big.set_max(10);
        big.push(&11u32.to_be_bytes());
        assert_eq!(big.next_frame(), Err(RelayError::TooLarge { len: 11, max: 10 }));

        assert!(matches!(Hello::parse(b"{\"relay\":2,\"stream\":\"a\"}"), Err(RelayError::Version(2))));
        assert!(matches!(Hello::parse(b"{\"relay\":1}"), Err(RelayError::BadHello(_))));
        assert!(matches!(
            Hello::parse(b"{\"relay\":1,\"stream\":\"a\",\"x\":1}"),
            Err(RelayError::BadHello(_))
        ));
        assert_eq!(check_line(b"a\nb"), Err(RelayError::Newline));
        assert!(matches!(ServerMessage::parse(b"{\"ack\":\"x\"}"), Err(RelayError::BadMessage(_))));
    }

    #[test]
    fn a_hello_names_an_instance_only_as_an_epoch_and_only_asking_for_heads() {
        let epoch = "0123456789abcdef0123456789abcdef";
        let hello = Hello { instance: Some(epoch.into()), ..Hello::new("app", None, true) };
        let opening = hello.opening();
        assert_eq!(Hello::parse(&opening[MAGIC.len() + 4..]), Ok(hello));
        for (instance, heads) in [(epoch, false), ("0123", true), ("0123456789ABCDEF0123456789ABCDEF", true)]
        {
            let payload = format!(r#"{{"relay":1,"stream":"app","heads":{heads},"instance":"{instance}"}}"#);
            assert!(matches!(Hello::parse(payload.as_bytes()), Err(RelayError::BadHello(_))), "{payload}");
        }
    }

    #[test]
    fn server_messages_round_trip() {
        for message in [
            ServerMessage::Welcome(Welcome::Name("teelog 0.1.0".into())),
            ServerMessage::Welcome(Welcome::Heads(StreamHeads {
                gateway: "teelog 0.1.0".into(),
                tips: 0,
                heads: Vec::new(),
            })),
            ServerMessage::Ack(7),
            ServerMessage::Error("no".into()),
        ] {
            let bytes = message.to_frame();
            let mut reader = FrameReader::client();
            reader.push(&bytes);
            let payload = reader.next_frame().unwrap().unwrap().to_vec();
            assert_eq!(ServerMessage::parse(&payload).unwrap(), message);
        }
        assert_eq!(ServerMessage::Ack(7).to_frame()[4..], *b"{\"ack\":7}");
        // A version-1 client reads the name-only welcome as before; a heads welcome with a
        // member it does not know is refused, not half read.
        assert_eq!(
            ServerMessage::Welcome(Welcome::Name("g".into())).to_frame()[4..],
            *b"{\"welcome\":\"g\"}"
        );
        assert!(ServerMessage::parse(b"{\"welcome\":{\"gateway\":\"g\",\"tips\":0,\"heads\":[],\"x\":1}}")
            .is_err());
    }

    #[test]
    fn a_hello_asks_for_heads_only_when_it_says_so() {
        assert_eq!(Hello::new("a", None, false).opening()[12..], *b"{\"relay\":1,\"stream\":\"a\"}");
        let asking = Hello::parse(b"{\"relay\":1,\"stream\":\"a\",\"heads\":true}").unwrap();
        assert!(asking.heads);
        assert!(!Hello::parse(b"{\"relay\":1,\"stream\":\"a\"}").unwrap().heads);
    }
}
