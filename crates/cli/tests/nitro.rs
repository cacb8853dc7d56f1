//! Nitro identities end to end. This machine is no enclave: `/dev/nsm` is absent, and `teelog
//! sign` must say so plainly. The signing path is therefore driven through the library with
//! `DevNsm` below, a test double of the NSM — not the device — that answers as the NSM does,
//! with a document in the Nitro layout binding exactly the requested key and nonce, issued by
//! the dev provider under a local root. `teelog verify`, given those roots, checks the documents
//! with the real Nitro verifier, and each epoch's link to the previous one through its nonce.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{keygen, report, s, teelog};
use teelog_attest::dev::DevClaims;
use teelog_attest::nitro::NitroDocument;
use teelog_attest::TrustRoot;
use teelog_core::batch::ParsedBatch;
use teelog_core::PublicKey;
use teelog_deliver::clock::now;
use teelog_identity::{AttestationSource, Identity, SourceError};
use teelog_ship::{Output, StreamSigner};
use teelog_store::{Store, StoreOptions};

/// A test double of the NSM: a dev document for the requested key and nonce, under a new dev
/// root each time, which it keeps for the auditor.
#[derive(Clone, Default)]
struct DevNsm {
    roots: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AttestationSource for DevNsm {
    fn attest(&self, public_key: &[u8], nonce: Option<&[u8]>) -> Result<Vec<u8>, SourceError> {
        let key = PublicKey::from_spki_der(public_key)?;
        let issued = teelog_attest::dev::issue(&DevClaims {
            module_id: "i-0123456789abcdef0-enc0123456789abcd",
            timestamp_ms: u64::try_from(now() / 1_000_000)?,
            pcrs: &teelog_attest::dev::default_pcrs(),
            bound_key: &key,
            nonce,
        })?;
        self.roots.lock().map_err(|_| "poisoned")?.push(issued.root_der);
        Ok(issued.document)
    }

    /// As the NSM's documents chain to the AWS root, the double's chain to its dev roots.
    fn roots(&self) -> Vec<TrustRoot> {
        let roots = self.roots.lock().map(|r| r.clone()).unwrap_or_default();
        roots.iter().filter_map(|der| TrustRoot::from_pem_or_der(der).ok()).collect()
    }
}

/// One start of the nitro identity in `id`: signs `records` into `store`, two to a batch, and
/// finishes cleanly unless it `crashes` (then the state is not saved).
fn start(id: &Path, store: &Path, nsm: &DevNsm, records: usize, crashes: bool) {
    let identity = Identity::load_exclusive_with(id, Box::new(nsm.clone())).unwrap();
    let store = Store::open(store, StoreOptions::default()).unwrap();
    let mut signer = StreamSigner::open(identity, "app", Output::Store(store)).unwrap();
    for i in 0..records {
        signer.push(format!("{{\"message\":\"record {i}\"}}").as_bytes(), &|| "test".into()).unwrap();
        if signer.sealer().pending_records() == 2 {
            signer.seal(now()).unwrap();
        }
    }
    if crashes {
        signer.seal(now()).unwrap();
    } else {
        signer.finish(now()).unwrap();
    }
}

/// The double's roots as files, and `--trust-root` for each.
fn trust_roots(dir: &Path, nsm: &DevNsm) -> Vec<String> {
    let roots = nsm.roots.lock().unwrap();
    let mut args = Vec::new();
    for (i, der) in roots.iter().enumerate() {
        let path: PathBuf = dir.join(format!("root-{i}.der"));
        std::fs::write(&path, der).unwrap();
        args.extend(["--trust-root".to_string(), s(&path).to_string()]);
    }
    args
}

fn verify(files: &[&Path], store: Option<&Path>, roots: &[String]) -> (i32, serde_json::Value, Vec<String>) {
    let mut args: Vec<&str> = vec!["verify", "--json"];
    args.extend(files.iter().map(|f| s(f)));
    if let Some(store) = store {
        args.extend(["--store", s(store)]);
    }
    args.extend(roots.iter().map(String::as_str));
    report(&teelog(&args, b""))
}

#[test]
fn outside_an_enclave_sign_says_that_dev_nsm_is_missing() {
    if Path::new("/dev/nsm").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (id, store) = (dir.path().join("id"), dir.path().join("store"));
    keygen(&id, &["--nitro"]);
    assert!(!id.join("public-key.pem").exists() && !id.join("private-key.pem").exists());
    let out = teelog(&["sign", "--identity", s(&id), "--store", s(&store)], b"{\"message\":\"a\"}\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "/dev/nsm not found: a nitro identity signs only inside an AWS Nitro Enclave; outside one, \
             use a dev identity (teelog keygen --dev)"
        ),
        "{stderr}"
    );
    // Nothing was signed, nor any document written.
    let segments = teelog_store::segments(&store).unwrap();
    assert!(segments.iter().all(|p| std::fs::metadata(p).unwrap().len() == 0));

    let out = teelog(&["keygen", "--nitro", "--out", s(&dir.path().join("x")), "--follow", s(&store)], b"");
    assert_eq!(out.status.code(), Some(2), "a nitro identity follows by itself");
}

/// Three starts, one of which crashes before saving its state, then a fourth whose output (a
/// spool that has delivered and deleted everything) holds nothing: every start is a new epoch,
/// whose document attests as nonce the header its first batch links to.
#[test]
fn every_start_is_a_new_epoch_attested_to_continue_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (id, store) = (dir.path().join("id"), dir.path().join("store"));
    keygen(&id, &["--nitro", "--curve", "p384"]);
    let nsm = DevNsm::default();
    start(&id, &store, &nsm, 3, false);
    start(&id, &store, &nsm, 1, true);
    start(&id, &store, &nsm, 2, false);

    let roots = trust_roots(dir.path(), &nsm);
    let (code, json, kinds) = verify(&[], Some(&store), &roots);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"], 6);

    // Each epoch's first batch links to exactly what its document attests.
    let segment = teelog_store::segments(&store).unwrap().remove(0);
    let text = std::fs::read_to_string(&segment).unwrap();
    let mut documents = std::collections::HashMap::new();
    let mut batches = Vec::new();
    for line in text.lines() {
        if let Ok(batch) = ParsedBatch::parse(line.as_bytes()) {
            assert_eq!(batch.header.alg, "ES384");
            batches.push((batch.header.clone(), line));
        } else {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let bytes = base64_decode(value["attestation"].as_str().unwrap());
            let digest = hex::encode(teelog_core::merkle::sha256(&bytes));
            documents.insert(digest, NitroDocument::parse(&bytes).unwrap());
        }
    }
    let firsts: Vec<_> = batches.iter().filter(|(h, _)| h.seq == 1).map(|(h, _)| h).collect();
    assert_eq!((documents.len(), firsts.len()), (3, 3));
    let epochs: std::collections::HashSet<_> = firsts.iter().map(|h| h.epoch.clone()).collect();
    assert_eq!(epochs.len(), 3);
    for first in &firsts {
        let document = &documents[first.attestation.as_deref().unwrap()];
        assert_eq!(document.nonce.as_ref().map(hex::encode), first.prev, "epoch {}", first.epoch);
    }
    assert_eq!(firsts.iter().filter(|h| h.prev.is_none()).count(), 1);

    // A spool that kept nothing: the next start links to the head the state saved.
    let emptied = dir.path().join("emptied");
    start(&id, &emptied, &nsm, 2, false);
    let roots = trust_roots(dir.path(), &nsm);
    let later = teelog_store::segments(&emptied).unwrap().remove(0);
    let (code, json, kinds) = verify(&[&segment, &later], None, &roots);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"], 8);

    // Without the first epoch's last batch, the second's attested link is broken.
    let (_, first_last) =
        batches.iter().filter(|(h, _)| h.epoch == firsts[0].epoch).max_by_key(|(h, _)| h.seq).unwrap();
    let cut = dir.path().join("cut.ndjson");
    std::fs::write(&cut, text.replace(&format!("{first_last}\n"), "")).unwrap();
    let (code, json, kinds) = verify(&[&cut], None, &roots);
    assert_eq!((code, kinds), (1, vec!["chain_break".to_string()]), "{json}");
}

/// The header hashes of the batch lines of the store's segments, in order, with their headers.
fn heads(store: &Path) -> Vec<(teelog_core::Header, String)> {
    let mut found = Vec::new();
    for segment in teelog_store::segments(store).unwrap() {
        for line in std::fs::read_to_string(segment).unwrap().lines() {
            if let Ok(batch) = ParsedBatch::parse(line.as_bytes()) {
                found.push((batch.header.clone(), hex::encode(batch.header_hash)));
            }
        }
    }
    found
}

/// Appends, after the newest batch, a well-formed line of the same epoch with seq 99, sealed in
/// 2099, whose signature is 64 zero bytes.
fn plant(store: &Path) {
    let (newest, hash) = heads(store).pop().unwrap();
    let empty = hex::encode(teelog_core::merkle::sha256(b""));
    let header = teelog_core::Header {
        seq: 99,
        prev: Some(hash),
        count: 0,
        root: empty.clone(),
        hints: empty,
        first_ts: None,
        last_ts: None,
        sealed_at: "2099-01-01T00:00:00.000000000Z".into(),
        ..newest
    };
    let header = String::from_utf8(header.to_canonical_bytes().unwrap()).unwrap();
    let line = format!(
        "{{\"v\":1,\"header\":{header},\"sig\":\"{}\",\"hints\":\"\",\"records\":[]}}\n",
        "A".repeat(128)
    );
    let segment = teelog_store::segments(store).unwrap().pop().unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(segment).unwrap();
    std::io::Write::write_all(&mut file, line.as_bytes()).unwrap();
}

/// A start links its epoch to the newest head it can verify — its previous start's batches,
/// whose documents chain to its NSM's roots, or the head its state saved, whichever is newer —
/// and never to a planted line, however new.
#[test]
fn a_start_never_links_to_a_planted_head() {
    let dir = tempfile::tempdir().unwrap();
    let (id, store) = (dir.path().join("id"), dir.path().join("store"));
    keygen(&id, &["--nitro"]);
    let nsm = DevNsm::default();
    start(&id, &store, &nsm, 3, false);
    // A start that crashes: its batches are newer than the state, and only its document
    // vouches for its key.
    start(&id, &store, &nsm, 3, true);
    let genuine = heads(&store).pop().unwrap().1;
    plant(&store);
    start(&id, &store, &nsm, 1, false);
    let (first, _) = heads(&store).pop().unwrap();
    assert_eq!((first.seq, first.prev.as_deref()), (1, Some(genuine.as_str())));

    // Its state is newer than anything in this output (the last start wrote elsewhere): the
    // state wins over the older head found here, and over the planted line.
    let elsewhere = dir.path().join("elsewhere");
    start(&id, &elsewhere, &nsm, 1, false);
    let saved = heads(&elsewhere).pop().unwrap().1;
    plant(&store);
    start(&id, &store, &nsm, 1, false);
    let (first, _) = heads(&store).pop().unwrap();
    assert_eq!((first.seq, first.prev.as_deref()), (1, Some(saved.as_str())));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

/// An enclave restarts with neither its state nor the tail of its spool (the host cut it): told
/// the gateway's head, the new epoch links to it, and the NSM document attests exactly that head,
/// not the older one the cut storage shows.
#[test]
fn a_start_told_the_gateways_head_has_the_nsm_attest_it() {
    let dir = tempfile::tempdir().unwrap();
    let (id, store) = (dir.path().join("id"), dir.path().join("store"));
    keygen(&id, &["--nitro"]);
    let nsm = DevNsm::default();
    start(&id, &store, &nsm, 6, false);
    let before = heads(&store);
    let (newest, newest_hash) = before.last().unwrap().clone();
    let (_, older_hash) = before[before.len() - 2].clone();
    // The host cuts the last batch and the state is gone with the enclave.
    let segment = teelog_store::segments(&store).unwrap().remove(0);
    let text = std::fs::read_to_string(&segment).unwrap();
    let last_line = text.lines().rfind(|l| ParsedBatch::parse(l.as_bytes()).is_ok()).unwrap().to_string();
    std::fs::write(&segment, text.replace(&format!("{last_line}\n"), "")).unwrap();
    std::fs::remove_dir_all(id.join("state")).unwrap();

    let gateway = teelog_ship::GatewayHead {
        gateway: "test gateway".into(),
        epoch: newest.epoch.clone(),
        seq: newest.seq,
        hash: <[u8; 32]>::try_from(hex::decode(&newest_hash).unwrap()).unwrap(),
        sealed_at: newest.sealed_at_nanos().unwrap(),
    };
    let identity = Identity::load_exclusive_with(&id, Box::new(nsm.clone())).unwrap();
    let spool = Store::open(&store, StoreOptions::default()).unwrap();
    let trust = teelog_ship::HeadTrust::default();
    let mut signer = StreamSigner::open_spool(identity, "app", spool, &trust, Some(&gateway)).unwrap();
    assert!(signer.note().unwrap().contains("is not the gateway's and is older"), "{:?}", signer.note());
    signer.push(b"{\"message\":\"after\"}", &|| "test".into()).unwrap();
    signer.finish(now()).unwrap();

    let after = heads(&store);
    let (first, _) = after.iter().find(|(h, _)| h.epoch != newest.epoch).unwrap();
    assert_eq!(first.prev.as_deref(), Some(newest_hash.as_str()));
    assert_ne!(first.prev.as_deref(), Some(older_hash.as_str()));
    let text = std::fs::read_to_string(&segment).unwrap();
    let document = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["attestation"].as_str().map(base64_decode))
        .find(|d| Some(hex::encode(teelog_core::merkle::sha256(d))) == first.attestation)
        .unwrap();
    let nonce = NitroDocument::parse(&document).unwrap().nonce.map(hex::encode);
    assert_eq!(nonce.as_deref(), Some(newest_hash.as_str()), "the NSM attests the gateway's head");
}
