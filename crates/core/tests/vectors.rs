//! The test vectors of docs/FORMAT.md §12, rebuilt from their inputs and compared byte for byte.
//! `TEELOG_WRITE_VECTORS=1 cargo test -p teelog-core --test vectors` rewrites them (new signatures,
//! same key) after a deliberate format change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Serialize};
use teelog_core::batch::{SealError, FORMAT_VERSION, SIGNING_CONTEXT};
use teelog_core::canon::Canonicalizer;
use teelog_core::crypto::pem_encode;
use teelog_core::merkle::{leaf_hash, sha256};
use teelog_core::record::canonicalize_record;
use teelog_core::timestamp::{format_rfc3339, parse_rfc3339};
use teelog_core::{
    BatchBuilder, ChainHead, Freshness, HeaderSigner, Origin, PublicKey, SigAlg, SoftwareKey, Verifier,
    VerifyOptions,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct BatchVector {
    seq: u64,
    sealed_at: String,
    inputs: Vec<String>,
    records: Vec<String>,
    leaves: Vec<String>,
    root: String,
    /// The first 8 bytes of each leaf, concatenated, in hex: the line's `hints`.
    hints: String,
    header: String,
    header_sha256: String,
    signed_message_hex: String,
    sig: String,
    line: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vectors {
    comment: String,
    private_key_pem: String,
    public_key_pem: String,
    key_id: String,
    stream: String,
    epoch: String,
    measurement: String,
    now: String,
    batches: Vec<BatchVector>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SeedVector {
    comment: String,
    public_key_pem: String,
    payload: String,
    payload_sha256: String,
    signature_p1363_hex: String,
    line: String,
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors")
}

/// The published test key, read loosely so that it survives changes to the vector layout.
fn test_key_pem() -> Option<String> {
    let bytes = std::fs::read(vectors_dir().join("batch-v1.json")).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(value["private_key_pem"].as_str()?.to_string())
}

fn writing() -> bool {
    std::env::var_os("TEELOG_WRITE_VECTORS").is_some()
}

/// Signs for real when writing vectors; replays the recorded signature when checking them, so
/// that whole lines can be compared.
struct VectorSigner<'a> {
    key: &'a SoftwareKey,
    measurement: String,
    replay: Option<Vec<u8>>,
}

impl HeaderSigner for VectorSigner<'_> {
    fn public_key(&self) -> &PublicKey {
        self.key.public()
    }
    fn measurement(&self) -> Option<&str> {
        Some(&self.measurement)
    }
    fn attestation(&self) -> Option<&str> {
        None
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SealError> {
        match &self.replay {
            Some(sig) => Ok(sig.clone()),
            None => self.key.sign(message).map_err(|e| SealError::Signer(e.to_string())),
        }
    }
}

const INPUTS: [&[&str]; 3] = [
    &[
        r#"{"ts":"2026-12-02T09:00:00Z","level":"Information","message":"step calculation completed","attributes":{"executionId":"abc-123","nodeType":"calculation","outcome":"completed"}}"#,
        r#"{"message":"caf\u00e9 \"quoted\"\ttab","ts":"2026-12-02T10:00:01.5+01:00","level":"Warning","attributes":{"z":1.0,"a":1e3,"m":[true,null,-0]}}"#,
        r#"{"ts":1796202002000000001,"level":"Error","message":"integer nanoseconds","extra":{"\u20ac":"euro","\r":"cr","1":"one"}}"#,
    ],
    &[r#"{"level":"Information","message":"no ts: the signer's clock fills it in","attributes":{}}"#],
    &[],
];

fn build(key: &SoftwareKey, recorded: Option<&Vectors>) -> Vectors {
    let stream = "vectors".to_string();
    let epoch = "00112233445566778899aabbccddeeff".to_string();
    let measurement = "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c".to_string();
    let now = parse_rfc3339("2026-12-02T12:00:00Z").unwrap();
    let mut chain = ChainHead {
        stream: stream.clone(),
        epoch: epoch.clone(),
        next_seq: 1,
        prev: None,
        prev_sealed_at: None,
    };
    let mut builder = BatchBuilder::new();
    let mut batches = Vec::new();
    for (i, inputs) in INPUTS.iter().enumerate() {
        let sealed_at = now + (i as i64 + 1) * 1_000_000_000;
        let replay = recorded.map(|r| B64.decode(&r.batches[i].sig).unwrap());
        let signer = VectorSigner { key, measurement: measurement.clone(), replay };
        let mut records = Vec::new();
        let mut leaves = Vec::new();
        for input in inputs.iter() {
            builder.push_input(input.as_bytes(), &|| now).unwrap();
            let mut record = Vec::new();
            canonicalize_record(&mut Canonicalizer::new(), input.as_bytes(), &|| now, &mut record).unwrap();
            let record = String::from_utf8(record).unwrap();
            leaves.push(hex::encode(leaf_hash(record.as_bytes())));
            records.push(record);
        }
        let hints: String = leaves.iter().map(|l: &String| &l[..16]).collect();
        let mut line = Vec::new();
        let sealed = builder.seal(&mut chain, &signer, sealed_at, &mut line).unwrap();
        let line = String::from_utf8(line).unwrap().trim_end().to_string();
        let (header, rest) =
            line.strip_prefix("{\"v\":1,\"header\":").unwrap().split_once(",\"sig\":\"").unwrap();
        let sig = rest.split_once('"').unwrap().0.to_string();
        let header_value: serde_json::Value = serde_json::from_str(header).unwrap();
        let mut message = SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(header.as_bytes());
        batches.push(BatchVector {
            seq: sealed.seq,
            sealed_at: format_rfc3339(sealed_at),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            records,
            leaves,
            root: header_value["root"].as_str().unwrap().to_string(),
            hints,
            header: header.to_string(),
            header_sha256: hex::encode(sealed.header_hash),
            signed_message_hex: hex::encode(&message),
            sig,
            line,
        });
    }
    Vectors {
        comment: "teelog format v1 test vectors (docs/FORMAT.md §12). The private key is a published test key: never trust it.".into(),
        private_key_pem: recorded.map_or_else(String::new, |r| r.private_key_pem.clone()),
        public_key_pem: key.public().to_pem(),
        key_id: key.public().id_hex(),
        stream,
        epoch,
        measurement,
        now: format_rfc3339(now),
        batches,
    }
}

fn seed_payload() -> String {
    r#"{"sequence":1,"timestamp_utc":"2026-12-02T09:00:00.0000000+00:00","tee_measurement":"sha384:a1b2c3","record_count":2,"records":[{"timestamp":"2026-12-02T09:00:00Z","level":"Information","message":"{\"executionId\":\"abc-123\",\"outcome\":\"completed\"}","attributes":{}},{"timestamp":"2026-12-02T09:00:01Z","level":"Information","message":"step 2","attributes":{"durationMs":342}}]}"#.to_string()
}

#[test]
fn batch_vectors_rebuild_byte_for_byte() {
    let path = vectors_dir().join("batch-v1.json");
    if writing() {
        // Keep the published test key; everything else is rebuilt.
        let pem = match test_key_pem() {
            Some(pem) => pem,
            None => pem_encode("PRIVATE KEY", &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()),
        };
        let key = SoftwareKey::from_pkcs8_pem(pem.as_bytes()).unwrap();
        let mut fresh = build(&key, None);
        fresh.private_key_pem = pem;
        std::fs::create_dir_all(vectors_dir()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&fresh).unwrap() + "\n").unwrap();
        return;
    }
    let recorded: Vectors = serde_json::from_slice(
        &std::fs::read(&path).expect("docs/vectors/batch-v1.json"),
    )
    .expect(
        "batch-v1.json has the vector layout; after a format change rewrite it with TEELOG_WRITE_VECTORS=1",
    );
    let key = SoftwareKey::from_pkcs8_pem(recorded.private_key_pem.as_bytes()).unwrap();
    let rebuilt = build(&key, Some(&recorded));
    assert_eq!(rebuilt, recorded, "the implementation no longer produces the recorded bytes");

    // The recorded signatures verify over the recorded messages, and a flipped byte fails.
    let public = PublicKey::from_pem(recorded.public_key_pem.as_bytes()).unwrap();
    for batch in &recorded.batches {
        let message = hex::decode(&batch.signed_message_hex).unwrap();
        assert_eq!(
            sha256(&message[SIGNING_CONTEXT.len()..]),
            <[u8; 32]>::try_from(hex::decode(&batch.header_sha256).unwrap()).unwrap()
        );
        let mut sig = B64.decode(&batch.sig).unwrap();
        assert!(public.verify_p1363(&message, &sig));
        sig[10] ^= 1;
        assert!(!public.verify_p1363(&message, &sig));
    }
    // And the lines verify as a chain.
    let mut verifier = Verifier::new(VerifyOptions {
        trusted_keys: vec![public],
        expect_measurement: Some(recorded.measurement.clone()),
        policy: None,
        freshness: None,
        ..VerifyOptions::default()
    });
    for (i, batch) in recorded.batches.iter().enumerate() {
        verifier.push_line(Origin { source: "batch-v1.json", line: i as u64 + 1 }, batch.line.as_bytes());
    }
    let report = verifier.finish();
    assert!(report.ok, "{:?}", report.findings);
    assert_eq!((report.batches, report.records), (3, 4));
    assert_eq!(FORMAT_VERSION, 1);
}

#[test]
fn seed_vector_verifies() {
    let path = vectors_dir().join("seed-v1.json");
    let key =
        SoftwareKey::from_pkcs8_pem(test_key_pem().expect("batch-v1.json holds the test key").as_bytes())
            .unwrap();
    let payload = seed_payload();
    if writing() {
        let sig = key.sign(payload.as_bytes()).unwrap();
        let line = serde_json::json!({
            "Sequence": 1,
            "PayloadBase64": B64.encode(&payload),
            "SignatureBase64": B64.encode(&sig),
            "AttestationCertThumbprint": "sha256:a1b2c3",
        })
        .to_string();
        let vector = SeedVector {
            comment: "A seed-format SignedLogBatch signed with the batch-v1 test key (ECDSA P-256 over SHA-256 of the payload, P1363).".into(),
            public_key_pem: key.public().to_pem(),
            payload: payload.clone(),
            payload_sha256: hex::encode(sha256(payload.as_bytes())),
            signature_p1363_hex: hex::encode(&sig),
            line,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&vector).unwrap() + "\n").unwrap();
        return;
    }
    let vector: SeedVector = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(vector.payload, payload);
    assert_eq!(vector.payload_sha256, hex::encode(sha256(payload.as_bytes())));
    let public = PublicKey::from_pem(vector.public_key_pem.as_bytes()).unwrap();
    assert!(public
        .verify_sha256_any_encoding(payload.as_bytes(), &hex::decode(&vector.signature_p1363_hex).unwrap()));
    let mut verifier = Verifier::new(VerifyOptions {
        trusted_keys: vec![public],
        expect_measurement: Some("sha384:a1b2c3".into()),
        policy: None,
        freshness: None,
        ..VerifyOptions::default()
    });
    verifier.push_line(Origin { source: "seed-v1.json", line: 1 }, vector.line.as_bytes());
    let report = verifier.finish();
    assert!(report.ok, "{:?}", report.findings);
    assert_eq!((report.batches, report.records), (1, 2));
}

#[test]
fn seed_batches_are_judged_by_the_policy_the_clock_and_freshness() {
    let vector: SeedVector =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("seed-v1.json")).unwrap()).unwrap();
    let public = PublicKey::from_pem(vector.public_key_pem.as_bytes()).unwrap();
    let signed_at = parse_rfc3339("2026-12-02T09:00:00Z").unwrap();
    let kinds = |options: VerifyOptions| {
        let mut verifier = Verifier::new(VerifyOptions { trusted_keys: vec![public.clone()], ..options });
        verifier.push_line(Origin { source: "seed-v1.json", line: 1 }, vector.line.as_bytes());
        let report = verifier.finish();
        report.findings.iter().map(|f| f.kind.name()).collect::<Vec<_>>()
    };
    assert_eq!(kinds(VerifyOptions { now: Some(signed_at), ..VerifyOptions::default() }), Vec::<&str>::new());
    // Its measurement is not one the auditor's policy allows.
    let policy: teelog_core::policy::Policy = serde_json::from_value(serde_json::json!(
        {"measurement": [{"platform": "software", "version": "v1", "value": "aa"}]}
    ))
    .unwrap();
    let judged = VerifyOptions { policy: Some(policy.validated().unwrap()), ..VerifyOptions::default() };
    assert_eq!(kinds(judged), ["unexpected_measurement"]);
    // Signed two hours before the verification time, with at most a minute of silence allowed.
    let later = signed_at + 2 * 3_600_000_000_000;
    let fresh = Some(Freshness { now: later, max_silence: 60_000_000_000 });
    assert_eq!(
        kinds(VerifyOptions { freshness: fresh, now: Some(later), ..VerifyOptions::default() }),
        ["stale_stream"]
    );
    // Signed an hour after it.
    let earlier = Some(signed_at - 3_600_000_000_000);
    assert_eq!(kinds(VerifyOptions { now: earlier, ..VerifyOptions::default() }), ["time_anomaly"]);
}
