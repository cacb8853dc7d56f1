//! One stream's signer: records in, each sealed batch written durably to its output.

use std::time::{SystemTime, UNIX_EPOCH};

use teelog_core::batch::{attestation_line, check_stream_name, HeaderError};
use teelog_core::record::RecordError;
use teelog_core::timestamp::UnixNanos;
use teelog_core::{BatchBuilder, ChainHead, HeaderSigner, SealError, Sealed};
use teelog_identity::{IdentityError, SoftwareIdentity};
use teelog_store::StoreError;

use crate::output::Output;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Stream(#[from] HeaderError),
}

/// The wall clock as teelog timestamps.
pub fn now() -> UnixNanos {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixNanos::try_from(since.as_nanos()).unwrap_or(UnixNanos::MAX)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SignSummary {
    pub records: u64,
    pub batches: u64,
}

pub struct StreamSigner {
    identity: SoftwareIdentity,
    output: Output,
    head: ChainHead,
    builder: BatchBuilder,
    line: Vec<u8>,
    summary: SignSummary,
}

impl StreamSigner {
    /// Continues `stream` where this identity's state and the output say it stands (the
    /// output wins, so a crash between a write and a state save never reuses a seq).
    pub fn open(identity: SoftwareIdentity, stream: &str, mut output: Output) -> Result<Self, ShipError> {
        check_stream_name(stream)?;
        if let Some(document) = identity.attestation_document() {
            // Stored with every run: duplicates are harmless, a batch without its document is not.
            output.write(&attestation_line(document))?;
        }
        let saved = identity.load_state(stream)?;
        let found = output.signed_headers(
            stream,
            identity.signer().public_key(),
            saved.as_ref().map(|s| s.epoch.as_str()),
        )?;
        let head = ChainHead::resume(stream, saved, found);
        Ok(Self {
            identity,
            output,
            head,
            builder: BatchBuilder::new(),
            line: Vec::new(),
            summary: SignSummary::default(),
        })
    }

    /// Canonicalises one record into the open batch; a refused record changes nothing.
    pub fn push(&mut self, record: &[u8], now: &dyn Fn() -> UnixNanos) -> Result<(), RecordError> {
        self.builder.push_input(record, now)
    }

    /// Records in the open batch.
    pub fn pending_records(&self) -> u64 {
        self.builder.len()
    }

    /// Bytes of canonical record text in the open batch.
    pub fn pending_bytes(&self) -> usize {
        self.builder.byte_len()
    }

    /// Signs the open batch (an empty one is a heartbeat) and writes it durably; when this
    /// returns Ok, the batch is in the output.
    pub fn seal(&mut self, sealed_at: UnixNanos) -> Result<Sealed, ShipError> {
        self.line.clear();
        let sealed = self.builder.seal(&mut self.head, self.identity.signer(), sealed_at, &mut self.line)?;
        if !self.output.is_readable() {
            // The next run cannot look at this output, so the state goes first: a crash in
            // between costs a reported gap, never a seq signed twice.
            self.identity.save_state(&self.head)?;
        }
        self.output.write(&self.line)?;
        self.summary.records += sealed.count;
        self.summary.batches += 1;
        Ok(sealed)
    }

    /// The batch line written by the last `seal`, newline included.
    pub fn last_batch_line(&self) -> &[u8] {
        &self.line
    }

    /// Seals what is pending and saves the chain state.
    pub fn finish(&mut self, sealed_at: UnixNanos) -> Result<(), ShipError> {
        if !self.builder.is_empty() {
            self.seal(sealed_at)?;
        }
        self.identity.save_state(&self.head)?;
        Ok(())
    }

    pub fn summary(&self) -> SignSummary {
        self.summary
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    pub fn stream(&self) -> &str {
        &self.head.stream
    }
}
