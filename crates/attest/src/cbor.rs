//! Strict CBOR maps with text keys, as attestation payloads use them: bounded nesting, no
//! duplicate keys, nothing after the map.

use std::collections::BTreeMap;

use ciborium::Value;

use crate::AttestError;

/// Nesting allowed in a payload (the layouts teelog reads need 3).
const MAX_DEPTH: usize = 8;

pub(crate) fn payload_err(field: &str, why: impl Into<String>) -> AttestError {
    AttestError::Payload { field: field.to_string(), reason: why.into() }
}

/// Decodes `bytes` as one CBOR map with distinct text keys; `what` names it in errors.
pub(crate) fn text_map(bytes: &[u8], what: &str) -> Result<BTreeMap<String, Value>, AttestError> {
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_DEPTH)
        .map_err(|e| AttestError::Cose(format!("{what} is not CBOR: {e}")))?;
    if !reader.is_empty() {
        return Err(AttestError::Cose(format!("{} bytes after the {what} map", reader.len())));
    }
    let Value::Map(entries) = value else {
        return Err(AttestError::Cose(format!("{what} is not a CBOR map")));
    };
    let mut fields = BTreeMap::new();
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err(payload_err("(key)", format!("keys are text, found {key:?}")));
        };
        if fields.insert(key.clone(), value).is_some() {
            return Err(payload_err(&key, "appears twice"));
        }
    }
    Ok(fields)
}

/// A byte string of at most `max` bytes.
pub(crate) fn bytes(name: &str, value: Option<Value>, max: usize) -> Result<Vec<u8>, AttestError> {
    match value {
        Some(Value::Bytes(b)) if b.len() <= max => Ok(b),
        Some(Value::Bytes(b)) => {
            Err(payload_err(name, format!("is {} bytes, at most {max} allowed", b.len())))
        }
        Some(other) => Err(payload_err(name, format!("must be a byte string, found {other:?}"))),
        None => Err(payload_err(name, "is missing")),
    }
}
