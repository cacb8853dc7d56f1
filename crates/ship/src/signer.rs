//! One stream's signer: records in, each sealed batch written durably to its output.

use teelog_core::batch::{attestation_line, check_stream_name, HeaderError};
use teelog_core::merkle::Digest;
use teelog_core::random::{RandomError, SystemRandom};
use teelog_core::record::{refusal_notice, Refused};
use teelog_core::timestamp::{format_rfc3339, UnixNanos};
use teelog_core::{BatchBuilder, ChainHead, Input, SealError, Sealed, Taken};
use teelog_deliver::clock::now;
use teelog_identity::{Identity, IdentityError, StateStore};
use teelog_store::lines::Skipped;
use teelog_store::{Store, StoreError};

use crate::output::{HeadTrust, Output};

/// Why signing a stream failed or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The output store or spool could not be written or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity could not be loaded, or its state saved.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A batch could not be sealed (the signer refused, or the epoch's seqs ran out).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The stream's name is not a valid stream name.
    #[error(transparent)]
    Stream(#[from] HeaderError),
    /// The system's random source failed (a new epoch needs a random id).
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A thread could not be started.
    #[error("cannot start the {thread} thread: {source}")]
    ThreadStart {
        /// Which thread.
        thread: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A thread panicked.
    #[error("the {0} thread stopped unexpectedly (it panicked; its message is above)")]
    ThreadPanicked(&'static str),
    /// Work was sent to a thread that has already ended.
    #[error("the {0} thread has already stopped, so it takes no more work")]
    ThreadGone(&'static str),
    /// A pipeline was given a file or stdout as output; it spools into a store.
    #[error("a pipeline writes into a spool store, not a file or stdout")]
    NotAStore,
    /// The sealed batch the pipeline was to write behind was taken before it was written.
    #[error("a batch sealed earlier has not been written yet")]
    Unwritten,
    /// The output holds batches of the stream that nothing this signer trusts vouches for, so
    /// it will not link a new epoch to any of them (docs/FORMAT.md §5.3).
    #[error(
        "stream {stream:?} already has {count} batch(es) in the output (the newest: seq {seq} of epoch {epoch}, signed by key {key_id}), none signed by a key this signer can verify, so it will not link a new epoch to them: give the key of the signer that wrote them (sign --pubkey; ship: trust_keys) or the root its attestation documents chain to (sign --trust-root; ship: trust_roots), or sign another stream"
    )]
    UntrustedHead {
        /// The stream.
        stream: String,
        /// How many batches of it the output holds.
        count: u64,
        /// The newest one's seq.
        seq: u64,
        /// Its epoch.
        epoch: String,
        /// The id of the key that signed it.
        key_id: String,
    },
    /// The identity was made to follow a head (keygen --follow) that is not the one the gateway
    /// holds: its document attests a link the stream has moved past (or never had).
    #[error(
        "stream {:?}: this identity's attestation document attests that its first epoch follows header {}, but the gateway {} holds the stream up to seq {} of epoch {} (header {}); linking to either would hide a part of the stream: make the identity again with teelog keygen --follow on a store holding the gateway's head",
        .0.stream, .0.attested, .0.gateway.gateway, .0.gateway.seq, .0.gateway.epoch, hex::encode(.0.gateway.hash)
    )]
    FollowedHeadMoved(Box<FollowedHeadMoved>),
}

/// See [`ShipError::FollowedHeadMoved`].
#[derive(Debug)]
pub struct FollowedHeadMoved {
    /// The stream.
    pub stream: String,
    /// The header hash (hex) the identity's document attests.
    pub attested: String,
    /// Where the gateway holds the stream.
    pub gateway: GatewayHead,
}

/// Where a relay sink's gateway holds the stream (docs/FORMAT.md §14.1): the one head it
/// reported, durable there and validly signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayHead {
    /// The gateway's name and address, for messages.
    pub gateway: String,
    /// The head's epoch.
    pub epoch: String,
    /// Its seq.
    pub seq: u64,
    /// Its header hash.
    pub hash: Digest,
    /// Its `sealed_at`.
    pub sealed_at: UnixNanos,
}

/// A new epoch's link, given where the gateway holds the stream (docs/FORMAT.md §5.3): the
/// gateway's head unless the one local storage gave `chain` (already checked) is newer; a
/// difference is said in `note`.
fn link_to_gateway(chain: ChainHead, gateway: Option<&GatewayHead>, note: &mut Option<String>) -> ChainHead {
    let Some(g) = gateway else { return chain };
    let hash = hex::encode(g.hash);
    if chain.prev.as_deref() == Some(hash.as_str()) {
        return chain;
    }
    let (stream, at) = (&chain.stream, format_rfc3339(g.sealed_at));
    match (&chain.prev, chain.prev_sealed_at) {
        (Some(local), Some(local_at)) if local_at > g.sealed_at => {
            *note = Some(format!(
                "stream {stream:?}: the head in local storage ({local}, sealed at {}) is newer than the one the gateway {} holds (seq {} of epoch {}, sealed at {at}) and verifies: the new epoch links to it",
                format_rfc3339(local_at), g.gateway, g.seq, g.epoch
            ));
            chain
        }
        (local, _) => {
            if let Some(local) = local {
                *note = Some(format!(
                    "stream {stream:?}: the head in local storage ({local}) is not the gateway's and is older: the gateway {} holds the stream up to seq {} of epoch {} (sealed at {at}), which the new epoch links to; local storage lost or was cut of what came after",
                    g.gateway, g.seq, g.epoch
                ));
            }
            ChainHead { prev: Some(hash), prev_sealed_at: Some(g.sealed_at), ..chain }
        }
    }
}

/// The notice that stands for an input line longer than `limit` bytes, which was skipped
/// unread (docs/FORMAT.md §2.4); `source` names it (`stdin:17`). Taken as a record.
pub fn too_long_notice(source: &str, limit: usize, skipped: Skipped) -> Vec<u8> {
    let mut notice = Vec::new();
    let refused = Refused {
        source,
        reason: &format!("the line is longer than {limit} bytes (the input line limit)"),
        bytes: skipped.bytes,
        sha256: skipped.sha256,
    };
    refusal_notice(&refused, now(), &mut notice);
    notice
}

/// What a signer wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignSummary {
    /// Records in the batches written, notices included.
    pub records: u64,
    /// Batches written, heartbeats included.
    pub batches: u64,
    /// Inputs refused, each signed as a notice in its place.
    pub refused: u64,
}

impl SignSummary {
    /// Counts a batch once it is written.
    pub fn add(&mut self, sealed: Sealed) {
        self.records += sealed.count;
        self.batches += 1;
    }
}

/// One stream's chain: records in, signed batch lines out. Writing the lines is its owner's
/// job: [`StreamSigner`] writes each before sealing the next; the pipeline writes behind.
pub struct BatchSealer {
    identity: Identity,
    head: ChainHead,
    builder: BatchBuilder,
}

impl BatchSealer {
    /// Continues `stream` where this identity's state and `output` say it stands (the output
    /// wins, so a crash between a write and a state save never reuses a seq), or starts a new
    /// epoch linked to the newest head it can trust (docs/FORMAT.md §5.3; `trust` adds keys and
    /// roots to the identity's own). The identity's attestation document is written before any
    /// batch. With `state_first` (a spool whose writer saves the state before it publishes each
    /// batch), a state ahead of the output means the output was lost or rolled back: a new epoch
    /// starts, linked to the state's head.
    fn open(
        mut identity: Identity,
        stream: &str,
        output: &mut Output,
        trust: &HeadTrust,
        state_first: bool,
        gateway: Option<&GatewayHead>,
    ) -> Result<(Self, Option<String>), ShipError> {
        check_stream_name(stream)?;
        let saved = identity.load_state(stream)?;
        let mut note = None;
        let head = match (saved, identity.own_key()) {
            // Its own epoch, with its own key: only its own batches count.
            (Some(saved), Some(key)) => {
                let own = output.own_newest(stream, key, &saved.epoch)?;
                let written = own.as_ref().map_or(0, |(h, _)| h.seq);
                let at_gateway = gateway.filter(|g| g.epoch == saved.epoch && g.seq >= saved.next_seq);
                if let Some(g) = at_gateway {
                    // The gateway holds this epoch past where the state says it stands: the state
                    // (and the spool with it) is an older copy, restored or rolled back. Going on
                    // would sign those seqs again with other records; a new epoch after the
                    // gateway's head signs none of them.
                    note = Some(format!(
                        "stream {stream:?}: the chain state says epoch {} goes on at seq {}, but the gateway {} holds it up to seq {}: the state was rolled back (restored from an older copy); a new epoch starts after the gateway's head",
                        saved.epoch, saved.next_seq, g.gateway, g.seq
                    ));
                    let fresh = ChainHead::new_epoch(stream, None, &SystemRandom)?;
                    link_to_gateway(fresh, Some(g), &mut None)
                } else if state_first && saved.next_seq > written + 1 {
                    // The state, saved before each batch reached a sink, says more was signed
                    // than the spool holds: the spool was lost or rolled back, and its lost
                    // batches may be at a sink already. The new epoch links to the state's
                    // head, the newest batch this signer signed, so no seq of the old epoch is
                    // signed again with other records.
                    note = Some(format!(
                        "stream {stream:?}: the chain state says seq {} of epoch {} was signed, but the spool holds that epoch only up to seq {written} (lost or rolled back); a new epoch starts after the state's head",
                        saved.next_seq - 1,
                        saved.epoch
                    ));
                    ChainHead::new_epoch_after(stream, Some(&saved), None, &SystemRandom)?
                } else {
                    ChainHead::resume(saved, own)
                }
            }
            // A key made to follow a head (keygen --follow, which checked that head): its
            // document attests exactly that link, unless the key has signed since (its state
            // lost), when it continues after its own newest batch.
            (None, Some(key)) if identity.attested_previous_head().is_some() => {
                let own = HeadTrust { keys: vec![key.clone()], ..HeadTrust::default() };
                match output.trusted_head(stream, &own)?.head {
                    Some(newest) => link_to_gateway(
                        ChainHead::new_epoch_after(stream, None, Some(newest), &SystemRandom)?,
                        gateway,
                        &mut note,
                    ),
                    None => {
                        let attested = identity.attested_previous_head().unwrap_or_default().to_string();
                        if let Some(g) = gateway.filter(|g| hex::encode(g.hash) != attested) {
                            return Err(ShipError::FollowedHeadMoved(Box::new(FollowedHeadMoved {
                                stream: stream.to_string(),
                                attested,
                                gateway: g.clone(),
                            })));
                        }
                        ChainHead::new_epoch(stream, Some(attested), &SystemRandom)?
                    }
                }
            }
            (saved, own_key) => {
                let mut trust = trust.clone();
                trust.keys.extend(own_key.cloned());
                trust.roots.extend(identity.attestation_roots());
                trust.saved_head = saved.as_ref().and_then(|s| s.prev.clone());
                let found = output.trusted_head(stream, &trust)?;
                if let Some(newest) = &found.newest_passed_over {
                    // The gateway's head, when there is one, is a head to link to all the same.
                    if found.head.is_none() && saved.is_none() && gateway.is_none() {
                        return Err(ShipError::UntrustedHead {
                            stream: stream.to_string(),
                            count: found.passed_over,
                            seq: newest.seq,
                            epoch: newest.epoch.clone(),
                            key_id: newest.key_id.clone(),
                        });
                    }
                    note = Some(format!(
                        "stream {stream:?}: passed over {} batch(es) this signer cannot verify, the newest seq {} of epoch {} signed by key {}; the new epoch links to the newest it can",
                        found.passed_over, newest.seq, newest.epoch, newest.key_id
                    ));
                }
                let local = ChainHead::new_epoch_after(stream, saved.as_ref(), found.head, &SystemRandom)?;
                let mut linked = None;
                let chain = link_to_gateway(local, gateway, &mut linked);
                // Both notes matter: what was passed over, and which head won.
                note = match (note, linked) {
                    (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                    (a, b) => a.or(b),
                };
                chain
            }
        };
        identity.begin_epoch(&head)?;
        if let Some(document) = identity.attestation_document() {
            // Stored with every run: duplicates are harmless, a batch without its document is not.
            output.write(&attestation_line(document))?;
        }
        Ok((Self { identity, head, builder: BatchBuilder::new() }, note))
    }

    /// Seal each batch before its line would grow past `bytes` (see
    /// [`BatchBuilder::with_batch_bytes`]).
    pub fn set_batch_bytes(&mut self, bytes: usize) {
        self.builder.set_batch_bytes(bytes);
    }

    /// Takes one input record into the open batch, or a signed notice in its place if it is
    /// refused (see [`BatchBuilder::take`]). Where the open batch had to be sealed first to stay
    /// within its byte bound, its line is appended to `line` and returned: the caller must write
    /// it before any later batch.
    pub fn take(
        &mut self,
        input: Input<'_>,
        source: &dyn Fn() -> String,
        line: &mut Vec<u8>,
    ) -> Result<(Taken, Option<Sealed>), ShipError> {
        let mut sealed = None;
        let (head, signer) = (&mut self.head, self.identity.signer());
        let taken = self.builder.take(input, source, &now, |builder| {
            sealed = Some(builder.seal(head, signer, now(), line)?);
            Ok::<(), ShipError>(())
        })?;
        Ok((taken, sealed))
    }

    /// Records in the open batch.
    pub fn pending_records(&self) -> u64 {
        self.builder.len()
    }

    /// Signs the open batch (an empty one is a heartbeat) as the next of the chain and appends
    /// its line to `line`. The caller must write it before any later batch.
    pub fn seal(&mut self, sealed_at: UnixNanos, line: &mut Vec<u8>) -> Result<Sealed, ShipError> {
        Ok(self.builder.seal(&mut self.head, self.identity.signer(), sealed_at, line)?)
    }

    /// Where the chain stands after the last batch sealed.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// Where [`save_state`](Self::save_state) saves, for the spool writer's thread.
    pub fn state_store(&self) -> StateStore {
        self.identity.state_store()
    }

    /// Durably records where the chain stands; only once every sealed line is written, since a
    /// state ahead of the output would point the next run past batches that never landed.
    pub fn save_state(&self) -> Result<(), ShipError> {
        Ok(self.identity.save_state(&self.head)?)
    }
}

/// A [`BatchSealer`] that writes each batch durably to its output before it seals the next.
pub struct StreamSigner {
    sealer: BatchSealer,
    output: Output,
    line: Vec<u8>,
    /// A sealed batch whose write failed: it must be written before the next is sealed.
    unwritten: Option<Sealed>,
    last_sealed: Option<Sealed>,
    summary: SignSummary,
    note: Option<String>,
}

impl StreamSigner {
    /// Continues `stream` in `output` (see [`BatchSealer`]), trusting the identity's own key
    /// and documents that chain to its roots for where the stream stands.
    pub fn open(identity: Identity, stream: &str, output: Output) -> Result<Self, ShipError> {
        Self::open_trusting(identity, stream, output, &HeadTrust::default())
    }

    /// [`open`](Self::open), trusting also the keys and roots of `trust` (an earlier signer's).
    pub fn open_trusting(
        identity: Identity,
        stream: &str,
        output: Output,
        trust: &HeadTrust,
    ) -> Result<Self, ShipError> {
        Self::open_with(identity, stream, output, trust, false, None)
    }

    /// [`open_trusting`](Self::open_trusting) on a spool for a [`crate::pipeline::Pipeline`],
    /// whose writer saves the chain state before it publishes each batch: a state found ahead
    /// of the spool starts a new epoch (see [`BatchSealer`]).
    /// A new epoch links to `gateway`'s head unless local storage holds a newer one it can
    /// verify (docs/FORMAT.md §5.3).
    pub fn open_spool(
        identity: Identity,
        stream: &str,
        spool: Store,
        trust: &HeadTrust,
        gateway: Option<&GatewayHead>,
    ) -> Result<Self, ShipError> {
        Self::open_with(identity, stream, Output::Store(spool), trust, true, gateway)
    }

    fn open_with(
        identity: Identity,
        stream: &str,
        mut output: Output,
        trust: &HeadTrust,
        state_first: bool,
        gateway: Option<&GatewayHead>,
    ) -> Result<Self, ShipError> {
        let (sealer, note) = BatchSealer::open(identity, stream, &mut output, trust, state_first, gateway)?;
        if let Some(note) = &note {
            tracing::warn!(target: "teelog::ship", "{note}");
        }
        Ok(Self {
            sealer,
            output,
            line: Vec::new(),
            unwritten: None,
            last_sealed: None,
            summary: SignSummary::default(),
            note,
        })
    }

    /// What the signer passed over in its output when it started, if anything: batches of its
    /// stream it could not verify.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Takes one input record (see [`BatchSealer::take`]); a batch sealed to make room is
    /// written durably first.
    pub fn push(&mut self, record: &[u8], source: &dyn Fn() -> String) -> Result<Taken, ShipError> {
        self.push_input(Input::Json(record), source)
    }

    /// [`push`](Self::push) for an input that may be in canonical form already.
    pub fn push_input(&mut self, input: Input<'_>, source: &dyn Fn() -> String) -> Result<Taken, ShipError> {
        if self.unwritten.is_some() {
            // Its line is in `line`, which a seal here would overwrite.
            self.retry_write()?;
        }
        self.line.clear();
        let (taken, sealed) = self.sealer.take(input, source, &mut self.line)?;
        if let Taken::Refused(_) = taken {
            self.summary.refused += 1;
        }
        if let Some(sealed) = sealed {
            self.unwritten = Some(sealed);
            self.retry_write()?;
        }
        Ok(taken)
    }

    /// The open batch's records and bytes, as [`BatchSealer`] counts them.
    pub fn sealer(&self) -> &BatchSealer {
        &self.sealer
    }

    /// Signs the open batch (an empty one is a heartbeat) and writes it durably; when this
    /// returns Ok, the batch is in the output. If the write fails the signed batch is kept
    /// and written first by the next `seal` or [`retry_write`](Self::retry_write): giving up
    /// on it would leave a gap in the chain.
    pub fn seal(&mut self, sealed_at: UnixNanos) -> Result<Sealed, ShipError> {
        self.retry_write()?;
        self.line.clear();
        let sealed = self.sealer.seal(sealed_at, &mut self.line)?;
        self.unwritten = Some(sealed);
        self.retry_write()
    }

    /// Writes the batch whose write failed (a no-op returning the last batch if none did).
    pub fn retry_write(&mut self) -> Result<Sealed, ShipError> {
        let Some(sealed) = self.unwritten else {
            return Ok(self.last_sealed.unwrap_or_default());
        };
        if !self.output.is_readable() {
            // The next run cannot look at this output, so the state goes first: a crash in
            // between costs a reported gap, never a seq signed twice.
            self.sealer.save_state()?;
        }
        self.output.write(&self.line)?;
        self.unwritten = None;
        self.last_sealed = Some(sealed);
        self.summary.add(sealed);
        Ok(sealed)
    }

    /// Seals what is pending and saves the chain state.
    pub fn finish(&mut self, sealed_at: UnixNanos) -> Result<(), ShipError> {
        self.retry_write()?;
        if self.sealer.pending_records() > 0 {
            self.seal(sealed_at)?;
        }
        self.sealer.save_state()
    }

    /// What it has written so far.
    pub fn summary(&self) -> SignSummary {
        self.summary
    }

    /// Takes the notice that stands for an input line longer than `limit` bytes, which was
    /// skipped (see [`too_long_notice`]), and counts it as refused.
    pub fn push_too_long(&mut self, source: &str, limit: usize, skipped: Skipped) -> Result<(), ShipError> {
        self.push(&too_long_notice(source, limit, skipped), &|| source.to_string())?;
        self.summary.refused += 1;
        Ok(())
    }

    /// Seal each batch before its line would grow past `bytes` (see [`BatchSealer::set_batch_bytes`]).
    pub fn set_batch_bytes(&mut self, bytes: usize) {
        self.sealer.set_batch_bytes(bytes);
    }

    /// The sealer and the store, for writing behind (the pipeline). Only a store will do: the
    /// chain state is saved after the writes, so the output must be one the next run can read.
    pub fn into_store_writer(self) -> Result<(BatchSealer, Store), ShipError> {
        match (self.output, self.unwritten) {
            (Output::Store(store), None) => Ok((self.sealer, store)),
            (Output::Store(_), Some(_)) => Err(ShipError::Unwritten),
            _ => Err(ShipError::NotAStore),
        }
    }
}
