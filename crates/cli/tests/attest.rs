//! `teelog attest verify` on the real Nitro fixtures: verdicts, exit codes and JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The shared attestation fixtures, or `None` (the test skipped, said on stderr) where they are
/// absent.
fn fixtures() -> Option<PathBuf> {
    teelog_fixtures::open("attestation").map(|f| f.dir().to_path_buf())
}

fn attest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teelog")).arg("attest").arg("verify").args(args).output().unwrap()
}

/// A dev identity in `dir`, whose document binds its key.
fn dev_keygen(dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_teelog"))
        .args(["keygen", "--dev", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn key_names_the_key_a_document_must_bind() {
    let dir = tempfile::tempdir().unwrap();
    let (id, other) = (dir.path().join("id"), dir.path().join("other"));
    dev_keygen(&id);
    dev_keygen(&other);
    let doc = id.join("attestation.cbor");
    let root = id.join("dev-root.pem");
    let with_key = |key: &std::path::Path| {
        attest(&[
            doc.to_str().unwrap(),
            "--trust-root",
            root.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--json",
        ])
    };
    let out = with_key(&id.join("public-key.pem"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let out = with_key(&other.join("public-key.pem"));
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["error"].as_str().unwrap().contains("not the given key"));
    // A document that binds no key (this Nitro fixture has no public_key) binds no given key.
    let Some(fixtures) = fixtures() else { return };
    let unbound = fixtures.join("nitro/nitro_evervault_beta_prod-pcrs_nonce.cbor");
    let key = id.join("public-key.pem");
    let out = attest(&[unbound.to_str().unwrap(), "--key", key.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["error"].as_str().unwrap().contains("binds no key"));
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn raw_hex_and_base64_documents_verify_at_their_own_time() {
    let Some(fixtures) = fixtures() else { return };
    let nitro = fixtures.join("nitro");
    let beta = attest(&[nitro.join("nitro_evervault_beta_prod-pcrs_nonce.cbor").to_str().unwrap(), "--json"]);
    assert_eq!(beta.status.code(), Some(0));
    let report = json(&beta);
    assert_eq!(report["verified"], true);
    assert_eq!(report["platform"], "aws-nitro");
    assert_eq!(report["details"]["timestamp"], "2022-10-13T08:58:02.136000000Z");
    assert_eq!(report["measurement"], report["pcrs"]["0"]);
    assert_eq!(
        report["pcrs"]["2"],
        "d8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a"
    );

    let hex = attest(&[nitro.join("nitro_fastcrypto_prod-pcrs_pcr16_pubkey.hex").to_str().unwrap()]);
    assert_eq!(hex.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&hex.stdout).starts_with("VERIFIED\nplatform      aws-nitro"));

    let debug = nitro.join("nitro_evervault_ga_userdata-spki_nonce.b64");
    let refused = attest(&[debug.to_str().unwrap(), "--json"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(json(&refused)["error"].as_str().unwrap().contains("debug mode"));
    let allowed = attest(&[debug.to_str().unwrap(), "--allow-debug"]);
    assert_eq!(allowed.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("WARNING: debug mode"));
}

#[test]
fn an_sev_snp_report_needs_its_vcek_and_verifies_with_it() {
    let Some(fixtures) = fixtures() else { return };
    let snp = fixtures.join("snp");
    let report = snp.join("snp_trustee_milan_report.bin");
    let out = attest(&[report.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vcek"));
    let vcek = snp.join("snp_trustee_milan_vcek.der");
    // A report carries no certificates and teelog ships none: AMD's chain is given too.
    let out = attest(&[report.to_str().unwrap(), "--vcek", vcek.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--amd-chain"));
    let milan = fixtures.join("roots/amd_milan_ask_ark_asvk.pem");
    let (vcek, milan) = (vcek.to_str().unwrap(), milan.to_str().unwrap());
    let out = attest(&[report.to_str().unwrap(), "--vcek", vcek, "--amd-chain", milan, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let json = json(&out);
    assert_eq!(json["platform"], "amd-sev-snp");
    assert_eq!(json["details"]["policy"], "0x3001f");
    assert!(json["measurement"].as_str().unwrap().starts_with("a1f3930413247bb3"));
    // report_data binds a key by id; its zero second half names no previous epoch.
    let bound = "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2";
    assert_eq!(json["bound_key_id"], bound);
    assert!(json["details"].get("previous_head").is_none());
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    dev_keygen(&id);
    let key = id.join("public-key.pem");
    let out = attest(&[
        report.to_str().unwrap(),
        "--vcek",
        vcek,
        "--amd-chain",
        milan,
        "--key",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::json(&out)["error"].as_str().unwrap().contains(&format!("binds key id {bound}")));
    // The Intel root is no ARK.
    let intel = fixtures.join("roots/intel_sgx_root_ca.pem");
    let out = attest(&[report.to_str().unwrap(), "--vcek", vcek, "--amd-chain", intel.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ARK with the pinned SHA-256"));
}

#[test]
fn a_tdx_quote_of_a_debug_td_is_refused_unless_allowed() {
    let Some(fixtures) = fixtures() else { return };
    let quote = fixtures.join("tdx/tdx_trustee_quote_v4.dat");
    let out = attest(&[quote.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["error"].as_str().unwrap().contains("debug mode"));
    let out = attest(&[quote.to_str().unwrap(), "--allow-debug", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(report["platform"], "intel-tdx");
    assert!(report["measurement"].as_str().unwrap().starts_with("705ee9381b8633a9"));
    assert!(report["details"]["tcb_status"].as_str().unwrap().starts_with("not evaluated"));
    let report_data = report["details"]["report_data"].as_str().unwrap();
    assert_eq!(report["bound_key_id"].as_str().unwrap(), &report_data[..64]);
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    dev_keygen(&id);
    let key = id.join("public-key.pem");
    let out = attest(&[quote.to_str().unwrap(), "--allow-debug", "--key", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not the given key"));
}

#[test]
fn expired_today_forged_and_unreadable_documents() {
    let Some(fixtures) = fixtures() else { return };
    let doc = fixtures.join("nitro/nitro_evervault_beta_prod-pcrs_nonce.cbor");
    let today = attest(&[doc.to_str().unwrap(), "--at", "2026-12-02T00:00:00Z"]);
    assert_eq!(today.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&today.stdout).contains("expired at"));

    let dir = tempfile::tempdir().unwrap();
    let forged = dir.path().join("forged.cbor");
    let mut bytes = std::fs::read(&doc).unwrap();
    // A byte inside the PCR map of the signed payload.
    let at = bytes.windows(4).position(|w| w == b"pcrs").unwrap() + 12;
    bytes[at] ^= 0xff;
    std::fs::write(&forged, &bytes).unwrap();
    let out = attest(&[forged.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["verified"], false);

    // Trusting another root does not help a document that chains to AWS; AWS stays pinned.
    let intel = fixtures.join("roots/intel_sgx_root_ca.pem");
    assert_eq!(
        attest(&[doc.to_str().unwrap(), "--trust-root", intel.to_str().unwrap()]).status.code(),
        Some(0)
    );

    assert_eq!(attest(&["/nonexistent"]).status.code(), Some(2));
    assert_eq!(attest(&[doc.to_str().unwrap(), "--at", "noon"]).status.code(), Some(2));
    let not_a_root = attest(&[doc.to_str().unwrap(), "--trust-root", doc.to_str().unwrap()]);
    assert_eq!(not_a_root.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_root.stderr).contains("trust root"));
}

#[test]
fn a_tdx_quote_with_intel_collateral_reports_its_tcb_status() {
    let Some(fixtures) = fixtures() else { return };
    let data = fixtures.join("tdx-collateral");
    let quote = data.join("dcap-qvl/quote.dat");
    let (quote, collateral) = (quote.to_str().unwrap(), data.join("dcap-qvl"));
    let args = [quote, "--collateral", collateral.to_str().unwrap(), "--at", "2025-07-01T00:00:00Z"];
    let out = attest(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\ntcb_status    UpToDate\n"), "{text}");
    assert!(text.contains("platform UpToDate, TDX module UpToDate, QE UpToDate"), "{text}");
    assert!(!text.contains("WARNING"), "{text}");
    let report = json(&attest(&[&args[..], &["--json"]].concat()));
    assert_eq!(report["details"]["fmspc"], "B0C06F000000");
    assert_eq!(report["details"]["tcb_date"], "2024-03-13T00:00:00.000000000Z");
    assert_eq!(report["details"]["advisories"], "none");
    assert_eq!(report["warnings"], serde_json::json!([]));
    assert_eq!(report["details"]["crls"], "checked");

    // After the collateral's nextUpdate, and for another platform's collateral: rejected.
    let late = attest(&[quote, "--collateral", collateral.to_str().unwrap(), "--at", "2025-08-01T00:00:00Z"]);
    assert_eq!(late.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&late.stdout).contains("nextUpdate"));
    let other = data.join("trustee");
    let out =
        attest(&[quote, "--collateral", other.to_str().unwrap(), "--at", "2025-10-28T07:00:00Z", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["error"].as_str().unwrap().contains("FMSPC 00A06D080000"));

    // The shared debug TD, with PCS files as downloaded (URL-encoded chains).
    let shared = fixtures.join("tdx/tdx_trustee_quote_v4.dat");
    let pcs = data.join("go-tdx-guest");
    let out = attest(&[
        shared.to_str().unwrap(),
        "--collateral",
        pcs.to_str().unwrap(),
        "--at",
        "2023-06-20T00:00:00Z",
        "--allow-debug",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        json(&out)["details"]["tcb_statuses"],
        "platform UpToDate, TDX module none (TDX 1.0), QE UpToDate"
    );
}

#[test]
fn tdx_collateral_usage_and_io_errors_exit_2_and_a_forged_file_exits_1() {
    let Some(fixtures) = fixtures() else { return };
    let data = fixtures.join("tdx-collateral");
    let quote = data.join("dcap-qvl/quote.dat");
    let quote = quote.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A missing file of the directory is an I/O error.
    let out = attest(&[quote, "--collateral", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcb_info_issuer_chain.pem is missing"));
    // Collateral for a Nitro document is a usage error.
    let nitro = fixtures.join("nitro/nitro_evervault_beta_prod-pcrs_nonce.cbor");
    let out = attest(&[nitro.to_str().unwrap(), "--collateral", data.join("dcap-qvl").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    // One changed digit of the signed TCB Info: rejected.
    for name in ["tcb_info.json", "qe_identity.json", "tcb_info_issuer_chain.pem"] {
        std::fs::copy(data.join("dcap-qvl").join(name), dir.path().join(name)).unwrap();
    }
    let tcb_info = dir.path().join("tcb_info.json");
    let text = std::fs::read_to_string(&tcb_info).unwrap();
    std::fs::write(&tcb_info, text.replacen("\"pcesvn\":11", "\"pcesvn\":10", 1)).unwrap();
    let out = attest(&[quote, "--collateral", dir.path().to_str().unwrap(), "--at", "2025-07-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("signature does not verify"));
    // A huge file is refused by size, not read whole.
    let file = std::fs::File::create(&tcb_info).unwrap();
    file.set_len(1 << 30).unwrap();
    let out = attest(&[quote, "--collateral", dir.path().to_str().unwrap(), "--at", "2025-07-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("larger than"));
}
