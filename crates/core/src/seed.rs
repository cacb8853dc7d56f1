//! The seed's `SignedLogBatch` (C# pattern): a base64 JSON payload signed with ECDSA over its
//! SHA-256, verified as a compatibility input. It has no hash chain, only sequence numbers.

use base64::Engine;
use serde::Deserialize;

use crate::batch::{RecordsStatus, SignatureStatus};
use crate::canon::MAX_EXACT_INTEGER;
use crate::crypto::{der_to_p1363, normalize_signature, PublicKey};
use crate::merkle::{sha256, Digest};

#[derive(Deserialize)]
struct Payload {
    sequence: u64,
    tee_measurement: serde_json::Value,
    record_count: u64,
    records: Vec<serde_json::Value>,
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
    pub record_count: u64,
    pub signature: SignatureStatus,
    pub records: RecordsStatus,
}

fn decode_b64(field: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| format!("{field}: not base64: {e}"))
}

pub(crate) fn check_seed_batch(
    outer_sequence: u64,
    payload_b64: &str,
    signature_b64: &str,
    thumbprint: &str,
    trusted: &[PublicKey],
) -> Result<CheckedSeedBatch, String> {
    let payload_bytes = decode_b64("PayloadBase64", payload_b64)?;
    let sig = decode_b64("SignatureBase64", signature_b64)?;
    let payload: Payload = serde_json::from_slice(&payload_bytes)
        .map_err(|e| format!("PayloadBase64: not a SignedLogBatch payload: {e}"))?;
    if outer_sequence == 0 || outer_sequence > MAX_EXACT_INTEGER {
        return Err(format!("Sequence {outer_sequence} is outside 1 to 2^53"));
    }
    if payload.sequence != outer_sequence {
        return Err(format!(
            "Sequence {outer_sequence} does not match the signed payload's sequence {}",
            payload.sequence
        ));
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
    let measurement = match &payload.tee_measurement {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
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
        record_count: payload.record_count,
        signature,
        records,
    })
}
