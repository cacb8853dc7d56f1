//! The TPM evidence bundle vector of docs/FORMAT.md §7a: a real bundle from a manufactured
//! swtpm, with the enrollment CA root it verifies under, read back and checked member by member.
//! `TEELOG_WRITE_VECTORS=1 cargo test -p teelog-tpm --test vectors` provisions a new identity
//! and rewrites the file after a deliberate format change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::path::PathBuf;

use common::Lab;
use serde_json::{json, Value};
use teelog_attest::tpm::bundle::TpmBundle;
use teelog_attest::TrustRoot;
use teelog_core::crypto::pem_encode;
use teelog_tpm::provision::provision;

const PCRS: [u8; 2] = [0, 7];
const PREVIOUS_HEAD: [u8; 32] = [0x5a; 32];

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/tpm-evidence-v1.json")
}

fn write_vector() {
    let lab = Lab::new();
    let request = lab.request(&PCRS, &PREVIOUS_HEAD);
    let provisioned = provision(&request).unwrap();
    let b = &provisioned.bundle;
    let members: serde_json::Map<String, Value> =
        b.members().into_iter().map(|(name, bytes)| (name.to_string(), json!(hex::encode(bytes)))).collect();
    let vector = json!({
        "comment": "A teelog TPM evidence bundle (docs/FORMAT.md §7a) from a manufactured swtpm: a P-256 signing key bound to SHA-256 PCRs 0 and 7, certified and quoted by an AK that the enrollment CA below certified after credential activation. The quote's qualifying data is the previous epoch's head. Verify at checked_at.",
        "pcrs": PCRS,
        "qualifying_data_hex": hex::encode(PREVIOUS_HEAD),
        "enrollment_ca_pem": pem_encode("CERTIFICATE", lab.ca.certificate_der()),
        "checked_at": lab.now,
        "members": members,
        "document_hex": hex::encode(b.encode().unwrap()),
        "expected": {
            "key_id": provisioned.verified.key.id_hex(),
            "ak_key_id": provisioned.verified.ak.id_hex(),
            "measurement": hex::encode(provisioned.verified.measurement),
        },
    });
    std::fs::write(path(), serde_json::to_string_pretty(&vector).unwrap() + "\n").unwrap();
}

#[test]
fn the_tpm_evidence_vector_verifies_and_every_member_matters() {
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        write_vector();
    }
    let vector: Value = serde_json::from_slice(&std::fs::read(path()).unwrap()).unwrap();
    let text = |key: &str| vector[key].as_str().unwrap().to_string();
    let document = hex::decode(text("document_hex")).unwrap();
    let bundle = TpmBundle::parse(&document).unwrap();
    assert_eq!(bundle.encode().unwrap(), document, "the encoding is canonical");
    let members = &vector["members"];
    for (name, bytes) in bundle.members() {
        assert_eq!(members[name].as_str().unwrap(), hex::encode(bytes), "{name}");
    }
    let root = TrustRoot::from_pem_or_der(text("enrollment_ca_pem").as_bytes()).unwrap();
    let at = vector["checked_at"].as_u64().unwrap();
    let verified = bundle.verify(std::slice::from_ref(&root), at).unwrap();
    let expected = &vector["expected"];
    assert_eq!(verified.evidence.key.id_hex(), expected["key_id"].as_str().unwrap());
    assert_eq!(verified.evidence.ak.id_hex(), expected["ak_key_id"].as_str().unwrap());
    assert_eq!(hex::encode(verified.evidence.measurement), expected["measurement"].as_str().unwrap());
    assert_eq!(hex::encode(&verified.evidence.qualifying_data), text("qualifying_data_hex"));
    // Before the enrollment the AK certificate was not yet valid.
    assert!(bundle.verify(std::slice::from_ref(&root), at - 86_400).is_err());
    for at_byte in 0..document.len() {
        let mut forged = document.clone();
        forged[at_byte] ^= 0x01;
        let outcome = TpmBundle::parse(&forged).and_then(|b| b.verify(std::slice::from_ref(&root), at));
        assert!(outcome.is_err(), "flipping byte {at_byte} went unnoticed");
    }
}
