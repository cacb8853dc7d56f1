//! Seed corpora, built from the project's own vectors and from what its code generates (a dev
//! attestation document, batches signed by the fixed signer), and, where the shared fixtures are
//! at hand, from the real attestation documents and collateral there. Those are third-party
//! data: they are read at run time and never written into the repository.

use std::path::Path;

use teelog_core::batch::{BatchBuilder, ChainHead};
use teelog_core::HeaderSigner;

use crate::input::join_parts;
use crate::signer::signer;
use crate::targets::{loki_answer, loki_entries, now};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A file of the repository, which the seeds must not silently lose.
fn repo_file(path: &str) -> Vec<u8> {
    match std::fs::read(Path::new(ROOT).join(path)) {
        Ok(bytes) => bytes,
        Err(e) => panic!("{path}: {e}"),
    }
}

fn vector(name: &str) -> serde_json::Value {
    let path = format!("docs/vectors/{name}.json");
    match serde_json::from_slice(&repo_file(&path)) {
        Ok(value) => value,
        Err(e) => panic!("{path}: {e}"),
    }
}

fn strings(value: &serde_json::Value) -> Vec<Vec<u8>> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str()).map(|s| s.as_bytes().to_vec()).collect()
}

/// A string of a vector, which must be there.
fn text(value: &serde_json::Value) -> &str {
    match value.as_str() {
        Some(text) => text,
        None => panic!("a vector holds {value} where a string belongs"),
    }
}

fn hex_field(value: &serde_json::Value) -> Vec<u8> {
    match hex::decode(text(value)) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a vector's hex {value}: {e}"),
    }
}

/// Every line of the verifier's failure vectors' input files.
fn failure_vector_lines() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let dir = Path::new(ROOT).join("docs/vectors/failures");
    let mut paths: Vec<_> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let value = vector(&format!("failures/{}", path.file_stem().unwrap_or_default().to_string_lossy()));
        for text in value["files"].as_object().into_iter().flat_map(|files| files.values()) {
            lines.extend(self::text(text).lines().map(|l| l.as_bytes().to_vec()));
        }
    }
    lines
}

/// The batch lines of `docs/vectors/batch-v1.json`, signed by the key the fixed signer holds.
fn vector_batch_lines() -> Vec<Vec<u8>> {
    vector("batch-v1")["batches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["line"].as_str())
        .map(|l| l.trim_end().as_bytes().to_vec())
        .collect()
}

/// A short stream from the fixed signer: a heartbeat, then batches of vector records.
fn signed_lines() -> Vec<Vec<u8>> {
    let inputs = strings(&vector("batch-v1")["batches"][0]["inputs"]);
    let mut chain = ChainHead {
        stream: "vectors".into(),
        epoch: "0".repeat(32),
        next_seq: 1,
        prev: None,
        prev_sealed_at: None,
    };
    let mut lines = Vec::new();
    for (i, records) in [0, 1, inputs.len()].into_iter().enumerate() {
        let at = now() - 60_000_000_000 + i as i64 * 1_000_000_000;
        let mut builder = BatchBuilder::new();
        for input in inputs.iter().take(records) {
            let _ = builder.push_input(input, &|| at);
        }
        let mut line = Vec::new();
        if builder.seal(&mut chain, signer(), at, &mut line).is_ok() {
            line.pop();
            lines.push(line);
        }
    }
    lines
}

/// A dev attestation document binding the fixed key (a new dev root each time).
fn dev_document() -> Vec<u8> {
    let pcrs = teelog_attest::dev::default_pcrs();
    let claims = teelog_attest::dev::DevClaims {
        module_id: "fuzz",
        timestamp_ms: now().unsigned_abs() / 1_000_000,
        pcrs: &pcrs,
        bound_key: signer().public_key(),
        nonce: None,
    };
    match teelog_attest::dev::issue(&claims) {
        Ok(attestation) => attestation.document,
        Err(e) => panic!("cannot issue a dev document: {e}"),
    }
}

/// Files of the shared fixtures under `dir`, each read whole.
fn fixture_files(fixtures: Option<&Path>, dir: &str) -> Vec<Vec<u8>> {
    let Some(root) = fixtures else { return Vec::new() };
    let mut paths: Vec<_> =
        std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten().map(|e| e.path()).collect();
    paths.sort();
    paths.iter().filter(|p| p.is_file()).filter_map(|p| std::fs::read(p).ok()).collect()
}

fn fixture(fixtures: Option<&Path>, path: &str) -> Vec<u8> {
    fixtures.and_then(|root| std::fs::read(root.join(path)).ok()).unwrap_or_default()
}

fn prefixed(prefix: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![prefix];
    out.extend_from_slice(body);
    out
}

/// The seeds of `target`; `fixtures` is the shared fixtures' `attestation` folder, if at hand.
pub fn seeds(target: &str, fixtures: Option<&Path>) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = match target {
        "batch_line" => {
            let mut lines = vector_batch_lines();
            lines.extend(signed_lines());
            lines.extend(failure_vector_lines());
            lines
        }
        "checkpoint_line" => {
            let line = text(&vector("checkpoint-v1")["line"]).as_bytes().to_vec();
            let stamped = line.strip_suffix(b"}").map(|l| [l, b",\"timestamp\":\"AAAA\"}"].concat());
            let mut seeds = vec![line];
            seeds.extend(stamped);
            seeds.extend(
                failure_vector_lines().into_iter().filter(|l| l.starts_with(b"{\"v\":1,\"checkpoint\":")),
            );
            seeds
        }
        "evidence_bundle" => {
            let evidence = vector("evidence-v1");
            let mut lines = vector_batch_lines();
            lines.push(text(&evidence["notice_batch"]).as_bytes().to_vec());
            lines.push(text(&evidence["stamped_checkpoint"]).as_bytes().to_vec());
            let rest = lines.join(&b'\n');
            evidence["vectors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| [v["bundle"].to_string().as_bytes(), b"\n", &rest].concat())
                .collect()
        }
        "verifier_order" => vec![
            Vec::new(),
            vec![5, 0, 1, 0, 0, 2, 0, 0, 0x83, 0, 0, 0x41],
            vec![3, 0, 2, 5, 0, 0x80, 9, 0, 3, 1, 0, 0, 4, 0, 0, 2, 1, 0],
            (0u8..64).collect(),
            // Long enough for six batches and sixteen changes.
            (0u16..512).map(|i| (i.wrapping_mul(37) % 251) as u8).collect(),
        ],
        "canonical_json" => {
            let batch = vector("batch-v1");
            let mut records = strings(&batch["batches"][0]["inputs"]);
            records.extend(strings(&batch["batches"][0]["records"]));
            let notice = vector("notice-v1");
            for key in ["refused", "accepted"] {
                for item in notice[key].as_array().into_iter().flatten() {
                    records.extend(
                        ["input", "record"]
                            .iter()
                            .filter_map(|k| item[k].as_str())
                            .map(|s| s.as_bytes().to_vec()),
                    );
                }
            }
            records.extend(strings(&vector("hint-collision")["records"]));
            records.push(br#"{"a":1e400}"#.to_vec());
            records.push(br#"{"n":9007199254740993,"f":-0.0,"s":"\ud800"}"#.to_vec());
            records
        }
        "seed_batch" => {
            let seed = vector("seed-v1");
            let line = text(&seed["line"]).as_bytes().to_vec();
            // The signed payload as the seed writes it, behind the two bytes of the sequence.
            let payload = text(&seed["payload"]).as_bytes();
            vec![line, [&[1u8, 0][..], payload].concat()]
        }
        "nitro_document" => {
            let mut docs = vec![dev_document()];
            docs.extend(fixture_files(fixtures, "nitro"));
            docs
        }
        "snp_report" => {
            let mut report = vec![0u8; teelog_attest::snp::REPORT_LEN];
            report[0] = 2;
            let real = join_parts(&[
                &fixture(fixtures, "snp/snp_trustee_milan_report.bin"),
                &fixture(fixtures, "snp/snp_trustee_milan_vcek.der"),
                &fixture(fixtures, "roots/amd_milan_ask_ark_asvk.pem"),
            ]);
            vec![report, real]
        }
        "tdx_quote" => {
            let mut quote = vec![4, 0, 2, 0, 0x81, 0, 0, 0];
            quote.resize(632, 0);
            let mut quotes = vec![quote];
            quotes.extend(fixture_files(fixtures, "tdx"));
            quotes.push(fixture(fixtures, "tdx-collateral/dcap-qvl/quote.dat"));
            quotes
        }
        "tdx_collateral" => ["dcap-qvl", "go-tdx-guest", "trustee"]
            .iter()
            .map(|set| {
                let file = |name: &str| fixture(fixtures, &format!("tdx-collateral/{set}/{name}"));
                let chain = file("tcb_info_issuer_chain.pem");
                let qe_chain = Some(file("qe_identity_issuer_chain.pem"))
                    .filter(|c| !c.is_empty())
                    .unwrap_or(chain.clone());
                join_parts(&[
                    &file("tcb_info.json"),
                    &chain,
                    &file("qe_identity.json"),
                    &qe_chain,
                    &file("pck_crl.der"),
                    &file("root_ca_crl.der"),
                    &fixture(fixtures, "roots/intel_sgx_root_ca.pem"),
                ])
            })
            .chain([join_parts(&[
                br#"{"tcbInfo":{},"signature":""}"#,
                b"",
                br#"{"enclaveIdentity":{},"signature":""}"#,
            ])])
            .collect(),
        "tpm_evidence" => {
            let tpm = vector("tpm-evidence-v1");
            let mut docs = vec![hex_field(&tpm["document_hex"])];
            docs.extend(tpm["members"].as_object().into_iter().flat_map(|m| m.values()).map(hex_field));
            docs
        }
        "otlp" => {
            let otlp = vector("otlp-v1");
            vec![
                prefixed(0, &hex_field(&otlp["request_protobuf_hex"])),
                prefixed(1, otlp["request"].to_string().as_bytes()),
            ]
        }
        "relay_frames" => {
            let relay = vector("relay-v1");
            let mut stream = hex_field(&relay["opening_hex"]);
            stream.extend(hex_field(&relay["line_frame_hex"]));
            let mut server = Vec::new();
            for message in relay["server"].as_array().into_iter().flatten() {
                server.extend(hex_field(&message["frame_hex"]));
            }
            vec![prefixed(7, &stream), prefixed(1, &server)]
        }
        "loki_query" => {
            let mut lines = vector_batch_lines();
            lines.extend(signed_lines());
            vec![
                loki_answer(&loki_entries(&lines)),
                vec![5, 0, 1, 0, 0, 2, 7, 0, 3, 1, 2, 3, 9],
                vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 9],
                br#"{"status":"success","data":["vectors","app"]}"#.to_vec(),
                br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.to_vec(),
            ]
        }
        "device_responses" => {
            let document = dev_document();
            let mut nsm = vec![0xa1, 0x6b];
            nsm.extend_from_slice(b"Attestation");
            nsm.extend_from_slice(&[0xa1, 0x68]);
            nsm.extend_from_slice(b"document");
            nsm.push(0x59);
            nsm.extend_from_slice(&u16::try_from(document.len()).unwrap_or(u16::MAX).to_be_bytes());
            nsm.extend_from_slice(&document);
            let handle = [0x80, 0x01, 0, 0, 0, 14, 0, 0, 0, 0, 0x80, 0, 0, 1];
            let mut sign = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x48, 0, 0x18, 0, 0x0b, 0, 0x20];
            sign.extend([7u8; 32]);
            sign.extend([0, 0x20]);
            sign.extend([9u8; 32]);
            let len = u32::try_from(sign.len()).unwrap_or_default().to_be_bytes();
            sign[2..6].copy_from_slice(&len);
            vec![prefixed(0, &nsm), prefixed(1, &handle), prefixed(1, &sign)]
        }
        "config_files" => {
            let policy = b"[[measurement]]\nplatform = \"nitro\"\nversion = \"v1\"\nvalue = \"00\"\nfrom = \"2026-01-01T00:00:00Z\"\n";
            let key = teelog_core::HeaderSigner::public_key(signer()).to_pem();
            let private = text(&vector("batch-v1")["private_key_pem"]).as_bytes().to_vec();
            let mut configs = vec![
                prefixed(0, &repo_file("deploy/ship.toml")),
                prefixed(1, &repo_file("deploy/gateway.toml")),
                prefixed(2, policy),
                prefixed(4, key.as_bytes()),
                prefixed(4, &private),
            ];
            configs.extend(fixture_files(fixtures, "roots").iter().map(|root| prefixed(3, root)));
            configs
        }
        _ => Vec::new(),
    };
    seeds.retain(|s| !s.is_empty() || target == "verifier_order");
    seeds
}
