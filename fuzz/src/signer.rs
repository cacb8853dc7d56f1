//! The fixed signer of the fuzz targets: the published test key of `docs/vectors/batch-v1.json`,
//! so that generated batches verify under a key the targets trust, and mutated ones may not.
//!
//! ECDSA through ring draws a fresh nonce for every signature, and ring lets no caller fix it;
//! the signer remembers the signature it made for each message, so that within one process the
//! same input always yields the same bytes (libFuzzer compares runs of one input). Across
//! processes only the signature bytes differ; which batches verify does not.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use teelog_core::batch::{HeaderSigner, SealError};
use teelog_core::{PublicKey, SoftwareKey};

/// Signatures remembered before the memory starts over, so that a long run holds a bounded
/// amount of it.
const MEMO_ENTRIES: usize = 4096;

pub struct FixedSigner {
    key: SoftwareKey,
    memo: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

const VECTORS: &str = include_str!("../../docs/vectors/batch-v1.json");
const SEED_VECTORS: &str = include_str!("../../docs/vectors/seed-v1.json");

fn vector_field(json: &str, name: &str) -> String {
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(value) => value,
        Err(e) => panic!("a vector file: {e}"),
    };
    match value[name].as_str() {
        Some(text) => text.to_string(),
        None => panic!("a vector file has no string {name:?}"),
    }
}

/// The one signer (built on first use).
pub fn signer() -> &'static FixedSigner {
    static SIGNER: OnceLock<FixedSigner> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let pem = vector_field(VECTORS, "private_key_pem");
        let key = match SoftwareKey::from_pkcs8_pem(pem.as_bytes()) {
            Ok(key) => key,
            Err(e) => panic!("docs/vectors/batch-v1.json: private_key_pem: {e}"),
        };
        FixedSigner { key, memo: Mutex::new(HashMap::new()) }
    })
}

/// The key of the seed-format vector (`docs/vectors/seed-v1.json`), which the targets also trust
/// so that the vector's line verifies.
pub fn seed_vector_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let pem = vector_field(SEED_VECTORS, "public_key_pem");
        match PublicKey::from_pem(pem.as_bytes()) {
            Ok(key) => key,
            Err(e) => panic!("docs/vectors/seed-v1.json: public_key_pem: {e}"),
        }
    })
}

impl FixedSigner {
    /// An r || s signature over `message`, the same one for the same message within a process.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let mut memo = self.memo.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sig) = memo.get(message) {
            return sig.clone();
        }
        let sig = match self.key.sign(message) {
            Ok(sig) => sig,
            Err(e) => panic!("the fixed test key cannot sign: {e}"),
        };
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(message.to_vec(), sig.clone());
        sig
    }
}

impl HeaderSigner for FixedSigner {
    fn public_key(&self) -> &PublicKey {
        self.key.public()
    }
    fn measurement(&self) -> Option<&str> {
        None
    }
    fn attestation(&self) -> Option<&str> {
        None
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SealError> {
        Ok(self.sign_bytes(message))
    }
}
