//! The seed's `SignedLogBatch` (C# pattern): a base64 JSON payload signed with ECDSA over its
//! SHA-256, verified as a compatibility input. It has no hash chain, only sequence numbers.

use base64::Engine;
use serde::Deserialize;

use crate::batch::{RecordsStatus, SignatureStatus};
use crate::canon::MAX_EXACT_INTEGER;
use crate::crypto::{der_to_p1363, normalize_signature, PublicKey};
use crate::merkle::{sha256, Digest};
use crate::timestamp::{parse_rfc3339, UnixNanos};

/// The members of the signed payload that are checked. Records are only counted and the
/// measurement kept as its text, so that a large payload is never built into a tree in memory.
#[derive(Deserialize)]
struct Payload<'a> {
    sequence: u64,
    #[serde(borrow)]
    tee_measurement: &'a serde_json::value::RawValue,
    record_count: u64,
    records: Vec<serde::de::IgnoredAny>,
    /// When the signer says it signed (ISO 8601, `DateTimeOffset.ToString("O")`).
    #[serde(default)]
    timestamp_utc: Option<String>,
}

/// Why a line is not a `SignedLogBatch` that can be judged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeedError {
    #[error("{field}: not base64: {source}")]
    Base64 { field: &'static str, source: base64::DecodeError },
    #[error("PayloadBase64: not a SignedLogBatch payload: {0}")]
    Payload(serde_json::Error),
    #[error("Sequence {0} is outside 1 to 2^53")]
    SequenceRange(u64),
    #[error("Sequence {outer} does not match the signed payload's sequence {signed}")]
    SequenceMismatch { outer: u64, signed: u64 },
}

#[derive(Debug, Clone)]
pub(crate) struct CheckedSeedBatch {
    pub sequence: u64,
    pub thumbprint: String,
    /// SHA-256 over payload and the signature in its one low-S r || s form: identifies a copy,
    /// whatever encoding of the signature it carries.
    pub identity: Digest,
    /// Id of the trusted key the signature verifies under (empty when none).
    pub key_id: String,
    pub payload_hash: Digest,
    pub measurement: String,
    /// The signed `timestamp_utc`, if it is RFC 3339 (the signer's clock).
    pub sealed_at: Option<UnixNanos>,
    pub record_count: u64,
    pub signature: SignatureStatus,
    pub records: RecordsStatus,
}

fn decode_b64(field: &'static str, text: &str) -> Result<Vec<u8>, SeedError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|source| SeedError::Base64 { field, source })
}

pub(crate) fn check_seed_batch(
    outer_sequence: u64,
    payload_b64: &str,
    signature_b64: &str,
    thumbprint: &str,
    trusted: &[PublicKey],
) -> Result<CheckedSeedBatch, SeedError> {
    let payload_bytes = decode_b64("PayloadBase64", payload_b64)?;
    let sig = decode_b64("SignatureBase64", signature_b64)?;
    let payload: Payload<'_> = serde_json::from_slice(&payload_bytes).map_err(SeedError::Payload)?;
    if outer_sequence == 0 || outer_sequence > MAX_EXACT_INTEGER {
        return Err(SeedError::SequenceRange(outer_sequence));
    }
    if payload.sequence != outer_sequence {
        return Err(SeedError::SequenceMismatch { outer: outer_sequence, signed: payload.sequence });
    }
    let signer = trusted.iter().find(|k| k.verify_sha256_any_encoding(&payload_bytes, &sig));
    let signature = match signer {
        Some(_) => SignatureStatus::Valid,
        None => SignatureStatus::Invalid("payload signature does not verify under any trusted key".into()),
    };
    let records = if payload.records.len() as u64 == payload.record_count {
        RecordsStatus::Intact
    } else {
        RecordsStatus::Tampered {
            record_index: None,
            detail: format!(
                "{} records present, record_count says {}",
                payload.records.len(),
                payload.record_count
            ),
        }
    };
    // A string compares as its text, anything else as its JSON.
    let raw_measurement = payload.tee_measurement.get();
    let measurement =
        serde_json::from_str::<String>(raw_measurement).unwrap_or_else(|_| raw_measurement.to_string());
    let mut identity_input = payload_bytes.clone();
    identity_input.extend_from_slice(&match signer {
        Some(key) => {
            let width = key.alg().signature_len() / 2;
            let p1363 = if sig.len() == 2 * width { Some(sig.clone()) } else { der_to_p1363(&sig, width) };
            p1363.map_or(sig, |p| normalize_signature(key.alg(), &p))
        }
        None => sig,
    });
    Ok(CheckedSeedBatch {
        sequence: payload.sequence,
        thumbprint: thumbprint.to_string(),
        identity: sha256(&identity_input),
        key_id: signer.map(PublicKey::id_hex).unwrap_or_default(),
        payload_hash: sha256(&payload_bytes),
        measurement,
        sealed_at: payload.timestamp_utc.as_deref().and_then(|t| parse_rfc3339(t).ok()),
        record_count: payload.record_count,
        signature,
        records,
    })
}
